"""Binarization: Larq rebuild + distillation → bit-packed LCE TFLite, run by the LCE runtime."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edgecompress import api
from edgecompress.artifacts import Artifact, InputSpec, Metadata, ModelFormat
from edgecompress.compress.tflite_graph import op_counts
from edgecompress.models.zoo import SYMMETRIC

SIZE = 32


@pytest.fixture(scope="module")
def digits_cnn(workdir):
    """A float BinaryNet-style CNN (width 32) trained for 2 epochs on digits at 32 px, grey."""
    from edgecompress.models.binarynet import binarynet_cnn
    from edgecompress.models.train import save_model, train_classifier

    model = binarynet_cnn(SIZE, 10, channels=1, width=32)
    metadata = Metadata(task="classification", inputs=(InputSpec((SIZE, SIZE, 1)),), preprocessing=dataclasses.replace(
        SYMMETRIC, color="gray"), labels=tuple(str(i) for i in range(10)))  # fmt: skip
    train = api.model_inputs("digits", (SIZE, SIZE, 1), metadata.preprocessing, split="train")
    train_classifier(model, train, epochs=2, lr=3e-3, progress=False)
    return save_model(model, workdir / "digits_cnn.h5", metadata)


@pytest.fixture(scope="module")
def binarized(larq, digits_cnn, workdir):
    return api.binarize(digits_cnn, workdir / "digits_cnn.binary.tflite", "digits", epochs=2, progress=False, force=True)


def test_most_conv_macs_are_binary_and_run_as_lce_bconv(binarized):
    details = binarized.details
    assert details["macs"]["conv_binary_share"] >= 0.9
    assert details["float_layers"] == ["conv1", "predictions"]  # first and last stay float by default
    assert binarized.output.format is ModelFormat.LCE_TFLITE
    assert op_counts(binarized.output.path.read_bytes())["LceBconv2d"] == 3
    # ReLU before a binarized conv would make its sign input +1 almost everywhere
    assert {"relu1", "relu2", "relu3"} <= set(details["relu_dropped_before_sign"])
    assert "relu4" not in details["relu_dropped_before_sign"]  # feeds the float classifier
    assert binarized.output.metadata.lineage[-1].step == "binarize"


def test_lce_file_is_much_smaller_than_float_tflite(binarized, digits_cnn, workdir):
    float_tflite = api.export(digits_cnn, workdir / "digits_cnn.float.tflite", force=True).output
    assert float_tflite.size_bytes / binarized.output.size_bytes >= 8


def test_lce_outputs_match_larq_within_tolerance(binarized):
    from edgecompress.compress.binarize import LCE_TOLERANCE

    check = binarized.report.check
    assert check.passed and check.tolerance == LCE_TOLERANCE
    assert check.relative <= LCE_TOLERANCE
    assert binarized.report.top1_agreement >= 0.9
    scores = binarized.evaluation
    assert scores.source.runtime == "keras" and scores.output.runtime == "lce"
    assert scores.source.metrics["samples"] == scores.output.metrics["samples"] == 360
    assert scores.output.metrics["top1"] > 0.3  # far above chance (10 %) after 2 epochs of distillation


def test_bench_runs_lce_models(binarized):
    records = api.bench([binarized.output.path], runtimes=["lce"], runs=3, warmup=1, eval="digits")
    (record,) = records
    assert record.status == "ok", record.note
    assert record.runtime == "lce" and record.latency_ms_p50 > 0
    assert record.metric_value == pytest.approx(binarized.evaluation.output.metrics["top1"])


def test_binarize_all_binarizes_first_and_last(larq, digits_cnn):
    from edgecompress.compress.binarize import binarize_model
    from edgecompress.runtimes.keras_io import load_keras

    model = load_keras(digits_cnn).model
    _, binary, kept, _ = binarize_model(model, binarize_all=True)
    assert kept == [] and {"conv1", "predictions"} <= set(binary)


def test_missing_larq_is_one_line(digits_cnn, tmp_path, monkeypatch):
    import sys

    from click.testing import CliRunner

    from edgecompress.cli import cli

    monkeypatch.setitem(sys.modules, "larq", None)  # import larq now raises ImportError
    result = CliRunner().invoke(cli, ["binarize", str(digits_cnn), "--data", "digits", "-o", str(tmp_path / "b.tflite")])
    assert result.exit_code == 7
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and 'pip install "edgecompress[larq]"' in lines[0]
    assert not (tmp_path / "b.tflite").exists()


def test_lce_session_runs_batches_sample_by_sample(binarized):
    from edgecompress.runtimes import open_session

    with open_session(Artifact.open(binarized.output.path)) as session:
        assert session.runtime == "lce"
        x = np.random.default_rng(0).uniform(-1, 1, (5, SIZE, SIZE, 1)).astype(np.float32)
        (out,) = session.run(x)
        assert out.shape == (5, 10)
        np.testing.assert_allclose(session.run(x[2:3])[0], out[2:3], rtol=1e-6, atol=1e-6)
