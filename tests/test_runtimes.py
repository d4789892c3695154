"""The Session contract, for every registered runtime: float in, float out, same answers."""

import importlib.util
import sys

import numpy as np
import pytest

from edgecompress import api
from edgecompress.artifacts import Artifact
from edgecompress.errors import MissingDependencyError, ModelLoadError, RuntimeUnavailableError, UsageError
from edgecompress.runtimes import RUNTIMES, get_runtime, open_session, runtime_for


@pytest.fixture(scope="module")
def lce_model(workdir):
    """A small Larq model with one binary convolution, converted to a bit-packed LCE flatbuffer (None without Larq)."""
    if not all(importlib.util.find_spec(name) for name in ("larq", "larq_compute_engine")):
        return None
    import larq
    import larq_compute_engine

    from edgecompress._env import import_tf_keras

    tf_keras = import_tf_keras()
    inputs = tf_keras.Input((32, 32, 3))
    x = tf_keras.layers.Conv2D(16, 3, padding="same")(inputs)
    x = tf_keras.layers.BatchNormalization()(x)
    x = larq.layers.QuantConv2D(
        32, 3, padding="same", use_bias=False, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
        kernel_constraint="weight_clip",
    )(x)
    x = tf_keras.layers.BatchNormalization()(x)
    x = tf_keras.layers.GlobalAveragePooling2D()(x)
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(10)(x))
    path = workdir / "tiny.lce.tflite"
    path.write_bytes(larq_compute_engine.convert_keras_model(model))
    return path


@pytest.fixture(scope="module")
def models_by_runtime(tiny_classifier, tiny_int8, tiny_onnx, lce_model):
    return {"keras": tiny_classifier, "litert": tiny_int8, "onnxruntime": tiny_onnx, "lce": lce_model}


@pytest.fixture(scope="module")
def sample():
    from edgecompress.models.zoo import SYMMETRIC

    return api.model_inputs("digits", (32, 32, 3), SYMMETRIC, samples=24)


def _skip_without_model(models: dict, name: str) -> None:
    if models[name] is None:
        pytest.skip("needs the larq extra (Larq + LCE, which pins numpy < 2): pip install 'edgecompress[larq]'")


@pytest.mark.parametrize("name", RUNTIMES.names())
def test_session_contract(name, models_by_runtime, sample):
    _skip_without_model(models_by_runtime, name)
    runtime = get_runtime(name)
    assert runtime.available() == (True, "")
    artifact = Artifact.open(models_by_runtime[name])
    assert runtime_for(artifact) is runtime
    with runtime.open(artifact, threads=2) as session:
        assert session.inputs[0].shape[1:] == (32, 32, 3)
        x = sample.array()
        odd = session.predict(x[:5])  # a batch size the model was not converted with
        full = session.predict(x)
        assert full.shape == (24, 10) and full.dtype == np.float32
        np.testing.assert_allclose(odd, full[:5], atol=1e-5)
        prepared = session.prepare_raw(x[:1])
        session.run_raw(prepared)


def test_runtimes_agree_on_predictions(models_by_runtime, sample):
    x = sample.array()
    predictions = {}
    for name, path in models_by_runtime.items():
        if name == "lce":
            continue  # a different (binary) model: compared with its Larq source in test_binarize
        with open_session(Artifact.open(path)) as session:
            predictions[name] = np.argmax(session.predict(x), axis=1)
    assert np.mean(predictions["keras"] == predictions["onnxruntime"]) == 1.0
    assert np.mean(predictions["keras"] == predictions["litert"]) >= 0.8  # int8 of a 4-epoch model: a few flips


@pytest.mark.parametrize("name", RUNTIMES.names())
def test_gpu_target_says_why_it_is_unavailable(name, models_by_runtime):
    _skip_without_model(models_by_runtime, name)
    runtime = get_runtime(name)
    ok, why = runtime.device_available("gpu")
    if ok:
        pytest.skip(f"{name} has a GPU here")
    assert why
    with pytest.raises(RuntimeUnavailableError, match="cannot use the gpu"):
        runtime.open(Artifact.open(models_by_runtime[name]), device="gpu")


def test_wrong_runtime_for_format(tiny_onnx):
    with pytest.raises(RuntimeUnavailableError, match="cannot run a onnx model"):
        get_runtime("litert").open(Artifact.open(tiny_onnx))
    with pytest.raises(UsageError, match="unknown runtime 'tvm'"):
        get_runtime("tvm")


def test_wrong_input_shape_is_a_clear_error(tiny_int8):
    from edgecompress.errors import DataError

    with open_session(Artifact.open(tiny_int8)) as session, pytest.raises(DataError, match="does not fit"):
        session.predict(np.zeros((1, 16, 16, 3), np.float32))


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_truncated_tflite_is_a_clear_error(out, tiny_int8, cut):
    data = tiny_int8.read_bytes()
    path = out / "cut.tflite"
    path.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(ModelLoadError, match="damaged"):
        open_session(Artifact.open(path))


def test_corrupt_onnx_is_a_clear_error(out):
    path = out / "bad.onnx"
    path.write_bytes(b"\x08\x07garbage that is not a protobuf model" * 10)
    with pytest.raises(ModelLoadError, match="damaged"):
        open_session(Artifact.open(path))


def test_missing_onnxruntime_names_the_extra(monkeypatch, tiny_onnx):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    ok, why = get_runtime("onnxruntime").available()
    assert not ok and 'edgecompress[onnx]' in why
    with pytest.raises(RuntimeUnavailableError, match=r"edgecompress\[onnx\]"):
        open_session(Artifact.open(tiny_onnx))


def test_missing_tf2onnx_names_the_extra(monkeypatch, out, tiny_classifier):
    monkeypatch.setitem(sys.modules, "tf2onnx", None)
    with pytest.raises(MissingDependencyError, match=r'pip install "edgecompress\[onnx\]"'):
        api.export(tiny_classifier, out / "x.onnx", format="onnx")
    assert not (out / "x.onnx").exists()


def test_onnxruntime_pad_fusion_is_kept_off_where_it_changes_results(tmp_path, caplog):
    """ORT's Pad_Fusion folds a zero Pad into MaxPool (which pads with -inf): wrong for negative inputs.

    ResNet v2's stem (convolution → ZeroPadding2D → MaxPool2D) has that graph; here every
    convolution output is negative, so each border window's true maximum is the padded 0.
    """
    from edgecompress._env import import_tf_keras
    from edgecompress.artifacts import InputSpec, Metadata
    from edgecompress.models.train import save_model
    from edgecompress.runtimes.onnxrt import optimizers_to_disable

    tf_keras = import_tf_keras()
    inputs = tf_keras.Input((8, 8, 3))
    x = tf_keras.layers.Conv2D(4, 1, kernel_initializer="zeros", bias_initializer=tf_keras.initializers.Constant(-1.0))(
        inputs
    )
    x = tf_keras.layers.ZeroPadding2D(1)(x)
    x = tf_keras.layers.MaxPooling2D(3, strides=2)(x)
    model = tf_keras.Model(inputs, tf_keras.layers.Flatten()(x))
    source = save_model(model, tmp_path / "pad_pool.h5", Metadata(inputs=(InputSpec((8, 8, 3)),)))
    exported = api.export(source, tmp_path / "pad_pool.onnx", format="onnx").output  # its check runs ORT
    assert optimizers_to_disable(exported.path) == ["Pad_Fusion"]
    x = np.random.default_rng(0).uniform(0, 1, (2, 8, 8, 3)).astype(np.float32)
    with open_session(exported) as session:
        got = session.run(x)[0].reshape(2, 4, 4, 4)
    assert (got[:, 0, :, :] == 0).all() and (got[:, 1:, 1:, :] == -1).all()
    assert "disabled_optimizers=['Pad_Fusion']" in caplog.text
