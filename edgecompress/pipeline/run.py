"""Run a recipe: models × variants (chains of passes) × targets, cached, resumable, benchmarked.

Three phases, each a list of independent jobs handed to an executor (``pipeline/executors.py``).
(1) Each model is built and trained (zoo) or taken as given (file), and its float metric measured.
(2) Each model × variant chain runs its passes. (3) Each output is benchmarked on every target, as
*exclusive* jobs: never beside another job competing for the same cores (locally: one at a time
in this process; on Ray: alone on their node). Jobs return their records; only this process
writes the results store.

Every stage is cached under ``<output>/cache/<key>/`` where the key hashes the content of the
stage's input and its parameters (and the data it reads); a stage counts as finished only once
its ``stage.json`` has been renamed into place, so a run killed at any moment resumes with the
first unfinished stage. Benchmark stages are finished when their row is in the results store. The
cache must be on a path every worker sees (on a cluster: a shared filesystem); a per-key lock
makes two workers that reach the same stage compute it once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecompress.artifacts import Artifact, write_text_atomic
from edgecompress.errors import EdgeCompressError, UsageError
from edgecompress.models.inputs import Role
from edgecompress.pipeline.executors import Executor, LocalExecutor, Needs, make_executor
from edgecompress.pipeline.recipe import ModelSpec, Recipe, VariantSpec
from edgecompress.reports.records import BenchmarkRecord, machine_description
from edgecompress.reports.store import DEFAULT_NAME, ResultsStore

log = logging.getLogger(__name__)

#: bump when a stage's output for the same key would change (a converter setting, a file layout)
CACHE_VERSION = 1
STAGE_FILE = "stage.json"
#: a random token the driver leaves in the cache; a worker that cannot read it does not share the cache
CACHE_ID_FILE = ".cache-id"


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

    def identity(self) -> str:
        """This cache's token (made on first use): jobs prove with it that they see the same directory."""
        marker = self.root / CACHE_ID_FILE
        if not marker.is_file():
            write_text_atomic(marker, uuid.uuid4().hex + "\n")
        return marker.read_text().strip()

    @classmethod
    def shared(cls, root: str, identity: str) -> StageCache:
        """The driver's cache, as a worker sees it; an error when the worker has another (or none)."""
        marker = Path(root) / CACHE_ID_FILE
        try:
            seen = marker.read_text().strip()
        except OSError:
            seen = None
        if seen != identity:
            raise UsageError(
                f"the stage cache {root} is not the driver's on {socket.gethostname()}",
                "put the results directory (--results) on a filesystem every worker mounts at the same path",
            )
        return cls(Path(root))

    def holder(self, key: str) -> str:
        """Who holds (or last held) a stage's lock: "HOST PID", for a stage that seems stuck."""
        path = self.root / f".{key}.lock"
        return path.read_text().strip() if path.is_file() else ""

    @contextlib.contextmanager
    def _lock(self, key: str) -> Iterator[None]:
        # "a+": opening must not truncate the note of the process that holds the lock now
        with open(self.root / f".{key}.lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.seek(0)
            handle.truncate()
            handle.write(f"{socket.gethostname()} {os.getpid()}\n")
            handle.flush()
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
        strategy = recipe.training.strategy if model.train else None
        if strategy not in (None, "default"):  # the keys of default runs stay what they were
            payload["strategy"] = strategy
        label = f"train({model.zoo}, epochs={model.train.epochs})" if model.train else f"build({model.zoo})"
        info = _stage(cache, payload, "model", model.name, "-", label, printer, stages,
                      lambda d: _build_zoo_model(model, d, progress, strategy))  # fmt: skip
        source = cache.root / stages[-1].key / info["file"]
    baseline = None
    if model.measures_metric:
        artifact = Artifact.open(source)
        payload = {"stage": "evaluate", "input": artifact.sha256(), "eval": model.data.validation.fingerprint()}
        baseline = _stage(cache, payload, "model", model.name, "-", "evaluate(float source, keras)", printer,
                          stages, lambda d: _evaluate_source(model, artifact, recipe.trust_model))  # fmt: skip
    return ModelOutcome(model.name, str(source), baseline, stages)


def _build_zoo_model(model: ModelSpec, directory: Path, progress: bool, strategy: str | None = None) -> dict[str, Any]:
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
        seed=spec.seed, strategy=strategy,
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
    #: bench jobs: the output to benchmark, the source's float metrics, the stage keys already stored
    output: str | None = None
    baseline: dict[str, Any] | None = None
    stored: frozenset[str] = frozenset()
    #: the cache's token, which the worker must find in the cache it sees
    cache_id: str = ""


def _in_worker(job: _Job) -> None:
    """A spawned worker starts bare: quiet TensorFlow's loggers (passes import on first use)."""
    from edgecompress._env import debug_enabled, quiet_python_loggers

    if not debug_enabled():
        quiet_python_loggers()


def _model_job(job: _Job) -> ModelOutcome:
    _in_worker(job)
    try:
        return prepare_model(job.recipe, job.model, StageCache.shared(job.cache, job.cache_id), job.printer, job.progress)
    except EdgeCompressError as exc:
        return ModelOutcome(job.model, None, None, [], str(exc))
    except Exception as exc:  # noqa: BLE001 - one broken model must not stop the others
        log.debug("model %s failed", job.model, exc_info=True)
        return ModelOutcome(job.model, None, None, [], f"internal error: {type(exc).__name__}: {exc}")


def _variant_job(job: _Job) -> VariantOutcome:
    _in_worker(job)
    assert job.variant is not None and job.source is not None
    try:
        cache = StageCache.shared(job.cache, job.cache_id)
        return run_variant(job.recipe, job.model, job.variant, job.source, cache, job.printer, job.progress)
    except EdgeCompressError as exc:
        return VariantOutcome(job.model, job.variant.key, None, [], str(exc))
    except Exception as exc:  # noqa: BLE001 - one broken variant must not stop the others
        log.debug("variant %s of %s failed", job.variant.key, job.model, exc_info=True)
        return VariantOutcome(job.model, job.variant.key, None, [], f"internal error: {type(exc).__name__}: {exc}")


def _bench_job(job: _Job) -> BenchOutcome:
    _in_worker(job)
    assert job.variant is not None and job.source is not None and job.output is not None
    model = job.recipe.model(job.model)
    try:
        StageCache.shared(job.cache, job.cache_id)  # the outputs it benchmarks are in there
        return bench_variant(job.recipe, model, job.variant, job.output, job.baseline, job.stored, job.printer,
                             _eval_data(model, job.source))  # fmt: skip
    except EdgeCompressError as exc:
        return BenchOutcome(job.model, job.variant.key, [], [], [], str(exc))
    except Exception as exc:  # noqa: BLE001 - one output that cannot be benchmarked must not stop the others
        log.debug("benchmarking %s of %s failed", job.variant.key, job.model, exc_info=True)
        return BenchOutcome(job.model, job.variant.key, [], [], [], f"internal error: {type(exc).__name__}: {exc}")


# --------------------------------------------------------------------------- phase 3: benchmarks


@dataclass(frozen=True)
class BenchOutcome:
    """One output benchmarked on every target: the records (with their stage keys) for the driver
    to store, the stages, and the targets that failed."""

    model: str
    variant: str
    stages: list[StageOutcome]
    failures: list[str]
    rows: list[tuple[str, BenchmarkRecord]]
    error: str | None = None


def bench_variant(
    recipe: Recipe, model: ModelSpec, variant: VariantSpec, output: str, baseline: dict[str, Any] | None,
    stored: frozenset[str], printer: ProgressPrinter, eval_data,
) -> BenchOutcome:  # fmt: skip
    """Benchmark one output on every target that runs it and whose record is not ``stored`` yet;
    each target's record is one stage. The file is hashed and gzipped once."""
    from edgecompress.reports.bench import FileFacts, make_record, measure
    from edgecompress.runtimes import get_runtime

    artifact = Artifact.open(output)
    facts = FileFacts.of(artifact)
    data = _inputs_for(eval_data, artifact, recipe.trust_model)
    reference = baseline["metrics"] if baseline else None
    latency_input = _latency_input(model, artifact)
    stages: list[StageOutcome] = []
    failures: list[str] = []
    rows: list[tuple[str, BenchmarkRecord]] = []
    bench = recipe.bench
    for runtime in (get_runtime(name) for name in recipe.targets.runtimes):
        if not runtime.accepts(artifact):
            continue
        for device in recipe.targets.devices:
            available, _ = runtime.device_available(device)
            # An unavailable device is recorded once, not once per thread count.
            for threads in recipe.targets.threads if available else (None,):
                label = f"bench({runtime.name}, {device}, threads={threads or 'default'})"
                key = StageCache.key({
                    "stage": "bench", "input": facts.sha256, "runtime": runtime.name, "version": runtime.version(),
                    "device": device, "threads": threads, "runs": bench.runs, "warmup": bench.warmup,
                    "memory": bench.memory, "eval": model.data.validation.fingerprint() if data is not None else None,
                    "model": model.name, "variant": variant.key, "latency_input": latency_input,
                })  # fmt: skip
                if key in stored:
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
                    rows.append((key, record))
                    status = "done" if record.status == "ok" else record.status
                    outcome = StageOutcome("bench", model.name, variant.key, label, key, status, seconds,
                                           record.note if status != "done" else "")  # fmt: skip
                printer.finished(outcome)
                stages.append(outcome)
    return BenchOutcome(model.name, variant.key, stages, failures, rows)


def _latency_input(model: ModelSpec, artifact: Artifact) -> tuple[int, ...] | None:
    if model.latency_at is None:
        return None
    from edgecompress.models.inputs import input_shape_of

    shape = input_shape_of(artifact)
    return (model.latency_at, model.latency_at, *shape[2:])


#: the last model's held-out set in this process: consecutive bench jobs of one model share it
_EVAL_CACHE: dict[tuple[str, str, str], Any] = {}


def _eval_data(model: ModelSpec, source: str):
    """The held-out set, loaded once per model and process: every variant and target scores the same samples."""
    if not model.measures_metric:
        return None
    key = (model.name, json.dumps(model.data.validation.fingerprint(), sort_keys=True, default=str), source)
    if key not in _EVAL_CACHE:
        _EVAL_CACHE.clear()
        _EVAL_CACHE[key] = role_data(model, Role.VALIDATION, Artifact.open(source))
    return _EVAL_CACHE[key]


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
    training_gpus: float = 0.0,
) -> PipelineResult:
    """Run (or resume) a validated recipe; records go to the store, stage outputs to the cache.

    ``training_gpus``: what each job that trains (a zoo model, a chain with a training pass)
    asks its executor for; Ray places such jobs on nodes with that many free GPUs."""
    started = time.perf_counter()
    store_file, cache_dir = results_paths(recipe, store_path)
    cache = StageCache(cache_dir)
    executor = executor or make_executor(jobs)
    printer = ProgressPrinter(progress)
    # Progress bars of parallel jobs would overwrite each other; stage lines are enough there.
    bars = progress and isinstance(executor, LocalExecutor)
    result = PipelineResult(recipe.name, store_file)
    with exclusive_run(store_file.parent):
        _run_phases(recipe, result, executor, cache, printer, bars, training_gpus)
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


def _trains(model: ModelSpec, variant: VariantSpec | None) -> bool:
    """Whether a job trains: a zoo model with ``train``, or a chain with a pass that needs training data."""
    if variant is None:
        return model.train is not None
    return any(Role.TRAIN in spec.build().needs() for spec in variant.passes)


def _map(executor: Executor, fn: Callable[[_Job], Any], jobs: list[tuple[_Job, Needs]]) -> Iterator[Any]:
    """Jobs grouped by what they need (in order of first appearance), each group one ``map``."""
    groups: dict[Needs, list[_Job]] = {}
    for job, needs in jobs:
        groups.setdefault(needs, []).append(job)
    for needs, items in groups.items():
        yield from executor.map(fn, items, needs)


def _run_phases(recipe: Recipe, result: PipelineResult, executor: Executor, cache: StageCache,
                printer: ProgressPrinter, bars: bool, training_gpus: float) -> None:  # fmt: skip
    # An executor whose jobs run where their output cannot reach this terminal (Ray) gets silent
    # jobs; this process prints their stages as they come back.
    remote = not getattr(executor, "shares_terminal", True)
    job_printer = ProgressPrinter(False) if remote else printer

    identity = cache.identity()

    def job(**kwargs: Any) -> _Job:
        return _Job(recipe, str(cache.root), job_printer, bars, cache_id=identity, **kwargs)

    def needs(model: ModelSpec, variant: VariantSpec | None = None) -> Needs:
        return Needs(gpus=training_gpus if _trains(model, variant) else 0.0)

    def report(outcome, what: str) -> bool:
        result.stages += outcome.stages
        if remote:
            for stage in outcome.stages:
                printer.finished(stage)
        if outcome.error:
            result.failures.append(f"{what}: {outcome.error}")
            printer.say(f"  failed  {what}: {outcome.error}")
        return not outcome.error

    sources: dict[str, ModelOutcome] = {}
    for outcome in _map(executor, _model_job, [(job(model=m.name), needs(m)) for m in recipe.models]):
        if report(outcome, outcome.model):
            sources[outcome.model] = outcome
    variant_jobs = [
        (job(model=m.name, variant=v, source=sources[m.name].source), needs(m, v))
        for m in recipe.models if m.name in sources for v in recipe.variants
    ]  # fmt: skip
    outputs: dict[tuple[str, str], str] = {}
    for outcome in _map(executor, _variant_job, variant_jobs):
        if report(outcome, f"{outcome.model} · {outcome.variant}"):
            outputs[(outcome.model, outcome.variant)] = outcome.output
    with ResultsStore(result.store) as store:
        bench_jobs = [
            job(model=m.name, variant=v, source=sources[m.name].source, output=outputs[(m.name, v.key)],
                baseline=sources[m.name].baseline, stored=frozenset(store.keys(m.name, v.name)))
            for m in recipe.models if m.name in sources for v in recipe.variants if (m.name, v.key) in outputs
        ]  # fmt: skip
        for outcome in executor.map(_bench_job, bench_jobs, Needs(exclusive=True)):
            report(outcome, f"{outcome.model} · {outcome.variant}")
            result.failures += outcome.failures
            if outcome.rows:
                store.add_many(outcome.rows, recipe.name)  # one transaction per output: whole rows or none
        result.records = store.records(recipe.name)
