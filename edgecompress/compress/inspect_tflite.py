"""`compress inspect` for TFLite: the float model and the converter's debug model, side by side.

The debug model (``mlir_quantize(enable_numeric_verify=True)``) is the int8 model with a float copy
of every quantized op fed the same dequantized inputs; a ``NumericVerify`` op joins each int8 output
(input 0) to its float twin (input 1). The float model is the calibrate-only one: its tensors have
the same names, so the end-to-end float value of each int8 output is looked up by name.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgecompress.calibration.data import ModelInputs
from edgecompress.compress.inspect import ErrorAccumulator, weight_stats
from edgecompress.compress.layermap import LayerMap
from edgecompress.compress.tflite_calibrate import Calibrated, Graph, batch_size_for, float_interpreter
from edgecompress.compress.tflite_graph import _schema

#: op → (weights input, output-channel axis of the stored kernel)
WEIGHT_INPUTS = {"CONV_2D": (1, 0), "DEPTHWISE_CONV_2D": (1, 3), "FULLY_CONNECTED": (1, 0), "TRANSPOSE_CONV": (1, 0)}


def constant(data: bytes, index: int) -> np.ndarray | None:
    """A float32 constant tensor of a .tflite, or None."""
    schema, _, types = _schema()
    model = schema.Model.GetRootAs(data, 0)
    tensor = model.Subgraphs(0).Tensors(index)
    if types.get(tensor.Type()) != "FLOAT32" or tensor.Buffer() <= 0:
        return None
    raw = model.Buffers(tensor.Buffer()).DataAsNumpy()
    if isinstance(raw, int) or not len(raw):
        return None
    shape = tuple(int(tensor.Shape(k)) for k in range(tensor.ShapeLength()))
    return np.frombuffer(raw.tobytes(), dtype=np.float32).reshape(shape)


def inspect_tflite(
    calibrated: Calibrated,
    layer_map: LayerMap,
    samples: ModelInputs,
    per_channel: bool = True,
    keep_float: tuple[str, ...] = (),
    threads: int | None = None,
) -> tuple[list[dict[str, Any]], float]:
    """Rows (one per int8 op, in execution order) and the SQNR of the model's first output."""
    debug = calibrated.quantize(per_channel, "float", keep_float, debug=True)
    graph, float_graph = Graph.read(debug), calibrated.graph
    float_index = {name: i for i, name in enumerate(float_graph.names)}
    float_producer = float_graph.producer()
    producer = graph.producer()
    pairs = []  # (int8 tensor in debug, float twin in debug, same tensor in the float model)
    for op in graph.ops:
        if op.kind == "NumericVerify" and len(op.inputs) >= 2:
            name = graph.names[op.inputs[1]]
            pairs.append((op.inputs[0], op.inputs[1], float_index.get(name)))
    batch = min(batch_size_for(debug), batch_size_for(calibrated.data))
    float_run = float_interpreter(calibrated.data, batch, threads)
    debug_run = float_interpreter(debug, batch, threads)
    details = {d["index"]: d for d in debug_run.get_tensor_details()}
    quant = {q: details[q]["quantization"] for q, _, _ in pairs}
    accumulators = []
    for _, _, f in pairs:
        lo, hi = calibrated.ranges.get(float_graph.names[f], (None, None)) if f is not None else (None, None)
        accumulators.append(ErrorAccumulator(lo, hi))
    output = float_run.get_output_details()[0]["index"]
    debug_output = debug_run.get_output_details()[0]["index"]
    final = ErrorAccumulator()
    detail = debug_run.get_input_details()[0]
    for real, x in _batches(float_run, samples, batch):
        debug_run.set_tensor(detail["index"], x)
        debug_run.invoke()
        for (q, twin, f), acc in zip(pairs, accumulators, strict=True):
            scale, zero = quant[q]
            value = (debug_run.tensor(q)()[:real].astype(np.float32) - zero) * (scale or 1.0)
            # Copies: a view of an interpreter's memory still alive at its next invoke() is refused.
            twin_value = np.array(debug_run.tensor(twin)()[:real])
            reference = np.array(float_run.tensor(f)()[:real]) if f is not None else twin_value
            acc.add(reference, value, twin_value)
        final.add(np.array(float_run.tensor(output)()[:real]), np.array(debug_run.tensor(debug_output)()[:real]), None)
    rows = []
    for depth, ((q, twin, f), acc) in enumerate(zip(pairs, accumulators, strict=True)):
        name = graph.names[twin]
        layers = tuple(float_graph.layers_of(f, layer_map) if f is not None else layer_map.layers_in(name))
        if not layers:
            layers = _reads_from(twin, graph, producer, layer_map)
        row: dict[str, Any] = {
            "layer": layers[-1] if layers else name, "layers": layers, "depth": depth,
            "op": producer[q].kind if q in producer else "?", **acc.result(),
        }  # fmt: skip
        if f is not None:
            lo, hi = calibrated.ranges.get(name, (None, None))
            row["act_min"], row["act_max"] = lo, hi
            source = float_producer.get(f)
            if source is not None and source.kind in WEIGHT_INPUTS:
                at, axis = WEIGHT_INPUTS[source.kind]
                kernel = constant(calibrated.data, source.inputs[at]) if len(source.inputs) > at else None
                if kernel is not None:
                    row.update(weight_stats(kernel, axis, per_channel))
        rows.append(row)
    return rows, final.result()["sqnr_db"]


def _reads_from(tensor: int, graph: Graph, producer: dict, layer_map: LayerMap, hops: int = 4) -> tuple[str, ...]:
    """An output the converter renamed ("Identity"): it belongs to the layer it reads from (a softmax
    fused into a Dense layer, say), found by walking back through Quantize/Dequantize ops."""
    frontier = [tensor]
    for _ in range(hops):
        frontier = [i for t in frontier if t in producer for i in producer[t].inputs if i >= 0 and i not in graph.constant]
        for t in frontier:
            found = layer_map.layers_in(graph.names[t])
            if found:
                return (found[-1],)
    return ()


def _batches(interpreter, samples: ModelInputs, batch: int):
    """(real rows, padded batch) after running the float interpreter on it."""
    detail = interpreter.get_input_details()[0]
    for x in samples.batches(batch):
        real = len(x)
        if real < batch:
            x = np.concatenate([x, np.repeat(x[-1:], batch - real, axis=0)])
        x = x.astype(np.float32)
        interpreter.set_tensor(detail["index"], x)
        interpreter.invoke()
        yield real, x

