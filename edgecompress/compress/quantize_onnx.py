"""Post-training quantization of a float ``.onnx`` with ONNX Runtime's quantization tools.

What PyTorch users hold is an ONNX export: NCHW image inputs, often a fixed batch of 1. ONNX
Runtime's pre-processing (shape inference and graph optimisation, e.g. folding BatchNormalization
into Conv) runs first, as its documentation recommends; then the same ``quantize_dynamic`` /
``quantize_static`` (QDQ, per-channel) settings ``compress quantize`` uses for Keras sources.

An ONNX source can become a .tflite only through a converter made for that: onnx2tf. Its current
releases need Python ≥ 3.12 and its older ones pin TensorFlow 2.19, so it cannot be installed beside
our stack: ``--format tflite`` from an ONNX source is refused in one line that names the alternatives.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from edgecompress._env import native_output_silenced
from edgecompress.calibration.data import ModelInputs
from edgecompress.compress import convert
from edgecompress.errors import EdgeCompressError, ModelLoadError, UnsupportedError, require

log = logging.getLogger(__name__)

#: integer ONNX element types (onnx.TensorProto): INT8, UINT8, INT16, UINT16, INT32
_INTEGER_ELEMENT_TYPES = {2, 3, 4, 5, 6}
_QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
                  "MatMulInteger", "DynamicQuantizeLinear"}  # fmt: skip


def unavailable_reason(mode: str, io: str, fmt: str) -> tuple[str, str] | None:
    """Why a request cannot be served from an .onnx source, and the alternative, or None."""
    if fmt == "tflite":
        return ("an ONNX source cannot become a .tflite here: the converter made for it, onnx2tf, needs "
                "Python ≥ 3.12 (or pins TensorFlow 2.19) and is not part of this stack",
                "quantize to ONNX (--format onnx, the default for .onnx sources), or export a float .tflite from "
                "the model's own framework (e.g. litert-torch for PyTorch) and quantize that")  # fmt: skip
    if io != "float":
        return (f"--io {io} applies to TFLite outputs; ONNX models keep float inputs and outputs", "drop --io")
    return None


def load_float_model(path: Path):
    """The ONNX model (already probed in a child), refused if it is quantized already."""
    onnx = require("onnx", "onnx", "quantizing .onnx sources")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError and others on damaged files
        raise ModelLoadError(f"model file is damaged: {path}: {type(exc).__name__}", "re-export or re-download it") from exc
    quantized = sorted({node.op_type for node in model.graph.node if node.op_type in _QUANTIZED_OPS})
    integer = [t.name for t in model.graph.initializer if t.data_type in _INTEGER_ELEMENT_TYPES and len(t.dims) > 1]
    if quantized or integer:
        raise UnsupportedError(
            f"{path} is already quantized ({', '.join(quantized) or 'integer weights'})",
            "pass the float .onnx it was made from",
        )
    if len(model.graph.input) - len({t.name for t in model.graph.initializer} & {i.name for i in model.graph.input}) > 1:
        raise UnsupportedError(f"{path} has several inputs", "edgecompress quantizes single-input models")
    return model


def quantize_onnx(
    path: Path, output: Path, mode: str, calibration: ModelInputs | None, per_channel: bool, progress: bool = False
) -> dict[str, Any]:
    """Pre-process and quantize the float ONNX model at ``path`` into ``output``; returns what was done."""
    model = load_float_model(path)
    batch = _fixed_batch(model)
    if batch not in (None, 1):
        raise UnsupportedError(
            f"{path} has a fixed batch of {batch}", "re-export it with a dynamic batch axis or a batch of 1"
        )
    preprocessed = False
    with tempfile.TemporaryDirectory(prefix="edgecompress-onnxq-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        if mode != "float16":
            preprocessed = _preprocess(path, prepared)
        onnx = require("onnx", "onnx", "quantizing .onnx sources")
        source = onnx.load(str(prepared)) if preprocessed else model
        try:
            convert.onnx_quantize(
                source, mode, output, calibration, per_channel, progress=progress, batch_size=batch or 16
            )
        except EdgeCompressError:
            raise
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime's quantizer raises anything on odd graphs
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise UnsupportedError(
                f"ONNX Runtime could not quantize this model ({mode}): {first}",
                "try --mode dynamic, or re-export the model with standard ONNX ops",
            ) from exc
    return {"quantizer": "onnxruntime", "ort_preprocessed": preprocessed}


def _fixed_batch(model) -> int | None:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return int(dims[0].dim_value) if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0 else None


def _preprocess(path: Path, prepared: Path) -> bool:
    """ONNX Runtime's quantization pre-processing; a model it cannot process is quantized as it is."""
    shape_inference = require("onnxruntime.quantization.shape_inference", "onnx", "ONNX quantization")
    try:
        with native_output_silenced():
            # Symbolic shape inference is for transformer graphs and needs sympy; ONNX shape inference stays on.
            shape_inference.quant_pre_process(str(path), str(prepared), skip_symbolic_shape=True)
    except Exception as exc:  # noqa: BLE001 - symbolic shape inference fails on some graphs; it is optional
        log.warning("ONNX Runtime's quantization pre-processing failed (%s); quantizing the model as it is",
                    (str(exc).splitlines() or [type(exc).__name__])[0][:200])  # fmt: skip
        return False
    return prepared.is_file()
