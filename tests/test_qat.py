"""QAT end to end: train with fake quantization → full-int8 TFLite → runs in LiteRT → task metric.

Every model here holds layers stock TFMOT rejects or mishandles. Sources are saved with random
weights (QAT itself is the training under test), 1 epoch on ~200 samples, to stay fast.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from edgecompress import api
from edgecompress.artifacts import Artifact, InputSpec, Metadata
from edgecompress.calibration.data import load_images
from edgecompress.compress.tflite_graph import (
    bias_scale_errors,
    float_ops,
    max_unique_per_output_channel,
    op_counts,
    weight_sparsity,
)
from edgecompress.errors import UnsupportedError
from edgecompress.models.tasks import TASKS, evaluate
from edgecompress.models.train import save_model
from edgecompress.models.zoo import SYMMETRIC, ZOO, build
from edgecompress.runtimes import open_session

TRAIN_SAMPLES = 192
EVAL_SAMPLES = 64


def _data(spec: str, size: int):
    train = load_images(spec, split="train", target_hw=(size, size)).take(TRAIN_SAMPLES)
    held = load_images(spec, split="test", target_hw=(size, size)).take(EVAL_SAMPLES)
    return train, held


def _qat(source, out, spec, size, **kwargs):
    train, held = _data(spec, size)
    report = api.qat(source, out, train, epochs=1, eval=held, calib_samples=32, compare=False, progress=False,
                     force=True, **kwargs)  # fmt: skip
    data = report.output.path.read_bytes()
    assert float_ops(data) == [], "the full-int8 graph must not compute in float"
    assert bias_scale_errors(data) == {}, "every int32 bias must have the scale input × weight"
    task = report.output.metadata.task
    shape = report.output.metadata.inputs[0].shape
    inputs = api.model_inputs(held, shape, report.output.metadata.preprocessing)
    with open_session(report.output) as session:
        assert session.runtime == "litert"
        scores = evaluate(session, inputs, task)
    metric = TASKS.get(task).primary_metric
    assert np.isfinite(scores[metric]) and 0.0 <= scores[metric] <= 1.0
    assert report.output.metadata.lineage[-1].step == "qat"
    assert report.output.sidecar.exists()
    return report, data


ZOO_CASES = {
    # name: (build overrides, a layer that needs our config, and which kind)
    "unet_upsample": ({}, "UpSampling2D", "pass-through"),
    "unet": ({}, None, None),  # Conv2DTranspose: TFMOT's own config, checked end to end here
    "mobilenet_v3_small": ({"alpha": 0.35}, "ScalarAdd", "output"),  # hard-swish: x + 3 → ReLU6 → × 1/6 → Multiply
    "resnet18": ({}, None, None),  # v1 blocks: Add after BatchNorm, then ReLU; a max-pooled stem feeds a shortcut
    "resnet18_v2": ({}, "BatchNormalization", "output"),  # pre-activation BN follows no convolution
    # 75 px is Inception's minimum; α 0.0625 is no faster than 0.125 (its ~300 layers dominate), just smallest
    "inception_v3": ({"alpha": 0.0625}, "AveragePooling2D", "pass-through"),
    "blazepose_landmark": ({}, "UpSampling2D", "pass-through"),  # two outputs: landmarks + heatmap
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ZOO_CASES))
def test_zoo_family_qat_to_int8(name, workdir, tmp_path):
    overrides, needs, kind = ZOO_CASES[name]
    entry = ZOO.get(name)
    model, metadata = build(name, **{**entry.small, **overrides})
    source = save_model(model, workdir / f"qat_{name}.h5", metadata)
    size = metadata.inputs[0].shape[0]
    report, data = _qat(source, tmp_path / f"{name}.tflite", entry.embedded_data, size)
    ours = report.details["our_configs"]
    if needs:
        assert {v["config"] for v in ours.values() if v["layer"] == needs} == {kind}, ours
    if name == "unet":
        assert op_counts(data)["TRANSPOSE_CONV"] >= 3
    if name == "blazepose_landmark":
        assert len(report.output.metadata.extra["output_names"]) == 2
    if name == "resnet18":
        assert op_counts(data)["ADD"] == 8
    if name == "inception_v3":
        # TFMOT permutes these concatenations' inputs (tensorflow/model-optimization#1179); we put them back
        assert report.details["inputs_reordered_by_tfmot"] == ["mixed10", "mixed3", "mixed8", "mixed9"]
        assert op_counts(data)["AVERAGE_POOL_2D"] == 9
    if name == "mobilenet_v3_small":
        rewritten = report.details["flattened"]["rewritten_ops"]
        assert any("ScalarAdd" in r for r in rewritten) and any("ScalarMultiply" in r for r in rewritten)


def _awkward_model():
    """Rescaling, a nested sub-model, slicing, tf.image.resize and a concat that takes the input branch."""
    from edgecompress._env import import_tensorflow, import_tf_keras

    tf, tf_keras = import_tensorflow(), import_tf_keras()
    layers = tf_keras.layers
    inner_in = tf_keras.Input((16, 16, 8))
    y = layers.Conv2D(8, 3, padding="same", use_bias=False)(inner_in)
    y = layers.BatchNormalization()(y)
    inner = tf_keras.Model(inner_in, layers.ReLU()(y), name="block")
    inputs = tf_keras.Input((32, 32, 3))
    x = layers.Rescaling(2.0, offset=-1.0, name="rescale")(inputs)
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="stem")(x)
    x = inner(x)
    half = x[:, :, :, :4]
    small = tf.image.resize(layers.Conv2D(4, 1, name="proj")(x), (8, 8))
    pooled = layers.AveragePooling2D(2, name="pool")(half)
    x = layers.Concatenate(name="join")([pooled, small, layers.AveragePooling2D(4)(inputs)])
    x = layers.GlobalAveragePooling2D()(x)
    return tf_keras.Model(inputs, layers.Dense(10, name="logits")(x), name="awkward")


def _inception_like():
    """Inception-style blocks: 1×1, 3×3, factorised 1×3/3×1 and pooled branches concatenated, twice.

    A small stand-in for the zoo's Inception v3 (75 px minimum, too slow for this suite); logits out,
    so the int8 check sees a real output range even with near-random weights.
    """
    from edgecompress._env import import_tf_keras

    tf_keras = import_tf_keras()
    layers = tf_keras.layers
    inputs = tf_keras.Input((32, 32, 3))
    x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="stem")(inputs)
    for block in range(2):
        a = layers.Conv2D(8, 1, activation="relu", name=f"b{block}_1x1")(x)
        b = layers.Conv2D(8, 1, activation="relu", name=f"b{block}_3x3_reduce")(x)
        b = layers.Conv2D(8, 3, padding="same", activation="relu", name=f"b{block}_3x3")(b)
        c = layers.Conv2D(8, (1, 3), padding="same", activation="relu", name=f"b{block}_1x3")(x)
        c = layers.Conv2D(8, (3, 1), padding="same", activation="relu", name=f"b{block}_3x1")(c)
        d = layers.AveragePooling2D(3, strides=1, padding="same", name=f"b{block}_pool")(x)
        x = layers.Concatenate(name=f"b{block}_concat")([a, b, c, d])
        x = layers.MaxPooling2D(2, name=f"b{block}_down")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return tf_keras.Model(inputs, layers.Dense(10, name="logits")(x), name="inception_like")


@pytest.mark.slow
def test_inception_like_concatenated_branches(workdir, tmp_path):
    model = _inception_like()
    source = save_model(model, workdir / "inception_like.h5", _classifier_metadata(model))
    _, data = _qat(source, tmp_path / "inception_like.tflite", "digits", 32)
    assert op_counts(data)["CONCATENATION"] == 2


def _classifier_metadata(model) -> Metadata:
    return Metadata(task="classification", inputs=(InputSpec(tuple(model.inputs[0].shape[1:])),),
                    preprocessing=dataclasses.replace(SYMMETRIC, scale=1 / 255.0, offset=0.0),
                    labels=tuple(str(i) for i in range(10)))  # fmt: skip


@pytest.mark.slow
def test_rescaling_nested_model_slicing_resize_and_concat(workdir, tmp_path):
    model = _awkward_model()
    source = save_model(model, workdir / "awkward.h5", _classifier_metadata(model))
    report, _ = _qat(source, tmp_path / "awkward.tflite", "digits", 32)
    flattened = report.details["flattened"]
    assert flattened["inlined_models"] == ["block"]
    rewritten = " ".join(flattened["rewritten_ops"])
    assert "Slice" in rewritten and "ImageResize" in rewritten
    assert report.details["our_configs"]["rescale"] == {"layer": "Rescaling", "config": "output"}


def test_unsupported_layer_is_named_with_the_workaround(workdir, tmp_path):
    from edgecompress._env import import_tf_keras

    tf_keras = import_tf_keras()
    layers = tf_keras.layers
    inputs = tf_keras.Input((32, 32, 3))
    x = layers.Conv2D(8, 3, strides=2, padding="same")(inputs)
    x = layers.PReLU(shared_axes=[1, 2], name="odd_prelu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    model = tf_keras.Model(inputs, layers.Dense(10)(x))
    source = save_model(model, workdir / "prelu.h5", _classifier_metadata(model))
    with pytest.raises(UnsupportedError) as error:
        _qat(source, tmp_path / "prelu.tflite", "digits", 32)
    text = str(error.value)
    assert "odd_prelu (PReLU)" in text and "--skip-layer odd_prelu" in text
    assert not (tmp_path / "prelu.tflite").exists()
    # the workaround works: PReLU is left out of fake quantization and calibrated by the converter
    report, _ = _qat(source, tmp_path / "prelu.tflite", "digits", 32, skip_layers=["odd_prelu"])
    assert report.details["our_configs"]["odd_prelu"]["config"].startswith("skipped")


@pytest.mark.slow
def test_preserve_sparsity_keeps_a_pruned_model_pruned(tiny_classifier, workdir, tmp_path):
    from edgecompress.runtimes.keras_io import load_keras

    model = load_keras(tiny_classifier).model
    for layer in model.layers:  # magnitude pruning to 60 %, as a pruned-and-stripped model holds it
        if type(layer).__name__ in ("Conv2D", "Dense"):
            weights = layer.get_weights()
            kernel = weights[0]
            kernel[np.abs(kernel) < np.quantile(np.abs(kernel), 0.6)] = 0.0
            layer.set_weights([kernel, *weights[1:]])
    pruned = save_model(model, workdir / "tiny_pruned.h5", Artifact.open(tiny_classifier).metadata)
    report, data = _qat(pruned, tmp_path / "pruned.tflite", "digits", 32, preserve="sparsity")
    sparsity = report.details["weight_sparsity"]
    assert sparsity["source"] > 0.4
    # same zeros in the int8 file (int8 rounding may add a few more, never fewer)
    assert weight_sparsity(data) == sparsity["int8_tflite"]
    assert sparsity["source"] - 0.005 <= sparsity["int8_tflite"] <= sparsity["source"] + 0.05


@pytest.mark.slow
def test_cli_compares_float_ptq_and_qat(tiny_classifier, tmp_path):
    from click.testing import CliRunner

    from edgecompress.cli import cli

    out = tmp_path / "tiny.qat.tflite"
    result = CliRunner().invoke(cli, ["qat", str(tiny_classifier), "--data", "digits", "--epochs", "1",
                                      "--calib-samples", "64", "-o", str(out), "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    run = json.loads(result.output[result.output.index("{"):])
    evaluation, ptq = run["evaluation"], run["report"]["ptq_int8"]
    assert evaluation["data"].startswith("digits:test")
    assert (evaluation["source"]["runtime"], ptq["runtime"], evaluation["output"]["runtime"]) == ("keras", "litert", "litert")
    scores = {"float": evaluation["source"]["metrics"], "ptq_int8": ptq["metrics"], "qat_int8": evaluation["output"]["metrics"]}
    for metrics in scores.values():
        assert metrics["samples"] == 360
    # a briefly trained 32 px model: QAT int8 must stay near float (a broken conversion lands near 10 %)
    assert scores["qat_int8"]["top1"] > scores["float"]["top1"] - 0.1
    assert Artifact.open(out).metadata.lineage[-1].params["epochs"] == 1


def test_bad_preserve_value_is_a_usage_error():
    from edgecompress.compress.qat import QATConfig
    from edgecompress.errors import UsageError

    with pytest.raises(UsageError, match="sparsity"):
        QATConfig(preserve="zeros")
    assert QATConfig.from_dict(QATConfig(preserve="clusters").to_dict()) == QATConfig(preserve="clusters")


def _branch_and_pool():
    """concat([conv-BN-ReLU branch, max-pool]) of one tensor: the smallest model TFMOT rewires."""
    from edgecompress._env import import_tf_keras

    tf_keras = import_tf_keras()
    layers = tf_keras.layers
    inputs = tf_keras.Input((16, 16, 3))
    stem = layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inputs)
    branch = layers.Conv2D(4, 3, padding="same", use_bias=False, name="branch_conv")(stem)
    branch = layers.BatchNormalization(name="branch_bn")(branch)
    branch = layers.Activation("relu", name="branch_relu")(branch)
    pooled = layers.MaxPooling2D(3, strides=1, padding="same", name="pool")(stem)
    x = layers.Concatenate(name="join")([branch, pooled])
    return tf_keras.Model(inputs, layers.Conv2D(6, 1, name="head")(x), name="branch_and_pool")


def test_qat_model_computes_what_the_source_computes():
    from edgecompress.compress.qat import QATConfig, flatten, prepare
    from edgecompress.compress.qat_ranges import initialize_ranges

    flat, _ = flatten(_branch_and_pool())
    qat_model, _, reordered = prepare(flat, QATConfig())
    assert reordered == ["join"]  # TFMOT gave the concatenation its inputs as [pool, branch_relu]
    x = np.random.default_rng(0).uniform(-1, 1, (32, 16, 16, 3)).astype(np.float32)
    ranges = initialize_ranges(flat, qat_model, [x[:16], x[16:]])
    low, high = ranges["stem/post_activation"]  # a ReLU output: from 0, not TFMOT's placeholder -6
    assert low == 0.0 and 0.0 < high < 6.0
    low, high = next(v for k, v in ranges.items() if k.startswith("quantize_layer"))  # Keras numbers the name
    assert low < -0.9 and high > 0.9  # the inputs span [-1, 1]
    expected, got = np.asarray(flat(x, training=False)), np.asarray(qat_model(x, training=False))
    # fake quantization only: 1.0 % of the output range (8.7 % with the channels left permuted)
    assert np.mean(np.abs(expected - got)) < 0.03 * (expected.max() - expected.min())


def test_bias_scale_errors_finds_a_misquantized_bias(tiny_int8):
    from tensorflow.lite.tools import flatbuffer_utils

    data = tiny_int8.read_bytes()
    assert bias_scale_errors(data) == {}
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    graph = model.subgraphs[0]
    conv = next(op for op in graph.operators if len(op.inputs) == 3 and graph.tensors[op.inputs[2]].type == 2)  # INT32 bias
    graph.tensors[conv.inputs[2]].quantization.scale = [s * 2.5 for s in graph.tensors[conv.inputs[2]].quantization.scale]
    errors = bias_scale_errors(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))
    assert len(errors) == 1 and abs(next(iter(errors.values())) - 1.5) < 1e-3


def _small_convnet():
    from edgecompress._env import import_tf_keras

    tf_keras = import_tf_keras()
    layers = tf_keras.layers
    inputs = tf_keras.Input((32, 32, 3))
    x = layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="conv1")(inputs)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.ReLU(name="relu1")(x)
    x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="conv2")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return tf_keras.Model(inputs, layers.Dense(10, name="logits")(x), name="small_convnet")


@pytest.mark.slow
def test_preserve_clusters_keeps_a_clustered_model_clustered(workdir, tmp_path):
    """Cluster-preserving QAT trains the centroids, never the individual weights.

    What survives int8 conversion is *K values per output channel*: TFLite stores conv kernels with
    one scale per output channel (BatchNorm folds in per channel too), so a kernel clustered to K
    shared values holds at most K int8 values in each channel, though more across the tensor.
    A small convnet: TFMOT's per-channel cluster preservation builds a graph that grows with the
    channel count (190 s to trace for the 32 px MobileNetV2 α 0.35), and no zoo model is needed here.
    """
    clusters = 4
    model = _small_convnet()
    source = save_model(model, workdir / "small_convnet.h5", _classifier_metadata(model))
    clustered = api.cluster(source, workdir / "small_convnet.clustered.h5", "digits", clusters=clusters, epochs=0,
                            measure=False, progress=False, force=True)  # fmt: skip
    assert set(clustered.details["layers"]) == {"conv1", "conv2", "logits"}
    # a rate high enough to move every weight if the clusters were not kept
    report, data = _qat(clustered.output.path, tmp_path / "cqat.tflite", "digits", 32, preserve="clusters", lr=1e-3)
    kept = report.details["max_unique_weights_per_output_channel"]
    assert kept["source"] <= clusters
    assert kept["int8_tflite"] == max_unique_per_output_channel(data) <= kept["source"]
    # without preservation the same training spreads the weights out again
    _, plain = _qat(clustered.output.path, tmp_path / "plain.tflite", "digits", 32, preserve="none", lr=1e-3)
    assert max_unique_per_output_channel(plain) > clusters


def test_preserve_clusters_quantizes_layers_the_scheme_has_no_rule_for(workdir, tmp_path):
    """TFMOT's cluster-preserving scheme knows no Conv2DTranspose: such a layer is quantized the default
    way (and said so), instead of the whole U-Net being refused."""
    model, metadata = build("unet", input_size=32, alpha=0.25, depth=2)
    source = save_model(model, workdir / "unet_cqat.h5", metadata)
    clustered = api.cluster(source, tmp_path / "unet.clustered.h5", "synthetic-shapes", clusters=8, epochs=0,
                            measure=False, progress=False)  # fmt: skip
    report, _ = _qat(clustered.output.path, tmp_path / "unet.cqat.tflite", "synthetic-shapes", 32, preserve="clusters")
    defaults = {name: c for name, c in report.details["our_configs"].items() if c["config"].startswith("default 8-bit")}
    assert defaults and all(c["layer"] == "Conv2DTranspose" for c in defaults.values())
