"""How a pass is run: the one sequence the CLI, the Python API, recipes and the tuner share.

check the input → pick the output path → resolve preprocessing and input shape once → load the
data roles the pass needs → build a frozen context → apply → score source and output on the same
held-out data, each in its own runtime → a frozen :class:`PassRun`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecompress.artifacts import Artifact, check_output_path
from edgecompress.calibration.data import ModelInputs
from edgecompress.calibration.preprocessing import Preprocessing
from edgecompress.compress.passes import Pass, PassContext, PassReport, plain
from edgecompress.errors import DataError, UsageError
from edgecompress.models.inputs import (
    DataPlan,
    Role,
    input_spec_of,
    inputs_for,
    load_roles,
    resolve_preprocessing,
)
from edgecompress.runtimes.keras_io import KerasModel, load_keras

#: how each role is given on the command line and in a recipe, for errors that name the fix
ROLE_HINTS = {
    Role.TRAIN: "pass --data DIR|FILE.npz|digits (recipes: data.train)",
    Role.CALIBRATION: "pass --calib DIR|FILE.npz|digits (recipes: data.calibration); random data would give "
    "plausible-looking but wrong ranges",
    Role.VALIDATION: "pass --eval DIR|FILE.npz|digits (recipes: data.eval)",
}


@dataclass(frozen=True)
class Scores:
    """One model's task metrics on the run's held-out data, and the runtime that produced them."""

    runtime: str
    metrics: Mapping[str, float]
    size_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"runtime": self.runtime, "metrics": dict(self.metrics), "size_bytes": self.size_bytes}


@dataclass(frozen=True)
class Evaluation:
    """Source and output scored on the same held-out data, each in its own runtime; ``others``
    holds further variants scored the same way (QAT's post-training int8 baseline)."""

    data: str
    metric: str
    source: Scores
    output: Scores
    others: Mapping[str, Scores] = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        object.__setattr__(self, "others", dict(self.others or {}))

    @property
    def samples(self) -> int:
        return int(self.output.metrics.get("samples", 0))

    @property
    def delta(self) -> float:
        return self.output.metrics[self.metric] - self.source.metrics[self.metric]

    def to_dict(self) -> dict[str, Any]:
        return {"data": self.data, "metric": self.metric, "source": self.source.to_dict(),
                "output": self.output.to_dict(), "others": plain(self.others)}  # fmt: skip


@dataclass(frozen=True)
class PassRun:
    """What running one pass gave: its output, its report, and how the output scores against its source."""

    source: Artifact
    output: Artifact
    report: PassReport
    preprocessing: Preprocessing
    preprocessing_origin: str
    evaluation: Evaluation | None = None
    #: decisions made for the user, said out loud (e.g. why this quantization mode)
    notes: tuple[str, ...] = ()

    @property
    def sizes(self):
        """Both files' sizes and the ratio against the float model stored the same way (reports/sizes.py)."""
        from edgecompress.compress.sizes import compare_sizes

        return compare_sizes(self.source, self.output, self.report.to_dict())

    @property
    def size_ratio(self) -> float:
        return self.sizes.ratio

    @property
    def details(self) -> dict[str, Any]:
        """The pass's report as plain data (what ``--json`` prints under "report")."""
        return self.report.to_dict()

    def to_dict(self) -> dict[str, Any]:
        sizes = self.sizes
        return {
            "source": str(self.source.path),
            "output": str(self.output.path),
            "size_bytes_before": sizes.source_bytes,
            "size_bytes_after": sizes.output_bytes,
            "size_ratio": sizes.ratio,
            "size": sizes.to_dict(),
            "preprocessing": self.preprocessing.to_dict(),
            "preprocessing_origin": self.preprocessing_origin,
            "task": self.output.metadata.task,
            "notes": list(self.notes),
            "report": self.report.to_dict(),
            "evaluation": self.evaluation.to_dict() if self.evaluation else None,
        }


def run_pass(
    step: Pass,
    source: Artifact | str | os.PathLike,
    output: str | os.PathLike,
    data: DataPlan | None = None,
    preprocessing: dict[str, Any] | None = None,
    trust_model: bool = False,
    force: bool = False,
    progress: bool = False,
    evaluate: bool = True,
    notes: tuple[str, ...] = (),
) -> PassRun:
    """Run ``step`` on ``source`` into ``output``; the one way every interface runs a pass.

    ``data`` gives each role's data; the roles the pass ``needs`` must be there. ``evaluate``
    scores source and output on the held-out data (pipelines skip it: they score in their
    benchmark stage). ``preprocessing`` holds option overrides of the model's metadata.
    """
    source = source if isinstance(source, Artifact) else Artifact.open(source)
    data = data or DataPlan()
    step.check_input(source)
    output = output_path(source, output, _suffix(step, output), force)
    missing = sorted(role.value for role in step.needs() if data.get(role) is None)
    if missing:
        role = Role(missing[0])
        raise DataError(f"'{step.describe()}' needs {role.value} data, and none was given", ROLE_HINTS[role])
    resolved = resolve_preprocessing(source, preprocessing)
    keras_model = load_keras(source.path, trust_model) if source.format.is_keras else None
    spec = input_spec_of(source, trust_model, (preprocessing or {}).get("layout"))
    roles = load_roles(data, step.needs(), spec.shape, resolved.preprocessing, spec.layout)
    if roles.validation is not None:
        _check_targets_fit(source, keras_model, roles.validation, trust_model)  # before any output is written
    context = PassContext(
        output=output, force=force, trust_model=trust_model, train=roles.train, calibration=roles.calibration,
        validation=roles.validation, preprocessing=resolved.preprocessing, progress=progress, source_model=keras_model,
        layout=spec.layout,
    )  # fmt: skip
    result = step.apply(source, context)
    evaluation = None
    if evaluate and roles.validation is not None:
        evaluation = score_pair(source, result.artifact, roles.validation, keras_model, trust_model)
    return PassRun(source, result.artifact, result.report, resolved.preprocessing, resolved.origin, evaluation, notes)


def output_path(source: Artifact, output: str | os.PathLike, suffix: str, force: bool) -> Path:
    path = Path(output)
    if path.resolve() == source.path.resolve():
        raise UsageError("the output path is the input model", "choose another -o; inputs are never overwritten")
    if suffix and path.suffix.lower() != suffix:
        raise UsageError(f"output {path} should end in {suffix} for this format", f"use -o {path.with_suffix(suffix).name}")
    return check_output_path(path, force)


def score_pair(
    source: Artifact, output: Artifact, data: ModelInputs, keras_model: KerasModel | None = None, trust_model: bool = False
) -> Evaluation:
    """Source and output on the same held-out samples, each in its own runtime (the source in
    Keras from the copy already loaded, when there is one), judged as the source's task."""
    from edgecompress.models.tasks import TASKS

    task, before = score_source(source, data, keras_model, trust_model)
    after = score_output(output, data, task, trust_model)
    return Evaluation(data.source, TASKS.get(task).primary_metric, before, after)


def score_source(
    source: Artifact, data: ModelInputs, keras_model: KerasModel | None = None, trust_model: bool = False
) -> tuple[str, Scores]:
    """(the source's task, its scores on ``data``): the half of :func:`score_pair` a sweep needs once."""
    from edgecompress.models.tasks import evaluate, task_of
    from edgecompress.runtimes import open_session
    from edgecompress.runtimes.keras_tf import KerasSession

    opened = KerasSession(keras_model.model, "cpu", None) if keras_model else open_session(source, trust_model=trust_model)
    with opened as session:
        task = task_of(source.metadata.task, [tuple(o.shape) for o in session.outputs])
        return task, Scores(session.runtime, evaluate(session, data, task), source.size_bytes)


def score_output(output: Artifact, data: ModelInputs, task: str, trust_model: bool = False) -> Scores:
    """One output on the source's held-out samples, in the runtime that reads its format."""
    from edgecompress.models.tasks import evaluate
    from edgecompress.runtimes import open_session

    with open_session(output, trust_model=trust_model) as session:
        return Scores(session.runtime, evaluate(session, inputs_for(data, output, trust_model), task), output.size_bytes)


def load_held_out(
    source: Artifact, data: DataPlan, preprocessing: dict[str, Any] | None = None, trust_model: bool = False
) -> tuple[ModelInputs, KerasModel | None]:
    """The plan's held-out data prepared for ``source`` as :func:`run_pass` prepares it (and the
    loaded Keras source, if it is one): for a sweep that builds with ``evaluate=False`` and scores
    its outputs itself, against one scoring of the source."""
    if data.validation is None:
        raise DataError("scoring needs held-out data, and none was given", ROLE_HINTS[Role.VALIDATION])
    resolved = resolve_preprocessing(source, preprocessing)
    keras_model = load_keras(source.path, trust_model) if source.format.is_keras else None
    spec = input_spec_of(source, trust_model, (preprocessing or {}).get("layout"))
    roles = load_roles(DataPlan(validation=data.validation), frozenset(), spec.shape, resolved.preprocessing, spec.layout)
    assert roles.validation is not None
    _check_targets_fit(source, keras_model, roles.validation, trust_model)
    return roles.validation, keras_model


def _suffix(step: Pass, output: str | os.PathLike) -> str:
    """The suffix the output must have: a pass that writes Keras takes ``.keras`` (Keras 3) as well as ``.h5``."""
    if step.produces.is_keras and Path(output).suffix.lower() == ".keras":
        return ".keras"
    return step.produces.suffix


def _check_targets_fit(source: Artifact, keras_model: KerasModel | None, data: ModelInputs, trust_model: bool) -> None:
    """The held-out targets fit the model's outputs (the task's own DataError otherwise)."""
    from edgecompress.models.inputs import output_shapes_of
    from edgecompress.models.tasks import TASKS, task_of

    if keras_model is not None:
        shapes = [tuple(t.shape) for t in keras_model.model.outputs]
    else:
        shapes = output_shapes_of(source, trust_model)
    TASKS.get(task_of(source.metadata.task, shapes)).targets(data.data, shapes)
