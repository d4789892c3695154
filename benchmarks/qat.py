"""QAT on the digits demo model: float vs post-training int8 vs QAT int8, on the same held-out digits.

The demo model is MobileNetV2 α 0.35 at 96 px trained on scikit-learn's digits (see
``edgecompress/demo.py``); it is trained here unless it exists (or ``--source`` names a trained
copy, which is read, never written). Acceptance (issue 5): QAT int8 top-1 within 0.5 points of
float, and not below post-training int8 by more than one test sample.

    nice -n 10 python benchmarks/qat.py [--out benchmarks/out/digits] [--source trained.h5]
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/digits"))
    parser.add_argument("--source", type=Path, help="an already trained demo model (.h5 with its sidecar) to copy")
    parser.add_argument("--epochs", type=int, default=15, help="float training epochs when the model is trained here")
    parser.add_argument("--qat-epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=3e-5)
    args = parser.parse_args()

    from edgecompress import api
    from edgecompress.demo import train_demo_model
    from edgecompress.reports.tables import human_bytes

    args.out.mkdir(parents=True, exist_ok=True)
    source = args.out / "digits_mobilenet_v2.h5"
    if args.source:
        shutil.copyfile(args.source, source)
        shutil.copyfile(f"{args.source}.json", f"{source}.json")
    elif not source.exists():
        train_demo_model(source, args.epochs, print, progress=False)
    started = time.perf_counter()
    run = api.qat(source, args.out / "digits_mobilenet_v2.qat.tflite", "digits", epochs=args.qat_epochs,
                  lr=args.lr, calib_samples=200, force=True, progress=False)  # fmt: skip
    seconds = time.perf_counter() - started
    ev, ptq = run.evaluation, run.report.ptq_int8
    scores = {"float": ev.source, "ptq_int8": ptq, "qat_int8": ev.output}
    samples = ev.samples
    top1 = {key: s.metrics["top1"] for key, s in scores.items()}
    print(f"QAT of {source} ({args.qat_epochs} epochs, lr {args.lr:g}) took {seconds:.0f} s")
    print(f"held-out data: {ev.data}")
    print("| variant | runtime | size | top-1 | vs float |")
    print("|---|---|---|---|---|")
    for key, s in scores.items():
        print(f"| {key} | {s.runtime} | {human_bytes(s.size_bytes)} | {top1[key]:.2%} "
              f"| {(top1[key] - top1['float']) * 100:+.2f} points |")  # fmt: skip
    within = abs(top1["qat_int8"] - top1["float"]) * 100 <= 0.5 + 1e-9
    not_below = top1["qat_int8"] >= top1["ptq_int8"] - 1.0 / samples - 1e-9
    print(f"QAT int8 within 0.5 points of float: {'yes' if within else 'NO'} "
          f"({(top1['qat_int8'] - top1['float']) * 100:+.2f} points)")
    print(f"QAT int8 not below PTQ int8 by more than one of {samples} samples: {'yes' if not_below else 'NO'} "
          f"({round((top1['qat_int8'] - top1['ptq_int8']) * samples):+d} samples)")


if __name__ == "__main__":
    main()
