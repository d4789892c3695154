"""Knowledge distillation: the losses of each task, and end-to-end runs that report both students."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edgecompress import api
from edgecompress.artifacts import read_sidecar
from edgecompress.calibration.data import load_digits, load_images
from edgecompress.compress.distill import coordinate_kd, heatmap_kd, parse_student, softmax_kd
from edgecompress.errors import UsageError


def _value(tensor) -> float:
    return float(np.asarray(tensor))


def test_softmax_kd_is_zero_on_agreement_and_takes_probabilities_or_logits():
    rng = np.random.default_rng(0)
    teacher = rng.standard_normal((6, 10)).astype(np.float32)
    student = rng.standard_normal((6, 10)).astype(np.float32)
    on_logits = softmax_kd(4.0, teacher_probs=False, student_probs=False)
    assert _value(on_logits(teacher, teacher)) == pytest.approx(0.0, abs=1e-5)
    assert _value(on_logits(teacher, student)) > 0.1
    probs = np.exp(teacher) / np.exp(teacher).sum(axis=-1, keepdims=True)
    on_probs = softmax_kd(4.0, teacher_probs=True, student_probs=False)
    assert _value(on_probs(probs, student)) == pytest.approx(_value(on_logits(teacher, student)), rel=1e-4)
    # per pixel: the same loss over (N, H, W, classes)
    maps = rng.standard_normal((2, 4, 4, 3)).astype(np.float32)
    assert _value(on_logits(maps, maps)) == pytest.approx(0.0, abs=1e-5)
    assert _value(on_logits(maps, maps[:, ::-1])) > 0


def test_keypoint_losses():
    rng = np.random.default_rng(1)
    heat = rng.uniform(0, 1, (2, 8, 8, 5)).astype(np.float32)
    assert _value(heatmap_kd(heat, heat)) == 0.0 and _value(heatmap_kd(heat, heat * 0.5)) > 0
    points = rng.uniform(0, 1, (2, 5, 4)).astype(np.float32)
    moved = points.copy()
    moved[..., 3] += 5.0  # the visibility logit is not a coordinate
    assert _value(coordinate_kd(points, moved)) == 0.0
    moved[..., 0] += 0.1
    assert _value(coordinate_kd(points, moved)) == pytest.approx(0.1, rel=1e-4)


def test_parse_student():
    assert parse_student("mobilenet_v2:alpha=0.35,input_size=96") == ("mobilenet_v2", {"alpha": 0.35, "input_size": 96})
    assert parse_student("unet:decoder=upsample") == ("unet", {"decoder": "upsample"})
    with pytest.raises(UsageError, match="no value"):
        parse_student("mobilenet_v2:alpha")


def test_classification_distillation_reports_alone_and_distilled(tiny_classifier, out):
    train, held = load_digits("train").take(192), load_digits("test").take(120)
    report = api.distill(tiny_classifier, "mobilenet_v1:alpha=0.25", out / "student.h5", train, epochs=1,
                         batch_size=32, eval=held, progress=False)  # fmt: skip
    scores = report.details["scores"]
    for name in ("teacher", "alone", "distilled"):
        assert 0.0 <= scores[name]["top1"] <= 1.0 and scores[name]["samples"] == 120
    assert report.details["student_params"] < report.details["teacher_params"]
    metadata = read_sidecar(report.output.path)
    assert metadata.task == "classification" and metadata.lineage[-1].step == "distill"
    assert metadata.lineage[-1].params["student"] == "mobilenet_v1:alpha=0.25"
    assert metadata.inputs[0].shape == (32, 32, 3)
    with pytest.raises(UsageError, match="neither a model file nor a zoo model"):
        api.distill(tiny_classifier, "no_such_net", out / "x.h5", train, epochs=1, progress=False)


def _saved_zoo_model(name: str, params: dict, path):
    from edgecompress.models.train import save_model
    from edgecompress.models.zoo import build

    model, metadata = build(name, **params)
    return save_model(model, path, metadata)


@pytest.mark.parametrize(
    ("teacher", "params", "student", "data", "metric"),
    [
        ("unet", {"input_size": 32, "alpha": 0.25, "depth": 2}, "unet:alpha=0.125,depth=2", "synthetic-shapes", "miou"),
        ("blazepose_landmark", {"input_size": 64, "alpha": 0.25}, "blazepose_landmark:alpha=0.125",
         "synthetic-poses", "pck@0.2"),
    ],
)  # fmt: skip
def test_dense_task_distillation_runs(teacher, params, student, data, metric, out):
    teacher_path = _saved_zoo_model(teacher, params, out / "teacher.h5")
    size = params["input_size"]
    train = load_images(data, "train", (size, size)).take(48)
    held = load_images(data, "test", (size, size)).take(24)
    report = api.distill(teacher_path, student, out / "student.h5", train, epochs=1, batch_size=16, eval=held,
                         progress=False)  # fmt: skip
    scores = report.details["scores"]
    assert report.details["metric"] == metric
    assert np.isfinite(scores["alone"][metric]) and np.isfinite(scores["distilled"][metric])
    assert np.isfinite(report.details["final_losses"]["kd_loss"])
    assert read_sidecar(report.output.path).task == read_sidecar(teacher_path).task


def test_student_must_match_the_teachers_task(tiny_classifier, out):
    train = dataclasses.replace(load_digits("train").take(32))
    with pytest.raises(UsageError, match="segmentation"):
        api.distill(tiny_classifier, "unet", out / "s.h5", train, epochs=1, progress=False)
