"""Chains, end to end: the zoo MobileNetV2 (64 px, digits) and U-Net (64 px, synthetic shapes) through
float, post-training int8, prune → int8, channel-prune + distill → QAT, cluster → QAT and QAT, all in
one recipe, every output measured in LiteRT; then `compress qat` on the same data and epochs, beside
the recipe's QAT row.

    python benchmarks/chains.py [--out benchmarks/out/chains] [--runs 50]

The recipe it runs is written next to its results (``<out>/chains.yaml``); rerunning resumes from
the cache. Sizes are of the written files; latency is LiteRT (XNNPACK), batch 1, 2 threads.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import edgecompress  # noqa: E402,F401 - before TensorFlow

MODELS = [
    {"name": "mobilenet_v2", "zoo": "mobilenet_v2", "params": {"input_size": 64, "alpha": 0.5, "classes": 10},
     "train": {"epochs": 15, "lr": 0.002}},
    {"name": "unet", "zoo": "unet", "params": {"input_size": 64, "alpha": 0.5, "depth": 3},
     "train": {"epochs": 25, "lr": 0.003}},
]  # fmt: skip
FINETUNE_EPOCHS = 3
VARIANTS = [
    {"name": "float", "passes": ["export"]},
    {"name": "ptq int8", "passes": ["quantize(mode=int8)"]},
    {"name": "prune → int8", "passes": ["prune(sparsity=0.5, schedule=polynomial, lr=0.001, measure=false)", "quantize(mode=int8)"]},
    {"name": "channels+KD → qat", "passes": ["prune(structure=channels, sparsity=0.3, distill=true, lr=0.001, measure=false)", "qat"]},
    {"name": "cluster → qat", "passes": ["cluster(clusters=16, lr=0.0001, measure=false)", "qat(preserve=clusters)"]},
    {"name": "qat", "passes": ["qat"]},
]  # fmt: skip


def recipe(runs: int) -> dict:
    return {
        "name": "chains",
        "output": ".",
        "data": {"train": "digits", "calibration": {"spec": "digits", "samples": 100}, "eval": "digits"},
        "models": [
            MODELS[0],
            {**MODELS[1], "data": {"train": "synthetic-shapes", "calibration": {"spec": "synthetic-shapes", "samples": 100},
                                   "eval": "synthetic-shapes"}},
        ],
        "training": {"epochs": FINETUNE_EPOCHS},
        "variants": VARIANTS,
        "targets": {"runtimes": ["litert"], "threads": [2]},
        "bench": {"runs": runs, "warmup": 5, "memory": False},
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "out" / "chains")
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()

    from edgecompress import api
    from edgecompress.pipeline.recipe import load_recipe
    from edgecompress.pipeline.run import run_pipeline
    from edgecompress.reports.records import machine_description
    from edgecompress.reports.tables import human_bytes

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "chains.yaml"
    path.write_text(yaml.safe_dump(recipe(args.runs), sort_keys=False, allow_unicode=True))
    started = time.perf_counter()
    result = run_pipeline(load_recipe(path), progress=False)
    seconds = time.perf_counter() - started
    for line in result.failures:
        print(f"failed: {line}")
    print(f"# Chains ({seconds / 60:.1f} min for the recipe {path}; {machine_description()})\n")
    print("| model | variant | metric | vs float | size | gzip size | LiteRT p50 (2 threads) |")
    print("|---|---|---|---|---|---|---|")
    for model in (m["name"] for m in MODELS):
        for variant in (v["name"] for v in VARIANTS):
            record = next((r for r in result.records if r.model == model and r.variant == variant), None)
            if record is None or record.status != "ok":
                print(f"| {model} | {variant} | {record.note if record else 'failed'} | | | | |")
                continue
            delta = f"{record.metric_delta * 100:+.2f} points" if record.metric_delta is not None else ""
            print(f"| {model} | {variant} | {record.metric_name} {record.metric_value:.2%} | {delta} "
                  f"| {human_bytes(record.size_bytes)} | {human_bytes(record.size_gzip_bytes)} "
                  f"| {record.latency_ms_p50:.3f} ms |")  # fmt: skip

    # The recipe's QAT row against `compress qat` on the same trained model, data and epochs.
    source = next(s for s in result.stages if s.model == "mobilenet_v2" and s.phase == "model" and s.stage.startswith("train"))
    trained = next((args.out / "cache" / source.key).glob("*.h5"))
    run = api.qat(trained, args.out / "compress-qat.tflite", "digits", epochs=FINETUNE_EPOCHS, compare=False,
                  force=True, progress=False)  # fmt: skip
    ours = run.evaluation.output.metrics["top1"]
    recipe_row = next(r for r in result.records if r.model == "mobilenet_v2" and r.variant == "qat")
    gap = (ours - recipe_row.metric_value) * 100
    print(f"\nQAT of mobilenet_v2, {FINETUNE_EPOCHS} epochs on digits:train, scored on {run.evaluation.data}: "
          f"recipe {recipe_row.metric_value:.2%}, `compress qat` {ours:.2%} ({gap:+.2f} points; target within 0.3)")


if __name__ == "__main__":
    main()
