"""Run the bundled model on images or .npy files and print or write what its task produces.

    python3 run.py INPUT [INPUT ...] [--top-k 5] [--threads 4] [--out DIR] [--json] [--save FILE.npz]
    python3 run.py --self-check [--json]

INPUT is a .npy file or an image (PNG/JPEG, needs Pillow). A uint8 .npy holds raw pixels
((H, W), (H, W, C) or (N, H, W, C)) and goes through the recorded preprocessing; a float .npy holds
model inputs of exactly the model's input shape, with or without a leading batch axis.
Classification prints the top-k classes; segmentation writes a mask per input; keypoints writes
JSON per input: named points with x, y in [0, 1] of the image (plus z and visibility, as a
probability, when the model regresses them) and every raw output under the model's output names.
--self-check verifies the bundle's files against manifest.json, runs the reference inputs the toolkit
measured, and exits non-zero unless the outputs agree (identical for int8 models).
Depends only on numpy and a LiteRT interpreter (see requirements.txt).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import platform
import sys
from pathlib import Path

import numpy as np
from litert_model import Model
from preprocessing import Preprocessing

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


def read_image(path: Path, channels: int) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:
        raise SystemExit(
            f"reading {path.suffix} files needs Pillow: pip install pillow (Raspberry Pi OS: sudo apt install "
            "python3-pil), or save the image as a uint8 .npy"
        ) from None
    with Image.open(path) as image:
        return np.asarray(image.convert("L" if channels == 1 else "RGB"))


def load_samples(path: Path, model: Model, preprocessing: Preprocessing) -> list[tuple[str, np.ndarray]]:
    """(name, float model input) pairs from one file."""
    shape = model.sample_shape
    if not model.is_image:
        return _model_inputs(path, shape)
    height, width, channels = model.input_hwc
    if path.suffix.lower() in IMAGE_SUFFIXES:
        pixels = read_image(path, channels)[None]
    elif path.suffix.lower() == ".npy":
        array = np.load(path, allow_pickle=False)
        if array.dtype.kind == "f":
            batch = array[None] if array.shape == (height, width, channels) else array
            if batch.shape[1:] != (height, width, channels):
                raise SystemExit(
                    f"{path}: float arrays are model inputs and must have shape {(height, width, channels)}, "
                    f"not {array.shape}; save raw pixels as uint8 to have them preprocessed"
                )
            return _named(path, batch.astype(np.float32))
        if array.dtype != np.uint8:
            raise SystemExit(f"{path}: expected uint8 pixels or float32 model inputs, not {array.dtype}")
        single = array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (1, 3, 4))
        pixels = array[None] if single else array
    else:
        raise SystemExit(f"{path}: unsupported input; pass a .npy file or a PNG/JPEG image")
    return _named(path, preprocessing.apply(pixels, height, width, channels))


def _model_inputs(path: Path, shape: tuple[int, ...]) -> list[tuple[str, np.ndarray]]:
    """A model whose input is not an image (audio features, vectors…) takes float .npy arrays of its shape."""
    if path.suffix.lower() != ".npy":
        raise SystemExit(f"{path}: this model's input {shape} is not an image; pass a float .npy of that shape")
    array = np.load(path, allow_pickle=False)
    batch = array[None] if array.shape == shape else array
    if array.dtype.kind != "f" or batch.shape[1:] != shape:
        raise SystemExit(f"{path}: expected float arrays of shape {shape} (or N × {shape}), not {array.dtype} {array.shape}")
    return _named(path, batch.astype(np.float32))


def _named(path: Path, batch: np.ndarray) -> list[tuple[str, np.ndarray]]:
    if len(batch) == 1:
        return [(str(path), batch[0])]
    return [(f"{path}[{i}]", sample) for i, sample in enumerate(batch)]


def classification(name: str, outputs: list[np.ndarray], model: Model, args) -> dict:
    scores = outputs[0].reshape(-1)
    labels = model.metadata.get("labels") or []
    top = np.argsort(-scores, kind="stable")[: args.top_k]
    result = [
        {"index": int(i), "label": labels[i] if i < len(labels) else str(int(i)), "score": float(scores[i])}
        for i in top
    ]
    if not args.json:
        print(name + ": " + "  ".join(f"{r['label']} {r['score']:.4f}" for r in result))
    return {"input": name, "top_k": result}


def segmentation(name: str, outputs: list[np.ndarray], model: Model, args) -> dict:
    scores = outputs[0]
    if scores.ndim == 3 and scores.shape[-1] > 1:
        mask = np.argmax(scores, axis=-1).astype(np.uint8)
    else:
        threshold = float(model.metadata.get("extra", {}).get("mask_threshold", 0.5))
        mask = (scores.reshape(scores.shape[:2]) > threshold).astype(np.uint8)
    path = args.out / (_stem(name) + ".mask.npy")
    np.save(path, mask)
    written = [str(path)]
    try:
        from PIL import Image

        visible = mask * (255 // max(1, int(mask.max()))) if mask.max() else mask
        Image.fromarray(visible.astype(np.uint8)).save(path.with_suffix(".png"))
        written.append(str(path.with_suffix(".png")))
    except ImportError:
        pass  # the .npy mask is the no-extra-dependency output
    classes, counts = np.unique(mask, return_counts=True)
    fractions = {int(c): float(n) / mask.size for c, n in zip(classes, counts, strict=True)}
    if not args.json:
        shares = ", ".join(f"class {c}: {f:.1%}" for c, f in fractions.items())
        print(f"{name}: mask {mask.shape[1]}x{mask.shape[0]} -> {', '.join(written)} ({shares})")
    return {"input": name, "mask": written, "class_fractions": fractions}


def keypoints(name: str, outputs: list[np.ndarray], model: Model, args) -> dict:
    points = decode_keypoints(outputs, model.metadata.get("labels") or [])
    document = {
        "input": name,
        "keypoints": points,
        "outputs": {key: out.tolist() for key, out in zip(model.output_names, outputs, strict=True)},
    }
    path = args.out / (_stem(name) + ".keypoints.json")
    path.write_text(json.dumps(document, indent=1) + "\n")
    if not args.json:
        print(f"{name}: {len(points)} keypoints -> {path}")
    return {"input": name, "keypoints": points, "file": str(path)}


#: what the columns of a (K, C) keypoint output hold: BlazePose / MediaPipe order for 4 and 5
KEYPOINT_COLUMNS = {
    2: ("x", "y"),
    3: ("x", "y", "score"),
    4: ("x", "y", "z", "visibility"),
    5: ("x", "y", "z", "visibility", "presence"),
}
#: columns the model gives as logits (BlazePose trains them with a sigmoid cross-entropy)
LOGIT_COLUMNS = ("visibility", "presence")


def keypoint_source(outputs: list[np.ndarray]) -> int:
    """The output keypoints are read from: the (K, C) regression if there is one, else a heatmap.

    A BlazePose-style model returns both, in either order; the regression is the device output,
    the heatmap supervises training. Same choice as the toolkit's keypoint metric.
    """
    regression = [i for i, o in enumerate(outputs) if o.ndim == 2 and o.shape[-1] in KEYPOINT_COLUMNS]
    heatmaps = [i for i, o in enumerate(outputs) if o.ndim == 3]
    return (regression or heatmaps or [0])[0]


def decode_keypoints(outputs: list[np.ndarray], names: list) -> list[dict]:
    """Keypoints in [0, 1] image coordinates (x right, y down) with their named extra columns.

    (K, C) regression → the columns of ``KEYPOINT_COLUMNS``, logits through a sigmoid; heatmaps
    (H, W, K) → each channel's peak cell centre and its value as ``score``; a flat 2K vector → x, y.
    """
    out = outputs[keypoint_source(outputs)]
    if out.ndim == 3:
        height, width, count = out.shape
        flat = out.reshape(-1, count)
        peaks = np.argmax(flat, axis=0)
        rows = [((p % width + 0.5) / width, (p // width + 0.5) / height, flat[p, k]) for k, p in enumerate(peaks)]
        columns = KEYPOINT_COLUMNS[3]
    else:
        per = out.shape[-1] if out.ndim == 2 else _flat_columns(out.size, len(names))
        rows = [tuple(r) for r in out.reshape(-1, per)]
        columns = KEYPOINT_COLUMNS.get(per, KEYPOINT_COLUMNS[2])
    points = []
    for k, row in enumerate(rows):
        point = {"name": names[k] if k < len(names) else str(k)}
        for column, value in zip(columns, row, strict=False):
            point[column] = _sigmoid(float(value)) if column in LOGIT_COLUMNS else float(value)
        points.append(point)
    return points


def _flat_columns(size: int, count: int) -> int:
    """Values per keypoint in a flat output: from the number of names, else 3 only when 2 cannot divide."""
    if count and size % count == 0 and size // count in KEYPOINT_COLUMNS:
        return size // count
    return 3 if size % 3 == 0 and size % 2 else 2


def _sigmoid(x: float) -> float:
    # Two branches, so a large negative logit cannot overflow exp().
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def raw_outputs(name: str, outputs: list[np.ndarray], model: Model, args) -> dict:
    if not args.json:
        print(f"{name}: " + ", ".join(f"output {i} shape {o.shape}" for i, o in enumerate(outputs)))
    return {"input": name}


TASKS = {"classification": classification, "segmentation": segmentation, "keypoints": keypoints}


def _stem(name: str) -> str:
    """``photo.png`` → ``photo``; ``batch.npy[3]`` → ``batch_3``, so batch items get their own files."""
    base, _, index = name.partition("[")
    stem = Path(base).stem
    return f"{stem}_{index.rstrip(']')}" if index else stem


HERE = Path(__file__).resolve().parent
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "edgecompress-bundle-manifest/1"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_problems(directory: Path, meta: dict) -> list[str]:
    """Files that are missing or differ from what the bundle was built with, by compress deploy's manifest.json.

    Also named: code beside run.py that the manifest does not list (an extra numpy.py would be imported in
    numpy's place). Files elsewhere (a .venv, images, outputs) are the user's.
    """
    manifest = directory / MANIFEST
    if manifest.is_file():
        try:
            data = json.loads(manifest.read_bytes().decode("utf-8"))
        except (ValueError, RecursionError):
            return [f"{MANIFEST} is not valid JSON; rebuild the bundle"]
        if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT or not isinstance(data.get("files"), dict):
            return [f"{MANIFEST} is not an {MANIFEST_FORMAT} manifest; rebuild the bundle"]
        listed = data["files"]
        odd = [str(name)[:80] for name in listed if not _plain_path(name)]
        if odd:
            return [f"{MANIFEST} lists {', '.join(odd[:3])}, not plain paths inside the bundle; rebuild the bundle"]
        problems = [f"{path.name} is not part of the bundle (code beside run.py is imported before the installed packages)"
                    for path in sorted(directory.iterdir()) if path.name not in listed and _importable(path)]
    else:  # older bundles: the model's own hash is in its metadata
        listed = {"model.tflite": meta.get("deploy", {}).get("model_sha256")}
        problems = []
    for name, digest in sorted(listed.items()):
        path = directory / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif digest and _sha256(path) != digest:
            problems.append(f"{name} changed since the bundle was built (sha256 differs)")
    return problems


def _plain_path(name) -> bool:
    if not isinstance(name, str):
        return False
    return not name.startswith("/") and "\\" not in name and all(p not in ("", ".", "..") for p in name.split("/"))


def _importable(path: Path) -> bool:
    """A file or package Python would import by name from the script's folder."""
    if path.is_dir():
        return (path / "__init__.py").exists()
    return path.suffix in (".py", ".pyc", ".pyw", ".so", ".pyd") or ".cpython-" in path.name


def _outputs(model: Model, x: np.ndarray) -> list[np.ndarray]:
    return [np.stack(parts) for parts in zip(*(model.run(sample) for sample in x), strict=True)]


def _compare(got: list[np.ndarray], path: Path, spec: dict, what: str, one_step: bool = False) -> dict:
    """One comparison with a saved reference: identical, or the largest difference against the tolerance.

    ``one_step``: an int8 model's outputs may differ by one step of their int8 tensor (another
    package's reference kernels may round an op differently); more than that fails."""
    with np.load(path) as saved:
        expected = [saved[f"output_{i}"] for i in range(len(saved.files))]
    if [g.shape for g in got] != [e.shape for e in expected]:
        return {"what": what, "identical": False, "passed": False, "max_abs_diff": None,
                "summary": f"output shapes {[g.shape for g in got]} differ from the reference {[e.shape for e in expected]}"}
    diffs = [float(np.max(np.abs(g.astype(np.float64) - e))) if g.size else 0.0 for g, e in zip(got, expected, strict=True)]
    worst = max(diffs)
    identical = all(np.array_equal(g, e) for g, e in zip(got, expected, strict=True))
    allowed = float(spec["max_abs_diff"])
    kind = "int8" if spec["integer"] else "float"
    steps = spec.get("output_steps") or []
    within_step = (one_step and spec["integer"] and len(steps) == len(diffs)
                   and all(d <= step * 1.001 for d, step in zip(diffs, steps, strict=True)))  # fmt: skip
    if identical:
        summary = f"identical ({kind})"
    elif within_step:
        changed = sum(int(np.sum(g != e)) for g, e in zip(got, expected, strict=True))
        summary = (f"within one int8 step ({changed} of {sum(e.size for e in expected)} values one step off; "
                   "another package's reference kernels)")
    else:
        rule = spec["rule"] + (", or one int8 step with another package" if one_step and spec["integer"] else "")
        summary = f"largest difference {worst:.6g} (output {diffs.index(worst)}), tolerance {allowed:.6g} ({rule})"
    return {"what": what, "identical": identical, "max_abs_diff": worst, "allowed": allowed, "summary": summary,
            "passed": identical or within_step or (not spec["integer"] and worst <= allowed)}


def self_check(args) -> int:
    """Verify the files, run the reference inputs, compare with what the toolkit measured; 0 only if they agree.

    Two comparisons. With LiteRT's reference kernels, which compute the same integers in every build of
    one package (another package, tflite-runtime, may round an op one int8 step differently): this one
    must hold with any interpreter. With the default kernels (XNNPACK) against what the
    toolkit measured: this one must hold with the interpreter build it measured with; another build
    (tflite-runtime) has other optimized kernels, so there its difference is reported, not judged.
    """
    from litert_model import load_metadata

    meta = load_metadata(HERE)
    spec = meta.get("deploy", {}).get("self_check")
    if not spec:
        return _verdict(args, False, ["model.tflite.json has no self_check section; rebuild the bundle"], {})
    problems = file_problems(HERE, meta)
    note = None if (HERE / MANIFEST).is_file() else "no manifest.json: only model.tflite's checksum was verified"
    if problems:
        return _verdict(args, False, problems, {"note": note})
    model = Model(threads=args.threads)
    raw = np.load(HERE / spec["inputs"], allow_pickle=False)
    # float reference inputs are model inputs already (a model whose input is not an image)
    x = raw if raw.dtype.kind == "f" else Preprocessing.from_dict(meta.get("preprocessing") or {}).apply(raw, *model.input_hwc)
    default = _compare(_outputs(model, x), HERE / spec["outputs"], spec, "default kernels")
    # The same package and version on the same architecture: other machines run other microkernels (seen on
    # an emulated Cortex-A76: one int8 value one step off XNNPACK's x86 result), so there it is reported only.
    same_build = model.runtime_version == spec.get("measured_with") and platform.machine() == spec.get("measured_on")
    comparisons = [default]
    if spec.get("outputs_reference_kernels"):
        reference = Model(threads=args.threads, kernels="reference")
        # Reference kernels compute the same integers in every build of one package; another package's
        # may round an op differently, by one step at most.
        other_package = model.runtime_version.split()[0] != str(spec.get("measured_with", "")).split(" ")[0]
        comparisons.insert(0, _compare(_outputs(reference, x), HERE / spec["outputs_reference_kernels"], spec,
                                       "reference kernels", one_step=other_package))
    judged = comparisons if same_build or len(comparisons) == 1 else comparisons[:1]
    passed = all(c["passed"] for c in judged)
    if passed and all(c["identical"] for c in comparisons):
        summary = comparisons[0]["summary"]
    elif passed:
        summary = "; ".join(
            f"{c['what']}: {c['summary']}" + ("" if c in judged else
                                              f" (another build than the measured {spec.get('measured_with')} on {spec.get('measured_on')}: not judged)")
            for c in comparisons)
    else:
        summary = "; ".join(f"{c['what']}: {c['summary']}" for c in judged if not c["passed"])
    details = {"runtime": model.runtime_version, "samples": len(raw), "summary": summary, "note": note,
               "identical": all(c["identical"] for c in judged), "measured_with": spec.get("measured_with"),
               "max_abs_diff": max(c["max_abs_diff"] or 0.0 for c in judged), "allowed": float(spec["max_abs_diff"]),
               "comparisons": comparisons}
    return _verdict(args, passed, [] if passed else [summary], details)


def _verdict(args, passed: bool, problems: list[str], details: dict) -> int:
    if args.json:
        print(json.dumps({"self_check": "passed" if passed else "failed", "problems": problems, **details}))
    else:
        if details.get("note"):
            print(f"note: {details['note']}")
        if passed:
            print(f"self-check passed: {details['summary']} on {details['samples']} reference inputs "
                  f"({details['runtime']}; reference: {details['measured_with']})")
        else:
            print("self-check FAILED: this copy does not compute what edgecompress measured", file=sys.stderr)
            for problem in problems:
                print(f"  {problem}", file=sys.stderr)
    return 0 if passed else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="*", type=Path, help=".npy files or PNG/JPEG images")
    parser.add_argument("--self-check", action="store_true",
                        help="verify the files and compare the reference outputs; exit 1 on a mismatch")
    parser.add_argument("--top-k", type=int, default=5, help="classes to print (classification)")
    parser.add_argument("--threads", type=int, default=None, help="interpreter threads (default: runtime's)")
    parser.add_argument("--kernels", choices=("default", "reference"), default="default",
                        help="LiteRT's default (XNNPACK) or reference kernels (slow; the same integers in every build)")
    parser.add_argument("--out", type=Path, default=Path("."), help="where masks / keypoint JSON go")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    parser.add_argument("--save", type=Path, help="also save every output (float, batch-stacked) to this .npz")
    args = parser.parse_args(argv)
    if args.self_check:
        return self_check(args)
    if not args.inputs:
        parser.error("give at least one INPUT, or --self-check")
    args.out.mkdir(parents=True, exist_ok=True)

    model = Model(threads=args.threads, kernels=args.kernels)
    meta = model.metadata
    preprocessing = Preprocessing.from_dict(meta.get("preprocessing") or {})
    handle = TASKS.get(meta.get("task") or "", raw_outputs)
    results, collected = [], []
    for path in args.inputs:
        for name, sample in load_samples(path, model, preprocessing):
            outputs = model.run(sample)
            collected.append(outputs)
            results.append(handle(name, outputs, model, args))
    if args.save:
        stacked = {f"output_{i}": np.stack(parts) for i, parts in enumerate(zip(*collected, strict=True))}
        np.savez(args.save, **stacked)
    if args.json:
        print(json.dumps({"task": meta.get("task"), "runtime": model.runtime, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
