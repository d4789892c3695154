"""Distillation on digits: a MobileNetV2 α 0.35 student distilled from a larger teacher against the
same student trained alone on the same budget (same initial weights, data, epochs, optimiser).

Target: the distilled student beats the one trained alone on the held-out digits (360 images).

    nice -n 10 python benchmarks/distill.py [--out benchmarks/out/distill]
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/distill"))
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--teacher-epochs", type=int, default=15)
    parser.add_argument("--epochs", type=int, default=6, help="The student's budget (both runs).")
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--alpha", type=float, default=0.7)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    from edgecompress import api
    from edgecompress.artifacts import read_sidecar
    from edgecompress.models.train import train_zoo

    teacher = args.out / "teacher_resnet18.h5"
    params = {"input_size": args.input_size, "alpha": 0.5, "classes": 10}
    existing = read_sidecar(teacher) if teacher.exists() else None
    if not (existing and existing.extra.get("epochs") == args.teacher_epochs and existing.extra.get("zoo_params") == params):
        print(f"training the teacher: ResNet-18 α 0.5 at {args.input_size} px on digits, {args.teacher_epochs} epochs")
        train_zoo("resnet18", teacher, "digits", epochs=args.teacher_epochs, params=params, progress=False, force=True)
    student = f"mobilenet_v2:alpha=0.35,input_size={args.input_size}"
    report = api.distill(teacher, student, args.out / "student.h5", "digits", temperature=args.temperature,
                         alpha=args.alpha, epochs=args.epochs, lr=2e-3, force=True, progress=False)  # fmt: skip
    d = report.details
    scores = d["scores"]
    print(f"\n## Distillation on digits (held-out digits:test, {int(scores['distilled']['samples'])} images)")
    print(f"teacher   ResNet-18 α 0.5, {d['teacher_params']:,} params: top-1 {scores['teacher']['top1']:.2%}")
    print(f"student   {d['student']}, {d['student_params']:,} params; {args.epochs} epochs, batch 32, Adam 2e-3 cosine")
    print(f"alone     top-1 {scores['alone']['top1']:.2%}")
    print(f"distilled top-1 {scores['distilled']['top1']:.2%} (T {args.temperature}, alpha {args.alpha}; "
          f"{(scores['distilled']['top1'] - scores['alone']['top1']) * 100:+.2f} points vs alone)")  # fmt: skip


if __name__ == "__main__":
    main()
