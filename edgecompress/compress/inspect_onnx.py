"""`compress inspect` for ONNX: the float graph beside a debug copy of the QDQ graph.

The debug copy exposes each quantized activation after its DequantizeLinear (the int8 value) and
adds, for each node whose weights were quantized, a twin reading the float weights from the float
model (ONNX Runtime's ``qdq_loss_debug`` compares the same pre/post-QDQ pairs). Where the quantizer
removed a ReLU/Clip (its range is folded into the Q/DQ pair before it), the float value compared is
the activation's output, and the twin gets the activation too.

The debug session runs without graph rewrites, so ONNX Runtime computes each quantized node in
float on dequantized values (simulation); the task metric is measured on the deployed (fused) model.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from edgecompress.calibration.data import ModelInputs
from edgecompress.compress.inspect import ErrorAccumulator, weight_stats
from edgecompress.compress.layermap import LayerMap
from edgecompress.compress.onnx_calibrate import OnnxCalibration, session_of, with_outputs
from edgecompress.errors import require

REMOVABLE = ("Relu", "Clip")
OUTPUT_SUFFIX = "_QuantizeLinear_Input"
BATCH = 16


def _weight_axis(node) -> int | None:
    """Output-channel axis of a node's weight initializer (input 1)."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "ConvTranspose":
        return 1
    if node.op_type == "MatMul":
        return 1
    if node.op_type == "Gemm":
        trans = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans else 1
    return None


def debug_graph(qdq, float_model) -> tuple[Any, list[tuple[str, str, str, str, Any]]]:
    """The QDQ model plus float-weight twins; and per quantized activation:
    (tensor, its dequantized value, the float model's name for it, the twin's output, the node)."""
    onnx = require("onnx", "onnx", "ONNX inspection")
    float_nodes = {n.name: n for n in float_model.graph.node}
    float_inits = {i.name: i for i in float_model.graph.initializer}
    q_of = {n.input[0]: n.output[0] for n in qdq.graph.node if n.op_type == "QuantizeLinear"}
    dq_of = {n.input[0]: n.output[0] for n in qdq.graph.node if n.op_type == "DequantizeLinear"}
    present = {n.name for n in qdq.graph.node}
    float_tensors = {t for n in float_model.graph.node for t in n.output} | {i.name for i in float_model.graph.input}
    removed = {n.input[0]: n for n in float_model.graph.node if n.op_type in REMOVABLE and n.name not in present}
    removed_outputs = {n.output[0]: n for n in removed.values()}
    debug = onnx.ModelProto()
    debug.CopyFrom(qdq)
    have = {i.name for i in debug.graph.initializer}

    def borrow(name: str) -> None:
        if name in float_inits and name not in have:
            debug.graph.initializer.append(float_inits[name])
            have.add(name)

    pairs = []
    for node in qdq.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        source = float_nodes.get(node.name)
        for tensor in node.output:
            if tensor not in q_of or q_of[tensor] not in dq_of:
                continue
            twin = tensor
            if source is not None and len(source.input) == len(node.input):
                swaps = [i for i, (a, b) in enumerate(zip(source.input, node.input, strict=True)) if a in float_inits and a != b]
                if swaps:
                    inputs = list(node.input)
                    for i in swaps:
                        inputs[i] = source.input[i]
                        borrow(source.input[i])
                    clone = onnx.helper.make_node(node.op_type, inputs, [f"{o}__twin" for o in node.output],
                                                  name=f"{node.name}__twin", domain=node.domain)  # fmt: skip
                    clone.attribute.extend(node.attribute)
                    debug.graph.node.append(clone)
                    twin = f"{tensor}__twin"
            compare = tensor
            if compare not in float_tensors:
                # A graph output: the quantizer renamed its producer's output "<name>_QuantizeLinear_Input".
                compare = compare.removesuffix(OUTPUT_SUFFIX)
                if compare not in float_tensors:
                    continue
            # The quantizer either keeps the producer's output name (then the activation read it) or
            # gives the producer the removed activation's output name.
            activation = removed.get(tensor) or removed_outputs.get(tensor)
            if activation is not None:
                compare = activation.output[0]
                for extra in activation.input[1:]:
                    borrow(extra)
                act = onnx.helper.make_node(activation.op_type, [twin, *activation.input[1:]], [f"{twin}__act"],
                                            name=f"{activation.name}__twin")  # fmt: skip
                act.attribute.extend(activation.attribute)
                debug.graph.node.append(act)
                twin = f"{twin}__act"
            pairs.append((tensor, dq_of[q_of[tensor]], compare, twin, node))
    return debug, pairs


def inspect_onnx(
    calibrated: OnnxCalibration,
    layer_map: LayerMap,
    samples: ModelInputs,
    mode: str = "int8",
    per_channel: bool = True,
    exclude: tuple[str, ...] = (),
    threads: int | None = None,
) -> tuple[list[dict[str, Any]], float]:
    onnx = require("onnx", "onnx", "ONNX inspection")
    from onnx import numpy_helper

    with tempfile.TemporaryDirectory(prefix="edgecompress-inspect-") as tmp:
        path = Path(tmp) / "q.onnx"
        calibrated.quantize(path, mode, per_channel, exclude)
        qdq = onnx.load(str(path))
    float_model = calibrated.float_model
    debug, pairs = debug_graph(qdq, float_model)
    outputs = list(dict.fromkeys(name for p in pairs for name in (p[1], p[3])))
    debug_session = session_of(with_outputs(debug, outputs), threads, optimize=False)
    float_names = list(dict.fromkeys(p[2] for p in pairs))
    float_session = session_of(with_outputs(float_model, float_names), threads, optimize=False)
    input_name = float_session.get_inputs()[0].name
    first_output = float_model.graph.output[0].name
    ranges = calibrated.ranges
    accumulators = [ErrorAccumulator(*ranges.get(p[0], (None, None))) for p in pairs]
    final = ErrorAccumulator()
    for x in samples.batches(BATCH):
        floats = dict(zip([first_output, *float_names], float_session.run([first_output, *float_names], {input_name: x}),
                          strict=True))  # fmt: skip
        debugs = dict(zip([first_output, *outputs], debug_session.run([first_output, *outputs], {input_name: x}),
                          strict=True))  # fmt: skip
        for (_, dq, compare, twin, _), acc in zip(pairs, accumulators, strict=True):
            acc.add(floats[compare], debugs[dq], debugs[twin])
        final.add(floats[first_output], debugs[first_output], None)
    inits = {i.name: i for i in float_model.graph.initializer}
    float_nodes = {n.name: n for n in float_model.graph.node}
    rows = []
    for depth, ((tensor, _, _, _, node), acc) in enumerate(zip(pairs, accumulators, strict=True)):
        layers = tuple(layer_map.layers_in(";".join([node.name, *node.output])))
        row: dict[str, Any] = {"layer": layers[-1] if layers else node.name, "layers": layers, "depth": depth,
                               "op": node.op_type, **acc.result()}  # fmt: skip
        lo, hi = ranges.get(tensor, (None, None))
        row["act_min"], row["act_max"] = lo, hi
        source = float_nodes.get(node.name)
        axis = _weight_axis(node)
        if source is not None and axis is not None and len(source.input) > 1 and source.input[1] in inits:
            kernel = numpy_helper.to_array(inits[source.input[1]])
            if kernel.ndim >= 2:
                row.update(weight_stats(kernel, axis, per_channel))
        rows.append(row)
    return rows, final.result()["sqnr_db"]

