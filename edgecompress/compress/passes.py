"""Passes: named steps that read an artifact and write a new one, never touching their input.

The CLI, recipe files and the Python API all reach the same objects through ``PASSES``.
"""

from __future__ import annotations

import abc
import importlib
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecompress.artifacts import Artifact, InputSpec, Metadata, ModelFormat, write_metadata
from edgecompress.calibration.data import ModelInputs
from edgecompress.calibration.preprocessing import Preprocessing
from edgecompress.errors import UsageError
from edgecompress.models.tasks import infer_task
from edgecompress.registry import Registry
from edgecompress.runtimes.keras_io import KerasModel, load_keras


@dataclass
class PassContext:
    """What a pass may use besides its input: where to write, and the data it may need."""

    output: Path
    force: bool = False
    trust_model: bool = False
    calibration: ModelInputs | None = None
    validation: ModelInputs | None = None
    #: training data of the passes that fine-tune (prune, cluster, distill)
    train: ModelInputs | None = None
    #: the preprocessing the data was prepared with; recorded in the output's metadata
    preprocessing: Preprocessing | None = None
    progress: bool = True
    #: training data for passes that fine-tune (prune, cluster, distill, QAT, binarize); recipes and
    #: the CLI fill it the same way for every such pass, so none needs its own data option
    train: ModelInputs | None = None
    #: fine-tuning epochs to use when the pass's own parameters leave them open
    epochs: int | None = None
    #: the input layout (NHWC, NCHW) the data was prepared in; None: the model's own
    layout: str | None = None


@dataclass
class PassResult:
    artifact: Artifact
    report: dict[str, Any] = field(default_factory=dict)


class Pass(abc.ABC):
    name: str
    accepts: tuple[ModelFormat, ...]
    produces: ModelFormat
    needs_calibration: bool = False
    #: fine-tuning passes set this; the pipeline then refuses a recipe without training data up front
    needs_training: bool = False

    def check_input(self, artifact: Artifact) -> None:
        if artifact.format not in self.accepts:
            accepted = ", ".join(f.value for f in self.accepts)
            raise UsageError(
                f"'{self.name}' takes {accepted} models, not {artifact.format.value} ({artifact.path})",
                "pass the Keras source model",
            )

    @abc.abstractmethod
    def params(self) -> dict[str, Any]:
        """The parameters recorded in lineage and reports."""

    @abc.abstractmethod
    def apply(self, artifact: Artifact, context: PassContext) -> PassResult: ...


PASSES: Registry[type[Pass]] = Registry("pass")

#: modules of ``edgecompress.compress`` that hold no pass
_NOT_PASS_MODULES = {"passes"}


def load_passes() -> Registry[type[Pass]]:
    """Import every module of ``edgecompress.compress`` so each pass has registered itself."""
    import edgecompress.compress as package

    for info in pkgutil.iter_modules(package.__path__):
        if info.name not in _NOT_PASS_MODULES:
            importlib.import_module(f"{package.__name__}.{info.name}")
    return PASSES


# --------------------------------------------------------------------------- what passes share


def load_source(artifact: Artifact, context: PassContext) -> KerasModel:
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
