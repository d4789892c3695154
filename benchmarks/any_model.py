"""Quantize models nobody here wrote: non-image Keras models, float .tflite and .onnx sources.

Prints, for each model, top-1 of the float source and of its int8 output on held-out data (each in
its own runtime: Keras/LiteRT/ONNX Runtime), and the honest size ratio (against the float model
stored the same way). Every model is trained here; nothing is downloaded.

    python benchmarks/any_model.py            # everything (about 3 minutes on 2 cores)
    python benchmarks/any_model.py --part zoo # only the zoo MobileNetV2 / ResNet-18 .tflite comparison
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import any_models as am  # noqa: E402

from edgecompress import api  # noqa: E402
from edgecompress.models.inputs import input_shape_of  # noqa: E402

#: the zoo benchmark's settings (benchmarks/zoo.py): (params, epochs, learning rate)
ZOO_MODELS = {
    "mobilenet_v2": ({"input_size": 64, "alpha": 0.5, "classes": 10}, 15, 2e-3),
    "resnet18": ({"input_size": 48, "alpha": 0.25, "classes": 10}, 15, 2e-3),
}
CALIBRATION = 200


def pct(value: float) -> str:
    return f"{value:.2%}"


def points(after: float, before: float) -> str:
    return f"{(after - before) * 100:+.2f}"


def non_image(work: Path) -> None:
    print("\n### Non-image Keras models, int8 from float .npz (calibration: training split)\n")
    print("| model | input | float (Keras) | int8 (LiteRT) | Δ points | source file → int8 | ratio vs float32 params |")
    print("|---|---|---|---|---|---|---|")
    for name in am.NON_IMAGE:
        model, train, test = am.non_image_model(name, work, epochs=20)
        report = api.quantize(model, work / f"{name}.int8.tflite", mode="int8", calib=train, eval=test,
                              calib_samples=CALIBRATION)  # fmt: skip
        source, output = report.evaluation.source.metrics["top1"], report.evaluation.output.metrics["top1"]
        sizes = report.sizes
        shape = input_shape_of(api.load(model))
        print(f"| {name} | {shape} | {pct(source)} | {pct(output)} | {points(output, source)} | "
              f"{sizes.source_bytes / 1e3:.0f} kB → {sizes.output_bytes / 1e3:.0f} kB "
              f"(optimizer state {sizes.optimizer_bytes / 1e3:.0f} kB) | {sizes.ratio:.2f}× |")  # fmt: skip
        qat = api.qat(model, work / f"{name}.qat.tflite", data=train, eval=test, epochs=2, progress=False)
        scores = qat.details["comparison"]["scores"]
        print(f"|   ↳ QAT, 2 epochs | | {pct(scores['float']['top1'])} | {pct(scores['qat_int8']['top1'])} "
              f"(PTQ {pct(scores['ptq_int8']['top1'])}) | {points(scores['qat_int8']['top1'], scores['float']['top1'])} "
              f"| | {qat.sizes.ratio:.2f}× |")  # fmt: skip
        pruned = api.prune(model, work / f"{name}.pruned.h5", data=train, eval=test, epochs=2, measure=False,
                           progress=False)  # fmt: skip
        before, after = pruned.evaluation["source"]["top1"], pruned.evaluation["output"]["top1"]
        print(f"|   ↳ prune 50 %, 2 epochs (Keras) | | {pct(before)} | {pct(after)} | {points(after, before)} | | |")


def zoo(work: Path) -> None:
    from edgecompress.models.train import train_zoo

    print("\n### Zoo models: int8 from the float .tflite alone vs int8 from the Keras file (digits, 360 test images)\n")
    print("| model | float (Keras) | int8 from Keras (TF converter) | int8 from .tflite (ai-edge-quantizer) | "
          "difference | no SignatureDef, no sidecar |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for name, (params, epochs, lr) in ZOO_MODELS.items():
        keras = train_zoo(name, work / f"{name}.h5", epochs=epochs, lr=lr, params=params, progress=False).output
        from_keras = api.quantize(keras, work / f"{name}.k.int8.tflite", mode="int8", calib="digits",
                                  calib_samples=CALIBRATION, eval="digits")  # fmt: skip
        float_tflite = api.export(keras, work / f"{name}.float.tflite").output.path
        from_tflite = api.quantize(float_tflite, work / f"{name}.t.int8.tflite", mode="int8", calib="digits",
                                   calib_samples=CALIBRATION, eval="digits")  # fmt: skip
        bare = work / f"{name}.bare.tflite"
        bare.write_bytes(am.strip_signatures(float_tflite.read_bytes()))
        pre = api.load(float_tflite).metadata.preprocessing.to_dict()
        from_bare = api.quantize(bare, work / f"{name}.b.int8.tflite", mode="int8", calib="digits",
                                 calib_samples=CALIBRATION, eval="digits", preprocessing=pre)  # fmt: skip
        source = from_keras.evaluation["source"]["top1"]
        k, t = from_keras.evaluation["output"]["top1"], from_tflite.evaluation["output"]["top1"]
        b = from_bare.evaluation["output"]["top1"]
        print(f"| {name} {params['input_size']} px, {epochs} epochs | {pct(source)} | {pct(k)} | {pct(t)} | "
              f"{points(t, k)} points | {pct(b)} (signature added: {from_bare.details['signature_added']}) |")  # fmt: skip
        print(f"|   ↳ sizes | | {from_keras.sizes.ratio:.2f}× vs float32 params | "
              f"{from_tflite.sizes.ratio:.2f}× vs the float .tflite | | |")  # fmt: skip


def onnx(work: Path) -> None:
    print("\n### Float ONNX sources, int8 QDQ in ONNX Runtime (digits, 360 test images)\n")
    print("| model | layout | float | int8 | Δ points | ratio vs the float .onnx | --format tflite |")
    print("|---|---|---|---|---|---|---|")
    twin = am.train_nchw_twin(work, epochs=30)
    pre = {"mean": am.MEAN, "std": am.STD}
    h5 = work / "twin.h5"
    twin.save(h5)
    tf2onnx = api.export(h5, work / "twin.onnx", format="onnx", preprocessing=pre).output.path
    sources = {
        "tf2onnx export (NHWC)": tf2onnx,
        "onnx.helper, PyTorch-style (NCHW, BatchNormalization)": am.nchw_onnx(twin, work / "torch.onnx"),
        "onnx.helper, PyTorch-style (NCHW, BN folded)": am.nchw_onnx(twin, work / "torch_folded.onnx", True),
    }
    for label, path in sources.items():
        report = api.quantize(path, work / f"{path.stem}.int8.onnx", mode="int8", calib="digits",
                              calib_samples=CALIBRATION, eval="digits", preprocessing=pre)  # fmt: skip
        source, output = report.evaluation.source.metrics["top1"], report.evaluation.output.metrics["top1"]
        try:
            api.quantize(path, work / f"{path.stem}.int8.tflite", mode="int8", format="tflite", calib="digits",
                         preprocessing=pre)  # fmt: skip
            tflite = "converted"
        except Exception as exc:  # noqa: BLE001 - the benchmark reports the refusal
            tflite = f"refused: {str(exc).split(' (')[0][:60]}…"
        print(f"| {label} | {report.output.metadata.inputs[0].layout} | {pct(source)} | {pct(output)} | "
              f"{points(output, source)} | {report.sizes.ratio:.2f}× | {tflite} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["all", "non-image", "zoo", "onnx"], default="all")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgecompress-any-") as tmp:
        work = Path(tmp)
        for part, run in (("non-image", non_image), ("zoo", zoo), ("onnx", onnx)):
            if args.part in ("all", part):
                run(work)
    print(f"\n{platform.machine()}, {platform.python_version()}, {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
