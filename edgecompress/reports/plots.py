"""Metric vs latency and metric vs size, per model, with the Pareto front marked.

The question the plots answer: which variant × runtime gives the best metric for the latency (or
size) a device can afford. Points off the front are beaten on both axes by some other point.
Matplotlib's object API (no pyplot, no global state) renders with the Agg/SVG canvases only.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edgecompress.errors import require
from edgecompress.reports.records import BenchmarkRecord

FRONT_COLOR = "#d62728"
POINT_COLOR = "#1f77b4"


MARKERS = "osD^v<>pP*"


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    variant: str
    runtime: str = ""

    @property
    def label(self) -> str:
        return f"{self.variant} · {self.runtime}" if self.runtime else self.variant


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: lower-or-equal x and higher-or-equal y, one strictly.

    Returned in order of increasing x, so they can be joined as the front's staircase.
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front: list[int] = []
    best = float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def model_points(records: Sequence[BenchmarkRecord], model: str) -> tuple[list[Point], list[Point], str]:
    """(metric vs p50 latency, metric vs size, metric name) for one model's measured records."""
    measured = [
        r for r in records
        if r.model == model and r.status == "ok" and r.metric_value is not None and r.latency_ms_p50 is not None
    ]  # fmt: skip
    latency = [
        Point(r.latency_ms_p50, r.metric_value * 100, r.variant, f"{r.runtime}{f' {r.threads}t' if r.threads else ''}")
        for r in measured
    ]
    sizes: dict[tuple[str, str], Point] = {}
    for r in measured:  # one file per variant × format, whatever runtime ran it
        sizes.setdefault((r.variant, r.format), Point(r.size_bytes / 1024, r.metric_value * 100, r.variant, r.format))
    name = next((r.metric_name for r in measured if r.metric_name), "metric")
    return latency, list(sizes.values()), name


def models_with_points(records: Sequence[BenchmarkRecord]) -> list[str]:
    return [m for m in dict.fromkeys(r.model for r in records) if model_points(records, m)[0]]


def model_figure(records: Sequence[BenchmarkRecord], model: str):
    """A matplotlib Figure with two panels for one model (None when nothing was measured)."""
    require("matplotlib", "plots", "plotting benchmark results")
    from matplotlib.figure import Figure

    latency, sizes, metric = model_points(records, model)
    if not latency:
        return None
    figure = Figure(figsize=(11, 4.2), layout="constrained")
    panels = figure.subplots(1, 2)
    for axes, points, xlabel in ((panels[0], latency, "latency p50 (ms, batch 1)"), (panels[1], sizes, "model size (KiB)")):
        _panel(axes, points, xlabel, f"{metric} (%)")
    figure.suptitle(f"{model}: {metric} vs latency and size (Pareto front in red)")
    return figure


def _panel(axes, points: list[Point], xlabel: str, ylabel: str) -> None:
    """Colour = variant, marker = runtime (or format); only the Pareto points are labelled, so the
    labels that matter stay readable when many points crowd together."""
    from matplotlib.lines import Line2D

    variants = list(dict.fromkeys(p.variant for p in points))
    kinds = list(dict.fromkeys(p.runtime.split(" ")[0] for p in points))
    palette = [f"C{i % 10}" for i in range(len(variants))]
    for p in points:
        axes.scatter(p.x, p.y, s=36, color=palette[variants.index(p.variant)],
                     marker=MARKERS[kinds.index(p.runtime.split(" ")[0]) % len(MARKERS)], zorder=2)  # fmt: skip
    front = pareto_front([(p.x, p.y) for p in points])
    xs = [points[i].x for i in front]
    ys = [points[i].y for i in front]
    axes.step(xs, ys, where="post", color=FRONT_COLOR, linewidth=1.5, zorder=1)
    axes.scatter(xs, ys, s=110, facecolors="none", edgecolors=FRONT_COLOR, linewidths=1.8, zorder=3)
    for i in front:
        axes.annotate(points[i].label, (points[i].x, points[i].y), textcoords="offset points", xytext=(6, 6),
                      fontsize=7.5, color="#222222")  # fmt: skip
    if max(p.x for p in points) > 20 * max(min(p.x for p in points), 1e-9):
        axes.set_xscale("log")
    axes.margins(x=0.15, y=0.15)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(True, alpha=0.3)
    handles = [Line2D([], [], color=c, marker="o", linestyle="", label=v) for v, c in zip(variants, palette, strict=True)]
    handles += [Line2D([], [], color="#555555", marker=MARKERS[i % len(MARKERS)], linestyle="", label=k) for i, k in enumerate(kinds)]
    handles.append(Line2D([], [], color=FRONT_COLOR, marker="o", markerfacecolor="none", label="Pareto front"))
    axes.legend(handles=handles, loc="best", fontsize=7, framealpha=0.8)


def render(figure, fmt: str) -> bytes:
    """PNG or SVG bytes; SVG without a date and with fixed ids, so reports are reproducible."""
    import matplotlib

    buffer = io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": "edgecompress", "svg.fonttype": "path"}):
        metadata = {"Date": None} if fmt == "svg" else {"Software": None}
        figure.savefig(buffer, format=fmt, dpi=110, metadata=metadata)
    return buffer.getvalue()


def write_plots(records: Sequence[BenchmarkRecord], directory: str | Path) -> list[Path]:
    """``<model>.png`` and ``<model>.svg`` per model with measured points."""
    from edgecompress.artifacts import write_bytes_atomic

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for model in models_with_points(records):
        figure = model_figure(records, model)
        stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in model)
        for fmt in ("png", "svg"):
            path = directory / f"{stem}.{fmt}"
            write_bytes_atomic(path, render(figure, fmt))
            written.append(path)
    return written
