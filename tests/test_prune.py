"""Pruning (unstructured, 2:4, channels) and clustering: sparsity, patterns, graph surgery, outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgecompress import api
from edgecompress.artifacts import Artifact, read_sidecar
from edgecompress.calibration.data import load_digits
from edgecompress.compress.channels import analyse, prune_channels
from edgecompress.compress.prune import PruneConfig
from edgecompress.errors import UnsupportedError, UsageError
from edgecompress.runtimes.keras_io import load_keras

TRAIN, HELD_OUT = 192, 120


@pytest.fixture(scope="module")
def digits_small():
    return load_digits("train").take(TRAIN), load_digits("test").take(HELD_OUT)


def _kernels(path, kinds=("Conv2D", "Dense")) -> dict[str, np.ndarray]:
    model = load_keras(path).model
    return {layer.name: layer.get_weights()[0] for layer in model.layers if type(layer).__name__ in kinds}


def _randomise_batchnorm(model, seed: int = 0):
    """Untrained BatchNorms are identities; random statistics make the exactness test meaningful."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(np.float32) for w in layer.get_weights()])
    return model


# --------------------------------------------------------------------------- unstructured and 2:4 (TFMOT)


def test_unstructured_sparsity_within_one_percent(tiny_classifier, digits_small, out):
    train, held = digits_small
    report = api.prune(tiny_classifier, out / "pruned.h5", train, sparsity=0.5, epochs=1, lr=1e-3, eval=held,
                       progress=False)  # fmt: skip
    kernels = _kernels(report.output.path)
    zeros = sum(int(np.count_nonzero(k == 0)) for k in kernels.values())
    total = sum(k.size for k in kernels.values())
    assert abs(zeros / total - 0.5) <= 0.01  # measured independently of the pass, on the saved file
    magnitude = report.report.magnitude
    assert magnitude.measured_sparsity == pytest.approx(zeros / total)
    assert all(abs(row.sparsity - 0.5) <= 0.01 for row in magnitude.layers)
    assert all("DepthwiseConv2D" in why for why in magnitude.left_dense.values())
    metadata = read_sidecar(report.output.path)
    assert metadata.lineage[-1].step == "prune" and metadata.lineage[-1].params["sparsity"] == 0.5
    assert metadata.task == "classification" and metadata.preprocessing is not None
    assert report.evaluation.source.runtime == report.evaluation.output.runtime == "keras"
    tflite = report.report.tflite
    # the sparse-encoded float TFLite is smaller than the dense source, and more so once gzipped
    assert tflite["output_sparse"].size_bytes < 0.85 * tflite["source"].size_bytes
    assert tflite["output_sparse"].gzip_bytes < 0.75 * tflite["source"].gzip_bytes


def test_polynomial_schedule_reaches_the_target_within_training():
    import tensorflow_model_optimization as tfmot

    from edgecompress.compress.prune import _schedule

    config = PruneConfig(sparsity=0.6, schedule="polynomial", finetune={"epochs": 3})
    schedule = _schedule(tfmot, config, steps_per_epoch=10)
    end = schedule.get_config()["config"]["end_step"]
    assert 0 < end <= 30
    _, at_end = schedule(np.int64(end))
    _, at_start = schedule(np.int64(0))
    assert float(at_end) == pytest.approx(0.6) and float(at_start) == pytest.approx(0.0)


def test_two_four_pattern_is_exact(tiny_classifier, digits_small, out):
    train, held = digits_small
    report = api.prune(tiny_classifier, out / "24.h5", train, structure="2:4", epochs=1, eval=held, measure=False,
                       progress=False)  # fmt: skip
    assert report.report.magnitude.two_four_exact
    pruned = report.details["magnitude"]["layers"]
    assert pruned
    kernels = _kernels(report.output.path)
    for row in pruned:
        kernel = kernels[row["layer"]]
        # TFLite layout: filters × (kh·kw) × input channels; 4 consecutive input channels hold ≥ 2 zeros
        rows = np.moveaxis(kernel, -1, 0).reshape(-1, kernel.shape[-2]) if kernel.ndim == 4 else kernel.T
        blocks = rows.reshape(rows.shape[0], -1, 4)
        assert np.all(np.count_nonzero(blocks, axis=-1) <= 2), row["layer"]
        assert row["sparsity"] >= 0.5
    assert "Conv1" in report.report.magnitude.left_dense  # 3 input channels: no group of 4


def test_prune_config_is_validated():
    with pytest.raises(UsageError, match="2:4"):
        PruneConfig(sparsity=0.3, structure="2:4")
    with pytest.raises(UsageError, match="epochs"):
        PruneConfig(structure="unstructured", finetune={"epochs": 0})
    with pytest.raises(UsageError, match="unknown structure"):
        PruneConfig(structure="blocks")
    config = PruneConfig(sparsity=0.3, structure="channels", criterion="bn", finetune={"epochs": 0})
    assert PruneConfig.from_dict(config.to_dict()) == config
    with pytest.raises(UsageError, match="--distill"):
        PruneConfig(structure="unstructured", distill=True)
    with pytest.raises(UsageError, match="--distill"):
        PruneConfig(structure="channels", distill=True, finetune={"epochs": 0})
    distilled = PruneConfig(structure="channels", distill=True)
    assert PruneConfig.from_dict(distilled.to_dict()) == distilled


# --------------------------------------------------------------------------- channel pruning: graph surgery


def _resnet_like():
    from edgecompress._env import import_tf_keras

    keras = import_tf_keras()
    layers = keras.layers
    inputs = keras.Input((32, 32, 3))
    x = layers.Conv2D(16, 3, padding="same", use_bias=False)(inputs)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    for filters, stride in ((16, 1), (24, 2), (24, 1)):
        shortcut = x
        if stride != 1 or x.shape[-1] != filters:
            shortcut = layers.BatchNormalization()(layers.Conv2D(filters, 1, stride, use_bias=False)(x))
        y = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(filters, 3, stride, padding="same")(x)))
        y = layers.BatchNormalization()(layers.Conv2D(filters, 3, padding="same")(y))
        x = layers.ReLU()(layers.Add()([shortcut, y]))
    x = layers.Dense(32, activation="relu")(layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, layers.Dense(10, activation="softmax")(x))


def _inception_like():
    from edgecompress._env import import_tf_keras

    keras = import_tf_keras()
    layers = keras.layers
    inputs = keras.Input((32, 32, 3))
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    a = layers.Conv2D(8, 1, activation="relu")(x)
    b = layers.Conv2D(12, 3, padding="same")(layers.Conv2D(10, 1, activation="relu")(x))
    c = layers.Conv2D(6, 1)(layers.MaxPooling2D(3, 1, padding="same")(x))
    x = layers.ReLU()(layers.BatchNormalization()(layers.Concatenate()([a, b, c])))
    x = layers.Conv2D(20, 1, activation="relu")(x)
    x = layers.Flatten()(layers.MaxPooling2D(4)(x))  # a Dense after Flatten: channels repeat per position
    return keras.Model(inputs, layers.Dense(10)(layers.Dense(24, activation="relu")(x)))


def _unet_like():
    from edgecompress._env import import_tf_keras

    keras = import_tf_keras()
    layers = keras.layers
    inputs = keras.Input((32, 32, 3))
    d1 = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(16, 3, padding="same")(inputs)))
    d2 = layers.Conv2D(24, 3, padding="same", activation="relu")(layers.MaxPooling2D()(d1))
    b = layers.Conv2D(32, 3, padding="same", activation="relu")(layers.MaxPooling2D()(d2))
    u2 = layers.Conv2DTranspose(24, 2, strides=2)(b)
    u2 = layers.Conv2D(24, 3, padding="same", activation="relu")(layers.Concatenate()([d2, u2]))
    u1 = layers.Conv2D(16, 3, padding="same")(layers.UpSampling2D()(u2))
    u1 = layers.Conv2D(16, 3, padding="same", activation="relu")(layers.Concatenate()([u1, d1]))
    return keras.Model(inputs, layers.Conv2D(4, 1)(u1))


def _mobilenet_v2():
    from edgecompress.models.zoo import build

    return build("mobilenet_v2", input_size=32, alpha=0.35, classes=10)[0]


TOPOLOGIES = {"mobilenet_v2": _mobilenet_v2, "resnet_like": _resnet_like, "inception_like": _inception_like,
              "unet_like": _unet_like}  # fmt: skip


@pytest.mark.parametrize("name", list(TOPOLOGIES))
def test_channel_surgery_keeps_outputs_and_shrinks(name):
    model = _randomise_batchnorm(TOPOLOGIES[name]())
    x = np.random.default_rng(1).standard_normal((3, 32, 32, 3)).astype(np.float32)
    expected = np.asarray(model(x, training=False))
    same = prune_channels(model, 0.0)
    np.testing.assert_array_equal(np.asarray(same.model(x, training=False)), expected)
    assert same.model.count_params() == model.count_params()

    result = prune_channels(model, 0.3)
    smaller = result.model
    assert smaller.count_params() <= 0.75 * model.count_params()
    got = np.asarray(smaller(x, training=False))
    assert got.shape == expected.shape and np.all(np.isfinite(got))
    assert result.kept_reasons.get("model output") == 1  # the head's classes are never pruned
    assert np.asarray(model(x, training=False)) == pytest.approx(expected)  # the source is untouched


def test_residual_groups_are_joined():
    model = _resnet_like()
    plan = analyse(model)
    adds = [layer for layer in model.layers if type(layer).__name__ == "Add"]
    for add in adds:
        roots = {plan.groups.find(g) for layout in plan.inputs[add.name] for g, _ in layout.segments}
        assert len(roots) == 1, add.name
    pruned = prune_channels(model, 0.5).model
    for add in (layer for layer in pruned.layers if type(layer).__name__ == "Add"):
        assert len({tuple(s[-1:]) for s in add.input_shape}) == 1


def test_concatenation_consumer_takes_kept_channels_of_each_branch():
    model = _randomise_batchnorm(_inception_like())
    result = prune_channels(model, 0.5)
    concat = next(layer for layer in result.model.layers if type(layer).__name__ == "Concatenate")
    assert concat.output_shape[-1] == 4 + 6 + 3  # each branch keeps half of 8, 12, 6


def test_channel_pruning_names_what_it_cannot_handle():
    from edgecompress._env import import_tf_keras

    keras = import_tf_keras()
    layers = keras.layers
    inputs = keras.Input((8, 8, 3))
    only_output = keras.Model(inputs, layers.Conv2D(4, 3)(inputs))
    with pytest.raises(UnsupportedError, match="no channel"):
        prune_channels(only_output, 0.5)
    shared = layers.Conv2D(3, 3, padding="same", name="shared_conv")
    twice = keras.Model(inputs, layers.Conv2D(2, 1)(shared(shared(inputs))))
    with pytest.raises(UnsupportedError, match="shared_conv"):
        prune_channels(twice, 0.5)
    x = layers.Conv2D(8, 3, name="c1")(inputs)
    x = layers.Reshape((-1, 8), name="reshape")(x)
    reshaped = keras.Model(inputs, layers.Dense(2)(layers.Flatten()(layers.Dense(6, name="d1")(x))))
    result = prune_channels(reshaped, 0.5)
    assert "reshape" in result.kept_whole_layers  # named, and its channels kept; the rest still pruned
    assert result.model.get_layer("d1").units == 3 and result.model.get_layer("c1").filters == 8


def test_channel_pruning_pass_reports_params_macs_latency(tiny_classifier, digits_small, out):
    train, held = digits_small
    report = api.prune(tiny_classifier, out / "channels.h5", train, sparsity=0.3, structure="channels", epochs=1,
                       lr=1e-3, eval=held, progress=False)  # fmt: skip
    channels = report.report.channels
    assert channels.params_after <= 0.75 * channels.params_before
    assert load_keras(report.output.path).model.count_params() == channels.params_after
    tflite = report.report.tflite
    assert tflite["output"].macs < tflite["source"].macs
    assert tflite["output"].size_bytes < tflite["source"].size_bytes
    assert tflite["output"].latency_ms_p50 > 0 and tflite["source"].latency_ms_p50 > 0
    assert channels.before_finetune["samples"] == report.evaluation.samples
    assert Artifact.open(report.output.path).metadata.lineage[-1].params["structure"] == "channels"


def test_prune_cli_channels_json(tiny_classifier, digits_npz, out):
    from edgecompress.cli import cli

    target = out / "cli.h5"
    result = CliRunner().invoke(cli, ["prune", str(tiny_classifier), "--data", str(digits_npz), "--structure",
                                      "channels", "--sparsity", "0.3", "--epochs", "0", "-o", str(target), "--json",
                                      "--no-tflite"])  # fmt: skip
    assert result.exit_code == 0, result.output
    channels = json.loads(result.output)["report"]["channels"]
    assert channels["params_after"] < channels["params_before"] and target.exists()
    again = CliRunner().invoke(cli, ["prune", str(tiny_classifier), "--data", "digits", "-o", str(target)])
    assert again.exit_code == 2 and "already exists" in again.output

    distilled = out / "cli-distilled.h5"
    result = CliRunner().invoke(cli, ["prune", str(tiny_classifier), "--data", str(digits_npz), "--structure",
                                      "channels", "--sparsity", "0.3", "--epochs", "1", "--distill", "-o",
                                      str(distilled), "--no-tflite", "-q"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert Artifact.open(distilled).metadata.lineage[-1].params["distill"] is True
    # the same surgery, then fine-tuned: its weights moved away from the untrained pruned model's
    untrained, trained = load_keras(target).model.get_weights(), load_keras(distilled).model.get_weights()
    assert [w.shape for w in untrained] == [w.shape for w in trained]
    assert any(not np.allclose(a, b) for a, b in zip(untrained, trained, strict=True))


# --------------------------------------------------------------------------- clustering


def test_clustering_leaves_at_most_k_values(tiny_classifier, digits_small, out):
    train, held = digits_small
    report = api.cluster(tiny_classifier, out / "clustered.h5", train, clusters=8, epochs=1, eval=held, measure=False,
                         progress=False)  # fmt: skip
    assert report.report.max_unique <= 8
    kernels = _kernels(report.output.path)
    clustered = report.report.layers
    assert clustered and all(np.unique(kernels[name]).size <= 8 for name in clustered)
    assert report.evaluation.metric == "top1" and report.evaluation.samples == len(held)
    assert read_sidecar(report.output.path).lineage[-1].step == "cluster"
