"""Range observers: streaming estimates of the real range [lo, hi] an 8-bit tensor should cover.

Pure numpy and graph-agnostic: an observer sees arrays one batch at a time and never the model, so
the same objects calibrate TFLite tensors, ONNX tensors and Keras weights. Per-tensor observers
return 0-d ``lo, hi``; per-channel ones (``axis`` set) return one pair per channel along that axis.

- ``minmax``: the extremes seen (what the TFLite calibrator and ONNX Runtime's MinMax do).
- ``percentile``: keep the central ``p`` % of the values, clipping ``(100 - p) / 2`` % on each side.
- ``entropy``: the range whose 8-bit histogram loses least information (KL divergence), searched
  as in Migacz, "8-bit Inference with TensorRT" (GTC 2017). Exact zeros are left out of its
  histogram: zero is on every int8 grid, and a ReLU's spike of zeros would otherwise dominate the
  divergence. On inputs with few distinct values (digits: 17 grey levels) the early activations are
  spiky histograms, and KL then prefers narrow ranges; the export check and the metric judge it.
- ``mse``: the range with the least expected squared quantization error (rounding inside the
  range, clipping outside it), e.g. Banner et al., "Post training 4-bit quantization" (2019).

The three histogram methods search ranges ``[s·lo, s·hi]`` over a shrink factor ``s`` of the
observed extremes, so zero stays inside and one-sided tensors (after ReLU) stay one-sided.
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np

from edgecompress.errors import UsageError
from edgecompress.registry import Registry

#: histogram resolution of the histogram methods (as ONNX Runtime's and TensorRT's 2048)
DEFAULT_BINS = 2048
DEFAULT_PERCENTILE = 99.99
#: smallest shrink factor searched by entropy / mse (keeps at least 1/8 of the observed range)
MIN_SHRINK = 0.125


class Observer(abc.ABC):
    """Sees batches through ``update``; ``range()`` gives (lo, hi), 0-d or one value per channel."""

    name: str = ""

    def __init__(self, axis: int | None = None, bits: int = 8) -> None:
        if not 2 <= int(bits) <= 16:
            raise UsageError(f"bits must be between 2 and 16, not {bits}", "use 8 for int8")
        self.axis = axis
        self.bits = int(bits)
        self.count = 0

    @property
    def levels(self) -> int:
        return 2**self.bits

    def _rows(self, x: np.ndarray) -> np.ndarray:
        """The batch as (samples, channels): one column for per-tensor observers."""
        x = np.asarray(x, dtype=np.float32)
        if self.axis is None:
            return x.reshape(-1, 1)
        return np.moveaxis(x, self.axis, -1).reshape(-1, x.shape[self.axis])

    def update(self, x: np.ndarray) -> None:
        rows = self._rows(x)
        if rows.size == 0:
            return
        if not np.all(np.isfinite(rows)):
            rows = np.where(np.isfinite(rows), rows, 0.0).astype(np.float32)
        self.count += rows.shape[0]
        self._update(rows)

    @abc.abstractmethod
    def _update(self, rows: np.ndarray) -> None: ...

    @abc.abstractmethod
    def _range(self) -> tuple[np.ndarray, np.ndarray]: ...

    def range(self) -> tuple[np.ndarray, np.ndarray]:
        if self.count == 0:
            raise UsageError(f"the {self.name} observer saw no data", "feed it at least one batch")
        lo, hi = self._range()
        if self.axis is None:
            return np.float32(lo[0]), np.float32(hi[0])
        return lo.astype(np.float32), hi.astype(np.float32)

    def params(self) -> dict[str, Any]:
        return {"method": self.name, "per_channel": self.axis is not None, "bits": self.bits}


OBSERVERS: Registry[type[Observer]] = Registry("calibration method")


@OBSERVERS.register("minmax", "min_max")
class MinMaxObserver(Observer):
    name = "minmax"

    def __init__(self, axis: int | None = None, bits: int = 8) -> None:
        super().__init__(axis, bits)
        self.lo: np.ndarray | None = None
        self.hi: np.ndarray | None = None

    def _update(self, rows: np.ndarray) -> None:
        lo, hi = rows.min(axis=0), rows.max(axis=0)
        self.lo = lo if self.lo is None else np.minimum(self.lo, lo)
        self.hi = hi if self.hi is None else np.maximum(self.hi, hi)

    def _range(self) -> tuple[np.ndarray, np.ndarray]:
        return self.lo, self.hi


class HistogramObserver(Observer):
    """A per-channel histogram over the range seen so far, re-binned when a batch widens it.

    Re-binning spreads each old bin's count over the new bins it overlaps (linear in the CDF);
    the first batches usually set the range, so little is smeared.
    """

    #: leave exact zeros out of the histogram (see EntropyObserver)
    skip_zeros = False

    def __init__(self, axis: int | None = None, bits: int = 8, bins: int = DEFAULT_BINS) -> None:
        super().__init__(axis, bits)
        if int(bins) < 2 * self.levels:
            raise UsageError(f"bins must be at least {2 * self.levels} for {self.bits}-bit ranges", "use 2048")
        self.bins = int(bins)
        self.edges_lo: np.ndarray | None = None  # (C,)
        self.edges_hi: np.ndarray | None = None
        self.hist: np.ndarray | None = None  # (C, bins)

    def _update(self, rows: np.ndarray) -> None:
        lo, hi = rows.min(axis=0).astype(np.float64), rows.max(axis=0).astype(np.float64)
        if self.hist is None:
            self.edges_lo, self.edges_hi = _widen(lo, hi)
            self.hist = np.zeros((rows.shape[1], self.bins), dtype=np.float64)
        elif np.any(lo < self.edges_lo) or np.any(hi > self.edges_hi):
            new_lo, new_hi = _widen(np.minimum(lo, self.edges_lo), np.maximum(hi, self.edges_hi))
            self.hist = _rebin(self.hist, self.edges_lo, self.edges_hi, new_lo, new_hi)
            self.edges_lo, self.edges_hi = new_lo, new_hi
        channels = rows.shape[1]
        width = (self.edges_hi - self.edges_lo) / self.bins
        index = np.floor((rows - self.edges_lo) / width).astype(np.int64)
        np.clip(index, 0, self.bins - 1, out=index)
        index += np.arange(channels, dtype=np.int64) * self.bins
        weights = None if not self.skip_zeros else (rows != 0).ravel().astype(np.float64)
        counts = np.bincount(index.ravel(), weights=weights, minlength=channels * self.bins)
        self.hist += counts.reshape(channels, self.bins)

    def bin_centres(self) -> np.ndarray:
        width = (self.edges_hi - self.edges_lo) / self.bins
        return self.edges_lo[:, None] + (np.arange(self.bins) + 0.5) * width[:, None]

    def _range(self) -> tuple[np.ndarray, np.ndarray]:
        pairs = [self._channel_range(self.hist[c], self.edges_lo[c], self.edges_hi[c]) for c in range(len(self.hist))]
        return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])

    @abc.abstractmethod
    def _channel_range(self, hist: np.ndarray, lo: float, hi: float) -> tuple[float, float]: ...

    def _extremes(self, hist: np.ndarray, lo: float, hi: float) -> tuple[float, float]:
        """The observed range, from the first and last occupied bins, with zero included."""
        width = (hi - lo) / self.bins
        occupied = np.flatnonzero(hist)
        if len(occupied) == 0:  # nothing but (skipped) zeros
            return min(lo, 0.0), max(hi, 0.0)
        first, last = lo + occupied[0] * width, lo + (occupied[-1] + 1) * width
        return min(first, 0.0), max(last, 0.0)

    def _candidates(self, hist: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
        """Shrink factors from MIN_SHRINK to 1 and the ranges they give."""
        first, last = self._extremes(hist, lo, hi)
        shrink = np.linspace(MIN_SHRINK, 1.0, 225)
        return shrink * first, shrink * last


@OBSERVERS.register("percentile")
class PercentileObserver(HistogramObserver):
    name = "percentile"

    def __init__(
        self, axis: int | None = None, bits: int = 8, bins: int = DEFAULT_BINS, percentile: float = DEFAULT_PERCENTILE
    ) -> None:
        super().__init__(axis, bits, bins)
        if not 50.0 < float(percentile) <= 100.0:
            raise UsageError(f"percentile must be in (50, 100], not {percentile}", "e.g. --percentile 99.99")
        self.percentile = float(percentile)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "percentile": self.percentile}

    def _channel_range(self, hist: np.ndarray, lo: float, hi: float) -> tuple[float, float]:
        # The central p % is kept, (100 - p) / 2 % cut from each tail: ONNX Runtime's convention,
        # so one --percentile means the same for both formats.
        edges = np.linspace(lo, hi, self.bins + 1)
        cdf = np.concatenate([[0.0], np.cumsum(hist)])
        tail = (1.0 - self.percentile / 100.0) / 2.0
        low = float(np.interp(tail * cdf[-1], cdf, edges))
        high = float(np.interp((1.0 - tail) * cdf[-1], cdf, edges))
        return min(low, 0.0), max(high, 0.0)


@OBSERVERS.register("mse")
class MSEObserver(HistogramObserver):
    name = "mse"

    def _channel_range(self, hist: np.ndarray, lo: float, hi: float) -> tuple[float, float]:
        centres = lo + (np.arange(self.bins) + 0.5) * (hi - lo) / self.bins
        lows, highs = self._candidates(hist, lo, hi)
        errors = [expected_squared_error(hist, centres, a, b, self.levels) for a, b in zip(lows, highs, strict=True)]
        best = int(np.argmin(errors))
        return float(lows[best]), float(highs[best])


@OBSERVERS.register("entropy", "kl")
class EntropyObserver(HistogramObserver):
    name = "entropy"
    skip_zeros = True

    def _channel_range(self, hist: np.ndarray, lo: float, hi: float) -> tuple[float, float]:
        centres = lo + (np.arange(self.bins) + 0.5) * (hi - lo) / self.bins
        lows, highs = self._candidates(hist, lo, hi)
        divergences = [kl_divergence(hist, centres, a, b, self.levels) for a, b in zip(lows, highs, strict=True)]
        best = int(np.argmin(divergences))
        return float(lows[best]), float(highs[best])


def expected_squared_error(hist: np.ndarray, centres: np.ndarray, lo: float, hi: float, levels: int) -> float:
    """Squared error of ``levels``-level quantization over [lo, hi], summed over the histogram.

    Inside the range the rounding error is uniform (step²/12); outside it, values are clipped to
    the nearest end.
    """
    step = (hi - lo) / (levels - 1)
    if step <= 0:
        return float(np.sum(hist * centres**2))
    clipped = np.clip(centres, lo, hi)
    inside = (centres >= lo) & (centres <= hi)
    error = np.where(inside, step * step / 12.0, (centres - clipped) ** 2)
    return float(np.sum(hist * error))


def kl_divergence(hist: np.ndarray, centres: np.ndarray, lo: float, hi: float, levels: int) -> float:
    """KL(P‖Q) of clipping to [lo, hi], as in TensorRT's calibrator.

    P is the histogram clipped to [lo, hi], its outliers piled on the end bins (what the int8 tensor
    will hold); Q is the *unclipped* part merged into ``levels`` equal intervals and spread back evenly
    over each interval's occupied bins. The outliers are missing from Q, so clipping mass costs
    divergence; were they in Q too, the narrowest range would always look best.
    """
    keep = np.flatnonzero((centres >= lo) & (centres <= hi))
    if len(keep) < levels:
        return float("inf")
    first, last = keep[0], keep[-1]
    inside = hist[first : last + 1].astype(np.float64)
    p = inside.copy()
    p[0] += hist[:first].sum()
    p[-1] += hist[last + 1 :].sum()
    groups = np.minimum((np.arange(len(p)) * levels) // len(p), levels - 1)
    totals = np.bincount(groups, weights=inside, minlength=levels)
    occupied = np.bincount(groups, weights=(p > 0).astype(np.float64), minlength=levels)
    mask = p > 0
    q = np.where(mask, totals[groups] / np.maximum(occupied[groups], 1.0), 0.0)
    if p.sum() <= 0 or q.sum() <= 0:
        return float("inf")
    p_norm, q_norm = p[mask] / p.sum(), q[mask] / q.sum()
    # A bin of P that Q left empty (only outliers landed there): a small floor, not an infinity.
    q_norm = np.maximum(q_norm, 1e-12)
    return float(np.sum(p_norm * np.log(p_norm / q_norm)))


def _widen(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Histogram edges holding [lo, hi] and zero, never of zero width."""
    lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
    span = np.where(hi - lo > 0, hi - lo, 1e-8)
    return lo, lo + span


def _rebin(hist: np.ndarray, old_lo, old_hi, new_lo, new_hi) -> np.ndarray:
    bins = hist.shape[1]
    out = np.empty_like(hist)
    for c in range(hist.shape[0]):
        old_edges = np.linspace(old_lo[c], old_hi[c], bins + 1)
        new_edges = np.linspace(new_lo[c], new_hi[c], bins + 1)
        cdf = np.concatenate([[0.0], np.cumsum(hist[c])])
        out[c] = np.diff(np.interp(new_edges, old_edges, cdf))
    return out


def make_observer(method: str, axis: int | None = None, **params: Any) -> Observer:
    """An observer by registered name, with its parameters (``percentile`` only for percentile)."""
    cls = OBSERVERS.get(method)
    if "percentile" in params and cls is not PercentileObserver:
        params = {k: v for k, v in params.items() if k != "percentile"}
    return cls(axis=axis, **params)


def quantization_params(lo: float, hi: float, bits: int = 8, signed: bool = True) -> tuple[float, int]:
    """(scale, zero point) of the affine grid over [lo, hi] with zero exactly representable.

    The nudging of TFLite's and ONNX Runtime's quantizers: the range is widened to hold zero, the
    scale is (hi - lo) / (2^bits - 1), and the zero point is rounded onto the integer grid.
    """
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    qmin, qmax = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    scale = (hi - lo) / (qmax - qmin) if hi > lo else 1.0
    zero_point = int(np.clip(round(qmin - lo / scale), qmin, qmax))
    return scale, zero_point
