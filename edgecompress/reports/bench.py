"""Latency, size and memory of one session: what `compress bench` measures for each model × runtime.

Latency is timed around ``Session.run_raw`` only (inputs prepared and quantized beforehand), after
warm-up runs, and reported as percentiles. Peak memory is measured in a fresh process (see
:func:`peak_memory`); where that is impossible it is left empty rather than guessed.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecompress.artifacts import size_of
from edgecompress.calibration.data import ModelInputs
from edgecompress.reports.records import BenchmarkRecord
from edgecompress.runtimes.base import Timing, time_session


def gzip_size(path: Path) -> int:
    """Compressed size: what pruned and clustered models gain shows here, not in the raw size."""
    path = Path(path)
    if path.is_dir():
        return sum(gzip_size(p) for p in path.rglob("*") if p.is_file())
    return len(gzip.compress(path.read_bytes(), compresslevel=9))


def file_sizes(path: Path) -> tuple[int, int]:
    return size_of(path), gzip_size(path)


def peak_memory(runtime: str, path: Path, threads: int | None, trust_model: bool, timeout: float = 180.0) -> int | None:
    """Peak resident memory of opening and running the model, measured in a fresh process.

    In the benchmarking process itself freed memory is reused from earlier models, so a high-water
    mark there says little. The child imports the runtime first and subtracts that baseline.
    Returns None where it cannot be measured (not Linux, or the child failed).
    """
    from edgecompress._child import run_in_child

    result = run_in_child("edgecompress.reports.bench:_memory_child", [runtime, str(path), threads, trust_model], timeout)
    # A failed measurement is reported as missing, not guessed.
    return result.value if result.ok else None


def _memory_child(runtime: str, path: str, threads: int | None, trust_model: bool) -> int | None:
    from edgecompress.artifacts import Artifact
    from edgecompress.runtimes import get_runtime
    from edgecompress.runtimes.probe import trust

    trust(Path(path))  # the parent probed it before timing it
    backend = get_runtime(runtime)
    backend.version()  # imports the runtime's modules before the baseline is taken
    baseline = _status_kib("VmRSS")
    with backend.open(Artifact.open(path), "cpu", threads, trust_model) as session:
        shape = tuple(d if d and d > 0 else 1 for d in session.inputs[0].shape[1:])
        prepared = session.prepare_raw(np.zeros((1, *shape), dtype=np.float32))
        for _ in range(3):
            session.run_raw(prepared)
        peak = _status_kib("VmHWM")
    return None if baseline is None or peak is None else max(0, peak - baseline) * 1024


def _status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def variant_name(artifact) -> str:
    """A short name for how this model was made, from its lineage."""
    steps = artifact.metadata.lineage
    if not steps:
        return f"source ({artifact.format.value})"
    names = []
    for step in steps:
        params = step.params
        if step.step == "quantize":
            names.append(f"{params.get('mode')}{'' if params.get('per_channel', True) else '-per-tensor'}")
        elif step.step == "export":
            names.append("float")
        else:
            names.append(step.step)
    return "+".join(names) + f" ({artifact.format.value})"


def model_name(artifact) -> str:
    """Models derived from one source share its name, so tables group them."""
    if artifact.metadata.extra.get("model_name"):
        return artifact.metadata.extra["model_name"]
    steps = artifact.metadata.lineage
    return Path(steps[0].source).stem if steps else artifact.path.stem


@dataclass(frozen=True)
class FileFacts:
    """What a model file is, computed once however many targets time it."""

    size_bytes: int
    size_gzip_bytes: int
    sha256: str

    @classmethod
    def of(cls, artifact) -> FileFacts:
        size, gz = file_sizes(artifact.path)
        return cls(size, gz, artifact.sha256())


@dataclass(frozen=True)
class Measurement:
    """One model on one runtime: latency, memory and task metrics, or why there are none."""

    runtime: str
    runtime_version: str
    status: str = "ok"
    note: str = ""
    error_code: int | None = None
    timing: Timing | None = None
    peak_memory_bytes: int | None = None
    metrics: Mapping[str, float] | None = None
    metric_name: str | None = None
    latency_input_shape: tuple[int, ...] | None = None


def measure(
    artifact, runtime, device: str = "cpu", threads: int | None = None, warmup: int = 5, runs: int = 50,
    data: ModelInputs | None = None, trust_model: bool = False, memory: bool = True,
    tick: Callable[[], None] | None = None, latency_input: tuple[int, ...] | None = None,
) -> Measurement:  # fmt: skip
    """Score one model on ``data`` and time it (batch 1) on one runtime; errors become a status.

    ``latency_input``: time the same file at this input shape instead (see ``Session.resize_input``);
    the metric is always measured at the model's own size."""
    from edgecompress.errors import EdgeCompressError
    from edgecompress.models.tasks import TASKS, evaluate, task_of

    version = runtime.version()
    ok, why = runtime.device_available(device)
    if not ok:
        return Measurement(runtime.name, version, "unavailable", f"no {device} here: {why}")
    try:
        with runtime.open(artifact, device, threads, trust_model) as session:
            metrics = metric_name = None
            if data is not None:
                task = task_of(artifact.metadata.task, [tuple(o.shape) for o in session.outputs])
                metrics, metric_name = evaluate(session, data, task), TASKS.get(task).primary_metric
            if latency_input is not None:
                session.resize_input(tuple(latency_input))
            shape = tuple(d if d and d > 0 else 1 for d in session.inputs[0].shape[1:])
            sample = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)
            timing = time_session(session, sample, warmup, runs, tick=tick)
        peak = None
        if device == "cpu" and memory and latency_input is None:
            peak = peak_memory(runtime.name, artifact.path, threads, trust_model)
    except EdgeCompressError as exc:
        return Measurement(runtime.name, version, "error", str(exc), exc.exit_code)
    return Measurement(runtime.name, version, timing=timing, peak_memory_bytes=peak, metrics=metrics,
                       metric_name=metric_name, latency_input_shape=tuple(latency_input) if latency_input else None)  # fmt: skip


def make_record(
    artifact, facts: FileFacts, measurement: Measurement, device: str, threads: int | None, runs: int,
    model: str | None = None, variant: str | None = None, reference: Mapping[str, float] | None = None,
) -> BenchmarkRecord:  # fmt: skip
    """The one rule that turns a measurement into a row: names from the lineage unless given, and
    the metric's change against ``reference`` (the float source's metrics on the same data)."""
    m = measurement
    value = m.metrics.get(m.metric_name) if m.metrics and m.metric_name else None
    base = reference.get(m.metric_name) if reference and m.metric_name else None
    metrics = dict(m.metrics or {})
    if base is not None:
        metrics[f"float_{m.metric_name}"] = base
    timing = m.timing
    return BenchmarkRecord(
        model=model or model_name(artifact), variant=variant or variant_name(artifact), format=artifact.format.value,
        runtime=m.runtime, runtime_version=m.runtime_version, device=device, threads=threads,
        size_bytes=facts.size_bytes, size_gzip_bytes=facts.size_gzip_bytes,
        latency_ms_p50=timing.p50 if timing else None, latency_ms_p90=timing.p90 if timing else None,
        latency_ms_p99=timing.p99 if timing else None,
        throughput_per_s=1000.0 / float(np.mean(timing.latencies_ms)) if timing else None,
        peak_memory_bytes=m.peak_memory_bytes, runs=runs if timing else 0, metric_name=m.metric_name,
        metric_value=value, metric_delta=value - base if value is not None and base is not None else None,
        metrics=metrics, lineage=tuple(s.step for s in artifact.metadata.lineage), status=m.status, note=m.note,
        error_code=m.error_code, latency_input_shape=m.latency_input_shape,
    )  # fmt: skip


def run_benchmarks(
    artifacts,
    runtimes=None,
    threads: int | None = None,
    warmup: int = 5,
    runs: int = 50,
    eval_spec=None,
    device: str = "cpu",
    trust_model: bool = False,
    progress: bool = False,
    memory: bool = True,
    preprocessing: dict | None = None,
) -> list[BenchmarkRecord]:
    """`compress bench`: every model on every requested runtime that runs its format.

    A model derived from another one in the same call (by its lineage's source hash) gets its
    metric's change against that source's first measurement. ``preprocessing`` (scale, offset, mean,
    std, color, layout) prepares ``eval_spec`` for models without a sidecar; options beat the sidecar.
    """
    from edgecompress._progress import progress_bar
    from edgecompress.models.inputs import input_spec_of, model_inputs, resolve_preprocessing
    from edgecompress.runtimes import RUNTIMES, get_runtime

    backends = [get_runtime(name) for name in runtimes] if runtimes else [rt for _, rt in RUNTIMES.items()]
    pairs = [(a, rt) for a in artifacts for rt in backends if rt.accepts(a)]
    measured: list[tuple[Any, FileFacts, Measurement | None]] = []
    with progress_bar(total=len(pairs) * runs, disable=not progress, unit="run", dynamic_ncols=True) as bar:
        for artifact in artifacts:
            facts = FileFacts.of(artifact)
            mine = [rt for a, rt in pairs if a is artifact]
            if not mine:
                measured.append((artifact, facts, None))
                continue
            data = None
            if eval_spec is not None:
                pre = resolve_preprocessing(artifact, preprocessing).preprocessing
                spec = input_spec_of(artifact, trust_model, (preprocessing or {}).get("layout"))
                data = model_inputs(eval_spec, spec.shape, pre, split="test", need_labels=True, layout=spec.layout)
            for runtime in mine:
                bar.set_description(f"{artifact.path.name} on {runtime.name}")
                m = measure(artifact, runtime, device, threads, warmup, runs, data, trust_model, memory,
                            lambda: bar.update(1))  # fmt: skip
                measured.append((artifact, facts, m))
    first: dict[str, Measurement] = {}
    for _, facts, m in measured:
        if m is not None and m.metrics:
            first.setdefault(facts.sha256, m)
    records = []
    for artifact, facts, m in measured:
        if m is None:
            m = Measurement("-", "-", "skipped", "no requested runtime runs this format")
        root = artifact.metadata.lineage[0].source_sha256 if artifact.metadata.lineage else None
        reference = first[root].metrics if root in first else None
        records.append(make_record(artifact, facts, m, device, threads, runs, reference=reference))
    return records
