"""Post-training quantization to TFLite or ONNX: dynamic range, float16, full int8, int16x8.

References: Jacob et al., "Quantization and Training of Neural Networks for Efficient
Integer-Arithmetic-Only Inference" (CVPR 2018); Krishnamoorthi, "Quantizing deep convolutional
networks for efficient inference" (2018) for per-channel weights.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecompress.artifacts import Artifact, Metadata, ModelFormat, atomic_path
from edgecompress.compress import convert
from edgecompress.compress.export import OutputFormat
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
from edgecompress.errors import DataError, UsageError


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


@PASSES.register("quantize")
class QuantizePass(Pass):
    name = "quantize"
    accepts = (ModelFormat.KERAS_H5, ModelFormat.KERAS_V3, ModelFormat.SAVEDMODEL)
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
            check=check,
        )
        return PassResult(result, report)
