"""Tasks: what a model's output means and how it is scored, the same for every runtime.

Scoring is pure numpy on the outputs of ``Session.run`` (a list in the Keras output order), so a
TFLite int8 model scored in LiteRT and its Keras source are judged by identical code. Each task
also gives a trivial predictor's score (majority class, mean pose, …) to set a metric beside.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edgecompress.calibration.data import ImageSet, ModelInputs
from edgecompress.calibration.preprocessing import resize
from edgecompress.errors import DataError
from edgecompress.registry import Registry
from edgecompress.runtimes.base import Session

Shapes = list[tuple[int | None, ...]]
#: BlazePose topology: PCK's torso size is left shoulder → right hip (as in the BlazePose paper).
TORSO = (11, 24)
PCK_THRESHOLD = 0.2
DATA_HINTS = {
    "labels": "class subfolders, 'digits', or a .npz with x and y",
    "masks": "images/ + masks/ folders, 'synthetic-shapes', or a .npz with x and masks",
    "keypoints": "images + a COCO keypoints .json, 'synthetic-poses', or a .npz with x and keypoints",
}


@dataclass(frozen=True)
class Task:
    name: str
    #: the metric a report leads with (higher is better)
    primary_metric: str
    #: which ImageSet field holds this task's targets
    target_kind: str
    #: validate data against the model's output shapes and return the targets
    targets: Callable[[ImageSet, Shapes], np.ndarray]
    score: Callable[[list[np.ndarray], np.ndarray], dict[str, float]]
    #: the score of a constant predictor fitted on ``train`` targets, evaluated on ``test`` targets
    baseline: Callable[[np.ndarray, np.ndarray, Shapes], dict[str, float]]


def _require(data: ImageSet, kind: str, task: str) -> np.ndarray:
    value = getattr(data, kind)
    if value is None:
        have = f"has {data.kind}" if data.kind else "has no labels"
        raise DataError(f"{data.source} {have}, but a {task} model needs {kind}", f"pass {DATA_HINTS[kind]}")
    return value


# --------------------------------------------------------------------------- classification


def _classification_targets(data: ImageSet, shapes: Shapes) -> np.ndarray:
    labels = _require(data, "labels", "classification")
    classes = shapes[0][-1]
    if classes is not None and labels.max() >= classes:
        raise DataError(
            f"labels go up to {int(labels.max())} but the model predicts {classes} classes",
            "check that the data's classes match the model's (zoo: --classes)",
        )
    return labels


def _classification_score(outputs: list[np.ndarray], labels: np.ndarray) -> dict[str, float]:
    logits = outputs[0].reshape(len(labels), -1)
    top = np.argsort(-logits, axis=1)
    k = min(5, logits.shape[1])
    return {
        "top1": float(np.mean(top[:, 0] == labels)),
        "top5": float(np.mean(np.any(top[:, :k] == labels[:, None], axis=1))),
    }


def _classification_baseline(train: np.ndarray, test: np.ndarray, shapes: Shapes) -> dict[str, float]:
    order = np.argsort(-np.bincount(train, minlength=int(shapes[0][-1] or train.max() + 1)))
    logits = np.zeros((len(test), len(order)), np.float32)
    logits[:, order] = -np.arange(len(order), dtype=np.float32)  # most frequent classes first
    return _classification_score([logits], test)


# --------------------------------------------------------------------------- segmentation


def _segmentation_targets(data: ImageSet, shapes: Shapes) -> np.ndarray:
    masks = _require(data, "masks", "segmentation")
    shape = shapes[0]
    if len(shape) != 4:
        raise DataError(f"the model's output {shape} is not a per-pixel map", "use a segmentation model (e.g. zoo unet)")
    classes = shape[-1]
    if classes is not None and masks.max() >= classes:
        raise DataError(
            f"masks hold class {int(masks.max())} but the model predicts {classes} classes",
            "check that the masks' classes match the model's (zoo: --classes)",
        )
    return masks


def resize_masks(masks: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize: masks stay class indices (they are kept at the images' own size)."""
    if masks.shape[1:3] == (height, width):
        return masks
    return resize(masks[..., None].astype(np.float32), height, width, "nearest")[..., 0].astype(masks.dtype)


def _confusion(predicted: np.ndarray, truth: np.ndarray, classes: int) -> np.ndarray:
    return np.bincount(truth.ravel().astype(np.int64) * classes + predicted.ravel(), minlength=classes**2).reshape(
        classes, classes
    )


def _segmentation_from_labels(predicted: np.ndarray, masks: np.ndarray, classes: int) -> dict[str, float]:
    confusion = _confusion(predicted, resize_masks(masks, *predicted.shape[1:3]), classes)
    hits = np.diag(confusion).astype(np.float64)
    truth, guessed = confusion.sum(axis=1), confusion.sum(axis=0)
    present = (truth + guessed) > 0  # classes absent from both never count, as in the usual mIoU
    return {
        "miou": float(np.mean(hits[present] / (truth + guessed - hits)[present])),
        "dice": float(np.mean(2 * hits[present] / (truth + guessed)[present])),
        "pixel_accuracy": float(hits.sum() / confusion.sum()),
    }


def _segmentation_score(outputs: list[np.ndarray], masks: np.ndarray) -> dict[str, float]:
    logits = outputs[0]
    return _segmentation_from_labels(np.argmax(logits, axis=-1), masks, logits.shape[-1])


def _segmentation_baseline(train: np.ndarray, test: np.ndarray, shapes: Shapes) -> dict[str, float]:
    classes = int(shapes[0][-1] or max(train.max(), test.max()) + 1)
    majority = int(np.argmax(np.bincount(train.ravel(), minlength=classes)))
    return _segmentation_from_labels(np.full(test.shape, majority, np.int64), test, classes)


# --------------------------------------------------------------------------- keypoints


def keypoint_outputs(shapes: Shapes) -> tuple[int | None, int | None]:
    """Indices of the regression (N, K, ≥2) and heatmap (N, H, W, K) outputs, by rank."""
    regression = next((i for i, s in enumerate(shapes) if len(s) == 3 and (s[-1] or 0) >= 2), None)
    heatmap = next((i for i, s in enumerate(shapes) if len(s) == 4), None)
    return regression, heatmap


def _keypoint_targets(data: ImageSet, shapes: Shapes) -> np.ndarray:
    points = _require(data, "keypoints", "keypoints")
    regression, heatmap = keypoint_outputs(shapes)
    if regression is None and heatmap is None:
        raise DataError(f"the model's outputs {shapes} hold no keypoints", "use a keypoint model (e.g. zoo blazepose_landmark)")
    count = shapes[regression][1] if regression is not None else shapes[heatmap][-1]
    if count is not None and points.shape[1] != count:
        raise DataError(
            f"the data has {points.shape[1]} keypoints per image but the model predicts {count}",
            f"build the model with --keypoints {points.shape[1]}, or use data with {count} keypoints",
        )
    return points


def decode_keypoints(outputs: list[np.ndarray]) -> np.ndarray:
    """(N, K, 2) normalised x, y: from the regression head, else from the heatmap's arg-max cell."""
    regression, heatmap = keypoint_outputs([o.shape for o in outputs])
    if regression is not None:
        return outputs[regression][..., :2]
    maps = outputs[heatmap]
    n, h, w, k = maps.shape
    flat = np.argmax(maps.reshape(n, h * w, k), axis=1)
    return np.stack([(flat % w + 0.5) / w, (flat // w + 0.5) / h], axis=-1)


def _normaliser(points: np.ndarray) -> np.ndarray:
    """Per-sample length that errors are divided by: torso size for 33-keypoint BlazePose data,
    else the diagonal of the labelled keypoints' box."""
    visible = points[..., 3] > 0
    if points.shape[1] == 33:
        torso = np.linalg.norm(points[:, TORSO[0], :2] - points[:, TORSO[1], :2], axis=-1)
        if np.all(visible[:, list(TORSO)]):
            return np.maximum(torso, 1e-6)
    low = np.where(visible[..., None], points[..., :2], np.inf).min(axis=1)
    high = np.where(visible[..., None], points[..., :2], -np.inf).max(axis=1)
    diagonal = np.linalg.norm(np.where(np.isfinite(high - low), high - low, 0.0), axis=-1)
    return np.maximum(diagonal, 1e-6)


def _keypoints_from_xy(predicted: np.ndarray, points: np.ndarray) -> dict[str, float]:
    visible = points[..., 3] > 0
    if not visible.any():
        raise DataError("no keypoint in the data is labelled (all visibility 0)", "pass data with labelled keypoints")
    error = np.linalg.norm(predicted - points[..., :2], axis=-1) / _normaliser(points)[:, None]
    return {
        "pck@0.2": float(np.mean(error[visible] < PCK_THRESHOLD)),
        "nme": float(np.mean(error[visible])),
    }


def _keypoint_score(outputs: list[np.ndarray], points: np.ndarray) -> dict[str, float]:
    return _keypoints_from_xy(decode_keypoints(outputs), points)


def _keypoint_baseline(train: np.ndarray, test: np.ndarray, shapes: Shapes) -> dict[str, float]:
    weights = train[..., 3:4]
    mean = (train[..., :2] * weights).sum(axis=0) / np.maximum(weights.sum(axis=0), 1)
    return _keypoints_from_xy(np.broadcast_to(mean, (*test.shape[:2], 2)), test)


# --------------------------------------------------------------------------- detection (one box)


def boxes_from_keypoints(points: np.ndarray, margin: float = 0.1) -> np.ndarray:
    """(N, 4) x0, y0, x1, y1: the labelled keypoints' box grown by ``margin`` of its size per side.

    BlazePose's detector is trained on the same annotations as its landmark model; its box is the
    person's extent, which the keypoints give exactly.
    """
    visible = points[..., 3:4] > 0
    low = np.where(visible, points[..., :2], np.inf).min(axis=1)
    high = np.where(visible, points[..., :2], -np.inf).max(axis=1)
    pad = (high - low) * margin
    return np.clip(np.concatenate([low - pad, high + pad], axis=-1), 0.0, 1.0).astype(np.float32)


def _detection_targets(data: ImageSet, shapes: Shapes) -> np.ndarray:
    points = _require(data, "keypoints", "detection")
    if tuple(shapes[0][1:]) != (4,):
        raise DataError(f"the model's output {shapes[0]} is not one box", "use a box model (e.g. zoo blazepose_detector)")
    if not np.all((points[..., 3] > 0).any(axis=1)):
        raise DataError(f"some images in {data.source} have no labelled keypoint, so no box", "remove them")
    return boxes_from_keypoints(points)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    low, high = np.maximum(a[:, :2], b[:, :2]), np.minimum(a[:, 2:], b[:, 2:])
    inter = np.prod(np.clip(high - low, 0, None), axis=1)
    area = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1) + np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    return inter / np.maximum(area - inter, 1e-9)


def _boxes_from_pred(predicted: np.ndarray, boxes: np.ndarray) -> dict[str, float]:
    iou = box_iou(predicted, boxes)
    return {"box_iou": float(np.mean(iou)), "iou@0.5": float(np.mean(iou >= 0.5))}


def _detection_score(outputs: list[np.ndarray], boxes: np.ndarray) -> dict[str, float]:
    return _boxes_from_pred(outputs[0].reshape(len(boxes), 4), boxes)


def _detection_baseline(train: np.ndarray, test: np.ndarray, shapes: Shapes) -> dict[str, float]:
    return _boxes_from_pred(np.broadcast_to(train.mean(axis=0), test.shape), test)


TASKS: Registry[Task] = Registry("task")
TASKS.add(
    "classification",
    Task("classification", "top1", "labels", _classification_targets, _classification_score, _classification_baseline),
    "classifier",
)
TASKS.add(
    "segmentation",
    Task("segmentation", "miou", "masks", _segmentation_targets, _segmentation_score, _segmentation_baseline),
)
TASKS.add(
    "keypoints",
    Task("keypoints", "pck@0.2", "keypoints", _keypoint_targets, _keypoint_score, _keypoint_baseline),
    "landmarks", "pose",
)
TASKS.add(
    "detection",
    Task("detection", "box_iou", "keypoints", _detection_targets, _detection_score, _detection_baseline),
)


def infer_task(output_shape: tuple[int | None, ...]) -> str:
    """A best guess when the model carries no metadata: a flat output is a classifier."""
    return "classification" if len(output_shape) == 1 else "unknown"


def task_of(declared: str | None, output_shapes: Shapes) -> str:
    """The task of a model, by one rule for every caller: the task its metadata records, else a
    guess from its outputs (one flat output is a classifier), else a clear error.

    ``output_shapes`` include the batch dimension, as sessions and Keras report them.
    """
    if declared and declared != "unknown":
        return TASKS.canonical(declared)
    if len(output_shapes) == 1 and infer_task(tuple(output_shapes[0][1:])) == "classification":
        return "classification"
    raise DataError(
        "cannot tell what this model predicts, so no metric fits it",
        "record the task in the model's metadata sidecar (task: classification|segmentation|keypoints|detection)",
    )


def evaluate(session: Session, data: ModelInputs, task: str = "classification", batch_size: int = 32) -> dict[str, float]:
    """Score a session on labelled data with the task's metrics (fractions in [0, 1]; ``nme`` lower is better)."""
    spec = TASKS.get(task)
    if data.data.kind is None:
        raise DataError(f"{data.source} has no labels, so accuracy cannot be measured", "pass labelled data to --eval")
    targets = spec.targets(data.data, [tuple(o.shape) for o in session.outputs])
    pieces = [session.run(batch, batch_size=batch_size) for batch in data.batches(256)]
    outputs = [np.concatenate(parts, axis=0) for parts in zip(*pieces, strict=True)]
    scores = spec.score(outputs, targets)
    scores["samples"] = float(len(targets))
    return scores


def trivial_baseline(task: str, train: ImageSet, test: ImageSet, output_shapes: Shapes) -> dict[str, float]:
    """The score of the best constant predictor (fitted on ``train``) on ``test``."""
    spec = TASKS.get(task)
    return spec.baseline(spec.targets(train, output_shapes), spec.targets(test, output_shapes), output_shapes)
