"""Run `compress inspect` on a Keras model: calibrate once, quantize, compare layer by layer.

Also registered as the ``inspect`` pass (Keras → int8 TFLite/ONNX, the report attached), so recipes
can sweep calibration methods and keep-float sets with a per-layer report for each.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecompress.artifacts import Artifact, ModelFormat, atomic_path
from edgecompress.calibration.data import ModelInputs
from edgecompress.calibration.observers import DEFAULT_PERCENTILE, OBSERVERS
from edgecompress.compress.inspect import InspectReport, finish_rows
from edgecompress.compress.layermap import LayerMap
from edgecompress.compress.passes import (
    PASSES,
    Pass,
    PassContext,
    PassReport,
    PassResult,
    Role,
    commit_metadata,
    load_source,
    output_metadata,
)
from edgecompress.compress.validate import CheckResult
from edgecompress.errors import DataError, UsageError
from edgecompress.runtimes.keras_io import KerasModel

FORMATS = ("tflite", "onnx")
#: samples whose every activation is compared (the first of --eval, else of the calibration data)
DEFAULT_SAMPLES = 32


@dataclass(frozen=True)
class InspectConfig:
    format: str = "tflite"
    calibration: str | None = None
    percentile: float = DEFAULT_PERCENTILE
    per_channel: bool = True
    keep_float: tuple[str, ...] = ()
    samples: int = DEFAULT_SAMPLES

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise UsageError(f"unknown format '{self.format}'", f"choose one of: {', '.join(FORMATS)}")
        if self.calibration is not None:
            object.__setattr__(self, "calibration", OBSERVERS.canonical(str(self.calibration)))
        if isinstance(self.keep_float, str):
            object.__setattr__(self, "keep_float", tuple(n.strip() for n in self.keep_float.split(",") if n.strip()))
        object.__setattr__(self, "keep_float", tuple(self.keep_float))
        if not 50.0 < float(self.percentile) <= 100.0:
            raise UsageError(f"percentile must be in (50, 100], not {self.percentile}", "e.g. --percentile 99.99")
        if int(self.samples) < 1:
            raise UsageError(f"samples must be ≥ 1, not {self.samples}", f"e.g. --samples {DEFAULT_SAMPLES}")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format": self.format, "per_channel": self.per_channel, "samples": self.samples}
        if self.calibration is not None:
            out["calibration"] = self.calibration
        if self.calibration == "percentile":
            out["percentile"] = self.percentile
        if self.keep_float:
            out["keep_float"] = list(self.keep_float)
        return out


@dataclass
class Inspected:
    """The report, and the int8 model it describes (written on demand, from the same calibration)."""

    report: InspectReport
    _write: Any

    def write(self, path: Path) -> None:
        self._write(Path(path))


def inspect_keras(
    keras_model: KerasModel,
    calibration: ModelInputs,
    config: InspectConfig,
    evaluation: ModelInputs | None = None,
    task: str | None = None,
    name: str = "model",
    progress: bool = False,
) -> Inspected:
    """Calibrate once, quantize, and compare every int8 op with the float model."""
    from edgecompress.compress import convert

    started = time.perf_counter()
    model = keras_model.model
    layer_map = LayerMap.of(model)
    layer_map.check(config.keep_float)
    inspected = evaluation if evaluation is not None else calibration
    samples = dataclasses.replace(inspected, data=inspected.data.take(config.samples))
    samples_from = f"{len(samples)} samples of {'--eval' if evaluation is not None else '--calib'} data"
    ranges = convert.RangeOptions(config.calibration, float(config.percentile))
    if config.format == "tflite":
        from edgecompress.compress.inspect_tflite import inspect_tflite

        calibrated = convert.keras_calibrated(model, calibration, ranges, progress)
        keep = tuple(calibrated.op_outputs_of(config.keep_float, layer_map, strict=True))
        rows, output_sqnr = inspect_tflite(calibrated, layer_map, samples, config.per_channel, keep)
        int8 = convert.finish_tflite(calibrated.quantize(config.per_channel, "float", keep), model)

        def write(path: Path) -> None:
            path.write_bytes(int8)

        calibration_info = {"method": calibrated.method, **calibrated.params, "samples": calibrated.samples,
                            "source": calibration.source}  # fmt: skip
    else:
        from edgecompress.compress.inspect_onnx import inspect_onnx
        from edgecompress.compress.onnx_calibrate import calibrate_onnx

        proto = convert.keras_to_onnx(model)
        calibrated = calibrate_onnx(proto, calibration, config.calibration or "minmax", float(config.percentile))
        keep = tuple(calibrated.nodes_of(config.keep_float, layer_map))
        rows, output_sqnr = inspect_onnx(calibrated, layer_map, samples, "int8", config.per_channel, keep)

        def write(path: Path) -> None:
            calibrated.quantize(path, "int8", config.per_channel, keep)

        calibration_info = {"method": calibrated.method, **calibrated.params, "samples": calibrated.samples,
                            "source": calibration.source}  # fmt: skip
    metrics = {}
    if evaluation is not None:
        metrics = _metrics(keras_model, write, config.format, evaluation, task)
    notes = ()
    if config.format == "onnx":
        notes = ("ONNX per-layer errors are ONNX Runtime's QDQ simulation (no fused int8 kernels); "
                 "the metric is measured on the deployed model",)  # fmt: skip
    report = InspectReport(
        model=name, format=config.format, calibration=calibration_info, samples=len(samples), samples_from=samples_from,
        per_channel=config.per_channel, layers=finish_rows(rows, config.per_channel), output_sqnr_db=output_sqnr,
        metrics=metrics, keep_float=config.keep_float, seconds=time.perf_counter() - started, notes=notes,
    )  # fmt: skip
    return Inspected(report, write)


def _metrics(keras_model: KerasModel, write, fmt: str, evaluation: ModelInputs, task: str | None):
    import tempfile

    from edgecompress.artifacts import Metadata
    from edgecompress.models.tasks import evaluate, infer_task
    from edgecompress.runtimes import open_session
    from edgecompress.runtimes.keras_tf import KerasSession
    from edgecompress.runtimes.probe import trust

    task = task or infer_task(keras_model.output_shape)
    if task == "unknown":
        raise DataError("cannot tell which metric fits this model", "record the task in the model's metadata")
    float_scores = evaluate(KerasSession(keras_model.model, "cpu", None), evaluation, task)
    names = [str(n) for n in getattr(keras_model.model, "output_names", None) or []]
    with tempfile.TemporaryDirectory(prefix="edgecompress-inspect-") as tmp:
        path = Path(tmp) / f"model.{fmt}"
        write(path)
        trust(path)  # written by us a moment ago
        fmt_enum = ModelFormat.TFLITE if fmt == "tflite" else ModelFormat.ONNX
        with open_session(Artifact(path, fmt_enum, Metadata(task=task, extra={"output_names": names}))) as session:
            int8_scores = evaluate(session, evaluation, task)
    return {"float": float_scores, "int8": int8_scores}


@PASSES.register("inspect")
class InspectPass(Pass):
    """Quantize to int8 and attach the per-layer error report (the model written is the one inspected)."""

    name = "inspect"
    accepts = (ModelFormat.KERAS_H5, ModelFormat.KERAS_V3, ModelFormat.SAVEDMODEL)
    produces = ModelFormat.TFLITE

    def __init__(self, config: InspectConfig | None = None, **kwargs: Any) -> None:
        self.config = config or InspectConfig(**kwargs)
        self.produces = ModelFormat.ONNX if self.config.format == "onnx" else ModelFormat.TFLITE

    def needs(self) -> frozenset[Role]:
        return frozenset({Role.CALIBRATION})

    def params(self) -> dict[str, Any]:
        return self.config.to_dict()

    def apply(self, artifact: Artifact, context: PassContext) -> PassResult:
        from edgecompress.compress.export import float_reference
        from edgecompress.compress.validate import check_against_source

        self.check_input(artifact)
        if context.calibration is None:
            raise DataError("inspect needs calibration data", "pass --calib DIR|FILE.npz|digits")
        keras_model = load_source(artifact, context)
        inspected = inspect_keras(
            keras_model, context.calibration, self.config, context.validation, artifact.metadata.task,
            artifact.path.stem, context.progress,
        )  # fmt: skip
        output = Path(context.output)
        with atomic_path(output) as tmp:
            inspected.write(tmp)
            metadata = output_metadata(artifact, keras_model, context, "inspect", self.params())
            check = check_against_source(keras_model, Artifact(tmp, self.produces, metadata), "int8", context)
            commit_metadata(output, metadata)
        report = InspectPassReport(
            pass_name=self.name, params=self.params(), seconds=inspected.report.seconds, inspect=inspected.report,
            check=check, float_reference=float_reference(keras_model.model),
        )  # fmt: skip
        return PassResult(Artifact(output, self.produces, metadata), report)


@dataclass(frozen=True, kw_only=True)
class InspectPassReport(PassReport):
    #: the per-layer report (pipelines' HTML reports find it under "inspect" in each stage's record)
    inspect: InspectReport
    check: CheckResult
