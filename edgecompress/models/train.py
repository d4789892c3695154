"""A small training loop for zoo models and training passes: Keras fit with a progress bar."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgecompress._env import import_tf_keras
from edgecompress.artifacts import Metadata, atomic_path, write_metadata
from edgecompress.calibration.data import ModelInputs


def train_classifier(
    model,
    train: ModelInputs,
    validation: ModelInputs | None = None,
    epochs: int = 10,
    batch_size: int = 32,
    lr: float = 1e-3,
    progress: bool = True,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Fit with Adam and sparse cross-entropy; keeps the weights of the best validation epoch."""
    tf_keras = import_tf_keras()
    tf_keras.utils.set_random_seed(seed)
    x, y = train.array(), train.data.labels
    val = (validation.array(), validation.data.labels) if validation is not None else None
    steps = epochs * int(np.ceil(len(x) / batch_size))
    # Cosine decay: the last epochs settle instead of bouncing between minima on small data.
    schedule = tf_keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, steps), alpha=0.05)
    model.compile(
        optimizer=tf_keras.optimizers.Adam(schedule),
        loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=_has_logits(model)),
        metrics=["accuracy"],
    )
    callbacks = []
    if progress:
        from tqdm.keras import TqdmCallback

        callbacks.append(TqdmCallback(verbose=0, leave=False))
    if val is not None:
        callbacks.append(
            tf_keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=epochs, restore_best_weights=True)
        )
    history = model.fit(
        x, y, batch_size=batch_size, epochs=epochs, validation_data=val, verbose=0, callbacks=callbacks, shuffle=True
    )
    return {k: [float(v) for v in values] for k, values in history.history.items()}


def _has_logits(model) -> bool:
    activation = getattr(model.layers[-1], "activation", None)
    return getattr(activation, "__name__", "") != "softmax"


def save_model(model, path: Path, metadata: Metadata) -> Path:
    """Save as .h5 (or .keras) atomically, with the metadata sidecar."""
    path = Path(path)
    with atomic_path(path) as tmp:
        # The optimizer state is training debris: it would inflate every "size before" figure.
        model.save(tmp, **({} if path.suffix == ".keras" else {"include_optimizer": False}))
        write_metadata(path, metadata)  # before the rename: the model's appearance is the commit
    return path


def accuracy(model, data: ModelInputs) -> float:
    predictions = np.argmax(model.predict(data.array(), verbose=0), axis=-1)
    return float(np.mean(predictions == data.data.labels))
