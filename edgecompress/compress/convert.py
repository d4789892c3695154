"""Conversion primitives: Keras → TFLite (every PTQ mode) and Keras → ONNX (+ ONNX Runtime quantization).

Kept apart from the passes so pruning, QAT and the pipeline reuse exactly the same converter
settings that ``compress quantize`` uses.
"""

from __future__ import annotations

import hashlib
import logging
import re
import tempfile
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgecompress._env import import_tensorflow, native_output_silenced
from edgecompress.calibration.data import ModelInputs
from edgecompress.calibration.observers import DEFAULT_PERCENTILE
from edgecompress.compress.layermap import LayerMap
from edgecompress.compress.tflite_graph import add_signature, float_ops
from edgecompress.errors import EdgeCompressError, UnsupportedError, require

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from edgecompress.compress.tflite_calibrate import Calibrated

ONNX_OPSET = 17


def keras_to_tflite(
    model,
    mode: str = "float",
    calibration: ModelInputs | None = None,
    per_channel: bool = True,
    io: str = "float",
    optimize_sparsity: bool = False,
    progress: bool = False,
    ranges: RangeOptions | None = None,
) -> bytes:
    """Run the TFLite converter with the settings of one post-training mode.

    We convert a concrete function of the model's inference call instead of using
    ``from_keras_model``: that path first saves a whole SavedModel (tracing every layer), which is
    about 90 % of its time — 19 s against 1.4 s for the demo MobileNetV2, with identical output.
    The SignatureDef the Keras path would write is added back afterwards.

    ``ranges`` (int8 only): calibrate with our observers and/or keep layers in float, through the
    converter's calibrate-only step and its quantizer (``tflite_calibrate.py``).
    """
    tf = import_tensorflow()
    converter, specs = _converter(model)
    optimizations = []
    if mode != "float":
        optimizations.append(tf.lite.Optimize.DEFAULT)
    if optimize_sparsity:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = optimizations
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif mode in ("int8", "int16x8"):
        if calibration is None:
            raise EdgeCompressError(f"{mode} conversion needs calibration data", "pass --calib")
        if mode == "int8":
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            io_types = {"float": tf.float32, "int8": tf.int8, "uint8": tf.uint8}
            converter.inference_input_type = io_types[io]
            converter.inference_output_type = io_types[io]
        else:
            converter.target_spec.supported_ops = [
                tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
            ]
        # The converter exposes per-tensor weight quantization only through this attribute.
        converter._experimental_disable_per_channel = not per_channel  # noqa: SLF001
    kept: list[str] = []
    requantize = None  # quantizes again with some op types left in float (see _xnnpack_float_islands)
    try:
        with native_output_silenced() as terminal:
            if mode == "int8" and ranges is not None:
                calibrated = calibrate_converter(converter, calibration, ranges, terminal if progress else None)
                kept = calibrated.op_outputs_of(ranges.keep_float, LayerMap.of(model), strict=True)
                data = calibrated.quantize(per_channel, io, kept)

                def requantize(ops: tuple[str, ...]) -> bytes:
                    return calibrated.quantize(per_channel, io, kept, keep_ops=ops)
            else:
                if mode in ("int8", "int16x8"):
                    converter.representative_dataset = calibration.representative_dataset(terminal if progress else None)
                data = converter.convert()
    except EdgeCompressError:
        raise
    except Exception as exc:  # noqa: BLE001 - the converter raises ConverterError, ValueError, RuntimeError…
        raise _conversion_error(exc, mode) from exc
    islands: tuple[str, ...] = ()
    if mode == "int8" and io == "float":
        if requantize is None:

            def requantize(ops: tuple[str, ...]) -> bytes:
                return _quantize_keeping_float(model, calibration, per_channel, ops)

        data, islands = _xnnpack_float_islands(data, requantize)
    data = finish_tflite(data, model, specs)
    if mode == "int8":
        left = [op for op in float_ops(data, allowed=kept) if op not in islands]
        if left:
            raise UnsupportedError(
                f"full-int8 conversion left op(s) {', '.join(left)} in float (no int8 kernel)",
                "use --mode dynamic or --mode int16x8, or replace that layer",
            )
    return data


def _xnnpack_float_islands(data: bytes, requantize: Callable[[tuple[str, ...]], bytes]) -> tuple[bytes, tuple[str, ...]]:
    """Int8 ops XNNPACK cannot run, kept in float where that lets XNNPACK run the whole graph.

    XNNPACK (LiteRT's CPU path on phones, Raspberry Pis and PCs) has no int8 kernel for some ops,
    MobileNetV3's HARD_SWISH first among them: they fall back to LiteRT's built-in kernels and cut
    the graph into parts (22 for MobileNetV3-large at 224 px, whose stock int8 file ran 1.8× slower
    than float here). Quantized again with those op types kept in float, each becomes DEQUANTIZE →
    float op → QUANTIZE, all three inside XNNPACK: 2.5× faster than float instead. Only when the
    graph really gets fewer parts; with int8/uint8 I/O (integer-only targets) nothing is kept.
    ``requantize(ops)`` quantizes the same model from the same calibration with ``ops`` in float.
    """
    from edgecompress.runtimes.litert import xnnpack_delegation

    before = xnnpack_delegation(data)
    if before is None or not before.splitting:
        return data, ()
    ops = tuple(sorted(before.splitting))
    try:
        with native_output_silenced():
            islands = requantize(ops)
    except Exception as exc:  # noqa: BLE001 - a converter that refuses leaves the full-int8 model as it was
        log.debug("requantizing with %s in float failed: %s", ops, exc)
        return data, ()
    after = xnnpack_delegation(islands)
    if after is None or after.partitions >= before.partitions:
        return data, ()
    log.warning(
        "int8: kept %s in float: XNNPACK has no int8 kernel for %s, which split the graph into %d parts; "
        "now %d (pass --io int8 for an integer-only model)",
        ", ".join(f"{n}× {op}" for op, n in before.splitting.most_common()), "/".join(ops), before.partitions,
        after.partitions,
    )  # fmt: skip
    return islands, ops


def _quantize_keeping_float(model, calibration: ModelInputs, per_channel: bool, ops: tuple[str, ...]) -> bytes:
    """Full-int8 quantization with ``ops`` (TFLite op names) left in float: the converter's
    calibrate-only step, then its MLIR quantizer with those ops denylisted."""
    tf = import_tensorflow()
    from tensorflow.lite.python import convert as lite_convert

    converter, _ = _converter(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.representative_dataset = calibration.representative_dataset(None)
    converter._experimental_calibrate_only = True  # noqa: SLF001 - the converter's own two-step path
    calibrated = converter.convert()
    # Not fully_quantize: that would also make the model's inputs and outputs int8 (float I/O is kept).
    return lite_convert.mlir_quantize(calibrated, disable_per_channel=not per_channel, denylisted_ops=list(ops))


def int8_path(path: Path, fmt: str) -> str | None:
    """What the runtime that runs an int8 ``path`` leaves outside its int8 kernels, in one line, or
    None when nothing is: the ops that cost the time where int8 does not beat float.

    LiteRT: ops XNNPACK cannot take, which split the graph into parts handed to built-in kernels.
    ONNX Runtime: ops it still runs in float between DequantizeLinear and QuantizeLinear after its
    own int8 fusions (each costs a dequantize and a quantize besides the float op).
    """
    try:
        if fmt == "tflite":
            from edgecompress.runtimes.litert import xnnpack_delegation

            delegation = xnnpack_delegation(path)
            if delegation is None or not delegation.splitting:
                return None
            return f"LiteRT: {delegation.describe()} (those run on built-in kernels)"
        from edgecompress.runtimes.onnxrt import float_islands

        islands = float_islands(path)
    except Exception as exc:  # noqa: BLE001 - a diagnosis that fails must not fail the quantization
        log.debug("int8 path of %s not read: %s", path, exc)
        return None
    if not islands:
        return None
    ops = ", ".join(f"{n}× {op}" for op, n in islands.most_common())
    return f"ONNX Runtime runs {ops} in float between Dequantize/QuantizeLinear"


@dataclass(frozen=True)
class RangeOptions:
    """How int8 activation ranges are chosen, and which Keras layers stay in float."""

    #: None: the converter's (ONNX Runtime's) own min/max calibrator; else an observer name
    method: str | None = None
    percentile: float = DEFAULT_PERCENTILE
    keep_float: tuple[str, ...] = ()


def _converter(model):
    """A converter of the model's inference call, and the input specs it was traced with."""
    tf = import_tensorflow()
    specs = [
        tf.TensorSpec((None, *tuple(t.shape[1:])), tf.float32, name=_tensor_name(t, i))
        for i, t in enumerate(model.inputs)
    ]
    # A list (not a dict) keeps the outputs in the Keras order: dicts are flattened by sorted key.
    function = tf.function(lambda *x: list(_as_list(model(list(x) if len(x) > 1 else x[0], training=False))))
    return tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function(*specs)]), specs


def calibrate_converter(converter, calibration: ModelInputs, ranges: RangeOptions, progress_file=None) -> Calibrated:
    from edgecompress.compress.tflite_calibrate import calibrate

    return calibrate(converter, calibration, ranges.method, ranges.percentile, progress_file)


def keras_calibrated(model, calibration: ModelInputs, ranges: RangeOptions, progress: bool = False) -> Calibrated:
    """A float TFLite model of ``model`` carrying our int8 activation ranges (see tflite_calibrate.py),
    to quantize as often as needed: keep-float searches and ``compress inspect`` calibrate once."""
    tf = import_tensorflow()
    converter, _ = _converter(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    try:
        with native_output_silenced() as terminal:
            return calibrate_converter(converter, calibration, ranges, terminal if progress else None)
    except EdgeCompressError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise _conversion_error(exc, "int8") from exc


def finish_tflite(data: bytes, model, specs=None) -> bytes:
    """The SignatureDef a Keras conversion would have written (inputs and outputs by Keras name)."""
    names = [s.name for s in specs] if specs else [_tensor_name(t, i) for i, t in enumerate(model.inputs)]
    return add_signature(data, names, _output_names(model))


def _tensor_name(tensor, index: int) -> str:
    name = str(getattr(tensor, "name", "") or f"input_{index}").split(":")[0]
    return name.replace("/", "_") or f"input_{index}"


def _output_names(model) -> list[str]:
    names = [str(n) for n in (getattr(model, "output_names", None) or [])]
    return names if len(names) == len(model.outputs) and len(set(names)) == len(names) else [
        f"output_{i}" for i in range(len(model.outputs))
    ]


def _as_list(outputs) -> list:
    return list(outputs) if isinstance(outputs, list | tuple) else [outputs]


def _conversion_error(exc: Exception, mode: str) -> EdgeCompressError:
    text = str(exc)
    ops = sorted(set(re.findall(r"'(?:tf|tfl)\.(\w+)' op", text)) | set(re.findall(r"op: '?(\w+)'?", text)))
    if mode == "int8" and ops:
        return UnsupportedError(
            f"full-int8 conversion cannot handle op(s) {', '.join(ops)}",
            "use --mode dynamic or --mode int16x8, or replace that layer",
        )
    if ops:
        return UnsupportedError(f"TFLite cannot convert op(s) {', '.join(ops)}", "replace that layer with built-in ones")
    first = next((line for line in text.splitlines() if "error" in line.lower()), text.splitlines()[0] if text else "")
    return UnsupportedError(f"TFLite conversion failed ({mode}): {first.strip()[:300]}", "run with --debug for details")


#: the last ONNX export: (the model it came from, opset, digest of its weights, serialized proto)
_LAST_ONNX: list[tuple[weakref.ref, int, str, bytes]] = []


def keras_to_onnx(model, opset: int = ONNX_OPSET):
    """Export a Keras (2 or 3) model through a tf.function, which tf2onnx handles for both.

    The last export is kept, keyed by the model object and a digest of its weights, so every ONNX
    variant of one source (float, int8 per-channel and per-tensor, each calibration method …) starts
    from one export instead of one tf2onnx run each, and a model whose weights changed in place is
    exported again. A fresh proto is returned every time: quantizers may edit the graph they get.
    """
    require("tf2onnx", "onnx", "ONNX export")  # named even when the export is served from the last one
    digest = _weights_digest(model)
    if _LAST_ONNX:
        ref, last_opset, last_digest, data = _LAST_ONNX[0]
        if ref() is model and (last_opset, last_digest) == (opset, digest):
            return require("onnx", "onnx", "ONNX export").ModelProto.FromString(data)
    proto = _keras_to_onnx(model, opset)
    try:
        ref = weakref.ref(model)
    except TypeError:  # an object that cannot be weakly referenced is simply not remembered
        return proto
    _LAST_ONNX[:] = [(ref, opset, digest, proto.SerializeToString())]
    return proto


def _weights_digest(model) -> str:
    """A hash of every weight: milliseconds for the zoo models, against seconds of tf2onnx."""
    digest = hashlib.blake2b(digest_size=16)
    for weight in model.weights:
        digest.update(np.ascontiguousarray(weight.numpy()).tobytes())
    return digest.hexdigest()


def _keras_to_onnx(model, opset: int):
    tf = import_tensorflow()
    tf2onnx = require("tf2onnx", "onnx", "ONNX export")
    shape = tuple(model.inputs[0].shape[1:])
    signature = (tf.TensorSpec((None, *shape), tf.float32, name="input"),)
    function = tf.function(lambda x: model(x, training=False), input_signature=signature)
    try:
        with native_output_silenced():
            proto, _ = tf2onnx.convert.from_function(function, input_signature=signature, opset=opset)
    except Exception as exc:  # noqa: BLE001
        raise UnsupportedError(
            f"ONNX export failed: {str(exc).splitlines()[0][:300]}", "try --format tflite, or --debug for details"
        ) from exc
    return proto


def onnx_quantize(
    float_model,
    mode: str,
    output: Path,
    calibration: ModelInputs | None = None,
    per_channel: bool = True,
    progress: bool = False,
    batch_size: int = 16,
) -> None:
    """Quantize an ONNX model with ONNX Runtime: dynamic, static QDQ int8 / int16x8, or float16.

    ``batch_size``: calibration batches; a model exported with a fixed batch (often 1) needs that one.
    (Our calibration methods and layers kept in float: ``onnx_calibrate.quantize_with_ranges``.)
    """
    onnx = require("onnx", "onnx", "ONNX quantization")
    if mode == "float16":
        float16 = require("onnxconverter_common.float16", "onnx", "ONNX float16 conversion")
        # keep_io_types: float in, float out at the boundary like every other variant.
        onnx.save(float16.convert_float_to_float16(float_model, keep_io_types=True), str(output))
        return
    quantization = require("onnxruntime.quantization", "onnx", "ONNX quantization")
    with tempfile.TemporaryDirectory(prefix="edgecompress-onnx-") as tmp:
        source = Path(tmp) / "float.onnx"
        onnx.save(float_model, str(source))
        with native_output_silenced() as terminal:
            if mode == "dynamic":
                # ConvInteger only has uint8-weight kernels in ONNX Runtime's CPU provider.
                quantization.quantize_dynamic(
                    str(source), str(output), weight_type=quantization.QuantType.QUInt8, per_channel=per_channel
                )
                return
            if calibration is None:
                raise EdgeCompressError(f"ONNX {mode} needs calibration data", "pass --calib")
            if mode == "int8":
                onnx.save(prepare_onnx_int8(float_model), str(source))
            quantization.quantize_static(
                str(source),
                str(output),
                _reader(quantization.CalibrationDataReader, calibration, float_model.graph.input[0].name,
                        terminal if progress else None, batch_size),
                calibrate_method=quantization.CalibrationMethod.MinMax,
                **ort_static_options(mode, per_channel),
            )


def ort_static_options(mode: str, per_channel: bool) -> dict:
    """``quantize_static`` settings for ONNX Runtime's fast int8 path (shared by every static route).

    uint8 activations × int8 weights (U8S8), in QDQ form. ONNX Runtime's own default, int8
    activations (S8S8), is what made our int8 slower than float on x86: its x86 CPU provider does
    not fuse S8S8 Q/DQ around depthwise convolutions, Pad and Add (the stock MobileNetV2 at 224 px
    keeps 15 Conv, 10 Add, 10 Transpose and 4 Pad in float between Q/DQ: 5.4 ms against 4.1 ms for
    float; ours 2.1 ms, ``benchmarks/README.md``).
    ARM's kernels take U8S8 as well (``benchmarks/int8_speed.py``; ``benchmarks/README.md``).
    ``reduce_range`` stays off: it is for x86 CPUs without VNNI, and costs accuracy elsewhere.
    """
    from onnxruntime.quantization import QuantFormat, QuantType

    return {
        "quant_format": QuantFormat.QDQ,
        "per_channel": per_channel,
        "activation_type": QuantType.QInt16 if mode == "int16x8" else QuantType.QUInt8,
        "weight_type": QuantType.QInt8,
        # int16 Q/DQ exist in the standard domain only from opset 21, which tf2onnx cannot write
        # yet; ONNX Runtime's com.microsoft Q/DQ ops take int16 at any opset.
        "extra_options": {"UseQDQContribOps": mode == "int16x8"},
    }


def prepare_onnx_int8(float_model):
    """The float graph ONNX Runtime quantizes best (see ``onnx_rewrite.py``); says what changed.
    A graph the rewrites cannot take (foreign exports) is quantized as it is."""
    from edgecompress.compress.onnx_rewrite import prepare_for_int8

    try:
        model, rewrites = prepare_for_int8(float_model)
    except Exception as exc:  # noqa: BLE001 - an odd foreign graph is quantized as it is, only slower
        log.warning("ONNX int8: graph rewrites skipped (%s)", (str(exc).splitlines() or [type(exc).__name__])[0][:200])
        return float_model
    if rewrites:
        log.info("ONNX int8: %s", ", ".join(f"{n}× {what}" for what, n in rewrites.items()))
    return model


def _reader(base, calibration: ModelInputs, input_name: str, progress_file=None, batch_size: int = 16):
    from edgecompress._progress import progress_bar

    class Reader(base):
        """ONNX Runtime's one-method data-reader protocol over our calibration batches."""

        def __init__(self) -> None:
            self._batches = calibration.batches(batch_size)
            self._bar = progress_bar(total=len(calibration), desc="calibrating", unit="sample",
                             file=progress_file, disable=progress_file is None)

        def get_next(self):
            batch = next(self._batches, None)
            if batch is None:
                self._bar.close()
                return None
            self._bar.update(len(batch))
            return {input_name: batch}

    return Reader()
