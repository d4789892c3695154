"""Tasks: what a model's output means and how it is scored, the same for every runtime."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edgecompress.calibration.data import ModelInputs
from edgecompress.errors import DataError
from edgecompress.registry import Registry
from edgecompress.runtimes.base import Session


@dataclass(frozen=True)
class Task:
    name: str
    #: the metric a report leads with (higher is better)
    primary_metric: str
    score: Callable[[list[np.ndarray], np.ndarray], dict[str, float]]
    check_labels: Callable[[np.ndarray, tuple], None]


def _classification_labels(labels: np.ndarray, output_shape: tuple) -> None:
    classes = output_shape[-1]
    if classes is not None and labels.max() >= classes:
        raise DataError(
            f"labels go up to {int(labels.max())} but the model predicts {classes} classes",
            "check that the data's classes match the model's",
        )


def _classification_score(outputs: list[np.ndarray], labels: np.ndarray) -> dict[str, float]:
    logits = outputs[0].reshape(len(labels), -1)
    top = np.argsort(-logits, axis=1)
    k = min(5, logits.shape[1])
    return {
        "top1": float(np.mean(top[:, 0] == labels)),
        "top5": float(np.mean(np.any(top[:, :k] == labels[:, None], axis=1))),
    }


TASKS: Registry[Task] = Registry("task")
TASKS.add(
    "classification",
    Task("classification", "top1", _classification_score, _classification_labels),
    "classifier",
)


def infer_task(output_shape: tuple[int | None, ...]) -> str:
    """A best guess when the model carries no metadata: a flat output is a classifier."""
    return "classification" if len(output_shape) == 1 else "unknown"


def evaluate(session: Session, data: ModelInputs, task: str = "classification", batch_size: int = 32) -> dict[str, float]:
    """Score a session on labelled data with the task's metrics (fractions in [0, 1])."""
    spec = TASKS.get(task)
    labels = data.data.labels
    if labels is None:
        raise DataError(f"{data.source} has no labels, so accuracy cannot be measured", "pass labelled data to --eval")
    spec.check_labels(labels, session.outputs[0].shape)
    pieces = [session.run(batch, batch_size=batch_size) for batch in data.batches(256)]
    outputs = [np.concatenate(parts, axis=0) for parts in zip(*pieces, strict=True)]
    scores = spec.score(outputs, labels)
    scores["samples"] = float(len(labels))
    return scores
