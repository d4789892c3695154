"""Int8 that keeps its accuracy: float, default int8 and the best int8 our tools find, per zoo model.

    python benchmarks/ptq_hard.py --train-only mobilenet_v2   # train (and cache) one model, nothing else
    python benchmarks/ptq_hard.py --only blazepose_landmark    # measure some models
    python benchmarks/ptq_hard.py                              # every model → a markdown table on stdout
    python benchmarks/ptq_hard.py --per-tensor-demo            # MobileNetV2 per-tensor, with and without CLE + BC
    python benchmarks/ptq_hard.py --inspect-timing             # `compress inspect` vs `compress quantize`, 224 px

Models and training are the zoo benchmark's (``benchmarks/zoo.py``: same sizes, epochs, seeds,
deterministic ops), cached in ``benchmarks/out/ptq_hard/``. For each model and format (TFLite, ONNX):

- **float**: the float file; **default int8**: ``compress quantize --mode int8`` as it was
  (per-channel, min/max from the converter's or ONNX Runtime's calibrator, 100 training images);
- **best int8**: chosen by the metric on the *training split* (the images the model learned from and
  was validated on; never the test split), then reported on the test split; a lead of one training
  image or less is a tie, and ties go to fewer options, then the smaller file. The 120–144
  validation images alone were too few: on the landmark
  model the same candidates ranked differently on validation and test by ±0.5 PCK points. Candidates:
  calibration methods (minmax with our observers, percentile 99.99, entropy, mse),
  ``--equalize --bias-correction``, and, if the best of those still loses more than half the issue's
  target on the training split, ``--auto-keep-float --max-drop`` that half on top of it.

Metric, file size and median LiteRT / ONNX Runtime latency (batch 1, 2 threads, 50 runs) per cell.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from edgecompress._env import configure_environment  # noqa: E402

configure_environment()

MODELS = ("mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "resnet18", "inception_v3", "unet", "blazepose_landmark")
WORKDIR = HERE / "out" / "ptq_hard"
#: validation split of train_zoo (models/train.py): the same seeded 10 % it trained without
VAL_SPLIT, SEED = 0.1, 0
CALIB_SAMPLES = 100
THREADS, RUNS = 2, 50


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def trained(name: str, workdir: Path = WORKDIR) -> Path:
    """The zoo benchmark's model, trained once (deterministically) and cached."""
    from zoo import BENCH

    from edgecompress.models.train import train_zoo

    path = workdir / f"{name}.h5"
    if path.exists():
        return path
    workdir.mkdir(parents=True, exist_ok=True)
    params, epochs, lr = BENCH[name]
    started = time.perf_counter()
    result = train_zoo(name, path, None, epochs, VAL_SPLIT, 32, lr, params, progress=False, force=True, seed=SEED)
    say(f"{name}: trained {epochs} epochs in {time.perf_counter() - started:.0f} s; validation {result.scores}")
    return path


#: options tried for "best int8", in order (the first, no options, is the default conversion)
CANDIDATES = (
    ("default", {}),
    ("minmax", {"calibration": "minmax"}),
    ("percentile", {"calibration": "percentile"}),
    ("entropy", {"calibration": "entropy"}),
    ("mse", {"calibration": "mse"}),
    ("cle+bc", {"equalize": True, "bias_correction": True}),
)
#: the issue's targets (points of the primary metric)
TARGET = {"keypoints": 1.0}
DEFAULT_TARGET = 0.3


def data(name: str):
    """(training split, its validation part, test split) ImageSets of a zoo entry."""
    from zoo import BENCH

    from edgecompress.calibration.data import load_images
    from edgecompress.models.zoo import ZOO

    entry = ZOO.get(name)
    size = BENCH[name][0]["input_size"]
    train = load_images(entry.embedded_data, "train", (size, size), need_labels=True)
    _, validation = train.split(VAL_SPLIT, SEED)
    test = load_images(entry.embedded_data, "test", (size, size), need_labels=True)
    return train, validation, test


def cell(report, metric: str, path: Path) -> dict:
    from zoo import latency_ms

    return {"metric": report.evaluation.output.metrics[metric], "size": path.stat().st_size, "latency_ms": latency_ms(path),
            "float_keras": report.evaluation.source.metrics[metric]}  # fmt: skip


FORMATS = ("tflite", "onnx")


def measure(name: str, workdir: Path, formats: tuple[str, ...] = FORMATS) -> dict:
    """Float, default int8 and the best int8 (chosen on the training split) per format; each cached as JSON."""
    out: dict = {}
    for fmt in formats:
        cache = workdir / f"{name}.{fmt}.results.json"
        if not cache.exists():
            cache.write_text(json.dumps(_measure(name, workdir, fmt), indent=2, default=str))
        result = json.loads(cache.read_text())
        out.update({k: v for k, v in result.items() if k not in FORMATS}, **{fmt: result[fmt]})
    return out


def _measure(name: str, workdir: Path, fmt: str) -> dict:
    from edgecompress import api
    from edgecompress.errors import EdgeCompressError
    from edgecompress.models.tasks import TASKS
    from edgecompress.models.zoo import ZOO

    source = trained(name, workdir)
    task = ZOO.get(name).task
    metric = TASKS.get(task).primary_metric
    train, _, test = data(name)
    limit = TARGET.get(task, DEFAULT_TARGET)
    out: dict = {"name": name, "task": task, "metric": metric, "target": limit}
    say(f"{name} {fmt}")
    files = workdir / name / fmt
    files.mkdir(parents=True, exist_ok=True)
    path = files / f"float.{fmt}"
    result = {"float": cell(api.export(source, path, format=fmt, eval=test, force=True), metric, path)}
    tried, failed = [], []
    for label, options in CANDIDATES:
        path = files / f"{label}.{fmt}"
        started = time.perf_counter()
        try:
            report = api.quantize(source, path, mode="int8", format=fmt, calib=train, calib_samples=CALIB_SAMPLES,
                                  eval=train, force=True, **options)  # fmt: skip
        except EdgeCompressError as exc:  # e.g. entropy ranges the export check refuses: a candidate less
            failed.append({"label": label, "error": str(exc)})
            say(f"  {label}: failed: {exc}")
            continue
        tried.append({"label": label, "options": options, "selection": report.evaluation.output.metrics[metric],
                      "size": path.stat().st_size, "seconds": time.perf_counter() - started})  # fmt: skip
        float_selection = report.evaluation.source.metrics[metric]
        say(f"  {label}: training split {metric} {tried[-1]['selection']:.4f} (float {float_selection:.4f})")
    tolerance = 1.0 / len(train.images)  # one training sample's worth of the metric
    best = _pick(tried, tolerance)
    if (float_selection - best["selection"]) * 100 > limit / 2:
        label = f"{best['label']}+keep-float"
        path = files / f"{label}.{fmt}"
        started = time.perf_counter()
        report = api.quantize(source, path, mode="int8", format=fmt, calib=train, calib_samples=CALIB_SAMPLES,
                              eval=train, force=True, auto_keep_float=True, max_drop=limit / 2,
                              **best["options"])  # fmt: skip
        search = report.details["keep_float_search"]
        tried.append({"label": label, "options": {**best["options"], "keep_float": search["kept"]},
                      "selection": report.evaluation.output.metrics[metric], "size": path.stat().st_size,
                      "seconds": time.perf_counter() - started, "search": search})  # fmt: skip
        say(f"  {label}: kept {search['kept']} training split {metric} {tried[-1]['selection']:.4f}")
        best = _pick(tried, tolerance)
    for tag, chosen in (("default", tried[0]), ("best", best)):
        path = files / f"{tag}.test.{fmt}"
        report = api.quantize(source, path, mode="int8", format=fmt, calib=train, calib_samples=CALIB_SAMPLES,
                              eval=test, force=True, **chosen["options"])  # fmt: skip
        result[tag] = {**cell(report, metric, path), "label": chosen["label"], "options": chosen["options"]}
    result["tried"], result["failed"] = tried, failed
    out[fmt] = result
    return out


def _pick(tried: list[dict], tolerance: float) -> dict:
    """The best candidate on the training split, where a lead of at most ``tolerance`` (one training
    sample) is a tie, and ties go to fewer options, then the higher metric, then the smaller file.
    A one-image lead on images the model learned from is noise: it once made CLE + bias correction
    MobileNetV1's pick, which then lost three test images the default kept."""
    top = max(t["selection"] for t in tried)
    close = [t for t in tried if t["selection"] >= top - tolerance - 1e-12]
    return min(close, key=lambda t: (len(t["options"]), -t["selection"], t["size"]))


def render(rows: list[dict], command: str) -> str:
    from edgecompress.reports.records import machine_description

    lines = [
        f"Command: `{command}`  ",
        f"Machine: {machine_description()}; {dt.date.today().isoformat()}; latency = median of {RUNS} runs, batch 1, "
        f"{THREADS} threads (LiteRT / ONNX Runtime).  ",
        "Metric on the test split; best int8 chosen by the metric on the training split (never the test split).",
        "",
        "| model | metric | format | float | default int8 | best int8 | best int8 is | Δ default / best (points) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        for fmt in (f for f in FORMATS if f in row):
            r = row[fmt]
            cells = [f"{r[k]['metric']:.2%}<br>{r[k]['size'] / 1e6:.2f} MB, {r[k]['latency_ms']:.2f} ms"
                     for k in ("float", "default", "best")]  # fmt: skip
            base = r["float"]["metric"]
            deltas = f"{(r['default']['metric'] - base) * 100:+.2f} / {(r['best']['metric'] - base) * 100:+.2f}"
            lines.append(f"| {row['name']} | {row['metric']} | {fmt} | {' | '.join(cells)} | {_describe(r['best'])} | "
                         f"{deltas} |")  # fmt: skip
    failures = [f"- {row['name']} {fmt}, {f['label']}: {f['error']}" for row in rows
                for fmt in FORMATS if fmt in row for f in row[fmt].get("failed", [])]  # fmt: skip
    if failures:
        lines += ["", "Candidates that failed (not counted):", *failures]
    return "\n".join(lines)


def _describe(best: dict) -> str:
    options = best["options"]
    if not options:
        return "default"
    parts = []
    if options.get("calibration"):
        parts.append(options["calibration"])
    if options.get("equalize"):
        parts.append("CLE + bias corr.")
    kept = options.get("keep_float") or []
    if len(kept) > 8:  # a whole stage: name the stages (the layer-name stem before the first "_")
        stems = ", ".join(dict.fromkeys(name.split("_")[0] for name in kept))
        parts.append(f"{len(kept)} layers in float, from the stages {stems}")
    elif kept:
        parts.append("float: " + ", ".join(kept))
    return "; ".join(parts)


#: the per-tensor demo's MobileNetV2: the zoo model at α 1.0, trained as ImageNet recipes train (SGD with
#: Nesterov momentum, learning rate 0.1, cosine decay, weight decay 4e-5) instead of the zoo's Adam at 2e-3.
#: At that learning rate some ReLU6 channels die; the depthwise channels they feed then see an all-zero
#: input, their BatchNorm's running variance goes to ~0 (1e-18 and below), and folding multiplies those
#: channels by γ/√(σ²+ε) ≈ 30: the mechanism of ImageNet MobileNetV2's wide ranges (Nagel et al. 2019, Fig. 2).
PER_TENSOR_PARAMS = {"input_size": 64, "alpha": 1.0, "classes": 10}
PER_TENSOR_TRAINING = {"epochs": 15, "lr": 0.1, "optimizer": "sgd", "weight_decay": 4e-5, "batch_size": 32}


def per_tensor_model(workdir: Path = WORKDIR) -> Path:
    """The per-tensor demo's MobileNetV2 (see PER_TENSOR_TRAINING), trained once (deterministically) and cached."""
    from edgecompress.models.train import train_zoo

    path = workdir / "mobilenet_v2_sgd.h5"
    if path.exists():
        return path
    workdir.mkdir(parents=True, exist_ok=True)
    t = PER_TENSOR_TRAINING
    started = time.perf_counter()
    result = train_zoo("mobilenet_v2", path, None, t["epochs"], VAL_SPLIT, t["batch_size"], t["lr"], PER_TENSOR_PARAMS,
                       progress=False, force=True, seed=SEED, optimizer=t["optimizer"],
                       weight_decay=t["weight_decay"])  # fmt: skip
    say(f"mobilenet_v2 (SGD): trained {t['epochs']} epochs in {time.perf_counter() - started:.0f} s; "
        f"validation {result.scores}")  # fmt: skip
    return path


def _unchecked_top1(source: Path, calib, test, options: dict) -> float:
    """Top-1 of the int8 file the quantize pass would write (weight fixes included), measured even where
    its export check refuses it."""
    from edgecompress._env import import_tf_keras
    from edgecompress.artifacts import read_sidecar
    from edgecompress.compress.convert import keras_to_tflite
    from edgecompress.compress.quantize import QuantizeConfig, weight_fixes
    from edgecompress.models.inputs import model_inputs
    from edgecompress.models.tasks import evaluate
    from edgecompress.runtimes.keras_io import load_keras
    from edgecompress.runtimes.litert import LiteRTSession, interpreter_class

    loaded = load_keras(source).model
    model = import_tf_keras().models.clone_model(loaded)  # loaded models are shared: fix a copy
    model.set_weights(loaded.get_weights())
    metadata = read_sidecar(source)
    shape, pre = metadata.inputs[0].shape, metadata.preprocessing
    calibration = model_inputs(calib, shape, pre, samples=CALIB_SAMPLES)
    config = QuantizeConfig(mode="int8", **options)
    weight_fixes(model, config, calibration)
    data = keras_to_tflite(model, "int8", calibration, config.per_channel)
    session = LiteRTSession(interpreter_class()[0](model_content=data), "cpu", THREADS)
    return evaluate(session, model_inputs(test, shape, pre, need_labels=True))["top1"]


def per_tensor_demo(workdir: Path) -> str:
    """MobileNetV2 with one weight scale per tensor: plain, and with the weight fixes, on digits:test."""
    import numpy as np

    from edgecompress import api
    from edgecompress.calibration.data import load_images
    from edgecompress.compress.equalize import _bn_params, fold_batchnorm
    from edgecompress.compress.kerasgraph import channel_spread, is_linear, out_channel_absmax
    from edgecompress.errors import ValidationError
    from edgecompress.models.zoo import ZOO
    from edgecompress.runtimes.keras_io import load_keras

    source = per_tensor_model(workdir)
    size = PER_TENSOR_PARAMS["input_size"]
    entry = ZOO.get("mobilenet_v2")
    train = load_images(entry.embedded_data, "train", (size, size), need_labels=True)
    test = load_images(entry.embedded_data, "test", (size, size), need_labels=True)
    model = load_keras(source).model
    variances = [_bn_params(layer)[3] for layer in model.layers if type(layer).__name__ == "BatchNormalization"]
    still = sum(int(np.sum(v < 1e-4)) for v in variances)
    fold_batchnorm(model)  # what the converter does: the per-channel ranges int8 actually sees
    spreads = sorted(((channel_spread(out_channel_absmax(layer)), layer.name) for layer in model.layers
                      if is_linear(layer)), reverse=True)  # fmt: skip
    rows = []
    variants = (
        ("per-channel (default)", {}),
        ("per-tensor", {"per_channel": False}),
        ("per-tensor + equalize", {"per_channel": False, "equalize": True}),
        ("per-tensor + bias correction", {"per_channel": False, "bias_correction": True}),
        ("per-tensor + equalize + bias correction", {"per_channel": False, "equalize": True, "bias_correction": True}),
        ("per-tensor + equalize (relu6=replace) + bias correction",
         {"per_channel": False, "equalize": True, "bias_correction": True, "relu6": "replace"}),
    )  # fmt: skip
    measured = []  # (label, top-1, spread, note)
    for label, options in variants:
        path = workdir / "per_tensor" / f"{len(measured)}.tflite"
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            report = api.quantize(source, path, mode="int8", calib=train, calib_samples=CALIB_SAMPLES, eval=test,
                                  force=True, **options)  # fmt: skip
        except ValidationError as exc:
            check = str(exc).split(": ", 1)[1].split(" (check")[0].replace("|", "\\|")  # inside a markdown table
            measured.append((label, _unchecked_top1(source, train, test, options), "-",
                             f"refused by the export check ({check}); top-1 of the file measured anyway"))  # fmt: skip
            continue
        before = report.evaluation.source.metrics["top1"]
        eq = (report.details.get("fixes") or {}).get("equalize")
        spread = f"{eq['spread_before']:.0f}× → {eq['spread_after']:.1f}×" if eq else "-"
        measured.append((label, report.evaluation.output.metrics["top1"], spread, ""))
    rows = [f"| {label} | {top1:.2%} | {(top1 - before) * 100:+.2f} | {spread} | {note} |"
            for label, top1, spread, note in measured]  # fmt: skip
    t = PER_TENSOR_TRAINING
    head = [f"MobileNetV2 (zoo, {size} px, α {PER_TENSOR_PARAMS['alpha']}) trained on digits with SGD (Nesterov momentum "
            f"0.9, learning rate {t['lr']}, cosine decay, weight decay {t['weight_decay']:g}, {t['epochs']} epochs); "
            f"float Keras top-1 {before:.2%} on digits:test (360).",
            "How its channel ranges came to differ: training at this learning rate left some ReLU6 channels dead, so "
            f"the depthwise channels they feed see an all-zero input ({still} BatchNorm channels with running variance "
            "< 1e-4) and BatchNorm folding multiplies them by γ/√(σ²+ε) (Nagel et al. 2019, Fig. 2).",
            "Folded per-output-channel weight ranges (max / median), widest: "
            + ", ".join(f"{n} {v:.0f}×" for v, n in spreads[:4]) + ".", "",
            "| int8 TFLite | top-1 | Δ points | worst channel spread of equalized layers | note |",
            "|---|---|---|---|---|"]  # fmt: skip
    return "\n".join(head + rows)


def inspect_timing(runs: int = 2) -> str:
    """Wall time of `compress inspect` vs `compress quantize --mode int8`, MobileNetV2 1.0 at 224 px."""
    import subprocess
    import tempfile

    from ptq_overhead import prepare

    compress = str(Path(sys.executable).with_name("compress"))
    with tempfile.TemporaryDirectory(prefix="ptq-hard-") as tmp:
        workdir = Path(tmp)
        model, calib = prepare(workdir, 224, CALIB_SAMPLES)
        common = [str(model), "--calib", str(calib), "--calib-samples", str(CALIB_SAMPLES)]
        commands = {
            "quantize": [compress, "quantize", *common, "--mode", "int8", "-o", str(workdir / "q.tflite"), "--force", "-q"],
            "inspect": [compress, "inspect", *common, "--json"],
        }
        times: dict[str, list[float]] = {k: [] for k in commands}
        for _ in range(runs):
            for key, command in commands.items():
                started = time.perf_counter()
                subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                times[key].append(time.perf_counter() - started)
    quantize, inspect = min(times["quantize"]), min(times["inspect"])
    return (f"MobileNetV2 1.0, 224 px, random weights, {CALIB_SAMPLES} calibration images (digits resized), best of "
            f"{runs} fresh processes each:\n"
            f"  compress quantize --mode int8 : {quantize:6.1f} s  (runs {', '.join(f'{t:.1f}' for t in times['quantize'])})\n"
            f"  compress inspect              : {inspect:6.1f} s  (runs {', '.join(f'{t:.1f}' for t in times['inspect'])})\n"
            f"  ratio                         : {inspect / quantize:.2f}  (target ≤ 1.5)")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-only", nargs="*", help="Only train (and cache) these models.")
    parser.add_argument("--only", nargs="*", help="Measure only these models.")
    parser.add_argument("--format", choices=FORMATS, help="Measure only this format (results are cached per format).")
    parser.add_argument("--per-tensor-demo", action="store_true", help="MobileNetV2 per-tensor, plain and with fixes.")
    parser.add_argument("--inspect-timing", action="store_true", help="`compress inspect` vs `compress quantize`, 224 px.")
    parser.add_argument("--workdir", type=Path, default=WORKDIR)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from edgecompress._env import import_tensorflow, quiet_python_loggers

    import_tensorflow().config.experimental.enable_op_determinism()
    quiet_python_loggers()
    if args.train_only is not None:
        for name in args.train_only or MODELS:
            trained(name, args.workdir)
        return 0
    if args.per_tensor_demo:
        print(per_tensor_demo(args.workdir))
        return 0
    if args.inspect_timing:
        print(inspect_timing())
        return 0
    formats = (args.format,) if args.format else FORMATS
    rows = [measure(name, args.workdir, formats) for name in (args.only or MODELS)]
    command = "python benchmarks/ptq_hard.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(render(rows, command.strip()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
