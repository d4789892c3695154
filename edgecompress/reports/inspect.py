"""Renderings of an inspect report: text (worst layers first), SQNR-along-depth plot, HTML section.

The report itself (compress/inspect.py) is data; everything here reads its ``to_dict()`` form, so a
JSON saved by ``compress inspect --json`` renders the same way later.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

WORST = 10


def _db(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "exact" if value > 0 else "-inf"
    return f"{value:.1f}"


def _num(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def _range(row: dict[str, Any]) -> str:
    if row.get("act_min") is None:
        return "-"
    return f"[{_num(row['act_min'])}, {_num(row['act_max'])}]"


def headline(report: dict[str, Any]) -> list[str]:
    calib = report["calibration"]
    method = calib.get("method", "?")
    if method == "converter":
        method = "the converter's own min/max"
    elif "percentile" in calib:
        method = f"percentile {calib['percentile']}"
    lines = [
        f"  calibration   {calib.get('samples')} samples from {calib.get('source')}, ranges by {method}",
        f"  compared on   {report['samples_from']} ({'per-channel' if report['per_channel'] else 'per-tensor'} "
        f"weights); model output SQNR {_db(report['output_sqnr_db'])} dB",
    ]
    metrics = report.get("metrics") or {}
    if metrics:
        for name, value in metrics["float"].items():
            if name == "samples":
                continue
            int8 = metrics["int8"][name]
            lines.append(f"  accuracy      {name} float {value:.2%} → int8 {int8:.2%} ({(int8 - value) * 100:+.2f} points, "
                         f"{int(metrics['float'].get('samples', 0))} samples)")  # fmt: skip
    if report.get("keep_float"):
        lines.append(f"  kept in float {', '.join(report['keep_float'])}")
    return lines


def render_text(report: dict[str, Any], worst: int = WORST) -> str:
    """What `compress inspect` prints: the headline, the worst layers with advice, then notes."""
    rows = {r["layer"]: r for r in report["layers"]}
    lines = [f"compress inspect: {report['model']} ({report['format']}, int8)", *headline(report), ""]
    header = f"  {'#':>3}  {'layer':<30} {'op':<18} {'alone dB':>8} {'accum. dB':>9} {'rel RMSE':>8} {'w spread':>8} {'act range':<22}"
    lines += [f"worst {min(worst, len(report['layers']))} of {len(report['layers'])} int8 ops (error this op adds on "
              "its own; accumulated = vs the float model):", header]  # fmt: skip
    for name in report["worst"][:worst]:
        r = rows[name]
        lines.append(
            f"  {r['depth']:>3}  {r['layer'][:30]:<30} {r['op'][:18]:<18} {_db(r['sqnr_alone_db']):>8} {_db(r['sqnr_db']):>9} "
            f"{_num(r['rel_rmse']):>8} {_num(r['channel_spread']):>8} {_range(r):<22}"
        )
        for advice in r.get("advice") or []:
            lines.append(f"{'':7}→ {advice}")
    for note in report.get("notes") or []:
        lines.append(f"note: {note}")
    lines.append(f"took {report['seconds']:.1f} s")
    return "\n".join(lines)


def render_depth_table(report: dict[str, Any]) -> str:
    """Every op in depth order (markdown), for files and the HTML section."""
    lines = ["| # | layer | op | alone SQNR dB | accumulated SQNR dB | rel. RMSE | weight spread | activation range |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in report["layers"]:
        lines.append(f"| {r['depth']} | {r['layer']} | {r['op']} | {_db(r['sqnr_alone_db'])} | {_db(r['sqnr_db'])} | "
                     f"{_num(r['rel_rmse'])} | {_num(r['channel_spread'])} | {_range(r)} |")  # fmt: skip
    return "\n".join(lines)


def depth_figure(reports: Sequence[dict[str, Any]]):
    """SQNR along the depth: accumulated (line) and alone (points), one colour per report."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 4.2))
    axes = figure.add_subplot(1, 1, 1)
    for i, report in enumerate(reports):
        colour = f"C{i}"
        depth = [r["depth"] for r in report["layers"]]
        accumulated = [_finite(r["sqnr_db"]) for r in report["layers"]]
        alone = [_finite(r["sqnr_alone_db"]) for r in report["layers"]]
        label = f"{report['model']} {report['format']}"
        axes.plot(depth, accumulated, color=colour, linewidth=1.6, label=f"{label}: accumulated")
        axes.scatter(depth, alone, color=colour, s=12, marker="o", alpha=0.6, label=f"{label}: this op alone")
        for name in report["worst"][:3]:
            row = next(r for r in report["layers"] if r["layer"] == name)
            value = _finite(row["sqnr_alone_db"])
            if value is not None:
                axes.annotate(name, (row["depth"], value), textcoords="offset points", xytext=(4, -10), fontsize=7,
                              color=colour)  # fmt: skip
    axes.set_xlabel("depth (int8 ops in execution order)")
    axes.set_ylabel("SQNR vs float (dB, higher is better)")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=7, loc="best")
    figure.tight_layout()
    return figure


def _finite(value: Any) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def write_plot(reports: Sequence[dict[str, Any]], path) -> None:
    """PNG or SVG by the file's suffix."""
    from edgecompress.artifacts import write_bytes_atomic
    from edgecompress.reports.plots import render

    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    write_bytes_atomic(path, render(depth_figure(reports), "svg" if fmt == "svg" else "png"))


def html_section(report: dict[str, Any]) -> str:
    """The inspect section of an HTML report: headline, SVG plot, worst layers, full depth table."""
    from edgecompress.reports.html import svg_inline
    from edgecompress.reports.plots import render

    rows = {r["layer"]: r for r in report["layers"]}
    title = f"Per-layer int8 error: {report['model']} ({report['format']})"
    parts = [f'<section class="inspect"><h2>{html.escape(title)}</h2>']
    parts += [f'<p class="meta">{html.escape(line.strip())}</p>' for line in headline(report)]
    parts.append(f'<figure class="plot">{svg_inline(render(depth_figure([report]), "svg"))}'
                 '<figcaption class="meta">Line: error accumulated along the depth; points: the error each op adds '
                 "on its own.</figcaption></figure>")  # fmt: skip
    parts.append('<table class="results"><thead><tr><th>#</th><th>layer</th><th>op</th><th>alone dB</th>'
                 "<th>accumulated dB</th><th>weight spread</th><th>advice</th></tr></thead><tbody>")  # fmt: skip
    for name in report["worst"]:
        r = rows[name]
        cells = [str(r["depth"]), r["layer"], r["op"], _db(r["sqnr_alone_db"]), _db(r["sqnr_db"]),
                 _num(r["channel_spread"]), "; ".join(r.get("advice") or [])]  # fmt: skip
        parts.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    parts.append("</tbody></table>")
    parts += [f'<p class="meta">note: {html.escape(n)}</p>' for n in report.get("notes") or []]
    parts.append("</section>")
    return "\n".join(parts)


def render_inspect_page(inspections: Sequence[dict[str, Any]], title: str = "edgecompress inspect") -> str:
    """A page holding only per-layer int8 reports (`compress inspect --html`)."""
    from edgecompress.reports.html import page

    return page(title, [html_section(report) for report in inspections])


def find_inspections(results: str | Path) -> list[dict[str, Any]]:
    """Inspect reports a pipeline's stages recorded (``<results>/cache/*/stage.json``), oldest first."""
    import json

    base = Path(results) if Path(results).is_dir() else Path(results).parent
    found = []
    for marker in sorted((base / "cache").glob("*/stage.json"), key=lambda p: p.stat().st_mtime):
        try:
            report = json.loads(marker.read_text()).get("report") or {}
        except (OSError, ValueError):
            continue
        if isinstance(report, dict) and isinstance(report.get("inspect"), dict):
            found.append(report["inspect"])
    return found


def fix_lines(details: dict[str, Any]) -> list[str]:
    """`compress quantize` report lines for the accuracy tools it used."""
    lines = []
    if details.get("calibration_method"):
        lines.append(f"  ranges        {details['calibration_method']}")
    fixes = details.get("fixes") or {}
    if "equalize" in fixes:
        eq = fixes["equalize"]
        lines.append(f"  equalize      {len(eq['pairs'])} layer pairs, {eq['folded']} BatchNorms folded; worst channel "
                     f"spread {eq['spread_before']:.1f}× → {eq['spread_after']:.1f}×")  # fmt: skip
        lines += [f"                {note}" for note in eq.get("notes", [])]
    if "bias_correction" in fixes:
        bc = fixes["bias_correction"]
        lines.append(f"  bias correct. {len(bc['corrected'])} layers from {bc['samples']} calibration samples "
                     f"(mean shift {bc['relative_shift']:.1%} of their biases)")  # fmt: skip
    search = details.get("keep_float_search")
    if search:
        kept = ", ".join(search["kept"]) or "none"
        verdict = "met" if search["met"] else "NOT met"
        lines.append(f"  keep float    {kept}: {search['metric']} drop {search['drop_points']:.2f} points on --eval "
                     f"(limit {search['max_drop']:.2f}: {verdict})")  # fmt: skip
        for cost in search.get("costs", []):
            lines.append(f"                {cost['layer']}: +{cost['size_bytes'] / 1024:.1f} KiB, "
                         f"{cost['latency_ms']:+.3f} ms")  # fmt: skip
    elif details.get("keep_float"):
        lines.append(f"  keep float    {', '.join(details['keep_float'])}")
    return lines
