"""Executors: how a sweep's independent jobs run. Local (in this process), a process pool, and
the interface a scale-out engine (Ray) implements; the sweep itself never schedules anything."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Protocol, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Executor(Protocol):
    """Runs independent jobs; yields results as they finish. A scale-out backend (e.g. Ray)
    only has to implement this one method."""

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[R]: ...


class LocalExecutor:
    """In this process, one job after another."""

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[R]:
        for item in items:
            yield fn(item)


@dataclass
class ProcessExecutor:
    """A pool of fresh (spawned) processes: TensorFlow does not survive fork."""

    jobs: int

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> Iterator[R]:
        import multiprocessing

        if not items:
            return
        workers = min(self.jobs, len(items))
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(fn, item) for item in items]
            for future in as_completed(futures):
                yield future.result()


def make_executor(jobs: int) -> Executor:
    return LocalExecutor() if jobs <= 1 else ProcessExecutor(jobs)
