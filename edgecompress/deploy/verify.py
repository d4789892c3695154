"""`compress deploy --check`: run a bundle in a TensorFlow-free venv and compare with the toolkit.

The same raw pixels go through the bundle's copied preprocessing and interpreter in the venv and
through the toolkit's preprocessing and LiteRT session here. Integer models must agree exactly
(same kernels, same quantization arithmetic); float models within the export tolerance, because a
different interpreter build may sum in another order.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgecompress.artifacts import sha256_of
from edgecompress.compress.validate import CheckResult, compare_outputs
from edgecompress.deploy.bundle import METADATA_FILE, MODEL_FILE
from edgecompress.deploy.reference import reference_outputs
from edgecompress.deploy.venv import clean_env, ensure_venv, python_of
from edgecompress.errors import UsageError, ValidationError

RUN_TIMEOUT_S = 600


@dataclass(frozen=True)
class OutputDiff:
    index: int
    max_abs_diff: float
    exact: bool


@dataclass
class CheckReport:
    bundle: Path
    venv: Path
    python: str
    packages: list[str]
    tensorflow_free: bool
    runtime: str
    task: str | None
    integer: bool
    samples: int
    diffs: list[OutputDiff]
    tolerance_check: CheckResult | None
    task_agreement: float | None
    bench: dict = field(default_factory=dict)

    @property
    def exact(self) -> bool:
        return all(d.exact for d in self.diffs)

    def to_dict(self) -> dict:
        return {
            "bundle": str(self.bundle),
            "venv": str(self.venv),
            "python": self.python,
            "packages": self.packages,
            "tensorflow_free": self.tensorflow_free,
            "runtime": self.runtime,
            "task": self.task,
            "integer": self.integer,
            "samples": self.samples,
            "outputs": [{"index": d.index, "max_abs_diff": d.max_abs_diff, "exact": d.exact} for d in self.diffs],
            "tolerance_check": self.tolerance_check.to_dict() if self.tolerance_check else None,
            "task_agreement": self.task_agreement,
            "bench": self.bench,
        }


def read_bundle(directory: Path) -> dict:
    directory = Path(directory)
    needed = (MODEL_FILE, METADATA_FILE, "run.py", "bench.py", "requirements.txt")
    missing = [name for name in needed if not (directory / name).is_file()]
    if not directory.is_dir() or missing:
        raise UsageError(
            f"{directory} is not a deploy bundle" + (f" (missing {', '.join(missing)})" if directory.is_dir() else ""),
            "build one with: compress deploy MODEL.tflite --target rpi|android|linux -o DIR",
        )
    metadata = json.loads((directory / METADATA_FILE).read_text())
    if "deploy" not in metadata:
        raise UsageError(f"{directory / METADATA_FILE} has no deploy section", "rebuild the bundle with compress deploy")
    if sha256_of(directory / MODEL_FILE) != metadata["deploy"]["model_sha256"]:
        raise ValidationError(f"{directory / MODEL_FILE} differs from the model the bundle was built from",
                              "rebuild the bundle with compress deploy --force")
    return metadata


def check_bundle(
    directory: str | Path,
    threads: int = 2,
    samples: int = 4,
    runs: int = 50,
    cache_dir: Path | None = None,
) -> CheckReport:
    """Run the bundle in a fresh venv and compare with the toolkit; raises ValidationError on a mismatch.

    This runs it natively; deploy/emulated.py runs it in an emulated Raspberry Pi userland (--arch aarch64).
    """
    directory = Path(directory).resolve()
    metadata = read_bundle(directory)
    deploy = metadata["deploy"]
    venv, info = ensure_venv((directory / "requirements.txt").read_text(), cache_dir)
    shape = deploy["input"]["shape"]
    if _is_image(shape):
        _, height, width, channels = shape
        # Off-size raw pixels, so the copied resize code is exercised too.
        raw = np.random.default_rng(1).integers(0, 256, size=(samples, height + 7, width + 5, channels), dtype=np.uint8)
    else:  # a non-image input takes float model inputs of its shape
        raw = np.random.default_rng(1).standard_normal((samples, *shape[1:])).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="edgecompress-check-") as tmp:
        work = Path(tmp)
        np.save(work / "inputs.npy", raw)
        top_k = 3
        result = run_script(venv, directory / "run.py", work, "inputs.npy", "--json", "--save", "outputs.npz",
                             "--out", "out", "--threads", str(threads), "--top-k", str(top_k))
        with np.load(work / "outputs.npz") as saved:
            got = [saved[f"output_{i}"] for i in range(len(saved.files))]
        expected = reference_outputs(directory, metadata, raw, threads)
        agreement = _task_agreement(metadata, result["results"], expected, work, top_k)
        bench = run_script(venv, directory / "bench.py", work, "--threads", str(threads), "--runs", str(runs), "--json")
    report = _compare(directory, venv, info, result, metadata, expected, got, agreement, bench)
    _require_agreement(report)
    return report


def _is_image(shape) -> bool:
    return len(shape) == 4 and int(shape[-1]) in (1, 3)


def run_script(venv: Path, script: Path, cwd: Path, *args: str) -> dict:
    command = [str(python_of(venv)), str(script), *args]
    try:
        result = subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=clean_env(),
                                timeout=RUN_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise ValidationError(f"{script.name} did not finish in {RUN_TIMEOUT_S} s", "run it by hand to see why") from None
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1][:300]
        raise ValidationError(f"{script.name} failed in the check environment: {last}",
                              f"run it by hand: {python_of(venv)} {script}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _task_agreement(
    metadata: dict, results: list[dict], expected: list[np.ndarray], work: Path, k: int
) -> float | None:
    """How often the bundle's task output (top-k, mask, keypoint x, y) equals the one computed from the reference outputs."""
    task = metadata.get("task")
    if task == "classification":
        ref = [list(np.argsort(-row.reshape(-1), kind="stable")[:k]) for row in expected[0]]
        got = [[entry["index"] for entry in r["top_k"]] for r in results]
        return float(np.mean([a == b for a, b in zip(ref, got, strict=True)]))
    if task == "segmentation":
        scores = expected[0]
        ref = np.argmax(scores, axis=-1) if scores.shape[-1] > 1 else scores[..., 0] > float(metadata.get("extra", {}).get("mask_threshold", 0.5))
        masks = np.stack([np.load(work / r["mask"][0]) for r in results])
        return float(np.mean(masks == ref))
    if task == "keypoints":
        # The written JSON, decoded on the device, against the toolkit's own decoding (regression
        # head first, else the heatmap peak): catches a template that reads the wrong output.
        from edgecompress.models.tasks import decode_keypoints

        documents = [json.loads((work / r["file"]).read_text()) for r in results]
        got = np.array([[[p["x"], p["y"]] for p in d["keypoints"]] for d in documents], dtype=np.float64)
        ref = decode_keypoints(expected).astype(np.float64)
        if got.shape != ref.shape:
            return 0.0
        return float(np.mean(np.all(got == ref, axis=-1)))
    return None


def _compare(directory, venv, info, result, metadata, expected, got, agreement, bench) -> CheckReport:
    deploy = metadata["deploy"]
    if len(got) != len(expected) or any(g.shape != e.shape for g, e in zip(got, expected, strict=False)):
        raise ValidationError(
            f"the bundle's outputs {[g.shape for g in got]} differ in shape from the toolkit's {[e.shape for e in expected]}",
            "rebuild the bundle with this toolkit version",
        )
    diffs = [OutputDiff(i, float(np.max(np.abs(g - e))), bool(np.array_equal(g, e)))
             for i, (g, e) in enumerate(zip(got, expected, strict=True))]
    tolerance = None if deploy["integer"] else compare_outputs(expected, got, "float", "raw uint8 images")
    return CheckReport(
        bundle=directory, venv=venv, python=info["python"], packages=info["packages"], tensorflow_free=True,
        runtime=result["runtime"], task=metadata.get("task"), integer=deploy["integer"], samples=len(got[0]),
        diffs=diffs, tolerance_check=tolerance, task_agreement=agreement, bench=bench,
    )


def _require_agreement(report: CheckReport) -> None:
    worst = max(d.max_abs_diff for d in report.diffs)
    if report.integer and not report.exact:
        raise ValidationError(
            f"the int8 bundle's outputs differ from the toolkit's LiteRT outputs (max |Δ| {worst:.3g}); they must be identical",
            "rebuild the bundle; if it persists, report it with the bundle attached",
        )
    if report.tolerance_check is not None and not report.tolerance_check.passed:
        raise ValidationError(f"the float bundle's outputs differ from the toolkit's: {report.tolerance_check.describe()}",
                              "rebuild the bundle; if it persists, report it with the bundle attached")
    if report.integer and report.task_agreement is not None and report.task_agreement < 1.0:
        raise ValidationError(
            f"run.py's {report.task} result agrees with the toolkit's on only {report.task_agreement:.1%}",
            "report it with the bundle attached",
        )
