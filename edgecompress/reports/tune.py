"""What `compress tune` found, as frozen data, and how it reads: terminal lines, the Pareto plot with
the pick marked, and an HTML page. The search itself is ``pipeline/tune.py``."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from edgecompress.errors import UsageError
from edgecompress.reports.records import BenchmarkRecord


@dataclass(frozen=True)
class Budget:
    """What the pick must meet: a metric drop in points against the float source, and optionally
    a latency (ms, p50, batch 1) and a file size (MB = 10^6 bytes)."""

    max_drop: float = 0.5
    latency_ms: float | None = None
    size_mb: float | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.max_drop, int | float) and math.isfinite(self.max_drop) and self.max_drop >= 0):
            raise UsageError(f"max_drop must be ≥ 0 points, not {self.max_drop!r}", "e.g. --max-drop 0.5")
        for name, flag in (("latency_ms", "--latency-budget"), ("size_mb", "--size-budget")):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise UsageError(f"{name} must be a number > 0, not {value!r}", f"e.g. {flag} 2")

    @property
    def size_bytes(self) -> float | None:
        return None if self.size_mb is None else self.size_mb * 1e6

    def drop_met_by(self, m: Measured) -> bool:
        return m.ok and m.drop is not None and m.drop <= self.max_drop + 1e-9

    def met_by(self, m: Measured) -> bool:
        return self.drop_met_by(m) and not self.excess(m)

    def excess(self, m: Measured) -> dict[str, float]:
        """How far ``m`` is over each budget, as a fraction of it (empty: within every one)."""
        if not m.ok:
            return {"failed": math.inf}
        out = {}
        if m.drop is None or m.drop > self.max_drop + 1e-9:
            out["drop"] = math.inf if m.drop is None else (m.drop - self.max_drop) / max(self.max_drop, 1.0)
        if self.latency_ms is not None and m.latency_ms > self.latency_ms:
            out["latency"] = m.latency_ms / self.latency_ms - 1
        if self.size_bytes is not None and m.size_bytes > self.size_bytes:
            out["size"] = m.size_bytes / self.size_bytes - 1
        return out

    def describe(self, metric: str = "metric") -> str:
        parts = [f"{metric} drop ≤ {self.max_drop:g} points"]
        if self.latency_ms is not None:
            parts.append(f"latency ≤ {self.latency_ms:g} ms")
        if self.size_mb is not None:
            parts.append(f"size ≤ {self.size_mb:g} MB")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Measured:
    """One built variant: its file, its latency at each thread count, and its metric beside the
    float source's on the same held-out data.

    ``status``: "ok" (timed and scored), "timed" (timed, not scored: it could not be the pick,
    ``note`` says why; its metric is unknown, never filled in) or "failed"."""

    label: str
    runtime: str
    format: str
    settings: Mapping[str, Any]
    path: str | None
    size_bytes: int = 0
    latency_by_threads: Mapping[int, float] = field(default_factory=dict)
    metric_name: str = "metric"
    metric: float | None = None
    source_metric: float | None = None
    status: str = "ok"  # ok | timed | failed
    note: str = ""
    seconds: float = 0.0
    cached: bool = False

    @property
    def ok(self) -> bool:
        """Built and timed (scored or not)."""
        return self.status in ("ok", "timed") and bool(self.latency_by_threads)

    @property
    def scored(self) -> bool:
        return self.ok and self.status == "ok"

    @property
    def threads(self) -> int | None:
        return min(self.latency_by_threads, key=self.latency_by_threads.get) if self.latency_by_threads else None

    @property
    def latency_ms(self) -> float:
        return min(self.latency_by_threads.values()) if self.latency_by_threads else math.inf

    @property
    def drop(self) -> float | None:
        """Metric points lost against the float source (negative: gained)."""
        if self.metric is None or self.source_metric is None:
            return None
        return (self.source_metric - self.metric) * 100

    def summary(self) -> str:
        if not self.ok:
            return f"{self.label}: failed ({self.note})"
        drop = f", {self.metric_name} {self.metric:.2%} ({-self.drop:+.2f} points)" if self.drop is not None else ""
        if not self.scored:
            drop = f", {self.metric_name} not scored"
        return f"{self.label}, {self.threads} thread(s): {self.latency_ms:.3f} ms, {self.size_bytes / 1e6:.2f} MB{drop}"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["latency_by_threads"] = {str(k): v for k, v in self.latency_by_threads.items()}
        out.update(threads=self.threads, latency_ms=self.latency_ms if self.ok else None, drop=self.drop)
        return out


@dataclass(frozen=True)
class Cut:
    """A variant never built, and why it could not have become the pick."""

    label: str
    reason: str
    floor_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TuneResult:
    model: str
    metric_name: str
    budget: Budget
    target: str
    target_note: str
    threads: tuple[int, ...]
    machine: str
    measured: tuple[Measured, ...]
    cut: tuple[Cut, ...]
    space_size: int
    pick: Measured | None
    why: str
    closest: Measured | None = None
    output: str | None = None
    workdir: str | None = None
    seconds: float = 0.0
    search: str = "branch-and-bound"

    @property
    def built(self) -> int:
        return sum(1 for m in self.measured if not m.cached)

    @property
    def scored(self) -> int:
        return sum(1 for m in self.measured if m.scored)

    def front(self, axis: str) -> list[Measured]:
        """The measured variants no other beats on both the metric and ``axis`` (latency or size)."""
        from edgecompress.reports.plots import pareto_front

        points = [m for m in self.measured if m.ok and m.metric is not None]
        x = (lambda m: m.latency_ms) if axis == "latency" else (lambda m: float(m.size_bytes))
        return [points[i] for i in pareto_front([(x(m), m.metric) for m in points])]

    def records(self) -> list[BenchmarkRecord]:
        """One record per measured variant and thread count, for the plots, the store and `compress report`."""
        out = []
        for m in self.measured:
            for threads, latency in sorted(m.latency_by_threads.items()):
                delta = None if m.drop is None else -m.drop / 100
                out.append(BenchmarkRecord(
                    model=self.model, variant=m.label.rsplit(" · ", 1)[0], format=m.format, runtime=m.runtime,
                    runtime_version="", device="cpu", threads=threads, size_bytes=m.size_bytes,
                    size_gzip_bytes=0, latency_ms_p50=latency, metric_name=self.metric_name, metric_value=m.metric,
                    metric_delta=delta, machine=self.machine, status="ok" if m.ok else "error", note=m.note,
                ))  # fmt: skip
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "metric": self.metric_name, "budget": self.budget.to_dict(), "target": self.target,
            "target_note": self.target_note, "threads": list(self.threads), "machine": self.machine,
            "search": self.search, "space_size": self.space_size, "built": self.built, "scored": self.scored,
            "seconds": self.seconds,
            "pick": self.pick.to_dict() if self.pick else None, "why": self.why,
            "closest": self.closest.to_dict() if self.closest else None, "output": self.output,
            "workdir": self.workdir, "measured": [m.to_dict() for m in self.measured],
            "cut": [c.to_dict() for c in self.cut],
            "front_latency": [m.label for m in self.front("latency")], "front_size": [m.label for m in self.front("size")],
        }  # fmt: skip


# --------------------------------------------------------------------------- terminal


def render_lines(result: TuneResult) -> list[str]:
    measured = len(result.measured)
    lines = [
        f"  target        {result.target}",
        f"  measured on   {result.machine}; threads {', '.join(map(str, result.threads))}"
        + (f" ({result.target_note})" if result.target_note else ""),
        f"  budget        {result.budget.describe(result.metric_name)}",
        f"  searched      {measured} of {result.space_size} variants measured ({result.built} built, "
        f"{measured - result.built} cached; {result.scored} scored), {len(result.cut)} cut, "
        f"in {result.seconds:.1f} s ({result.search})",
    ]
    for axis in ("latency", "size"):
        lines.append(f"  Pareto front, {result.metric_name} vs {axis}:")
        lines += [f"    {row}" for row in _table(result.front(axis), result.pick)]
    if result.pick is not None:
        lines.append(f"  pick          {result.pick.summary()}")
        lines.append(f"  why           {result.why}")
        if result.output:
            lines.append(f"  written       {result.output} (+ .json sidecar)")
    else:
        lines.append(f"  no pick       {result.why}")
    for cut in result.cut:
        lines.append(f"  cut           {cut.label}: {cut.reason}")
    for m in result.measured:
        if m.ok and not m.scored:
            lines.append(f"  timed only    {m.label}: {m.latency_ms:.3f} ms, {m.note}")
        if not m.ok:
            lines.append(f"  failed        {m.label}: {m.note}")
    if result.workdir:
        lines.append(f"  report        {result.workdir}/tune.html, tune.png, tune.svg, tune.json")
    return lines


def _table(rows: Sequence[Measured], pick: Measured | None) -> list[str]:
    head = f"{'variant':<44} {'threads':>7} {'latency':>10} {'size':>9} {'metric':>8} {'Δ points':>9}"
    out = [head]
    for m in rows:
        mark = "  ← pick" if pick is not None and m.label == pick.label else ""
        drop = "-" if m.drop is None else f"{-m.drop:+.2f}"
        metric = _metric_cell(m)
        out.append(f"{m.label[:44]:<44} {m.threads:>7} {m.latency_ms:>7.3f} ms {m.size_bytes / 1e6:>6.2f} MB "
                   f"{metric:>8} {drop:>9}{mark}")  # fmt: skip
    return out


def _metric_cell(m: Measured) -> str:
    if not m.scored:
        return "not scored"
    return "-" if m.metric is None else f"{m.metric:.2%}"


def budget_line(result: TuneResult) -> str:
    """The one line said when nothing meets the budget: the budget and the closest candidate."""
    closest = result.closest
    if closest is None:
        return f"no variant could be measured for {result.budget.describe(result.metric_name)}"
    over = result.budget.excess(closest)
    parts = []
    if "drop" in over:
        parts.append(f"drop {closest.drop:.2f} points" if closest.drop is not None else "no metric")
    if "latency" in over:
        parts.append(f"{closest.latency_ms:.3f} ms")
    if "size" in over:
        parts.append(f"{closest.size_bytes / 1e6:.2f} MB")
    return (f"no variant meets {result.budget.describe(result.metric_name)}; closest: {closest.label} "
            f"({closest.threads} thread(s)), over on {', '.join(parts)}")  # fmt: skip


# --------------------------------------------------------------------------- plot and HTML


def tune_figure(result: TuneResult):
    """The two Pareto panels of ``reports/plots.py`` for the measured variants, the pick starred."""
    from edgecompress.reports.plots import model_figure

    best = [r for r in result.records() if r.status == "ok" and r.metric_value is not None]
    figure = model_figure(_best_threads(result, best), result.model)
    if figure is None:
        return None
    pick = result.pick
    if pick is not None and pick.metric is not None:
        latency_axes, size_axes = figure.axes[0], figure.axes[1]
        for axes, x in ((latency_axes, pick.latency_ms), (size_axes, pick.size_bytes / 1024)):
            axes.scatter([x], [pick.metric * 100], marker="*", s=320, color="#ffbf00", edgecolors="#222222",
                         linewidths=0.8, zorder=5)  # fmt: skip
            axes.annotate("pick", (x, pick.metric * 100), textcoords="offset points", xytext=(-14, -16), fontsize=8,
                          fontweight="bold")  # fmt: skip
    figure.suptitle(f"{result.model}: {result.metric_name} vs latency and size (Pareto front in red, pick starred)")
    return figure


def _best_threads(result: TuneResult, records: list[BenchmarkRecord]) -> list[BenchmarkRecord]:
    """One point per variant: at the thread count it is fastest with (more would crowd the plot)."""
    best = {(m.label.rsplit(" · ", 1)[0], m.runtime): m.threads for m in result.measured if m.ok}
    return [r for r in records if best.get((r.variant, r.runtime)) == r.threads]


def render_html(result: TuneResult, svg: str | None) -> str:
    from edgecompress.reports.html import _CSS  # noqa: PLC2701 - one stylesheet for every report page

    esc = html.escape
    title = f"compress tune: {result.model}"
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{esc(title)}</title>",
        f"<style>{_CSS}</style></head><body>", f"<h1>{esc(title)}</h1>",
        f'<p class="meta">{esc(render_lines(result)[0].strip())}; measured on {esc(result.machine)}.</p>',
        f'<p class="meta">Budget: {esc(result.budget.describe(result.metric_name))}. '
        f"{len(result.measured)} of {result.space_size} variants measured ({result.scored} scored), "
        f"{len(result.cut)} cut, "
        f"{result.seconds:.1f} s.</p>",
    ]  # fmt: skip
    if result.pick is not None:
        parts.append(f"<h2>Pick</h2><p><b>{esc(result.pick.summary())}</b></p><p>{esc(result.why)}</p>")
    else:
        parts.append(f"<h2>No pick</h2><p>{esc(budget_line(result))}</p>")
    if svg:
        parts.append(f'<figure class="plot">{svg}</figure>')
    for axis in ("latency", "size"):
        parts.append(f"<h2>Pareto front: {esc(result.metric_name)} vs {axis}</h2>")
        parts.append(_html_table(result.front(axis), result.pick))
    parts.append("<h2>Every measured variant</h2>")
    parts.append(_html_table(sorted((m for m in result.measured if m.ok), key=lambda m: m.latency_ms), result.pick))
    timed = [m for m in result.measured if m.ok and not m.scored]
    if timed:
        parts.append("<h2>Timed, not scored</h2><ul>")
        parts += [f"<li>{esc(m.label)}: {m.latency_ms:.3f} ms, {esc(m.note)}</li>" for m in timed]
        parts.append("</ul>")
    if result.cut:
        parts.append("<h2>Cut without building</h2><ul>")
        parts += [f"<li>{esc(c.label)}: {esc(c.reason)}</li>" for c in result.cut]
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _html_table(rows: Sequence[Measured], pick: Measured | None) -> str:
    head = ("variant", "threads", "latency (ms)", "size (MB)", "metric", "Δ points")
    out = ['<table class="results"><thead><tr>' + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead><tbody>"]
    for m in rows:
        cells = [m.label + (" ← pick" if pick is not None and m.label == pick.label else ""), str(m.threads),
                 f"{m.latency_ms:.3f}", f"{m.size_bytes / 1e6:.2f}", _metric_cell(m),
                 "-" if m.drop is None else f"{-m.drop:+.2f}"]  # fmt: skip
        out.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)
