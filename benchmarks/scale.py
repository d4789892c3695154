"""How a sweep scales out: the same small recipe with the local executor, Ray with 1 worker and
Ray with 2 workers on this machine; then the driver's overhead per stage on a simulated cluster
of N nodes (Ray's ``cluster_utils.Cluster``: N raylets on this one machine); then a model of a
10- and a 100-node sweep built from those measurements, with its assumptions printed beside it.

    python benchmarks/scale.py                         # all three parts (~1 min on 2 cores)
    python benchmarks/scale.py --part driver --nodes 2 4 --stages 200 1000 4000
    python benchmarks/scale.py --part model --pass-seconds 13.3 --bench-seconds 5 --driver-ms 0.76 --write-ms 0.28

Part 1 runs real stages (random-weight zoo models at --size px, digits for calibration and
metrics, LiteRT benchmarks); every configuration starts from an empty cache, and their records
must agree on sizes and metrics. Part 2 runs no model at all: each stage is a Ray task that
returns a synthetic record at once, so what is timed is what the driver does per stage (submit,
wait, receive, write the row into SQLite) and what Ray adds. Needs ``edgecompress[ray]``. Part 3
is arithmetic: by default on parts 1 and 2's figures (tiny models: stages far shorter than real
ones); ``--pass-seconds``/``--bench-seconds``/``--driver-ms``/``--write-ms`` put other figures in.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

import edgecompress  # noqa: F401 - sets TF_USE_LEGACY_KERAS before any TensorFlow import

MODELS = {"mnv1": "mobilenet_v1", "mnv2": "mobilenet_v2", "r18": "resnet18"}
VARIANTS = [{"name": "float", "passes": ["export"]}, {"name": "int8", "passes": ["quantize(mode=int8)"]}]


# --------------------------------------------------------------------------- part 1: a real sweep


def write_recipe(directory: Path, size: int, runs: int) -> Path:
    from edgecompress.models.train import save_model
    from edgecompress.models.zoo import build

    for name, zoo in MODELS.items():
        model, metadata = build(zoo, input_size=size, alpha=0.25 if zoo != "mobilenet_v2" else 0.35, classes=10)
        save_model(model, directory / f"{name}.h5", metadata)
    recipe = {
        "name": "scale",
        "data": {"calibration": {"spec": "digits", "samples": 50}, "eval": {"spec": "digits", "samples": 200}},
        "models": [{"name": name, "file": f"{name}.h5"} for name in MODELS],
        "variants": VARIANTS,
        "targets": {"runtimes": ["litert"], "threads": [1]},
        "bench": {"runs": runs, "warmup": 2, "memory": False},
    }
    path = directory / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def sweep(recipe_path: Path, workdir: Path) -> dict[str, dict]:
    import ray

    from edgecompress.pipeline.executors import (
        BENCH_RESOURCE,
        LOCAL_OBJECT_STORE_BYTES,
        LocalExecutor,
        RayExecutor,
    )
    from edgecompress.pipeline.recipe import load_recipe
    from edgecompress.pipeline.run import run_pipeline

    plan = load_recipe(recipe_path)
    results = {}
    for label, cpus in (("local", None), ("Ray, 1 worker", 1), ("Ray, 2 workers", 2)):
        store = workdir / label.replace(" ", "").replace(",", "-") / "results.sqlite"
        startup = 0.0
        if cpus is None:
            executor = LocalExecutor()
        else:
            started = time.perf_counter()
            ray.init(num_cpus=cpus, resources={BENCH_RESOURCE: 1}, include_dashboard=False, log_to_driver=False,
                     object_store_memory=LOCAL_OBJECT_STORE_BYTES)  # fmt: skip
            startup = time.perf_counter() - started
            executor = RayExecutor()
        started = time.perf_counter()
        result = run_pipeline(plan, store, executor=executor, progress=False)
        seconds = time.perf_counter() - started
        if cpus is not None:
            ray.shutdown()
        if result.failures:
            sys.exit(f"{label}: {result.failures[0]}")
        results[label] = {"startup": startup, "seconds": seconds, "result": result}
        print(f"  {label:<15} {seconds:6.1f} s  ({len(result.stages)} stages, Ray start-up {startup:.1f} s)", flush=True)
    return results


def check_same(results: dict[str, dict]) -> None:
    rows = {label: {(r.model, r.variant): (r.size_bytes, r.metric_value) for r in v["result"].records}
            for label, v in results.items()}  # fmt: skip
    first = next(iter(rows.values()))
    for label, values in rows.items():
        if values != first:
            sys.exit(f"{label} gave other sizes or metrics than the local executor: {values} vs {first}")


def stage_seconds(result) -> dict[str, float]:
    """Median seconds of a computed stage, by phase (the model's eval, a pass, one benchmark)."""
    by_phase: dict[str, list[float]] = {}
    for stage in result.stages:
        if stage.status == "done":
            by_phase.setdefault(stage.phase, []).append(stage.seconds)
    return {phase: statistics.median(values) for phase, values in by_phase.items()}


# --------------------------------------------------------------------------- part 2: the driver


def _synthetic_bench(index: int):
    """A benchmark stage that measures nothing: one record back at once (runs on a Ray worker)."""
    from edgecompress.pipeline.run import BenchOutcome, StageOutcome
    from edgecompress.reports.records import BenchmarkRecord

    record = BenchmarkRecord(model=f"m{index % 97}", variant=f"v{index}", format="tflite", runtime="litert",
                             runtime_version="2.3.0", device="cpu", threads=1, size_bytes=1_000_000,
                             size_gzip_bytes=900_000, latency_ms_p50=1.0, runs=30, metric_name="top1",
                             metric_value=0.9, metrics={"top1": 0.9})  # fmt: skip
    key = f"synthetic-{index:08d}"
    stage = StageOutcome("bench", record.model, record.variant, "bench(litert, cpu, threads=1)", key, "done")
    return BenchOutcome(record.model, record.variant, [stage], [], [(key, record)])


def driver_overhead(nodes: int, stage_counts: list[int], workdir: Path) -> list[dict]:
    """The pipeline's phase-3 loop (exclusive jobs, one store transaction per result) over
    trivial stages, on ``nodes`` simulated nodes of 1 CPU and ``bench: 1`` each."""
    import ray
    from ray.cluster_utils import Cluster

    from edgecompress.pipeline.executors import BENCH_RESOURCE, Needs, RayExecutor
    from edgecompress.reports.store import ResultsStore

    node = {"num_cpus": 1, "resources": {BENCH_RESOURCE: 1}, "object_store_memory": 80 * 1024**2}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    for _ in range(nodes - 1):
        cluster.add_node(**node)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    executor = RayExecutor()
    rows = []
    try:
        list(executor.map(_synthetic_bench, list(range(4 * nodes)), Needs(exclusive=True)))  # start the workers
        for count in stage_counts:
            path = workdir / f"driver-{nodes}-{count}.sqlite"
            writing = 0.0
            wall, cpu = time.perf_counter(), time.process_time()
            with ResultsStore(path) as store:
                for outcome in executor.map(_synthetic_bench, list(range(count)), Needs(exclusive=True)):
                    started = time.perf_counter()
                    store.add_many(outcome.rows, "driver")
                    writing += time.perf_counter() - started
                stored = len(store)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            if stored != count:
                sys.exit(f"{stored} rows stored for {count} stages")
            rows.append({"nodes": nodes, "stages": count, "wall": wall, "cpu": cpu, "write": writing})
            print(f"  {nodes} node(s) {count:6d} stages: {wall:6.1f} s wall, driver CPU {1000 * cpu / count:5.2f} ms/stage,"
                  f" store {1000 * writing / count:5.2f} ms/row, {count / wall:6.1f} stages/s", flush=True)  # fmt: skip
    finally:
        ray.shutdown()
        cluster.shutdown()
    return rows


# --------------------------------------------------------------------------- part 3: the model


def driver_costs(driver: list[dict]) -> tuple[float, float, str]:
    """Driver CPU ms per stage and ms per stored row on the largest simulated run of part 2."""
    largest = max(driver, key=lambda r: (r["nodes"], r["stages"]))
    return (1000 * largest["cpu"] / largest["stages"], 1000 * largest["write"] / largest["stages"],
            f"part 2, {largest['nodes']} simulated nodes")  # fmt: skip


def model(pass_s: float, bench_s: float, driver_ms: float, write_ms: float, driver_source: str, cores: int,
          model_mb: float, benches_per_output: int) -> None:  # fmt: skip
    """Stages per hour, driver write rate and cache traffic of a 10- and a 100-node sweep."""
    # One output = one pass stage (cores of them run at once per node) + its benchmark stages
    # (one at a time per node: the bench resource).
    node_s_per_output = pass_s / cores + benches_per_output * bench_s
    stages_per_output = 1 + benches_per_output
    print("\n  assumptions: every node is this machine "
          f"({cores} cores); a pass stage takes {pass_s:.1f} s and runs {cores} at a time per node; a benchmark "
          f"stage takes {bench_s:.1f} s and runs alone on its node; {benches_per_output} benchmark(s) per output; "
          f"the driver costs {driver_ms:.2f} ms of CPU per stage and {write_ms:.2f} ms per stored row "
          f"({driver_source}); a model file of {model_mb:g} MB; a pass stage reads its "
          "input and writes its output, a benchmark stage reads its output, once each, from the shared cache; "
          "no stage is cached; the driver, the filesystem and the network are not shared with other work.")  # fmt: skip
    print("\n| nodes | stages / hour | of which benchmarks | driver busy | store writes / s | cache traffic |")
    print("|---|---|---|---|---|---|")
    for nodes in (10, 100):
        outputs_per_hour = nodes * 3600 / node_s_per_output
        stages = outputs_per_hour * stages_per_output
        driver_busy = stages * driver_ms / 1000 / 3600
        writes = outputs_per_hour * benches_per_output / 3600
        traffic_mb_s = outputs_per_hour * (2 + benches_per_output) * model_mb / 3600
        print(f"| {nodes} | {stages:,.0f} | {outputs_per_hour * benches_per_output:,.0f} | {driver_busy:.1%} of a core"
              f" | {writes:.2f} ({writes * write_ms / 1000:.1%} of SQLite's time) | {traffic_mb_s:.1f} MB/s |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["all", "sweep", "driver", "model"], default="all")
    parser.add_argument("--size", type=int, default=64, help="input size of the sweep's models (px)")
    parser.add_argument("--runs", type=int, default=20, help="timed runs per benchmark stage")
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 4], help="simulated cluster sizes")
    parser.add_argument("--stages", type=int, nargs="+", default=[100, 500, 2000], help="stages per driver run")
    parser.add_argument("--model-mb", type=float, default=9.0,
                        help="model file size for the cache-traffic model (default: MobileNetV2 224 px, between "
                             "its float 13.9 MB and int8 3.9 MB TFLite files)")  # fmt: skip
    parser.add_argument("--benches", type=int, default=4, help="benchmark stages per output in the model")
    parser.add_argument("--pass-seconds", type=float, help="the model's pass stage (default: part 1's median)")
    parser.add_argument("--bench-seconds", type=float, help="the model's benchmark stage (default: part 1's median)")
    parser.add_argument("--driver-ms", type=float, help="the model's driver CPU per stage (default: part 2's)")
    parser.add_argument("--write-ms", type=float, help="the model's store write per row (default: part 2's)")
    args = parser.parse_args()
    import os

    from edgecompress.reports.records import machine_description

    print(f"machine: {machine_description()}")
    with tempfile.TemporaryDirectory(prefix="edgecompress-scale-") as tmp:
        workdir = Path(tmp)
        seconds: dict[str, float] = {}
        driver_ms, write_ms, driver_source = args.driver_ms, args.write_ms, "given"
        if args.part in ("all", "sweep"):
            print(f"\n1. the same sweep: {len(MODELS)} models × {len(VARIANTS)} variants × LiteRT, {args.size} px")
            results = sweep(write_recipe(workdir, args.size, args.runs), workdir)
            check_same(results)
            seconds = stage_seconds(results["local"]["result"])
            print("  records: identical sizes and metrics in all three; median stage: "
                  + ", ".join(f"{phase} {value:.1f} s" for phase, value in seconds.items()))  # fmt: skip
        if args.part in ("all", "driver"):
            print("\n2. driver overhead on a simulated cluster (trivial stages)")
            driver = [row for nodes in args.nodes for row in driver_overhead(nodes, args.stages, workdir)]
            measured = driver_costs(driver)
            driver_ms = args.driver_ms if args.driver_ms is not None else measured[0]
            write_ms = args.write_ms if args.write_ms is not None else measured[1]
            driver_source = measured[2] if args.driver_ms is None and args.write_ms is None else "given"
        if args.part in ("all", "model"):
            pass_s = args.pass_seconds if args.pass_seconds is not None else seconds.get("variant")
            bench_s = args.bench_seconds if args.bench_seconds is not None else seconds.get("bench")
            if None in (pass_s, bench_s, driver_ms, write_ms):
                sys.exit("--part model needs --pass-seconds, --bench-seconds, --driver-ms and --write-ms")
            print("\n3. a model of a 10- and a 100-node sweep")
            model(pass_s, bench_s, driver_ms, write_ms, driver_source, os.cpu_count() or 1, args.model_mb, args.benches)


if __name__ == "__main__":
    main()
