"""Float export to TFLite or ONNX.

The output is validated against the Keras source on the same inputs before it is renamed into
place, so a mismatching model never appears at the output path.
"""

from __future__ import annotations

import enum
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecompress.artifacts import Artifact, ModelFormat, atomic_path
from edgecompress.compress import convert
from edgecompress.compress.passes import (
    PASSES,
    Pass,
    PassContext,
    PassReport,
    PassResult,
    commit_metadata,
    load_source,
    output_metadata,
)
from edgecompress.compress.validate import CheckResult, check_against_source
from edgecompress.errors import UsageError

log = logging.getLogger(__name__)

class OutputFormat(str, enum.Enum):
    TFLITE = "tflite"
    ONNX = "onnx"

    @property
    def model_format(self) -> ModelFormat:
        return ModelFormat.ONNX if self is OutputFormat.ONNX else ModelFormat.TFLITE


def float_reference(keras_model) -> dict[str, Any]:
    """The float model's size stored as plain float32 parameters: what the output's size is compared with.

    Why not the source file: a Keras file may also hold the optimizer's state (Adam: two more copies
    of every weight) and HDF5 overhead, so a float export would look "3× smaller".
    """
    params = int(keras_model.count_params())
    return {"bytes": 4 * params, "what": f"float32 parameters of the source ({params:,} parameters × 4 bytes)"}


@dataclass(frozen=True, kw_only=True)
class ExportReport(PassReport):
    check: CheckResult


@PASSES.register("export")
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
        started = time.perf_counter()
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
            commit_metadata(output, metadata)
        result = Artifact(output, self.produces, metadata)
        report = ExportReport(pass_name=self.name, params=self.params(), seconds=time.perf_counter() - started,
                              check=check, float_reference=float_reference(keras_model.model))  # fmt: skip
        return PassResult(result, report)
