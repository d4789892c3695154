"""The `compress` CLI through click's CliRunner: reports, scripts (--json/--quiet), and errors."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgecompress.artifacts import sha256_of
from edgecompress.cli import cli


@pytest.fixture()
def runner():
    return CliRunner()


def invoke(runner, *args):
    return runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_help_is_fast_and_lists_commands(runner):
    result = invoke(runner, "--help")
    assert result.exit_code == 0
    for command in ("quantize", "export", "bench", "demo"):
        assert command in result.output


def test_quantize_default_path_and_mode(runner, tmp_path, tiny_classifier):
    model = tmp_path / "model.h5"
    model.write_bytes(tiny_classifier.read_bytes())
    result = invoke(runner, "quantize", model)
    assert result.exit_code == 0, result.output
    assert "dynamic" in result.output and "no calibration data was given" in result.output
    assert "smaller" in result.output and "export check" in result.output
    assert (tmp_path / "model.dynamic.tflite").exists()
    assert (tmp_path / "model.dynamic.tflite.json").exists()


def test_quantize_int8_with_eval_prints_one_screen(runner, out, tiny_classifier):
    before = sha256_of(tiny_classifier)
    result = invoke(
        runner, "quantize", tiny_classifier, "-o", out / "m.tflite", "--calib", "digits", "--calib-samples", "50",
        "--eval", "digits",
    )
    assert result.exit_code == 0, result.output
    for text in ("int8 (tflite, per-channel, float I/O)", "50 samples from digits:train", "top1", "points"):
        assert text in result.output
    assert sha256_of(tiny_classifier) == before


def test_quantize_json_and_quiet(runner, out, tiny_classifier):
    result = invoke(runner, "quantize", tiny_classifier, "-o", out / "m.onnx", "--format", "onnx", "--json")
    assert result.exit_code == 0, result.output
    run = json.loads(result.output)
    report = run["report"]
    assert report["mode"] == "dynamic" and report["format"] == "onnx" and report["check"]["passed"]
    assert run["notes"] == ["mode: no calibration data was given, so dynamic range (pass --calib for full int8)"]
    result = invoke(runner, "export", tiny_classifier, "-o", out / "f.tflite", "-q")
    assert result.output.strip() == str(out / "f.tflite")


def test_bench_table_json_and_csv(runner, out, tiny_classifier, tiny_int8, tiny_onnx):
    csv_path = out / "bench.csv"
    result = invoke(
        runner, "bench", tiny_int8, tiny_onnx, tiny_classifier, "--runs", "5", "--warmup", "1", "--threads", "1",
        "--eval", "digits", "--csv", csv_path, "-q",
    )
    assert result.exit_code == 0, result.output
    assert "litert" in result.output and "onnxruntime" in result.output and "keras" in result.output
    assert "top1" in result.output and "fastest for tiny" in result.output
    header = csv_path.read_text().splitlines()[0]
    for column in ("size_bytes", "size_gzip_bytes", "latency_ms_p50", "latency_ms_p99", "peak_memory_bytes", "metric_top5"):
        assert column in header
    result = invoke(runner, "bench", tiny_int8, "--runs", "3", "--json")
    records = json.loads(result.output)
    assert records[0]["runtime"] == "litert" and records[0]["latency_ms_p90"] > 0


def test_bench_gpu_is_reported_unavailable(runner, tiny_int8):
    result = invoke(runner, "bench", tiny_int8, "--device", "gpu", "--runs", "2", "-q")
    assert result.exit_code == 0
    assert "unavailable" in result.output


def _corrupt(path, tiny_int8):
    data = tiny_int8.read_bytes()
    path.write_bytes(data[:100] + bytes(200) + data[300:1000])


ERROR_CASES = {
    "missing file": (lambda d, m: ["quantize", d / "nope.h5"], 3, "not found"),
    "unknown format": (lambda d, m: (d.joinpath("m.pt").write_bytes(b"x" * 64), ["quantize", d / "m.pt"])[1], 3, "unknown model format"),
    "truncated h5": (lambda d, m: (d.joinpath("t.h5").write_bytes(m.read_bytes()[:5000]), ["quantize", d / "t.h5"])[1], 3, "damaged"),
    "output exists": (lambda d, m: (d.joinpath("o.tflite").write_bytes(b"x"), ["quantize", m, "-o", d / "o.tflite"])[1], 2, "--force"),
    "empty calib folder": (lambda d, m: (d.joinpath("empty").mkdir(), ["quantize", m, "-o", d / "e.tflite", "--calib", d / "empty"])[1], 4, "no readable images"),
    "bad calib shape": (
        lambda d, m: (np.save(d / "c.npy", np.zeros((3, 5, 5, 2), np.float32)), ["quantize", m, "-o", d / "c.tflite", "--calib", d / "c.npy"])[1],
        4,
        "float samples of shape",
    ),
    "io without int8": (lambda d, m: ["quantize", m, "-o", d / "i.tflite", "--io", "uint8"], 2, "--io uint8 applies"),
    "keras model to bench on litert": (lambda d, m: ["bench", m, "--runtime", "litert", "-q"], 0, "skipped"),
}


@pytest.mark.parametrize("case", ERROR_CASES)
def test_user_errors_are_one_line_without_traceback(runner, out, tiny_classifier, case):
    build, code, message = ERROR_CASES[case]
    args = [str(a) for a in build(out, tiny_classifier)]
    before = {p: p.read_bytes() if p.is_file() else None for p in out.iterdir()}
    result = runner.invoke(cli, args)
    assert result.exit_code == code, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    if code:
        error_lines = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert len(error_lines) == 1
    assert set(out.iterdir()) == set(before), "no output, partial or not, may be left behind"
    assert all(p.read_bytes() == data for p, data in before.items() if data is not None), "inputs stay untouched"


def test_lambda_model_refused_then_trusted(runner, out):
    from edgecompress._env import import_tf_keras

    tf_keras = import_tf_keras()
    inputs = tf_keras.Input((8, 8, 3))
    x = tf_keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(2)(tf_keras.layers.Flatten()(x)))
    model.save(out / "lam.h5")
    result = runner.invoke(cli, ["quantize", str(out / "lam.h5")])
    assert result.exit_code == 3 and "--trust-model" in result.output
    result = runner.invoke(cli, ["quantize", str(out / "lam.h5"), "--trust-model"])
    assert result.exit_code == 0, result.output


def test_missing_optional_dependency_via_cli(runner, out, tiny_classifier, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tf2onnx", None)
    result = runner.invoke(cli, ["export", str(tiny_classifier), "-o", str(out / "x.onnx"), "--format", "onnx"])
    assert result.exit_code == 7
    assert 'pip install "edgecompress[onnx]"' in result.output


def test_debug_shows_the_traceback(runner, out, monkeypatch):
    # --debug sets these for the rest of the process; let monkeypatch restore them for later tests.
    monkeypatch.setenv("EDGECOMPRESS_DEBUG", "0")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    result = runner.invoke(cli, ["--debug", "quantize", str(out / "nope.h5")])
    assert result.exit_code != 0
    assert result.exc_info is not None and result.exc_info[0].__name__ == "ModelLoadError"


def test_bench_measures_the_rest_but_exits_non_zero_when_a_model_fails(runner, out, tiny_int8):
    damaged = out / "damaged.tflite"
    damaged.write_bytes(tiny_int8.read_bytes()[: len(tiny_int8.read_bytes()) // 2])
    result = invoke(runner, "bench", tiny_int8, damaged, "--runs", "2", "--warmup", "0", "--json")
    assert result.exit_code == 3, result.output  # ModelLoadError's code
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "1 of 2 measurements failed; damaged on litert: model file is" in errors[0]
    records = json.loads(result.output[: result.output.rindex("]") + 1])
    assert [r["status"] for r in records] == ["ok", "error"] and records[1]["error_code"] == 3
