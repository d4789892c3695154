"""Run a recipe: models × variants (chains of passes) × targets, cached, resumable, benchmarked.

Three phases. (1) Each model is built and trained (zoo) or taken as given (file), and its float
metric measured. (2) Each model × variant chain runs its passes; variants are independent, so an
executor may run them in parallel processes. (3) Each output is benchmarked on every target, one
at a time in this process, so latencies are never measured beside another job competing for the
same cores.

Every stage is cached under ``<output>/cache/<key>/`` where the key hashes the content of the
stage's input and its parameters (and the data it reads); a stage counts as finished only once
its ``stage.json`` has been renamed into place, so a run killed at any moment resumes with the
first unfinished stage. Benchmark stages are finished when their row is in the results store.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecompress.artifacts import Artifact, write_text_atomic
from edgecompress.errors import EdgeCompressError
from edgecompress.models.inputs import Role
from edgecompress.pipeline.executors import Executor, LocalExecutor, make_executor
from edgecompress.pipeline.recipe import ModelSpec, Recipe, VariantSpec
from edgecompress.reports.records import BenchmarkRecord, machine_description
from edgecompress.reports.store import DEFAULT_NAME, ResultsStore

log = logging.getLogger(__name__)

#: bump when a stage's output for the same key would change (a converter setting, a file layout)
CACHE_VERSION = 1
STAGE_FILE = "stage.json"


# --------------------------------------------------------------------------- progress


@dataclass(frozen=True)
class StageOutcome:
    phase: str  # model | variant | bench
    model: str
    variant: str
    stage: str
    key: str
    status: str  # done | cached | failed | unavailable
    seconds: float = 0.0
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ProgressPrinter:
    """One line per stage on stderr (picklable, so worker processes print their own stages)."""

    enabled: bool = True

    def started(self, model: str, variant: str, stage: str) -> None:
        self.say(f"  run     {model} · {variant} · {stage} …")

    def finished(self, outcome: StageOutcome) -> None:
        took = f" ({outcome.seconds:.1f} s)" if outcome.status == "done" else ""
        detail = f": {outcome.detail}" if outcome.detail else ""
        self.say(f"  {outcome.status:<7} {outcome.model} · {outcome.variant} · {outcome.stage}{took}{detail}")

    def say(self, line: str) -> None:
        if self.enabled:
            from tqdm import tqdm

            tqdm.write(line, file=sys.stderr)


# --------------------------------------------------------------------------- stage cache


class StageCache:
    """Finished stages by key: a directory with the stage's files and, written last, stage.json."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(payload: dict[str, Any]) -> str:
        text = json.dumps({"cache_version": CACHE_VERSION, **payload}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def finished(self, key: str) -> dict[str, Any] | None:
        marker = self.root / key / STAGE_FILE
        return json.loads(marker.read_text()) if marker.is_file() else None

    def run(self, key: str, compute: Callable[[Path], dict[str, Any]]) -> tuple[dict[str, Any], bool]:
        """(info, True) if the stage had finished before; otherwise compute it, mark it finished."""
        info = self.finished(key)
        if info is not None:
            return info, True
        with self._lock(key):  # two variants sharing a prefix stage in parallel compute it once
            info = self.finished(key)
            if info is not None:
                return info, True
            directory = self.root / key
            if directory.exists():  # what an interrupted run left half-written
                shutil.rmtree(directory)
            directory.mkdir()
            info = compute(directory)
            write_text_atomic(directory / STAGE_FILE, json.dumps(info, indent=2, default=str) + "\n")
            return info, False

    @contextlib.contextmanager
    def _lock(self, key: str) -> Iterator[None]:
        with open(self.root / f".{key}.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def results_paths(recipe: Recipe, store: Path | None = None) -> tuple[Path, Path]:
    """(store, cache dir): the cache sits next to the results store."""
    store = Path(store) if store else recipe.output / DEFAULT_NAME
    return store, store.parent / "cache"


# --------------------------------------------------------------------------- data


def role_data(model: ModelSpec, role: Role, artifact: Artifact):
    """One role's data, resized and preprocessed for this model."""
    from edgecompress.models.inputs import input_shape_of, load_roles, resolve_preprocessing

    roles = load_roles(model.data, {role}, input_shape_of(artifact), resolve_preprocessing(artifact).preprocessing)
    return getattr(roles, role.value)


# --------------------------------------------------------------------------- phase 1: models


@dataclass(frozen=True)
class ModelOutcome:
    model: str
    source: str | None
    baseline: dict[str, Any] | None
    stages: list[StageOutcome]
    error: str | None = None


def prepare_model(recipe: Recipe, name: str, cache: StageCache, printer: ProgressPrinter, progress: bool) -> ModelOutcome:
    """Build (and train) a zoo model, or take the file; then measure its float metric."""
    model = recipe.model(name)
    stages: list[StageOutcome] = []
    if model.file is not None:
        source = model.file
    else:
        payload = {
            "stage": "model",
            "name": model.name,
            "zoo": model.zoo,
            "params": model.params,
            "train": model.train.to_dict() if model.train else None,
            "data": model.data.train.fingerprint() if model.train and model.data.train else None,
        }
        label = f"train({model.zoo}, epochs={model.train.epochs})" if model.train else f"build({model.zoo})"
        info = _stage(cache, payload, "model", model.name, "-", label, printer, stages,
                      lambda d: _build_zoo_model(model, d, progress))  # fmt: skip
        source = cache.root / stages[-1].key / info["file"]
    baseline = None
    if model.measures_metric:
        artifact = Artifact.open(source)
        payload = {"stage": "evaluate", "input": artifact.sha256(), "eval": model.data.validation.fingerprint()}
        baseline = _stage(cache, payload, "model", model.name, "-", "evaluate(float source, keras)", printer,
                          stages, lambda d: _evaluate_source(model, artifact, recipe.trust_model))  # fmt: skip
    return ModelOutcome(model.name, str(source), baseline, stages)


def _build_zoo_model(model: ModelSpec, directory: Path, progress: bool) -> dict[str, Any]:
    import dataclasses

    from edgecompress.models.train import save_model, train_zoo
    from edgecompress.models.zoo import build

    output = directory / f"{model.name}.h5"
    if model.train is None:
        keras_model, metadata = build(model.zoo, **model.params)
        metadata = dataclasses.replace(metadata, extra={**metadata.extra, "model_name": model.name, "trained": False})
        save_model(keras_model, output, metadata)
        return {"file": output.name, "trained": False}
    spec = model.train
    result = train_zoo(
        model.zoo, output, data=model.data.train.spec if model.data.train else None, epochs=spec.epochs,
        val_split=spec.val_split, batch_size=spec.batch_size, lr=spec.lr, params=model.params, progress=progress,
        seed=spec.seed,
    )  # fmt: skip
    return {
        "file": output.name,
        "trained": True,
        "data": result.data,
        "metric": result.metric,
        "validation_scores": result.scores,
        "trivial_baseline": result.baseline,
    }


def _evaluate_source(model: ModelSpec, artifact: Artifact, trust_model: bool) -> dict[str, Any]:
    from edgecompress.models.tasks import TASKS, evaluate, task_of
    from edgecompress.runtimes import open_session

    data = role_data(model, Role.VALIDATION, artifact)
    with open_session(artifact, "keras", trust_model=trust_model) as session:
        task = task_of(artifact.metadata.task or model.task, [tuple(o.shape) for o in session.outputs])
        scores = evaluate(session, data, task)
    return {"task": task, "metric_name": TASKS.get(task).primary_metric, "metrics": scores, "data": data.source}


def _stage(
    cache: StageCache,
    payload: dict[str, Any],
    phase: str,
    model: str,
    variant: str,
    label: str,
    printer: ProgressPrinter,
    stages: list[StageOutcome],
    compute: Callable[[Path], dict[str, Any]],
) -> dict[str, Any]:
    key = cache.key(payload)
    started = time.perf_counter()
    if cache.finished(key) is None:
        printer.started(model, variant, label)

    def timed(directory: Path) -> dict[str, Any]:
        info = compute(directory)
        return {**info, "stage": label, "seconds": time.perf_counter() - started}

    info, cached = cache.run(key, timed)
    outcome = StageOutcome(phase, model, variant, label, key, "cached" if cached else "done", time.perf_counter() - started)
    printer.finished(outcome)
    stages.append(outcome)
    return info


# --------------------------------------------------------------------------- phase 2: variants


@dataclass(frozen=True)
class VariantOutcome:
    model: str
    variant: str
    output: str | None
    stages: list[StageOutcome]
    error: str | None = None


def run_variant(
    recipe: Recipe, model_name: str, variant: VariantSpec, source: str, cache: StageCache, printer: ProgressPrinter,
    progress: bool,
) -> VariantOutcome:  # fmt: skip
    """Apply the variant's passes in order; each pass is a cached stage keyed by its input's content."""
    model = recipe.model(model_name)
    artifact = Artifact.open(source)
    stages: list[StageOutcome] = []
    for spec in variant.passes:
        step = spec.build()
        payload: dict[str, Any] = {"stage": "pass", "pass": spec.name, "params": step.params(), "input": artifact.sha256()}
        for role in sorted(step.needs(), key=lambda r: r.value):
            payload[role.value] = model.data.get(role).fingerprint()
        current = artifact

        def apply(directory: Path, step=step, current=current) -> dict[str, Any]:
            return _apply_pass(step, current, directory, model, recipe, progress)

        info = _stage(cache, payload, "variant", model.name, variant.key, spec.describe(), printer, stages, apply)
        artifact = Artifact.open(cache.root / stages[-1].key / info["file"])
    return VariantOutcome(model.name, variant.key, str(artifact.path), stages)


def _apply_pass(step, artifact: Artifact, directory: Path, model: ModelSpec, recipe: Recipe, progress: bool) -> dict[str, Any]:
    """One pass of a chain, run exactly as the CLI runs it; scores come later, in the bench stage."""
    from edgecompress.compress.runner import run_pass

    suffix = step.produces.suffix or ".savedmodel"
    run = run_pass(step, artifact, directory / f"model{suffix}", model.data, trust_model=recipe.trust_model,
                   progress=progress, evaluate=False)  # fmt: skip
    return {"file": run.output.path.name, "report": run.report.to_dict()}


# --------------------------------------------------------------------------- jobs (picklable)


@dataclass(frozen=True)
class _Job:
    recipe: Recipe
    cache: str
    printer: ProgressPrinter
    progress: bool
    model: str
    variant: VariantSpec | None = None
    source: str | None = None


def _in_worker(job: _Job) -> None:
    """A spawned worker starts bare: quiet TensorFlow's loggers (passes import on first use)."""
    from edgecompress._env import debug_enabled, quiet_python_loggers

    if not debug_enabled():
        quiet_python_loggers()


def _model_job(job: _Job) -> ModelOutcome:
    _in_worker(job)
    try:
        return prepare_model(job.recipe, job.model, StageCache(Path(job.cache)), job.printer, job.progress)
    except EdgeCompressError as exc:
        return ModelOutcome(job.model, None, None, [], str(exc))
    except Exception as exc:  # noqa: BLE001 - one broken model must not stop the others
        log.debug("model %s failed", job.model, exc_info=True)
        return ModelOutcome(job.model, None, None, [], f"internal error: {type(exc).__name__}: {exc}")


def _variant_job(job: _Job) -> VariantOutcome:
    _in_worker(job)
    assert job.variant is not None and job.source is not None
    try:
        return run_variant(job.recipe, job.model, job.variant, job.source, StageCache(Path(job.cache)), job.printer, job.progress)
    except EdgeCompressError as exc:
        return VariantOutcome(job.model, job.variant.key, None, [], str(exc))
    except Exception as exc:  # noqa: BLE001 - one broken variant must not stop the others
        log.debug("variant %s of %s failed", job.variant.key, job.model, exc_info=True)
        return VariantOutcome(job.model, job.variant.key, None, [], f"internal error: {type(exc).__name__}: {exc}")


# --------------------------------------------------------------------------- phase 3: benchmarks


def bench_variant(
    recipe: Recipe, model: ModelSpec, variant: VariantSpec, output: str, baseline: dict[str, Any] | None,
    store: ResultsStore, cache: StageCache, printer: ProgressPrinter, eval_data,
) -> tuple[list[StageOutcome], list[str]]:  # fmt: skip
    """Benchmark one output on every target that runs it; each target's record is one stage.

    The file is hashed and gzipped once; the evaluation data is the model's, loaded once."""
    from edgecompress.reports.bench import FileFacts, make_record, measure
    from edgecompress.runtimes import get_runtime

    artifact = Artifact.open(output)
    facts = FileFacts.of(artifact)
    data = _inputs_for(eval_data, artifact, recipe.trust_model)
    reference = baseline["metrics"] if baseline else None
    latency_input = _latency_input(model, artifact)
    stages: list[StageOutcome] = []
    failures: list[str] = []
    bench = recipe.bench
    for runtime in (get_runtime(name) for name in recipe.targets.runtimes):
        if not runtime.accepts(artifact):
            continue
        for device in recipe.targets.devices:
            available, _ = runtime.device_available(device)
            # An unavailable device is recorded once, not once per thread count.
            for threads in recipe.targets.threads if available else (None,):
                label = f"bench({runtime.name}, {device}, threads={threads or 'default'})"
                key = cache.key({
                    "stage": "bench", "input": facts.sha256, "runtime": runtime.name, "version": runtime.version(),
                    "device": device, "threads": threads, "runs": bench.runs, "warmup": bench.warmup,
                    "memory": bench.memory, "eval": model.data.validation.fingerprint() if data is not None else None,
                    "model": model.name, "variant": variant.key, "latency_input": latency_input,
                })  # fmt: skip
                if store.has(key):
                    outcome = StageOutcome("bench", model.name, variant.key, label, key, "cached")
                    printer.finished(outcome)
                    stages.append(outcome)
                    continue
                started = time.perf_counter()
                if available:
                    printer.started(model.name, variant.key, label)
                measured = measure(artifact, runtime, device, threads, bench.warmup, bench.runs, data,
                                   recipe.trust_model, bench.memory, latency_input=latency_input)  # fmt: skip
                record = make_record(artifact, facts, measured, device, threads, bench.runs, model.name, variant.name,
                                     reference)  # fmt: skip
                seconds = time.perf_counter() - started
                if record.status == "error":
                    failures.append(f"{model.name} · {variant.key} · {label}: {record.note}")
                    outcome = StageOutcome("bench", model.name, variant.key, label, key, "failed", seconds, record.note)
                else:
                    store.add(key, record, recipe.name)
                    status = "done" if record.status == "ok" else record.status
                    outcome = StageOutcome("bench", model.name, variant.key, label, key, status, seconds,
                                           record.note if status != "done" else "")  # fmt: skip
                printer.finished(outcome)
                stages.append(outcome)
    return stages, failures


def _latency_input(model: ModelSpec, artifact: Artifact) -> tuple[int, ...] | None:
    if model.latency_at is None:
        return None
    from edgecompress.models.inputs import input_shape_of

    shape = input_shape_of(artifact)
    return (model.latency_at, model.latency_at, *shape[2:])


def _eval_data(model: ModelSpec, source: str):
    """The held-out set loaded once per model: every variant and target scores the same samples."""
    if not model.measures_metric:
        return None
    return role_data(model, Role.VALIDATION, Artifact.open(source))


def _inputs_for(data, artifact: Artifact, trust_model: bool):
    from edgecompress.models.inputs import inputs_for

    return None if data is None else inputs_for(data, artifact, trust_model)


# --------------------------------------------------------------------------- the run


@dataclass
class PipelineResult:
    recipe: str
    store: Path
    stages: list[StageOutcome] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    records: list[BenchmarkRecord] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, status: str, phase: str | None = None) -> int:
        return sum(1 for s in self.stages if s.status == status and (phase is None or s.phase == phase))

    def to_dict(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe,
            "store": str(self.store),
            "seconds": self.seconds,
            "stages": [s.to_dict() for s in self.stages],
            "failures": self.failures,
            "records": [r.to_dict() for r in self.records],
        }


def run_pipeline(
    recipe: Recipe,
    store_path: Path | None = None,
    jobs: int = 1,
    executor: Executor | None = None,
    progress: bool = True,
) -> PipelineResult:
    """Run (or resume) a validated recipe; records go to the store, stage outputs to the cache."""
    started = time.perf_counter()
    store_file, cache_dir = results_paths(recipe, store_path)
    cache = StageCache(cache_dir)
    executor = executor or make_executor(jobs)
    printer = ProgressPrinter(progress)
    # Progress bars of parallel jobs would overwrite each other; stage lines are enough there.
    bars = progress and isinstance(executor, LocalExecutor)
    result = PipelineResult(recipe.name, store_file)
    with exclusive_run(store_file.parent):
        _run_phases(recipe, result, executor, cache, printer, bars)
        result.seconds = time.perf_counter() - started
        with ResultsStore(store_file) as store:
            store.log_run(recipe.name, result.seconds, result.count("done"), result.count("cached"), machine_description())
    return result


@contextlib.contextmanager
def exclusive_run(directory: Path) -> Iterator[None]:
    """One pipeline at a time per results directory. A second one waits, says so, and then finds
    the first one's stages finished; so no benchmark is ever timed beside another run's work."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".pipeline.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            log.warning("another compress pipeline (%s) is running on %s; waiting for it to finish", holder, directory)
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_phases(recipe: Recipe, result: PipelineResult, executor: Executor, cache: StageCache,
                printer: ProgressPrinter, bars: bool) -> None:  # fmt: skip
    def job(**kwargs: Any) -> _Job:
        return _Job(recipe, str(cache.root), printer, bars, **kwargs)

    sources: dict[str, ModelOutcome] = {}
    for outcome in executor.map(_model_job, [job(model=m.name) for m in recipe.models]):
        result.stages += outcome.stages
        if outcome.error:
            result.failures.append(f"{outcome.model}: {outcome.error}")
            printer.say(f"  failed  {outcome.model}: {outcome.error}")
        else:
            sources[outcome.model] = outcome
    variant_jobs = [
        job(model=m.name, variant=v, source=sources[m.name].source) for m in recipe.models if m.name in sources
        for v in recipe.variants
    ]  # fmt: skip
    outputs: dict[tuple[str, str], str] = {}
    for outcome in executor.map(_variant_job, variant_jobs):
        result.stages += outcome.stages
        if outcome.error:
            result.failures.append(f"{outcome.model} · {outcome.variant}: {outcome.error}")
            printer.say(f"  failed  {outcome.model} · {outcome.variant}: {outcome.error}")
        else:
            outputs[(outcome.model, outcome.variant)] = outcome.output
    with ResultsStore(result.store) as store:
        for model in recipe.models:
            if model.name not in sources:
                continue
            eval_data = _eval_data(model, sources[model.name].source)
            for variant in recipe.variants:
                output = outputs.get((model.name, variant.key))
                if output is None:
                    continue
                stages, failures = bench_variant(
                    recipe, model, variant, output, sources[model.name].baseline, store, cache, printer, eval_data
                )
                result.stages += stages
                result.failures += failures
        result.records = store.records(recipe.name)
