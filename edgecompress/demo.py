"""`compress demo`: the whole toolkit on real data in a few minutes.

Trains a MobileNetV2 (α 0.35, 96 px) on scikit-learn's digits, writes every post-training variant
to TFLite and ONNX, and benchmarks them all with accuracy on the held-out digits.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from edgecompress import api
from edgecompress.artifacts import read_sidecar
from edgecompress.reports.records import BenchmarkRecord
from edgecompress.reports.tables import human_bytes

DEMO_MODEL = {"input_size": 96, "alpha": 0.35, "classes": 10}
#: (tag, format, mode); mode None is the float export.
VARIANTS = [
    ("float", "tflite", None),
    ("dynamic", "tflite", "dynamic"),
    ("float16", "tflite", "float16"),
    ("int8", "tflite", "int8"),
    ("int16x8", "tflite", "int16x8"),
    ("float", "onnx", None),
    ("dynamic", "onnx", "dynamic"),
    ("float16", "onnx", "float16"),
    ("int8", "onnx", "int8"),
]


def train_demo_model(path: Path, epochs: int, say: Callable[[str], None], progress: bool) -> Path:
    from edgecompress.models.train import accuracy, save_model, train_classifier
    from edgecompress.models.zoo import build

    model, metadata = build("mobilenet_v2", **DEMO_MODEL)
    metadata = dataclasses.replace(metadata, labels=tuple(str(i) for i in range(10)))
    metadata.extra["model_name"] = "digits_mobilenet_v2"
    shape = metadata.inputs[0].shape
    train = api.model_inputs("digits", shape, metadata.preprocessing, split="train")
    test = api.model_inputs("digits", shape, metadata.preprocessing, split="test")
    say(f"training MobileNetV2 α 0.35 at 96 px on {train.source} for {epochs} epochs")
    train_classifier(model, train, test, epochs=epochs, lr=2e-3, progress=progress)
    say(f"float Keras top-1 on {test.source}: {accuracy(model, test):.2%}")
    metadata.extra["demo_epochs"] = epochs
    return save_model(model, path, metadata)


def run_demo(
    output_dir: Path, epochs: int = 15, runs: int = 100, say: Callable[[str], None] = print, progress: bool = True
) -> list[BenchmarkRecord]:
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    source = output_dir / "digits_mobilenet_v2.h5"
    existing = read_sidecar(source) if source.exists() else None
    if existing and existing.extra.get("demo_epochs") == epochs:
        say(f"reusing the trained model {source} (delete it to retrain)")
    else:
        train_demo_model(source, epochs, say, progress)
    outputs = [source]
    for tag, fmt, mode in VARIANTS:
        target = output_dir / f"digits_mobilenet_v2.{tag}.{fmt}"
        say(f"{'quantizing' if mode else 'exporting'} → {target.name}")
        if mode is None:
            report = api.export(source, target, format=fmt, eval="digits", force=True)
        else:
            calib = "digits" if mode in ("int8", "int16x8") else None
            report = api.quantize(source, target, mode=mode, format=fmt, calib=calib, eval="digits", force=True)
        say(f"  {report.sizes.describe(human_bytes)}; check: {report.report.check.max_abs_diff:.3g} max |Δ|")
        outputs.append(report.output.path)
    say(f"benchmarking {len(outputs)} models (2 threads, {runs} runs each, accuracy on digits:test)")
    return api.bench(outputs, threads=2, runs=runs, eval="digits", progress=progress)
