"""`compress pipeline`: recipe validation, stage caching, resuming after SIGKILL, the results store."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from edgecompress.cli import cli
from edgecompress.compress.passes import load_passes
from edgecompress.errors import UsageError
from edgecompress.pipeline.recipe import load_recipe
from edgecompress.pipeline.run import STAGE_FILE, run_pipeline

ROOT = Path(__file__).resolve().parents[1]
ZOO_TINY = {"zoo": "mobilenet_v2", "params": {"input_size": 32, "alpha": 0.35, "classes": 10}, "train": {"epochs": 1}}


def write_recipe(directory: Path, recipe: dict, name: str = "recipe.yaml") -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def base_recipe(**changes) -> dict:
    recipe = {
        "name": "t",
        "data": {"calibration": {"spec": "digits", "samples": 20}, "eval": {"spec": "digits", "samples": 60}},
        "models": [{"name": "tiny", **ZOO_TINY}],
        "variants": [{"name": "int8", "passes": ["quantize(mode=int8)"]}],
        "targets": {"runtimes": ["litert", "onnxruntime"]},
    }
    recipe.update(changes)
    return recipe


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"variants": [{"name": "x", "passes": ["frobnicate"]}]},
         r"variants\[0\]\.passes\[0\]: pass 'frobnicate' is not registered \(registered passes: .*export.*quantize"),
        ({"variants": [{"name": "x", "passes": ["quantize(mode=int7)"]}]},
         r"variants\[0\]\.passes\[0\]: pass 'quantize': unknown mode 'int7' \(choose one of: dynamic, float16, int8"),
        ({"variants": [{"name": "x", "passes": [{"quantize": {"bits": 4}}]}]},
         r"pass 'quantize' does not take quantize\(bits=4\).*its parameters: mode, format, per_channel, io"),
        ({"variants": [{"name": "x", "passes": ["quantize(mode=int8)", "export"]}]},
         r"pass 'export' takes keras-h5, keras-v3, savedmodel models, but gets tflite"),
        ({"variants": [{"name": "x", "passes": ["export(format=onnx)"]}], "targets": {"runtimes": ["litert"]}},
         r"its output is onnx, which none of the target runtimes \(litert\) runs"),
        ({"variants": [{"name": "x", "passes": ["export"], "formats": ["tflite", "coreml"]}]},
         r"unknown export format 'coreml'"),
        ({"models": [{"name": "m", "file": "missing.h5"}]}, r"models\[0\]: model file not found: .*missing\.h5"),
        ({"models": [{"name": "m", "zoo": "mobilenet_v9", "train": True}]}, r"models\[0\]\.zoo: unknown zoo model 'mobilenet_v9'"),
        ({"models": [{"name": "m", "zoo": "mobilenet_v2", "params": {"depth": 3}, "train": True}]},
         r"models\[0\]\.params: unknown key 'depth' \(valid keys: input_size, alpha, classes\)"),
        ({"models": [{"name": "m", "zoo": "mobilenet_v2"}]}, r"a zoo model needs 'train'"),
        ({"data": {"eval": "nowhere/eval.npz"}}, r"data\.eval: data not found: .*nowhere/eval\.npz"),
        ({"targets": {"runtimes": ["tensorrt"]}}, r"targets\.runtimes: unknown runtime 'tensorrt'"),
        ({"targets": {"devices": ["tpu"]}}, r"targets\.devices: unknown device 'tpu'"),
        ({"varients": []}, r"unknown key 'varients'"),
        ({"bench": {"runs": 0}}, r"bench\.runs: expected a whole number ≥ 1"),
    ],
)  # fmt: skip
def test_validation_errors(tmp_path, changes, message):
    with pytest.raises(UsageError, match=message):
        load_recipe(write_recipe(tmp_path, base_recipe(**changes)))


def test_validation_yaml_and_missing_recipe(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [\n  - zoo: x\n variants: ]")
    with pytest.raises(UsageError, match=r"bad\.yaml is not valid YAML at line \d+"):
        load_recipe(bad)
    with pytest.raises(UsageError, match="recipe not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_validation_error_is_one_cli_line(tmp_path):
    path = write_recipe(tmp_path, base_recipe(variants=[{"name": "x", "passes": ["frobnicate(level=3)"]}]))
    result = CliRunner().invoke(cli, ["pipeline", str(path)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: recipe recipe.yaml: variants[0].passes[0]: pass 'frobnicate'")
    assert not (tmp_path / "recipe-results").exists()  # nothing ran


def test_shipped_recipes_validate():
    from edgecompress.models.zoo import ZOO

    quick = load_recipe(ROOT / "recipes" / "quick.yaml")
    assert len({ZOO.get(m.zoo).family for m in quick.models}) >= 3
    assert len({v.name for v in quick.variants}) >= 4 and len(quick.targets.runtimes) >= 2
    assert all(m.train is not None for m in quick.models)  # metrics of trained models only
    seed = load_recipe(ROOT / "recipes" / "seed-table.yaml")
    assert {m.latency_at for m in seed.models} == {224, 299}  # the published sizes, for latency
    assert [v.passes[-1].name for v in seed.variants] == ["export", "quantize", "qat"]
    passes = load_passes()
    assert "export" in passes and "quantize" in passes


# --------------------------------------------------------------------------- a training pass gets data


@pytest.fixture()
def finetune_pass():
    """A training pass registered like prune/QAT will be: the runner must hand it train data and epochs."""
    from edgecompress.artifacts import ModelFormat
    from edgecompress.compress.passes import (
        PASSES,
        Pass,
        PassReport,
        PassResult,
        Role,
        load_source,
        output_metadata,
    )

    seen = []

    class FineTune(Pass):
        name = "test_finetune"
        accepts = (ModelFormat.KERAS_H5,)
        produces = ModelFormat.KERAS_H5

        def __init__(self, lr: float = 1e-3, epochs: int = 5) -> None:
            self.lr, self.epochs = lr, epochs

        def needs(self):
            return frozenset({Role.TRAIN})

        def params(self):
            return {"lr": self.lr, "epochs": self.epochs}

        def apply(self, artifact, context):
            from edgecompress.artifacts import Artifact
            from edgecompress.models.train import save_model

            seen.append((len(context.train), context.train.input_shape, self.epochs))
            source = load_source(artifact, context)
            metadata = output_metadata(artifact, source, context, self.name, self.params())
            save_model(source.model, context.output, metadata)
            return PassResult(Artifact.open(context.output), PassReport(pass_name=self.name, params={}, seconds=0.0))

    PASSES.add(FineTune.name, FineTune)
    yield seen
    PASSES.remove(FineTune.name)


def test_training_pass_receives_train_data_and_zoo_model_is_cached(tmp_path, finetune_pass):
    recipe = base_recipe(
        models=[{"name": "rand", "zoo": "mobilenet_v2", "params": ZOO_TINY["params"], "train": False}],
        variants=[{"name": "tuned", "passes": ["test_finetune(lr=0.01)"]}],
        targets={"runtimes": ["keras"], "devices": ["cpu"]},
        training={"epochs": 2},
        bench={"runs": 3, "warmup": 1, "memory": False},
    )
    # A model file comes with no data of its own: without train data the recipe is refused up front.
    fake = tmp_path / "file.h5"
    fake.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))
    with_file = {**recipe, "models": [{"name": "mine", "file": str(fake)}]}
    with pytest.raises(UsageError, match=r"pass 'test_finetune\(lr=0.01, epochs=2\)' needs train data, and model 'mine' has none"):
        load_recipe(write_recipe(tmp_path, with_file))
    recipe["data"]["train"] = {"spec": "digits", "samples": 64}
    plan = load_recipe(write_recipe(tmp_path, recipe))
    first = run_pipeline(plan, progress=False)
    assert finetune_pass == [(64, (32, 32, 3), 2)]
    assert [(s.stage, s.status) for s in first.stages] == [
        ("build(mobilenet_v2)", "done"), ("test_finetune(lr=0.01, epochs=2)", "done"), ("bench(keras, cpu, threads=default)", "done")
    ]  # fmt: skip
    [record] = first.records
    # Random weights: size and latency, but no metric that would pretend to mean something.
    assert record.runtime == "keras" and record.latency_ms_p50 > 0 and record.metric_value is None
    again = run_pipeline(plan, progress=False)
    assert len(finetune_pass) == 1 and {s.status for s in again.stages} == {"cached"}


# --------------------------------------------------------------------------- caching and resuming


@pytest.fixture(scope="module")
def file_recipe(tmp_path_factory, tiny_classifier) -> Path:
    directory = tmp_path_factory.mktemp("pipeline")
    recipe = base_recipe(
        models=[{"name": "tiny", "file": str(tiny_classifier)}],
        variants=[
            {"name": "float", "passes": ["export"], "formats": ["tflite", "onnx"]},
            {"name": "dynamic", "passes": ["quantize(mode=dynamic)"]},
            {"name": "int8", "passes": ["quantize(mode=int8)"]},
        ],
        targets={"runtimes": ["litert", "onnxruntime"], "threads": [1], "devices": ["cpu", "gpu"]},
        bench={"runs": 5, "warmup": 1, "memory": False},
    )
    return write_recipe(directory, recipe)


PASS_STAGES = 4  # float tflite, float onnx, dynamic, int8
RECORDS = 8  # 4 outputs × (cpu + one unavailable gpu row)


def _finished(cache: Path) -> dict[str, int]:
    return {p.parent.name: p.stat().st_mtime_ns for p in cache.glob(f"*/{STAGE_FILE}")}


def _rows(store: Path) -> int:
    if not store.exists():
        return 0
    try:
        with sqlite3.connect(store, timeout=5) as db:
            return db.execute("SELECT COUNT(*) FROM records").fetchone()[0]
    except sqlite3.OperationalError:  # the table does not exist yet
        return 0


def _run_until(recipe: Path, done, *args: str, timeout: float = 240) -> None:
    """Start the pipeline in its own process group; SIGKILL all of it as soon as ``done()``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "edgecompress.cli", "pipeline", str(recipe), "-q", *args],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + timeout
    try:
        while not done():
            if process.poll() is not None:
                pytest.fail(f"the pipeline ended (exit {process.returncode}) before it could be killed: "
                            f"{process.stderr.read().decode()[-2000:]}")  # fmt: skip
            if time.monotonic() > deadline:
                pytest.fail("the pipeline made no progress in time")
            time.sleep(0.05)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        process.stderr.close()


@pytest.fixture()
def count_passes(monkeypatch):
    """Count every pass invocation, whatever the pass."""
    calls = []
    for name, cls in load_passes().items():

        def counting(self, artifact, context, _apply=cls.apply, _name=name):
            calls.append(_name)
            return _apply(self, artifact, context)

        monkeypatch.setattr(cls, "apply", counting)
    return calls


def test_killed_run_resumes_without_recomputing(file_recipe, count_passes):
    plan = load_recipe(file_recipe)
    store, cache = plan.output / "results.sqlite", plan.output / "cache"
    # 1. killed while converting (two variants in parallel): some stages finished, some not
    _run_until(file_recipe, lambda: len(_finished(cache)) >= 2 if cache.exists() else False, "--jobs", "2")
    after_first = _finished(cache)
    assert 2 <= len(after_first) < 1 + PASS_STAGES and _rows(store) == 0
    # 2. resumed, then killed while benchmarking: the finished stages must not have been redone
    _run_until(file_recipe, lambda: _rows(store) >= 1)
    after_second = _finished(cache)
    assert all(after_second[key] == mtime for key, mtime in after_first.items())
    assert len(after_second) == 1 + PASS_STAGES
    rows_before = _rows(store)
    with sqlite3.connect(store) as db:
        stored_keys = {row[0] for row in db.execute("SELECT stage_key FROM records")}
    # 3. resumed in this process, to count pass invocations: none, since every pass had finished
    result = run_pipeline(plan, progress=False)
    assert count_passes == []
    assert _finished(cache) == after_second
    statuses = {s.key: s.status for s in result.stages}
    assert all(statuses[key] == "cached" for key in after_second)
    assert all(statuses[key] == "cached" for key in stored_keys)
    assert sum(s.status in ("done", "unavailable") for s in result.stages) == RECORDS - rows_before
    # the store: every record once, none partial
    with sqlite3.connect(store) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        keys = [row[0] for row in db.execute("SELECT stage_key FROM records")]
    assert len(keys) == len(set(keys)) == RECORDS == len(result.records)
    for record in result.records:
        assert record.model == "tiny" and record.size_bytes > 0
        if record.status == "ok":
            assert record.latency_ms_p50 > 0 and record.metric_name == "top1" and record.metric_delta is not None
            assert record.metrics["samples"] == 60
        else:
            assert record.status == "unavailable" and record.device == "gpu" and "no gpu here" in record.note
    float_tflite = next(r for r in result.records if r.variant == "float" and r.runtime == "litert")
    assert abs(float_tflite.metric_delta) < 0.02  # a float export scores like its source


def test_second_run_recomputes_nothing(file_recipe, count_passes):
    plan = load_recipe(file_recipe)
    first = run_pipeline(plan, progress=False)  # finishes whatever an earlier test left
    before = _finished(plan.output / "cache")
    count_passes.clear()
    again = run_pipeline(plan, progress=False)
    assert count_passes == [] and {s.status for s in again.stages} == {"cached"}
    assert _finished(plan.output / "cache") == before
    assert again.records == first.records and len(again.records) == RECORDS
    # the CLI prints the table from the store, and the report renders the same records
    result = CliRunner().invoke(cli, ["pipeline", str(file_recipe), "-q"])
    assert result.exit_code == 0, result.output
    assert "0 stage(s) run" in result.output and "| tiny  | int8    | litert" in result.output
    html = CliRunner().invoke(cli, ["report", str(plan.output), "--format", "html"])
    assert html.exit_code == 0 and "<svg" in (plan.output / "report.html").read_text()
