"""Bundles on an emulated Raspberry Pi: `compress deploy --check DIR --arch aarch64` for three zoo models.

    python benchmarks/arm64.py                  # train, quantize, bundle, check on pi4 and pi5 → benchmarks/arm64.md
    python benchmarks/arm64.py --cpu pi5        # one Pi
    python benchmarks/arm64.py --reuse          # keep the bundles of an earlier run in benchmarks/out/arm64

ResNet-18 (digits), U-Net (synthetic shapes) and the BlazePose landmark model (synthetic poses), each at
its zoo `small` configuration, trained briefly on its embedded data, quantized to int8 with 64
calibration images and bundled for `rpi`. Each bundle then runs in the emulated arm64 userland (Debian
bookworm under qemu-user, QEMU_CPU set to the Pi's core) with ai-edge-litert 2.3.0 and tflite-runtime
2.14.0 from their aarch64 wheels. Needs root and `make arm64-tools`; the root filesystem is built on
first use (about 5 minutes) and cached. Every time in the table is qemu time, labelled "emulated":
it says nothing about a Pi's speed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from edgecompress._env import configure_environment  # noqa: E402

configure_environment()

#: zoo entry → (task, training epochs); input sizes and widths are the entries' `small` configurations
MODELS = {"resnet18": ("classification", 3), "unet": ("segmentation", 3), "blazepose_landmark": ("keypoints", 3)}
CALIBRATION = 64
THREADS, RUNS = 2, 20
OUT = HERE / "out" / "arm64"


def build_bundles(reuse: bool) -> dict[str, Path]:
    from edgecompress import api
    from edgecompress.artifacts import Artifact
    from edgecompress.calibration.data import load_images
    from edgecompress.deploy import build_bundle
    from edgecompress.models.train import train_zoo
    from edgecompress.models.zoo import ZOO

    OUT.mkdir(parents=True, exist_ok=True)
    bundles = {}
    for name, (_task, epochs) in MODELS.items():
        bundle = OUT / f"{name}-int8"
        bundles[name] = bundle
        if reuse and (bundle / "model.tflite.json").is_file():
            continue
        entry = ZOO.get(name)
        keras = train_zoo(name, OUT / f"{name}.h5", epochs=epochs, params=entry.small, progress=False, force=True).output
        height, width, _ = Artifact.open(keras).metadata.inputs[0].shape
        calib = load_images(entry.embedded_data, "train", (height, width)).take(CALIBRATION)
        int8 = api.quantize(keras, OUT / f"{name}.int8.tflite", mode="int8", calib=calib, force=True).output.path
        build_bundle(int8, "rpi", bundle, force=True)
    return bundles


def row(name: str, report, native_ms: float) -> list[list[str]]:
    import json

    meta = json.loads((report.bundle / "model.tflite.json").read_text())
    shape = "×".join(str(d) for d in meta["deploy"]["input"]["shape"][1:])
    cells = []
    for run in report.runs:
        agreement = "; ".join(f"{a.describe(report.integer)} vs {a.reference}" for a in run.agreements)
        cells.append([
            name, shape, report.cpu.name, run.interpreter, agreement,
            run.self_check.get("summary", run.self_check.get("self_check", "")),
            f"{run.bench['latency_ms_p50']:.1f} ms emulated", f"{native_ms:.2f} ms native x86",
        ])
    return cells


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="append", choices=["pi4", "pi5"], help="Pi(s) to emulate (default both)")
    parser.add_argument("--reuse", action="store_true", help="reuse bundles already in benchmarks/out/arm64")
    parser.add_argument("--output", type=Path, default=HERE / "arm64.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from edgecompress.deploy import check_bundle
    from edgecompress.deploy.emulated import check_emulated

    started = time.perf_counter()
    bundles = build_bundles(args.reuse)
    rows, seconds = [], {}
    for name, bundle in bundles.items():
        native = check_bundle(bundle, threads=THREADS, runs=RUNS)
        for cpu in args.cpu or ["pi4", "pi5"]:
            began = time.perf_counter()
            report = check_emulated(bundle, cpu=cpu, threads=THREADS, runs=RUNS)
            seconds[(name, cpu)] = time.perf_counter() - began
            rows.extend(row(name, report, native.bench["latency_ms_p50"]))
    write_table(args.output, rows, seconds, time.perf_counter() - started)
    print(args.output.read_text())
    return 0


def write_table(path: Path, rows: list[list[str]], seconds: dict, total: float) -> None:
    header = ["model (int8 bundle)", "input", "Pi", "interpreter (aarch64 wheel)", "outputs on emulated aarch64",
              "run.py --self-check", "bench.py p50", "same bundle, x86 venv"]
    lines = [
        "# Bundles on an emulated Raspberry Pi (aarch64 under qemu-user)",
        "",
        "Made by `python benchmarks/arm64.py` on "
        f"{dt.date.today().isoformat()}: {platform.machine()} host ({platform.processor() or 'x86_64'}, 2 cores), "
        "Debian bookworm arm64 root filesystem, qemu-user 7.2, Python 3.11 inside, "
        f"{THREADS} threads, {RUNS} timed runs. Every model passed `compress deploy --check DIR --arch aarch64` "
        "for the Pi in its row.",
        "",
        "**Every time marked \"emulated\" is qemu's time on this x86 machine, 100–600× slower than native: it "
        "measures the emulator, never a Raspberry Pi.** The x86 column is the same bench.py in a TensorFlow-free "
        "venv here, for scale only. Measure on the device with `python3 bench.py`.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(cells) + " |" for cells in rows),
        "",
        "Comparisons are like with like (see ../shared/ARM64.md): each interpreter's aarch64 build against the "
        "same package's x86 build with the same kernels, ai-edge-litert also against the toolkit's own LiteRT "
        "session (XNNPACK). tflite-runtime 2.14's default int8 kernels are other optimized kernels than "
        "ai-edge-litert's XNNPACK (they differ on x86 too), so across the two packages the outputs are compared "
        "through LiteRT's reference kernels, which compute the same integers in every build.",
        "",
        "Wall-clock seconds per emulated check (both interpreters, run.py + bench.py + self-check): "
        + ", ".join(f"{name} on {cpu} {s:.0f} s" for (name, cpu), s in seconds.items())
        + f". Whole run: {total / 60:.1f} min.",
        "",
    ]
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
