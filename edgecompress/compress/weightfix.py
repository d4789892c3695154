"""The weight fixes as passes of their own (Keras → Keras), so recipes can chain or sweep them.

``quantize(equalize=true, bias_correction=true)`` applies the same fixes in memory before
converting; these passes write the fixed float model instead, with the fix in its lineage.
"""

from __future__ import annotations

import time
from typing import Any

from edgecompress.artifacts import Artifact, ModelFormat
from edgecompress.compress.finetune import KERAS_OUTPUTS, private_copy, write_output
from edgecompress.compress.passes import PASSES, Pass, PassContext, PassResult
from edgecompress.errors import DataError, UsageError


@PASSES.register("equalize", "cle")
class EqualizePass(Pass):
    """Cross-layer equalization with BatchNorm folded first (Nagel et al. 2019)."""

    name = "equalize"
    accepts = KERAS_OUTPUTS
    produces = ModelFormat.KERAS_H5

    def __init__(self, relu6: str = "replace") -> None:
        if relu6 not in ("replace", "skip"):
            raise UsageError(f"relu6 must be 'replace' or 'skip', not '{relu6}'", "use relu6=replace")
        self.relu6 = relu6

    def params(self) -> dict[str, Any]:
        return {"relu6": self.relu6}

    def apply(self, artifact: Artifact, context: PassContext) -> PassResult:
        from edgecompress.compress.equalize import equalize

        self.check_input(artifact)
        started = time.perf_counter()
        source, model = private_copy(artifact, context)
        details = equalize(model, relu6=self.relu6).to_dict()
        result = write_output(model, artifact, source, context, self.name, {**self.params(), "result": details})
        return PassResult(result, {"pass": self.name, **self.params(), **details, "seconds": time.perf_counter() - started})


@PASSES.register("bias_correct", "bias_correction")
class BiasCorrectPass(Pass):
    """Empirical bias correction for the int8 weight rounding a later quantize pass will do."""

    name = "bias_correct"
    accepts = KERAS_OUTPUTS
    produces = ModelFormat.KERAS_H5
    needs_calibration = True

    def __init__(self, per_channel: bool = True) -> None:
        self.per_channel = bool(per_channel)

    def params(self) -> dict[str, Any]:
        return {"per_channel": self.per_channel}

    def apply(self, artifact: Artifact, context: PassContext) -> PassResult:
        from edgecompress.compress.bias_correct import bias_correct

        self.check_input(artifact)
        if context.calibration is None:
            raise DataError("bias correction needs calibration data", "pass --calib DIR|FILE.npz|digits")
        started = time.perf_counter()
        source, model = private_copy(artifact, context)
        details = bias_correct(model, context.calibration, self.per_channel).to_dict()
        result = write_output(model, artifact, source, context, self.name, {**self.params(), "result": details})
        return PassResult(result, {"pass": self.name, **self.params(), **details, "seconds": time.perf_counter() - started})
