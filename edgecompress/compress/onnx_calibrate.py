"""ONNX static int8 with a chosen calibration method, calibrated once and quantized many times.

``minmax`` and ``percentile`` are ONNX Runtime's own calibrators; ``mse`` (which ONNX Runtime lacks)
and ``entropy`` are our observers over the float model's activations. ONNX Runtime has an entropy
calibrator, but ``quantize_static`` builds it with 128 histogram bins and 128 quantized bins and no
option to change them, so it tries one threshold only, the symmetric max |x|: min/max under another
name. Ours searches (``calibration/observers.py``), the same in both formats. Either way the ranges end up in
ONNX Runtime's calibration cache (``save_tensors_data``), and every quantization — the plain one,
each keep-float trial, the one ``compress inspect`` examines — is ``quantize_static`` reading that
cache, so it never calibrates twice.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgecompress._env import native_output_silenced
from edgecompress.calibration.data import ModelInputs
from edgecompress.calibration.observers import DEFAULT_PERCENTILE, make_observer
from edgecompress.compress.layermap import LayerMap
from edgecompress.errors import UsageError, require

if TYPE_CHECKING:
    from edgecompress.compress.convert import RangeOptions

#: methods ONNX Runtime calibrates: our name → its CalibrationMethod member
ORT_METHODS = {"minmax": "MinMax", "percentile": "Percentile"}
#: methods our observers calibrate (their ranges are stored as MinMax ones)
OUR_METHODS = ("entropy", "mse")


@dataclass
class OnnxCalibration:
    """A float ONNX model and its activation ranges (ONNX Runtime's TensorsData)."""

    float_model: Any
    method: str
    params: dict[str, Any]
    tensors: Any  # onnxruntime.quantization.calibrate.TensorsData
    samples: int
    _stored_as: str = field(default="MinMax", repr=False)

    @property
    def ranges(self) -> dict[str, tuple[float, float]]:
        # range_value holds 0-d or 1-element arrays; numpy 2 refuses float() of the latter
        return {name: tuple(float(np.ravel(v)[0]) for v in self.tensors[name].range_value) for name in self.tensors}

    def nodes_of(self, layers: Iterable[str], layer_map: LayerMap) -> list[str]:
        """Float-model nodes a set of Keras layers took part in (by node and output names)."""
        wanted = set(layer_map.kept_with_reshapes(layers))
        return [
            node.name for node in self.float_model.graph.node
            if wanted & set(layer_map.layers_in(";".join([node.name, *node.output])))
        ]  # fmt: skip

    def quantize(
        self, output: str | Path, mode: str = "int8", per_channel: bool = True, exclude: Sequence[str] = ()
    ) -> None:
        """``quantize_static`` from the stored ranges (static QDQ, int8 weights)."""
        onnx = require("onnx", "onnx", "ONNX quantization")
        quantization = require("onnxruntime.quantization", "onnx", "ONNX quantization")
        from onnxruntime.quantization.calibrate import save_tensors_data

        activation = quantization.QuantType.QInt16 if mode == "int16x8" else quantization.QuantType.QInt8
        with tempfile.TemporaryDirectory(prefix="edgecompress-onnx-") as tmp:
            source, cache = Path(tmp) / "float.onnx", Path(tmp) / "ranges.json"
            onnx.save(self.float_model, str(source))
            save_tensors_data(self.tensors, cache)
            with native_output_silenced():
                quantization.quantize_static(
                    str(source),
                    str(output),
                    None,
                    quant_format=quantization.QuantFormat.QDQ,
                    per_channel=per_channel,
                    activation_type=activation,
                    weight_type=quantization.QuantType.QInt8,
                    nodes_to_exclude=list(exclude),
                    calibrate_method=getattr(quantization.CalibrationMethod, self._stored_as),
                    calibration_cache_path=str(cache),
                    # int16 Q/DQ exist in the standard domain only from opset 21, which tf2onnx cannot
                    # write yet; ONNX Runtime's com.microsoft Q/DQ ops take int16 at any opset.
                    extra_options={"UseQDQContribOps": mode == "int16x8"},
                )


def calibrate_onnx(
    float_model,
    calibration: ModelInputs,
    method: str = "minmax",
    percentile: float = DEFAULT_PERCENTILE,
    mode: str = "int8",
    progress_file=None,
) -> OnnxCalibration:
    """Activation ranges of a float ONNX model: ONNX Runtime's calibrators, or our observers."""
    if method not in ORT_METHODS and method not in OUR_METHODS:
        raise UsageError(f"unknown calibration method '{method}'", f"choose one of: {', '.join([*ORT_METHODS, *OUR_METHODS])}")
    params = {"percentile": percentile} if method == "percentile" else {}
    if method in OUR_METHODS:
        tensors = _observed_ranges(float_model, calibration, method, progress_file)
        return OnnxCalibration(float_model, method, params, tensors, len(calibration), "MinMax")
    quantization = require("onnxruntime.quantization", "onnx", "ONNX quantization")
    from onnxruntime.quantization.calibrate import load_tensors_data

    from edgecompress.compress.convert import _reader

    onnx = require("onnx", "onnx", "ONNX quantization")
    extra = {"CalibPercentile": percentile} if method == "percentile" else {}
    with tempfile.TemporaryDirectory(prefix="edgecompress-onnx-") as tmp:
        source, cache, out = Path(tmp) / "float.onnx", Path(tmp) / "ranges.json", Path(tmp) / "q.onnx"
        onnx.save(float_model, str(source))
        with native_output_silenced() as terminal:
            quantization.quantize_static(
                str(source), str(out),
                # ONNX Runtime's histogram collectors stack every batch: they must all be the same size.
                _reader(quantization.CalibrationDataReader, calibration, float_model.graph.input[0].name,
                        terminal if progress_file is not None else None, 16 if method == "minmax" else 1),
                quant_format=quantization.QuantFormat.QDQ,
                activation_type=quantization.QuantType.QInt16 if mode == "int16x8" else quantization.QuantType.QInt8,
                weight_type=quantization.QuantType.QInt8,
                calibrate_method=getattr(quantization.CalibrationMethod, ORT_METHODS[method]),
                calibration_cache_path=str(cache),
                extra_options={**extra, "UseQDQContribOps": mode == "int16x8"},
            )  # fmt: skip
        tensors = load_tensors_data(cache)
    return OnnxCalibration(float_model, method, params, tensors, len(calibration), ORT_METHODS[method])


def calibrated_tensors(float_model) -> list[str]:
    """The activations ONNX Runtime would calibrate (float inputs/outputs of quantizable ops)."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    onnx = require("onnx", "onnx", "ONNX quantization")
    inferred = onnx.shape_inference.infer_shapes(float_model)
    ops = set(QLinearOpsRegistry) | set(QDQRegistry)
    infos = {vi.name: vi for vi in [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]}
    initializers = {init.name for init in inferred.graph.initializer}
    names: list[str] = []
    for node in inferred.graph.node:
        if node.op_type not in ops:
            continue
        for name in (*node.input, *node.output):
            info = infos.get(name)
            if (info is not None and name not in initializers and name not in names
                    and info.type.tensor_type.elem_type == onnx.TensorProto.FLOAT):  # fmt: skip
                names.append(name)
    return names


def with_outputs(model, names: Sequence[str]):
    """A copy of an ONNX model that also returns the named intermediate tensors."""
    onnx = require("onnx", "onnx", "ONNX inspection")
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    present = {o.name for o in copy.graph.output}
    for name in names:
        if name not in present:
            copy.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    return copy


def session_of(model, threads: int | None = None, optimize: bool = True):
    """An ONNX Runtime session on an in-memory model (no graph rewrites when ``optimize`` is off)."""
    ort = require("onnxruntime", "onnx", "ONNX inspection")
    from edgecompress.runtimes.onnxrt import session_options

    options = session_options(threads)
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _observed_ranges(float_model, calibration: ModelInputs, method: str, progress_file=None):
    from onnxruntime.quantization.calibrate import TensorsData

    from edgecompress._progress import progress_bar

    names = calibrated_tensors(float_model)
    session = session_of(with_outputs(float_model, names))
    input_name = session.get_inputs()[0].name
    observers = {name: make_observer(method) for name in names}
    with progress_bar(total=len(calibration), desc="calibrating", unit="sample", file=progress_file,
              disable=progress_file is None) as bar:  # fmt: skip
        for batch in calibration.batches(16):
            values = session.run(names, {input_name: batch})
            for name, value in zip(names, values, strict=True):
                observers[name].update(value)
            bar.update(len(batch))
    ranges = {}
    for name, observer in observers.items():
        lo, hi = observer.range()
        ranges[name] = (np.array(lo, dtype=np.float32), np.array(hi, dtype=np.float32))
    from onnxruntime.quantization import CalibrationMethod

    return TensorsData(CalibrationMethod.MinMax, ranges)


def quantize_with_ranges(
    float_model, output: Path, mode: str, calibration: ModelInputs, per_channel: bool, ranges: RangeOptions,
    layer_map: LayerMap, progress: bool = False,
) -> None:
    """Static QDQ quantization with our calibration method and the Keras layers ``ranges`` keeps in float."""
    with native_output_silenced() as terminal:
        calibrated = calibrate_onnx(float_model, calibration, ranges.method or "minmax", ranges.percentile, mode,
                                    terminal if progress else None)  # fmt: skip
    exclude = calibrated.nodes_of(ranges.keep_float, layer_map) if ranges.keep_float else []
    calibrated.quantize(output, mode, per_channel, exclude)
