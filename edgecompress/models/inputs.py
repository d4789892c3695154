"""What one model takes in: its input shape, its preprocessing, and data loaded and split for it.

Resolved once per run, so every pass, evaluation and benchmark of that run sees the same inputs:
options beat the model's metadata sidecar, and without either we assume [0, 1] pixels and say so.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from edgecompress.artifacts import Artifact
from edgecompress.calibration.data import EMBEDDED_DATA, ImageSet, ModelInputs, load_images
from edgecompress.calibration.preprocessing import Preprocessing
from edgecompress.errors import UsageError

log = logging.getLogger(__name__)

DEFAULT_CALIBRATION_SAMPLES = 100
#: the share of user data set aside for evaluation when it has no test split and none is given
HOLDOUT_FRACTION = 0.2

DataSpec = str | os.PathLike | ImageSet


@dataclass(frozen=True)
class ResolvedPreprocessing:
    preprocessing: Preprocessing
    origin: str  # "options", "model metadata" or "assumed default"


def resolve_preprocessing(artifact: Artifact, overrides: dict[str, Any] | None = None) -> ResolvedPreprocessing:
    """Options beat the model's metadata; without either we assume [0, 1] inputs and say so."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    base = artifact.metadata.preprocessing
    if overrides:
        merged = {**(base.to_dict() if base else {}), **overrides}
        try:
            return ResolvedPreprocessing(Preprocessing.from_dict(merged), "options")
        except ValueError as exc:
            raise UsageError(f"bad preprocessing option: {exc}", "see `compress quantize --help`") from None
    if base:
        return ResolvedPreprocessing(base, "model metadata")
    return ResolvedPreprocessing(Preprocessing(), "assumed default; pass --scale/--offset or --mean/--std")


def input_shape_of(artifact: Artifact, trust_model: bool = False) -> tuple[int, ...]:
    """The model's input shape without the batch dimension, as the model itself declares it.

    The sidecar only fills sizes the model leaves open. A sidecar that names other sizes was edited or
    copied beside another model: it is named in a warning and its shape ignored, never trusted over the model.
    """
    model = _declared_by_model(artifact, trust_model)
    sidecar = artifact.metadata.inputs[0].shape if artifact.metadata.inputs else None
    shape = model
    if sidecar is not None:
        known = [(m if m and m > 0 else None, s) for m, s in zip(model, sidecar, strict=False)]
        if len(sidecar) == len(model) and all(m is None or s is None or m == s for m, s in known):
            shape = tuple(s if m is None else m for m, s in known)
        else:
            log.warning("the metadata sidecar %s gives the input shape %s, but the model takes %s: using the model's",
                        artifact.sidecar, tuple(sidecar), tuple(model))  # fmt: skip
    return tuple(int(d) if d else -1 for d in shape)


def _declared_by_model(artifact: Artifact, trust_model: bool) -> tuple[int | None, ...]:
    if artifact.format.is_keras:
        from edgecompress.runtimes.keras_io import load_keras

        # The pass that reads this model next gets it from load_keras's cache.
        return tuple(load_keras(artifact.path, trust_model=trust_model).input_shape)
    from edgecompress.runtimes import open_session

    with open_session(artifact) as session:
        return tuple(session.inputs[0].shape[1:])


def _target_hw(input_shape: tuple[int, ...]) -> tuple[int, int] | None:
    return tuple(input_shape[:2]) if len(input_shape) == 3 else None


def model_inputs(
    spec: DataSpec,
    input_shape: tuple[int, ...],
    preprocessing: Preprocessing,
    split: str = "test",
    samples: int | None = None,
    need_labels: bool = False,
) -> ModelInputs:
    """Load data for one model: resized to its input, preprocessed as its metadata says."""
    data = spec if isinstance(spec, ImageSet) else load_images(spec, split, _target_hw(input_shape), need_labels)
    return ModelInputs.build(data.take(samples), input_shape, preprocessing)


def training_inputs(
    spec: DataSpec,
    eval_spec: DataSpec | None,
    input_shape: tuple[int, ...],
    preprocessing: Preprocessing,
    val_split: float = HOLDOUT_FRACTION,
) -> tuple[ModelInputs, ModelInputs]:
    """Labelled training data and held-out data that never overlaps it.

    Held out: ``eval_spec`` when given; the test split of an embedded set (digits, synthetic-*);
    otherwise a seeded ``val_split`` of the data, set aside before training.
    """
    target = _target_hw(input_shape)
    data = spec if isinstance(spec, ImageSet) else load_images(spec, "train", target, need_labels=True)
    if eval_spec is not None:
        held = eval_spec if isinstance(eval_spec, ImageSet) else load_images(eval_spec, "test", target, need_labels=True)
    elif not isinstance(spec, ImageSet) and str(spec) in EMBEDDED_DATA:
        held = load_images(spec, "test", target, need_labels=True)
    else:
        data, held = data.split(val_split)
    return ModelInputs.build(data, input_shape, preprocessing), ModelInputs.build(held, input_shape, preprocessing)
