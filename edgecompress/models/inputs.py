"""What one model takes in: its input shape, its preprocessing, and data loaded and split for it.

Resolved once per run, so every pass, evaluation and benchmark of that run sees the same inputs:
options beat the model's metadata sidecar, and without either we assume [0, 1] pixels and say so.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecompress.artifacts import Artifact
from edgecompress.calibration.data import EMBEDDED_DATA, ImageSet, ModelInputs, load_images
from edgecompress.calibration.preprocessing import Preprocessing
from edgecompress.errors import DataError, UsageError

DEFAULT_CALIBRATION_SAMPLES = 100
#: the share of user data set aside for evaluation when it has no test split and none is given
HOLDOUT_FRACTION = 0.2

DataSpec = str | os.PathLike | ImageSet


class Role(str, enum.Enum):
    """What a pass uses data for. Distinct roles: one never stands in for another."""

    #: labelled data a pass fine-tunes on
    TRAIN = "train"
    #: inputs that set activation ranges (PTQ); labels not needed
    CALIBRATION = "calibration"
    #: labelled, held out: export checks and the scores of source and output
    VALIDATION = "validation"


#: the split of the embedded data sets each role reads, so training and evaluation never overlap
ROLE_SPLITS = {Role.TRAIN: "train", Role.CALIBRATION: "train", Role.VALIDATION: "test"}


@dataclass(frozen=True)
class DataSource:
    """One role's data: a ``load_images`` spec (or an ImageSet), optionally a seeded subset of it."""

    spec: DataSpec
    samples: int | None = None

    def __post_init__(self) -> None:
        if self.samples is not None and (isinstance(self.samples, bool) or int(self.samples) < 1):
            raise UsageError(f"samples must be a whole number ≥ 1, not {self.samples!r}")

    def describe(self) -> str:
        text = self.spec.source if isinstance(self.spec, ImageSet) else str(self.spec)
        return f"{text} ({self.samples} samples)" if self.samples else text

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.describe() if isinstance(self.spec, ImageSet) else str(self.spec), "samples": self.samples}

    def fingerprint(self) -> dict[str, Any]:
        """What the data is, for cache keys: a file's content hash, an embedded set's name."""
        from edgecompress.artifacts import sha256_of

        path = None if isinstance(self.spec, ImageSet) else Path(self.spec)
        digest = sha256_of(path) if path is not None and path.exists() else None
        return {**self.to_dict(), "sha256": digest}


@dataclass(frozen=True)
class DataPlan:
    """The data a run was given, by role (None: not given)."""

    train: DataSource | None = None
    calibration: DataSource | None = None
    validation: DataSource | None = None
    #: held out of ``train`` when it has no test split and no validation data is given
    val_split: float = HOLDOUT_FRACTION

    def __post_init__(self) -> None:
        if not 0 < float(self.val_split) < 1:
            raise UsageError(f"val_split must be between 0 and 1 (exclusive), not {self.val_split}")

    def get(self, role: Role | str) -> DataSource | None:
        return getattr(self, Role(role).value)


@dataclass(frozen=True)
class RoleData:
    """The data of each role, loaded for one model (its input shape and preprocessing)."""

    train: ModelInputs | None = None
    calibration: ModelInputs | None = None
    validation: ModelInputs | None = None


def load_roles(
    plan: DataPlan, roles: frozenset[Role] | set[Role], input_shape: tuple[int, ...], preprocessing: Preprocessing
) -> RoleData:
    """Load the asked roles for one model, and held-out data wherever it exists.

    Training data always comes with held-out data that never overlaps it: the plan's validation
    data, else the embedded set's test split, else a seeded ``val_split`` of the training data.
    A role that is asked for but not in the plan is the caller's error to report.
    """
    train = validation = calibration = None
    if Role.TRAIN in roles and plan.train is not None:
        train, validation = _training_pair(plan, input_shape, preprocessing)
    elif plan.validation is not None:
        validation = _load(plan.validation, Role.VALIDATION, input_shape, preprocessing)
    if Role.CALIBRATION in roles and plan.calibration is not None:
        calibration = _load(plan.calibration, Role.CALIBRATION, input_shape, preprocessing)
    return RoleData(train, calibration, validation)


def _load(source: DataSource, role: Role, input_shape: tuple[int, ...], preprocessing: Preprocessing) -> ModelInputs:
    samples = source.samples or (DEFAULT_CALIBRATION_SAMPLES if role is Role.CALIBRATION else None)
    labelled = role is not Role.CALIBRATION
    return model_inputs(source.spec, input_shape, preprocessing, ROLE_SPLITS[role], samples, need_labels=labelled)


def _training_pair(plan: DataPlan, input_shape: tuple[int, ...], preprocessing: Preprocessing):
    assert plan.train is not None
    train, held = training_inputs(
        plan.train.spec, plan.validation.spec if plan.validation else None, input_shape, preprocessing, plan.val_split
    )
    if plan.train.samples:
        train = ModelInputs.build(train.data.take(plan.train.samples), train.input_shape, preprocessing)
    if plan.validation is not None and plan.validation.samples:
        held = ModelInputs.build(held.data.take(plan.validation.samples), held.input_shape, preprocessing)
    return train, held


def inputs_for(data: ModelInputs, artifact: Artifact, trust_model: bool = False) -> ModelInputs:
    """The same samples prepared for another model (a distilled student may differ in size or scaling)."""
    shape = input_shape_of(artifact, trust_model)
    preprocessing = artifact.metadata.preprocessing or data.preprocessing
    if tuple(shape) == tuple(data.input_shape) and preprocessing == data.preprocessing:
        return data
    try:
        return ModelInputs.build(data.data, shape, preprocessing)
    except DataError as exc:
        raise DataError(f"{artifact.path} cannot be scored on {data.source}: {exc.message}", exc.hint) from None


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
    """The model's input shape without the batch dimension."""
    if artifact.metadata.inputs:
        shape = artifact.metadata.inputs[0].shape
    elif artifact.format.is_keras:
        from edgecompress.runtimes.keras_io import load_keras

        shape = load_keras(artifact.path, trust_model=trust_model).input_shape
    else:
        from edgecompress.runtimes import open_session

        with open_session(artifact) as session:
            shape = session.inputs[0].shape[1:]
    return tuple(int(d) if d else -1 for d in shape)


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
