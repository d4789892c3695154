"""Read a .tflite flatbuffer's operators and tensor types without running it.

Why: the converter may silently leave an op in float even when only int8 builtins were asked for
(seen with SIN: it wraps it in DEQUANTIZE/QUANTIZE). A "full int8" model must be checked, and
tests and reports want op counts. Lazy flatbuffer access keeps this fast for 100 MB models.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

import numpy as np

from edgecompress._env import import_tensorflow

BOUNDARY_OPS = {"QUANTIZE", "DEQUANTIZE"}


@dataclass(frozen=True)
class OpInfo:
    name: str
    input_types: tuple[str, ...]
    output_types: tuple[str, ...]
    output_names: tuple[str, ...] = ()


@cache
def _schema():
    import_tensorflow()
    # The TFLite schema's generated Python reader ships with TensorFlow (used by its own tools).
    from tensorflow.lite.python import schema_py_generated as schema

    ops = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    return schema, ops, types


def operators(data: bytes) -> list[OpInfo]:
    schema, op_names, type_names = _schema()
    model = schema.Model.GetRootAs(data, 0)
    result = []
    for g in range(model.SubgraphsLength()):
        graph = model.Subgraphs(g)

        def kind(index: int, graph=graph) -> str:
            return type_names.get(graph.Tensors(index).Type(), "?") if index >= 0 else "-"

        for i in range(graph.OperatorsLength()):
            op = graph.Operators(i)
            code = model.OperatorCodes(op.OpcodeIndex())
            builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            name = op_names.get(builtin, str(builtin))
            if name == "CUSTOM":
                name = (code.CustomCode() or b"CUSTOM").decode()
            inputs = tuple(kind(op.Inputs(j)) for j in range(op.InputsLength()))
            outputs = tuple(kind(op.Outputs(j)) for j in range(op.OutputsLength()))
            names = tuple(
                graph.Tensors(op.Outputs(j)).Name().decode() for j in range(op.OutputsLength()) if op.Outputs(j) >= 0
            )
            result.append(OpInfo(name, inputs, outputs, names))
    return result


def op_counts(data: bytes) -> Counter:
    return Counter(op.name for op in operators(data))


def float_ops(data: bytes, allowed: Iterable[str] = ()) -> list[str]:
    """Ops that compute in float inside a model meant to be integer-only (except those whose output
    tensors are named in ``allowed``: layers kept in float on purpose)."""
    allowed = set(allowed)
    return sorted({op.name for op in float_op_list(data) if not allowed & set(op.output_names)})


def float_op_list(data: bytes) -> list[OpInfo]:
    """Every op computing in float (Quantize/Dequantize at the int8 boundaries aside)."""
    return [op for op in operators(data) if op.name not in BOUNDARY_OPS and "FLOAT32" in op.output_types]


#: op → how its multiply-accumulates follow from (output shape, weight shape, input shape), per sample.
_MAC_RULES = {
    # weights (O, kh, kw, I), output (N, H, W, O)
    "CONV_2D": lambda out, w, inp: _prod(out[1:]) * _prod(w[1:]),
    # weights (1, kh, kw, O): one kh×kw window per output value
    "DEPTHWISE_CONV_2D": lambda out, w, inp: _prod(out[1:]) * w[1] * w[2],
    # weights (O, I)
    "FULLY_CONNECTED": lambda out, w, inp: (_prod(out) // max(1, out[-1])) // max(1, out[0]) * w[0] * w[1],
    # weights (O, kh, kw, I), data input (N, h, w, I): every input value is spread over a kh×kw×O window
    "TRANSPOSE_CONV": lambda out, w, inp: _prod(inp[1:]) * w[0] * w[1] * w[2],
}
# LCE's binary convolutions are left out: their bit-packed XNOR-popcount MACs cost a small fraction
# of an int8 MAC on ARM, so adding them to the same total would overstate a binarized model's cost.
#: which operator input holds the weights, and which the data, for each rule
_MAC_INPUTS = {"TRANSPOSE_CONV": (1, 2)}


def _prod(shape) -> int:
    result = 1
    for d in shape:
        result *= max(1, int(d))
    return result


def estimate_macs(data: bytes) -> dict[str, int]:
    """Multiply-accumulates per sample of the conv / fully-connected ops, by op name.

    Why an estimate: element-wise ops, pooling and resizes are left out; they are a few percent of
    a CNN's arithmetic. Enough to tell whether an input size is far beyond a device's budget.
    """
    schema, op_names, _ = _schema()
    model = schema.Model.GetRootAs(data, 0)
    totals: Counter = Counter()
    for g in range(model.SubgraphsLength()):
        graph = model.Subgraphs(g)

        def shape(index: int, graph=graph) -> tuple[int, ...]:
            tensor = graph.Tensors(index)
            return tuple(int(tensor.Shape(k)) for k in range(tensor.ShapeLength()))

        for i in range(graph.OperatorsLength()):
            op = graph.Operators(i)
            code = model.OperatorCodes(op.OpcodeIndex())
            name = op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "")
            if name == "CUSTOM":
                name = (code.CustomCode() or b"").decode()
            if name not in _MAC_RULES or op.OutputsLength() < 1:
                continue
            weight_at, data_at = _MAC_INPUTS.get(name, (1, 0))
            if op.InputsLength() <= max(weight_at, data_at):
                continue
            out, weights, inp = shape(op.Outputs(0)), shape(op.Inputs(weight_at)), shape(op.Inputs(data_at))
            if len(out) < 2 or len(weights) < 2:
                continue
            try:
                totals[name] += int(_MAC_RULES[name](out, weights, inp))
            except IndexError:
                continue  # an unusual layout: leave the op out of the estimate rather than guess
    return dict(totals)


def add_signature(data: bytes, input_names: list[str], output_names: list[str], key: str = "serving_default") -> bytes:
    """Give a model converted from a concrete function the SignatureDef a Keras conversion would have.

    Inputs and outputs are named after the Keras model's, in its order, so LiteRT's signature
    runner (what Android apps call) and our sessions find them by name.
    """
    schema, _, _ = _schema()
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    graph = model.subgraphs[0]
    if len(graph.inputs) != len(input_names) or len(graph.outputs) != len(output_names):
        return data  # unexpected structure: keep the converter's model untouched rather than guess

    def tensor_map(name: str, index: int):
        entry = schema.TensorMapT()
        entry.name, entry.tensorIndex = name, int(index)
        return entry

    signature = schema.SignatureDefT()
    signature.signatureKey = key
    signature.subgraphIndex = 0
    signature.inputs = [tensor_map(n, i) for n, i in zip(input_names, graph.inputs, strict=True)]
    signature.outputs = [tensor_map(n, i) for n, i in zip(output_names, graph.outputs, strict=True)]
    model.signatureDefs = [signature]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


_NUMPY_TYPES = {"INT8": "int8", "UINT8": "uint8", "INT16": "int16", "INT32": "int32", "FLOAT32": "float32", "FLOAT16": "float16"}


def weight_tensors(data: bytes) -> list[tuple[str, np.ndarray]]:
    """The constant weights of every conv / fully-connected op in a .tflite, as stored (op name, array).

    Shared buffers are listed once. Layouts are TFLite's: output channels first for CONV_2D,
    TRANSPOSE_CONV and FULLY_CONNECTED, last for DEPTHWISE_CONV_2D.
    """
    schema, op_names, type_names = _schema()
    model = schema.Model.GetRootAs(data, 0)
    result = []
    seen: set[int] = set()
    for g in range(model.SubgraphsLength()):
        graph = model.Subgraphs(g)
        for i in range(graph.OperatorsLength()):
            op = graph.Operators(i)
            code = model.OperatorCodes(op.OpcodeIndex())
            name = op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "")
            weight_at, _ = _MAC_INPUTS.get(name, (1, 0))
            if name not in _MAC_RULES or op.InputsLength() <= weight_at:
                continue
            tensor = graph.Tensors(op.Inputs(weight_at))
            dtype = _NUMPY_TYPES.get(type_names.get(tensor.Type(), ""))
            if dtype is None or tensor.Buffer() in seen:
                continue
            raw = model.Buffers(tensor.Buffer()).DataAsNumpy()
            if isinstance(raw, int) or not len(raw):
                continue  # not a constant (weights computed at run time) or stored outside the flatbuffer
            seen.add(tensor.Buffer())
            values = np.frombuffer(raw.tobytes(), dtype=dtype)
            shape = tuple(int(tensor.Shape(k)) for k in range(tensor.ShapeLength()))
            result.append((name, values.reshape(shape) if int(np.prod(shape)) == values.size else values))
    return result


def weight_sparsity(data: bytes) -> float:
    """Fraction of exact zeros in the conv / fully-connected weights stored in a .tflite.

    Why: a pruned model must stay pruned through QAT and conversion; this reads what was written,
    not what the Keras model held. (Quantized weights are symmetric, so a zero stays the byte 0.)
    """
    arrays = [values for _, values in weight_tensors(data)]
    total = sum(a.size for a in arrays)
    return sum(int(np.sum(a == 0)) for a in arrays) / total if total else 0.0


def max_unique_per_output_channel(data: bytes, ops: tuple[str, ...] = ("CONV_2D", "FULLY_CONNECTED")) -> int:
    """Largest count of distinct stored values in one output channel of a conv / dense weight tensor.

    Why per output channel: int8 kernels have one scale per output channel, so a kernel clustered to
    K shared values (one codebook per layer) holds at most K values per channel after conversion,
    not K per tensor.
    """
    counts = [len(np.unique(values[c])) for name, values in weight_tensors(data) if name in ops and values.ndim >= 2
              for c in range(values.shape[0])]  # fmt: skip
    return max(counts, default=0)


#: op → (data input, weights input, bias input)
_BIAS_INPUTS = {"CONV_2D": (0, 1, 2), "DEPTHWISE_CONV_2D": (0, 1, 2), "FULLY_CONNECTED": (0, 1, 2),
                "TRANSPOSE_CONV": (2, 1, 3)}  # fmt: skip


def bias_scale_errors(data: bytes, tolerance: float = 1e-4) -> dict[str, float]:
    """Ops whose int32 bias scale is not input scale × weight scale, with the worst relative error.

    Why: TFLite's integer kernels add the int32 bias to the accumulator as if it had exactly that
    scale, and never read the scale stored with it. A converter that quantizes a bias against one
    input scale and then gives the input another (seen after QAT, where a max-pool output had both
    a calibrated range and its fake-quantized input's) writes a file whose biases are silently
    multiplied; every weight looks right. An integer model must have none of these.
    """
    schema, op_names, type_names = _schema()
    model = schema.Model.GetRootAs(data, 0)
    errors: dict[str, float] = {}
    for g in range(model.SubgraphsLength()):
        graph = model.Subgraphs(g)

        def scales(index: int, graph=graph) -> np.ndarray | None:
            quantization = graph.Tensors(index).Quantization() if index >= 0 else None
            if quantization is None or quantization.ScaleLength() == 0:
                return None
            return quantization.ScaleAsNumpy().astype(np.float64)

        for i in range(graph.OperatorsLength()):
            op = graph.Operators(i)
            code = model.OperatorCodes(op.OpcodeIndex())
            name = op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "")
            at = _BIAS_INPUTS.get(name)
            if at is None or op.InputsLength() <= max(at) or op.Inputs(at[2]) < 0:
                continue
            if type_names.get(graph.Tensors(op.Inputs(at[2])).Type()) != "INT32":
                continue
            s_in, s_w, s_b = (scales(op.Inputs(k)) for k in at)
            if s_in is None or s_w is None or s_b is None or len(s_in) != 1:
                continue
            expected = s_in[0] * s_w
            worst = float(np.max(np.abs(s_b / np.broadcast_to(expected, s_b.shape) - 1.0)))
            if worst > tolerance:
                errors[f"{name} {graph.Tensors(op.Outputs(0)).Name().decode()}"] = worst
    return errors
