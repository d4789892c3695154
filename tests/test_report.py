"""`compress report`: the results store, the table renderings, the plots and the HTML page.

The HTML page is opened in a real headless Chromium (Debian's package, installed here when
missing) to check that the table and the plots render, not only that the markup is there.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgecompress.cli import cli
from edgecompress.reports.html import render_html
from edgecompress.reports.plots import FRONT_COLOR, pareto_front, write_plots
from edgecompress.reports.records import BenchmarkRecord
from edgecompress.reports.store import ResultsStore, load_records
from edgecompress.reports.tables import markdown_table, to_json

CHROMIUM = "/usr/bin/chromium"


def _record(model="mnv2", variant="int8", runtime="litert", fmt="tflite", p50=1.0, size=1000, top1=0.9, **changes):
    values = dict(
        model=model, variant=variant, format=fmt, runtime=runtime, runtime_version="1.0", device="cpu", threads=2,
        size_bytes=size, size_gzip_bytes=size // 2, latency_ms_p50=p50, latency_ms_p90=p50 * 1.2,
        latency_ms_p99=p50 * 1.5, throughput_per_s=1000 / p50, peak_memory_bytes=4 * 1024**2, runs=20,
        metric_name="top1", metric_value=top1, metric_delta=top1 - 0.95, metrics={"top1": top1},
        lineage=["quantize"], machine="test machine", timestamp="2026-01-01T00:00:00+00:00",
    )  # fmt: skip
    values.update(changes)
    return BenchmarkRecord(**values)


def sample_records() -> list[BenchmarkRecord]:
    records = []
    for model, scale in (("mnv2", 1.0), ("resnet18", 2.5)):
        for variant, fmt, runtime, p50, size, top1 in (
            ("float", "tflite", "litert", 2.0, 4000, 0.95),
            ("float", "onnx", "onnxruntime", 1.5, 4100, 0.95),
            ("int8", "tflite", "litert", 0.7, 1100, 0.93),
            ("int8", "onnx", "onnxruntime", 1.9, 1200, 0.92),
            ("dynamic", "tflite", "litert", 1.2, 1150, 0.94),
        ):
            records.append(_record(model, variant, runtime, fmt, p50 * scale, int(size * scale), top1))
    records.append(_record("mnv2", "int8", "litert", status="unavailable", note="no gpu here: no GPU delegate", device="gpu",
                           threads=None, latency_ms_p50=None, metric_value=None))  # fmt: skip
    return records


# --------------------------------------------------------------------------- store


def test_store_appends_whole_rows_once(tmp_path):
    path = tmp_path / "results.sqlite"
    records = sample_records()
    with ResultsStore(path) as store:
        assert store.add("k0", records[0], "r") is True
        assert store.add("k0", records[1], "r") is False  # a finished stage is never stored twice
        assert store.add_many([(f"k{i}", r) for i, r in enumerate(records)], "r") == len(records) - 1
        assert store.has("k3") and not store.has("nope") and len(store) == len(records)
    again = load_records(tmp_path)  # a directory works too
    assert again == records
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT COUNT(DISTINCT stage_key) FROM records").fetchone()[0] == len(records)


def test_store_rolls_back_a_failed_batch(tmp_path):
    class Broken(BenchmarkRecord):
        def to_dict(self):
            raise RuntimeError("disk full")

    good = sample_records()[0]
    bad = Broken(**good.to_dict())
    with ResultsStore(tmp_path / "s.sqlite") as store:
        with pytest.raises(RuntimeError):
            store.add_many([("a", good), ("b", bad)])
        assert len(store) == 0


def test_load_records_errors(tmp_path):
    from edgecompress.errors import DataError

    with pytest.raises(DataError, match="results not found"):
        load_records(tmp_path / "missing.sqlite")
    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(DataError, match="not a readable results store"):
        load_records(tmp_path / "junk.sqlite")
    path = tmp_path / "r.json"
    path.write_text(to_json(sample_records()))
    assert load_records(path) == sample_records()


# --------------------------------------------------------------------------- renderings


def test_pareto_front():
    points = [(1.0, 0.5), (2.0, 0.9), (1.5, 0.4), (3.0, 0.9), (0.5, 0.1), (2.5, 0.95)]
    assert pareto_front(points) == [4, 0, 1, 5]
    assert pareto_front([]) == [] and pareto_front([(1.0, 1.0)]) == [0]


def test_markdown_snapshot():
    records = [sample_records()[2], sample_records()[-1]]
    assert markdown_table(records).splitlines() == [
        "| model | variant | runtime      | thr | size     | gzip  | p50 ms | p90 ms | p99 ms | inf/s  | peak mem | metric (Δ vs float)                       |",
        "|-------|---------|--------------|-----|----------|-------|--------|--------|--------|--------|----------|-------------------------------------------|",
        "| mnv2  | int8    | litert       | 2   | 1.07 KiB | 550 B | 0.70   | 0.84   | 1.05   | 1428.6 | 4.00 MiB | top1: 93.00% (-2.00)                      |",
        "| mnv2  | int8    | litert (gpu) | -   |          |       |        |        |        |        |          | unavailable: no gpu here: no GPU delegate |",
    ]


def test_report_cli_formats(tmp_path):
    path = tmp_path / "results.sqlite"
    with ResultsStore(path) as store:
        store.add_many([(f"k{i}", r) for i, r in enumerate(sample_records())], "quick")
    runner = CliRunner()
    md = runner.invoke(cli, ["report", str(path)])
    assert md.exit_code == 0, md.output
    assert md.output.startswith("| model    | variant |") and "fastest for resnet18: int8 on litert" in md.output
    rows = list(csv.DictReader(io.StringIO(runner.invoke(cli, ["report", str(path), "--format", "csv"]).output)))
    assert len(rows) == 11 and rows[0]["model"] == "mnv2" and float(rows[2]["latency_ms_p50"]) == 0.7
    data = json.loads(runner.invoke(cli, ["report", str(path), "--format", "json"]).output)
    assert [BenchmarkRecord.from_dict(d) for d in data] == sample_records()
    result = runner.invoke(cli, ["report", str(path), "--format", "html", "--plots", str(tmp_path / "plots")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "report.html").read_text()
    assert page.count("<svg") == 2 and "<table" in page
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["mnv2.png", "mnv2.svg", "resnet18.png", "resnet18.svg"]
    missing = runner.invoke(cli, ["report", str(path), "--recipe", "other"])
    assert missing.exit_code == 4 and "has no results of recipe 'other'" in missing.output


def test_html_is_self_contained():
    page = render_html(sample_records(), "quick <results>")
    assert page.startswith("<!DOCTYPE html>") and "<title>quick &lt;results&gt;</title>" in page
    assert page.count('<figure class="plot"') == 2 and page.count("<svg") == 2
    assert page.count("<tr>") == 11 and 'class="not-ok"' in page and "unavailable: no gpu here" in page
    # Nothing is fetched: no src/href/url() to another host (SVG's xmlns is a name, not a request).
    assert not re.search(r"""(src|href)\s*=\s*["'](?!#|data:)""", page)
    assert "url(http" not in page and "@import" not in page and "<script" not in page
    assert FRONT_COLOR in page  # the Pareto front is drawn


def test_plots_written_as_png_and_svg(tmp_path):
    from PIL import Image

    paths = write_plots(sample_records(), tmp_path)
    png = next(p for p in paths if p.suffix == ".png")
    with Image.open(png) as image:
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.shape[1] > 800 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50
    assert next(p for p in paths if p.suffix == ".svg").read_text().lstrip().startswith("<?xml")


# --------------------------------------------------------------------------- real browser


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium; installed with apt-get when missing (we run as root in CI)."""
    if not Path(CHROMIUM).exists():
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
            if done.returncode != 0:
                pytest.fail(f"could not install chromium ({' '.join(command)}): {done.stderr[-2000:]}")
    return CHROMIUM


def _chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--hide-scrollbars", f"--user-data-dir={profile}", *args,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_html_renders_in_chromium(chromium, tmp_path):
    from PIL import Image

    page = tmp_path / "report.html"
    page.write_text(render_html(sample_records(), "quick"))
    # DOM check on a copy with a probe script: real layout sizes of the table and each plot.
    probe = tmp_path / "probe.html"
    script = (
        "<script>const box = e => e.getBoundingClientRect();"
        "document.body.setAttribute('data-table', JSON.stringify([box(document.querySelector('table')).width,"
        " box(document.querySelector('table')).height, document.querySelectorAll('tbody tr').length]));"
        "document.body.setAttribute('data-plots', JSON.stringify([...document.querySelectorAll('figure svg')]"
        ".map(s => [box(s).width, box(s).height])));</script>"
    )
    probe.write_text(page.read_text().replace("</body>", script + "</body>"))
    dom = _chromium(chromium, tmp_path / "profile-dom", "--dump-dom", probe.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    table = json.loads(re.search(r'data-table="([^"]*)"', dom.stdout).group(1).replace("&quot;", '"'))
    plots = json.loads(re.search(r'data-plots="([^"]*)"', dom.stdout).group(1).replace("&quot;", '"'))
    assert table[0] > 600 and table[1] > 200 and table[2] == 11
    assert len(plots) == 2 and all(w > 600 and h > 200 for w, h in plots)

    shot = tmp_path / "shot.png"
    run = _chromium(chromium, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1400,1800", page.as_uri())
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    keep = os.environ.get("EDGECOMPRESS_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("RGB")).astype(int)
    assert pixels.shape[:2] == (1800, 1400)
    not_white = np.any(pixels < 235, axis=-1)
    assert not_white.mean() > 0.02, "the screenshot is blank"
    # The plots are really painted: the Pareto front's red and the first variant's blue show up.
    for color in (FRONT_COLOR, "#1f77b4"):
        rgb = np.array([int(color[i : i + 2], 16) for i in (1, 3, 5)])
        assert (np.abs(pixels - rgb).sum(axis=-1) < 40).sum() > 200, f"no {color} pixels: plots not rendered"
