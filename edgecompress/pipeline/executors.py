"""Executors: how a sweep's independent jobs run. Local (in this process), a process pool, and
Ray (imported only when chosen); the sweep itself never schedules anything.

A job says what it needs (:class:`Needs`); each executor honours that its own way. The rule they
all keep: a job that measures latency (``exclusive``) never runs beside another job.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from edgecompress.errors import EdgeCompressError, UsageError, require

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

EXECUTORS = ("local", "process", "ray")


@dataclass(frozen=True)
class Needs:
    """What one kind of job needs from the machine that runs it."""

    cpus: float = 1.0
    gpus: float = 0.0
    #: a benchmark: nothing else may run on its machine while it runs
    exclusive: bool = False

    def __post_init__(self) -> None:
        if self.cpus <= 0 or self.gpus < 0:
            raise UsageError(f"a job needs cpus > 0 and gpus ≥ 0, not cpus={self.cpus}, gpus={self.gpus}")


DEFAULT_NEEDS = Needs()


class Executor(Protocol):
    """Runs independent jobs; yields results as they finish, in any order. A scale-out backend
    only has to implement this one method; ``needs`` may be left out (one CPU, not exclusive)."""

    def map(self, fn: Callable[[T], R], items: Sequence[T], needs: Needs = DEFAULT_NEEDS) -> Iterator[R]: ...


class LocalExecutor:
    """In this process, one job after another (so exclusive jobs are alone by construction)."""

    def map(self, fn: Callable[[T], R], items: Sequence[T], needs: Needs = DEFAULT_NEEDS) -> Iterator[R]:
        for item in items:
            yield fn(item)


@dataclass
class ProcessExecutor:
    """A pool of fresh (spawned) processes: TensorFlow does not survive fork. Exclusive jobs run
    in this process, one at a time: beside the pool they would compete for the same cores."""

    jobs: int

    def map(self, fn: Callable[[T], R], items: Sequence[T], needs: Needs = DEFAULT_NEEDS) -> Iterator[R]:
        import multiprocessing

        if not items:
            return
        if needs.exclusive:
            yield from LocalExecutor().map(fn, items)
            return
        workers = min(self.jobs, len(items))
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(fn, item) for item in items]
            for future in as_completed(futures):
                yield future.result()


# --------------------------------------------------------------------------- Ray
#
# Each job a Ray task, placed by Ray's scheduler with the resources it needs. Why a ``bench``
# resource: a benchmark must never be timed beside another job. Every node offers ``bench: 1``; a
# benchmark task holds all of it, every other task holds a sliver (``SHARE``). So a benchmark
# starts only on a node where none of our tasks runs, and while it runs nothing of ours starts
# there; benchmarks on different nodes run at the same time. Ray retries a task whose worker died
# (``max_retries``); a job's own errors come back as its result and are not retried.
BENCH_RESOURCE = "bench"
#: what a non-benchmark task holds of its node's bench resource (Ray's resource granularity is 1e-4)
SHARE = 0.001
#: how `ray start` must give every node its bench resource
NODE_RESOURCES = json.dumps({BENCH_RESOURCE: 1})
#: the local instance's object store: jobs pass recipes and records, never models (those are files)
LOCAL_OBJECT_STORE_BYTES = 256 * 1024**2


class JobFailedError(EdgeCompressError):
    """A Ray task that died more often than it may be retried (out of memory, node lost)."""


@dataclass
class RayExecutor:
    """Jobs as Ray tasks, on the cluster at ``address`` or on a local instance started here.

    ``cpus`` sizes the local instance (default: every core). An instance that is already running
    in this process (``ray.init`` by the caller) is used as it is.
    """

    address: str | None = None
    cpus: int | None = None
    #: how often Ray retries a task whose worker or node died
    max_retries: int = 3
    #: the jobs' own stderr goes to the worker's log, not to this terminal
    shares_terminal: bool = field(default=False, init=False)

    def map(self, fn: Callable[[T], R], items: Sequence[T], needs: Needs = DEFAULT_NEEDS) -> Iterator[R]:
        if not items:
            return
        ray = self.connect()
        remote = ray.remote(fn).options(**self.task_options(needs))
        pending = [remote.remote(item) for item in items]
        failures: list[str] = []
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            if pending:  # and whatever else has finished meanwhile: one wait per batch, not per task
                more, pending = ray.wait(pending, num_returns=len(pending), timeout=0)
                done += more
            for ref in done:
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as exc:  # the worker died more than max_retries times
                    failures.append(str(exc).splitlines()[0][:300])
                    log.warning("a Ray task failed: %s", failures[-1])
                    continue
                yield result
        if failures:
            raise JobFailedError(
                f"{len(failures)} Ray task(s) failed after {self.max_retries} retries: {failures[0]}",
                "see the worker logs in /tmp/ray/session_latest/logs; finished stages are cached, so rerunning resumes",
            )

    def task_options(self, needs: Needs) -> dict[str, Any]:
        """The Ray task options of a job with these needs."""
        return {
            "num_cpus": needs.cpus,
            "num_gpus": needs.gpus,
            "resources": {BENCH_RESOURCE: 1.0 if needs.exclusive else SHARE},
            "max_retries": self.max_retries,
            "retry_exceptions": False,
        }

    def connect(self):
        """Ray, initialised: the running instance, the cluster at ``address``, or a new local one."""
        ray = require("ray", "ray", "--executor ray")
        if not ray.is_initialized():
            if self.address is None:
                log.info("starting a local Ray instance (%s CPUs)", self.cpus or "all")
                ray.init(num_cpus=self.cpus, resources={BENCH_RESOURCE: 1}, include_dashboard=False,
                         object_store_memory=LOCAL_OBJECT_STORE_BYTES, log_to_driver=False,
                         configure_logging=False)  # fmt: skip
            else:
                try:
                    ray.init(address=self.address, log_to_driver=False, configure_logging=False)
                except (ConnectionError, RuntimeError, ValueError) as exc:
                    raise UsageError(
                        f"cannot connect to the Ray cluster at {self.address}: {str(exc).splitlines()[0]}",
                        "start it with `ray start --head --resources='" + NODE_RESOURCES + "'`, or pass its HOST:PORT",
                    ) from None
        if ray.cluster_resources().get(BENCH_RESOURCE, 0) < 1:
            raise UsageError(
                f"no node of the Ray cluster offers a '{BENCH_RESOURCE}' resource, so no benchmark could ever start",
                f"start every node with `ray start ... --resources='{NODE_RESOURCES}'`",
            )
        return ray


def make_executor(jobs: int = 1, kind: str | None = None, address: str | None = None) -> Executor:
    """``kind`` local, process or ray (default: local for one job, a process pool for more).

    With Ray, ``address`` is an existing cluster's (``auto``, ``HOST:PORT``); without one a local
    instance starts with ``jobs`` CPUs (all of this machine's when ``jobs`` is 1)."""
    kind = kind or ("local" if jobs <= 1 else "process")
    if kind not in EXECUTORS:
        raise UsageError(f"unknown executor '{kind}'", f"choose one of: {', '.join(EXECUTORS)}")
    if kind != "ray" and address is not None:
        raise UsageError("--ray-address applies to --executor ray only", "add --executor ray, or drop --ray-address")
    if kind == "ray":
        require("ray", "ray", "--executor ray")  # now, not after the first phase has run
        return RayExecutor(address=address, cpus=jobs if address is None and jobs > 1 else None)
    return LocalExecutor() if kind == "local" or jobs <= 1 else ProcessExecutor(jobs)
