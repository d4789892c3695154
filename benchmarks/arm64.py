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


def _cell(agreement) -> str:
    if agreement is None:
        return "—"
    if agreement.exact:
        return "identical"
    judged = "" if agreement.judged else ", not judged"
    return f"max \\|Δ\\| {max(agreement.max_abs_diff):.3g}{judged}"


def row(name: str, report, native_ms: float) -> list[list[str]]:
    import json

    meta = json.loads((report.bundle / "model.tflite.json").read_text())
    shape = "×".join(str(d) for d in meta["deploy"]["input"]["shape"][1:])
    cells = []
    for run in report.runs:
        by = {a.reference.split(",")[-1].strip() if "toolkit" not in a.reference else "toolkit": a for a in run.agreements}
        check = run.self_check
        judged = [c for c in check.get("comparisons", []) if c["what"] == "reference kernels" or
                  check.get("runtime") == check.get("measured_with")]
        verdict = f"{check.get('self_check')}: " + ", ".join(f"{c['what']} {'identical' if c['identical'] else 'differ'}"
                                                            for c in judged)
        cells.append([
            name, shape, report.cpu.name, run.interpreter, _cell(by.get("default kernels")), _cell(by.get("toolkit")),
            _cell(by.get("reference kernels")), verdict,
            f"{run.bench['latency_ms_p50']:.2f} ms emulated", f"{native_ms:.3f} ms",
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
    import subprocess

    qemu = subprocess.run(["qemu-aarch64-static", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    ratios = [float(r[8].split()[0]) / float(r[9].split()[0]) for r in rows]
    header = ["model (int8 bundle)", "input", "Pi", "interpreter (aarch64 wheel)", "vs same package on x86, default kernels",
              "vs the toolkit's LiteRT session (XNNPACK)", "reference kernels vs ai-edge-litert's on x86",
              "run.py --self-check (judged comparisons)", "bench.py p50", "bench.py p50, same bundle natively on x86"]
    lines = [
        "# Bundles on an emulated Raspberry Pi (aarch64 under qemu-user)",
        "",
        f"Made by `python benchmarks/arm64.py` on {dt.date.today().isoformat()}: a 2-core x86_64 host (Intel Xeon, "
        f"Debian 12), {qemu}, a Debian bookworm arm64 root filesystem with Python 3.11, {THREADS} threads, "
        f"{RUNS} timed runs. Every bundle below passed `compress deploy --check DIR --arch aarch64 --cpu PI` "
        "(QEMU_CPU cortex-a72 for pi4, cortex-a76 for pi5), with ai-edge-litert 2.3.0 and tflite-runtime 2.14.0 "
        "installed from their aarch64 wheels. Models: the zoo entries' `small` configurations, trained "
        f"{', '.join(f'{n} {e} epochs' for n, (_, e) in MODELS.items())} on their embedded data, int8 with "
        f"{CALIBRATION} calibration images; outputs compared on 4 raw images of an off-model size (the resize runs too).",
        "",
        "**Every time marked \"emulated\" is qemu's time on this x86 machine "
        f"({min(ratios):.0f}–{max(ratios):.0f}× the native x86 time here): it measures the emulator, never a "
        "Raspberry Pi.** The last column is the same bench.py natively in a TensorFlow-free venv on this machine, "
        "for scale only. Measure on the device with `python3 bench.py`.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(cells) + " |" for cells in rows),
        "",
        "Like with like (../shared/ARM64.md): ai-edge-litert's aarch64 build must equal its x86 build and the "
        "toolkit's session bit for bit, and does. Through LiteRT's reference kernels, both packages on aarch64 must "
        "give exactly the integers ai-edge-litert's reference kernels give on x86, and do. tflite-runtime 2.14's own "
        "optimized int8 kernels are other code on each architecture (and not XNNPACK): their aarch64 and x86 outputs "
        "differ, by the amounts shown, so that comparison is reported and not judged. A device on tflite-runtime therefore "
        "computes int8 outputs that differ from what the toolkit measured with ai-edge-litert; "
        "`run.py --self-check` prints that difference there.",
        "",
        "Wall-clock seconds per emulated check (both interpreters: run.py with default and reference kernels, "
        "bench.py, the self-check; root filesystem and venvs cached): "
        + ", ".join(f"{name} on {cpu} {s:.0f} s" for (name, cpu), s in seconds.items())
        + f". Whole run, bundles reused: {total / 60:.1f} min.",
        "",
    ]
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
