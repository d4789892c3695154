"""Loading: safe by default, every Keras flavour, and faithful Keras 3 → tf_keras copies."""

import numpy as np
import pytest

from edgecompress._env import import_tf_keras
from edgecompress.errors import ModelLoadError, UnsafeModelError
from edgecompress.runtimes.keras_io import load_keras, to_tf_keras


def _lambda_model(marker):
    tf_keras = import_tf_keras()
    path = str(marker)

    def touch(x):
        # Runs whenever the layer is deserialized and called: the code-injection risk.
        with open(path, "w") as handle:
            handle.write("pwned")
        return x

    inputs = tf_keras.Input((4,))
    return tf_keras.Model(inputs, tf_keras.layers.Lambda(touch)(inputs))


@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_lambda_model_is_refused_and_runs_nothing(tmp_path, suffix):
    marker = tmp_path / "marker.txt"
    model = _lambda_model(marker)
    path = tmp_path / f"evil{suffix}"
    model.save(path)
    marker.unlink()
    with pytest.raises(UnsafeModelError, match="--trust-model"):
        load_keras(path)
    assert not marker.exists()


def test_trusted_lambda_model_loads(tmp_path):
    marker = tmp_path / "marker.txt"
    path = tmp_path / "trusted.h5"
    _lambda_model(marker).save(path)
    loaded = load_keras(path, trust_model=True)
    assert loaded.flavor == "tf_keras" and loaded.input_shape == (4,)


def test_weights_only_h5_is_explained(tmp_path):
    tf_keras = import_tf_keras()
    model = tf_keras.Sequential([tf_keras.Input((3,)), tf_keras.layers.Dense(2)])
    path = tmp_path / "w.weights.h5"
    model.save_weights(path)
    with pytest.raises(ModelLoadError, match="only weights"):
        load_keras(path)


@pytest.fixture(scope="module")
def keras3_model():
    import keras

    return keras.applications.MobileNetV2(input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=5)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_keras3_files_load_and_copy_to_tf_keras(tmp_path, keras3_model, suffix):
    path = tmp_path / f"k3{suffix}"
    keras3_model.save(path)
    loaded = load_keras(path)
    assert loaded.flavor == "keras3"
    copy = to_tf_keras(loaded)
    assert copy.flavor == "tf_keras"
    tf_keras = import_tf_keras()
    assert isinstance(copy.model, tf_keras.Model)
    x = np.random.default_rng(1).standard_normal((3, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(copy.model(x)), np.asarray(keras3_model(x)), atol=1e-5)


def test_keras3_sequential_copy(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(2)])
    path = tmp_path / "seq.keras"
    model.save(path)
    copy = to_tf_keras(load_keras(path))
    x = np.ones((2, 6), np.float32)
    np.testing.assert_allclose(np.asarray(copy.model(x)), np.asarray(model(x)), atol=1e-6)


def test_keras3_layer_without_twin_is_named(tmp_path):
    import keras

    from edgecompress.errors import UnsupportedError

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.ops.relu(keras.layers.Dense(3)(inputs)))
    path = tmp_path / "op.keras"
    model.save(path)
    with pytest.raises(UnsupportedError, match="no Keras 2 twin"):
        to_tf_keras(load_keras(path))


def test_damaged_h5_is_one_clear_error(tmp_path, tiny_classifier):
    data = tiny_classifier.read_bytes()
    path = tmp_path / "cut.h5"
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelLoadError, match="damaged"):
        load_keras(path)


def test_savedmodel_directory_quantizes(tmp_path, tiny_classifier):
    from edgecompress import api

    saved = tmp_path / "saved_model"
    load_keras(tiny_classifier).model.save(saved, save_format="tf")
    report = api.quantize(saved, tmp_path / "sm.tflite")
    assert report.output.path.exists() and report.report.check.passed


def test_h5_from_an_older_keras_2_release_loads(tmp_path, tiny_classifier):
    """Keras 2.1–2.15 wrote the same HDF5 layout with their version in the attributes."""
    import h5py

    path = tmp_path / "old.h5"
    path.write_bytes(tiny_classifier.read_bytes())
    with h5py.File(path, "r+") as handle:
        handle.attrs["keras_version"] = "2.2.4"
        handle.attrs["backend"] = "tensorflow"
    loaded = load_keras(path)
    assert loaded.flavor == "tf_keras" and loaded.input_shape == (32, 32, 3)
