"""Feed damaged and hostile inputs to the CLI in a worker process with a time and memory limit; count what happens.

Kinds: the model formats (``h5``, ``keras``, ``tflite``, ``onnx``: mutated model files through
``quantize``/``export`` or ``bench``; ``tflite-source``, ``onnx-source``: through ``quantize``) and the other
inputs (``images``, ``arrays``, ``recipes``, ``sidecars``, ``bundles``: see fuzz_inputs.py). Each case
is built from a seed of its own (seed, kind, index), so a long run can be split into chunks
(``start``) that add up to the same cases.

Outcomes: ``clean error`` (one ``error:`` line, a documented exit code 1–8), ``success``, and the bad
ones: ``crash`` (the worker died), ``hang`` (no answer within the time limit), ``traceback`` (an
exception reached the user), ``internal error`` (exit code 70), ``memory blow-up`` (the case took
more than the memory limit above what the worker held before it) and, for bundles, ``tampering
accepted`` (a bundle whose code is not the toolkit's passed verification and would have run).

The worker lives across cases (TensorFlow is imported once) and is replaced when it crashes, hangs
or is killed for memory. Used by tests/test_hardening.py (a seeded slice) and benchmarks/fuzz.py.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

OUTCOMES = ("clean error", "success", "crash", "hang", "traceback", "internal error", "memory blow-up",
            "tampering accepted")  # fmt: skip
BAD_OUTCOMES = OUTCOMES[2:]
CLEAN_EXIT_CODES = set(range(1, 9))
#: mutated model files; the "-source" kinds are float .tflite/.onnx files fed to `compress quantize` itself
MODEL_KINDS = ("h5", "keras", "tflite", "onnx", "tflite-source", "onnx-source")
INPUT_KINDS = ("images", "arrays", "recipes", "sidecars", "bundles")
KINDS = MODEL_KINDS + INPUT_KINDS
#: extra resident memory one case may take before it counts as a blow-up
MEMORY_LIMIT = 1 << 30
#: address space the worker may add beyond what it had at start: only a backstop that keeps a runaway
#: case from taking the machine (TensorFlow reserves far more address space than it touches)
ADDRESS_SPACE_HEADROOM = 16 << 30


@dataclass
class Case:
    kind: str
    index: int
    mutation: str
    #: the damaged input (file or folder), copied to ``keep`` when the case goes wrong
    path: Path
    commands: list[list[str]]
    #: bundles: the digest of the code a bundle that passes verification must hold (see ``code_digest``)
    guard: str | None = None


@dataclass
class Result:
    outcome: str
    detail: str = ""


def mutate(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One random corruption of the kind disks, downloads and tamperers produce."""
    data = bytearray(data)
    if not data:
        return bytes(rng.randrange(256) for _ in range(rng.randint(1, 64))), "insert"
    kind = rng.choice(["flip", "zero", "truncate", "duplicate", "insert", "header"])
    if kind == "flip":
        for _ in range(rng.randint(1, 16)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == "zero":
        start = rng.randrange(len(data))
        end = min(len(data), start + rng.randint(1, 4096))
        data[start:end] = bytes(end - start)
    elif kind == "truncate":
        del data[rng.randrange(1, len(data)) if len(data) > 1 else 0 :]
    elif kind == "duplicate":
        start = rng.randrange(len(data))
        chunk = data[start : start + rng.randint(1, 2048)]
        at = rng.randrange(len(data))
        data[at:at] = chunk
    elif kind == "insert":
        at = rng.randrange(len(data))
        data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    else:
        for i in range(min(len(data), 64)):
            if rng.random() < 0.2:
                data[i] = rng.randrange(256)
    return bytes(data), kind


def code_digest(directory: Path) -> str:
    """The code a bundle would run: every importable file and requirements.txt, by path and content.

    Independent of the toolkit's own verification, so the fuzzer can tell a refused bundle from one
    whose foreign code slipped through. Bytecode caches are left out: the check never reads them.
    """
    from importlib.machinery import all_suffixes

    importable = (*all_suffixes(), ".pyw", ".pyd", ".pyo")
    digest = hashlib.sha256()
    for root, dirs, names in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(names):
            path = Path(root) / name
            if name == "requirements.txt" or name.endswith(importable):
                content = os.readlink(path).encode() if path.is_symlink() else path.read_bytes()
                digest.update(f"{path.relative_to(directory).as_posix()}\0".encode() + hashlib.sha256(content).digest())
    return digest.hexdigest()


class ReachedExecution(BaseException):  # noqa: N818 - not an error: a signal that verification passed
    """Raised instead of running a bundle's scripts, carrying the digest of the code that would run."""

    def __init__(self, digest: str) -> None:
        super().__init__(digest)
        self.digest = digest


def _stop_before_running_bundles() -> None:
    """Bundles: verification is what is fuzzed; executing a verified bundle needs a venv and is tested elsewhere."""
    from edgecompress.deploy import verify

    def reached(directory, *args, **kwargs):
        raise ReachedExecution(code_digest(directory))

    verify._run_and_compare = reached


def run_commands(commands: list[list[str]], guard: str | None = None) -> Result:
    from click.testing import CliRunner

    from edgecompress.cli import INTERNAL_ERROR_EXIT, cli

    worst = Result("success")
    for args in commands:
        try:
            result = CliRunner().invoke(cli, args)
        except ReachedExecution as reached:
            if reached.digest != guard:
                return Result("tampering accepted", f"{args}: verification passed a bundle with foreign code")
            continue
        output = result.output
        first = (output.strip().splitlines() or [""])[0][:300]
        if isinstance(result.exception, MemoryError) or "MemoryError" in output:
            return Result("memory blow-up", first)
        if result.exit_code == INTERNAL_ERROR_EXIT:
            return Result("internal error", first)
        if "Traceback" in output or (result.exception is not None and not isinstance(result.exception, SystemExit)):
            return Result("traceback", f"{type(result.exception).__name__}: {result.exception}"[:300])
        if result.exit_code in CLEAN_EXIT_CODES:
            errors = [line for line in output.splitlines() if line.startswith("error:")]
            if len(errors) != 1:
                return Result("traceback", f"exit {result.exit_code} with {len(errors)} error lines: {first}")
            worst = Result("clean error", errors[0][:300])
        elif result.exit_code != 0:
            return Result("traceback", f"exit code {result.exit_code}: {first}")
    return worst


def _worker(connection, headroom: int) -> None:
    import resource

    import edgecompress  # noqa: F401 - sets TensorFlow's environment before anything imports it

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if headroom:
        resource.setrlimit(resource.RLIMIT_AS, (_status_kib(os.getpid(), "VmSize") * 1024 + headroom,) * 2)
    _stop_before_running_bundles()
    while True:
        message = connection.recv()
        if message is None:
            return
        commands, guard = message
        connection.send(run_commands(commands, guard))


def _status_kib(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


@dataclass
class Worker:
    """A persistent worker process with a time limit per case and a resident-memory limit per case."""

    timeout: float = 60.0
    memory_limit: int = MEMORY_LIMIT
    headroom: int = ADDRESS_SPACE_HEADROOM
    cases: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self._context = multiprocessing.get_context("spawn")
        self._start()

    def _start(self) -> None:
        self._parent, child = self._context.Pipe()
        self._process = self._context.Process(target=_worker, args=(child, self.headroom), daemon=True)
        self._process.start()
        child.close()

    def _restart(self) -> None:
        if self._process.is_alive():
            self._process.kill()
        self._process.join()
        self._start()

    def _reset_peak(self) -> None:
        try:  # VmHWM (peak resident memory) starts again from what the process holds now
            with open(f"/proc/{self._process.pid}/clear_refs", "w") as handle:
                handle.write("5")
        except OSError:
            pass

    def run(self, commands: list[list[str]], guard: str | None = None) -> Result:
        pid = self._process.pid
        self._reset_peak()
        before = _status_kib(pid, "VmRSS") * 1024
        self._parent.send((commands, guard))
        deadline = time.monotonic() + self.timeout
        while True:
            if self._parent.poll(0.05):
                try:
                    result = self._parent.recv()
                except EOFError:
                    break
                extra = _status_kib(pid, "VmHWM") * 1024 - before
                if extra > self.memory_limit:
                    return Result("memory blow-up", f"{extra / 2**20:.0f} MiB above the worker's {before / 2**20:.0f} MiB")
                return result
            if not self._process.is_alive():
                break
            extra = _status_kib(pid, "VmRSS") * 1024 - before
            if extra > self.memory_limit:
                self._restart()
                return Result("memory blow-up", f"killed at {extra / 2**20:.0f} MiB above the worker's start")
            if time.monotonic() > deadline:
                self._restart()
                return Result("hang", f"no answer in {self.timeout:.0f} s")
        code = self._process.exitcode
        self._restart()
        return Result("crash", f"worker exit code {code}")

    def close(self) -> None:
        if self._process.is_alive():
            self._parent.send(None)
            self._process.join(10)
        if self._process.is_alive():
            self._process.kill()


def case_rng(seed: int, kind: str, index: int) -> random.Random:
    return random.Random(f"{seed}/{kind}/{index}")


def fuzz(
    sources,
    kinds: tuple[str, ...],
    cases_per_kind: int | dict[str, int],
    workdir: Path,
    seed: int = 0,
    start: int = 0,
    timeout: float = 60.0,
    keep: Path | None = None,
    memory_limit: int = MEMORY_LIMIT,
    progress=None,
) -> dict[str, Counter]:
    """Run cases ``start .. start + cases_per_kind - 1`` of each kind (a count, or one per kind); return
    {kind: Counter(outcome)}.

    With ``keep``, every case that ends badly is copied there with a ``case.json`` (commands, outcome,
    detail), so it can be replayed by hand.
    """
    from fuzz_inputs import build_case

    worker = Worker(timeout=timeout, memory_limit=memory_limit)
    results: dict[str, Counter] = {}
    try:
        for kind in kinds:
            counts: Counter = Counter()
            count = cases_per_kind[kind] if isinstance(cases_per_kind, dict) else cases_per_kind
            for index in range(start, start + count):
                where = workdir / f"{kind}-{index}"
                where.mkdir()
                case = build_case(kind, index, case_rng(seed, kind, index), sources, where)
                result = worker.run(case.commands, case.guard)
                counts[result.outcome] += 1
                if keep is not None and result.outcome in BAD_OUTCOMES:
                    _keep(case, result, keep)
                if progress is not None:
                    progress(case, result)
                shutil.rmtree(where, ignore_errors=True)
            results[kind] = counts
    finally:
        worker.close()
    return results


def _keep(case: Case, result: Result, keep: Path) -> None:
    target = keep / f"{case.kind}_{case.index}_{case.mutation}_{result.outcome.replace(' ', '-')}"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    if case.path.is_dir():
        shutil.copytree(case.path, target / case.path.name, symlinks=True)
    elif case.path.exists() or case.path.is_symlink():
        shutil.copy2(case.path, target / case.path.name, follow_symlinks=False)
    (target / "case.json").write_text(json.dumps({
        "kind": case.kind, "index": case.index, "mutation": case.mutation, "commands": case.commands,
        "outcome": result.outcome, "detail": result.detail,
    }, indent=1) + "\n")  # fmt: skip
