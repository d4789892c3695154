"""The Python API. The CLI is a thin layer over these functions; they return data, never print."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecompress.artifacts import Artifact, check_output_path
from edgecompress.calibration.data import ImageSet, ModelInputs
from edgecompress.compress.export import ExportPass
from edgecompress.compress.passes import PassContext
from edgecompress.compress.quantize import QuantizeConfig, QuantizePass, choose_mode
from edgecompress.errors import DataError, UsageError
from edgecompress.models.inputs import (
    DEFAULT_CALIBRATION_SAMPLES,
    input_shape_of,
    model_inputs,
    resolve_preprocessing,
    training_inputs,
)

log = logging.getLogger(__name__)

def load(path: str | os.PathLike) -> Artifact:
    """Open a model file (Keras, TFLite, ONNX) with its metadata sidecar, if any."""
    return Artifact.open(path)


@dataclass
class CompressionReport:
    """What `compress quantize`/`export` prints: sizes, the mode and why, the check, and accuracy."""

    source: Artifact
    output: Artifact
    details: dict[str, Any]
    mode_reason: str = ""
    preprocessing_origin: str = ""
    evaluation: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def size_ratio(self) -> float:
        return self.source.size_bytes / max(1, self.output.size_bytes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": str(self.source.path),
            "output": str(self.output.path),
            "size_bytes_before": self.source.size_bytes,
            "size_bytes_after": self.output.size_bytes,
            "size_ratio": self.size_ratio,
            "mode_reason": self.mode_reason,
            "preprocessing": self.output.metadata.preprocessing.to_dict() if self.output.metadata.preprocessing else None,
            "preprocessing_origin": self.preprocessing_origin,
            "task": self.output.metadata.task,
            **self.details,
            "evaluation": self.evaluation,
        }


def quantize(
    model: str | os.PathLike,
    output: str | os.PathLike,
    mode: str | None = None,
    format: str = "tflite",
    per_channel: bool = True,
    io: str = "float",
    calib: str | os.PathLike | ImageSet | None = None,
    calib_samples: int = DEFAULT_CALIBRATION_SAMPLES,
    eval: str | os.PathLike | ImageSet | None = None,
    preprocessing: dict[str, Any] | None = None,
    trust_model: bool = False,
    force: bool = False,
    progress: bool = False,
    **options: Any,
) -> CompressionReport:
    """Post-training quantization of a Keras model to TFLite or ONNX.

    ``options``: the accuracy fields of QuantizeConfig — ``calibration`` (minmax, percentile, entropy,
    mse), ``percentile``, ``keep_float``, ``auto_keep_float`` + ``max_drop`` (needs ``eval``),
    ``equalize``, ``bias_correction``, ``relu6``.
    """
    source = load(model)
    chosen, reason = choose_mode(mode, calib is not None)
    config = QuantizeConfig(mode=chosen, format=format, per_channel=per_channel, io=io, **options)
    if calib is not None and not config.mode.needs_calibration:
        log.warning("--calib is ignored by --mode %s, which needs no calibration", config.mode.value)
    return _run_pass(
        QuantizePass(config), source, output, calib, calib_samples, eval, preprocessing, trust_model, force, reason,
        progress,
    )


def export(
    model: str | os.PathLike,
    output: str | os.PathLike,
    format: str = "tflite",
    eval: str | os.PathLike | ImageSet | None = None,
    preprocessing: dict[str, Any] | None = None,
    trust_model: bool = False,
    force: bool = False,
) -> CompressionReport:
    """Float export to TFLite or ONNX, validated against the source."""
    return _run_pass(ExportPass(format), load(model), output, None, 0, eval, preprocessing, trust_model, force, "")


def _run_pass(
    step,
    source: Artifact,
    output: str | os.PathLike,
    calib,
    calib_samples: int,
    eval_spec,
    overrides: dict[str, Any] | None,
    trust_model: bool,
    force: bool,
    reason: str,
    progress: bool = False,
) -> CompressionReport:
    step.check_input(source)
    output = _output_path(source, output, step.produces.suffix, force)
    resolved = resolve_preprocessing(source, overrides)
    shape = input_shape_of(source, trust_model)
    calibration = None
    if calib is not None and step.needs_calibration:
        calibration = model_inputs(calib, shape, resolved.preprocessing, split="train", samples=calib_samples)
    evaluation = None
    if eval_spec is not None:
        evaluation = model_inputs(eval_spec, shape, resolved.preprocessing, split="test", need_labels=True)
        _check_labels_fit(source, evaluation, trust_model)  # before any output is written
    context = PassContext(
        output=output,
        force=force,
        trust_model=trust_model,
        calibration=calibration,
        validation=evaluation,
        preprocessing=resolved.preprocessing,
        progress=progress,
    )
    result = step.apply(source, context)
    report = CompressionReport(source, result.artifact, result.report, reason, resolved.origin)
    if evaluation is not None:
        report.evaluation = compare_accuracy(source, result.artifact, evaluation, trust_model)
    return report


def _check_labels_fit(source: Artifact, data: ModelInputs, trust_model: bool) -> None:
    from edgecompress.models.tasks import TASKS, infer_task
    from edgecompress.runtimes.keras_io import load_keras

    model = load_keras(source.path, trust_model=trust_model)
    task = source.metadata.task or infer_task(model.output_shape)
    if task in TASKS:  # raises the task's own DataError when the targets do not fit the outputs
        TASKS.get(task).targets(data.data, [tuple(t.shape) for t in model.model.outputs])


def _output_path(source: Artifact, output: str | os.PathLike, suffix: str, force: bool) -> Path:
    path = Path(output)
    if path.resolve() == source.path.resolve():
        raise UsageError("the output path is the input model", "choose another -o; inputs are never overwritten")
    if suffix and path.suffix.lower() != suffix:
        raise UsageError(f"output {path} should end in {suffix} for this format", f"use -o {path.with_suffix(suffix).name}")
    return check_output_path(path, force)


def compare_accuracy(
    source: Artifact, output: Artifact, data: ModelInputs, trust_model: bool = False
) -> dict[str, dict[str, float]]:
    """The task metric of the source and the output, each measured in its own runtime."""
    from edgecompress.models.tasks import evaluate
    from edgecompress.runtimes import open_session

    task = output.metadata.task or "classification"
    if task == "unknown":
        raise DataError("cannot tell which metric fits this model", "record the task in the model's metadata")
    results = {}
    for label, artifact in (("source", source), ("output", output)):
        with open_session(artifact, trust_model=trust_model) as session:
            results[label] = evaluate(session, data, task)
    return results


def bench(
    models: Sequence[str | os.PathLike],
    runtimes: Sequence[str] | None = None,
    threads: int | None = None,
    warmup: int = 5,
    runs: int = 50,
    eval: str | os.PathLike | ImageSet | None = None,
    device: str = "cpu",
    trust_model: bool = False,
    progress: bool = False,
):
    """Benchmark every model on every runtime that can run it; one BenchmarkRecord per pair."""
    from edgecompress.reports.bench import run_benchmarks

    return run_benchmarks(
        [load(m) for m in models], runtimes, threads, warmup, runs, eval, device, trust_model, progress
    )


def _evaluate_artifact(artifact: Artifact, data: ModelInputs, trust_model: bool = False) -> dict[str, float]:
    from edgecompress.models.tasks import evaluate
    from edgecompress.runtimes import open_session

    with open_session(artifact, trust_model=trust_model) as session:
        return evaluate(session, data, artifact.metadata.task or "classification")


def qat(
    model: str | os.PathLike,
    output: str | os.PathLike,
    data: str | os.PathLike | ImageSet,
    epochs: int = 2,
    batch_size: int = 32,
    lr: float = 3e-5,
    preserve: str = "none",
    skip_layers: Sequence[str] = (),
    eval: str | os.PathLike | ImageSet | None = None,
    calib_samples: int = 200,
    compare: bool = True,
    init_ranges: bool = False,
    preprocessing: dict[str, Any] | None = None,
    trust_model: bool = False,
    force: bool = False,
    progress: bool = True,
) -> CompressionReport:
    """Quantization-aware training to full-int8 TFLite.

    With ``compare`` the report holds float (Keras), post-training int8 and QAT int8 (both LiteRT)
    scored on the same held-out data; the PTQ model is calibrated on the same training data.
    """
    import tempfile

    from edgecompress.compress.qat import QATConfig, QATPass

    source = load(model)
    step = QATPass(QATConfig(epochs=epochs, batch_size=batch_size, lr=lr, preserve=preserve,
                             skip_layers=tuple(skip_layers), calibration_samples=calib_samples,
                             init_ranges=init_ranges))  # fmt: skip
    step.check_input(source)
    output = _output_path(source, output, step.produces.suffix, force)
    resolved = resolve_preprocessing(source, preprocessing)
    shape = input_shape_of(source, trust_model)
    train, held_out = training_inputs(data, eval, shape, resolved.preprocessing)
    context = PassContext(output=output, force=force, trust_model=trust_model, calibration=train,
                          validation=held_out, preprocessing=resolved.preprocessing, progress=progress)  # fmt: skip
    result = step.apply(source, context)
    report = CompressionReport(source, result.artifact, result.report, "", resolved.origin)
    if compare:
        scores = {"float": _evaluate_artifact(source, held_out, trust_model)}
        with tempfile.TemporaryDirectory(prefix="edgecompress-ptq-") as tmp:
            ptq = quantize(model, Path(tmp) / "ptq.int8.tflite", mode="int8", calib=train.data,
                           calib_samples=calib_samples, preprocessing=preprocessing, trust_model=trust_model)  # fmt: skip
            scores["ptq_int8"] = _evaluate_artifact(ptq.output, held_out)
            report.details["ptq_size_bytes"] = ptq.output.size_bytes
        scores["qat_int8"] = _evaluate_artifact(result.artifact, held_out)
        report.evaluation = {"source": scores["float"], "output": scores["qat_int8"]}
        report.details["comparison"] = {
            "data": held_out.source,
            "runtimes": {"float": "keras", "ptq_int8": "litert", "qat_int8": "litert"},
            "scores": scores,
        }
    return report


def binarize(
    model: str | os.PathLike,
    output: str | os.PathLike,
    data: str | os.PathLike | ImageSet,
    epochs: int = 10,
    batch_size: int = 32,
    lr: float = 1e-3,
    binarize_all: bool = False,
    eval: str | os.PathLike | ImageSet | None = None,
    preprocessing: dict[str, Any] | None = None,
    trust_model: bool = False,
    force: bool = False,
    progress: bool = True,
) -> CompressionReport:
    """Binarize a classifier with Larq, distilled from the float model, to a bit-packed LCE TFLite.

    The report's evaluation scores the float source (Keras) and the binarized model (LCE) on the
    same held-out data.
    """
    from edgecompress.compress.binarize import BinarizeConfig, BinarizePass

    source = load(model)
    step = BinarizePass(BinarizeConfig(epochs=epochs, batch_size=batch_size, lr=lr, binarize_all=binarize_all))
    step.check_input(source)
    output = _output_path(source, output, step.produces.suffix, force)
    resolved = resolve_preprocessing(source, preprocessing)
    shape = input_shape_of(source, trust_model)
    train, held_out = training_inputs(data, eval, shape, resolved.preprocessing)
    context = PassContext(output=output, force=force, trust_model=trust_model, calibration=train,
                          validation=held_out, preprocessing=resolved.preprocessing, progress=progress)  # fmt: skip
    result = step.apply(source, context)
    report = CompressionReport(source, result.artifact, result.report, "", resolved.origin)
    report.evaluation = {
        "source": _evaluate_artifact(source, held_out, trust_model),
        "output": _evaluate_artifact(result.artifact, held_out),
    }
    report.details["evaluation_data"] = held_out.source
    return report


def _run_training_pass(
    step, source: Artifact, output, data, eval_spec, val_split: float, overrides, trust_model: bool, force: bool,
    progress: bool,
) -> CompressionReport:
    step.check_input(source)
    output = _output_path(source, output, step.produces.suffix, force)
    resolved = resolve_preprocessing(source, overrides)
    shape = input_shape_of(source, trust_model)
    train, held = training_inputs(data, eval_spec, shape, resolved.preprocessing, val_split)
    context = PassContext(
        output=output, force=force, trust_model=trust_model, validation=held, preprocessing=resolved.preprocessing,
        progress=progress, train=train,
    )  # fmt: skip
    result = step.apply(source, context)
    report = CompressionReport(source, result.artifact, result.report, "", resolved.origin)
    report.evaluation = result.report.get("evaluation") or {}
    return report


def prune(
    model: str | os.PathLike,
    output: str | os.PathLike,
    data: str | os.PathLike | ImageSet,
    sparsity: float = 0.5,
    structure: str = "unstructured",
    schedule: str = "constant",
    criterion: str = "l1",
    distill: bool = False,
    epochs: int = 2,
    batch_size: int = 32,
    lr: float = 1e-4,
    eval: str | os.PathLike | ImageSet | None = None,
    val_split: float = 0.2,
    preprocessing: dict[str, Any] | None = None,
    measure: bool = True,
    trust_model: bool = False,
    force: bool = False,
    progress: bool = True,
) -> CompressionReport:
    """Prune a Keras model (unstructured / 2:4 with TFMOT, or whole channels) and fine-tune it."""
    from edgecompress.compress.finetune import FineTune
    from edgecompress.compress.prune import PruneConfig, PrunePass

    config = PruneConfig(sparsity, structure, schedule, criterion, FineTune(epochs, batch_size, lr), distill)
    return _run_training_pass(
        PrunePass(config, measure=measure), load(model), output, data, eval, val_split, preprocessing, trust_model,
        force, progress,
    )  # fmt: skip


def cluster(
    model: str | os.PathLike,
    output: str | os.PathLike,
    data: str | os.PathLike | ImageSet,
    clusters: int = 16,
    init: str = "kmeans++",
    epochs: int = 2,
    batch_size: int = 32,
    lr: float = 1e-4,
    eval: str | os.PathLike | ImageSet | None = None,
    val_split: float = 0.2,
    preprocessing: dict[str, Any] | None = None,
    measure: bool = True,
    trust_model: bool = False,
    force: bool = False,
    progress: bool = True,
) -> CompressionReport:
    """Cluster a Keras model's weights into ``clusters`` shared values (TFMOT) and fine-tune it."""
    from edgecompress.compress.cluster import ClusterConfig, ClusterPass
    from edgecompress.compress.finetune import FineTune

    config = ClusterConfig(clusters, init, FineTune(epochs, batch_size, lr))
    return _run_training_pass(
        ClusterPass(config, measure=measure), load(model), output, data, eval, val_split, preprocessing, trust_model,
        force, progress,
    )  # fmt: skip


def distill(
    teacher: str | os.PathLike,
    student: str,
    output: str | os.PathLike,
    data: str | os.PathLike | ImageSet,
    temperature: float = 4.0,
    alpha: float = 0.5,
    baseline: bool = True,
    epochs: int = 10,
    batch_size: int = 32,
    lr: float = 2e-3,
    eval: str | os.PathLike | ImageSet | None = None,
    val_split: float = 0.2,
    preprocessing: dict[str, Any] | None = None,
    trust_model: bool = False,
    force: bool = False,
    progress: bool = True,
) -> CompressionReport:
    """Distill ``teacher`` into ``student`` (a zoo name with parameters, or a model file)."""
    from edgecompress.compress.distill import DistillConfig, DistillPass
    from edgecompress.compress.finetune import FineTune

    config = DistillConfig(str(student), temperature, alpha, FineTune(epochs, batch_size, lr), baseline)
    return _run_training_pass(
        DistillPass(config), load(teacher), output, data, eval, val_split, preprocessing, trust_model, force, progress
    )


def inspect(
    model: str | os.PathLike,
    calib: str | os.PathLike | ImageSet,
    eval: str | os.PathLike | ImageSet | None = None,
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
    """Per-layer int8 error of a Keras model (one InspectReport per format; ``format="both"`` gives two)."""
    from edgecompress.compress.inspect_run import InspectConfig, inspect_keras
    from edgecompress.runtimes.keras_io import load_keras

    source = load(model)
    if not source.format.is_keras:
        raise UsageError(f"inspect takes a Keras model, not {source.format.value}", "pass the float .h5/.keras source")
    formats = ["tflite", "onnx"] if format == "both" else [format]
    configs = [InspectConfig(f, calibration, percentile, per_channel, keep_float, samples) for f in formats]
    resolved = resolve_preprocessing(source, preprocessing)
    shape = input_shape_of(source, trust_model)
    calibration_data = model_inputs(calib, shape, resolved.preprocessing, split="train", samples=calib_samples)
    evaluation = None
    if eval is not None:
        evaluation = model_inputs(eval, shape, resolved.preprocessing, split="test", need_labels=True)
        _check_labels_fit(source, evaluation, trust_model)
    keras_model = load_keras(source.path, trust_model=trust_model)
    return [
        inspect_keras(keras_model, calibration_data, config, evaluation, source.metadata.task, source.path.stem,
                      progress).report
        for config in configs
    ]  # fmt: skip
