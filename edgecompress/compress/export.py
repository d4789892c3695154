"""Float export to TFLite or ONNX, and the helpers every converting pass shares.

Each output is validated against the Keras source on the same inputs before it is renamed into
place, so a mismatching model never appears at the output path.
"""

from __future__ import annotations

import enum
import logging
from pathlib import Path
from typing import Any

import numpy as np

from edgecompress.artifacts import Artifact, InputSpec, Metadata, ModelFormat, atomic_path, write_metadata
from edgecompress.calibration.data import random_inputs
from edgecompress.calibration.preprocessing import Preprocessing
from edgecompress.compress import convert
from edgecompress.compress.passes import PASSES, Pass, PassContext, PassResult
from edgecompress.compress.validate import CheckResult, compare_outputs, require_match
from edgecompress.errors import UsageError
from edgecompress.models.keras_io import KerasModel, load_keras
from edgecompress.models.tasks import infer_task

log = logging.getLogger(__name__)

CHECK_SAMPLES = 8


class OutputFormat(str, enum.Enum):
    TFLITE = "tflite"
    ONNX = "onnx"

    @property
    def model_format(self) -> ModelFormat:
        return ModelFormat.ONNX if self is OutputFormat.ONNX else ModelFormat.TFLITE


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


def check_inputs(keras_model: KerasModel, context: PassContext, metadata: Metadata) -> tuple[np.ndarray, str]:
    """A few real samples when the user gave data; random pixels otherwise (fine for a float check)."""
    for data, label in ((context.validation, "evaluation samples"), (context.calibration, "calibration samples")):
        if data is not None:
            return next(data.batches(CHECK_SAMPLES)), label
    shape = tuple(int(d) for d in keras_model.input_shape)
    if len(shape) == 3:
        return random_inputs(shape, metadata.preprocessing or Preprocessing(), CHECK_SAMPLES), "random inputs"
    return np.random.default_rng(0).standard_normal((CHECK_SAMPLES, *shape)).astype(np.float32), "random inputs"


def check_against_source(keras_model: KerasModel, output: Artifact, mode: str, context: PassContext) -> CheckResult:
    from edgecompress.runtimes import open_session

    x, inputs_from = check_inputs(keras_model, context, output.metadata)
    expected = keras_model.model(x, training=False)
    expected = [np.asarray(e) for e in (expected if isinstance(expected, list | tuple) else [expected])]
    with open_session(output) as session:
        got = session.run(x)
    result = compare_outputs(expected, got, mode, inputs_from)
    require_match(result, f"the {mode} {output.format.value} model")
    return result


def finish_output(path: Path, fmt: ModelFormat, metadata: Metadata) -> Artifact:
    write_metadata(path, metadata)
    return Artifact(Path(path), fmt, metadata)


@PASSES.register("export", "tflite", "onnx")
class ExportPass(Pass):
    """Float export. ``compress quantize`` covers every reduced-precision variant."""

    name = "export"
    accepts = (ModelFormat.KERAS_H5, ModelFormat.KERAS_V3, ModelFormat.SAVEDMODEL)

    def __init__(self, format: str | OutputFormat = OutputFormat.TFLITE) -> None:
        try:
            self.format = OutputFormat(str(getattr(format, "value", format)).lower())
        except ValueError:
            raise UsageError(f"unknown export format '{format}'", "choose tflite or onnx") from None
        self.produces = self.format.model_format

    def params(self) -> dict[str, Any]:
        return {"format": self.format.value}

    def apply(self, artifact: Artifact, context: PassContext) -> PassResult:
        self.check_input(artifact)
        keras_model = load_source(artifact, context)
        output = Path(context.output)
        with atomic_path(output) as tmp:
            if self.format is OutputFormat.TFLITE:
                tmp.write_bytes(convert.keras_to_tflite(keras_model.model, "float"))
            else:
                proto = convert.keras_to_onnx(keras_model.model)
                tmp.write_bytes(proto.SerializeToString())
            metadata = output_metadata(artifact, keras_model, context, "export", self.params())
            check = check_against_source(keras_model, Artifact(tmp, self.produces, metadata), "float", context)
        result = finish_output(output, self.produces, metadata)
        return PassResult(result, {"pass": self.name, **self.params(), "check": check.to_dict()})
