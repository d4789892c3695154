"""How much slower is `compress quantize --mode int8` than a bare TFLiteConverter script?

All run as fresh processes on the same MobileNetV2 1.0 (224 px, random weights) and the same 100
calibration images (digits resized to 224 px), once each, and write the same kind of int8 model.
Our command also detects the format, scans the model for unsafe layers, checks the graph is
integer-only, validates the output against the source and writes the metadata sidecar.

Two bare scripts are timed: the textbook ``from_keras_model`` one, and one converting a concrete
function like we do (``from_keras_model`` first saves a SavedModel, most of its time). The
overhead of our checks is the ratio against the second.

    python benchmarks/ptq_overhead.py          # target: ratio ≤ 1.15
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

BARE_SCRIPT = textwrap.dedent(
    """
    import os, sys
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np
    import tensorflow as tf
    import tf_keras

    model = tf_keras.models.load_model(sys.argv[1], compile=False)
    images = np.load(sys.argv[2])["x"].astype(np.float32) / 127.5 - 1.0

    def representative():
        for image in images:
            yield [image[None]]

    if sys.argv[4] == "keras":
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
    else:
        spec = tf.TensorSpec((None, *model.inputs[0].shape[1:]), tf.float32)
        function = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
        converter = tf.lite.TFLiteConverter.from_concrete_functions([function])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    open(sys.argv[3], "wb").write(converter.convert())
    """
)


def prepare(workdir: Path, size: int, samples: int) -> tuple[Path, Path]:
    import edgecompress  # noqa: F401
    from edgecompress.calibration.data import load_digits
    from edgecompress.calibration.preprocessing import resize
    from edgecompress.models.train import save_model
    from edgecompress.models.zoo import build

    model, metadata = build("mobilenet_v2", input_size=size, alpha=1.0, classes=1000)
    model_path = save_model(model, workdir / "mobilenet_v2_224.h5", metadata)
    digits = load_digits("train").images[:samples, :, :, None].repeat(3, axis=-1).astype(np.float32)
    images = np.clip(resize(digits, size, size), 0, 255).round().astype(np.uint8)
    calib = workdir / "calib.npz"
    np.savez(calib, x=images)
    return model_path, calib


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--samples", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ptq-overhead-") as tmp:
        workdir = Path(tmp)
        model, calib = prepare(workdir, args.size, args.samples)
        bare_script = workdir / "bare.py"
        bare_script.write_text(BARE_SCRIPT)
        compress = str(Path(sys.executable).with_name("compress"))
        bare = timed([sys.executable, str(bare_script), str(model), str(calib), str(workdir / "bare.tflite"), "keras"])
        bare_fn = timed(
            [sys.executable, str(bare_script), str(model), str(calib), str(workdir / "bare_fn.tflite"), "function"]
        )
        ours = timed(
            [compress, "quantize", str(model), "--mode", "int8", "--calib", str(calib),
             "--calib-samples", str(args.samples), "-o", str(workdir / "ours.tflite"), "-q"]
        )
        bare_size = (workdir / "bare.tflite").stat().st_size
        ours_size = (workdir / "ours.tflite").stat().st_size
    print(f"MobileNetV2 1.0 at {args.size} px, {args.samples} calibration samples, one run each (wall time):")
    print(f"  bare script, from_keras_model        : {bare:6.1f} s  ({bare_size / 1e6:.2f} MB)")
    print(f"  bare script, from_concrete_functions : {bare_fn:6.1f} s")
    print(f"  compress quantize --mode int8        : {ours:6.1f} s  ({ours_size / 1e6:.2f} MB)")
    print(f"  ratio vs from_keras_model script     : {ours / bare:.3f}  (target ≤ 1.15)")
    print(f"  ratio vs concrete-function script    : {ours / bare_fn:.3f}  (our checks' overhead)")


if __name__ == "__main__":
    main()
