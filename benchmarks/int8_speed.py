"""Int8 that is faster than float: our int8 beside the stock recipes, LiteRT and ONNX Runtime, one run.

    python benchmarks/int8_speed.py --part speed       # 224 px, random weights: latency only
    python benchmarks/int8_speed.py --part train       # train the zoo classifiers (cached; zoo.py's settings)
    python benchmarks/int8_speed.py --part accuracy    # trained zoo classifiers: metric and latency
    python benchmarks/int8_speed.py --part zoo-speed   # U-Net, BlazePose detector/landmark at their zoo sizes

Speed: each model (Keras applications, 224 px, random weights; sizes and speed do not depend on
weights) as LiteRT float / stock int8 / our int8 and ONNX Runtime float / stock int8 / our int8,
all timed in one process, interleaved round by round (batch 1, 2 threads), so every ratio compares
files measured under the same conditions. Stock LiteRT = the textbook converter script
(``from_keras_model``, default optimizations, representative data, integer-only ops, uint8 I/O);
stock ONNX Runtime = ``quantize_static`` per-channel QDQ with its defaults, on the same float ONNX
file we export. Ours = ``compress quantize --mode int8`` (float I/O), both formats.

Accuracy: the zoo classifiers trained small on digits exactly as ``benchmarks/zoo.py`` trains them
(its cached ``benchmarks/out/zoo/<name>.h5`` when present), top-1 on the held-out 360 images for
the float model and each int8 file, with the same latencies at their trained size.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from edgecompress._env import configure_environment  # noqa: E402

configure_environment()

SPEED_MODELS = ("mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large", "resnet50")
CLASSIFIERS = ("mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "resnet18", "resnet18_v2",
               "resnet50", "resnet50_v2", "inception_v3")  # fmt: skip
#: the zoo's other tasks (segmentation, detection, landmarks): latency at their zoo.py size
OTHER_ZOO = ("unet", "unet_upsample", "blazepose_detector", "blazepose_landmark")
COLUMNS = ("litert float", "litert stock", "litert ours", "ort float", "ort stock", "ort ours")
THREADS = 2
CALIBRATION_SAMPLES = 100


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the six files


def stock_tflite(model, calibration, path: Path) -> None:
    """The textbook full-integer script (TensorFlow's post-training integer quantization guide)."""
    from edgecompress._env import import_tensorflow, native_output_silenced

    tf = import_tensorflow()
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x[None]] for x in calibration.array())
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8
    with native_output_silenced():
        path.write_bytes(converter.convert())


def stock_onnx(float_path: Path, calibration, path: Path) -> None:
    """ONNX Runtime's ``quantize_static`` as its docs show it: per-channel QDQ, default types (S8S8)."""
    import onnx
    from onnxruntime import quantization

    name = onnx.load(str(float_path), load_external_data=False).graph.input[0].name
    batches = iter([{name: b} for b in calibration.batches(16)])

    class Reader(quantization.CalibrationDataReader):
        def get_next(self):
            return next(batches, None)

    quantization.quantize_static(str(float_path), str(path), Reader(), quant_format=quantization.QuantFormat.QDQ,
                                 per_channel=True)  # fmt: skip


def six_files(model, calibration, stem: Path) -> dict[str, Path]:
    """Our float and int8 files (the same code `compress export/quantize` runs) and the two stock ones."""
    import onnx

    from edgecompress.compress.convert import keras_to_onnx, keras_to_tflite, onnx_quantize

    files = {column: stem.with_name(f"{stem.name}.{column.replace(' ', '-')}.{'tflite' if 'litert' in column else 'onnx'}")
             for column in COLUMNS}  # fmt: skip
    files["litert float"].write_bytes(keras_to_tflite(model, "float"))
    stock_tflite(model, calibration, files["litert stock"])
    files["litert ours"].write_bytes(keras_to_tflite(model, "int8", calibration))
    proto = keras_to_onnx(model)
    onnx.save(proto, str(files["ort float"]))
    stock_onnx(files["ort float"], calibration, files["ort stock"])
    onnx_quantize(proto, "int8", files["ort ours"], calibration)
    return files


# --------------------------------------------------------------------------- timing


def time_side_by_side(files: dict[str, Path], rounds: int, runs: int) -> dict[str, float]:
    """Median ms per file: every session open at once, timed in turns (``runs`` each per round)."""
    import numpy as np

    from edgecompress.artifacts import Artifact
    from edgecompress.runtimes import open_session

    sessions = {c: open_session(Artifact.open(p), threads=THREADS) for c, p in files.items()}
    prepared = {}
    for column, session in sessions.items():
        shape = tuple(d if d and d > 0 else 1 for d in session.inputs[0].shape[1:])
        prepared[column] = session.prepare_raw(np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32))
        for _ in range(5):
            session.run_raw(prepared[column])
    times: dict[str, list[float]] = {c: [] for c in files}
    for _ in range(rounds):
        for column, session in sessions.items():
            for _ in range(runs):
                start = time.perf_counter()
                session.run_raw(prepared[column])
                times[column].append((time.perf_counter() - start) * 1000)
    for session in sessions.values():
        session.close()
    return {c: float(np.median(v)) for c, v in times.items()}


def why_lines(files: dict[str, Path]) -> list[str]:
    """What each int8 file leaves outside the runtime's int8 path."""
    from edgecompress.runtimes.litert import xnnpack_delegation
    from edgecompress.runtimes.onnxrt import float_islands

    lines = []
    for column in ("litert stock", "litert ours"):
        d = xnnpack_delegation(files[column])
        if d is None:
            lines.append(f"{column}: this interpreter does not list its delegated nodes")
            continue
        lines.append(f"{column}: {d.partitions} XNNPACK part(s)" + (f"; {d.describe()}" if d.splitting else ""))
    for column in ("ort stock", "ort ours"):
        islands = float_islands(files[column])
        text = ", ".join(f"{n}× {op}" for op, n in islands.most_common()) or "none"
        lines.append(f"{column}: float islands between Dequantize/QuantizeLinear: {text}")
    return lines


def ratio_cells(ms: dict[str, float]) -> list[str]:
    cells = []
    for runtime in ("litert", "ort"):
        base = ms[f"{runtime} float"]
        cells.append(f"{base:.2f}")
        for kind in ("stock", "ours"):
            cells.append(f"{ms[f'{runtime} {kind}']:.2f} ({base / ms[f'{runtime} {kind}']:.2f}×)")
    return cells


HEADER = ("| model | LiteRT float ms | LiteRT stock int8 | LiteRT our int8 | ORT float ms | ORT stock int8 "
          "| ORT our int8 | ours vs stock (LiteRT, ORT) |\n|---|---|---|---|---|---|---|---|")  # fmt: skip


def row(name: str, ms: dict[str, float], extra: str = "") -> str:
    vs = f"{ms['litert stock'] / ms['litert ours']:.2f}×, {ms['ort stock'] / ms['ort ours']:.2f}×"
    return f"| {name}{extra} | " + " | ".join(ratio_cells(ms)) + f" | {vs} |"


# --------------------------------------------------------------------------- parts


def part_speed(names, workdir: Path, rounds: int, runs: int, zoo_sizes: bool = False) -> list[str]:
    """``zoo_sizes``: each model as ``benchmarks/zoo.py`` builds it (its size and width), else at 224 px."""
    from zoo import BENCH

    from edgecompress.api import model_inputs
    from edgecompress.models.zoo import build

    what = "zoo.py's sizes and widths" if zoo_sizes else "224 px"
    lines = [f"## Speed: {what}, random weights, batch 1, 2 threads (ms, median; × = speed-up over that runtime's float)",
             "", HEADER]  # fmt: skip
    notes = []
    for name in names:
        started = time.perf_counter()
        model, metadata = build(name, **(BENCH[name][0] if zoo_sizes else {}))
        calibration = model_inputs("digits", metadata.inputs[0].shape, metadata.preprocessing, "train",
                                   samples=CALIBRATION_SAMPLES)  # fmt: skip
        files = six_files(model, calibration, workdir / f"{name}_{'zoo' if zoo_sizes else 224}")
        say(f"{name}: six files in {time.perf_counter() - started:.0f} s; timing")
        ms = time_side_by_side(files, rounds, runs)
        lines.append(row(f"{name} ({metadata.inputs[0].shape[0]} px)" if zoo_sizes else name, ms))
        say(lines[-1])
        notes += [f"- {name}, {line}" for line in why_lines(files)]
    return [*lines, "", *notes]


def part_train(names, workdir: Path) -> None:
    from zoo import BENCH

    from edgecompress._env import import_tensorflow
    from edgecompress.models.train import train_zoo

    import_tensorflow().config.experimental.enable_op_determinism()
    for name in names:
        path = workdir / f"{name}.h5"
        if path.exists():
            say(f"{name}: cached {path}")
            continue
        params, epochs, lr = BENCH[name]
        started = time.perf_counter()
        trained = train_zoo(name, path, None, epochs, 0.1, 32, lr, params, progress=False, force=True)
        say(f"{name}: trained in {time.perf_counter() - started:.0f} s, {trained.metric}")


def part_accuracy(names, zoo_dir: Path, workdir: Path, rounds: int, runs: int) -> list[str]:
    from edgecompress import api
    from edgecompress.artifacts import Artifact
    from edgecompress.calibration.data import load_images
    from edgecompress.models.tasks import evaluate
    from edgecompress.runtimes import open_session

    lines = ["## Zoo classifiers trained on digits: top-1 on the 360 held-out images, and latency at their size",
             "", "| model | float top-1 | LiteRT stock / ours top-1 | ORT stock / ours top-1 |",
             "|---|---|---|---|"]  # fmt: skip
    timing = ["", HEADER]
    for name in names:
        source = zoo_dir / f"{name}.h5"
        if not source.exists():
            say(f"{name}: not trained yet (run --part train); skipped")
            continue
        size = Artifact.open(source).metadata.inputs[0].shape[0]
        test = load_images("digits", "test", (size, size), need_labels=True)
        train = load_images("digits", "train", (size, size))
        stem = workdir / f"{name}_acc"
        exported = api.export(source, stem.with_suffix(".float.onnx"), format="onnx", force=True)
        tfl = api.export(source, stem.with_suffix(".float.tflite"), force=True)
        ours_onnx = api.quantize(source, stem.with_suffix(".ours.onnx"), mode="int8", format="onnx", calib=train,
                                 calib_samples=CALIBRATION_SAMPLES, eval=test, force=True)  # fmt: skip
        ours_tfl = api.quantize(source, stem.with_suffix(".ours.tflite"), mode="int8", calib=train,
                                calib_samples=CALIBRATION_SAMPLES, eval=test, force=True)  # fmt: skip
        meta = exported.output.metadata
        calibration = api.model_inputs(train, meta.inputs[0].shape, meta.preprocessing, samples=CALIBRATION_SAMPLES)
        data = api.model_inputs(test, meta.inputs[0].shape, meta.preprocessing, need_labels=True)
        stock = {"ort stock": stem.with_suffix(".stock.onnx"), "litert stock": stem.with_suffix(".stock.tflite")}
        stock_onnx(exported.output.path, calibration, stock["ort stock"])
        from edgecompress.runtimes.keras_io import load_keras

        stock_tflite(load_keras(source).model, calibration, stock["litert stock"])
        top1 = {}
        for column, path in stock.items():
            with open_session(Artifact.open(path)) as session:
                top1[column] = evaluate(session, data)["top1"]
        keras_top1 = ours_onnx.evaluation.source.metrics["top1"]
        top1["ort ours"] = ours_onnx.evaluation.output.metrics["top1"]
        top1["litert ours"] = ours_tfl.evaluation.output.metrics["top1"]
        cells = [" / ".join(f"{top1[f'{rt} {k}']:.2%} ({(top1[f'{rt} {k}'] - keras_top1) * 100:+.2f})"
                            for k in ("stock", "ours")) for rt in ("litert", "ort")]  # fmt: skip
        lines.append(f"| {name} ({size} px) | {keras_top1:.2%} | {cells[0]} | {cells[1]} |")
        say(lines[-1])
        files = {"litert float": tfl.output.path, "litert stock": stock["litert stock"],
                 "litert ours": ours_tfl.output.path, "ort float": exported.output.path,
                 "ort stock": stock["ort stock"], "ort ours": ours_onnx.output.path}  # fmt: skip
        timing.append(row(name, time_side_by_side(files, rounds, runs), f" ({size} px)"))
        say(timing[-1])
    return lines + timing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("speed", "zoo-speed", "train", "accuracy"), default="speed")
    parser.add_argument("--only", nargs="*", help="Only these zoo entries.")
    parser.add_argument("--rounds", type=int, default=10, help="Interleaved rounds (speed: each file timed in each).")
    parser.add_argument("--runs", type=int, default=20, help="Timed runs per file and round.")
    parser.add_argument("--workdir", type=Path, default=HERE / "out" / "int8_speed")
    parser.add_argument("--zoo-dir", type=Path, default=HERE / "out" / "zoo", help="Trained zoo models (zoo.py's).")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    from edgecompress._env import quiet_python_loggers
    from edgecompress.reports.records import machine_description

    quiet_python_loggers()
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.zoo_dir.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/int8_speed.py " + " ".join(argv if argv is not None else sys.argv[1:])
    header = [f"Command: `{command.strip()}`  ", f"Machine: {machine_description()}; {time.strftime('%Y-%m-%d')}; "
              f"{THREADS} threads, batch 1, {args.rounds} interleaved rounds × {args.runs} runs per file.", ""]  # fmt: skip
    if args.part == "speed":
        lines = part_speed(args.only or SPEED_MODELS, args.workdir, args.rounds, args.runs)
    elif args.part == "zoo-speed":
        lines = part_speed(args.only or OTHER_ZOO, args.workdir, args.rounds, args.runs, zoo_sizes=True)
    elif args.part == "train":
        part_train(args.only or CLASSIFIERS, args.zoo_dir)
        return 0
    else:
        lines = part_accuracy(args.only or CLASSIFIERS, args.zoo_dir, args.workdir, args.rounds, args.runs)
    print("\n".join(header + lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
