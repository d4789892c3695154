"""Passes: named steps that read an artifact and write a new one, never touching their input.

The CLI, recipe files and the Python API all reach the same objects through ``PASSES``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecompress.artifacts import Artifact, ModelFormat
from edgecompress.calibration.data import ModelInputs
from edgecompress.calibration.preprocessing import Preprocessing
from edgecompress.errors import UsageError
from edgecompress.registry import Registry


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
