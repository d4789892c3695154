"""`compress pipeline --executor ray`: the same records as the local executor, benchmarks alone on
their node, a worker killed mid-stage retried without duplicates, and one clear line without Ray.

One real local Ray instance (2 CPUs) for the module; the tests stay on one xdist worker."""

from __future__ import annotations

import importlib.util
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from edgecompress.cli import cli
from edgecompress.pipeline.executors import Needs, make_executor
from edgecompress.pipeline.recipe import load_recipe
from edgecompress.pipeline.run import STAGE_FILE, run_pipeline

HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason='Ray is not installed (pip install "edgecompress[ray]")')
pytestmark = pytest.mark.xdist_group("ray")

MODELS = {"a": ("mobilenet_v1", {"input_size": 32, "alpha": 0.25, "classes": 10}),
          "b": ("resnet18", {"input_size": 32, "alpha": 0.25, "classes": 10})}  # fmt: skip


@pytest.fixture(scope="module")
def ray_instance():
    """One local Ray instance for the module: 2 CPUs, and the bench resource every node needs."""
    import ray

    from edgecompress.pipeline.executors import BENCH_RESOURCE, LOCAL_OBJECT_STORE_BYTES

    ray.init(num_cpus=2, resources={BENCH_RESOURCE: 1}, include_dashboard=False, log_to_driver=False,
             object_store_memory=LOCAL_OBJECT_STORE_BYTES)  # fmt: skip
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    """Two models (random weights: the same files for every run) × two variants × one runtime."""
    from edgecompress.models.train import save_model
    from edgecompress.models.zoo import build

    directory = tmp_path_factory.mktemp("ray")
    for name, (zoo, params) in MODELS.items():
        model, metadata = build(zoo, **params)
        save_model(model, directory / f"{name}.h5", metadata)
    recipe = {
        "name": "ray",
        "data": {"calibration": {"spec": "digits", "samples": 20}, "eval": {"spec": "digits", "samples": 40}},
        "models": [{"name": name, "file": f"{name}.h5"} for name in MODELS],
        "variants": [{"name": "float", "passes": ["export"]}, {"name": "int8", "passes": ["quantize(mode=int8)"]}],
        "targets": {"runtimes": ["litert"], "threads": [1]},
        "bench": {"runs": 3, "warmup": 1, "memory": False},
    }
    path = directory / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def _rows(records) -> dict[tuple[str, str], object]:
    return {(r.model, r.variant): r for r in records}


@needs_ray
def test_ray_gives_the_local_records(ray_instance, recipe, tmp_path):
    plan = load_recipe(recipe)
    local = run_pipeline(plan, tmp_path / "local" / "results.sqlite", progress=False)
    distributed = run_pipeline(plan, tmp_path / "ray" / "results.sqlite", executor=make_executor(kind="ray"),
                               progress=False)  # fmt: skip
    assert not local.failures and not distributed.failures
    assert distributed.count("cached") == 0  # its own cache: every stage ran on Ray
    ours, theirs = _rows(local.records), _rows(distributed.records)
    assert len(ours) == len(MODELS) * 2 and set(ours) == set(theirs)
    for key, mine in ours.items():
        other = theirs[key]
        assert (other.size_bytes, other.size_gzip_bytes, other.format, other.lineage) == (
            mine.size_bytes, mine.size_gzip_bytes, mine.format, mine.lineage)  # fmt: skip
        assert other.metrics == mine.metrics and other.metric_value == mine.metric_value
        assert other.metric_delta == mine.metric_delta and mine.metric_name == "top1"
        assert mine.latency_ms_p50 > 0 and other.latency_ms_p50 > 0
    # the stage cache holds one entry per stage, with the same keys: content-hashed, wherever computed
    finished = {p.parent.name for p in (tmp_path / "ray" / "cache").glob(f"*/{STAGE_FILE}")}
    assert finished == {p.parent.name for p in (tmp_path / "local" / "cache").glob(f"*/{STAGE_FILE}")}
    assert len(finished) == len(MODELS) * 3  # evaluate + two passes per model


def _our_workers(task: str) -> list[int]:
    """PIDs of this process's Ray workers running ``task`` now (Ray titles a busy worker ray::TASK)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    found = []
    for pid in parents:
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        except OSError:
            continue
        ancestor = parents.get(pid)
        while ancestor and ancestor != os.getpid():
            ancestor = parents.get(ancestor)
        if title.strip() == f"ray::{task}" and ancestor == os.getpid():
            found.append(pid)
    return found


def _kill_one(task: str, deadline: float) -> int:
    while time.monotonic() < deadline:
        pids = _our_workers(task)
        if pids:
            os.kill(pids[0], signal.SIGKILL)
            return pids[0]
        time.sleep(0.02)
    pytest.fail(f"no Ray worker ran {task} in time")


@needs_ray
def test_worker_killed_mid_stage_is_retried_without_duplicates(ray_instance, recipe, tmp_path):
    plan = load_recipe(recipe).select(models=("a",))
    store, cache = tmp_path / "results.sqlite", tmp_path / "cache"
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["result"] = run_pipeline(plan, store, executor=make_executor(kind="ray"), progress=False)
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    try:
        deadline = time.monotonic() + 240
        _kill_one("_variant_job", deadline)
        evaluated = {p.parent.name: p.stat().st_mtime_ns for p in cache.glob(f"*/{STAGE_FILE}")}
        _kill_one("_bench_job", deadline)
    finally:
        thread.join(300)
    assert "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    assert not result.failures
    # the stages finished before the kill (at least the float metric) were not rerun; every stage ended once
    assert len(evaluated) >= 1 and all(
        (cache / key / STAGE_FILE).stat().st_mtime_ns == mtime for key, mtime in evaluated.items()
    )
    assert len(list(cache.glob(f"*/{STAGE_FILE}"))) == 3
    # every row exactly once, written by the driver
    with sqlite3.connect(store) as db:
        keys = [row[0] for row in db.execute("SELECT stage_key FROM records")]
    assert len(keys) == len(set(keys)) == 2 == len(result.records)
    assert all(r.status == "ok" and r.latency_ms_p50 > 0 for r in result.records)


@needs_ray
def test_benchmarks_run_alone_on_their_node(ray_instance):
    """What the bench resource buys: a benchmark task never overlaps another of our tasks."""
    from edgecompress.pipeline.executors import RayExecutor

    def interval(seconds: float) -> tuple[float, float]:
        started = time.time()
        time.sleep(seconds)
        return started, time.time()

    executor = RayExecutor()
    ray = executor.connect()
    others = ray.remote(interval).options(**executor.task_options(Needs()))
    bench = ray.remote(interval).options(**executor.task_options(Needs(exclusive=True)))
    refs = [others.remote(0.6), bench.remote(0.3), bench.remote(0.3), others.remote(0.6)]
    spans = ray.get(refs)
    for start, end in (spans[1], spans[2]):
        others_in = [s for s in spans if s != (start, end) and s[0] < end and start < s[1]]
        assert not others_in, f"a benchmark overlapped {others_in}"


def test_task_options():
    from edgecompress.pipeline.executors import BENCH_RESOURCE, SHARE, RayExecutor

    executor = RayExecutor(max_retries=2)
    assert executor.task_options(Needs(exclusive=True))["resources"] == {BENCH_RESOURCE: 1.0}
    options = executor.task_options(Needs(cpus=1, gpus=1))
    assert options["resources"] == {BENCH_RESOURCE: SHARE} and options["num_gpus"] == 1
    assert options["max_retries"] == 2 and options["retry_exceptions"] is False


def test_without_ray_one_line_names_the_extra(recipe, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # as if not installed
    result = CliRunner().invoke(cli, ["pipeline", str(recipe), "--executor", "ray", "-q"])
    assert result.exit_code == 7, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "ray" in lines[0] and 'pip install "edgecompress[ray]"' in lines[0]
    wrong = CliRunner().invoke(cli, ["pipeline", str(recipe), "--ray-address", "auto", "-q"])
    assert wrong.exit_code == 2 and "--executor ray" in wrong.output


def test_a_worker_without_the_shared_cache_says_so(tmp_path):
    from edgecompress.errors import UsageError
    from edgecompress.pipeline.run import StageCache

    identity = StageCache(tmp_path / "cache").identity()
    assert StageCache.shared(str(tmp_path / "cache"), identity).root == tmp_path / "cache"
    with pytest.raises(UsageError, match="not the driver's.*filesystem every worker mounts at the same path"):
        StageCache.shared(str(tmp_path / "elsewhere"), identity)  # what a node without the shared mount sees
    assert not (tmp_path / "elsewhere").exists()  # and nothing was computed into a private copy
