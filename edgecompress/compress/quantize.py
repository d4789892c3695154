"""Post-training quantization to TFLite or ONNX: dynamic range, float16, full int8, int16x8.

References: Jacob et al., "Quantization and Training of Neural Networks for Efficient
Integer-Arithmetic-Only Inference" (CVPR 2018); Krishnamoorthi, "Quantizing deep convolutional
networks for efficient inference" (2018) for per-channel weights.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecompress.artifacts import Artifact, InputSpec, Metadata, ModelFormat, atomic_path
from edgecompress.compress import convert
from edgecompress.compress.export import OutputFormat, float_reference
from edgecompress.compress.passes import (
    PASSES,
    CalibrationInfo,
    Pass,
    PassContext,
    PassReport,
    PassResult,
    Role,
    commit_metadata,
    load_source,
    output_metadata,
)
from edgecompress.compress.validate import CheckResult, check_against_source
from edgecompress.errors import DataError, UnsupportedError, UsageError


class QuantMode(str, enum.Enum):
    DYNAMIC = "dynamic"
    FLOAT16 = "float16"
    INT8 = "int8"
    INT16X8 = "int16x8"

    @property
    def needs_calibration(self) -> bool:
        return self in (QuantMode.INT8, QuantMode.INT16X8)


class IOType(str, enum.Enum):
    FLOAT = "float"
    INT8 = "int8"
    UINT8 = "uint8"


@dataclass(frozen=True)
class QuantizeConfig:
    mode: QuantMode = QuantMode.DYNAMIC
    format: OutputFormat = OutputFormat.TFLITE
    per_channel: bool = True
    io: IOType = IOType.FLOAT

    def __post_init__(self) -> None:
        for name, kind in (("mode", QuantMode), ("format", OutputFormat), ("io", IOType)):
            value = getattr(self, name)
            if not isinstance(value, kind):
                try:
                    object.__setattr__(self, name, kind(str(value).lower()))
                except ValueError:
                    valid = ", ".join(m.value for m in kind)
                    raise UsageError(f"unknown {name} '{value}'", f"choose one of: {valid}") from None
        if self.io is not IOType.FLOAT and (self.mode is not QuantMode.INT8 or self.format is not OutputFormat.TFLITE):
            raise UsageError(
                f"--io {self.io.value} applies to int8 TFLite models only",
                "drop --io, or use --mode int8 --format tflite",
            )
        if not self.per_channel and self.mode in (QuantMode.FLOAT16,):
            raise UsageError("--per-tensor applies to integer modes only", "drop --per-tensor for float16")

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode.value, "format": self.format.value, "per_channel": self.per_channel, "io": self.io.value}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantizeConfig:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def choose_mode(requested: str | None, has_calibration: bool) -> tuple[QuantMode, str]:
    """The mode to use and why, so the CLI can say it."""
    if requested:
        try:
            return QuantMode(str(requested).lower()), "as requested"
        except ValueError:
            valid = ", ".join(m.value for m in QuantMode)
            raise UsageError(f"unknown mode '{requested}'", f"choose one of: {valid}") from None
    if has_calibration:
        return QuantMode.INT8, "calibration data was given, so full int8"
    return QuantMode.DYNAMIC, "no calibration data was given, so dynamic range (pass --calib for full int8)"


@dataclass(frozen=True, kw_only=True)
class QuantizeReport(PassReport):
    calibration: CalibrationInfo | None
    check: CheckResult
    #: what the quantizer of a .tflite/.onnx source reports (ai-edge-quantizer recipe, ONNX Runtime options)
    backend: Mapping[str, Any] | None = None


#: float model files quantized by their own format's tools (ai-edge-quantizer, ONNX Runtime)
FILE_SOURCES = (ModelFormat.TFLITE, ModelFormat.ONNX)


def default_format(source_format: ModelFormat) -> OutputFormat:
    """The output format when none is asked for: an ONNX source stays ONNX, everything else becomes TFLite."""
    return OutputFormat.ONNX if source_format is ModelFormat.ONNX else OutputFormat.TFLITE


@PASSES.register("quantize")
class QuantizePass(Pass):
    name = "quantize"
    accepts = (ModelFormat.KERAS_H5, ModelFormat.KERAS_V3, ModelFormat.SAVEDMODEL, *FILE_SOURCES)
    produces = ModelFormat.TFLITE

    def __init__(self, config: QuantizeConfig | None = None, **kwargs: Any) -> None:
        self.config = config or QuantizeConfig(**kwargs)
        self.produces = ModelFormat.ONNX if self.config.format is OutputFormat.ONNX else ModelFormat.TFLITE

    def needs(self) -> frozenset[Role]:
        return frozenset({Role.CALIBRATION}) if self.config.mode.needs_calibration else frozenset()

    def params(self) -> dict[str, Any]:
        return self.config.to_dict()

    def apply(self, artifact: Artifact, context: PassContext) -> PassResult:
        self.check_input(artifact)
        config = self.config
        if config.mode.needs_calibration and context.calibration is None:
            raise DataError(
                f"--mode {config.mode.value} needs calibration data to set activation ranges",
                "pass --calib DIR|FILE.npz|digits (random data would give plausible-looking but wrong ranges)",
            )
        if artifact.format in FILE_SOURCES:
            return self._apply_file(artifact, context)
        started = time.perf_counter()
        keras_model = load_source(artifact, context)
        calibration = context.calibration if config.mode.needs_calibration else None
        output = Path(context.output)
        with atomic_path(output) as tmp:
            if config.format is OutputFormat.TFLITE:
                data = convert.keras_to_tflite(
                    keras_model.model, config.mode.value, calibration, config.per_channel, config.io.value,
                    progress=context.progress,
                )
                tmp.write_bytes(data)
            else:
                proto = convert.keras_to_onnx(keras_model.model)
                convert.onnx_quantize(
                    proto, config.mode.value, tmp, calibration, config.per_channel, progress=context.progress
                )
            seconds = time.perf_counter() - started
            metadata: Metadata = output_metadata(artifact, keras_model, context, "quantize", self.params())
            check = check_against_source(keras_model, Artifact(tmp, self.produces, metadata), config.mode.value, context)
            commit_metadata(output, metadata)
        result = Artifact(output, self.produces, metadata)
        report = QuantizeReport(
            pass_name=self.name, params=self.params(), seconds=seconds, calibration=CalibrationInfo.of(calibration),
            check=check, float_reference=float_reference(keras_model.model),
        )  # fmt: skip
        return PassResult(result, report)

    def _apply_file(self, artifact: Artifact, context: PassContext) -> PassResult:
        """A float .tflite (ai-edge-quantizer) or .onnx (ONNX Runtime) source: same checks and sidecar."""
        from edgecompress.compress.validate import check_against_file
        from edgecompress.models.inputs import input_spec_of, output_shapes_of
        from edgecompress.runtimes.probe import probe

        config = self.config
        tflite = artifact.format is ModelFormat.TFLITE
        if tflite:
            from edgecompress.compress import quantize_tflite as backend
        else:
            from edgecompress.compress import quantize_onnx as backend
        refused = backend.unavailable_reason(config.mode.value, config.io.value, config.format.value)
        if refused:
            raise UnsupportedError(*refused)
        # Untrusted bytes: open them in a time-limited child before any parser here reads them.
        probe("litert" if tflite else "onnxruntime", artifact.path)
        spec = input_spec_of(artifact, context.trust_model, context.layout)
        calibration = context.calibration if config.mode.needs_calibration else None
        started = time.perf_counter()
        output = Path(context.output)
        with atomic_path(output) as tmp:
            if tflite:
                data = artifact.path.read_bytes()
                backend.check_float_source(data, str(artifact.path))
                quantized, details = backend.quantize_tflite(
                    data, config.mode.value, calibration, config.per_channel, config.io.value, context.progress
                )
                tmp.write_bytes(quantized)
            else:
                details = backend.quantize_onnx(
                    artifact.path, tmp, config.mode.value, calibration, config.per_channel, context.progress
                )
            seconds = time.perf_counter() - started
            metadata = file_output_metadata(artifact, spec, output_shapes_of(artifact), context, self.params())
            check = check_against_file(
                artifact, Artifact(tmp, self.produces, metadata), config.mode.value, context, spec.shape, spec.layout
            )
            commit_metadata(output, metadata)
        report = QuantizeReport(
            pass_name=self.name, params=self.params(), seconds=seconds, calibration=CalibrationInfo.of(calibration),
            check=check, backend=details,
            float_reference={"bytes": artifact.size_bytes, "what": f"the float .{artifact.format.value} source itself"},
        )  # fmt: skip
        return PassResult(Artifact(output, self.produces, metadata), report)


def file_output_metadata(
    artifact: Artifact, spec: InputSpec, output_shapes: list, context: PassContext, params: dict[str, Any]
) -> Metadata:
    """The sidecar of a model quantized from a .tflite/.onnx: its input spec with layout, preprocessing, task."""
    from edgecompress.models.tasks import infer_task

    source = artifact.metadata
    return source.with_step(
        artifact.lineage_step("quantize", params),
        task=source.task or infer_task(tuple(output_shapes[0][1:])),
        inputs=(spec,),
        preprocessing=context.preprocessing or source.preprocessing,
        extra={**source.extra, "source_format": artifact.format.value},
    )
