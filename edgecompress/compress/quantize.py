"""Post-training quantization to TFLite or ONNX: dynamic range, float16, full int8, int16x8.

References: Jacob et al., "Quantization and Training of Neural Networks for Efficient
Integer-Arithmetic-Only Inference" (CVPR 2018); Krishnamoorthi, "Quantizing deep convolutional
networks for efficient inference" (2018) for per-channel weights.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgecompress.artifacts import Artifact, InputSpec, Metadata, ModelFormat, atomic_path
from edgecompress.calibration.observers import DEFAULT_PERCENTILE
from edgecompress.compress import convert
from edgecompress.compress.export import OutputFormat, float_reference
from edgecompress.compress.layermap import LayerMap
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

if TYPE_CHECKING:
    from edgecompress.compress.bias_correct import BiasCorrectionResult
    from edgecompress.compress.equalize import EqualizeResult
    from edgecompress.compress.keepfloat import KeepFloatSearch


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
    #: minmax | percentile | entropy | mse = ours (TFLite) or ONNX Runtime's (ONNX; entropy, mse ours)
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
    #: ReLU6 between equalized layers (compress/equalize.py): "bound" keeps it exact on the calibration
    #: data; "replace" (the paper's ReLU6 → ReLU) took a digits MobileNetV2 trained into saturation to chance
    relu6: str = "bound"

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
        from edgecompress.compress.equalize import check_relu6

        check_relu6(self.relu6)
        asked = [name for name, on in (("--calibration", self.calibration is not None), ("--keep-float", self.keep_float),
                                       ("--auto-keep-float", self.auto_keep_float)) if on]  # fmt: skip
        if asked and not self.mode.needs_calibration:
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

    @property
    def accuracy_options(self) -> list[str]:
        """The accuracy tools asked for, as the CLI names them (they work on Keras sources only)."""
        return [name for name, on in (("--calibration", self.calibration is not None), ("--keep-float", self.keep_float),
                                      ("--auto-keep-float", self.auto_keep_float), ("--equalize", self.equalize),
                                      ("--bias-correction", self.bias_correction)) if on]  # fmt: skip

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
        if self.equalize:
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


@dataclass(frozen=True, kw_only=True)
class QuantizeReport(PassReport):
    calibration: CalibrationInfo | None
    check: CheckResult
    #: what the quantizer of a .tflite/.onnx source reports (ai-edge-quantizer recipe, ONNX Runtime options)
    backend: Mapping[str, Any] | None = None
    #: int8 only: what the runtime runs outside its int8 kernels (why int8 may not beat float), or None
    int8_path: str | None = None
    #: our activation-range method ("percentile 99.99"); None: the converter's / ONNX Runtime's own min/max
    calibration_method: str | None = None
    #: the weight fixes applied to the Keras model before conversion (also in the output's lineage)
    fixes: WeightFixes | None = None
    #: what ``auto_keep_float`` tried and found (the layers kept are in ``keep_float_found`` of the lineage)
    keep_float_search: KeepFloatSearch | None = None


@dataclass(frozen=True)
class WeightFixes:
    equalize: EqualizeResult | None = None
    bias_correction: BiasCorrectionResult | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v.to_dict() for k, v in (("equalize", self.equalize), ("bias_correction", self.bias_correction)) if v}


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
        config = self.config
        bounded = config.equalize and config.relu6 == "bound"
        roles = {Role.CALIBRATION} if config.mode.needs_calibration or config.bias_correction or bounded else set()
        # the keep-float search measures the metric drop: held-out data, never the calibration set
        return frozenset(roles | ({Role.VALIDATION} if config.auto_keep_float else set()))

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
            if config.accuracy_options:
                raise UsageError(f"{config.accuracy_options[0]} works on Keras sources only, not .{artifact.format.value}",
                                 "quantize the float Keras model instead")  # fmt: skip
            return self._apply_file(artifact, context)
        if config.bias_correction and context.calibration is None:
            raise DataError("--bias-correction needs calibration data", "pass --calib DIR|FILE.npz|digits")
        if config.equalize and config.relu6 == "bound" and context.calibration is None:
            raise DataError("--equalize needs calibration data to keep ReLU6 exact (relu6=bound)",
                            "pass --calib DIR|FILE.npz|digits, or relu6=replace (the paper's ReLU6 → ReLU)")  # fmt: skip
        if config.auto_keep_float and context.validation is None:
            raise UsageError("--auto-keep-float needs --eval DATA to measure the metric drop", "add --eval DATA")
        started = time.perf_counter()
        keras_model = load_source(artifact, context)
        LayerMap.of(keras_model.model).check(config.keep_float)
        calibration = context.calibration if config.mode.needs_calibration else None
        if config.equalize or config.bias_correction:
            # Loaded models are shared (the runner's copy, runtimes/keras_io.py's cache): fix a private copy.
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
        ranges = config.range_options() if config.custom_ranges else None
        output = Path(context.output)
        with atomic_path(output) as tmp:
            if config.format is OutputFormat.TFLITE:
                data = convert.keras_to_tflite(
                    keras_model.model, config.mode.value, calibration, config.per_channel, config.io.value,
                    progress=context.progress, ranges=ranges,
                )
                tmp.write_bytes(data)
            else:
                proto = convert.keras_to_onnx(keras_model.model)
                if ranges is not None and config.mode.needs_calibration:
                    from edgecompress.compress.onnx_calibrate import quantize_with_ranges

                    quantize_with_ranges(proto, tmp, config.mode.value, calibration, config.per_channel, ranges,
                                         LayerMap.of(keras_model.model), context.progress)  # fmt: skip
                else:
                    convert.onnx_quantize(
                        proto, config.mode.value, tmp, calibration, config.per_channel, progress=context.progress
                    )
            seconds = time.perf_counter() - started
            params = {**self.params(), **({"fixes": fixes.to_dict()} if fixes else {})}
            if search is not None:
                params["keep_float_found"] = list(search.kept)
            metadata: Metadata = output_metadata(artifact, keras_model, context, "quantize", params)
            check = check_against_source(keras_model, Artifact(tmp, self.produces, metadata), config.mode.value, context)
            int8_path = convert.int8_path(tmp, config.format.value) if config.mode is QuantMode.INT8 else None
            commit_metadata(output, metadata)
        result = Artifact(output, self.produces, metadata)
        report = QuantizeReport(
            pass_name=self.name, params=self.params(), seconds=seconds, calibration=CalibrationInfo.of(calibration),
            check=check, float_reference=float_reference(keras_model.model), int8_path=int8_path, fixes=fixes,
            keep_float_search=search, calibration_method=_method(config),
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
            int8_path = convert.int8_path(tmp, config.format.value) if config.mode is QuantMode.INT8 else None
            commit_metadata(output, metadata)
        report = QuantizeReport(
            pass_name=self.name, params=self.params(), seconds=seconds, calibration=CalibrationInfo.of(calibration),
            check=check, backend=details, int8_path=int8_path,
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


def _method(config: QuantizeConfig) -> str | None:
    if config.calibration is None:
        return None
    return config.calibration + (f" {config.percentile}" if config.calibration == "percentile" else "")


def weight_fixes(model, config: QuantizeConfig, calibration) -> WeightFixes | None:
    """Equalization then bias correction, in place on a private copy of the model; what each did."""
    if not (config.equalize or config.bias_correction):
        return None
    equalized = corrected = None
    if config.equalize:
        from edgecompress.compress.equalize import equalize

        equalized = equalize(model, relu6=config.relu6, calibration=calibration)
    if config.bias_correction:
        from edgecompress.compress.bias_correct import bias_correct

        corrected = bias_correct(model, calibration, per_channel=config.per_channel)
    return WeightFixes(equalized, corrected)
