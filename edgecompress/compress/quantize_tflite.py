"""Post-training quantization of a float ``.tflite`` with Google's LiteRT quantizer (``ai-edge-quantizer``).

Why that quantizer: a float .tflite is what most users hold (Keras 3's ``model.export``, PyTorch
through litert-torch, model zoos) and TensorFlow's converter only takes Keras/SavedModel sources.
ai-edge-quantizer reads the flatbuffer itself, calibrates through LiteRT and writes int8 kernels.

It works through SignatureDefs: a file without one (older converters wrote none) is given one
first, naming the graph's own input and output tensors. Graph inputs and outputs are left float
(a QUANTIZE/DEQUANTIZE pair at the boundary) unless ``--io int8`` asks for integer I/O.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from edgecompress._env import native_output_silenced
from edgecompress.calibration.data import ModelInputs
from edgecompress.compress.tflite_graph import BOUNDARY_OPS, add_signature, float_ops, operators
from edgecompress.errors import EdgeCompressError, ModelLoadError, UnsupportedError, UsageError, require

log = logging.getLogger(__name__)

SIGNATURE_KEY = "serving_default"
#: our mode → (weight bits, activation bits); None activation bits: dynamic range (float activations)
RECIPES = {"dynamic": (8, None), "int8": (8, 8), "int16x8": (8, 16)}
#: integer tensor types that mean a file is already quantized
_INTEGER_TYPES = ("INT8", "UINT8", "INT16")


def unavailable_reason(mode: str, io: str, fmt: str) -> tuple[str, str] | None:
    """Why a request cannot be served from a .tflite source, and the alternative, or None."""
    if fmt != "tflite":
        return (f"a .tflite source quantizes to .tflite only, not {fmt}",
                "drop --format, or quantize the Keras or ONNX source to get an ONNX model")  # fmt: skip
    if mode == "float16":
        return ("float16 is not available for a .tflite source (ai-edge-quantizer 0.10 has no float16 recipe)",
                "use --mode dynamic (int8 weights, 4× smaller) or quantize the Keras source with --mode float16")  # fmt: skip
    if io == "uint8":
        return ("--io uint8 is not available for a .tflite source (the LiteRT quantizer writes int8 tensors)",
                "use --io int8, or quantize the Keras source with --io uint8")  # fmt: skip
    if io == "int8" and mode != "int8":
        return (f"--io int8 applies to --mode int8 only, not {mode}", "drop --io, or use --mode int8")
    return None


def check_float_source(data: bytes, path: str) -> None:
    """Refuse a file that is already quantized: re-quantizing quantized weights only loses accuracy."""
    try:
        ops = operators(data)
    except Exception as exc:  # noqa: BLE001 - the flatbuffer reader raises anything on a damaged file
        raise ModelLoadError(f"model file is damaged: {path}: its flatbuffer cannot be read ({type(exc).__name__})",
                             "re-export or re-download it") from exc  # fmt: skip
    integer = sorted({op.name for op in ops if op.name not in BOUNDARY_OPS and any(
        t in _INTEGER_TYPES for t in (*op.input_types, *op.output_types))})  # fmt: skip
    if integer or any(op.name in BOUNDARY_OPS for op in ops):
        raise UsageError(
            f"{path} is already quantized (integer or QUANTIZE/DEQUANTIZE ops: "
            f"{', '.join(integer or sorted(BOUNDARY_OPS))})",
            "pass the float .tflite (or the Keras/ONNX source) it was made from",
        )


def with_signature(data: bytes) -> tuple[bytes, bool]:
    """The model with a SignatureDef (added when it has none), and whether one was added."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    if model.signatureDefs:
        return data, False
    graph = model.subgraphs[0]

    def name(index: int, fallback: str) -> str:
        raw = graph.tensors[index].name
        text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw or "")
        return text or fallback

    inputs = [name(i, f"input_{k}") for k, i in enumerate(graph.inputs)]
    outputs = [name(i, f"output_{k}") for k, i in enumerate(graph.outputs)]
    if len(set(inputs)) != len(inputs) or len(set(outputs)) != len(outputs):
        inputs = [f"input_{k}" for k in range(len(inputs))]
        outputs = [f"output_{k}" for k in range(len(outputs))]
    signed = add_signature(data, inputs, outputs, SIGNATURE_KEY)
    if signed is data:
        raise UnsupportedError("could not add a SignatureDef to this .tflite", "re-export it with a current converter")
    return signed, True


def quantize_tflite(
    data: bytes, mode: str, calibration: ModelInputs | None, per_channel: bool, io: str, progress: bool = False
) -> tuple[bytes, dict[str, Any]]:
    """Quantize a float .tflite's bytes; returns the quantized bytes and what was done."""
    require("ai_edge_quantizer", "litert", "quantizing .tflite sources")
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import qtyping, quantizer, recipe_manager

    try:
        data, added = with_signature(data)
    except EdgeCompressError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged flatbuffer that LiteRT still ran
        raise ModelLoadError(f"model file is damaged: its flatbuffer cannot be rewritten ({type(exc).__name__})",
                             "re-export or re-download it") from exc  # fmt: skip
    weight_bits, activation_bits = RECIPES[mode]
    granularity = qtyping.QuantGranularity.CHANNELWISE if per_channel else qtyping.QuantGranularity.TENSORWISE
    recipes = recipe_manager.RecipeManager()
    skipped = []
    for op in qtyping.TFLOperationName:
        if op is qtyping.TFLOperationName.ALL_SUPPORTED:
            continue
        if op in (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT) and (
            activation_bits is None or io == "float"
        ):
            continue  # float graph I/O: the quantizer then adds QUANTIZE/DEQUANTIZE at the boundary
        try:
            if activation_bits is None:
                recipes.add_dynamic_config(".*", op, weight_bits, granularity)
            else:
                recipes.add_static_config(".*", op, activation_bits, weight_bits, granularity)
        except ValueError:  # the quantizer's policy has no such config for this op: it stays float
            skipped.append(op.value)
    log.debug("ai-edge-quantizer: no %s config for %s", mode, ", ".join(skipped))
    try:
        engine = quantizer.Quantizer(bytearray(data))
        engine.load_quantization_recipe(recipes.get_quantization_recipe())
        with native_output_silenced():
            result = None
            if engine.need_calibration:
                if calibration is None:
                    raise EdgeCompressError(f"{mode} quantization needs calibration data", "pass --calib")
                result = calibrate(engine, Interpreter, data, calibration)
            quantized = bytes(engine.quantize(result, enable_progress_bar=False,
                                              enable_progress_report=False).quantized_model)  # fmt: skip
    except EdgeCompressError:
        raise
    except Exception as exc:  # noqa: BLE001 - the quantizer raises ValueError, RuntimeError, KeyError…
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise UnsupportedError(
            f"ai-edge-quantizer could not quantize this model ({mode}): {first}",
            "try --mode dynamic, or quantize the Keras/ONNX source it came from",
        ) from exc
    if not any(t in _INTEGER_TYPES for op in operators(quantized) for t in op.input_types):
        granularity_name = "per-channel" if per_channel else "per-tensor"
        raise UnsupportedError(
            f"ai-edge-quantizer quantized no op of this model ({mode}, {granularity_name}): its recipes "
            "cover none of the model's ops this way",
            "try another --mode, drop --per-tensor, or quantize the Keras source",
        )
    if mode == "int8":
        left = float_ops(quantized)
        if left:
            raise UnsupportedError(
                f"int8 quantization of this .tflite left op(s) {', '.join(left)} in float "
                "(ai-edge-quantizer has no int8 recipe for them)",
                "use --mode dynamic or --mode int16x8, or quantize the Keras source (TensorFlow's converter)",
            )
    return quantized, {"quantizer": "ai-edge-quantizer", "signature_added": added}


#: samples per calibration run when the model's batch axis is dynamic
CALIBRATION_BATCH = 32


def calibrate(engine, interpreter_class, data: bytes, calibration: ModelInputs) -> dict:
    """Activation ranges over all calibration samples: the global min/max, as TensorFlow's converter takes.

    Why not one ``calibrate`` call over every sample: within a call the quantizer merges the ranges of
    successive runs by a moving average (weight 0.95 on the old value), so ranges end up near the first
    samples' and clip later ones; on a MobileNetV2 that cost 3 points of top-1 against the converter.
    Each call here covers one batch (the whole batch is one run), and the calls are merged by min/max.
    """
    interpreter = interpreter_class(model_content=data)
    signatures = interpreter.get_signature_list()
    key = next(iter(signatures))
    names = signatures[key]["inputs"]
    if len(names) != 1:
        raise UnsupportedError(f"the model has {len(names)} inputs", "edgecompress quantizes single-input models")
    runner = interpreter.get_signature_runner(key)
    dynamic = int(runner.get_input_details()[names[0]]["shape_signature"][0]) == -1
    merged: dict = {}
    for batch in calibration.batches(CALIBRATION_BATCH if dynamic else 1):
        ranges = engine.calibrate({key: [{names[0]: batch}]}, num_threads=2)
        for tensor, qsv in ranges.items():
            if tensor not in merged or not qsv or "min" not in qsv:
                merged.setdefault(tensor, qsv)
                continue
            old = merged[tensor]
            merged[tensor] = {**old, "min": np.minimum(old["min"], qsv["min"]), "max": np.maximum(old["max"], qsv["max"])}
    return merged
