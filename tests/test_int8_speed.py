"""Int8 that beats float, structure only (no timed asserts): the ONNX rewrites keep what the graph
computes, leave alone what they must not touch, and the benchmark's table reads its ratios right."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgecompress.compress.onnx_rewrite import fold_pads, prepare_for_int8, reduce_means_to_pools  # noqa: E402

RNG = np.random.default_rng(0)


def _model(nodes, initializers, out_shape):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        [numpy_helper.from_array(a, n) for n, a in initializers.items()],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _run(model, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def _pad_then(op: str, value: float = 0.0):
    inits = {"pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "value": np.array(value, np.float32),
             "w": RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)}  # fmt: skip
    pad = helper.make_node("Pad", ["x", "pads", "value"], ["p"], mode="constant")
    if op == "Conv":
        after = helper.make_node("Conv", ["p", "w"], ["y"], kernel_shape=[3, 3], strides=[2, 2])
        return _model([pad, after], inits, [1, 4, 4, 4])
    del inits["w"]
    after = helper.make_node("MaxPool", ["p"], ["y"], kernel_shape=[3, 3], strides=[2, 2])
    return _model([pad, after], inits, [1, 3, 4, 4])


def test_a_zero_pad_before_a_conv_folds_into_its_pads_and_computes_the_same():
    model = _pad_then("Conv")
    x = RNG.standard_normal((1, 3, 8, 8)).astype(np.float32)
    before = _run(model, x)
    assert fold_pads(model.graph) == 1
    assert [n.op_type for n in model.graph.node] == ["Conv"]
    conv = model.graph.node[0]
    assert next(a.ints for a in conv.attribute if a.name == "pads") == [1, 1, 1, 1]
    np.testing.assert_allclose(_run(model, x), before, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("op", "value"), [("MaxPool", 0.0), ("Conv", 1.0)])
def test_pads_that_are_not_a_convs_zero_padding_stay(op, value):
    """MaxPool pads with -inf, not zero; a non-zero pad value is not a Conv's padding."""
    model = _pad_then(op, value)
    assert fold_pads(model.graph) == 0
    assert model.graph.node[0].op_type == "Pad"


def test_spatial_reduce_mean_becomes_global_average_pool_with_the_same_result():
    node = helper.make_node("ReduceMean", ["x"], ["y"], axes=[2, 3], keepdims=1)
    model = _model([node], {}, [1, 3, 1, 1])
    x = RNG.standard_normal((1, 3, 8, 8)).astype(np.float32)
    before = _run(model, x)
    prepared, rewrites = prepare_for_int8(model)
    assert [n.op_type for n in prepared.graph.node] == ["GlobalAveragePool"]
    assert rewrites == {"ReduceMean → GlobalAveragePool": 1}
    np.testing.assert_allclose(_run(prepared, x), before, rtol=1e-5, atol=1e-6)


def test_a_reduce_mean_over_channels_stays():
    node = helper.make_node("ReduceMean", ["x"], ["y"], axes=[1], keepdims=1)
    model = _model([node], {}, [1, 1, 8, 8])
    assert reduce_means_to_pools(model.graph, {"x": 4}) == 0


def _preactivation_model():
    """ResNet v2's pre-activation: x + conv(x) → BatchNorm → ReLU → Conv (no conv before the BatchNorm)."""
    c = 3
    inits = {"w0": RNG.standard_normal((c, c, 3, 3)).astype(np.float32) * 0.3,
             "gamma": RNG.uniform(0.5, 2.0, c).astype(np.float32), "beta": RNG.standard_normal(c).astype(np.float32),
             "mean": RNG.standard_normal(c).astype(np.float32), "var": RNG.uniform(0.1, 3.0, c).astype(np.float32),
             "w1": RNG.standard_normal((4, c, 1, 1)).astype(np.float32)}  # fmt: skip
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["x", "c0"], ["sum"]),
             helper.make_node("BatchNormalization", ["sum", "gamma", "beta", "mean", "var"], ["bn"], epsilon=1e-3),
             helper.make_node("Relu", ["bn"], ["r"]), helper.make_node("Conv", ["r", "w1"], ["y"], kernel_shape=[1, 1])]  # fmt: skip
    return _model(nodes, inits, [1, 4, 8, 8])


def test_a_preactivation_batchnorm_becomes_the_depthwise_conv_it_equals():
    model = _preactivation_model()
    x = RNG.standard_normal((1, 3, 8, 8)).astype(np.float32)
    before = _run(model, x)
    prepared, rewrites = prepare_for_int8(model)
    assert rewrites == {"BatchNormalization → depthwise 1×1 Conv": 1}
    ops = [n.op_type for n in prepared.graph.node]
    assert "BatchNormalization" not in ops and ops.count("Conv") == 3
    np.testing.assert_allclose(_run(prepared, x), before, rtol=1e-4, atol=1e-4)


def test_a_preactivation_batchnorm_leaves_no_float_island_in_int8(tmp_path):
    from onnxruntime import quantization

    from edgecompress.compress.convert import ort_static_options
    from edgecompress.runtimes.onnxrt import float_islands

    prepared, _ = prepare_for_int8(_preactivation_model())
    onnx.save(prepared, str(tmp_path / "f.onnx"))
    batches = iter([{"x": RNG.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(4)])

    class Reader(quantization.CalibrationDataReader):
        def get_next(self):
            return next(batches, None)

    quantization.quantize_static(str(tmp_path / "f.onnx"), str(tmp_path / "q.onnx"), Reader(),
                                 **ort_static_options("int8", True))  # fmt: skip
    assert float_islands(tmp_path / "q.onnx") == {}


def test_onnx_int8_is_u8s8_qdq():
    from onnxruntime.quantization import QuantFormat, QuantType

    from edgecompress.compress.convert import ort_static_options

    options = ort_static_options("int8", per_channel=True)
    assert options["quant_format"] == QuantFormat.QDQ and options["per_channel"]
    assert options["activation_type"] == QuantType.QUInt8 and options["weight_type"] == QuantType.QInt8
    assert ort_static_options("int16x8", per_channel=False)["activation_type"] == QuantType.QInt16


def test_the_benchmark_table_reads_its_ratios_right():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "int8_speed.py"
    spec = importlib.util.spec_from_file_location("int8_speed", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    ms = {"litert float": 4.0, "litert stock": 2.0, "litert ours": 1.0, "ort float": 6.0, "ort stock": 8.0,
          "ort ours": 3.0}  # fmt: skip
    row = bench.row("m", ms)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[0] == "m" and len(cells) == bench.HEADER.splitlines()[0].count("|") - 1
    assert cells[2] == "2.00 (2.00×)" and cells[3] == "1.00 (4.00×)"  # speed-up over LiteRT's float
    assert cells[5] == "8.00 (0.75×)" and cells[6] == "3.00 (2.00×)"  # stock ORT slower than float
    assert cells[7] == "2.00×, 2.67×"  # ours vs stock


def _int8_with_a_float_island(tmp_path) -> Path:
    from onnxruntime import quantization

    from edgecompress.compress.convert import ort_static_options

    inits = {"w": RNG.standard_normal((4, 3, 3, 3)).astype(np.float32),
             "w2": RNG.standard_normal((4, 4, 1, 1)).astype(np.float32)}  # fmt: skip
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Sin", ["r"], ["s"]), helper.make_node("Conv", ["s", "w2"], ["y"], kernel_shape=[1, 1])]  # fmt: skip
    onnx.save(_model(nodes, inits, [1, 4, 6, 6]), str(tmp_path / "f.onnx"))
    batches = iter([{"x": RNG.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(4)])

    class Reader(quantization.CalibrationDataReader):
        def get_next(self):
            return next(batches, None)

    quantization.quantize_static(str(tmp_path / "f.onnx"), str(tmp_path / "q.onnx"), Reader(),
                                 **ort_static_options("int8", True))  # fmt: skip
    return tmp_path / "q.onnx"


def test_quantize_names_the_ops_onnx_runtime_still_runs_in_float(tmp_path):
    """A Sin between two convolutions has no int8 kernel: `compress quantize` names it (int8_path)."""
    from edgecompress.compress.convert import int8_path

    line = int8_path(_int8_with_a_float_island(tmp_path), "onnx")
    assert line is not None and "1× Sin" in line and "Conv" not in line


@pytest.mark.parametrize(("int8_ms", "noted"), [(2.0, True), (0.5, False)])
def test_bench_notes_an_int8_file_no_faster_than_its_float(tmp_path, int8_ms, noted):
    from types import SimpleNamespace

    from edgecompress.reports.bench import int8_not_faster
    from edgecompress.reports.records import BenchmarkRecord

    def artifact(step, params, path):
        lineage = (SimpleNamespace(step=step, params=params, source_sha256="root"),)
        return SimpleNamespace(metadata=SimpleNamespace(lineage=lineage), path=path, format=SimpleNamespace(value="onnx"))

    int8 = _int8_with_a_float_island(tmp_path)
    artifacts = [artifact("export", {"format": "onnx"}, tmp_path / "f.onnx"), artifact("quantize", {"mode": "int8"}, int8)]
    records = [BenchmarkRecord("m", v, "onnx", "onnxruntime", "1", "cpu", 2, 1, 1, latency_ms_p50=ms)
               for v, ms in (("float", 1.0), ("int8", int8_ms))]  # fmt: skip
    out = int8_not_faster(records, artifacts)
    assert out[0] == records[0]
    assert ("1× Sin" in out[1].note and "2.000 vs 1.000 ms" in out[1].note) if noted else out[1] == records[1]


@pytest.mark.parametrize("method", [None, "minmax"])
def test_int8_keeps_hard_swish_in_float_inside_xnnpack_whatever_the_calibration(method):
    """XNNPACK has no int8 HARD_SWISH: left int8, MobileNetV3 falls apart into ~20 parts. The plain
    path kept it in float (inside XNNPACK); files from our own ranges (--calibration, --keep-float)
    did not, and ran 3× slower (MobileNetV3-small, benchmarks/README.md)."""
    from edgecompress import api
    from edgecompress.compress.convert import RangeOptions, keras_to_tflite
    from edgecompress.compress.tflite_calibrate import Graph
    from edgecompress.models.zoo import build
    from edgecompress.runtimes.litert import xnnpack_delegation

    model, metadata = build("mobilenet_v3_small", input_size=32, alpha=0.35, classes=10)
    calibration = api.model_inputs("digits", metadata.inputs[0].shape, metadata.preprocessing, "train", samples=16)
    data = keras_to_tflite(model, "int8", calibration, ranges=RangeOptions(method=method) if method else None)
    delegation = xnnpack_delegation(data)
    assert delegation is not None and not delegation.splitting and delegation.partitions <= 2
    assert "HARD_SWISH" in {op.kind for op in Graph.read(data).ops}
