"""Latency, size and memory of one session: what `compress bench` measures for each model × runtime.

Latency is timed around ``Session.run_raw`` only (inputs prepared and quantized beforehand), after
warm-up runs, and reported as percentiles. Peak memory is measured in a fresh process (see
:func:`peak_memory`); where that is impossible it is left empty rather than guessed.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from edgecompress.artifacts import size_of
from edgecompress.runtimes.base import time_session


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
    session = backend.open(Artifact.open(path), "cpu", threads, trust_model)
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
):
    from edgecompress._progress import progress_bar
    from edgecompress.errors import EdgeCompressError
    from edgecompress.models.inputs import input_spec_of, model_inputs, resolve_preprocessing
    from edgecompress.models.tasks import TASKS, evaluate
    from edgecompress.reports.records import BenchmarkRecord
    from edgecompress.runtimes import RUNTIMES, get_runtime

    backends = [get_runtime(name) for name in runtimes] if runtimes else [rt for _, rt in RUNTIMES.items()]
    pairs = [(a, rt) for a in artifacts for rt in backends if rt.accepts(a)]
    records: list[BenchmarkRecord] = []
    roots: list[str | None] = []  # the source each record's model was derived from
    by_hash: dict[str, BenchmarkRecord] = {}
    bar = progress_bar(total=len(pairs) * runs, disable=not progress, unit="run", dynamic_ncols=True)
    for artifact in artifacts:
        mine = [rt for a, rt in pairs if a is artifact]
        size, gz = file_sizes(artifact.path)
        base = dict(
            model=model_name(artifact),
            variant=variant_name(artifact),
            format=artifact.format.value,
            device=device,
            threads=threads,
            size_bytes=size,
            size_gzip_bytes=gz,
            lineage=[s.step for s in artifact.metadata.lineage],
        )
        if not mine:
            records.append(
                BenchmarkRecord(
                    **base, runtime="-", runtime_version="-", status="skipped", note="no requested runtime runs this format"
                )
            )
            roots.append(None)
            continue
        data = None
        if eval_spec is not None:
            # Options (for a model without a sidecar) beat the sidecar, as in `compress quantize`.
            pre = resolve_preprocessing(artifact, preprocessing).preprocessing
            spec = input_spec_of(artifact, trust_model, (preprocessing or {}).get("layout"))
            data = model_inputs(eval_spec, spec.shape, pre, split="test", need_labels=True, layout=spec.layout)
        sha = artifact.sha256()
        root = artifact.metadata.lineage[0].source_sha256 if artifact.metadata.lineage else None
        for runtime in mine:
            bar.set_description(f"{artifact.path.name} on {runtime.name}")
            record = BenchmarkRecord(**base, runtime=runtime.name, runtime_version=runtime.version())
            ok, why = runtime.device_available(device)
            if not ok:
                record.status, record.note = "unavailable", why
                records.append(record)
                roots.append(root)
                bar.update(runs)
                continue
            try:
                session = runtime.open(artifact, device, threads, trust_model)
                shape = tuple(d if d and d > 0 else 1 for d in session.inputs[0].shape[1:])
                sample = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)
                timing = time_session(session, sample, warmup, runs, tick=lambda: bar.update(1))
                if device == "cpu" and memory:
                    record.peak_memory_bytes = peak_memory(runtime.name, artifact.path, threads, trust_model)
                record.runs = runs
                record.latency_ms_p50, record.latency_ms_p90, record.latency_ms_p99 = timing.p50, timing.p90, timing.p99
                record.throughput_per_s = 1000.0 / float(np.mean(timing.latencies_ms))
                if data is not None:
                    task = artifact.metadata.task or "classification"
                    scores = evaluate(session, data, task)
                    record.metrics = scores
                    record.metric_name = TASKS.get(task).primary_metric
                    record.metric_value = scores[record.metric_name]
                session.close()
            except EdgeCompressError as exc:
                record.status, record.note, record.error_code = "error", str(exc), exc.exit_code
            records.append(record)
            roots.append(root)
            by_hash.setdefault(sha, record)
    bar.close()
    for record, root in zip(records, roots, strict=True):
        baseline = by_hash.get(root) if root else None
        if baseline and baseline.metric_value is not None and record.metric_value is not None:
            record.metric_delta = record.metric_value - baseline.metric_value
    return records
