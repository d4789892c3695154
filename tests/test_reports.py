"""Records and their renderings: one row type behind every table."""

import json

from edgecompress.reports.bench import gzip_size, variant_name
from edgecompress.reports.records import BenchmarkRecord
from edgecompress.reports.tables import fastest_summary, human_bytes, markdown_table, to_csv, to_json
from edgecompress.runtimes.base import Timing


def _record(**changes):
    values = dict(
        model="m", variant="int8 (tflite)", format="tflite", runtime="litert", runtime_version="2.3.0", device="cpu",
        threads=2, size_bytes=1536, size_gzip_bytes=1024, latency_ms_p50=1.25, latency_ms_p90=1.5, latency_ms_p99=2.0,
        throughput_per_s=800.0, peak_memory_bytes=2 * 1024 * 1024, metric_name="top1", metric_value=0.95,
        metric_delta=-0.01, machine="test machine", timestamp="2026-01-01T00:00:00+00:00",
    )
    values.update(changes)
    return BenchmarkRecord(**values)


def test_markdown_table_snapshot():
    table = markdown_table([_record(), _record(runtime="onnxruntime", status="unavailable", note="no GPU")])
    assert table.splitlines() == [
        "| model | variant       | runtime     | thr | size     | gzip     | p50 ms | p90 ms | p99 ms | inf/s | peak mem | metric (Δ vs float)  |",
        "|-------|---------------|-------------|-----|----------|----------|--------|--------|--------|-------|----------|----------------------|",
        "| m     | int8 (tflite) | litert      | 2   | 1.50 KiB | 1.00 KiB | 1.25   | 1.50   | 2.00   | 800.0 | 2.00 MiB | top1: 95.00% (-1.00) |",
        "| m     | int8 (tflite) | onnxruntime | 2   |          |          |        |        |        |       |          | unavailable: no GPU  |",
    ]


def test_csv_and_json_round_trip():
    records = [_record(metrics={"top1": 0.95, "top5": 1.0}, lineage=["export", "quantize"])]
    csv_text = to_csv(records)
    assert "metric_top5" in csv_text.splitlines()[0] and "export → quantize" in csv_text
    again = [BenchmarkRecord.from_dict(d) for d in json.loads(to_json(records))]
    assert again == records


def test_fastest_summary_names_the_winner():
    lines = fastest_summary([_record(), _record(runtime="onnxruntime", latency_ms_p50=0.5)])
    assert lines == ["fastest for m: int8 (tflite) on onnxruntime (0.50 ms p50)"]


def test_units_and_percentiles(tmp_path):
    import numpy as np

    assert human_bytes(512) == "512 B" and human_bytes(3 * 1024**2) == "3.00 MiB"
    timing = Timing(np.arange(1, 101, dtype=float))
    assert timing.p50 == 50.5 and timing.p99 > timing.p90 > timing.p50
    zeros = tmp_path / "zeros.bin"
    zeros.write_bytes(bytes(100_000))
    assert gzip_size(zeros) < 1000


def test_variant_names_come_from_lineage(tiny_int8, tiny_onnx, tiny_classifier):
    from edgecompress.artifacts import Artifact

    assert variant_name(Artifact.open(tiny_int8)) == "int8 (tflite)"
    assert variant_name(Artifact.open(tiny_onnx)) == "float (onnx)"
    assert variant_name(Artifact.open(tiny_classifier)) == "source (keras-h5)"
