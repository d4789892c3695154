"""Build a deploy bundle: model, metadata, run.py, bench.py, requirements and README in one directory.

The bundle is assembled in a temporary directory next to the output and renamed into place, so
an interrupted build never leaves a half-written bundle where a device copy would pick it up.
Script templates are real Python files copied verbatim, with the toolkit's pure-numpy
preprocessing module next to them, so the device computes exactly what the toolkit measured.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecompress.artifacts import Artifact, ModelFormat, atomic_path
from edgecompress.calibration import preprocessing as preprocessing_module
from edgecompress.calibration.preprocessing import Preprocessing
from edgecompress.deploy.checks import Finding, ModelFacts, model_facts, run_checks
from edgecompress.deploy.readme import render_readme
from edgecompress.deploy.reference import write_android_test, write_reference
from edgecompress.deploy.targets import Target, get_target
from edgecompress.errors import UsageError, require

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).with_name("templates")
TEMPLATE_FILES = ("run.py", "bench.py", "litert_model.py")
MODEL_FILE = "model.tflite"
METADATA_FILE = MODEL_FILE + ".json"
SAMPLE_FILE = "sample.npy"


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: float
    zero_point: int

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype,
                "scale": self.scale, "zero_point": self.zero_point}


@dataclass(frozen=True)
class BundleReport:
    path: Path
    target: str
    source: Path
    files: tuple[str, ...]
    findings: tuple[Finding, ...]
    facts: ModelFacts
    archive: Path | None = None

    def to_dict(self) -> dict:
        return {
            "bundle": str(self.path),
            "target": self.target,
            "source": str(self.source),
            "files": list(self.files),
            "archive": str(self.archive) if self.archive else None,
            "integer": self.facts.integer,
            "binarized": self.facts.binarized,
            "macs": self.facts.macs,
            "warnings": [f.to_dict() for f in self.findings],
        }


def open_deployable(model: str | os.PathLike) -> Artifact:
    """The model as an Artifact, or one clear error saying which command makes a deployable file."""
    artifact = Artifact.open(model)
    if artifact.format.is_keras:
        raise UsageError(
            f"{artifact.path} is a Keras model ({artifact.format.value}); a bundle needs a converted .tflite",
            f"convert it first: `compress quantize {artifact.path} --mode int8 --calib DATA` (int8) "
            f"or `compress export {artifact.path}` (float)",
        )
    if artifact.format is ModelFormat.ONNX:
        raise UsageError(
            f"{artifact.path} is an ONNX model; bundles run LiteRT",
            "export a .tflite from the Keras source with `compress quantize` or `compress export`",
        )
    return artifact


def build_bundle(
    model: str | os.PathLike,
    target: str,
    output: str | os.PathLike,
    archive: bool = False,
    force: bool = False,
    preprocessing: dict | None = None,
) -> BundleReport:
    """Check the model for the target and write a self-contained bundle directory (and a .tar.gz).

    ``preprocessing`` (scale, offset, mean, std, color) is for a model without a sidecar; options beat
    the sidecar, as in `compress quantize`.
    """
    chosen = get_target(target)
    artifact = open_deployable(model)
    if preprocessing:
        import dataclasses

        from edgecompress.models.inputs import resolve_preprocessing

        resolved = resolve_preprocessing(artifact, preprocessing)
        if resolved.origin == "options":
            metadata = dataclasses.replace(artifact.metadata, preprocessing=resolved.preprocessing,
                                           extra={**artifact.metadata.extra, "preprocessing_origin": "options"})  # fmt: skip
            artifact = dataclasses.replace(artifact, metadata=metadata)
    output = Path(output)
    archive_path = output.with_name(output.name + ".tar.gz") if archive else None
    _check_output(output, artifact, archive_path, force)
    inputs, outputs = io_tensors(artifact)
    facts = model_facts(artifact, inputs.dtype, tuple(o.dtype for o in outputs))
    findings = tuple(run_checks(artifact, facts, chosen))
    for finding in findings:
        log.info("pre-deploy check %s: %s", finding.code, finding)
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(output) as tmp:
        tmp.mkdir()
        _write_bundle(tmp, output.name, artifact, chosen, facts, findings, inputs, outputs)
        files = tuple(sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file()))
    if archive_path is not None:
        with atomic_path(archive_path) as tmp_archive, tarfile.open(tmp_archive, "w:gz") as tar:
            tar.add(output, arcname=output.name)
    return BundleReport(output, chosen.name, artifact.path, files, findings, facts, archive_path)


def _check_output(output: Path, artifact: Artifact, archive_path: Path | None, force: bool) -> None:
    if output.exists() and not output.is_dir():
        raise UsageError(f"output {output} is a file, not a directory", "choose another -o")
    if output.is_dir() and any(output.iterdir()) and not force:
        raise UsageError(f"output directory {output} exists and is not empty", "pass --force to replace it, or choose another -o")
    if output.is_dir() and artifact.path.resolve().is_relative_to(output.resolve()):
        raise UsageError(f"the model {artifact.path} is inside the output directory {output}", "choose another -o")
    if archive_path is not None and archive_path.exists() and not force:
        raise UsageError(f"archive {archive_path} already exists", "pass --force to replace it, or choose another -o")


def io_tensors(artifact: Artifact) -> tuple[TensorInfo, list[TensorInfo]]:
    """Input and outputs with their quantization, in the order the toolkit's sessions return them."""
    if artifact.format is ModelFormat.LCE_TFLITE:
        lce = require("larq_compute_engine.tflite.python.interpreter", "larq", "reading binarized models")
        interpreter = lce.Interpreter(artifact.path.read_bytes())

        def info(name, shape, dtype, scale, zero) -> TensorInfo:
            return TensorInfo(name, tuple(int(d) for d in shape), np.dtype(dtype).name, float(scale or 0.0), int(zero or 0))

        first = info("input", interpreter.input_shapes[0], interpreter.input_types[0],
                     interpreter.input_scales[0], interpreter.input_zero_points[0])
        return first, [
            info(f"output_{i}", *fields)
            for i, fields in enumerate(zip(interpreter.output_shapes, interpreter.output_types,
                                           interpreter.output_scales, interpreter.output_zero_points, strict=True))
        ]
    from edgecompress.runtimes import open_session

    with open_session(artifact, runtime="litert") as session:
        specs = [session.inputs[0], *session.outputs]
    infos = [TensorInfo(s.name, tuple(int(d) for d in s.shape), s.dtype, float(s.scale or 0.0), int(s.zero_point or 0))
             for s in specs]
    return infos[0], infos[1:]


def _write_bundle(
    directory: Path,
    name: str,
    artifact: Artifact,
    target: Target,
    facts: ModelFacts,
    findings: tuple[Finding, ...],
    inputs: TensorInfo,
    outputs: list[TensorInfo],
) -> None:
    shutil.copyfile(artifact.path, directory / MODEL_FILE)
    for template in TEMPLATE_FILES:
        shutil.copyfile(TEMPLATES / template, directory / template)
    shutil.copyfile(preprocessing_module.__file__, directory / "preprocessing.py")
    requirements = target.requirements(facts.binarized)
    (directory / "requirements.txt").write_text("\n".join(requirements) + "\n")
    metadata = artifact.metadata.to_dict()
    pre_origin = artifact.metadata.extra.get("preprocessing_origin") or (
        "model metadata" if artifact.metadata.preprocessing else "assumed default"
    )
    if metadata["preprocessing"] is None:
        metadata["preprocessing"] = Preprocessing().to_dict()
    from edgecompress import __version__

    metadata["deploy"] = {
        "target": target.name,
        "target_description": target.description,
        "toolkit": f"edgecompress {__version__}",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source": str(artifact.path),
        "model_sha256": artifact.sha256(),
        "binarized": facts.binarized,
        "integer": facts.integer,
        "macs": facts.macs,
        "preprocessing_origin": pre_origin,
        "input": inputs.to_dict(),
        "outputs": [o.to_dict() for o in outputs],
        "requirements": [r for r in requirements if not r.startswith("#")],
        "warnings": [f.to_dict() for f in findings],
    }
    # Before the metadata is written (it records the self-check) and before any manifest of the files.
    metadata["deploy"]["self_check"] = write_reference(directory, metadata)
    if target.name == "android":
        write_android_test(directory)
    (directory / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    if len(inputs.shape) == 4 and inputs.shape[-1] in (1, 3):
        _, height, width, channels = inputs.shape
        # A smoke-test input in the no-extra-dependency format: raw uint8 pixels of the model's size.
        sample = np.random.default_rng(0).integers(0, 256, size=(height, width, channels), dtype=np.uint8)
    else:  # not an image (audio features, vectors…): a float model input of its shape
        sample = np.random.default_rng(0).standard_normal(inputs.shape[1:]).astype(np.float32)
    np.save(directory / SAMPLE_FILE, sample)
    (directory / "README.md").write_text(render_readme(name, target, metadata, findings))
