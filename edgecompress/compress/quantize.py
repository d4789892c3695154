"""Post-training quantization to TFLite or ONNX: dynamic range, float16, full int8, int16x8.

References: Jacob et al., "Quantization and Training of Neural Networks for Efficient
Integer-Arithmetic-Only Inference" (CVPR 2018); Krishnamoorthi, "Quantizing deep convolutional
networks for efficient inference" (2018) for per-channel weights.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgecompress.artifacts import Artifact, Metadata, ModelFormat, atomic_path
from edgecompress.calibration.observers import DEFAULT_PERCENTILE
from edgecompress.compress import convert
from edgecompress.compress.export import OutputFormat
from edgecompress.compress.layermap import LayerMap
from edgecompress.compress.passes import (
    PASSES,
    Pass,
    PassContext,
    PassResult,
    commit_metadata,
    load_source,
    output_metadata,
)
from edgecompress.compress.validate import check_against_source
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
    #: activation ranges: None = the converter's / ONNX Runtime's own min/max calibration;
    #: minmax | percentile | entropy | mse = ours (TFLite) or ONNX Runtime's (ONNX; mse ours)
    calibration: str | None = None
    percentile: float = DEFAULT_PERCENTILE
    #: Keras layer names whose ops stay in float
    keep_float: tuple[str, ...] = ()
    #: keep the fewest layers in float so the metric drops at most ``max_drop`` points (needs --eval)
    auto_keep_float: bool = False
    max_drop: float | None = None
    #: weight fixes on the Keras model before conversion
    equalize: bool = False
    bias_correction: bool = False
    relu6: str = "replace"

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
        self._check_accuracy_options()

    def _check_accuracy_options(self) -> None:
        from edgecompress.calibration.observers import OBSERVERS

        if isinstance(self.keep_float, str):
            object.__setattr__(self, "keep_float", tuple(n.strip() for n in self.keep_float.split(",") if n.strip()))
        object.__setattr__(self, "keep_float", tuple(self.keep_float))
        if self.calibration is not None:
            object.__setattr__(self, "calibration", OBSERVERS.canonical(str(self.calibration)))
        if not 50.0 < float(self.percentile) <= 100.0:
            raise UsageError(f"percentile must be in (50, 100], not {self.percentile}", "e.g. --percentile 99.99")
        if self.relu6 not in ("replace", "skip"):
            raise UsageError(f"relu6 must be 'replace' or 'skip', not '{self.relu6}'", "use relu6=replace")
        static = str(getattr(self.mode, "value", self.mode)).lower() in ("int8", "int16x8")
        asked = [name for name, on in (("--calibration", self.calibration is not None), ("--keep-float", self.keep_float),
                                       ("--auto-keep-float", self.auto_keep_float)) if on]  # fmt: skip
        if asked and not static:
            raise UsageError(f"{asked[0]} applies to --mode int8 or int16x8 only", "add --mode int8 --calib DATA")
        if self.auto_keep_float and self.max_drop is None:
            raise UsageError("--auto-keep-float needs --max-drop POINTS", "e.g. --max-drop 0.5")
        if self.max_drop is not None and not self.auto_keep_float:
            raise UsageError("--max-drop applies to --auto-keep-float only", "add --auto-keep-float")
        if self.max_drop is not None and float(self.max_drop) < 0:
            raise UsageError(f"max_drop must be ≥ 0 points, not {self.max_drop}", "e.g. --max-drop 0.5")

    @property
    def custom_ranges(self) -> bool:
        """Whether our calibration route is needed (else the converter's own is used, as before)."""
        return self.calibration is not None or bool(self.keep_float) or self.auto_keep_float

    def range_options(self, keep_float: tuple[str, ...] | None = None):
        from edgecompress.compress.convert import RangeOptions

        return RangeOptions(self.calibration, float(self.percentile),
                            self.keep_float if keep_float is None else keep_float)  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        out = {"mode": self.mode.value, "format": self.format.value, "per_channel": self.per_channel, "io": self.io.value}
        # The accuracy options appear only when set, so earlier lineage and pipeline cache keys stay valid.
        defaults = {"calibration": None, "keep_float": (), "auto_keep_float": False, "max_drop": None,
                    "equalize": False, "bias_correction": False}  # fmt: skip
        for name, default in defaults.items():
            value = getattr(self, name)
            if value != default:
                out[name] = list(value) if isinstance(value, tuple) else value
        if self.calibration == "percentile":
            out["percentile"] = self.percentile
        if self.equalize and self.relu6 != "replace":
            out["relu6"] = self.relu6
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantizeConfig:
        values = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if isinstance(values.get("keep_float"), list):
            values["keep_float"] = tuple(values["keep_float"])
        return cls(**values)


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


@PASSES.register("quantize", "ptq")
class QuantizePass(Pass):
    name = "quantize"
    accepts = (ModelFormat.KERAS_H5, ModelFormat.KERAS_V3, ModelFormat.SAVEDMODEL)
    produces = ModelFormat.TFLITE

    def __init__(self, config: QuantizeConfig | None = None, **kwargs: Any) -> None:
        self.config = config or QuantizeConfig(**kwargs)
        self.produces = ModelFormat.ONNX if self.config.format is OutputFormat.ONNX else ModelFormat.TFLITE

    @property
    def needs_calibration(self) -> bool:
        return self.config.mode.needs_calibration or self.config.bias_correction

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
        if config.bias_correction and context.calibration is None:
            raise DataError("--bias-correction needs calibration data", "pass --calib DIR|FILE.npz|digits")
        if config.auto_keep_float and context.validation is None:
            raise UsageError("--auto-keep-float needs --eval DATA to measure the metric drop", "add --eval DATA")
        started = time.perf_counter()
        keras_model = load_source(artifact, context)
        LayerMap.of(keras_model.model).check(config.keep_float)
        calibration = context.calibration if config.mode.needs_calibration else None
        if config.equalize or config.bias_correction:
            # Loaded models are shared (runtimes/keras_io.py caches the last one): fix a copy.
            from edgecompress.compress.finetune import private_copy
            from edgecompress.runtimes.keras_io import KerasModel

            _, copy = private_copy(artifact, context)
            keras_model = KerasModel(model=copy, flavor="tf_keras", path=keras_model.path)
        fixes = weight_fixes(keras_model.model, config, context.calibration)
        search = None
        if config.auto_keep_float:
            from edgecompress.compress.keepfloat import search_keep_float

            search = search_keep_float(keras_model, artifact, config, context)
            config = replace(config, keep_float=search.kept, auto_keep_float=False, max_drop=None)
        output = Path(context.output)
        with atomic_path(output) as tmp:
            if config.format is OutputFormat.TFLITE:
                data = convert.keras_to_tflite(
                    keras_model.model, config.mode.value, calibration, config.per_channel, config.io.value,
                    progress=context.progress, ranges=config.range_options() if config.custom_ranges else None,
                )
                tmp.write_bytes(data)
            else:
                proto = convert.keras_to_onnx(keras_model.model)
                convert.onnx_quantize(
                    proto, config.mode.value, tmp, calibration, config.per_channel, progress=context.progress,
                    ranges=config.range_options() if config.custom_ranges else None,
                    layer_map=LayerMap.of(keras_model.model),
                )
            seconds = time.perf_counter() - started
            params = {**self.params(), **({"fixes": fixes} if fixes else {})}
            if search is not None:
                params["keep_float_found"] = list(search.kept)
            metadata: Metadata = output_metadata(artifact, keras_model, context, "quantize", params)
            check = check_against_source(keras_model, Artifact(tmp, self.produces, metadata), config.mode.value, context)
            commit_metadata(output, metadata)
        result = Artifact(output, self.produces, metadata)
        report = {
            "pass": self.name,
            **self.params(),
            "calibration": (
                {"samples": len(calibration), "source": calibration.source} if calibration is not None else None
            ),
            "seconds": seconds,
            "check": check.to_dict(),
        }
        if config.calibration is not None:
            method = config.calibration + (f" {config.percentile}" if config.calibration == "percentile" else "")
            report["calibration_method"] = method
        if fixes:
            report["fixes"] = fixes
        if search is not None:
            report["keep_float_search"] = search.to_dict()
        return PassResult(result, report)


def weight_fixes(model, config: QuantizeConfig, calibration) -> dict[str, Any]:
    """Equalization then bias correction, in place on a private copy of the model; what each did."""
    fixes: dict[str, Any] = {}
    if config.equalize:
        from edgecompress.compress.equalize import equalize

        fixes["equalize"] = equalize(model, relu6=config.relu6).to_dict()
    if config.bias_correction:
        from edgecompress.compress.bias_correct import bias_correct

        fixes["bias_correction"] = bias_correct(model, calibration, per_channel=config.per_channel).to_dict()
    return fixes
