"""The bundle's README: exact copy-and-run steps for the target, and what the model expects."""

from __future__ import annotations

from edgecompress.deploy.checks import Finding
from edgecompress.deploy.targets import LITERT_PIN, TFLITE_RUNTIME_PIN, Target

#: the Interpreter API on Android ships in LiteRT 1.x (org.tensorflow.lite.Interpreter), minSdk 21
ANDROID_LITERT = "com.google.ai.edge.litert:litert:1.4.1"
SELF_CHECK = (
    "`run.py --self-check` verifies every file against `manifest.json`, runs the four images in `reference/` and "
    "compares the outputs with the ones edgecompress measured: `identical (int8)`, or the largest difference "
    "against the tolerance; it exits 1 on a mismatch. With tflite-runtime it also prints how far that package's own "
    "int8 kernels are from ai-edge-litert's (not judged: they are other kernels); LiteRT's reference kernels must "
    "agree exactly with ai-edge-litert, and within one int8 step with tflite-runtime (another package).\n"
)
ANDROID_BENCHMARK_URL = (
    "https://storage.googleapis.com/tensorflow-nightly-public/prod/tensorflow/release/lite/tools/nightly/latest/"
    "android_aarch64_benchmark_model"
)


def render_readme(name: str, target: Target, metadata: dict, findings: tuple[Finding, ...]) -> str:
    deploy = metadata["deploy"]
    sections = [
        f"# {name}: {metadata.get('task') or 'model'} bundle for {target.description}\n",
        _model_section(metadata),
        _steps(name, target, deploy),
        _inputs_section(),
    ]
    if findings:
        sections.append("## Pre-deploy warnings\n\n" + "\n".join(f"- {f.message}. Fix: {f.fix}." for f in findings) + "\n")
    return "\n".join(sections)


def _model_section(metadata: dict) -> str:
    deploy = metadata["deploy"]
    pre = metadata["preprocessing"]
    tensor = deploy["input"]
    lines = [
        "## The model\n",
        f"- `model.tflite`: input {tensor['shape']} {tensor['dtype']}, "
        + ("integer (int8) kernels" if deploy["integer"] else "float kernels")
        + (", binarized (Larq Compute Engine ops)" if deploy["binarized"] else ""),
        f"- about {deploy['macs'] / 1e6:.1f} M multiply-accumulates per inference",
        f"- preprocessing ({deploy['preprocessing_origin']}): resize ({pre['resize']}) to the input size, "
        f"x = (pixel * {pre['scale']:.6g} {'-' if pre['offset'] < 0 else '+'} {abs(pre['offset']):.6g} "
        f"- mean {pre['mean']}) / std {pre['std']}, "
        f"{pre['color']} channel order; `preprocessing.py` does exactly this",
    ]
    for label, spec in [("input", tensor), *((f"output {i}", o) for i, o in enumerate(deploy["outputs"]))]:
        if spec["scale"]:
            lines.append(
                f"- {label} `{spec['name']}` is {spec['dtype']}: real = (q - {spec['zero_point']}) * {spec['scale']:.8g}"
            )
    lines.append("- everything above, labels included, is in `model.tflite.json`\n")
    return "\n".join(lines)


def _steps(name: str, target: Target, deploy: dict) -> str:
    if target.name == "rpi":
        return (
            "## Copy to the Raspberry Pi and run\n\n"
            "```sh\n"
            f"scp -r {name} pi@raspberrypi.local:~/          # or: scp {name}.tar.gz ... && tar xzf {name}.tar.gz\n"
            "ssh pi@raspberrypi.local\n"
            f"cd ~/{name}\n"
            "python3 -m venv .venv && . .venv/bin/activate\n"
            "pip install -r requirements.txt\n"
            "python3 run.py --self-check                   # this copy computes what edgecompress measured?\n"
            "python3 run.py sample.npy                     # smoke test, needs nothing else\n"
            "python3 bench.py --threads 4                  # latency p50/p90 on the Pi\n"
            "```\n\n"
            + SELF_CHECK +
            f"`{LITERT_PIN}` installs on 64-bit Raspberry Pi OS with Python >= 3.10. Where it does not, install "
            f"`{TFLITE_RUNTIME_PIN}` instead (aarch64, Bookworm); `run.py` picks whichever interpreter is installed. "
            "There are no wheels of either for 32-bit (armv7) images.\n"
        )
    if target.name == "android":
        return (
            "## On the phone\n\n"
            "Latency on the device, with LiteRT's prebuilt benchmark tool:\n\n"
            "```sh\n"
            f"curl -Lo benchmark_model {ANDROID_BENCHMARK_URL}\n"
            "adb push benchmark_model model.tflite /data/local/tmp/\n"
            "adb shell chmod +x /data/local/tmp/benchmark_model\n"
            "adb shell /data/local/tmp/benchmark_model --graph=/data/local/tmp/model.tflite --num_threads=4\n"
            "```\n\n"
            "In the app, copy `model.tflite` (and `model.tflite.json` for the numbers above) to "
            f"`app/src/main/assets/`, add `implementation(\"{ANDROID_LITERT}\")`, and use the Interpreter API:\n\n"
            "```kotlin\n"
            "val model = FileUtil.loadMappedFile(context, \"model.tflite\")  // or map the asset yourself\n"
            "val interpreter = org.tensorflow.lite.Interpreter(model, Interpreter.Options().setNumThreads(4))\n"
            "interpreter.run(input, output)  // input: preprocessed (and quantized, see above) ByteBuffer\n"
            "```\n\n"
            "Apply the preprocessing above in the app; `preprocessing.py` is the reference implementation.\n\n"
            "## Check on the phone\n\n"
            "`android/SelfCheckTest.kt` is an instrumented test: copy it to `app/src/androidTest/java/`, put "
            "`model.tflite`, `model.tflite.json` and the `reference/` folder into `app/src/androidTest/assets/`, and run "
            "`./gradlew connectedAndroidTest`. It feeds `reference/model_inputs.npy` (already preprocessed) to the "
            "phone's LiteRT and compares the outputs with `reference/outputs.npz` under the rule in "
            "`model.tflite.json` (`deploy.self_check`). It was written against the Interpreter API and not compiled "
            "by edgecompress.\n\n"
            "## Check on a computer first\n\n"
            "```sh\n"
            f"cd {name} && python3 -m venv .venv && . .venv/bin/activate && pip install -r requirements.txt\n"
            "python3 run.py --self-check && python3 run.py sample.npy && python3 bench.py\n"
            "```\n"
        )
    return (
        "## Copy and run\n\n"
        "```sh\n"
        f"scp -r {name} user@host:~/ && ssh user@host\n"
        f"cd ~/{name} && python3 -m venv .venv && . .venv/bin/activate\n"
        "pip install -r requirements.txt\n"
        "python3 run.py --self-check\n"
        "python3 run.py sample.npy\n"
        "python3 bench.py --threads 2\n"
        "```\n\n"
        + SELF_CHECK
    )


def _inputs_section() -> str:
    return (
        "## Inputs and outputs of run.py\n\n"
        "- `.npy` needs nothing beyond requirements.txt: uint8 arrays are raw pixels ((H, W), (H, W, C) or "
        "(N, H, W, C)) and are resized and preprocessed; float arrays are already-preprocessed model inputs.\n"
        "- PNG/JPEG needs Pillow, which is deliberately not in requirements.txt (it is the one extra native "
        "package): `pip install pillow`, or on Raspberry Pi OS `sudo apt install python3-pil`.\n"
        "- classification prints the top-k classes (`--top-k`); segmentation writes `<input>.mask.npy` (and a PNG "
        "when Pillow is installed) into `--out`; keypoints writes `<input>.keypoints.json`: one entry per named "
        "keypoint with x, y in [0, 1] of the image (x right, y down), plus z and visibility (a probability) when the "
        "model regresses them, and every raw output under its name. `--json` prints one JSON "
        "document, `--save out.npz` keeps every raw output.\n"
    )
