"""TFLite int8 with activation ranges of our choosing, through the converter's own two steps.

The converter quantizes in two steps: a *calibrate-only* step writes a float model whose activation
tensors carry ``min``/``max`` fields, then the MLIR quantizer turns those into scales. We run the
first step on one sample (for the fields' layout), measure every activation of that float model on
the calibration data with our observers (``calibration/observers.py``), write their ranges into the
fields, and hand the file to the same quantizer with the same arguments (given the calibrator's own
ranges, the output has a plain conversion's ops, tensors, scales and weights: tested). TensorFlow's
QuantizationDebugger uses the same route. One calibration serves many quantizations: layers kept in
float (the quantizer's ``denylisted_nodes``) and the debug model of ``compress inspect`` reuse it.

Our ``minmax`` is not always the calibrator's: TFLite's calibrator records the projection outputs
that feed a residual ADD of MobileNetV2 with ranges 15–40× wider than Keras computes for them (seen
on the zoo model; we have not traced why). We read each tensor from an interpreter that preserves
all of them, and our ranges match the Keras layer outputs.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgecompress._env import import_tensorflow, native_output_silenced
from edgecompress.calibration.data import ModelInputs
from edgecompress.calibration.observers import DEFAULT_PERCENTILE, make_observer
from edgecompress.compress.layermap import LayerMap
from edgecompress.compress.tflite_graph import _schema
from edgecompress.errors import UnsupportedError, UsageError

log = logging.getLogger(__name__)

#: activations kept alive at once while observing (every intermediate tensor of a batch)
OBSERVE_BYTES = 256 * 2**20
#: ops whose output the converter ties to their input's scale, or fixes (so a range there is moot)
QUANTIZER_OWNED = {"SOFTMAX", "LOGISTIC", "TANH"}


@dataclass(frozen=True)
class GraphOp:
    index: int
    kind: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


@dataclass(frozen=True)
class Graph:
    """The first subgraph of a .tflite: ops in execution order and tensor names/constness."""

    ops: tuple[GraphOp, ...]
    names: tuple[str, ...]
    constant: frozenset[int]
    outputs: tuple[int, ...] = ()

    @classmethod
    def read(cls, data: bytes) -> Graph:
        schema, op_names, _ = _schema()
        model = schema.Model.GetRootAs(data, 0)
        graph = model.Subgraphs(0)
        names = tuple(graph.Tensors(i).Name().decode() for i in range(graph.TensorsLength()))
        constant = set()
        for i in range(graph.TensorsLength()):
            buffer = graph.Tensors(i).Buffer()
            if buffer > 0 and model.Buffers(buffer).DataLength() > 0:
                constant.add(i)
        ops = []
        for i in range(graph.OperatorsLength()):
            op = graph.Operators(i)
            code = model.OperatorCodes(op.OpcodeIndex())
            kind = op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "?")
            if kind == "CUSTOM":
                kind = (code.CustomCode() or b"CUSTOM").decode()
            ops.append(GraphOp(i, kind, tuple(op.InputsAsNumpy().tolist()) if op.InputsLength() else (),
                               tuple(op.OutputsAsNumpy().tolist()) if op.OutputsLength() else ()))  # fmt: skip
        outputs = tuple(graph.OutputsAsNumpy().tolist()) if graph.OutputsLength() else ()
        return cls(tuple(ops), names, frozenset(constant), outputs)

    def layers_of(self, tensor: int, layer_map: LayerMap) -> list[str]:
        """Keras layers named by a tensor; a renamed model output ("Identity_1") by its position."""
        found = layer_map.layers_in(self.names[tensor])
        if not found and tensor in self.outputs and len(layer_map.outputs) == len(self.outputs):
            found = [layer_map.outputs[self.outputs.index(tensor)]]
        return found

    def producer(self) -> dict[int, GraphOp]:
        return {t: op for op in self.ops for t in op.outputs}


def range_fields(data: bytes) -> dict[int, tuple[float, float]]:
    """Tensor index → the (min, max) the calibrate-only step stored with it."""
    schema, _, _ = _schema()
    graph = schema.Model.GetRootAs(data, 0).Subgraphs(0)
    ranges = {}
    for i in range(graph.TensorsLength()):
        quantization = graph.Tensors(i).Quantization()
        if quantization is not None and quantization.MinLength() == 1 and quantization.MaxLength() == 1:
            ranges[i] = (float(quantization.Min(0)), float(quantization.Max(0)))
    return ranges


def write_ranges(data: bytes, ranges: dict[int, tuple[float, float]]) -> bytes:
    """A copy of a calibrated model with new (min, max) fields; written in place in the flatbuffer
    (the fields are fixed-size float vectors, so nothing else moves)."""
    schema, _, _ = _schema()
    out = bytearray(data)
    graph = schema.Model.GetRootAs(out, 0).Subgraphs(0)
    for index, (lo, hi) in ranges.items():
        table = graph.Tensors(index).Quantization()._tab  # noqa: SLF001 - flatbuffers' generated accessor
        for field_offset, value in ((4, lo), (6, hi)):  # vtable slots of `min` and `max`
            start = table.Vector(table.Offset(field_offset))
            struct.pack_into("<f", out, start, float(value))
    return bytes(out)


@dataclass(frozen=True)
class Calibrated:
    """A float TFLite model carrying our activation ranges, ready for the quantizer (many times)."""

    data: bytes
    method: str
    params: dict[str, Any]
    #: tensor name → (lo, hi) as written
    ranges: dict[str, tuple[float, float]]
    samples: int
    seconds: float
    graph: Graph = field(repr=False, default=None)  # type: ignore[assignment]

    def op_outputs_of(self, layers: Iterable[str], layer_map: LayerMap, strict: bool = False) -> list[str]:
        """Output tensor names of every op a set of Keras layers took part in (fused ones too).

        ``strict``: a layer with no op of its own (a Reshape the converter removed, an input) is an error.
        """
        wanted = set(layers)
        extended = set(layer_map.kept_with_reshapes(wanted))
        names, found = [], set()
        for op in self.graph.ops:
            for t in op.outputs:
                hit = extended & set(self.graph.layers_of(t, layer_map))
                if hit:
                    names.append(self.graph.names[t])
                    found |= hit & wanted
        missing = sorted(wanted - found, key=layer_map.order.get)
        if strict and missing:
            raise UsageError(
                f"--keep-float: layer '{missing[0]}' has no op of its own in the TFLite graph (removed or folded)",
                "keep the layer it was folded into instead (`compress inspect` lists the layers with ops)",
            )
        return names

    def quantize(
        self, per_channel: bool = True, io: str = "float", keep_float: Sequence[str] = (), debug: bool = False,
        keep_ops: Sequence[str] = (),
    ) -> bytes:
        """The MLIR quantizer with the converter's own arguments; ``keep_float`` are op output
        tensor names left in float, ``keep_ops`` op types (e.g. HARD_SWISH); ``debug`` adds
        NumericVerify ops (float op beside each int8 op)."""
        tf = import_tensorflow()
        from tensorflow.lite.python import convert as tf_convert

        types = {"float": tf.float32, "int8": tf.int8, "uint8": tf.uint8}
        try:
            with native_output_silenced():
                data = tf_convert.mlir_quantize(
                    self.data,
                    not per_channel,
                    fully_quantize=False,
                    input_data_type=types[io],
                    output_data_type=types[io],
                    enable_numeric_verify=debug,
                    denylisted_nodes=list(keep_float) or None,
                    denylisted_ops=list(keep_ops) or None,
                )
        except Exception as exc:  # noqa: BLE001 - the quantizer raises ConverterError and RuntimeError
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise UnsupportedError(f"int8 quantization failed: {first}", "run with --debug for details") from exc
        return _deduplicate(data)


def _deduplicate(data: bytes) -> bytes:
    """What the converter does after quantizing: identical read-only buffers stored once."""
    try:
        from tensorflow.lite.python.lite import _deduplicate_readonly_buffers
    except ImportError:  # a TensorFlow without it: the file is only a little larger
        return bytes(data)
    return bytes(_deduplicate_readonly_buffers(data))


def calibrate(
    converter,
    calibration: ModelInputs,
    method: str | None = None,
    percentile: float = DEFAULT_PERCENTILE,
    progress_file=None,
    threads: int | None = None,
) -> Calibrated:
    """The calibrate-only conversion: with ``method`` None the converter's own calibrator over every
    sample (exactly what a plain conversion uses); else one sample for the layout, then our observers."""
    started = time.perf_counter()
    converter._experimental_calibrate_only = True  # noqa: SLF001 - the converter's documented debug hook
    if method is None:
        converter.representative_dataset = calibration.representative_dataset(progress_file)
    else:
        first = next(calibration.batches(1))

        def one_sample():
            yield [first[:1]]

        converter.representative_dataset = one_sample
    with native_output_silenced():
        layout = bytes(converter.convert())
    graph = Graph.read(layout)
    fields = range_fields(layout)
    params = {"percentile": percentile} if method == "percentile" else {}
    if method is None:
        ranges, data = fields, layout
    else:
        observers = {i: make_observer(method, **params) for i in fields}
        observe(layout, calibration, observers, progress_file, threads)
        ranges = {i: tuple(float(v) for v in obs.range()) for i, obs in observers.items()}
        data = write_ranges(layout, ranges)
    return Calibrated(
        data, method or "converter", params, {graph.names[i]: r for i, r in ranges.items()}, len(calibration),
        time.perf_counter() - started, graph,
    )  # fmt: skip


def float_interpreter(data: bytes, batch: int, threads: int | None = None):
    """An interpreter that keeps every intermediate tensor readable (no delegate), at a batch size."""
    from edgecompress.runtimes.litert import interpreter_class

    cls, _ = interpreter_class()
    with native_output_silenced():
        interpreter = cls(model_content=data, experimental_preserve_all_tensors=True, num_threads=threads)
        detail = interpreter.get_input_details()[0]
        interpreter.resize_tensor_input(detail["index"], [batch, *detail["shape"][1:]])
        interpreter.allocate_tensors()
    return interpreter


def batch_size_for(data: bytes, limit: int = 32) -> int:
    """Samples per batch so that every preserved activation of a batch fits OBSERVE_BYTES."""
    schema, _, _ = _schema()
    graph = schema.Model.GetRootAs(data, 0).Subgraphs(0)
    per_sample = 0
    for i in range(graph.TensorsLength()):
        tensor = graph.Tensors(i)
        shape = [int(tensor.Shape(k)) for k in range(tensor.ShapeLength())]
        if shape:
            per_sample += 4 * int(np.prod([max(d, 1) for d in shape[1:]]))
    return int(np.clip(OBSERVE_BYTES // max(per_sample, 1), 1, limit))


def run_batches(interpreter, calibration: ModelInputs, batch: int) -> Iterable[int]:
    """Invoke on each batch (the last one padded by repetition); yields how many rows are real."""
    detail = interpreter.get_input_details()[0]
    for x in calibration.batches(batch):
        real = len(x)
        if real < batch:
            x = np.concatenate([x, np.repeat(x[-1:], batch - real, axis=0)])
        interpreter.set_tensor(detail["index"], x.astype(np.float32))
        interpreter.invoke()
        yield real


def observe(data: bytes, calibration: ModelInputs, observers: dict, progress_file=None, threads=None) -> None:
    """Feed every observed tensor of a float model, batch by batch, to its observer."""
    from edgecompress._progress import progress_bar

    batch = batch_size_for(data)
    interpreter = float_interpreter(data, batch, threads)
    with progress_bar(total=len(calibration), desc="calibrating", unit="sample", file=progress_file,
              disable=progress_file is None) as bar:  # fmt: skip
        for real in run_batches(interpreter, calibration, batch):
            for index, observer in observers.items():
                observer.update(interpreter.tensor(index)()[:real])
            bar.update(real)
