"""Renderings of BenchmarkRecords: a text/markdown table, CSV and JSON."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence

from edgecompress.reports.records import BenchmarkRecord


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return str(n)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _metric(record: BenchmarkRecord) -> str:
    if record.metric_value is None:
        return "-"
    text = f"{record.metric_value * 100:.2f}%"
    if record.metric_delta is not None:
        text += f" ({record.metric_delta * 100:+.2f})"
    return text


COLUMNS: list[tuple[str, Callable[[BenchmarkRecord], str]]] = [
    ("model", lambda r: r.model),
    ("variant", lambda r: r.variant),
    ("runtime", lambda r: r.runtime if r.device in ("cpu", "", None) else f"{r.runtime} ({r.device})"),
    ("thr", lambda r: str(r.threads or "-")),
    ("size", lambda r: human_bytes(r.size_bytes)),
    ("gzip", lambda r: human_bytes(r.size_gzip_bytes)),
    ("p50 ms", lambda r: _ms(r.latency_ms_p50)),
    ("p90 ms", lambda r: _ms(r.latency_ms_p90)),
    ("p99 ms", lambda r: _ms(r.latency_ms_p99)),
    ("inf/s", lambda r: "-" if r.throughput_per_s is None else f"{r.throughput_per_s:.1f}"),
    ("peak mem", lambda r: human_bytes(r.peak_memory_bytes)),
    ("metric (Δ vs float)", lambda r: f"{r.metric_name}: {_metric(r)}" if r.metric_name else "-"),
]


def table_rows(records: Sequence[BenchmarkRecord]) -> tuple[list[str], list[list[str]]]:
    """Header and cells shared by the markdown and HTML tables."""
    header = [name for name, _ in COLUMNS]
    rows = []
    for record in records:
        row = [render(record) for _, render in COLUMNS]
        if record.status != "ok":  # keep the row, so an unavailable target is visible, not missing
            row = row[:4] + [""] * (len(COLUMNS) - 5) + [f"{record.status}: {record.note}"]
        rows.append(row)
    return header, rows


def markdown_table(records: Sequence[BenchmarkRecord]) -> str:
    header, rows = table_rows(records)
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in rows]
    return "\n".join(lines)


def fastest_summary(records: Sequence[BenchmarkRecord]) -> list[str]:
    """Which variant × runtime is fastest for each model: no runtime wins everywhere."""
    lines = []
    for model in dict.fromkeys(r.model for r in records):
        timed = [r for r in records if r.model == model and r.latency_ms_p50 is not None]
        if len(timed) > 1:
            best = min(timed, key=lambda r: r.latency_ms_p50)
            lines.append(f"fastest for {model}: {best.variant} on {best.runtime} ({best.latency_ms_p50:.2f} ms p50)")
    return lines


def to_csv(records: Sequence[BenchmarkRecord]) -> str:
    rows = [r.flat() for r in records]
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def to_json(records: Sequence[BenchmarkRecord]) -> str:
    return json.dumps([r.to_dict() for r in records], indent=2)
