"""Contract suite over every registered zoo entry, plus the zoo's tasks, data and CLI.

Each entry is built at its ``small`` configuration, trained for a few steps on its embedded data,
exported to TFLite and ONNX (float, dynamic, int8), run in each runtime and scored with its task
metric. Registering an entry in ``ZOO`` is all it takes to be covered.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from edgecompress import api
from edgecompress.artifacts import Artifact
from edgecompress.calibration.data import ImageSet, ModelInputs, load_images
from edgecompress.errors import DataError, UsageError
from edgecompress.models.tasks import TASKS, evaluate, trivial_baseline
from edgecompress.models.zoo import ZOO, build
from edgecompress.runtimes import open_session
from edgecompress.runtimes.base import Session, TensorSpec

TRAIN_SAMPLES, EVAL_SAMPLES, CALIB_SAMPLES = 128, 24, 8
VARIANTS = [("float", "tflite"), ("float", "onnx"), ("dynamic", "tflite"), ("dynamic", "onnx"), ("int8", "tflite"), ("int8", "onnx")]  # fmt: skip


@dataclass(frozen=True)
class Trained:
    name: str
    path: Path
    train: ImageSet
    test: ImageSet
    keras_outputs: list[np.ndarray]
    probe: np.ndarray


@pytest.fixture(scope="session", params=ZOO.names())
def trained(request, tmp_path_factory) -> Trained:
    """Build the entry small, take a few training steps on its embedded data, save it with metadata."""
    from edgecompress.models.train import save_model, train_model

    name = request.param
    entry = ZOO.get(name)
    model, metadata = build(name, **entry.small)
    shape = metadata.inputs[0].shape
    train = load_images(entry.embedded_data, "train", shape[:2]).take(TRAIN_SAMPLES)
    test = load_images(entry.embedded_data, "test", shape[:2]).take(EVAL_SAMPLES)
    inputs = ModelInputs.build(train, shape, metadata.preprocessing)
    history = train_model(model, entry.task, inputs, epochs=3, batch_size=16, lr=2e-3, progress=False)
    assert np.isfinite(history["loss"][-1])
    path = save_model(model, tmp_path_factory.mktemp(name) / f"{name}.h5", metadata)
    probe = ModelInputs.build(test, shape, metadata.preprocessing).array()[:4]
    outputs = model(probe, training=False)
    outputs = [np.asarray(o) for o in (outputs if isinstance(outputs, list) else [outputs])]
    return Trained(name, path, train, test, outputs, probe)


@pytest.mark.parametrize("mode,fmt", VARIANTS, ids=[f"{m}-{f}" for m, f in VARIANTS])
def test_zoo_variant_runs_and_scores(trained: Trained, mode: str, fmt: str):
    task = ZOO.get(trained.name).task
    target = trained.path.with_name(f"{trained.name}.{mode}.{fmt}")
    if mode == "float":
        report = api.export(trained.path, target, format=fmt, eval=trained.test)
    else:
        calib = trained.train.take(CALIB_SAMPLES) if mode == "int8" else None
        report = api.quantize(trained.path, target, mode=mode, format=fmt, calib=calib, eval=trained.test)
    assert report.report.check.passed
    primary = TASKS.get(task).primary_metric
    source, output = report.evaluation.source.metrics, report.evaluation.output.metrics
    assert output["samples"] == EVAL_SAMPLES and set(output) == set(source)
    assert 0.0 <= output[primary] <= 1.0
    if mode == "float":
        assert abs(output[primary] - source[primary]) <= 1.5 / EVAL_SAMPLES  # at most one arg-max tie flips
    if mode == "int8":
        float_size = trained.path.stat().st_size
        assert report.output.size_bytes < 0.6 * float_size, "int8 weights should take well under half the bytes"
    # Outputs come back in the Keras order with the Keras shapes, in the runtime a device would use.
    with open_session(Artifact.open(target)) as session:
        got = session.run(trained.probe)
    assert [g.shape for g in got] == [e.shape for e in trained.keras_outputs]
    if mode == "float":
        for g, e in zip(got, trained.keras_outputs, strict=True):
            np.testing.assert_allclose(g, e, atol=1e-3 * max(1.0, float(np.abs(e).max())))


# --------------------------------------------------------------------------- builders


def test_zoo_lists_every_family():
    tasks = {name: entry.task for name, entry in ZOO.items()}
    for name in ("mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "resnet18",
                 "resnet18_v2", "resnet50", "resnet50_v2", "inception_v3"):  # fmt: skip
        assert tasks[name] == "classification"
    assert tasks["unet"] == tasks["unet_upsample"] == "segmentation"
    assert tasks["blazepose_landmark"] == "keypoints" and tasks["blazepose_detector"] == "detection"


@pytest.mark.parametrize(
    "name,macs",
    # Published multiply-adds at 224 px (299 for Inception v3), 1000 classes.
    [("mobilenet_v1", 569e6), ("mobilenet_v2", 300e6), ("resnet18", 1.82e9), ("resnet50", 3.86e9), ("inception_v3", 5.72e9)],
)
def test_macs_match_published_figures(name, macs):
    from edgecompress.models.zoo import profile

    assert profile(name)[1] == pytest.approx(macs, rel=0.03)


def test_width_multiplier_scales_keras_applications():
    from edgecompress._env import import_tf_keras

    reference = import_tf_keras().applications.ResNet50(input_shape=(32, 32, 3), weights=None, classes=10)
    full, _ = build("resnet50", input_size=32, classes=10)
    half, _ = build("resnet50", input_size=32, alpha=0.5, classes=10)
    assert full.count_params() == reference.count_params()
    assert half.count_params() < 0.3 * full.count_params()
    assert {layer.momentum for layer in half.layers if type(layer).__name__ == "BatchNormalization"} == {0.9}


@pytest.mark.parametrize("decoder,layer", [("transpose", "Conv2DTranspose"), ("upsample", "UpSampling2D")])
def test_unet_decoder_and_skips(decoder, layer):
    model, _ = build("unet", input_size=32, depth=3, base_filters=8, decoder=decoder, classes=3)
    kinds = [type(x).__name__ for x in model.layers]
    assert kinds.count(layer) == 3 and kinds.count("Concatenate") == 3
    assert tuple(model.output.shape) == (None, 32, 32, 3)
    with pytest.raises(UsageError, match="divisible by 8"):
        build("unet", input_size=36, depth=3)


def test_landmark_model_heads():
    model, metadata = build("blazepose_landmark", input_size=64, alpha=0.25)
    assert [tuple(o.shape) for o in model.outputs] == [(None, 33, 4), (None, 16, 16, 33)]
    assert metadata.extra["output_names"] == ["landmarks", "heatmap"]
    assert metadata.labels[11] == "left_shoulder" and len(metadata.labels) == 33
    with pytest.raises(UsageError, match="no parameter"):
        build("blazepose_landmark", classes=3)


def test_litert_returns_outputs_in_keras_order(tmp_path):
    """The converter numbers outputs by sorted name; a model whose names do not sort in its own
    order must still come back in the Keras order (the bug this guards against swapped them)."""
    from edgecompress._env import import_tf_keras
    from edgecompress.artifacts import Metadata, write_metadata

    tf_keras = import_tf_keras()
    inputs = tf_keras.Input((8, 8, 3))
    flat = tf_keras.layers.Flatten()(inputs)
    outputs = [tf_keras.layers.Dense(n, name=name)(flat) for name, n in (("zeta", 2), ("alpha", 3), ("mid", 4))]
    model = tf_keras.Model(inputs, outputs)
    model.save(tmp_path / "m.h5")
    write_metadata(tmp_path / "m.h5", Metadata(task="unknown"))
    report = api.export(tmp_path / "m.h5", tmp_path / "m.tflite")  # validated against Keras: order must match
    with open_session(report.output) as session:
        assert [s.shape[-1] for s in session.outputs] == [2, 3, 4]


# --------------------------------------------------------------------------- tasks and metrics


def test_segmentation_metrics_by_hand():
    masks = np.array([[[0, 0], [1, 1]]])
    logits = np.eye(3)[np.array([[[0, 1], [1, 1]]])]  # one background pixel called class 1
    scores = TASKS.get("segmentation").score([logits], masks)
    # IoU background 1/2, class 1 2/3; class 2 absent from both so not counted.
    assert scores["miou"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert scores["pixel_accuracy"] == pytest.approx(3 / 4)
    assert scores["dice"] == pytest.approx((2 / 3 + 4 / 5) / 2)


def test_keypoint_metrics_and_baseline():
    points = load_images("synthetic-poses:test").keypoints
    task = TASKS.get("keypoints")
    perfect = task.score([points.copy()], points)
    assert perfect["pck@0.2"] == 1.0 and perfect["nme"] == 0.0
    torso = np.linalg.norm(points[:, 11, :2] - points[:, 24, :2], axis=-1)
    shifted = points.copy()
    shifted[..., 0] += 0.3 * torso[:, None]
    assert task.score([shifted], points)["pck@0.2"] == 0.0
    train = load_images("synthetic-poses:train")
    baseline = trivial_baseline("keypoints", train, load_images("synthetic-poses:test"), [(None, 33, 4)])
    assert 0.0 < baseline["pck@0.2"] < 0.5  # figures move and bend: the mean pose misses most joints


def test_detection_and_classification_scores():
    boxes = np.array([[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 1.0, 1.0]], np.float32)
    predicted = np.array([[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.5, 1.0]], np.float32)
    scores = TASKS.get("detection").score([predicted], boxes)
    assert scores["box_iou"] == pytest.approx(0.75) and scores["iou@0.5"] == 1.0
    logits = np.array([[0.1, 0.9], [0.8, 0.2]])
    assert TASKS.get("classification").score([logits], np.array([1, 1]))["top1"] == 0.5


# --------------------------------------------------------------------------- data and its errors


class FixedSession(Session):
    """A session whose outputs have given shapes: lets evaluate() be tested without a model."""

    runtime, device, threads = "fixed", "cpu", None

    def __init__(self, input_shape, output_shapes):
        self.inputs = [TensorSpec("x", (None, *input_shape), "float32")]
        self.outputs = [TensorSpec(f"y{i}", (None, *s), "float32") for i, s in enumerate(output_shapes)]

    def _run_float(self, x):
        return [np.zeros((len(x), *s.shape[1:]), np.float32) for s in self.outputs]

    def prepare_raw(self, x):
        return x

    def run_raw(self, prepared):
        return None


def _one_line_data_error(call, match: str) -> None:
    with pytest.raises(DataError, match=match) as info:
        call()
    assert "\n" not in str(info.value) and info.value.hint


def test_synthetic_sets_are_deterministic_and_exact():
    from edgecompress.calibration import synthetic

    images, masks = synthetic.synthetic_shapes.__wrapped__("test", 32)
    again, masks_again = synthetic.synthetic_shapes.__wrapped__("test", 32)
    assert np.array_equal(images, again) and np.array_equal(masks, masks_again)
    assert set(np.unique(masks)) == {0, 1, 2, 3}
    # Exact masks: the segmentation score of the true masks as predictions is perfect.
    assert TASKS.get("segmentation").score([np.eye(4)[masks]], masks)["miou"] == 1.0
    poses = load_images("synthetic-poses:test")
    assert poses.keypoints.shape == (300, 33, 4) and "synthetic" in poses.source
    visible = poses.keypoints[..., 3] > 0
    assert np.all((poses.keypoints[..., :2][visible] >= 0) & (poses.keypoints[..., :2][visible] < 1))


def test_npz_for_every_task(tmp_path):
    x = np.zeros((3, 16, 16, 3), np.uint8)
    np.savez(tmp_path / "cls.npz", x=x, y=np.array([0, 1, 2]))
    np.savez(tmp_path / "seg.npz", x=x, masks=np.zeros((3, 16, 16), np.uint8))
    np.savez(tmp_path / "kp.npz", x=x, keypoints=np.full((3, 5, 3), 8.0))
    assert load_images(tmp_path / "cls.npz").kind == "labels"
    assert load_images(tmp_path / "seg.npz").kind == "masks"
    points = load_images(tmp_path / "kp.npz").keypoints
    assert points.shape == (3, 5, 4) and np.allclose(points[..., :2], 0.5) and np.all(points[..., 3] == 1)
    np.savez(tmp_path / "bad.npz", x=x, masks=np.zeros((3, 8, 8), np.uint8))
    _one_line_data_error(lambda: load_images(tmp_path / "bad.npz"), "masks .* are 8×8 but the images are 16×16")


def test_folder_layouts_and_their_errors(tmp_path):
    seg = tmp_path / "seg"
    (seg / "images").mkdir(parents=True)
    (seg / "masks").mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(seg / "images" / "a.png")
    Image.fromarray(np.ones((16, 16), np.uint8)).save(seg / "masks" / "a.png")
    data = load_images(seg, target_hw=(8, 8))
    assert data.masks.shape == (1, 8, 8) and data.masks.max() == 1
    Image.fromarray(np.ones((12, 16), np.uint8)).save(seg / "masks" / "a.png")
    _one_line_data_error(lambda: load_images(seg), "mask a.png is 16×12 but its image is 16×16")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(seg / "images" / "b.png")
    Image.fromarray(np.ones((16, 16), np.uint8)).save(seg / "masks" / "a.png")
    _one_line_data_error(lambda: load_images(seg), "b.png has no mask")

    kp = tmp_path / "kp"
    kp.mkdir()
    Image.fromarray(np.zeros((20, 10, 3), np.uint8)).save(kp / "p.png")
    coco = {"images": [{"id": 1, "file_name": "p.png"}], "annotations": [{"image_id": 1, "keypoints": [5, 10, 2, 0, 0, 0]}]}
    (kp / "person_keypoints.json").write_text(json.dumps(coco))
    points = load_images(kp).keypoints
    assert points.shape == (1, 2, 4) and np.allclose(points[0, 0], [0.5, 0.5, 0, 1]) and points[0, 1, 3] == 0
    coco["images"].append({"id": 2, "file_name": "p.png"})
    (kp / "person_keypoints.json").write_text(json.dumps(coco))
    _one_line_data_error(lambda: load_images(kp), "image p.png has no keypoints")


def test_evaluate_rejects_mismatched_data():
    poses = load_images("synthetic-poses:test").take(4)
    inputs = ModelInputs.build(poses, (64, 64, 3), ZOO.get("unet").preprocessing)
    session = FixedSession((64, 64, 3), [(17, 4), (16, 16, 17)])
    _one_line_data_error(lambda: evaluate(session, inputs, "keypoints"), "17 keypoints.*--keypoints 33|33 keypoints .* 17")
    digits = ModelInputs.build(load_images("digits").take(4), (32, 32, 3), ZOO.get("unet").preprocessing)
    _one_line_data_error(lambda: evaluate(FixedSession((32, 32, 3), [(32, 32, 4)]), digits, "segmentation"), "needs masks")
    unlabelled = ModelInputs.build(ImageSet(poses.images, None, "plain images"), (64, 64, 3), ZOO.get("unet").preprocessing)
    _one_line_data_error(lambda: evaluate(session, unlabelled, "keypoints"), "has no labels")
    shapes = ModelInputs.build(load_images("synthetic-shapes").take(4), (32, 32, 3), ZOO.get("unet").preprocessing)
    _one_line_data_error(lambda: evaluate(FixedSession((32, 32, 3), [(32, 32, 2)]), shapes, "segmentation"), "2 classes")


# --------------------------------------------------------------------------- CLI


def test_cli_zoo_list_build_and_errors(tmp_path):
    from edgecompress.cli import cli

    runner = CliRunner()
    listed = runner.invoke(cli, ["zoo", "list", "--no-macs"])
    assert listed.exit_code == 0
    for name in ZOO.names():
        assert name in listed.output
    out = tmp_path / "unet.h5"
    built = runner.invoke(cli, ["zoo", "build", "unet", "--input-size", "32", "--depth", "2", "--base-filters", "4", "-o", str(out)])
    assert built.exit_code == 0, built.output
    assert Artifact.open(out).metadata.task == "segmentation"
    bad = runner.invoke(cli, ["zoo", "build", "mobilenet_v2", "--keypoints", "3", "-o", str(tmp_path / "x.h5")])
    assert bad.exit_code == 2 and "no parameter(s) keypoints" in bad.output and bad.output.count("\n") == 1


def test_cli_zoo_train_keeps_best_epoch_and_metadata(tmp_path):
    from edgecompress.cli import cli

    out = tmp_path / "mnv2.h5"
    args = ["zoo", "train", "mobilenet_v2", "--input-size", "32", "--alpha", "0.35", "--classes", "10",
            "--epochs", "2", "-q", "-o", str(out)]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "top1" in result.output and "trivial" in result.output
    metadata = Artifact.open(out).metadata
    assert metadata.labels == tuple(str(i) for i in range(10)) and metadata.extra["epochs"] == 2
    mismatch = CliRunner().invoke(cli, ["zoo", "train", "unet", "--data", "digits", "--input-size", "32", "-o", str(tmp_path / "u.h5")])
    assert mismatch.exit_code == 4 and "needs masks" in mismatch.output
