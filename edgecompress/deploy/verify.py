"""`compress deploy --check`: run a bundle in a TensorFlow-free venv and compare with the toolkit.

Nothing in a bundle runs before it is verified: every file against ``manifest.json``, every script
against the file this toolkit copies into bundles, ``requirements.txt`` against what it writes for
the bundle's target (pip would run a foreign package's build code). A bundle that fails is refused,
naming the files, unless the caller trusts it (``--trust-bundle``); then the report says which
foreign files ran. A ``.tar.gz`` bundle is checked member by member before it is extracted.

The same raw pixels go through the bundle's copied preprocessing and interpreter in the venv and
through the toolkit's preprocessing and LiteRT session here. Integer models must agree exactly
(same kernels, same quantization arithmetic); float models within the export tolerance, because a
different interpreter build may sum in another order.
"""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.machinery import all_suffixes
from pathlib import Path

import numpy as np

from edgecompress.artifacts import sha256_of
from edgecompress.calibration.preprocessing import Preprocessing
from edgecompress.compress.validate import CheckResult, compare_outputs
from edgecompress.deploy.archive import extract_archive, is_archive
from edgecompress.deploy.bundle import METADATA_FILE, MODEL_FILE, script_sources
from edgecompress.deploy.manifest import ManifestError, bundle_files, verify_manifest
from edgecompress.deploy.reference import reference_outputs
from edgecompress.deploy.targets import TARGETS
from edgecompress.deploy.venv import clean_env, ensure_venv, python_of
from edgecompress.errors import UsageError, ValidationError

log = logging.getLogger(__name__)

RUN_TIMEOUT_S = 600
#: files Python imports (a numpy.*.so or numpy.pyc beside run.py would be imported in numpy's place)
IMPORTABLE_SUFFIXES = (*all_suffixes(), ".pyw", ".pyd", ".pyo")
#: a model input side beyond this is no edge model (and the check would allocate it)
MAX_INPUT_SIDE = 4096
#: values in one model input (batch included): 4096 × 4096 × 4
MAX_INPUT_VALUES = 1 << 26


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
    #: files that were not the toolkit's and ran anyway because the caller trusted the bundle
    foreign: tuple[str, ...] = ()

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
            "foreign_files": list(self.foreign),
        }


def read_bundle(directory: Path) -> dict:
    """The bundle's metadata, checked for what the check relies on; its model must be the one it names."""
    directory = Path(directory)
    _require_bundle_files(directory)
    path = directory / METADATA_FILE
    try:
        metadata = json.loads(path.read_bytes().decode("utf-8"))
        deploy = metadata["deploy"]
        shape = deploy["input"]["shape"]
        valid = (
            isinstance(shape, list) and 2 <= len(shape) <= 8
            and all(isinstance(d, int) and not isinstance(d, bool) and 0 < d <= MAX_INPUT_SIDE for d in shape)
            and int(np.prod(shape, dtype=np.int64)) <= MAX_INPUT_VALUES
            and isinstance(deploy["model_sha256"], str) and isinstance(deploy["integer"], bool)
            and isinstance(deploy["binarized"], bool) and isinstance(deploy["target"], str)
            and isinstance(Preprocessing.from_dict(metadata["preprocessing"]), Preprocessing)
        )  # fmt: skip
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        valid = False
    if not valid:
        raise ValidationError(f"{path} is not the deploy metadata compress deploy writes",
                              "rebuild the bundle with compress deploy --force")
    if sha256_of(directory / MODEL_FILE) != deploy["model_sha256"]:
        raise ValidationError(f"{directory / MODEL_FILE} differs from the model the bundle was built from",
                              "rebuild the bundle with compress deploy --force")
    return metadata


def _require_bundle_files(directory: Path) -> None:
    needed = (MODEL_FILE, METADATA_FILE, "run.py", "bench.py", "requirements.txt")
    missing = [name for name in needed if not (directory / name).is_file()]
    if not directory.is_dir() or missing:
        raise UsageError(
            f"{directory} is not a deploy bundle" + (f" (missing {', '.join(missing)})" if directory.is_dir() else ""),
            "build one with: compress deploy MODEL.tflite --target rpi|android|linux -o DIR",
        )


def foreign_files(directory: Path) -> list[str]:
    """Each file that is not what `compress deploy` wrote, with why; empty for an untouched bundle."""
    problems: dict[str, str] = {}
    try:
        check = verify_manifest(directory)
        for names, why in ((check.changed, "changed"), (check.missing, "missing"), (check.unexpected, "not in the manifest")):
            problems.update((name, why) for name in names)
    except ManifestError as exc:
        problems["manifest.json"] = str(exc)
    files, _, _ = bundle_files(directory)
    sources = script_sources()
    for name, path in files.items():
        if name.endswith(IMPORTABLE_SUFFIXES) and name not in sources:
            problems.setdefault(name, "code the toolkit never writes")
        elif name in sources and path.read_bytes() != sources[name].read_bytes():
            problems.setdefault(name, "differs from this toolkit's copy")
    requirements = _requirements_problem(directory)
    if requirements:
        problems.setdefault("requirements.txt", requirements)
    return [f"{name} ({why})" for name, why in problems.items()]


def _requirements_problem(directory: Path) -> str | None:
    """requirements.txt must be what the toolkit writes for the bundle's target: pip runs what it names."""
    try:
        deploy = json.loads((directory / METADATA_FILE).read_bytes().decode("utf-8"))["deploy"]
        expected = TARGETS.get(deploy["target"]).requirements(bool(deploy["binarized"]))
        have = (directory / "requirements.txt").read_text(encoding="utf-8")
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError, UsageError):
        return "cannot be matched to the bundle's target"
    return None if have == "\n".join(expected) + "\n" else "not what the toolkit writes for its target"


def verify_bundle(directory: Path, trust_bundle: bool = False) -> tuple[str, ...]:
    """Refuse a bundle that is not the toolkit's before anything in it runs; with trust, say what is foreign."""
    _require_bundle_files(directory)
    foreign = foreign_files(directory)
    if foreign and not trust_bundle:
        shown = "; ".join(foreign[:6]) + (f"; and {len(foreign) - 6} more" if len(foreign) > 6 else "")
        raise ValidationError(
            f"{directory} is not the bundle compress deploy wrote ({shown}); none of its scripts was run",
            "rebuild it with compress deploy --force, or pass --trust-bundle to run its code anyway",
        )
    if foreign:
        log.warning("running foreign code from %s (--trust-bundle): %s", directory, "; ".join(foreign))
    return tuple(foreign)


@contextlib.contextmanager
def opened_bundle(path: Path) -> Iterator[Path]:
    """The bundle folder: ``path`` itself, or an archive's folder extracted (after its checks) to a temporary place."""
    path = Path(path)
    if not is_archive(path):
        yield path.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="edgecompress-bundle-") as tmp:
        yield extract_archive(path, Path(tmp))


def check_bundle(
    directory: str | Path,
    threads: int = 2,
    samples: int = 4,
    runs: int = 50,
    cache_dir: Path | None = None,
    trust_bundle: bool = False,
) -> CheckReport:
    """Verify the bundle (folder or archive), run it in a fresh venv and compare with the toolkit.

    Raises ValidationError for a bundle that is not the toolkit's (unless ``trust_bundle``) and on a mismatch.
    This runs it natively; deploy/emulated.py runs it in an emulated Raspberry Pi userland (--arch aarch64).
    """
    given = Path(directory)
    with opened_bundle(given) as directory:
        foreign = verify_bundle(directory, trust_bundle)
        metadata = read_bundle(directory)
        report = _run_and_compare(directory, metadata, threads, samples, runs, cache_dir)
    report.bundle = given.resolve() if is_archive(given) else directory
    report.foreign = foreign
    _require_agreement(report)
    return report


def _run_and_compare(directory: Path, metadata: dict, threads: int, samples: int, runs: int,
                     cache_dir: Path | None) -> CheckReport:  # fmt: skip
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
        expected = reference_outputs(directory, metadata, raw, threads)
        try:  # what a trusted foreign run.py left behind may be anything
            with np.load(work / "outputs.npz", allow_pickle=False) as saved:
                got = [saved[f"output_{i}"] for i in range(len(saved.files))]
            agreement = _task_agreement(metadata, result["results"], expected, work, top_k)
        except (OSError, ValueError, KeyError, TypeError, IndexError, EOFError, zlib.error, zipfile.BadZipFile) as exc:
            raise ValidationError(f"run.py did not write the outputs the toolkit's run.py writes ({type(exc).__name__}: {exc})",
                                  "rebuild the bundle with compress deploy --force") from None
        bench = run_script(venv, directory / "bench.py", work, "--threads", str(threads), "--runs", str(runs), "--json")
    return _compare(directory, venv, info, result, metadata, expected, got, agreement, bench)


def _is_image(shape) -> bool:
    return len(shape) == 4 and int(shape[-1]) in (1, 3)


def run_script(venv: Path, script: Path, cwd: Path, *args: str) -> dict:
    command = [str(python_of(venv)), str(script), *args]
    # Bytecode goes to (and is read from) the work folder only: a planted __pycache__ in the bundle never runs.
    env = {**clean_env(), "PYTHONPYCACHEPREFIX": str(cwd / ".pycache")}
    try:
        result = subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env,
                                timeout=RUN_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise ValidationError(f"{script.name} did not finish in {RUN_TIMEOUT_S} s", "run it by hand to see why") from None
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1][:300]
        raise ValidationError(f"{script.name} failed in the check environment: {last}",
                              f"run it by hand: {python_of(venv)} {script}")
    try:
        answer = json.loads(result.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        answer = None
    if not isinstance(answer, dict):
        raise ValidationError(f"{script.name} did not print the JSON line the toolkit's {script.name} prints",
                              "rebuild the bundle with compress deploy --force")
    return answer


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
        runtime=str(result.get("runtime", "unknown")), task=metadata.get("task"), integer=deploy["integer"], samples=len(got[0]),
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
