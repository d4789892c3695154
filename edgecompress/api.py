"""The Python API. The CLI is a thin layer over these functions; they return data, never print.

Every compressing function builds its pass and runs it with ``compress.runner.run_pass``, the
same function recipes use, and returns its frozen :class:`~edgecompress.compress.runner.PassRun`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from edgecompress.artifacts import Artifact
from edgecompress.calibration.data import ImageSet
from edgecompress.compress.passes import PASSES, Pass
from edgecompress.compress.runner import PassRun, run_pass
from edgecompress.models.inputs import (
    DEFAULT_CALIBRATION_SAMPLES,
    HOLDOUT_FRACTION,
    DataPlan,
    DataSource,
    model_inputs,
)

log = logging.getLogger(__name__)

PathLike = str | os.PathLike
Data = str | os.PathLike | ImageSet

__all__ = [
    "PassRun", "bench", "binarize", "cluster", "distill", "export", "inspect", "load", "model_inputs", "prune",
    "qat", "quantize", "run", "tune", "tune_recipe",
]  # fmt: skip


def load(path: PathLike) -> Artifact:
    """Open a model file (Keras, TFLite, ONNX) with its metadata sidecar, if any."""
    return Artifact.open(path)


def _source(data: Data | None, samples: int | None = None) -> DataSource | None:
    return None if data is None else DataSource(data, samples)


def run(
    step: Pass | str,
    model: PathLike,
    output: PathLike,
    params: dict[str, Any] | None = None,
    data: DataPlan | None = None,
    preprocessing: dict[str, Any] | None = None,
    trust_model: bool = False,
    force: bool = False,
    progress: bool = False,
) -> PassRun:
    """Run any registered pass by name (``run("prune", m, o, {"sparsity": 0.5}, DataPlan(train=...))``)."""
    if isinstance(step, str):
        step = PASSES.get(step)(**(params or {}))
    return run_pass(step, model, output, data, preprocessing, trust_model, force, progress)


def quantize(
    model: PathLike,
    output: PathLike,
    mode: str | None = None,
    format: str | None = None,
    per_channel: bool = True,
    io: str = "float",
    calib: Data | None = None,
    calib_samples: int = DEFAULT_CALIBRATION_SAMPLES,
    eval: Data | None = None,
    preprocessing: dict[str, Any] | None = None,
    trust_model: bool = False,
    force: bool = False,
    progress: bool = False,
    **options: Any,
) -> PassRun:
    """Post-training quantization of a Keras, float .tflite or float .onnx model to TFLite or ONNX (int8 when
    calibration data is given, else dynamic). ``format`` None: an ONNX source stays ONNX, others become TFLite.

    ``options`` (Keras sources): the accuracy fields of QuantizeConfig — ``calibration`` (minmax,
    percentile, entropy, mse), ``percentile``, ``keep_float``, ``auto_keep_float`` + ``max_drop``
    (needs ``eval``), ``equalize``, ``bias_correction``, ``relu6``.
    """
    from edgecompress.compress.quantize import QuantizeConfig, QuantizePass, choose_mode, default_format

    format = format or default_format(load(model).format).value
    chosen, reason = choose_mode(mode, calib is not None)
    step = QuantizePass(QuantizeConfig(mode=chosen, format=format, per_channel=per_channel, io=io, **options))
    if calib is not None and not chosen.needs_calibration:
        log.warning("--calib is ignored by --mode %s, which needs no calibration", chosen.value)
        calib = None
    plan = DataPlan(calibration=_source(calib, calib_samples), validation=_source(eval))
    return run_pass(step, model, output, plan, preprocessing, trust_model, force, progress, notes=(f"mode: {reason}",))


def export(
    model: PathLike,
    output: PathLike,
    format: str = "tflite",
    eval: Data | None = None,
    preprocessing: dict[str, Any] | None = None,
    trust_model: bool = False,
    force: bool = False,
) -> PassRun:
    """Float export to TFLite or ONNX, validated against the source."""
    from edgecompress.compress.export import ExportPass

    plan = DataPlan(validation=_source(eval))
    return run_pass(ExportPass(format), model, output, plan, preprocessing, trust_model, force)


def _training_plan(data: Data, eval: Data | None, val_split: float = HOLDOUT_FRACTION) -> DataPlan:
    return DataPlan(train=DataSource(data), validation=_source(eval), val_split=val_split)


def prune(
    model: PathLike,
    output: PathLike,
    data: Data,
    sparsity: float = 0.5,
    structure: str = "unstructured",
    schedule: str = "constant",
    criterion: str = "l1",
    distill: bool = False,
    epochs: int = 2,
    batch_size: int = 32,
    lr: float = 1e-4,
    eval: Data | None = None,
    val_split: float = HOLDOUT_FRACTION,
    preprocessing: dict[str, Any] | None = None,
    measure: bool = True,
    trust_model: bool = False,
    force: bool = False,
    progress: bool = True,
    strategy: str = "default",
) -> PassRun:
    """Prune a Keras model (unstructured / 2:4 with TFMOT, or whole channels) and fine-tune it."""
    from edgecompress.compress.finetune import FineTune
    from edgecompress.compress.prune import PruneConfig, PrunePass

    budget = FineTune(epochs, batch_size, lr, strategy=strategy)
    config = PruneConfig(sparsity, structure, schedule, criterion, budget, distill)
    plan = _training_plan(data, eval, val_split)
    return run_pass(PrunePass(config, measure=measure), model, output, plan, preprocessing, trust_model, force, progress)


def cluster(
    model: PathLike,
    output: PathLike,
    data: Data,
    clusters: int = 16,
    init: str = "kmeans++",
    epochs: int = 2,
    batch_size: int = 32,
    lr: float = 1e-4,
    eval: Data | None = None,
    val_split: float = HOLDOUT_FRACTION,
    preprocessing: dict[str, Any] | None = None,
    measure: bool = True,
    trust_model: bool = False,
    force: bool = False,
    progress: bool = True,
    strategy: str = "default",
) -> PassRun:
    """Cluster a Keras model's weights into ``clusters`` shared values (TFMOT) and fine-tune it."""
    from edgecompress.compress.cluster import ClusterConfig, ClusterPass
    from edgecompress.compress.finetune import FineTune

    budget = FineTune(epochs, batch_size, lr, strategy=strategy)
    step = ClusterPass(ClusterConfig(clusters, init, budget), measure=measure)
    return run_pass(step, model, output, _training_plan(data, eval, val_split), preprocessing, trust_model, force,
                    progress)  # fmt: skip


def distill(
    teacher: PathLike,
    student: str,
    output: PathLike,
    data: Data,
    temperature: float = 4.0,
    alpha: float = 0.5,
    baseline: bool = True,
    epochs: int = 10,
    batch_size: int = 32,
    lr: float = 2e-3,
    eval: Data | None = None,
    val_split: float = HOLDOUT_FRACTION,
    preprocessing: dict[str, Any] | None = None,
    trust_model: bool = False,
    force: bool = False,
    progress: bool = True,
    strategy: str = "default",
) -> PassRun:
    """Distill ``teacher`` into ``student`` (a zoo name with parameters, or a model file)."""
    from edgecompress.compress.distill import DistillConfig, DistillPass
    from edgecompress.compress.finetune import FineTune

    budget = FineTune(epochs, batch_size, lr, strategy=strategy)
    step = DistillPass(DistillConfig(str(student), temperature, alpha, budget, baseline))
    return run_pass(step, teacher, output, _training_plan(data, eval, val_split), preprocessing, trust_model, force,
                    progress)  # fmt: skip


def qat(
    model: PathLike,
    output: PathLike,
    data: Data,
    epochs: int = 2,
    batch_size: int = 32,
    lr: float = 3e-5,
    preserve: str = "none",
    skip_layers: Sequence[str] = (),
    eval: Data | None = None,
    calib_samples: int = 200,
    compare: bool = True,
    init_ranges: bool = False,
    preprocessing: dict[str, Any] | None = None,
    trust_model: bool = False,
    force: bool = False,
    progress: bool = True,
    strategy: str = "default",
) -> PassRun:
    """Quantization-aware training to full-int8 TFLite.

    With ``compare`` the report also scores post-training int8, calibrated on the same training
    samples, beside float (Keras) and QAT int8 (LiteRT) on the same held-out data.
    """
    from edgecompress.compress.qat import QATConfig, QATPass

    config = QATConfig(epochs=epochs, batch_size=batch_size, lr=lr, preserve=preserve, skip_layers=tuple(skip_layers),
                       calibration_samples=calib_samples, init_ranges=init_ranges, strategy=strategy)  # fmt: skip
    return run_pass(QATPass(config, compare=compare), model, output, _training_plan(data, eval), preprocessing,
                    trust_model, force, progress)  # fmt: skip


def binarize(
    model: PathLike,
    output: PathLike,
    data: Data,
    epochs: int = 10,
    batch_size: int = 32,
    lr: float = 1e-3,
    binarize_all: bool = False,
    eval: Data | None = None,
    preprocessing: dict[str, Any] | None = None,
    trust_model: bool = False,
    force: bool = False,
    progress: bool = True,
    strategy: str = "default",
) -> PassRun:
    """Binarize a classifier with Larq, distilled from the float model, to a bit-packed LCE TFLite;
    the evaluation scores the float source (Keras) and the binarized model (LCE) on the same data."""
    from edgecompress.compress.binarize import BinarizeConfig, BinarizePass

    step = BinarizePass(BinarizeConfig(epochs=epochs, batch_size=batch_size, lr=lr, binarize_all=binarize_all,
                                        strategy=strategy))
    return run_pass(step, model, output, _training_plan(data, eval), preprocessing, trust_model, force, progress)


def bench(
    models: Sequence[PathLike],
    runtimes: Sequence[str] | None = None,
    threads: int | None = None,
    warmup: int = 5,
    runs: int = 50,
    eval: Data | None = None,
    device: str = "cpu",
    trust_model: bool = False,
    progress: bool = False,
    preprocessing: dict[str, Any] | None = None,
):
    """Benchmark every model on every runtime that can run it; one BenchmarkRecord per pair.

    ``preprocessing`` (scale, offset, mean, std, color, layout) is for ``eval`` data of models
    that carry no sidecar; a sidecar's values are used otherwise.
    """
    from edgecompress.reports.bench import run_benchmarks

    return run_benchmarks(
        [load(m) for m in models], runtimes, threads, warmup, runs, eval, device, trust_model, progress,
        preprocessing=preprocessing,
    )


def tune(
    model: PathLike,
    calib: Data,
    eval: Data,
    max_drop: float = 0.5,
    latency_budget: float | None = None,
    size_budget: float | None = None,
    runtimes: Sequence[str] | None = None,
    threads: int | Sequence[int] | None = None,
    target: str | None = None,
    output: PathLike | None = None,
    work_dir: PathLike | None = None,
    calib_samples: int = DEFAULT_CALIBRATION_SAMPLES,
    search: str = "branch-and-bound",
    jobs: int = 1,
    runs: int = 50,
    preprocessing: dict[str, Any] | None = None,
    trust_model: bool = False,
    force: bool = False,
    progress: bool = False,
    strict: bool = True,
):
    """The fastest quantized variant × runtime × thread count of ``model`` whose metric drops at most
    ``max_drop`` points and that fits ``latency_budget`` (ms) and ``size_budget`` (MB); written to
    ``output`` with its sidecar. Returns a TuneResult; with ``strict`` a budget nothing meets raises
    BudgetError (its ``result`` holds what was measured)."""
    from pathlib import Path

    from edgecompress.pipeline.tune_run import TuneConfig, require_pick
    from edgecompress.pipeline.tune_run import tune as run_tune
    from edgecompress.reports.tune import Budget

    config = TuneConfig(
        model=Path(model), calib=calib, eval=eval, budget=Budget(max_drop, latency_budget, size_budget),
        calib_samples=calib_samples, runtimes=tuple(runtimes) if runtimes else None,
        threads=threads if isinstance(threads, int) or threads is None else tuple(threads), target=target,
        output=Path(output) if output else None, workdir=Path(work_dir) if work_dir else None, search=search,
        jobs=jobs, runs=runs, preprocessing=preprocessing, trust_model=trust_model, force=force,
    )  # fmt: skip
    result = run_tune(config, progress=progress)
    return require_pick(result) if strict else result


def tune_recipe(path: PathLike, force: bool = False, progress: bool = False, strict: bool = True):
    """``tune`` with its options read from a YAML file (see ``pipeline/tune_run.py``)."""
    from edgecompress.pipeline.tune_run import load_tune_recipe, require_pick
    from edgecompress.pipeline.tune_run import tune as run_tune

    result = run_tune(load_tune_recipe(path, force), progress=progress)
    return require_pick(result) if strict else result


def inspect(
    model: PathLike,
    calib: Data,
    eval: Data | None = None,
    format: str = "tflite",
    calibration: str | None = None,
    percentile: float = 99.99,
    per_channel: bool = True,
    keep_float: Sequence[str] | str = (),
    samples: int = 32,
    calib_samples: int = DEFAULT_CALIBRATION_SAMPLES,
    preprocessing: dict[str, Any] | None = None,
    trust_model: bool = False,
    progress: bool = False,
):
    """Per-layer int8 error of a Keras model (one InspectReport per format; ``format="both"`` gives two).

    Nothing is written, so this is not a pass run; the ``inspect`` pass writes the inspected model too.
    """
    from edgecompress.compress.inspect_run import InspectConfig, inspect_keras
    from edgecompress.compress.runner import _check_targets_fit as check_targets_fit
    from edgecompress.errors import UsageError
    from edgecompress.models.inputs import Role, input_spec_of, load_roles, resolve_preprocessing
    from edgecompress.runtimes.keras_io import load_keras

    source = load(model)
    if not source.format.is_keras:
        raise UsageError(f"inspect takes a Keras model, not {source.format.value}", "pass the float .h5/.keras source")
    formats = ["tflite", "onnx"] if format == "both" else [format]
    configs = [InspectConfig(f, calibration, percentile, per_channel, keep_float, samples) for f in formats]
    resolved = resolve_preprocessing(source, preprocessing)
    spec = input_spec_of(source, trust_model, (preprocessing or {}).get("layout"))
    plan = DataPlan(calibration=_source(calib, calib_samples), validation=_source(eval))
    roles = load_roles(plan, {Role.CALIBRATION}, spec.shape, resolved.preprocessing, spec.layout)
    keras_model = load_keras(source.path, trust_model=trust_model)
    if roles.validation is not None:
        check_targets_fit(source, keras_model, roles.validation, trust_model)
    return [
        inspect_keras(keras_model, roles.calibration, config, roles.validation, source.metadata.task, source.path.stem,
                      progress).report
        for config in configs
    ]  # fmt: skip
