"""A binarized digits classifier next to its float and int8 versions: MACs, size, agreement, accuracy, latency.

Trains a float BinaryNet-style CNN on scikit-learn's digits (32 px, grey), exports float and
full-int8 TFLite, binarizes it with Larq (distilled from the float model) to a bit-packed LCE
TFLite, and benchmarks all three. Targets (issue 5): ≥ 90 % of convolution MACs binary, the LCE
file ≥ 8× smaller than the float TFLite, LCE outputs equal to the Larq model's within tolerance.

LCE's optimized binary kernels are for 64-bit ARM; on x86 it runs reference kernels, so the LCE
latency printed here is slower than int8 and says nothing about a Raspberry Pi or a phone.

    nice -n 10 python benchmarks/binarize.py [--out benchmarks/out/binarize]
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/binarize"))
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=10, help="float training epochs")
    parser.add_argument("--binary-epochs", type=int, default=15, help="distillation epochs")
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()

    from edgecompress import api
    from edgecompress.artifacts import InputSpec, Metadata
    from edgecompress.models.binarynet import binarynet_cnn
    from edgecompress.models.train import accuracy, save_model, train_classifier
    from edgecompress.models.zoo import SYMMETRIC
    from edgecompress.reports.tables import human_bytes
    from edgecompress.runtimes.lce import LCERuntime

    args.out.mkdir(parents=True, exist_ok=True)
    shape = (args.size, args.size, 1)
    preprocessing = dataclasses.replace(SYMMETRIC, color="gray")
    source = args.out / "digits_bnn.h5"
    model = binarynet_cnn(args.size, 10, channels=1, width=args.width)
    metadata = Metadata(task="classification", inputs=(InputSpec(shape),), preprocessing=preprocessing,
                        labels=tuple(str(i) for i in range(10)), extra={"model_name": "digits_bnn"})  # fmt: skip
    train = api.model_inputs("digits", shape, preprocessing, split="train")
    test = api.model_inputs("digits", shape, preprocessing, split="test")
    train_classifier(model, train, test, epochs=args.epochs, lr=3e-3, progress=False)
    print(f"float Keras top-1 {accuracy(model, test):.2%} on {test.source}")
    save_model(model, source, metadata)

    float_tflite = api.export(source, args.out / "digits_bnn.float.tflite", force=True).output
    int8 = api.quantize(source, args.out / "digits_bnn.int8.tflite", mode="int8", calib="digits", force=True).output
    report = api.binarize(source, args.out / "digits_bnn.binary.tflite", "digits", epochs=args.binary_epochs,
                          force=True, progress=False)  # fmt: skip
    d = report.details
    macs, check = d["macs"], d["check"]
    check["top1_agreement"] = d["top1_agreement"]
    ratio = float_tflite.size_bytes / report.output.size_bytes
    print(f"binarized layers: {', '.join(d['binarized_layers'])}; float: {', '.join(d['float_layers'])}")
    print(f"binary MACs: {macs['conv_binary_share']:.1%} of convolution MACs ({macs['conv_macs_binary']:,} of "
          f"{macs['conv_macs_binary'] + macs['conv_macs_float']:,}), {macs['binary_share']:.1%} of all")
    print(f"size: float TFLite {human_bytes(float_tflite.size_bytes)}, int8 {human_bytes(int8.size_bytes)}, "
          f"LCE {human_bytes(report.output.size_bytes)} → {ratio:.1f}× smaller than float (target ≥ 8×)")
    print(f"LCE vs Larq on {check['samples']} {check['inputs_from']}: max |Δ| {check['max_abs_diff']:.3g}, "
          f"mean |Δ| {check['mean_abs_diff']:.3g} ({check['relative']:.3%} of the output range, tolerance "
          f"{check['tolerance']:.0%}); top-1 agreement {check['top1_agreement']:.0%}")
    records = api.bench([source, float_tflite.path, int8.path, report.output.path], threads=2, runs=args.runs,
                        eval="digits")  # fmt: skip
    print("| variant | runtime | size | top-1 | p50 latency |")
    print("|---|---|---|---|---|")
    for r in records:
        if r.status != "ok":
            print(f"| {r.variant} | {r.runtime} | {human_bytes(r.size_bytes)} | {r.status}: {r.note} | |")
            continue
        print(f"| {r.variant} | {r.runtime} | {human_bytes(r.size_bytes)} | {r.metric_value:.2%} "
              f"| {r.latency_ms_p50:.3f} ms |")  # fmt: skip
    machine = f"{platform.machine()} ({platform.processor() or 'unknown CPU'}), 2 threads, batch 1"
    kernels = "optimized ARM" if LCERuntime.optimized_here() else "reference (non-ARM) LCE"
    print(f"latency measured on {machine}; LCE used {kernels} kernels. LCE's fast binary kernels are for "
          "64-bit ARM, so this is no estimate of a Raspberry Pi or phone; on x86 binarization wins on size only.")


if __name__ == "__main__":
    main()
