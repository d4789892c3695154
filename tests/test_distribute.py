"""Training under tf.distribute: QAT mirrored over two logical CPU devices matches the default
strategy; strategy names are checked; the strategy is in the cache key only when it is not the
default; recipes carry ``training.strategy``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edgecompress import api
from edgecompress.compress.finetune import FineTune
from edgecompress.compress.qat import QATConfig
from edgecompress.errors import UsageError
from edgecompress.models.distribute import CPU_REPLICAS_ENV, get_strategy, parse_strategy
from edgecompress.pipeline.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
QAT_ARGS = {"epochs": 1, "calib_samples": 50}


@pytest.fixture(scope="module")
def small_cnn(tmp_path_factory) -> Path:
    """A conv-BN-ReLU classifier (width 16, 16 px, grey) trained 3 epochs on digits: few layers, so
    QAT's graph for two replicas builds in seconds."""
    import dataclasses

    from edgecompress.artifacts import InputSpec, Metadata
    from edgecompress.models.binarynet import binarynet_cnn
    from edgecompress.models.train import save_model, train_classifier
    from edgecompress.models.zoo import SYMMETRIC

    model = binarynet_cnn(16, 10, channels=1, width=16)
    metadata = Metadata(task="classification", inputs=(InputSpec((16, 16, 1)),),
                        preprocessing=dataclasses.replace(SYMMETRIC, color="gray"))  # fmt: skip
    train = api.model_inputs("digits", (16, 16, 1), metadata.preprocessing, split="train")
    train_classifier(model, train, epochs=3, lr=3e-3, progress=False)
    return save_model(model, tmp_path_factory.mktemp("distribute") / "cnn.h5", metadata)


def test_qat_mirrored_over_two_cpu_devices_matches_default(small_cnn, digits_npz, tmp_path):
    # 360 labelled digits: 288 to train on, 72 held out (the same split in both runs)
    default = api.qat(small_cnn, tmp_path / "default.tflite", str(digits_npz), compare=False, progress=False,
                      **QAT_ARGS)  # fmt: skip
    # Two logical CPU devices must be set before TensorFlow starts: a fresh process, through the CLI.
    command = [sys.executable, "-m", "edgecompress.cli", "qat", str(small_cnn), "-o", str(tmp_path / "mirrored.tflite"),
               "--data", str(digits_npz), "--epochs", str(QAT_ARGS["epochs"]), "--calib-samples", str(QAT_ARGS["calib_samples"]),
               "--no-compare", "--strategy", "mirrored", "--json"]  # fmt: skip
    env = {**os.environ, CPU_REPLICAS_ENV: "2", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    mirrored = json.loads(done.stdout)
    report = mirrored["report"]
    assert report["training"]["replicas"] == 2 and report["strategy"] == "mirrored"
    assert default.report.training.replicas == 1 and "strategy" not in default.report.params
    assert report["training"]["samples"] == default.report.training.samples
    # the same held-out data, the same budget: the int8 models score alike
    ours, theirs = default.evaluation.output.metrics["top1"], mirrored["evaluation"]["output"]["metrics"]["top1"]
    assert default.evaluation.samples == mirrored["evaluation"]["output"]["metrics"]["samples"]
    assert ours > 0.5 and abs(ours - theirs) <= 0.03, (ours, theirs)
    # (training losses are not compared: in training mode each replica normalises its batch norms
    # over half the batch, so the loss Keras reports differs while the trained weights barely do)
    assert mirrored["size_bytes_after"] == pytest.approx(default.output.size_bytes, rel=0.01)


def test_strategy_names_and_cache_keys():
    assert parse_strategy(None) == "default" and parse_strategy("Multi_Worker") == "multi-worker"
    with pytest.raises(UsageError, match=r"unknown --strategy 'ring' \(choose one of: default, mirrored, multi-worker"):
        QATConfig(strategy="ring")
    # the default strategy leaves keys and lineage as they were; any other is part of them
    assert "strategy" not in QATConfig().to_dict() and "strategy" not in FineTune().to_dict()
    assert QATConfig(strategy="mirrored").to_dict()["strategy"] == "mirrored"
    assert FineTune(strategy="mirrored").to_dict()["strategy"] == "mirrored"


def test_multi_worker_needs_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(UsageError, match="multi-worker needs TF_CONFIG"):
        get_strategy("multi-worker")


def test_recipe_training_strategy(tmp_path):
    recipe = {
        "name": "s",
        "data": {"train": "digits"},
        "training": {"strategy": "mirrored", "epochs": 1},
        "models": [{"name": "tiny", "zoo": "mobilenet_v2", "params": {"input_size": 32, "alpha": 0.35, "classes": 10},
                    "train": {"epochs": 1}}],
        "variants": [{"name": "qat", "passes": ["qat"]}, {"name": "pruned", "passes": ["prune(sparsity=0.5)", "export"]},
                     {"name": "float", "passes": ["export(format=tflite)"]}],
        "targets": {"runtimes": ["litert"]},
    }  # fmt: skip
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    plan = load_recipe(path)
    qat, prune, export = plan.variant("qat").passes[0], plan.variant("pruned").passes[0], plan.variant("float").passes[0]
    assert qat.params["strategy"] == "mirrored" and prune.params["strategy"] == "mirrored"
    assert "strategy" not in export.params  # a pass that does not train takes none
    assert qat.build().config.strategy == "mirrored"
    recipe["training"]["strategy"] = "multi-worker"
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(UsageError, match=r"training\.strategy: expected one of default, mirrored.*on every worker"):
        load_recipe(path)
