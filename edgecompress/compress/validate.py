"""Every export is checked: run the output and the source on the same inputs and compare.

Tolerances are relative to the source output's scale on the check inputs: the larger of its range
and its largest magnitude (an untrained softmax barely varies, yet int8 output steps are 1/256). Float exports must
agree almost exactly (max |Δ|); quantized ones are judged on the mean |Δ|, because a single
saturated logit is normal for int8 while a broken scale or preprocessing moves every output.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from edgecompress.artifacts import Artifact, Metadata
from edgecompress.calibration.data import random_inputs
from edgecompress.calibration.preprocessing import Preprocessing
from edgecompress.errors import ValidationError
from edgecompress.runtimes.keras_io import KerasModel

if TYPE_CHECKING:
    from edgecompress.compress.passes import PassContext

#: inputs an export check runs through the source and the output
CHECK_SAMPLES = 8

#: absolute differences that are below what the format can resolve: an int8 softmax has steps of
#: 1/256, so an untrained 1000-class model (all outputs ≈ 0.001) legitimately comes out as zeros.
RESOLUTION_FLOOR = {"int8": 1.0 / 256}
#: mode → (statistic, tolerance as a fraction of the source output scale)
TOLERANCES: dict[str, tuple[str, float]] = {
    "float": ("max", 1e-3),
    "float16": ("max", 2e-2),
    "dynamic": ("mean", 0.05),
    "int16x8": ("mean", 0.05),
    "int8": ("mean", 0.08),
}


@dataclass(frozen=True)
class CheckResult:
    max_abs_diff: float
    mean_abs_diff: float
    output_scale: float
    statistic: str
    tolerance: float
    samples: int
    inputs_from: str

    @property
    def relative(self) -> float:
        value = self.max_abs_diff if self.statistic == "max" else self.mean_abs_diff
        return value / self.output_scale if self.output_scale > 0 else value

    floor: float = 0.0

    @property
    def passed(self) -> bool:
        value = self.max_abs_diff if self.statistic == "max" else self.mean_abs_diff
        allowed = self.tolerance * self.output_scale + self.floor
        return bool(np.isfinite(value)) and value <= allowed

    def to_dict(self) -> dict:
        return {**asdict(self), "relative": self.relative, "passed": self.passed}

    def describe(self) -> str:
        return (
            f"max |Δ| {self.max_abs_diff:.3g}, mean |Δ| {self.mean_abs_diff:.3g} on {self.samples} {self.inputs_from} "
            f"({self.statistic} {self.relative:.2%} of the output scale; tolerance {self.tolerance:.2%})"
        )


def compare_outputs(
    expected: list[np.ndarray], got: list[np.ndarray], mode: str, inputs_from: str
) -> CheckResult:
    statistic, tolerance = TOLERANCES[mode]
    if len(expected) != len(got) or any(e.shape != g.shape for e, g in zip(expected, got, strict=False)):
        raise ValidationError(
            f"the exported model's outputs {[g.shape for g in got]} differ in shape from the source's "
            f"{[e.shape for e in expected]}",
            "report this with the model attached; use --debug for details",
        )
    diffs = np.concatenate([np.abs(e - g).ravel() for e, g in zip(expected, got, strict=True)])
    flat = np.concatenate([e.ravel() for e in expected])
    return CheckResult(
        max_abs_diff=float(np.max(diffs)),
        mean_abs_diff=float(np.mean(diffs)),
        output_scale=float(max(np.max(flat) - np.min(flat), np.max(np.abs(flat)))),
        statistic=statistic,
        tolerance=tolerance,
        samples=len(expected[0]),
        inputs_from=inputs_from,
        floor=RESOLUTION_FLOOR.get(mode, 0.0),
    )


def require_match(result: CheckResult, what: str) -> None:
    if not result.passed:
        raise ValidationError(
            f"{what} does not match its source: {result.describe()}",
            "check the calibration data and preprocessing, or try another --mode",
        )


def check_inputs(keras_model: KerasModel, context: PassContext, metadata: Metadata) -> tuple[np.ndarray, str]:
    """A few real samples when the user gave data; random pixels otherwise (fine for a float check)."""
    for data, label in ((context.validation, "evaluation samples"), (context.calibration, "calibration samples")):
        if data is not None:
            return next(data.batches(CHECK_SAMPLES)), label
    shape = tuple(-1 if d is None else int(d) for d in keras_model.input_shape)
    # Random pixels through the preprocessing for an image input; standard-normal values for any other.
    return random_inputs(shape, metadata.preprocessing or Preprocessing(), CHECK_SAMPLES), "random inputs"


def check_against_source(keras_model: KerasModel, output: Artifact, mode: str, context: PassContext) -> CheckResult:
    from edgecompress.runtimes import open_session
    from edgecompress.runtimes.probe import trust

    trust(output.path)  # written by the converter in this process a moment ago
    x, inputs_from = check_inputs(keras_model, context, output.metadata)
    expected = keras_model.model(x, training=False)
    expected = [np.asarray(e) for e in (expected if isinstance(expected, list | tuple) else [expected])]
    with open_session(output) as session:
        got = session.run(x)
    result = compare_outputs(expected, got, mode, inputs_from)
    require_match(result, f"the {mode} {output.format.value} model")
    return result


def check_against_file(
    source: Artifact, output: Artifact, mode: str, context: PassContext, shape: tuple[int, ...], layout: str
) -> CheckResult:
    """The check for a .tflite/.onnx source: the source file, run in its own runtime, is the reference.

    Both files were probed (or written here) before this runs, so they open in-process.
    """
    from edgecompress.runtimes import open_session
    from edgecompress.runtimes.probe import trust

    trust(output.path)  # written by the quantizer in this process a moment ago
    x, inputs_from = None, "random inputs"
    for data, label in ((context.validation, "evaluation samples"), (context.calibration, "calibration samples")):
        if data is not None:
            x, inputs_from = next(data.batches(CHECK_SAMPLES)), label
            break
    if x is None:
        x = random_inputs(shape, output.metadata.preprocessing or Preprocessing(), CHECK_SAMPLES, layout=layout)
    with open_session(source, trust_model=context.trust_model) as session:
        expected = session.run(x)
    with open_session(output) as session:
        got = session.run(x)
    result = compare_outputs(expected, got, mode, inputs_from)
    require_match(result, f"the {mode} {output.format.value} model")
    return result
