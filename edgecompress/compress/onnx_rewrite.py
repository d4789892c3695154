"""Float ONNX rewrites that let ONNX Runtime's int8 kernels run the whole graph.

Why: a quantized ONNX model is only as fast as its slowest float island. Between int8 kernels,
every op ONNX Runtime cannot run in int8 costs a DequantizeLinear, the float op and a
QuantizeLinear, each a pass over the activation. In Keras exports these islands are common:

- ``Pad`` before a stride-2 convolution (Keras' ZeroPadding2D + "valid" conv): a zero Pad folds
  into the convolution's own ``pads`` (what ONNX Runtime's ``Pad_Fusion`` does for float graphs,
  but Q/DQ pairs hide the pattern from it);
- ``ReduceMean`` over height and width with kept dims (squeeze-and-excite, MobileNetV3): the same
  as ``GlobalAveragePool``, which has an int8 kernel;
- a ``BatchNormalization`` no convolution absorbed (ResNet v2's pre-activation BatchNorm → ReLU after
  each residual Add): the 1×1 depthwise ``Conv`` it equals, an int8 kernel with per-channel weights
  (exact for one value per channel) and the ReLU fused. ResNet-50 v2 had 17 such float islands.

The graph is first cleaned with ONNX Runtime's own basic-level optimizations (constant folding,
the transpose optimizer: tf2onnx leaves 128 Transposes in MobileNetV3-large). Hard-swish needs
nothing: written as Add, Clip, Mul, Mul it quantizes to int8 kernels whole; as one float
``HardSwish`` it measured no faster and left a float island per use.
"""

from __future__ import annotations

import logging
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def optimize_basic(model):
    """ONNX Runtime's basic (standard-ops-only, portable) optimizations, saved as a model.

    Without ``Pad_Fusion``: it also folds a zero Pad into a following MaxPool, which pads with -inf
    (see ``runtimes/onnxrt.optimizers_to_disable``); ``fold_pads`` does the Conv case safely."""
    import onnx
    import onnxruntime as ort

    from edgecompress.runtimes.onnxrt import session_options

    with tempfile.TemporaryDirectory(prefix="edgecompress-ort-") as tmp:
        source, target = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        onnx.save(model, str(source))
        options = session_options(None, optimized_to=target)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"], disabled_optimizers=["Pad_Fusion"])
        return onnx.load(str(target))


class _Graph:
    """Producers, consumers and constants of one graph, for small local rewrites."""

    def __init__(self, graph) -> None:
        from onnx import numpy_helper

        self.graph = graph
        self.constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                self.constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        self.producer = {out: node for node in graph.node for out in node.output}
        self.consumers: dict[str, list] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.outputs = {o.name for o in graph.output}

    def scalar(self, name: str) -> float | None:
        value = self.constants.get(name)
        return float(value.reshape(-1)[0]) if value is not None and value.size == 1 else None

    def only_consumer(self, name: str, op_type: str):
        users = self.consumers.get(name, [])
        if len(users) == 1 and users[0].op_type == op_type and name not in self.outputs:
            return users[0]
        return None


def _attr(node, name: str, default=None):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _set_ints(node, name: str, values) -> None:
    from onnx import helper

    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend([*kept, helper.make_attribute(name, [int(v) for v in values])])


def fold_pads(graph) -> int:
    """Zero ``Pad`` (spatial dims only) whose every consumer is a Conv: into the Convs' ``pads``."""
    g = _Graph(graph)
    folded = 0
    for pad in [n for n in graph.node if n.op_type == "Pad"]:
        if (_attr(pad, "mode", b"constant") or b"constant") not in (b"constant", "constant") or len(pad.input) < 2:
            continue
        pads = g.constants.get(pad.input[1])
        value = g.scalar(pad.input[2]) if len(pad.input) > 2 and pad.input[2] else 0.0
        users = g.consumers.get(pad.output[0], [])
        if pads is None or value != 0.0 or len(pad.input) > 3 or pads.size != 8 or not users:
            continue
        begin, end = pads[:4], pads[4:]
        if begin[:2].any() or end[:2].any() or (pads < 0).any() or pad.output[0] in g.outputs:
            continue
        if not all(u.op_type == "Conv" and u.input[0] == pad.output[0] and _attr(u, "auto_pad", b"NOTSET")
                   in (b"NOTSET", "NOTSET") for u in users):  # fmt: skip
            continue
        for conv in users:
            old = _attr(conv, "pads", [0, 0, 0, 0])
            _set_ints(conv, "pads", [old[0] + begin[2], old[1] + begin[3], old[2] + end[2], old[3] + end[3]])
            conv.input[0] = pad.input[0]
        graph.node.remove(pad)
        folded += 1
    return folded


def reduce_means_to_pools(graph, ranks: dict[str, int]) -> int:
    """``ReduceMean`` over axes (2, 3) of a rank-4 tensor with kept dims → ``GlobalAveragePool``."""
    g = _Graph(graph)
    rewritten = 0
    for node in graph.node:
        if node.op_type != "ReduceMean" or _attr(node, "keepdims", 1) != 1 or ranks.get(node.input[0]) != 4:
            continue
        axes = _attr(node, "axes")
        if axes is None and len(node.input) > 1:
            axes = g.constants.get(node.input[1])
        if axes is None or sorted(int(a) % 4 for a in np.asarray(axes).reshape(-1)) != [2, 3]:
            continue
        node.op_type = "GlobalAveragePool"
        del node.attribute[:]
        del node.input[1:]
        rewritten += 1
    return rewritten


def batchnorms_to_convs(graph, ranks: dict[str, int]) -> int:
    """A ``BatchNormalization`` no convolution absorbed (ResNet v2's pre-activation BatchNorm after
    the residual Add) → the 1×1 depthwise ``Conv`` it equals, which quantizes with per-channel
    weights and an int32 bias, and whose ReLU fuses into it."""
    from onnx import helper, numpy_helper

    g = _Graph(graph)
    rewritten = 0
    for node in list(graph.node):
        if node.op_type != "BatchNormalization" or len(node.output) != 1 or ranks.get(node.input[0]) != 4:
            continue
        if _attr(node, "training_mode", 0):
            continue
        params = [g.constants.get(name) for name in node.input[1:5]]
        if any(p is None or p.ndim != 1 for p in params) or len({p.size for p in params}) != 1:
            continue
        gamma, beta, mean, var = (p.astype(np.float64) for p in params)
        scale = gamma / np.sqrt(var + float(_attr(node, "epsilon", 1e-5)))
        channels = scale.size
        weight = numpy_helper.from_array(scale.reshape(channels, 1, 1, 1).astype(np.float32), f"{node.output[0]}_bn_weight")
        bias = numpy_helper.from_array((beta - mean * scale).astype(np.float32), f"{node.output[0]}_bn_bias")
        graph.initializer.extend([weight, bias])
        conv = helper.make_node("Conv", [node.input[0], weight.name, bias.name], list(node.output),
                                name=f"{node.name or node.output[0]}_as_conv", group=channels,
                                kernel_shape=[1, 1])  # fmt: skip
        position = list(graph.node).index(node)
        graph.node.remove(node)
        graph.node.insert(position, conv)
        rewritten += 1
    return rewritten


def prepare_for_int8(model):
    """The float model cleaned and rewritten for int8, and what was rewritten (op → count)."""
    import onnx

    model = optimize_basic(model)
    inferred = onnx.shape_inference.infer_shapes(model)
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in (*inferred.graph.value_info, *inferred.graph.input)
             if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape")}  # fmt: skip
    done = Counter()
    done["Pad folded into Conv"] = fold_pads(model.graph)
    done["ReduceMean → GlobalAveragePool"] = reduce_means_to_pools(model.graph, ranks)
    done["BatchNormalization → depthwise 1×1 Conv"] = batchnorms_to_convs(model.graph, ranks)
    onnx.checker.check_model(model)
    return model, {k: v for k, v in done.items() if v}
