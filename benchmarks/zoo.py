"""Zoo benchmark: train each family small on its embedded data, then measure every deployable variant.

    python benchmarks/zoo.py                 # all entries → benchmarks/zoo.md (tens of minutes on 2 cores)
    python benchmarks/zoo.py --only unet     # some entries
    python benchmarks/zoo.py --sizes-only    # full-size float and int8 TFLite files of four classics

Each row: the float Keras metric on the held-out split beside a trivial (constant) predictor, then
float TFLite, int8 TFLite and int8 ONNX: metric, file size and median latency (batch 1, 2 threads),
each measured in the runtime a device would use. Models, not metrics, are written to benchmarks/out/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from edgecompress._env import configure_environment  # noqa: E402

configure_environment()

#: per entry: zoo parameters, epochs and peak learning rate for the small benchmark configuration
BENCH = {
    "mobilenet_v1": ({"input_size": 64, "alpha": 0.5, "classes": 10}, 30, 2e-3),
    "mobilenet_v2": ({"input_size": 64, "alpha": 0.5, "classes": 10}, 15, 2e-3),
    "mobilenet_v3_small": ({"input_size": 64, "alpha": 0.75, "classes": 10}, 15, 2e-3),
    "mobilenet_v3_large": ({"input_size": 64, "alpha": 0.75, "classes": 10}, 15, 2e-3),
    "resnet18": ({"input_size": 48, "alpha": 0.25, "classes": 10}, 15, 2e-3),
    "resnet18_v2": ({"input_size": 48, "alpha": 0.25, "classes": 10}, 15, 2e-3),
    "resnet50": ({"input_size": 48, "alpha": 0.25, "classes": 10}, 15, 1e-3),
    "resnet50_v2": ({"input_size": 48, "alpha": 0.25, "classes": 10}, 15, 1e-3),
    "inception_v3": ({"input_size": 75, "alpha": 0.25, "classes": 10}, 15, 1e-3),
    "unet": ({"input_size": 64, "alpha": 0.5, "depth": 3}, 25, 3e-3),
    "unet_upsample": ({"input_size": 64, "alpha": 0.5, "depth": 3}, 25, 3e-3),
    "blazepose_detector": ({"input_size": 64, "alpha": 0.5}, 30, 3e-3),
    "blazepose_landmark": ({"input_size": 64, "alpha": 0.5}, 150, 3e-3),
}
#: full-size models whose files are set beside the published sizes (float → int8, MB)
FULL_SIZE = {
    "mobilenet_v1": ({}, "16.9 → 4.3"),
    "mobilenet_v2": ({}, "14 → 3.6"),
    "inception_v3": ({}, "95.7 → 23.9"),
    "resnet50": ({}, "— (not in the published table; STACK.md: 102.05 → 26.20)"),
}
THREADS, RUNS = 2, 50


def mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def latency_ms(path: Path) -> float:
    import numpy as np

    from edgecompress.artifacts import Artifact
    from edgecompress.runtimes import open_session
    from edgecompress.runtimes.base import time_session

    with open_session(Artifact.open(path), threads=THREADS) as session:
        shape = tuple(d if d and d > 0 else 1 for d in session.inputs[0].shape[1:])
        sample = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)
        return time_session(session, sample, warmup=5, runs=RUNS).p50


def bench_entry(name: str, workdir: Path, say) -> dict:
    from edgecompress import api
    from edgecompress.calibration.data import load_images
    from edgecompress.errors import EdgeCompressError
    from edgecompress.models.tasks import trivial_baseline
    from edgecompress.models.train import train_zoo
    from edgecompress.models.zoo import ZOO, build

    params, epochs, lr = BENCH[name]
    entry = ZOO.get(name)
    source = workdir / f"{name}.h5"
    started = time.perf_counter()
    trained = train_zoo(name, source, None, epochs, 0.1, 32, lr, params, progress=False, force=True)
    train_seconds = time.perf_counter() - started
    size = trained.params["input_size"]
    test = load_images(entry.embedded_data, "test", (size, size))
    train = load_images(entry.embedded_data, "train", (size, size))
    model, _ = build(name, **params)
    baseline = trivial_baseline(entry.task, train, test, [tuple(o.shape) for o in model.outputs])
    metric = trained.metric
    row = {"name": name, "task": entry.task, "params": params, "epochs": epochs, "metric": metric,
           "train_s": train_seconds, "baseline": baseline[metric]}  # fmt: skip
    for tag, fmt, mode in (("float", "tflite", None), ("float", "onnx", None), ("int8", "tflite", "int8"), ("int8", "onnx", "int8")):
        target = workdir / f"{name}.{tag}.{fmt}"
        try:
            if mode is None:
                report = api.export(source, target, format=fmt, eval=test, force=True)
            else:
                report = api.quantize(source, target, mode=mode, format=fmt, calib=train, calib_samples=100, eval=test, force=True)
        except EdgeCompressError as exc:  # a refused export is a finding: record it, keep going
            row[f"{tag}_{fmt}"] = str(exc).split(" (")[0]
            say(f"{name} {tag} {fmt}: {row[f'{tag}_{fmt}']}")
            continue
        row["keras"] = report.evaluation["source"][metric]
        row[f"{tag}_{fmt}"] = (report.evaluation["output"][metric], report.output.size_bytes, latency_ms(target))
    say(f"{name}: {metric} keras {row.get('keras', float('nan')):.4f} (trivial {row['baseline']:.4f}), "
        f"trained in {train_seconds:.0f} s")
    return row


def sizes_only(workdir: Path, say) -> list[tuple[str, int, int, str]]:
    """Full-size files: random weights (sizes do not depend on them), calibrated on 100 digits."""
    from edgecompress.api import model_inputs
    from edgecompress.compress.convert import keras_to_tflite
    from edgecompress.models.zoo import build

    rows = []
    for name, (params, published) in FULL_SIZE.items():
        model, metadata = build(name, **params)
        calibration = model_inputs("digits", metadata.inputs[0].shape, metadata.preprocessing, "train", samples=100)
        sizes = []
        for mode in ("float", "int8"):
            started = time.perf_counter()
            data = keras_to_tflite(model, mode, calibration if mode == "int8" else None)
            path = workdir / f"{name}_full.{mode}.tflite"
            path.write_bytes(data)
            sizes.append(len(data))
            say(f"{path.name}: {mb(len(data))} ({time.perf_counter() - started:.0f} s)")
        rows.append((name, *sizes, published))
    return rows


def render(rows: list[dict], sizes: list, command: str) -> str:
    from edgecompress.reports.records import machine_description

    lines = [
        "# Zoo benchmark",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine_description()}; {dt.date.today().isoformat()}; latency = median of {RUNS} runs, "
        f"batch 1, {THREADS} threads, after 5 warm-up runs.  ",
        "Data: digits (scikit-learn, real) for classification; **synthetic** shapes and poses "
        "(`synthetic-shapes`, `synthetic-poses`, generated, exact labels) for segmentation, detection and keypoints. "
        "Metrics on each set's test split; trivial = the best constant predictor (majority class / mean box / mean pose) "
        "fitted on the training split. int8 = full-integer PTQ, 100 calibration samples from the training split.",
        "",
    ]
    if rows:
        lines += [
            "| model | task | config | epochs (training s) | metric | trivial | Keras float | TFLite float | TFLite int8 "
            "| ONNX float | ONNX int8 |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            config = ", ".join(f"{k} {v}" for k, v in r["params"].items())
            cells = [cell if isinstance(cell, str) else f"{cell[0]:.2%}<br>{mb(cell[1])}, {cell[2]:.2f} ms"
                     for cell in (r["float_tflite"], r["int8_tflite"], r["float_onnx"], r["int8_onnx"])]  # fmt: skip
            lines.append(
                f"| {r['name']} | {r['task']} | {config} | {r['epochs']} ({r['train_s']:.0f} s) | {r['metric']} "
                f"| {r['baseline']:.2%} | "
                f"{r['keras']:.2%} | {cells[0]} | {cells[1]} | {cells[2]} | {cells[3]} |"
            )
        lines.append("")
    if sizes:
        lines += [
            "## Full-size TFLite files (224 px, 1000 classes; Inception v3 at 299 px)",
            "",
            "| model | float TFLite | int8 TFLite | published float → int8 (MB) |",
            "|---|---|---|---|",
        ]
        lines += [f"| {n} | {mb(f)} | {mb(q)} | {p} |" for n, f, q, p in sizes]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-only", action="store_true", help="Only write and size the full-size TFLite files.")
    parser.add_argument("--skip-sizes", action="store_true", help="Only the trained small models.")
    parser.add_argument("--only", nargs="*", help="Benchmark only these zoo entries.")
    parser.add_argument("--workdir", type=Path, default=HERE / "out")
    parser.add_argument("--output", type=Path, default=HERE / "zoo.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from edgecompress._env import import_tensorflow, quiet_python_loggers

    # Seeded and deterministic: a rerun on this machine and TensorFlow version prints the same metrics
    # (multi-threaded CPU kernels otherwise sum in varying order, and MobileNet v1 at 48 px scored
    # 93.9 % in one run and 96.1 % in the next).
    import_tensorflow().config.experimental.enable_op_determinism()

    quiet_python_loggers()
    args.workdir.mkdir(parents=True, exist_ok=True)

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    command = "python benchmarks/zoo.py " + " ".join(argv if argv is not None else sys.argv[1:])
    names = [] if args.sizes_only else (args.only or list(BENCH))
    rows = [bench_entry(name, args.workdir, say) for name in names]
    sizes = [] if args.skip_sizes else sizes_only(args.workdir, say)
    text = render(rows, sizes, command.strip())
    args.output.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
