"""Pruning on real models: the acceptance figures of `compress prune`.

1. Unstructured 50 % (TFMOT, polynomial schedule by default) on the demo model — MobileNetV2 α 0.35 at 96 px
   trained on digits: measured sparsity over prunable weights, top-1 before / after fine-tuning,
   float TFLite gzip size against the unpruned model's (targets: 50 ± 1 %, within 1 point, ≤ 0.65×).
2. Channel pruning 30 % on zoo models — ResNet-18, MobileNetV2 (the demo model) and U-Net —
   parameters, MACs, LiteRT latency (float TFLite, XNNPACK, 2 threads, batch 1) and task metric
   against the source (targets: params −25 % or more, latency below the source, metric within 2 points).

    nice -n 10 python benchmarks/prune.py [--out benchmarks/out/prune] [--distill no|yes|both]
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

#: (label, zoo name, params, data, training epochs)
CHANNEL_MODELS = [
    ("resnet18", "resnet18", {"input_size": 32, "alpha": 0.5, "classes": 10}, "digits", 15),
    ("unet", "unet", {"input_size": 64, "alpha": 0.5, "depth": 3}, "synthetic-shapes", 15),
]


def _demo_model(out: Path, epochs: int) -> Path:
    from edgecompress.artifacts import read_sidecar
    from edgecompress.demo import train_demo_model

    path = out / "digits_mobilenet_v2.h5"
    existing = read_sidecar(path) if path.exists() else None
    if not (existing and existing.extra.get("demo_epochs") == epochs):
        train_demo_model(path, epochs, print, progress=False)
    return path


def _zoo_model(out: Path, label: str, name: str, params: dict, data: str, epochs: int) -> Path:
    from edgecompress.artifacts import read_sidecar
    from edgecompress.models.train import train_zoo

    path = out / f"{label}.h5"
    existing = read_sidecar(path) if path.exists() else None
    if not (existing and existing.extra.get("epochs") == epochs):
        print(f"training {name} {params} on {data} for {epochs} epochs")
        train_zoo(name, path, data, epochs=epochs, params=params, progress=False, force=True)
    return path


def unstructured(source: Path, out: Path, epochs: int, lr: float, schedule: str) -> None:
    from edgecompress import api
    from edgecompress.compress.convert import keras_to_tflite
    from edgecompress.runtimes.keras_io import load_keras

    report = api.prune(source, out / "digits_mobilenet_v2.pruned50.h5", "digits", sparsity=0.5, epochs=epochs,
                       lr=lr, schedule=schedule, force=True, progress=False)  # fmt: skip
    d = report.report
    ev = report.evaluation
    before, after = ev.source.metrics[ev.metric], ev.output.metrics[ev.metric]
    plain = keras_to_tflite(load_keras(report.output.path).model, "float")
    plain_gzip = len(gzip.compress(plain, compresslevel=9))
    src, sparse = d.tflite["source"].to_dict(), d.tflite["output_sparse"].to_dict()
    print(f"\n## Unstructured 50 % (TFMOT, {schedule} schedule), MobileNetV2 α 0.35 96 px on digits")
    print(f"measured sparsity      {d.magnitude.measured_sparsity:.2%} of {d.magnitude.prunable_weights:,} prunable "
          f"weights (target 50 ± 1 %; {len(d.magnitude.left_dense)} depthwise layers left dense)")  # fmt: skip
    print(f"top-1 (digits:test)    {before:.2%} → {after:.2%} ({(after - before) * 100:+.2f} points) "
          f"after {epochs} fine-tuning epochs, Adam {lr:g} cosine")  # fmt: skip
    print(f"float TFLite           {src['size_bytes']:,} B, gzip {src['gzip_bytes']:,} B (unpruned)")
    print(f"pruned, plain          {len(plain):,} B, gzip {plain_gzip:,} B ({plain_gzip / src['gzip_bytes']:.3f}×)")
    print(f"pruned, sparse-encoded {sparse['size_bytes']:,} B, gzip {sparse['gzip_bytes']:,} B "
          f"({sparse['gzip_bytes'] / src['gzip_bytes']:.3f}×)")  # fmt: skip
    print(f"LiteRT p50             {src['latency_ms_p50']:.3f} ms → {sparse['latency_ms_p50']:.3f} ms (sparse-encoded; "
          "x86 XNNPACK runs dense kernels after densifying, so no speed-up is expected here)")


def channels(models: list[tuple[str, Path, str]], out: Path, epochs: int, lr: float, distill: list[bool]) -> None:
    from edgecompress import api

    rows = []
    for label, source, data in models:
        for kd in distill:
            name = f"{label}.channels30{'.distilled' if kd else ''}"
            print(f"channel pruning 30 % of {label}{', distilled' if kd else ''}")
            report = api.prune(source, out / f"{name}.h5", data, sparsity=0.3, structure="channels", distill=kd,
                               epochs=epochs, lr=lr, force=True, progress=False)  # fmt: skip
            rows.append((label + (" + KD" if kd else ""), report))
    print(f"\n## Channel pruning 30 % (L1), fine-tuned {epochs} epochs (Adam {lr:g}; + KD: the source as teacher, "
          "T 4, alpha 0.5); float TFLite in LiteRT (XNNPACK, 2 threads, batch 1)")  # fmt: skip
    print("| model | params | MACs | LiteRT p50 ms | metric (held-out) | metric before fine-tuning |")
    print("|---|---|---|---|---|---|")
    for label, run in rows:
        ch, tflite, ev = run.report.channels, run.report.tflite, run.evaluation
        src, dst = tflite["source"], tflite["output"]
        metric = ev.metric
        before, after = ev.source.metrics[metric], ev.output.metrics[metric]
        print(
            f"| {label} | {ch.params_before:,} → {ch.params_after:,} ({1 - ch.params_after / ch.params_before:.1%} fewer) "
            f"| {src.macs / 1e6:.1f} M → {dst.macs / 1e6:.1f} M "
            f"| {src.latency_ms_p50:.3f} → {dst.latency_ms_p50:.3f} ({dst.latency_ms_p50 / src.latency_ms_p50:.2f}×) "
            f"| {metric} {before:.2%} → {after:.2%} ({(after - before) * 100:+.2f} points) "
            f"| {ch.before_finetune[metric]:.2%} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/prune"))
    parser.add_argument("--demo-epochs", type=int, default=15)
    parser.add_argument("--finetune-epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=1e-3, help="Fine-tuning learning rate.")
    parser.add_argument("--schedule", choices=["constant", "polynomial"], default="polynomial")
    parser.add_argument("--skip-unstructured", action="store_true")
    parser.add_argument("--skip-channels", action="store_true")
    parser.add_argument("--distill", choices=["no", "yes", "both"], default="both",
                        help="Channel pruning: fine-tune on labels, with the source as teacher, or both (compared).")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    demo = _demo_model(args.out, args.demo_epochs)
    if not args.skip_unstructured:
        unstructured(demo, args.out, args.finetune_epochs, args.lr, args.schedule)
    if args.skip_channels:
        return
    models = [(label, _zoo_model(args.out, label, name, params, data, epochs), data)
              for label, name, params, data, epochs in CHANNEL_MODELS]  # fmt: skip
    models.insert(1, ("mobilenet_v2", demo, "digits"))
    distill = {"no": [False], "yes": [True], "both": [False, True]}[args.distill]
    channels(models, args.out, args.finetune_epochs, args.lr, distill)


if __name__ == "__main__":
    main()
