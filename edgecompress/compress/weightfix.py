"""The weight fixes as passes of their own (Keras → Keras), so recipes can chain or sweep them.

``quantize(equalize=true, bias_correction=true)`` applies the same fixes in memory before
converting; these passes write the fixed float model instead, with the fix in its lineage.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgecompress.artifacts import Artifact, ModelFormat
from edgecompress.compress.finetune import KERAS_OUTPUTS, private_copy, write_output
from edgecompress.compress.passes import PASSES, Pass, PassContext, PassReport, PassResult, Role
from edgecompress.errors import DataError

if TYPE_CHECKING:
    from edgecompress.compress.bias_correct import BiasCorrectionResult
    from edgecompress.compress.equalize import EqualizeResult


@dataclass(frozen=True, kw_only=True)
class EqualizeReport(PassReport):
    result: EqualizeResult


@dataclass(frozen=True, kw_only=True)
class BiasCorrectReport(PassReport):
    result: BiasCorrectionResult


@PASSES.register("equalize", "cle")
class EqualizePass(Pass):
    """Cross-layer equalization with BatchNorm folded first (Nagel et al. 2019)."""

    name = "equalize"
    accepts = KERAS_OUTPUTS
    produces = ModelFormat.KERAS_H5

    def __init__(self, relu6: str = "bound") -> None:
        from edgecompress.compress.equalize import check_relu6

        check_relu6(relu6)
        self.relu6 = relu6

    def needs(self) -> frozenset[Role]:
        # relu6=bound reads the activations at each ReLU6 cap
        return frozenset({Role.CALIBRATION}) if self.relu6 == "bound" else frozenset()

    def params(self) -> dict[str, Any]:
        return {"relu6": self.relu6}

    def apply(self, artifact: Artifact, context: PassContext) -> PassResult:
        from edgecompress.compress.equalize import equalize

        self.check_input(artifact)
        started = time.perf_counter()
        source, model = private_copy(artifact, context)
        done = equalize(model, relu6=self.relu6, calibration=context.calibration)
        result = write_output(model, artifact, source, context, self.name, {**self.params(), "result": done.to_dict()})
        report = EqualizeReport(pass_name=self.name, params=self.params(), seconds=time.perf_counter() - started,
                                result=done)  # fmt: skip
        return PassResult(result, report)


@PASSES.register("bias_correct", "bias_correction")
class BiasCorrectPass(Pass):
    """Empirical bias correction for the int8 weight rounding a later quantize pass will do."""

    name = "bias_correct"
    accepts = KERAS_OUTPUTS
    produces = ModelFormat.KERAS_H5

    def __init__(self, per_channel: bool = True) -> None:
        self.per_channel = bool(per_channel)

    def needs(self) -> frozenset[Role]:
        return frozenset({Role.CALIBRATION})

    def params(self) -> dict[str, Any]:
        return {"per_channel": self.per_channel}

    def apply(self, artifact: Artifact, context: PassContext) -> PassResult:
        from edgecompress.compress.bias_correct import bias_correct

        self.check_input(artifact)
        if context.calibration is None:
            raise DataError("bias correction needs calibration data", "pass --calib DIR|FILE.npz|digits")
        started = time.perf_counter()
        source, model = private_copy(artifact, context)
        done = bias_correct(model, context.calibration, self.per_channel)
        result = write_output(model, artifact, source, context, self.name, {**self.params(), "result": done.to_dict()})
        report = BiasCorrectReport(pass_name=self.name, params=self.params(), seconds=time.perf_counter() - started,
                                   result=done)  # fmt: skip
        return PassResult(result, report)
