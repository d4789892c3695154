"""Which layers break int8, and why: a per-layer error report keyed by the Keras layer names.

For every op of the int8 model (TFLite, or ONNX QDQ) we compare its dequantized output with the
float model's value of the same tensor, on the same samples:

- **accumulated** error: against the float model run end to end (what the layer hands on);
- **alone** error: against the float op fed the *same quantized inputs* (what the layer adds). For
  TFLite this is the converter's own debug mode (``NumericVerify`` ops beside each int8 op, as in
  TensorFlow's QuantizationDebugger); for ONNX, float-weight twins of each quantized node in the QDQ
  graph (as ONNX Runtime's ``qdq_loss_debug`` compares pre- and post-QDQ tensors).

Both as SQNR (dB; 10·log10 of signal power over error power) and relative RMSE. Beside them the
weight range and per-channel spread of the op's (BatchNorm-folded) kernel, its calibrated activation
range and how much evaluation data fell outside it, and advice. One calibration feeds it all.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

#: below this many dB of "alone" SQNR a layer is worth a look (≈ 3 % relative RMSE)
LOW_SQNR_DB = 30.0
#: channel ranges this uneven waste a per-tensor scale's levels on a few channels
HIGH_SPREAD = 8.0
#: activations whose range is this many standard deviations wide are dominated by outliers
OUTLIER_RANGE_STD = 25.0
#: fraction of evaluation activations outside the calibrated range worth mentioning
CLIPPED_FRACTION = 1e-3
#: rows the text report lists, worst first
WORST = 10


@dataclass(frozen=True)
class LayerStats:
    layer: str  # the Keras layer whose output the op produces
    layers: tuple[str, ...]  # every Keras layer fused into the op
    op: str
    depth: int
    sqnr_db: float  # accumulated along the depth, vs the float model
    rel_rmse: float
    sqnr_alone_db: float  # this op alone, vs its float twin on the same quantized inputs
    rel_rmse_alone: float
    act_min: float | None = None  # calibrated range of the output
    act_max: float | None = None
    act_std: float | None = None  # of the float output on the inspected samples
    clipped: float | None = None  # fraction of float outputs outside the calibrated range
    weight_min: float | None = None
    weight_max: float | None = None
    channel_spread: float | None = None  # max / median per-channel |w| range
    weight_sqnr_db: float | None = None  # int8 rounding of the kernel alone, at the chosen granularity
    advice: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class InspectReport:
    model: str
    format: str
    calibration: dict[str, Any]
    samples: int
    samples_from: str
    per_channel: bool
    layers: tuple[LayerStats, ...]  # in depth order
    output_sqnr_db: float
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # float / int8 on --eval
    keep_float: tuple[str, ...] = ()
    seconds: float = 0.0
    notes: tuple[str, ...] = ()

    def worst(self, count: int | None = WORST) -> list[LayerStats]:
        """Worst first: by the error each layer adds on its own, then by what it hands on."""
        ranked = sorted(self.layers, key=lambda s: (_finite(s.sqnr_alone_db), _finite(s.sqnr_db)))
        return ranked[:count] if count else ranked

    def ranking(self) -> list[str]:
        """Keras layer names, worst first, each once (the order keep-float searches try them)."""
        return list(dict.fromkeys(s.layer for s in self.worst(None)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "format": self.format, "calibration": self.calibration, "samples": self.samples,
            "samples_from": self.samples_from, "per_channel": self.per_channel,
            "output_sqnr_db": _json_float(self.output_sqnr_db), "metrics": self.metrics,
            "keep_float": list(self.keep_float), "seconds": self.seconds, "notes": list(self.notes),
            "worst": [s.layer for s in self.worst()], "layers": [s.to_dict() for s in self.layers],
        }  # fmt: skip


def _finite(value: float) -> float:
    return value if math.isfinite(value) else 1e9


def _json_float(value: float) -> float | None:
    return value if math.isfinite(value) else None


# --------------------------------------------------------------------------- statistics


class ErrorAccumulator:
    """Signal and error power of one tensor over many batches (streaming; nothing is kept)."""

    def __init__(self, lo: float | None = None, hi: float | None = None) -> None:
        self.lo, self.hi = lo, hi
        self.signal = self.error = self.ref_signal = self.ref_error = 0.0
        self.total = self.sq = 0.0
        self.count = self.outside = 0

    def add(self, reference: np.ndarray, quantized: np.ndarray, twin: np.ndarray | None) -> None:
        reference = reference.astype(np.float64, copy=False)
        diff = quantized.astype(np.float64) - reference
        self.signal += float(np.sum(reference * reference))
        self.error += float(np.sum(diff * diff))
        self.total += float(np.sum(reference))
        self.count += reference.size
        if twin is not None:
            twin = twin.astype(np.float64, copy=False)
            alone = quantized.astype(np.float64) - twin
            self.ref_signal += float(np.sum(twin * twin))
            self.ref_error += float(np.sum(alone * alone))
        if self.lo is not None and self.hi is not None:
            self.outside += int(np.count_nonzero((reference < self.lo) | (reference > self.hi)))
        self.sq += float(np.sum(reference * reference))

    @staticmethod
    def sqnr(signal: float, error: float) -> float:
        if error <= 0:
            return float("inf")
        if signal <= 0:
            return float("-inf")
        return 10.0 * math.log10(signal / error)

    def result(self) -> dict[str, float]:
        mean = self.total / max(self.count, 1)
        std = math.sqrt(max(self.sq / max(self.count, 1) - mean * mean, 0.0))
        return {
            "sqnr_db": self.sqnr(self.signal, self.error),
            "rel_rmse": math.sqrt(self.error / self.signal) if self.signal > 0 else float("inf"),
            "sqnr_alone_db": self.sqnr(self.ref_signal, self.ref_error) if self.ref_signal else float("nan"),
            "rel_rmse_alone": math.sqrt(self.ref_error / self.ref_signal) if self.ref_signal else float("nan"),
            "act_std": std,
            "clipped": self.outside / max(self.count, 1) if self.lo is not None else None,
        }


def weight_stats(kernel: np.ndarray, channel_axis: int, per_channel: bool) -> dict[str, float]:
    """Range, per-channel spread, and the SQNR of symmetric int8 rounding of one kernel."""
    from edgecompress.compress.bias_correct import quantize_kernel
    from edgecompress.compress.kerasgraph import channel_spread

    moved = np.moveaxis(kernel.astype(np.float32), channel_axis, -1)
    absmax = np.abs(moved.reshape(-1, moved.shape[-1])).max(axis=0)
    rounded = quantize_kernel(moved, per_channel)
    error = float(np.sum((rounded - moved).astype(np.float64) ** 2))
    return {
        "weight_min": float(kernel.min()),
        "weight_max": float(kernel.max()),
        "channel_spread": channel_spread(absmax) if moved.shape[-1] > 1 else 1.0,
        "weight_sqnr_db": ErrorAccumulator.sqnr(float(np.sum(moved.astype(np.float64) ** 2)), error),
    }


def advise(stats: dict[str, Any], per_channel: bool, rank: int) -> tuple[str, ...]:
    """What to try for one layer, most promising first."""
    advice = []
    alone = stats.get("sqnr_alone_db", float("nan"))
    weight_db = stats.get("weight_sqnr_db")
    spread = stats.get("channel_spread")
    bad = math.isfinite(alone) and alone < LOW_SQNR_DB
    if spread is not None and spread > HIGH_SPREAD and not per_channel:
        advice.append(f"equalize (--equalize): its channel weight ranges differ {spread:.0f}× under one scale")
    elif weight_db is not None and weight_db < LOW_SQNR_DB and not per_channel:
        advice.append("per-channel weights (drop --per-tensor)")
    clipped = stats.get("clipped")
    if clipped is not None and clipped > CLIPPED_FRACTION:
        advice.append(f"more or other calibration data: {clipped:.1%} of the inspected outputs fall outside its range")
    std, lo, hi = stats.get("act_std"), stats.get("act_min"), stats.get("act_max")
    if bad and std and lo is not None and hi is not None and (hi - lo) > OUTLIER_RANGE_STD * std:
        advice.append(f"--calibration percentile or mse: its range is {(hi - lo) / std:.0f} standard deviations wide")
    if bad and (weight_db is None or weight_db > alone + 6):
        advice.append("16-bit activations (--mode int16x8): the error is in its output, not its weights")
    if bad and rank < 3:
        advice.append(f"keep in float (--keep-float {stats['layer']})")
    if not advice and math.isfinite(alone) and stats.get("sqnr_db", alone) < alone - 10:
        advice.append("fine on its own: its error comes from the layers before it")
    return tuple(advice)


def finish_rows(rows: list[dict[str, Any]], per_channel: bool) -> tuple[LayerStats, ...]:
    """Advice needs the ranking; LayerStats are built once everything is known."""
    order = sorted(range(len(rows)), key=lambda i: _finite(rows[i].get("sqnr_alone_db", float("nan"))))
    rank = {i: r for r, i in enumerate(order)}
    names = set(LayerStats.__dataclass_fields__)
    out = []
    for i, row in enumerate(rows):
        row = {**row, "advice": advise(row, per_channel, rank[i])}
        out.append(LayerStats(**{k: v for k, v in row.items() if k in names}))
    return tuple(out)


def timed() -> float:
    return time.perf_counter()
