"""Post-training quantization on real data: the foundation's acceptance figures.

Trains (or reuses) the demo model — MobileNetV2 α 0.35 at 96 px on scikit-learn's digits — writes
every PTQ variant to TFLite and ONNX, measures each in the runtime it deploys with, and prints the
size ratios against the float TFLite file and the top-1 change against the float model.

    python benchmarks/ptq_digits.py [--out benchmarks/out/digits]
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/digits"))
    parser.add_argument("--epochs", type=int, default=15)
    args = parser.parse_args()

    from edgecompress import api
    from edgecompress.demo import run_demo
    from edgecompress.reports.tables import markdown_table

    records = run_demo(args.out, epochs=args.epochs, runs=100, say=print, progress=False)
    print(markdown_table(records))
    by_variant = {r.variant: r for r in records}
    float_tflite = by_variant["float (tflite)"]
    source = by_variant["source (keras-h5)"]
    print(f"\nfloat Keras top-1 {source.metric_value:.2%} on digits:test (360 images)")
    for name in ("dynamic (tflite)", "float16 (tflite)", "int8 (tflite)", "int16x8 (tflite)",
                 "dynamic (onnx)", "float16 (onnx)", "int8 (onnx)"):
        record = by_variant[name]
        ratio = float_tflite.size_bytes / record.size_bytes if "tflite" in name else (
            by_variant["float (onnx)"].size_bytes / record.size_bytes
        )
        print(f"{name:18s} size ratio vs float {ratio:4.2f}×   top-1 {record.metric_value:.2%} "
              f"({(record.metric_value - source.metric_value) * 100:+.2f} points)")
    per_tensor = api.quantize(
        args.out / "digits_mobilenet_v2.h5", args.out / "digits_mobilenet_v2.int8-per-tensor.tflite",
        mode="int8", calib="digits", per_channel=False, eval="digits", force=True,
    )
    ratio = float_tflite.size_bytes / per_tensor.output.size_bytes
    top1 = per_tensor.evaluation["output"]["top1"]
    print(f"{'int8 per-tensor':18s} size ratio vs float {ratio:4.2f}×   top-1 {top1:.2%} "
          f"({(top1 - source.metric_value) * 100:+.2f} points)")


if __name__ == "__main__":
    main()
