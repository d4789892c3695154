"""The seed table: the published layout, our rows under the published ones, ratios, and the notes
that say what is comparable."""

from __future__ import annotations

from edgecompress.reports.records import BenchmarkRecord
from edgecompress.reports.seed_table import kind_of, render_seed_table


def _record(model: str, lineage: tuple[str, ...], top1: float, ms: float, size: int, **changes) -> BenchmarkRecord:
    values = dict(model=model, variant="-", format="tflite", runtime="litert", runtime_version="x", device="cpu",
                  threads=1, size_bytes=size, size_gzip_bytes=size // 2, latency_ms_p50=ms, metric_name="top1",
                  metric_value=top1, metrics={"top1": top1, "samples": 360.0}, lineage=lineage,
                  latency_input_shape=(224, 224, 3), machine="test machine")  # fmt: skip
    values.update(changes)
    return BenchmarkRecord(**values)


def test_rows_ratios_and_notes():
    records = [
        _record("mobilenet_v2", ("export",), 0.96, 4.0, 9_000_000),
        _record("mobilenet_v2", ("quantize",), 0.955, 2.0, 2_500_000),
        _record("mobilenet_v2", ("qat",), 0.958, 2.1, 2_500_000),
        _record("mobilenet_v2", ("quantize",), 0.1, 9.9, 1, runtime="onnxruntime", format="onnx"),  # not LiteRT
        _record("mobilenet_v2", ("prune", "quantize"), 0.5, 1.0, 1),  # another chain: no column of the table
    ]
    assert [kind_of(r) for r in records] == ["original", "post-training", "qat", "post-training", None]
    runs = [{"seconds": 1800.0, "stages_run": 12, "stages_cached": 0, "machine": "test machine", "recipe": "s"},
            {"seconds": 2.0, "stages_run": 0, "stages_cached": 12, "machine": "test machine", "recipe": "s"}]
    text = render_seed_table(records, runs)
    assert "| MobileNet v2 1.0 224 (published) | 0.719 | 0.637 | 0.709 | 89 | 98 | 54 | 14.0 | 3.6 |" in text
    assert "| **mobilenet_v2 (ours, 224 px)** | 0.960 | 0.955 | 0.958 | 4.00 | 2.00 | 2.10 | 9.0 | 2.5 |" in text
    # ratios: top-1 change in points, speed-up, size ratio — the comparable part
    assert "| MobileNet v2 1.0 224 (published) | -8.2 / -1.0 | 0.91× / 1.65× | 3.89× |" in text
    assert "| mobilenet_v2 (ours) | -0.5 / -0.2 | 2.00× / 1.90× | 3.60× |" in text
    assert "30.0 min" in text and "12 stages computed over 1 run(s)" in text
    assert "input resized to the published size" in text and "not a phone" in text


def test_seed_table_recipe_shape_end_to_end(tmp_path):
    """A miniature of recipes/seed-table.yaml: trained small, timed at a larger size on the same files."""
    import yaml
    from click.testing import CliRunner

    from edgecompress.cli import cli

    recipe = {
        "name": "mini-seed", "data": {"train": "digits", "calibration": {"spec": "digits", "samples": 32},
                                      "eval": {"spec": "digits", "samples": 60}},
        "models": [{"name": "mobilenet_v1", "zoo": "mobilenet_v1",
                    "params": {"input_size": 64, "alpha": 0.25, "classes": 10}, "train": {"epochs": 4},
                    "latency_at": 96}],
        "training": {"epochs": 1},
        "variants": [{"name": "float", "passes": ["export"]}, {"name": "ptq", "passes": ["quantize(mode=int8)"]},
                     {"name": "qat", "passes": ["qat(calibration_samples=32)"]}],
        "targets": {"runtimes": ["litert"], "threads": [1]}, "bench": {"runs": 3, "warmup": 1, "memory": False},
    }  # fmt: skip
    path = tmp_path / "mini.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = CliRunner().invoke(cli, ["pipeline", str(path), "-q"])
    assert result.exit_code == 0, result.output
    table = CliRunner().invoke(cli, ["report", str(tmp_path / "mini-results"), "--format", "seed-table"])
    assert table.exit_code == 0, table.output
    assert "| MobileNet v1 1.0 224 (published) |" in table.output
    ours = next(line for line in table.output.splitlines() if line.startswith("| **mobilenet_v1 (ours, 96 px)**"))
    assert "—" not in ours  # every column filled: top-1, latency (at 64 px) and size of all three variants
    assert "stages computed over 1 run(s)" in table.output
