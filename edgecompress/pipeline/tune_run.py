"""Running `compress tune`: build each variant the search asks for (``run_pass``, cached stages, the
pipeline's executor), time it on every thread count in this process, score it if it could still be
the pick, pick, and write the results.

Builds of one round may run in parallel (``executor.map``); timings never do: each is taken in
this process after the round's builds are done, so no latency is measured beside another job.
Scoring happens here too, after timing: the float source is scored once per run (not once per
variant), each file once (it has one runtime, and accuracy does not depend on the thread count),
and a file the search finds dominated is not scored at all (``pipeline/tune.py``). Every stage is
cached in the work directory, so a rerun builds, times and scores nothing twice.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecompress.artifacts import Artifact, write_bytes_atomic, write_metadata, write_text_atomic
from edgecompress.errors import BudgetError, EdgeCompressError, UsageError
from edgecompress.models.inputs import DataPlan, DataSource, Role
from edgecompress.pipeline.executors import Executor, make_executor
from edgecompress.pipeline.run import ProgressPrinter, StageCache
from edgecompress.pipeline.tune import (
    RUNTIME_FORMATS,
    TUNE_TARGETS,
    SearchState,
    TuneTarget,
    Variant,
    accuracy_fixes,
    host_target,
    search,
    search_space,
    thread_counts,
)
from edgecompress.reports.records import machine_description
from edgecompress.reports.tune import Budget, Measured, TuneResult, budget_line

log = logging.getLogger(__name__)

SEARCHES = ("branch-and-bound", "grid")


@dataclass(frozen=True)
class TuneConfig:
    """Everything one tuning run needs; validated before anything is built."""

    model: Path
    calib: str
    eval: str
    budget: Budget = Budget()
    calib_samples: int = 100
    runtimes: tuple[str, ...] | None = None
    threads: int | tuple[int, ...] | None = None
    target: str | None = None
    output: Path | None = None
    workdir: Path | None = None
    search: str = "branch-and-bound"
    runs: int = 50
    warmup: int = 5
    jobs: int = 1
    preprocessing: dict[str, Any] | None = None
    trust_model: bool = False
    force: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", Path(self.model))
        if self.search not in SEARCHES:
            raise UsageError(f"search must be one of {', '.join(SEARCHES)}, not '{self.search}'")
        for name, minimum in (("calib_samples", 1), ("runs", 1), ("warmup", 0), ("jobs", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise UsageError(f"{name} must be a whole number ≥ {minimum}, not {value!r}")
        if self.runtimes is not None:
            unknown = [r for r in self.runtimes if r not in RUNTIME_FORMATS]
            if unknown or not self.runtimes:
                raise UsageError(f"cannot tune for runtime '{unknown[0] if unknown else ''}'",
                                 f"choose from: {', '.join(RUNTIME_FORMATS)}")  # fmt: skip
        if self.target is not None:
            TUNE_TARGETS.get(self.target)  # an unknown name fails now, listing the valid ones

    def resolved_target(self) -> TuneTarget:
        return TUNE_TARGETS.get(self.target) if self.target else host_target()

    def output_path(self) -> Path:
        return self.output or self.model.with_name(f"{self.model.stem}.tuned")

    def data(self) -> DataPlan:
        return DataPlan(calibration=DataSource(self.calib, self.calib_samples), validation=DataSource(self.eval))


@dataclass(frozen=True)
class _BuildJob:
    """One variant to build in a worker (picklable: the executor may send it to another process)."""

    variant: Variant
    source: str
    cache: str
    data: DataPlan
    preprocessing: dict[str, Any] | None
    trust_model: bool


def tune(config: TuneConfig, executor: Executor | None = None, progress: bool = True) -> TuneResult:
    """Search, pick, write the pick and the report; returns the result (``pick`` None: nothing met
    the budget, and ``budget_line`` says how close the closest came)."""
    started = time.perf_counter()
    source = Artifact.open(config.model)
    if not source.format.is_keras:
        raise UsageError(f"compress tune takes a Keras model, not {source.format.value} ({source.path})",
                         "pass the trained Keras source (.h5 / .keras)")  # fmt: skip
    target = config.resolved_target()
    runtimes = config.runtimes or target.runtimes
    _check_runtimes(runtimes)
    threads = thread_counts(config.threads, target)
    workdir = config.workdir or config.output_path().with_name(config.output_path().name + ".tune")
    cache = StageCache(Path(workdir) / "cache")
    printer = ProgressPrinter(progress)
    executor = executor or make_executor(config.jobs)
    space = search_space(runtimes, accuracy_fixes(config.budget.max_drop))
    job = _BuildJob(Variant(runtimes[0], "float"), str(source.path), str(cache.root), config.data(),
                    config.preprocessing, config.trust_model)  # fmt: skip
    scorer = _Scorer(source, config, cache, printer)

    def build(batch):
        jobs = [dataclasses.replace(job, variant=v) for v in batch]
        built = {info["key"]: info for info in executor.map(_build, jobs)}
        return [_timed(v, built[_key(v)], cache, threads, config, printer) for v in batch]

    state = search(space, build, config.budget, target, grid=config.search == "grid", score=scorer)
    result = _result(source, state, target, threads, len(space), config, Path(workdir), time.perf_counter() - started)
    return _write(result, state, config, Path(workdir))


def _check_runtimes(runtimes) -> None:
    from edgecompress.errors import RuntimeUnavailableError
    from edgecompress.runtimes import get_runtime

    for name in runtimes:
        ok, why = get_runtime(name).available()
        if not ok:
            raise RuntimeUnavailableError(f"runtime '{name}' is not available: {why}", "or leave it out of --runtimes")


# --------------------------------------------------------------------------- building (in workers)


def _key(variant: Variant) -> str:
    return variant.label


def _step(variant: Variant):
    from edgecompress.compress.export import ExportPass
    from edgecompress.compress.quantize import QuantizeConfig, QuantizePass

    if variant.mode == "float":
        return ExportPass(variant.format)
    return QuantizePass(QuantizeConfig(mode=variant.mode, format=variant.format, per_channel=variant.per_channel,
                                       **dict(variant.fixes)))  # fmt: skip


def _build(job: _BuildJob) -> dict[str, Any]:
    """Build one variant through ``run_pass`` (a cached stage); scoring is the caller's (``_Scorer``)."""
    from edgecompress._env import debug_enabled, quiet_python_loggers
    from edgecompress.artifacts import sha256_of
    from edgecompress.compress.runner import run_pass

    if not debug_enabled():
        quiet_python_loggers()
    step = _step(job.variant)
    # held-out data only for a pass that measures on it itself (auto keep-float), never to score here
    data = job.data if Role.VALIDATION in step.needs() else dataclasses.replace(job.data, validation=None)
    payload = {
        "stage": "tune-build", "source": sha256_of(Path(job.source)), "pass": step.name, "params": step.params(),
        "validation": data.validation.fingerprint() if data.validation else None,
        "calibration": data.calibration.fingerprint() if step.needs() and data.calibration else None,
        "preprocessing": job.preprocessing,
    }  # fmt: skip
    cache = StageCache(Path(job.cache))
    key = cache.key(payload)
    started = time.perf_counter()

    def compute(directory: Path) -> dict[str, Any]:
        run = run_pass(step, job.source, directory / f"model{step.produces.suffix}", data, job.preprocessing,
                       job.trust_model, evaluate=False)  # fmt: skip
        return {"file": run.output.path.name, "seconds": time.perf_counter() - started}

    try:
        info, cached = cache.run(key, compute)
    except EdgeCompressError as exc:  # a variant the converter refuses is a finding, not the end of the search
        return {"key": _key(job.variant), "error": str(exc)}
    return {**info, "key": _key(job.variant), "path": str(cache.root / key / info["file"]), "cached": cached}


# --------------------------------------------------------------------------- timing (here, one at a time)


def _timed(variant: Variant, info: dict[str, Any], cache: StageCache, threads, config: TuneConfig,
           printer: ProgressPrinter) -> Measured:  # fmt: skip
    """The built file timed at every thread count: status "timed" until ``_Scorer`` adds its metric."""
    common = {"label": variant.label, "runtime": variant.runtime, "format": variant.format,
              "settings": variant.settings()}  # fmt: skip
    if "error" in info:
        printer.say(f"  failed  {variant.label}: {info['error']}")
        return Measured(**common, path=None, status="failed", note=info["error"])
    artifact = Artifact.open(info["path"])
    latencies = {}
    for count in threads:
        latencies[count] = _latency(artifact, variant.runtime, count, cache, config)
    result = Measured(**common, path=info["path"], size_bytes=artifact.size_bytes, latency_by_threads=latencies,
                      status="timed", seconds=info.get("seconds", 0.0), cached=bool(info.get("cached")))  # fmt: skip
    printer.say(f"  {'cached' if result.cached else 'built':<7} {result.summary()}")
    return result


def _latency(artifact: Artifact, runtime: str, threads: int, cache: StageCache, config: TuneConfig) -> float:
    from edgecompress.reports.bench import measure
    from edgecompress.runtimes import get_runtime

    backend = get_runtime(runtime)
    payload = {"stage": "tune-time", "file": artifact.sha256(), "runtime": runtime, "version": backend.version(),
               "threads": threads, "runs": config.runs, "warmup": config.warmup}  # fmt: skip

    def compute(_: Path) -> dict[str, Any]:
        m = measure(artifact, backend, "cpu", threads, config.warmup, config.runs, memory=False,
                    trust_model=config.trust_model)  # fmt: skip
        if m.timing is None:
            raise EdgeCompressError(f"{artifact.path.name} on {runtime}: {m.note}")
        return {"p50": m.timing.p50}

    info, _ = cache.run(cache.key(payload), compute)
    return float(info["p50"])


# --------------------------------------------------------------------------- scoring (here, once each)


class _Scorer:
    """Scores built files on the held-out data against one scoring of the float source.

    The held-out data and the Keras source are loaded at the first score that is not cached; the
    source's metric is a cached stage of its own, so it is computed once per work directory.
    """

    def __init__(self, source: Artifact, config: TuneConfig, cache: StageCache, printer: ProgressPrinter) -> None:
        self.source = source
        self.config = config
        self.cache = cache
        self.printer = printer
        self.validation = config.data().validation
        self._held_out = None
        self._reference: dict[str, Any] | None = None

    def _data(self):
        from edgecompress.compress.runner import load_held_out

        if self._held_out is None:
            self._held_out = load_held_out(self.source, DataPlan(validation=self.validation),
                                           self.config.preprocessing, self.config.trust_model)  # fmt: skip
        return self._held_out

    def _payload(self, file_sha: str, runtime: str) -> dict[str, Any]:
        return {"stage": "tune-score", "file": file_sha, "runtime": runtime,
                "validation": self.validation.fingerprint() if self.validation else None,
                "preprocessing": self.config.preprocessing}  # fmt: skip

    def reference(self) -> dict[str, Any]:
        """The float source's task, metric name and value (Keras, as ``run_pass`` scores it)."""
        if self._reference is None:
            from edgecompress.compress.runner import score_source
            from edgecompress.models.tasks import TASKS

            def compute(_: Path) -> dict[str, Any]:
                data, keras_model = self._data()
                task, scores = score_source(self.source, data, keras_model, self.config.trust_model)
                metric = TASKS.get(task).primary_metric
                return {"task": task, "metric": metric, "value": scores.metrics[metric]}

            self._reference, _ = self.cache.run(self.cache.key(self._payload(self.source.sha256(), "keras")), compute)
        return self._reference

    def __call__(self, measured: Measured) -> Measured:
        from edgecompress.compress.runner import score_output

        reference = self.reference()
        artifact = Artifact.open(measured.path)
        started = time.perf_counter()

        def compute(_: Path) -> dict[str, Any]:
            data, _keras = self._data()
            scores = score_output(artifact, data, reference["task"], self.config.trust_model)
            return {"value": scores.metrics[reference["metric"]]}

        info, _ = self.cache.run(self.cache.key(self._payload(artifact.sha256(), measured.runtime)), compute)
        result = dataclasses.replace(measured, status="ok", metric_name=reference["metric"], metric=info["value"],
                                     source_metric=reference["value"],
                                     seconds=measured.seconds + time.perf_counter() - started)  # fmt: skip
        self.printer.say(f"  scored  {result.summary()}")
        return result


# --------------------------------------------------------------------------- the pick


def choose(state: SearchState) -> tuple[Measured | None, str, Measured | None]:
    """(pick, why, closest): the fastest variant meeting every budget; else the one nearest to them."""
    budget = state.budget
    ok = [m for m in state.measured.values() if m.ok]
    feasible = sorted((m for m in ok if budget.met_by(m)), key=lambda m: (m.latency_ms, m.size_bytes))
    if feasible:
        pick = feasible[0]
        why = f"fastest of the {len(feasible)} measured variant(s) that meet {budget.describe(pick.metric_name)}"
        if len(feasible) > 1:
            runner = feasible[1]
            why += f"; next: {runner.label} at {runner.latency_ms:.3f} ms ({runner.latency_ms / pick.latency_ms:.2f}× slower)"
        others = [m for m in ok if not budget.met_by(m) and m.latency_ms < pick.latency_ms]
        if others:
            faster = min(others, key=lambda m: m.latency_ms)
            over = ", ".join(budget.excess(faster))
            why += f"; faster but over budget ({over}): {faster.label} at {faster.latency_ms:.3f} ms"
        return pick, why, None
    closest = min(ok, key=lambda m: (sum(budget.excess(m).values()), m.latency_ms), default=None)
    return None, "nothing meets the budget", closest


def _result(source: Artifact, state: SearchState, target: TuneTarget, threads, space_size: int, config: TuneConfig,
            workdir: Path, seconds: float) -> TuneResult:  # fmt: skip
    import platform

    pick, why, closest = choose(state)
    metric = next((m.metric_name for m in state.measured.values() if m.scored), "metric")
    note = ""
    if target.arch != platform.machine():
        note = f"target {target.name} is {target.arch}: these latencies are this machine's, a ranking, not the device's"
    elif (os.cpu_count() or 1) < max(target.threads):
        note = f"{target.name} runs up to {max(target.threads)} threads; this machine has {os.cpu_count()} cores"
    return TuneResult(
        model=source.path.stem, metric_name=metric, budget=state.budget, target=f"{target.name}: {target.description}",
        target_note=note, threads=tuple(threads), machine=machine_description(), measured=tuple(state.measured.values()),
        cut=tuple(state.cut), space_size=space_size, pick=pick, why=why, closest=closest, workdir=str(workdir),
        seconds=seconds, search=config.search,
    )  # fmt: skip


def _write(result: TuneResult, state: SearchState, config: TuneConfig, workdir: Path) -> TuneResult:
    """The picked file and its sidecar at the output path; records, plot, HTML and JSON in the workdir."""
    import json

    from edgecompress.reports.store import DEFAULT_NAME, ResultsStore
    from edgecompress.reports.tune import render_html, tune_figure

    if result.pick is not None and result.pick.path:
        output = config.output_path()
        suffix = "." + result.pick.format
        output = output if output.suffix == suffix else output.with_name(output.name + suffix)
        if output.exists() and not config.force:
            raise UsageError(f"output exists: {output}", "pass --force to overwrite, or choose another -o")
        picked = Artifact.open(result.pick.path)
        write_bytes_atomic(output, Path(result.pick.path).read_bytes())
        extra = {**picked.metadata.extra, "tune": {"pick": result.pick.label, "threads": result.pick.threads,
                                                   "why": result.why, "budget": result.budget.to_dict()}}  # fmt: skip
        write_metadata(output, dataclasses.replace(picked.metadata, extra=extra))
        result = dataclasses.replace(result, output=str(output))
    # Keyed by file and thread count (the file's cache directory is named by its content): a rerun
    # adds no duplicate rows.
    keys = [f"tune:{m.path}:{t}:{config.runs}" for m in result.measured for t in sorted(m.latency_by_threads)]
    with ResultsStore(workdir / DEFAULT_NAME) as store:
        store.add_many(zip(keys, result.records(), strict=True), "tune")
    svg = None
    try:
        from edgecompress.reports.plots import render

        figure = tune_figure(result)
        if figure is not None:
            write_bytes_atomic(workdir / "tune.png", render(figure, "png"))
            data = render(figure, "svg")
            write_bytes_atomic(workdir / "tune.svg", data)
            from edgecompress.reports.html import svg_inline

            svg = svg_inline(data)
    except EdgeCompressError as exc:  # matplotlib missing: the report says so, the pick stands
        log.warning("no plot: %s", exc)
    write_text_atomic(workdir / "tune.html", render_html(result, svg))
    write_text_atomic(workdir / "tune.json", json.dumps(result.to_dict(), indent=2, default=str) + "\n")
    return result


def require_pick(result: TuneResult) -> TuneResult:
    """The result, or a BudgetError whose one line names the closest candidate."""
    if result.pick is None:
        raise BudgetError(budget_line(result), "relax --max-drop, --latency-budget or --size-budget", result)
    return result


# --------------------------------------------------------------------------- recipe form

#: a tune recipe's keys: the command's options, with paths relative to the recipe file
RECIPE_KEYS = ("model", "calib", "calib_samples", "eval", "max_drop", "latency_budget", "size_budget", "runtimes",
               "threads", "target", "output", "work_dir", "search", "jobs", "runs", "trust_model")  # fmt: skip


def load_tune_recipe(path: str | os.PathLike, force: bool = False) -> TuneConfig:
    """A YAML file holding ``compress tune``'s options (under ``tune:`` or at the top level)."""
    import yaml

    from edgecompress.pipeline.recipe import recipe_loader

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"tune recipe not found: {path}", "pass the path of a .yaml file")
    try:
        raw = yaml.load(path.read_text(), Loader=recipe_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise UsageError(f"tune recipe {path.name} is not valid YAML: {exc}", "fix the YAML syntax") from None
    raw = raw.get("tune", raw) if isinstance(raw, dict) else raw
    if not isinstance(raw, dict):
        raise UsageError(f"tune recipe {path.name}: expected a mapping", f"keys: {', '.join(RECIPE_KEYS)}")
    unknown = [k for k in raw if k not in RECIPE_KEYS]
    if unknown:
        raise UsageError(f"tune recipe {path.name}: unknown key '{unknown[0]}'", f"valid keys: {', '.join(RECIPE_KEYS)}")
    missing = [k for k in ("model", "calib", "eval") if k not in raw]
    if missing:
        raise UsageError(f"tune recipe {path.name}: missing '{missing[0]}'", "model, calib and eval are required")

    def local(value):
        from edgecompress.calibration.data import EMBEDDED_DATA

        if value is None or str(value).partition(":")[0] in EMBEDDED_DATA or Path(str(value)).is_absolute():
            return value
        return str(path.parent / str(value))

    threads = raw.get("threads")
    try:
        return TuneConfig(
            model=Path(local(raw["model"])), calib=local(raw["calib"]), eval=local(raw["eval"]),
            budget=Budget(raw.get("max_drop", 0.5), raw.get("latency_budget"), raw.get("size_budget")),
            calib_samples=raw.get("calib_samples", 100),
            runtimes=tuple(raw["runtimes"]) if isinstance(raw.get("runtimes"), list) else
            (tuple(str(raw["runtimes"]).split(",")) if raw.get("runtimes") else None),
            threads=tuple(threads) if isinstance(threads, list) else threads, target=raw.get("target"),
            output=Path(local(raw["output"])) if raw.get("output") else None,
            workdir=Path(local(raw["work_dir"])) if raw.get("work_dir") else None,
            search=raw.get("search", "branch-and-bound"), jobs=raw.get("jobs", 1), runs=raw.get("runs", 50),
            trust_model=bool(raw.get("trust_model", False)), force=force,
        )  # fmt: skip
    except UsageError as exc:
        raise UsageError(f"tune recipe {path.name}: {exc.message}", exc.hint) from None
