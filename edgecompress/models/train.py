"""A small training loop for zoo models and training passes: Keras fit with a progress bar.

Each task says what its outputs are trained against (``_fit_spec``); the loop keeps the weights
of the best validation epoch, so what is saved is the best checkpoint, not the last.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecompress._env import import_tensorflow, import_tf_keras
from edgecompress.artifacts import Metadata, atomic_path, check_output_path, write_metadata
from edgecompress.calibration.data import ImageSet, ModelInputs, load_images
from edgecompress.models import distribute
from edgecompress.models.tasks import boxes_from_keypoints, keypoint_outputs, resize_masks, trivial_baseline

log = logging.getLogger(__name__)

#: heatmap Gaussians' standard deviation, in heatmap cells
HEATMAP_SIGMA = 1.0


@dataclass(frozen=True)
class FitSpec:
    """What Keras fit needs for one task: targets per output, losses, and what 'best' means."""

    targets: list[np.ndarray]
    losses: list[Any]
    monitor: str
    mode: str
    metrics: list[Any] | None = None


def train_model(
    model,
    task: str,
    train: ModelInputs,
    validation: ModelInputs | None = None,
    epochs: int = 10,
    batch_size: int = 32,
    lr: float = 1e-3,
    progress: bool = True,
    seed: int = 0,
    strategy: str | None = None,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
) -> dict[str, list[float]]:
    """Fit with Adam (or ``optimizer``) and the task's losses; keeps the weights of the best validation epoch.

    With a ``strategy`` other than the default, ``model`` must have been built under its scope
    (:func:`distribute.scope`); it is compiled there and fed global batches sharded by data.
    ``optimizer`` "sgd" is SGD with Nesterov momentum 0.9, the ImageNet recipes' choice;
    ``weight_decay`` is decoupled (Loshchilov & Hutter), on every weight."""
    tf_keras = import_tf_keras()
    tf_keras.utils.set_random_seed(seed)
    spec = _fit_spec(model, task, train.data)
    val = None
    if validation is not None:
        val = (validation.array(), _single(_fit_spec(model, task, validation.data).targets))
    x = train.array()
    steps = epochs * int(np.ceil(len(x) / batch_size))
    # Cosine decay: the last epochs settle instead of bouncing between minima on small data.
    schedule = tf_keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, steps), alpha=0.05)
    with distribute.scope(strategy):
        model.compile(optimizer=_optimizer(optimizer, schedule, weight_decay), loss=_single(spec.losses),
                      metrics=spec.metrics)  # fmt: skip
    callbacks = []
    if progress:
        from edgecompress._progress import keras_progress

        callbacks.append(keras_progress())
    if val is not None:
        callbacks.append(
            tf_keras.callbacks.EarlyStopping(
                monitor=spec.monitor, mode=spec.mode, patience=epochs, restore_best_weights=True
            )
        )
    history = _fit(model, x, _single(spec.targets), batch_size, epochs, seed, strategy, validation_data=val,
                   callbacks=callbacks)  # fmt: skip
    return {k: [float(v) for v in values] for k, values in history.history.items()}


OPTIMIZERS = ("adam", "sgd")


def _optimizer(name: str, schedule, weight_decay: float = 0.0):
    tf_keras = import_tf_keras()
    decay = {"weight_decay": weight_decay} if weight_decay else {}
    if name == "adam":
        return tf_keras.optimizers.Adam(schedule, **decay)
    if name == "sgd":
        return tf_keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True, **decay)
    raise ValueError(f"unknown optimizer {name!r}: choose one of {', '.join(OPTIMIZERS)}")


def _fit(model, x, targets, batch_size: int, epochs: int, seed: int, strategy: str | None, **kwargs: Any):
    """Keras fit on arrays (the default strategy: exactly as before), or on a sharded dataset."""
    if distribute.is_default(strategy):
        return model.fit(x, targets, batch_size=batch_size, epochs=epochs, verbose=0, shuffle=True, **kwargs)
    with distribute.scope(strategy):
        data = distribute.sharded_dataset(x, targets, batch_size, seed)
        return model.fit(data, epochs=epochs, verbose=0, **kwargs)


def _single(values: list) -> Any:
    """Keras wants a bare target and loss for a one-output model (a list of one breaks its metrics)."""
    return values[0] if len(values) == 1 else values


def train_classifier(model, train: ModelInputs, validation: ModelInputs | None = None, **kwargs: Any):
    """Kept for callers from before the zoo had other tasks."""
    return train_model(model, "classification", train, validation, **kwargs)


def _fit_spec(model, task: str, data: ImageSet) -> FitSpec:
    tf_keras = import_tf_keras()
    shapes = [tuple(o.shape) for o in model.outputs]
    if task == "classification":
        loss = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=_has_logits(model))
        return FitSpec([data.labels], [loss], "val_accuracy", "max", ["accuracy"])
    if task == "segmentation":
        masks = resize_masks(data.masks, *shapes[0][1:3]).astype(np.int32)
        loss = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=_has_logits(model))
        return FitSpec([masks], [loss], "val_loss", "min")
    if task == "detection":
        return FitSpec([boxes_from_keypoints(data.keypoints)], [tf_keras.losses.Huber(delta=0.1)], "val_loss", "min")
    if task == "keypoints":
        regression, heatmap = keypoint_outputs(shapes)
        targets: list[np.ndarray] = [np.empty(0)] * len(shapes)
        losses: list[Any] = [None] * len(shapes)
        if regression is not None:
            targets[regression], losses[regression] = data.keypoints, landmark_loss
        if heatmap is not None:
            targets[heatmap] = gaussian_heatmaps(data.keypoints, *shapes[heatmap][1:3])
            losses[heatmap] = heatmap_loss
        return FitSpec(targets, losses, "val_loss", "min")
    raise ValueError(f"no training recipe for task {task!r}")


def landmark_loss(y_true, y_pred):
    """L1 on x, y, z of labelled keypoints, plus a small visibility cross-entropy (on logits)."""
    tf = import_tensorflow()
    visible = y_true[..., 3]
    coords = tf.reduce_sum(tf.abs(y_true[..., :3] - y_pred[..., :3]), axis=-1)
    coords = tf.reduce_sum(coords * visible, axis=-1) / (tf.reduce_sum(visible, axis=-1) + 1e-6)
    flags = tf.nn.sigmoid_cross_entropy_with_logits(labels=visible, logits=y_pred[..., 3])
    return coords + 0.1 * tf.reduce_mean(flags, axis=-1)


def heatmap_loss(y_true, y_pred):
    """Squared error summed over each map (a per-pixel mean would be swamped by the empty background)."""
    tf = import_tensorflow()
    return tf.reduce_mean(tf.reduce_sum(tf.square(y_true - y_pred), axis=[1, 2]), axis=-1) * 0.1


def gaussian_heatmaps(points: np.ndarray, height: int, width: int, sigma: float = HEATMAP_SIGMA) -> np.ndarray:
    """(N, H, W, K) Gaussians at the keypoints (peak 1), empty for unlabelled ones."""
    ys = (np.arange(height, dtype=np.float32) + 0.5)[None, :, None, None]
    xs = (np.arange(width, dtype=np.float32) + 0.5)[None, None, :, None]
    px = points[:, None, None, :, 0] * width
    py = points[:, None, None, :, 1] * height
    maps = np.exp(-((xs - px) ** 2 + (ys - py) ** 2) / (2 * sigma**2))
    return (maps * points[:, None, None, :, 3]).astype(np.float32)


def _has_logits(model) -> bool:
    layer = model.layers[-1]
    layer = getattr(layer, "layer", layer)  # TFMOT's QuantizeWrapper holds the real layer
    activation = getattr(layer, "activation", None)
    activation = getattr(activation, "activation", activation)  # TFMOT's QuantizeAwareActivation
    return getattr(activation, "__name__", "") != "softmax"


def save_model(model, path: Path, metadata: Metadata) -> Path:
    """Save as .h5 (or .keras) atomically, with the metadata sidecar."""
    path = Path(path)
    with atomic_path(path) as tmp:
        # The optimizer state is training debris: it would inflate every "size before" figure.
        model.save(tmp, **({} if path.suffix == ".keras" else {"include_optimizer": False}))
        write_metadata(path, metadata)  # before the rename: the model's appearance is the commit
    from edgecompress.runtimes.probe import trust

    trust(path)  # written by this process a moment ago: no need to probe it before loading
    return path


def accuracy(model, data: ModelInputs) -> float:
    predictions = np.argmax(model.predict(data.array(), verbose=0), axis=-1)
    return float(np.mean(predictions == data.data.labels))


# --------------------------------------------------------------------------- zoo training


@dataclass(frozen=True)
class ZooTraining:
    """What `compress zoo train` reports: the saved model and its score beside a trivial predictor."""

    output: Path
    task: str
    metric: str
    scores: dict[str, float]
    baseline: dict[str, float]
    data: str
    validation: str
    epochs: int
    params: dict[str, Any]
    history: dict[str, list[float]]


def train_zoo(
    name: str,
    output: str | Path,
    data: str | Path | None = None,
    epochs: int = 10,
    val_split: float = 0.1,
    batch_size: int = 32,
    lr: float = 2e-3,
    params: dict[str, Any] | None = None,
    progress: bool = True,
    force: bool = False,
    seed: int = 0,
    strategy: str | None = None,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
) -> ZooTraining:
    """Build a zoo model, train it (default: its embedded data), save the best epoch with metadata.

    ``strategy``: a tf.distribute strategy name; the model is built and trained under it.
    ``optimizer``, ``weight_decay``: as in :func:`train_model`."""
    from edgecompress.models.tasks import TASKS, evaluate
    from edgecompress.models.zoo import ZOO, build
    from edgecompress.runtimes.keras_tf import KerasSession

    output = check_output_path(Path(output), force)
    entry = ZOO.get(name)
    with distribute.scope(strategy):
        model, metadata = build(name, **(params or {}))
    shape = metadata.inputs[0].shape
    spec = str(data) if data is not None else entry.embedded_data
    loaded = load_images(spec, split="train", target_hw=tuple(shape[:2]), need_labels=True)
    shapes = [tuple(o.shape) for o in model.outputs]
    TASKS.get(entry.task).targets(loaded, shapes)  # a data/model mismatch fails before training
    train_set, val_set = loaded.split(val_split, seed)
    train = ModelInputs.build(train_set, shape, metadata.preprocessing)
    validation = ModelInputs.build(val_set, shape, metadata.preprocessing)
    log.info("training %s on %d samples, validating on %d", name, len(train), len(validation))
    history = train_model(model, entry.task, train, validation, epochs, batch_size, lr, progress, seed, strategy,
                          optimizer, weight_decay)  # fmt: skip
    scores = evaluate(KerasSession(model, "cpu", None), validation, entry.task)
    baseline = trivial_baseline(entry.task, train_set, val_set, shapes)
    labels = metadata.labels or (loaded.label_names if entry.task in ("classification", "segmentation") else None)
    metadata = dataclasses.replace(
        metadata,
        labels=labels,
        extra={**metadata.extra, "model_name": output.stem, "trained_on": loaded.source, "epochs": epochs,
               **({"optimizer": optimizer, "weight_decay": weight_decay} if (optimizer, weight_decay) != ("adam", 0.0)
                  else {}),
               **({} if distribute.is_default(strategy) else {"strategy": distribute.parse_strategy(strategy)})},
    )  # fmt: skip
    save_model(model, output, metadata)
    return ZooTraining(
        output, entry.task, TASKS.get(entry.task).primary_metric, scores, baseline, loaded.source,
        f"{len(val_set)} held-out samples ({val_split:.0%})", epochs, metadata.extra["zoo_params"], history,
    )  # fmt: skip


# --------------------------------------------------------------------------- fine-tuning (training passes)


def fine_tune(
    model,
    task: str,
    train: ModelInputs,
    epochs: int = 2,
    batch_size: int = 32,
    lr: float = 1e-4,
    progress: bool = True,
    seed: int = 0,
    callbacks: tuple = (),
    loss: Any = None,
    strategy: str | None = None,
) -> dict[str, list[float]]:
    """Fit for a fixed budget with the task's losses plus extra callbacks; keeps the last epoch.

    Why not :func:`train_model`: pruning and clustering need their own callbacks, and restoring a
    "best" epoch would restore an earlier pruning mask; the report's held-out data is never used
    to pick the checkpoint, so the figures it prints are not optimistic. ``strategy``: as in
    :func:`train_model` (the model built under its scope).
    """
    tf_keras = import_tf_keras()
    tf_keras.utils.set_random_seed(seed)
    spec = _fit_spec(model, task, train.data)
    x = train.array()
    steps = epochs * int(np.ceil(len(x) / batch_size))
    schedule = tf_keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, steps), alpha=0.05)
    with distribute.scope(strategy):
        model.compile(
            optimizer=tf_keras.optimizers.Adam(schedule), loss=loss if loss is not None else _single(spec.losses),
            metrics=spec.metrics,
        )  # fmt: skip
    extra = list(callbacks)
    if progress:
        from edgecompress._progress import keras_progress

        extra.append(keras_progress())
    history = _fit(model, x, _single(spec.targets), batch_size, epochs, seed, strategy, callbacks=extra)
    return {k: [float(v) for v in values] for k, values in history.history.items()}


def fit_spec(model, task: str, data: ImageSet) -> FitSpec:
    """Targets and losses, one per output of ``model``, of ``task`` on ``data`` (for custom loops)."""
    return _fit_spec(model, task, data)


def outputs_probabilities(model) -> bool:
    """Whether the model ends in a softmax (probabilities) rather than logits."""
    return not _has_logits(model)
