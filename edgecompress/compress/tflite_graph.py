"""Read a .tflite flatbuffer's operators and tensor types without running it.

Why: the converter may silently leave an op in float even when only int8 builtins were asked for
(seen with SIN: it wraps it in DEQUANTIZE/QUANTIZE). A "full int8" model must be checked, and
tests and reports want op counts. Lazy flatbuffer access keeps this fast for 100 MB models.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import cache

from edgecompress._env import import_tensorflow

BOUNDARY_OPS = {"QUANTIZE", "DEQUANTIZE"}


@dataclass(frozen=True)
class OpInfo:
    name: str
    input_types: tuple[str, ...]
    output_types: tuple[str, ...]


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
            result.append(OpInfo(name, inputs, outputs))
    return result


def op_counts(data: bytes) -> Counter:
    return Counter(op.name for op in operators(data))


def float_ops(data: bytes) -> list[str]:
    """Ops that compute in float inside a model meant to be integer-only."""
    return sorted({op.name for op in operators(data) if op.name not in BOUNDARY_OPS and "FLOAT32" in op.output_types})
