"""Passes: named steps that read an artifact and write a new one, never touching their input.

The CLI, recipe files and the Python API all reach the same objects through ``PASSES`` and run
them the same way, with :func:`run_pass`. A pass declares the data roles it cannot run without
(``needs``); the runner loads exactly those, plus held-out data where it exists, into a frozen
:class:`PassContext`, so no pass loads data of its own and no role stands in for another.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Mapping
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

from edgecompress.artifacts import Artifact, InputSpec, Metadata, ModelFormat, write_metadata
from edgecompress.calibration.data import ModelInputs
from edgecompress.calibration.preprocessing import Preprocessing
from edgecompress.errors import UsageError
from edgecompress.models.inputs import Role  # noqa: F401 - passes declare roles with it
from edgecompress.models.tasks import infer_task
from edgecompress.registry import Registry
from edgecompress.runtimes.keras_io import KerasModel, load_keras


@dataclass(frozen=True)
class PassContext:
    """What a pass may use besides its input: where to write, and the data of each role.

    ``train`` (labelled, for passes that fine-tune), ``calibration`` (activation ranges) and
    ``validation`` (held out: export checks and scores) are distinct and never substituted.
    """

    output: Path
    force: bool = False
    trust_model: bool = False
    train: ModelInputs | None = None
    calibration: ModelInputs | None = None
    validation: ModelInputs | None = None
    #: the preprocessing the data was prepared with; recorded in the output's metadata
    preprocessing: Preprocessing | None = None
    progress: bool = True
    #: the source model, loaded once by the runner (passes read it through ``load_source``)
    source_model: KerasModel | None = None
    #: the input layout (NHWC, NCHW) the data was prepared in; None: the model's own
    layout: str | None = None


@dataclass(frozen=True, kw_only=True)
class PassReport:
    """What a pass did, as data. Each pass extends it with its own typed fields; the renderings
    (terminal text, JSON) live in ``reports/passes.py``."""

    pass_name: str
    params: Mapping[str, Any]
    seconds: float
    #: the float model the output's size is compared with: {"bytes": …, "what": …} (reports/sizes.py)
    float_reference: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        own = {f.name: plain(getattr(self, f.name)) for f in fields(self) if f.name not in ("pass_name", "params", "seconds")}
        return {"pass": self.pass_name, **plain(self.params), **own, "seconds": self.seconds}


def plain(value: Any) -> Any:
    """JSON-ready values: dataclasses through their ``to_dict``, enums by value, mappings and tuples."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


@dataclass(frozen=True)
class PassResult:
    artifact: Artifact
    report: PassReport


class Pass(abc.ABC):
    name: str
    accepts: tuple[ModelFormat, ...]
    produces: ModelFormat

    def needs(self) -> frozenset[Role]:
        """The data roles this pass cannot run without (recipes are refused up front without them)."""
        return frozenset()

    def check_input(self, artifact: Artifact) -> None:
        if artifact.format not in self.accepts:
            accepted = ", ".join(f.value for f in self.accepts)
            raise UsageError(
                f"'{self.name}' takes {accepted} models, not {artifact.format.value} ({artifact.path})",
                "pass the Keras source model",
            )

    def describe(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.params().items())
        return f"{self.name}({args})"

    @abc.abstractmethod
    def params(self) -> dict[str, Any]:
        """The parameters recorded in lineage and reports."""

    @abc.abstractmethod
    def apply(self, artifact: Artifact, context: PassContext) -> PassResult: ...


#: The built-in passes, declared by name: a module is imported the first time one of its passes is
#: looked up, so checking a recipe of exports and quantizations never imports TFMOT or Larq.
PASSES: Registry[type[Pass]] = Registry("pass")
for _name, _module, _aliases in (
    ("export", "export", ("tflite", "onnx")),
    ("quantize", "quantize", ("ptq",)),
    ("prune", "prune", ("pruning",)),
    ("cluster", "cluster", ("clustering",)),
    ("distill", "distill", ("distillation", "kd")),
    ("qat", "qat", ("quantization_aware_training",)),
    ("binarize", "binarize", ("bnn",)),
    ("equalize", "weightfix", ("cle",)),
    ("bias_correct", "weightfix", ("bias_correction",)),
    ("inspect", "inspect_run", ()),
):
    PASSES.declare(_name, f"edgecompress.compress.{_module}", *_aliases)


def load_passes() -> Registry[type[Pass]]:
    """The registry with every declared pass imported (for listings and tests)."""
    for _ in PASSES.items():
        pass
    return PASSES


# --------------------------------------------------------------------------- what passes share


def load_source(artifact: Artifact, context: PassContext) -> KerasModel:
    """The Keras source: the runner's copy when it loaded this file, else loaded now."""
    loaded = context.source_model
    if loaded is not None and loaded.path is not None and Path(loaded.path).resolve() == artifact.path.resolve():
        return loaded
    return load_keras(artifact.path, trust_model=context.trust_model)


def output_metadata(
    artifact: Artifact, keras_model: KerasModel, context: PassContext, step: str, params: dict[str, Any]
) -> Metadata:
    """The source's metadata plus what this pass knows, with one more lineage step."""
    source = artifact.metadata
    name = getattr(keras_model.model.inputs[0], "name", "input") or "input"
    return source.with_step(
        artifact.lineage_step(step, params),
        task=source.task or infer_task(keras_model.output_shape),
        inputs=(InputSpec(shape=keras_model.input_shape, name=str(name).split(":")[0]),),
        preprocessing=context.preprocessing or source.preprocessing,
        # Keras output names let runtimes return outputs in the Keras order (see runtimes/litert.py).
        extra={**source.extra, "keras_flavor": keras_model.flavor, "output_names": _output_names(keras_model.model)},
    )


def _output_names(model) -> list[str]:
    return [str(name) for name in getattr(model, "output_names", None) or []]


def commit_metadata(path: Path, metadata: Metadata) -> None:
    """Write the sidecar before the model is renamed into place.

    The model's rename is the commit point: a run killed before it leaves no model (at worst a
    sidecar that names none), never a model without its metadata.
    """
    write_metadata(path, metadata)


@dataclass(frozen=True)
class CalibrationInfo:
    samples: int
    source: str

    @classmethod
    def of(cls, data: ModelInputs | None) -> CalibrationInfo | None:
        return None if data is None else cls(len(data), data.source)


