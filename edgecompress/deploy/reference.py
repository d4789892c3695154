"""Reference inputs and outputs carried by every bundle, for ``run.py --self-check`` on the device.

Why: only the device can tell whether its copy computes what the toolkit measured (a damaged copy, a
swapped model, another interpreter build). The bundle carries a few raw images and the outputs the
toolkit's own preprocessing and LiteRT session gave for them; the tolerance is decided here, once,
so ``run.py`` only compares.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np

from edgecompress.artifacts import Artifact, ModelFormat
from edgecompress.calibration.preprocessing import Preprocessing

REFERENCE_DIR = "reference"
INPUTS_FILE = f"{REFERENCE_DIR}/inputs.npy"
OUTPUTS_FILE = f"{REFERENCE_DIR}/outputs.npz"
#: the same inputs through LiteRT's reference kernels: the integers every build of the package computes
REFERENCE_KERNELS_FILE = f"{REFERENCE_DIR}/outputs_reference_kernels.npz"
#: the same inputs after preprocessing, for checks outside Python (the Android test feeds these)
MODEL_INPUTS_FILE = f"{REFERENCE_DIR}/model_inputs.npy"
ANDROID_TEST = "SelfCheckTest.kt"
SAMPLES = 4
#: float models: max |Δ| allowed as a fraction of the output scale, as for a float export
FLOAT_TOLERANCE = 1e-3
REFERENCE_THREADS = 2


def reference_pixels(shape: tuple[int, ...], samples: int = SAMPLES, seed: int = 7) -> np.ndarray:
    """Raw uint8 images of the model's own size: they go through the bundle's copied preprocessing too.
    A model whose input is not an image gets float model inputs of its shape instead."""
    rng = np.random.default_rng(seed)
    if len(shape) == 4 and int(shape[-1]) in (1, 3):
        _, height, width, channels = shape
        return rng.integers(0, 256, size=(samples, height, width, channels), dtype=np.uint8)
    return rng.standard_normal((samples, *shape[1:])).astype(np.float32)


def reference_outputs(directory: Path, metadata: dict, raw: np.ndarray, threads: int = REFERENCE_THREADS,
                      model_file: str = "model.tflite") -> list[np.ndarray]:
    """The toolkit's own outputs: its preprocessing and its LiteRT session, one sample at a time like run.py."""
    shape = metadata["deploy"]["input"]["shape"]
    if len(shape) == 4 and int(shape[-1]) in (1, 3):  # an image: the recorded preprocessing, as run.py applies it
        _, height, width, channels = shape
        x = Preprocessing.from_dict(metadata["preprocessing"]).apply(raw, height, width, channels)
    else:  # float model inputs of any other shape go in as they are
        x = np.asarray(raw, dtype=np.float32)
    if metadata["deploy"]["binarized"]:
        from edgecompress.errors import require

        lce = require("larq_compute_engine.tflite.python.interpreter", "larq", "binarized bundles")
        interpreter = lce.Interpreter((Path(directory) / model_file).read_bytes(), num_threads=threads)
        outs = [interpreter.predict(sample[None]) for sample in x]
        outs = [o if isinstance(o, list) else [o] for o in outs]
        return [np.concatenate(parts, axis=0).astype(np.float32) for parts in zip(*outs, strict=True)]
    from edgecompress.runtimes import open_session

    artifact = Artifact(Path(directory) / model_file, ModelFormat.TFLITE)
    with open_session(artifact, runtime="litert", threads=threads) as session:
        return session.run(x, batch_size=1)


def reference_kernel_outputs(directory: Path, raw: np.ndarray, threads: int = REFERENCE_THREADS) -> list[np.ndarray]:
    """Outputs with LiteRT's reference kernels, through the bundle's own model code (as run.py will compute them).

    Why the bundle's code: the comparison on the device goes through it, and it is what selects the
    kernels; the toolkit's LiteRT session has no such option.
    """
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("_edgecompress_bundle_model", Path(directory) / "litert_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.Model(Path(directory), threads=threads, kernels="reference")
    metadata = model.metadata
    x = raw if raw.dtype.kind == "f" else Preprocessing.from_dict(metadata["preprocessing"]).apply(raw, *model.input_hwc)
    sys.modules.pop("_edgecompress_bundle_model", None)
    return [np.stack(parts) for parts in zip(*(model.run(sample) for sample in x), strict=True)]


def self_check_spec(metadata: dict, outputs: list[np.ndarray], measured_with: str) -> dict:
    """What run.py compares against, and how strictly.

    Integer models: identical outputs (the same integer arithmetic gives the same integers). Float
    models: max |Δ| up to ``FLOAT_TOLERANCE`` of the output scale, since another build may sum in
    another order.
    """
    flat = np.concatenate([o.ravel() for o in outputs])
    scale = float(max(np.max(flat) - np.min(flat), np.max(np.abs(flat)))) if flat.size else 0.0
    integer = bool(metadata["deploy"]["integer"])
    return {
        "inputs": INPUTS_FILE,
        "outputs": OUTPUTS_FILE,
        "samples": int(len(outputs[0])) if outputs else 0,
        "integer": integer,
        "output_scale": scale,
        "max_abs_diff": 0.0 if integer else FLOAT_TOLERANCE * scale,
        "rule": "identical (int8)" if integer else f"max |Δ| <= {FLOAT_TOLERANCE:g} x output scale (float)",
        "measured_with": measured_with,
        "measured_on": platform.machine(),
        "outputs_reference_kernels": None,
    }


def output_steps(model: Path) -> list[float]:
    """Per model output, the value of one step of the int8 tensor it is read from (0.0 for a float one).

    Why: another interpreter package's reference kernels may round an op differently (seen: one of
    the landmark model's 528 keypoint values one step off with tflite-runtime 2.14), and one step is
    the most such a difference can be without something else being wrong.
    """
    from edgecompress._env import native_output_silenced
    from edgecompress.runtimes.litert import interpreter_class

    cls, _ = interpreter_class()
    with native_output_silenced():
        interpreter = cls(model_path=str(model), num_threads=1)
        interpreter.allocate_tensors()
    tensors = {int(t["index"]): t for t in interpreter.get_tensor_details()}
    dequantized = {int(op["outputs"][0]): int(op["inputs"][0])
                   for op in interpreter._get_ops_details()  # noqa: SLF001 - the only view of the nodes
                   if op["op_name"] == "DEQUANTIZE"}  # fmt: skip
    steps = []
    for detail in interpreter.get_output_details():
        source = tensors[dequantized.get(int(detail["index"]), int(detail["index"]))]
        scale, _ = source["quantization"]
        steps.append(float(scale) if np.dtype(source["dtype"]).kind in "iu" else 0.0)
    return steps


def write_reference(directory: Path, metadata: dict) -> dict:
    """Write reference/inputs.npy and reference/outputs.npz into a bundle; return the metadata entry."""
    from importlib import metadata as importlib_metadata

    shape = tuple(metadata["deploy"]["input"]["shape"])
    raw = reference_pixels(shape)
    outputs = reference_outputs(directory, metadata, raw)
    (directory / REFERENCE_DIR).mkdir(exist_ok=True)
    np.save(directory / INPUTS_FILE, raw)
    model_inputs = raw if raw.dtype.kind == "f" else Preprocessing.from_dict(metadata["preprocessing"]).apply(raw, *shape[1:])
    np.save(directory / MODEL_INPUTS_FILE, model_inputs.astype(np.float32))
    np.savez(directory / OUTPUTS_FILE, **{f"output_{i}": o.astype(np.float32) for i, o in enumerate(outputs)})
    if metadata["deploy"]["binarized"]:
        return self_check_spec(metadata, outputs, f"larq_compute_engine {importlib_metadata.version('larq-compute-engine')}")
    from edgecompress.runtimes import RUNTIMES

    spec = self_check_spec(metadata, outputs, RUNTIMES.get("litert").version())
    spec["output_steps"] = output_steps(directory / "model.tflite")
    # The metadata file is written after this; the bundle's model code reads it, so give it a draft.
    draft = directory / "model.tflite.json"
    draft.write_text(json.dumps(metadata))
    kernels = reference_kernel_outputs(directory, raw)
    np.savez(directory / REFERENCE_KERNELS_FILE, **{f"output_{i}": o.astype(np.float32) for i, o in enumerate(kernels)})
    spec["outputs_reference_kernels"] = REFERENCE_KERNELS_FILE
    return spec


def write_android_test(directory: Path) -> None:
    """The instrumented-test snippet that runs the same comparison on a phone (android/SelfCheckTest.kt)."""
    import shutil

    (directory / "android").mkdir(exist_ok=True)
    shutil.copyfile(Path(__file__).with_name("templates") / ANDROID_TEST, directory / "android" / ANDROID_TEST)
