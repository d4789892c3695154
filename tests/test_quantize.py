"""Post-training quantization: every mode and format, checked on structure and numerics."""

from collections import Counter

import numpy as np
import pytest

from edgecompress import api
from edgecompress.artifacts import ModelFormat, sha256_of
from edgecompress.compress.tflite_graph import float_ops, op_counts
from edgecompress.errors import DataError, UnsupportedError, UsageError
from edgecompress.runtimes import open_session

TFLITE_MODES = ["dynamic", "float16", "int8", "int16x8"]
ONNX_MODES = ["dynamic", "float16", "int8", "int16x8"]


@pytest.fixture(scope="module")
def float_tflite(workdir, tiny_classifier):
    return api.export(tiny_classifier, workdir / "tiny.float.tflite").output.path


@pytest.fixture(scope="module")
def source_hash(tiny_classifier):
    return sha256_of(tiny_classifier)


@pytest.mark.parametrize("mode", TFLITE_MODES)
def test_tflite_modes(workdir, tiny_classifier, float_tflite, source_hash, mode):
    calib = "digits" if mode in ("int8", "int16x8") else None
    report = api.quantize(tiny_classifier, workdir / f"q.{mode}.tflite", mode=mode, calib=calib, eval="digits")
    output = report.output
    assert output.format is ModelFormat.TFLITE and output.path.exists()
    assert sha256_of(tiny_classifier) == source_hash, "the input file must never change"
    step = output.metadata.lineage[-1]
    assert step.step == "quantize" and step.params["mode"] == mode and step.source_sha256 == source_hash
    assert report.report.check.passed
    ratio = float_tflite.stat().st_size / output.path.stat().st_size
    assert ratio > {"dynamic": 2.3, "float16": 1.9, "int8": 2.3, "int16x8": 2.0}[mode]
    source, quantized = report.evaluation.source.metrics, report.evaluation.output.metrics
    assert report.evaluation.output.runtime == "litert"
    assert source["top1"] > 0.5, "the fixture model should have learned something"
    assert abs(quantized["top1"] - source["top1"]) <= 0.03


def test_full_int8_graph_is_integer_only(tiny_int8, float_tflite):
    data = tiny_int8.read_bytes()
    assert float_ops(data) == []
    counts, float_counts = op_counts(data), op_counts(float_tflite.read_bytes())
    assert counts["CONV_2D"] == float_counts["CONV_2D"] > 0
    assert counts["DEPTHWISE_CONV_2D"] == float_counts["DEPTHWISE_CONV_2D"] > 0
    assert counts["QUANTIZE"] == 1 and counts["DEQUANTIZE"] == 1  # float I/O: one at each boundary


@pytest.mark.parametrize("io", ["int8", "uint8"])
def test_integer_io_is_handled_by_the_session(workdir, tiny_classifier, tiny_int8, io):
    path = api.quantize(tiny_classifier, workdir / f"io.{io}.tflite", mode="int8", calib="digits", io=io).output
    x = api.model_inputs("digits", (32, 32, 3), path.metadata.preprocessing, samples=16).array()
    with open_session(path) as session, open_session(api.load(tiny_int8)) as reference:
        assert session.inputs[0].dtype == io and session.outputs[0].dtype == io
        assert session.inputs[0].scale > 0
        got, expected = session.predict(x), reference.predict(x)
    assert got.dtype == np.float32
    assert np.mean(np.argmax(got, 1) == np.argmax(expected, 1)) >= 0.9


def test_per_tensor_uses_one_scale_per_weight(workdir, tiny_classifier, tiny_int8):
    from ai_edge_litert.interpreter import Interpreter

    per_tensor = api.quantize(
        tiny_classifier, workdir / "pt.tflite", mode="int8", calib="digits", per_channel=False
    ).output.path

    def max_scales(path):
        interpreter = Interpreter(model_path=str(path))
        return max(len(t["quantization_parameters"]["scales"]) for t in interpreter.get_tensor_details())

    assert max_scales(per_tensor) == 1
    assert max_scales(tiny_int8) > 1


@pytest.mark.parametrize("mode", ONNX_MODES)
def test_onnx_modes(workdir, tiny_classifier, mode):
    import onnx

    calib = "digits" if mode in ("int8", "int16x8") else None
    report = api.quantize(tiny_classifier, workdir / f"q.{mode}.onnx", mode=mode, format="onnx", calib=calib, eval="digits")
    assert report.output.format is ModelFormat.ONNX
    model = onnx.load(str(report.output.path))
    onnx.checker.check_model(model)
    ops = Counter(node.op_type for node in model.graph.node)
    expected_op = {"dynamic": "ConvInteger", "int8": "QuantizeLinear", "int16x8": "QuantizeLinear", "float16": "Cast"}
    assert ops[expected_op[mode]] > 0, ops
    if mode == "float16":
        assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in model.graph.initializer)
    source, quantized = report.evaluation.source.metrics, report.evaluation.output.metrics
    assert abs(quantized["top1"] - source["top1"]) <= 0.03


def test_onnx_export_is_reused_until_the_weights_change():
    import tf_keras

    from edgecompress.compress.convert import keras_to_onnx

    def first_weights(proto) -> bytes:
        return max((init for init in proto.graph.initializer), key=lambda init: len(init.raw_data)).raw_data

    model = tf_keras.Sequential([tf_keras.Input((6,)), tf_keras.layers.Dense(4)])
    first = keras_to_onnx(model)
    again = keras_to_onnx(model)
    assert again is not first and again.SerializeToString() == first.SerializeToString()
    again.graph.ClearField("node")  # a quantizer editing its copy leaves the kept export alone
    assert len(keras_to_onnx(model).graph.node) == len(first.graph.node) > 0
    kernel, bias = model.get_weights()
    model.set_weights([kernel + 1.0, bias])  # changed in place: exported again, not served stale
    assert first_weights(keras_to_onnx(model)) != first_weights(first)


def test_mode_defaults_and_reason(workdir, tiny_classifier):
    report = api.quantize(tiny_classifier, workdir / "default.tflite")
    assert report.report.params["mode"] == "dynamic" and "no calibration data" in report.notes[0]
    report = api.quantize(tiny_classifier, workdir / "default8.tflite", calib="digits", calib_samples=20)
    assert report.report.params["mode"] == "int8" and report.report.calibration.samples == 20


def test_int8_without_calibration_is_refused(out, tiny_classifier):
    with pytest.raises(DataError, match="needs calibration data"):
        api.quantize(tiny_classifier, out / "x.tflite", mode="int8")
    assert list(out.iterdir()) == []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mode": "dynamic", "io": "int8"}, "--io int8 applies to int8 TFLite"),
        ({"mode": "int8", "format": "onnx", "io": "uint8", "calib": "digits"}, "applies to int8 TFLite"),
        ({"mode": "int4"}, "unknown mode 'int4'"),
    ],
)
def test_bad_options(out, tiny_classifier, kwargs, message):
    with pytest.raises(UsageError, match=message):
        api.quantize(tiny_classifier, out / "x.tflite", **kwargs)


def test_existing_output_needs_force(out, tiny_classifier):
    target = out / "exists.tflite"
    target.write_bytes(b"keep me")
    with pytest.raises(UsageError, match="--force"):
        api.quantize(tiny_classifier, target)
    assert target.read_bytes() == b"keep me"
    api.quantize(tiny_classifier, target, force=True)
    assert target.read_bytes()[4:8] == b"TFL3"


def test_output_suffix_must_match_format(out, tiny_classifier):
    with pytest.raises(UsageError, match="should end in .onnx"):
        api.quantize(tiny_classifier, out / "x.tflite", format="onnx")


def test_op_without_int8_kernel_is_named(out):
    from edgecompress._env import import_tensorflow, import_tf_keras

    tf_keras, tf = import_tf_keras(), import_tensorflow()
    inputs = tf_keras.Input((8, 8, 3))
    x = tf.math.sin(tf_keras.layers.Conv2D(4, 3)(inputs))  # TFOpLambda: safe to load, but no int8 SIN kernel
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(3)(tf_keras.layers.GlobalAveragePooling2D()(x)))
    model.save(out / "sin.h5")
    with pytest.raises(UnsupportedError, match=r"SIN.*--mode dynamic or --mode int16x8"):
        api.quantize(out / "sin.h5", out / "sin.int8.tflite", mode="int8", calib="digits")
    assert not (out / "sin.int8.tflite").exists()
    assert [p.name for p in out.iterdir()] == ["sin.h5"]
    assert api.quantize(out / "sin.h5", out / "sin.dyn.tflite", mode="dynamic").output.path.exists()


def test_calibration_that_does_not_fit_the_model(out, tiny_classifier):
    np.savez(out / "wrong.npz", x=np.zeros((4, 16, 16, 3), np.float32))
    with pytest.raises(DataError, match="float samples of shape"):
        api.quantize(tiny_classifier, out / "x.tflite", mode="int8", calib=out / "wrong.npz")
    assert not (out / "x.tflite").exists()
