"""One self-contained HTML page: the benchmark table and the plots, inlined as SVG.

Self-contained means no request leaves the page: CSS is inline, the plots are inline SVG (text
rendered as paths, so no fonts are needed), and nothing links out. A report can be mailed,
archived or opened on an air-gapped machine and looks the same.
"""

from __future__ import annotations

import datetime as _dt
import html
from collections.abc import Sequence

from edgecompress.reports.records import BenchmarkRecord
from edgecompress.reports.tables import fastest_summary, table_rows

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; }
table.results { border-collapse: collapse; font-size: 0.85em; }
table.results th, table.results td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
table.results th { background: #f0f3f7; }
table.results td:nth-child(-n+3) { text-align: left; }
table.results tr.not-ok td { color: #888; font-style: italic; }
figure.plot { margin: 1em 0; } figure.plot svg { max-width: 100%; height: auto; }
.meta { color: #555; font-size: 0.9em; }
"""


def svg_inline(data: bytes) -> str:
    """Matplotlib's SVG without the XML prolog and doctype, ready to sit inside HTML."""
    text = data.decode()
    return text[text.index("<svg") :]


def render_html(
    records: Sequence[BenchmarkRecord], title: str = "edgecompress report", sections: Sequence[str] = ()
) -> str:
    """The page; ``sections``: more HTML sections to append (per-layer int8 reports: reports/inspect.py)."""
    parts = [_meta(records), "<h2>Results</h2>", _table(records)]
    summary = fastest_summary(records)
    if summary:
        parts.append('<ul class="fastest">' + "".join(f"<li>{html.escape(line)}</li>" for line in summary) + "</ul>")
    parts += _plots(records)
    return page(title, [*parts, *sections])


def page(title: str, body: Sequence[str]) -> str:
    """A self-contained page: the report's style, a title, then ``body``."""
    head = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    return "\n".join([*head, *body, "</body></html>"]) + "\n"


def _meta(records: Sequence[BenchmarkRecord]) -> str:
    machines = sorted({r.machine for r in records})
    stamp = max((r.timestamp for r in records), default=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    lines = [f"{len(records)} records; measured on {', '.join(machines) or '-'}; latest {stamp}.",
             "Latency: batch 1, p50/p90/p99 over timed runs after warm-up. Δ: metric points vs the float source "
             "on the same data."]  # fmt: skip
    return "".join(f'<p class="meta">{html.escape(line)}</p>' for line in lines)


def _table(records: Sequence[BenchmarkRecord]) -> str:
    header, rows = table_rows(records)
    out = ['<table class="results"><thead><tr>' + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr></thead><tbody>"]
    for record, row in zip(records, rows, strict=True):
        if record.status == "ok":
            cells = "".join(f"<td>{html.escape(c)}</td>" for c in row)
            out.append(f"<tr>{cells}</tr>")
        else:
            cells = "".join(f"<td>{html.escape(c)}</td>" for c in row[:4])
            note = html.escape(row[-1])
            out.append(f'<tr class="not-ok">{cells}<td colspan="{len(header) - 4}">{note}</td></tr>')
    out.append("</tbody></table>")
    return "\n".join(out)


def _plots(records: Sequence[BenchmarkRecord]) -> list[str]:
    from edgecompress.reports.plots import model_figure, models_with_points, render

    models = models_with_points(records)
    if not models:
        return ['<p class="meta">No plots: no record has both a metric and a latency.</p>']
    out = ["<h2>Metric vs latency and size</h2>"]
    for model in models:
        svg = svg_inline(render(model_figure(records, model), "svg"))
        caption = f"{model}: points on the red line are not beaten on both axes by any other variant × runtime."
        out.append(f'<figure class="plot" data-model="{html.escape(model)}">{svg}<figcaption class="meta">'
                   f"{html.escape(caption)}</figcaption></figure>")  # fmt: skip
    return out
