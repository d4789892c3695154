"""Chains in recipes: prune → distill → quantize/QAT → binarize, every output benchmarked in its runtime.

Tiny zoo models and a few hundred samples keep this to minutes; what is checked is that each chain
runs as the CLI would run its passes (the right data role, the recipe's epochs), that every output
is measured where it deploys, that the sidecar's lineage lists the whole chain, and that chains
sharing a prefix share its stage.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import yaml

from edgecompress.artifacts import Artifact
from edgecompress.errors import UsageError
from edgecompress.pipeline.recipe import load_recipe
from edgecompress.pipeline.run import run_pipeline

BENCH = {"runs": 3, "warmup": 1, "memory": False}


def _write(directory: Path, recipe: dict) -> Path:
    path = directory / f"{recipe['name']}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def _outcome(result, variant: str):
    """The variant's pass stages and records (variant keys carry the format of multi-format variants)."""
    stages = [s for s in result.stages if s.phase == "variant" and s.variant == variant]
    records = [r for r in result.records if r.variant == variant.split(" [")[0]]
    return stages, records


def _lineage(cache: Path, stage) -> list[str]:
    model = next(p for p in (cache / stage.key).iterdir() if p.suffix in (".h5", ".tflite", ".onnx"))
    return [step.step for step in Artifact.open(model).metadata.lineage]


# --------------------------------------------------------------------------- a classifier through every chain


@pytest.fixture(scope="module")
def classifier_chains(tmp_path_factory, tiny_classifier):
    directory = tmp_path_factory.mktemp("chains")
    recipe = {
        "name": "chains",
        "data": {"train": {"spec": "digits", "samples": 384}, "calibration": {"spec": "digits", "samples": 64},
                 "eval": {"spec": "digits", "samples": 120}},
        "models": [{"name": "mnv2", "file": str(tiny_classifier)}],
        "training": {"epochs": 1},
        "variants": [
            {"name": "pruned-int8", "passes": ["prune(sparsity=0.5, measure=false)", "quantize(mode=int8)"],
             "formats": ["tflite", "onnx"]},
            {"name": "pruned-qat", "passes": ["prune(sparsity=0.5, measure=false)", "qat"]},
            {"name": "slim-qat", "passes": ["prune(structure=channels, sparsity=0.3, distill=true, measure=false)",
                                            "qat"]},
            {"name": "24-qat", "passes": ["prune(structure=2:4, measure=false)", "qat(preserve=sparsity)"]},
            {"name": "student-int8", "passes": [{"distill": {"student": "mobilenet_v1:alpha=0.25", "baseline": False}},
                                                "quantize(mode=int8)"]},
            {"name": "qat", "passes": ["qat(epochs=2)"]},
        ],
        "targets": {"runtimes": ["litert", "onnxruntime"], "threads": [1]},
        "bench": BENCH,
    }  # fmt: skip
    plan = load_recipe(_write(directory, recipe))
    return plan, run_pipeline(plan, progress=False)


@pytest.mark.xdist_group("chains-classifier")
def test_every_chain_runs_and_is_benchmarked_in_its_runtime(classifier_chains):
    plan, result = classifier_chains
    assert result.failures == []
    expected = {"pruned-int8": {("tflite", "litert"), ("onnx", "onnxruntime")}, "pruned-qat": {("tflite", "litert")},
                "slim-qat": {("tflite", "litert")}, "24-qat": {("tflite", "litert")},
                "student-int8": {("tflite", "litert")}, "qat": {("tflite", "litert")}}  # fmt: skip
    for variant, targets in expected.items():
        records = [r for r in result.records if r.variant == variant]
        assert {(r.format, r.runtime) for r in records} == targets, variant
        for record in records:
            assert record.status == "ok" and record.latency_ms_p50 > 0, record.note
            assert record.metric_name == "top1" and record.metrics["samples"] == 120
            assert record.metric_delta is not None  # against the float source on the same samples


@pytest.mark.xdist_group("chains-classifier")
def test_lineage_lists_the_whole_chain(classifier_chains):
    plan, result = classifier_chains
    cache = plan.output / "cache"
    chains = {"pruned-int8 [onnx]": ["prune", "quantize"], "slim-qat": ["prune", "qat"], "24-qat": ["prune", "qat"],
              "student-int8": ["distill", "quantize"], "qat": ["qat"]}  # fmt: skip
    for variant, steps in chains.items():
        stages, _ = _outcome(result, variant)
        assert _lineage(cache, stages[-1]) == steps, variant


@pytest.mark.xdist_group("chains-classifier")
def test_chains_sharing_a_prefix_run_it_once(classifier_chains):
    _, result = classifier_chains
    prune_keys = {_outcome(result, v)[0][0].key for v in ("pruned-int8 [tflite]", "pruned-int8 [onnx]", "pruned-qat")}
    assert len(prune_keys) == 1
    prune_stages = [s for s in result.stages if s.key in prune_keys]
    assert [s.status for s in prune_stages].count("done") == 1


@pytest.mark.xdist_group("chains-classifier")
def test_training_passes_use_the_train_role_and_the_recipe_epochs(classifier_chains):
    plan, result = classifier_chains
    cache = plan.output / "cache"
    for variant, epochs in (("pruned-qat", 1), ("qat", 2)):  # a pass's own epochs= beats training.epochs
        qat = _outcome(result, variant)[0][-1]
        info = yaml.safe_load((cache / qat.key / "stage.json").read_text())
        assert info["report"]["epochs"] == epochs
        assert info["report"]["training"]["samples"] == 384  # the train role, not the 64 calibration samples
    twofour = _outcome(result, "24-qat")[0]
    prune_report = yaml.safe_load((cache / twofour[0].key / "stage.json").read_text())["report"]
    assert prune_report["magnitude"]["two_four_exact"] is True
    qat_report = yaml.safe_load((cache / twofour[1].key / "stage.json").read_text())["report"]
    assert qat_report["weight_sparsity"]["int8_tflite"] > 0.3  # the 2:4 zeros survive QAT


@pytest.mark.xdist_group("chains-classifier")
def test_qat_in_a_recipe_matches_compress_qat(classifier_chains, tiny_classifier, tmp_path):
    """The same pass, data roles and epochs give the same model, whichever interface runs it."""
    from edgecompress import api
    from edgecompress.calibration.data import load_digits

    _, result = classifier_chains
    [recipe_record] = [r for r in result.records if r.variant == "qat"]
    run = api.qat(tiny_classifier, tmp_path / "q.tflite", load_digits("train").take(384), epochs=2,
                  eval=load_digits("test").take(120), compare=False, progress=False)  # fmt: skip
    assert abs(run.evaluation.output.metrics["top1"] - recipe_record.metric_value) <= 0.003


# --------------------------------------------------------------------------- clustering, binarization


@pytest.fixture(scope="module")
def cnn_chains(tmp_path_factory):
    """The zoo's BinaryNet-style CNN: binarization wants conv-BN-ReLU stacks without depthwise layers."""
    pytest.importorskip("larq", reason="binarization needs the larq extra")
    directory = tmp_path_factory.mktemp("cnn-chains")
    recipe = {
        "name": "cnn-chains",
        "data": {"train": "digits", "eval": {"spec": "digits", "samples": 120}},
        "models": [{"name": "bnn", "zoo": "binarynet", "params": {"input_size": 32, "alpha": 0.5, "classes": 10},
                    "train": {"epochs": 2, "lr": 0.003}}],
        "training": {"epochs": 1},
        "variants": [
            {"name": "clustered-qat", "passes": ["cluster(clusters=16, measure=false)", "qat(preserve=clusters)"]},
            {"name": "binary", "passes": ["binarize"]},
            {"name": "student-binary", "passes": [{"distill": {"student": "binarynet:alpha=0.25", "baseline": False}},
                                                  "binarize"]},
        ],
        "targets": {"runtimes": ["litert", "lce"], "threads": [1]},
        "bench": BENCH,
    }  # fmt: skip
    plan = load_recipe(_write(directory, recipe))
    return plan, run_pipeline(plan, progress=False)


@pytest.mark.xdist_group("chains-cnn")
def test_cluster_then_qat_keeps_the_clusters(cnn_chains):
    plan, result = cnn_chains
    assert result.failures == []
    stages, records = _outcome(result, "clustered-qat")
    assert [r.runtime for r in records] == ["litert"] and records[0].metric_value is not None
    info = yaml.safe_load((plan.output / "cache" / stages[-1].key / "stage.json").read_text())["report"]
    kept = info["max_unique_weights_per_output_channel"]
    assert kept["int8_tflite"] <= kept["source"] <= 16
    assert _lineage(plan.output / "cache", stages[-1]) == ["cluster", "qat"]


@pytest.mark.xdist_group("chains-cnn")
def test_binarize_alone_and_after_distill_run_in_lce(cnn_chains):
    plan, result = cnn_chains
    for variant, steps in (("binary", ["binarize"]), ("student-binary", ["distill", "binarize"])):
        stages, records = _outcome(result, variant)
        assert [(r.format, r.runtime) for r in records] == [("lce-tflite", "lce")], variant
        assert records[0].status == "ok" and records[0].metric_value is not None
        assert _lineage(plan.output / "cache", stages[-1]) == steps


# --------------------------------------------------------------------------- segmentation and keypoints


@pytest.fixture(scope="module")
def dense_chains(tmp_path_factory):
    directory = tmp_path_factory.mktemp("dense-chains")
    recipe = {
        "name": "dense-chains",
        "models": [
            {"name": "unet", "zoo": "unet", "params": {"input_size": 32, "alpha": 0.25, "depth": 2},
             "train": {"epochs": 2, "lr": 0.003},
             "data": {"train": "synthetic-shapes", "calibration": {"spec": "synthetic-shapes", "samples": 32},
                      "eval": {"spec": "synthetic-shapes", "samples": 48}}},
            {"name": "landmark", "zoo": "blazepose_landmark", "params": {"input_size": 64, "alpha": 0.25},
             "train": {"epochs": 2, "lr": 0.003},
             "data": {"train": "synthetic-poses", "calibration": {"spec": "synthetic-poses", "samples": 32},
                      "eval": {"spec": "synthetic-poses", "samples": 48}}},
        ],
        "training": {"epochs": 1},
        "variants": [
            {"name": "pruned-int8", "passes": ["prune(sparsity=0.5, measure=false)", "quantize(mode=int8)"]},
            {"name": "qat", "passes": ["qat"]},
        ],
        "targets": {"runtimes": ["litert"], "threads": [1]},
        "bench": BENCH,
    }  # fmt: skip
    plan = load_recipe(_write(directory, recipe))
    return plan, run_pipeline(plan, progress=False)


@pytest.mark.xdist_group("chains-dense")
def test_segmentation_and_keypoint_chains(dense_chains):
    plan, result = dense_chains
    assert result.failures == []
    metrics = {"unet": "miou", "landmark": "pck@0.2"}
    for record in result.records:
        assert record.status == "ok" and record.runtime == "litert" and record.latency_ms_p50 > 0
        assert record.metric_name == metrics[record.model] and record.metric_delta is not None
    assert {(r.model, r.variant) for r in result.records} == {(m, v) for m in metrics for v in ("pruned-int8", "qat")}


# --------------------------------------------------------------------------- refused at --check


def _refused(tmp_path, tiny_classifier, variants, message, data=None):
    recipe = {"name": "bad", "data": data or {"eval": "digits"}, "models": [{"name": "m", "file": str(tiny_classifier)}],
              "variants": variants, "targets": {"runtimes": ["litert", "onnxruntime", "lce"]}}  # fmt: skip
    with pytest.raises(UsageError, match=message):
        load_recipe(_write(tmp_path, recipe))


def test_chains_that_cannot_run_are_refused_up_front(tmp_path, tiny_classifier):
    # a role the variant needs and the recipe does not give: named with the variant
    _refused(tmp_path, tiny_classifier, [{"name": "p", "passes": ["prune", "quantize(mode=int8)"]}],
             r"variants\.p: pass 'prune' needs train data, and model 'm' has none")
    _refused(tmp_path, tiny_classifier, [{"name": "q", "passes": ["quantize(mode=int8)"]}],
             r"variants\.q: pass 'quantize\(mode=int8\)' needs calibration data")
    # formats that do not connect: a TFLite file cannot be pruned, an int8 file not quantized again
    _refused(tmp_path, tiny_classifier, [{"name": "x", "passes": ["qat", "prune"]}],
             r"pass 'prune' takes keras-h5, keras-v3, savedmodel models, but gets tflite", {"train": "digits"})
    _refused(tmp_path, tiny_classifier, [{"name": "y", "passes": ["binarize", "quantize(mode=dynamic)"]}],
             r"pass 'quantize' takes .* but gets lce-tflite", {"train": "digits"})
    # a format set on a pass that has none
    _refused(tmp_path, tiny_classifier, [{"name": "z", "passes": ["qat"], "formats": ["onnx"]}],
             r"pass 'qat' does not take", {"train": "digits"})


def test_check_of_an_export_recipe_imports_neither_tfmot_nor_larq(tmp_path, tiny_classifier):
    import subprocess
    import sys

    recipe = {"name": "light", "data": {"calibration": "digits", "eval": "digits"},
              "models": [{"name": "m", "file": str(tiny_classifier)}],
              "variants": [{"name": "f", "passes": ["export"]}, {"name": "q", "passes": ["quantize(mode=int8)"]}],
              "targets": {"runtimes": ["litert"]}}  # fmt: skip
    path = _write(tmp_path, recipe)
    code = ("import sys\nfrom edgecompress.cli import main\nsys.argv = ['compress', 'pipeline', sys.argv[1], '--check']\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "heavy = [m for m in ('tensorflow_model_optimization', 'larq', 'larq_compute_engine') if m in sys.modules]\n"
            "print('HEAVY', heavy)\n")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "recipe light: ok" in out.stdout and "HEAVY []" in out.stdout


def test_two_pipelines_on_one_results_directory(tmp_path, tiny_classifier):
    """The second run waits for the first, says so, and finds every stage done: each row once."""
    import os
    import subprocess
    import sys

    recipe = {"name": "twice", "data": {"eval": {"spec": "digits", "samples": 30}},
              "models": [{"name": "m", "file": str(tiny_classifier)}],
              "variants": [{"name": "f", "passes": ["export"]}, {"name": "d", "passes": ["quantize(mode=dynamic)"]}],
              "targets": {"runtimes": ["litert"], "threads": [1]}, "bench": BENCH}  # fmt: skip
    path = _write(tmp_path, recipe)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    command = [sys.executable, "-m", "edgecompress.cli", "pipeline", str(path), "-q"]
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    outputs = [p.communicate(timeout=600) for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, [o[1][-1500:] for o in outputs]
    assert any("waiting for it to finish" in err for _, err in outputs)
    with sqlite3.connect(tmp_path / "twice-results" / "results.sqlite") as db:
        keys = [row[0] for row in db.execute("SELECT stage_key FROM records")]
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert len(keys) == len(set(keys)) == 2
