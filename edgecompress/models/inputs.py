"""What one model takes in: its input shape, its preprocessing, and data loaded and split for it.

Resolved once per run, so every pass, evaluation and benchmark of that run sees the same inputs:
options beat the model's metadata sidecar, and without either we assume [0, 1] pixels and say so.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgecompress.artifacts import Artifact, InputSpec, ModelFormat
from edgecompress.calibration.data import EMBEDDED_DATA, ImageSet, ModelInputs, image_hwc, load_images
from edgecompress.calibration.preprocessing import Preprocessing
from edgecompress.errors import DataError, UnsupportedError, UsageError
from edgecompress.runtimes.base import guess_layout

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
    plan: DataPlan, roles: frozenset[Role] | set[Role], input_shape: tuple[int, ...], preprocessing: Preprocessing,
    layout: str = "NHWC",
) -> RoleData:
    """Load the asked roles for one model, and held-out data wherever it exists.

    Training data always comes with held-out data that never overlaps it: the plan's validation
    data, else the embedded set's test split, else a seeded ``val_split`` of the training data.
    A role that is asked for but not in the plan is the caller's error to report.
    """
    train = validation = calibration = None
    if Role.TRAIN in roles and plan.train is not None:
        train, validation = _training_pair(plan, input_shape, preprocessing, layout)
    elif plan.validation is not None:
        validation = _load(plan.validation, Role.VALIDATION, input_shape, preprocessing, layout)
    if Role.CALIBRATION in roles and plan.calibration is not None:
        calibration = _load(plan.calibration, Role.CALIBRATION, input_shape, preprocessing, layout)
    return RoleData(train, calibration, validation)


def _load(
    source: DataSource, role: Role, input_shape: tuple[int, ...], preprocessing: Preprocessing, layout: str
) -> ModelInputs:
    samples = source.samples or (DEFAULT_CALIBRATION_SAMPLES if role is Role.CALIBRATION else None)
    labelled = role is not Role.CALIBRATION
    return model_inputs(source.spec, input_shape, preprocessing, ROLE_SPLITS[role], samples, labelled, layout)


def _training_pair(plan: DataPlan, input_shape: tuple[int, ...], preprocessing: Preprocessing, layout: str):
    assert plan.train is not None
    validation = plan.validation.spec if plan.validation else None
    train, held = training_inputs(plan.train.spec, validation, input_shape, preprocessing, plan.val_split, layout)
    if plan.train.samples:
        train = ModelInputs.build(train.data.take(plan.train.samples), train.input_shape, preprocessing, layout)
    if plan.validation is not None and plan.validation.samples:
        held = ModelInputs.build(held.data.take(plan.validation.samples), held.input_shape, preprocessing, layout)
    return train, held


def inputs_for(data: ModelInputs, artifact: Artifact, trust_model: bool = False) -> ModelInputs:
    """The same samples prepared for another model (a distilled student may differ in size or scaling)."""
    spec = input_spec_of(artifact, trust_model)
    preprocessing = artifact.metadata.preprocessing or data.preprocessing
    if tuple(spec.shape) == tuple(data.input_shape) and preprocessing == data.preprocessing:
        return data
    try:
        return ModelInputs.build(data.data, spec.shape, preprocessing, spec.layout)
    except DataError as exc:
        raise DataError(f"{artifact.path} cannot be scored on {data.source}: {exc.message}", exc.hint) from None


@dataclass(frozen=True)
class ResolvedPreprocessing:
    preprocessing: Preprocessing
    origin: str  # "options", "model metadata" or "assumed default"


def resolve_preprocessing(artifact: Artifact, overrides: dict[str, Any] | None = None) -> ResolvedPreprocessing:
    """Options beat the model's metadata; without either we assume [0, 1] inputs and say so."""
    # The layout travels with the preprocessing options but is the input spec's (see input_spec_of).
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None and k != "layout"}
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
    """The model's input shape without the batch dimension (-1 where it is unknown)."""
    return input_spec_of(artifact, trust_model).shape


def input_spec_of(artifact: Artifact, trust_model: bool = False, layout: str | None = None) -> InputSpec:
    """The model's one input: shape without the batch axis (-1 where unknown) and layout.

    The layout is ``layout`` when given (``--layout``), else the sidecar's, else read from the model:
    Keras and TFLite models are channels-last; an ONNX image input of shape (1|3, H, W) is NCHW, as
    PyTorch exports are. A model with several inputs is refused with one clear line.
    """
    if artifact.metadata.inputs:
        specs = list(artifact.metadata.inputs)
    elif artifact.format.is_keras:
        from edgecompress.runtimes.keras_io import load_keras

        model = load_keras(artifact.path, trust_model=trust_model).model
        specs = [InputSpec(tuple(t.shape[1:]), name=str(getattr(t, "name", "input")).split(":")[0])
                 for t in model.inputs]  # fmt: skip
    else:
        from edgecompress.runtimes import open_session

        with open_session(artifact) as session:
            specs = [InputSpec(tuple(t.shape[1:]), name=t.name) for t in session.inputs]
    if len(specs) > 1:
        names = ", ".join(f"{s.name} {tuple(s.shape)}" for s in specs)
        raise UnsupportedError(
            f"{artifact.path} has {len(specs)} inputs ({names}); edgecompress handles models with one input",
            "export a single-input model (e.g. fold the extra inputs into constants), or quantize it with its own tools",
        )
    spec = specs[0]
    shape = tuple(int(d) if d else -1 for d in spec.shape)
    if layout:
        chosen = layout.upper()
    elif artifact.metadata.inputs:
        chosen = spec.layout
    else:
        chosen = guess_layout(shape) if artifact.format is ModelFormat.ONNX else "NHWC"
    return replace(spec, shape=shape, layout=chosen)


def output_shapes_of(artifact: Artifact, trust_model: bool = False) -> list[tuple[int | None, ...]]:
    """The model's output shapes, batch axis included, from whichever runtime reads its format."""
    if artifact.format.is_keras:
        from edgecompress.runtimes.keras_io import load_keras

        return [tuple(t.shape) for t in load_keras(artifact.path, trust_model=trust_model).model.outputs]
    from edgecompress.runtimes import open_session

    with open_session(artifact, trust_model=trust_model) as session:
        return [tuple(t.shape) for t in session.outputs]


def _target_hw(input_shape: tuple[int, ...], layout: str = "NHWC") -> tuple[int, int] | None:
    image = image_hwc(input_shape, layout)
    return (image[0], image[1]) if image and image[0] > 0 and image[1] > 0 else None


def model_inputs(
    spec: DataSpec,
    input_shape: tuple[int, ...],
    preprocessing: Preprocessing,
    split: str = "test",
    samples: int | None = None,
    need_labels: bool = False,
    layout: str = "NHWC",
) -> ModelInputs:
    """Load data for one model: resized to its input, preprocessed as its metadata says."""
    target = _target_hw(input_shape, layout)
    data = spec if isinstance(spec, ImageSet) else load_images(spec, split, target, need_labels)
    return ModelInputs.build(data.take(samples), input_shape, preprocessing, layout)


def training_inputs(
    spec: DataSpec,
    eval_spec: DataSpec | None,
    input_shape: tuple[int, ...],
    preprocessing: Preprocessing,
    val_split: float = HOLDOUT_FRACTION,
    layout: str = "NHWC",
) -> tuple[ModelInputs, ModelInputs]:
    """Labelled training data and held-out data that never overlaps it.

    Held out: ``eval_spec`` when given; the test split of an embedded set (digits, synthetic-*);
    otherwise a seeded ``val_split`` of the data, set aside before training.
    """
    target = _target_hw(input_shape, layout)
    data = spec if isinstance(spec, ImageSet) else load_images(spec, "train", target, need_labels=True)
    if eval_spec is not None:
        held = eval_spec if isinstance(eval_spec, ImageSet) else load_images(eval_spec, "test", target, need_labels=True)
    elif not isinstance(spec, ImageSet) and str(spec) in EMBEDDED_DATA:
        held = load_images(spec, "test", target, need_labels=True)
    else:
        data, held = data.split(val_split)
    return (
        ModelInputs.build(data, input_shape, preprocessing, layout),
        ModelInputs.build(held, input_shape, preprocessing, layout),
    )
