"""Artifacts: a model file, its format, and the metadata sidecar that travels with it.

The sidecar (``model.tflite.json``) holds task, input spec, preprocessing, labels and lineage.
It sits next to the model so it works for every format and survives copying to a device.
All writes are atomic: a temporary name in the same directory, renamed into place when complete.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import enum
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edgecompress.calibration.preprocessing import Preprocessing
from edgecompress.errors import ModelLoadError, UsageError

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGIC = b"PK\x03\x04"
TFLITE_IDENTIFIER = b"TFL3"
LCE_OP_MARKERS = (b"LceBconv2d", b"LceQuantize", b"LceDequantize")


class ModelFormat(str, enum.Enum):
    KERAS_H5 = "keras-h5"
    KERAS_V3 = "keras-v3"
    SAVEDMODEL = "savedmodel"
    TFLITE = "tflite"
    LCE_TFLITE = "lce-tflite"
    ONNX = "onnx"

    @property
    def is_keras(self) -> bool:
        return self in (ModelFormat.KERAS_H5, ModelFormat.KERAS_V3, ModelFormat.SAVEDMODEL)

    @property
    def suffix(self) -> str:
        return {"keras-h5": ".h5", "keras-v3": ".keras", "savedmodel": "", "onnx": ".onnx"}.get(
            self.value, ".tflite"
        )


def detect_format(path: Path) -> ModelFormat:
    """Decide the format from the file's content (magic bytes), not only its name."""
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"model file not found: {path}", "check the path")
    if path.is_dir():
        if (path / "saved_model.pb").exists():
            return ModelFormat.SAVEDMODEL
        raise ModelLoadError(
            f"{path} is a directory without saved_model.pb", "pass a .h5/.keras/.tflite/.onnx file or a SavedModel"
        )
    size = path.stat().st_size
    if size < 16:
        raise ModelLoadError(f"model file is damaged: {path} has only {size} bytes", "re-export or re-download it")
    with open(path, "rb") as handle:
        head = handle.read(16)
    if head.startswith(HDF5_MAGIC):
        return ModelFormat.KERAS_H5
    if head.startswith(ZIP_MAGIC):
        return ModelFormat.KERAS_V3
    if head[4:8] == TFLITE_IDENTIFIER:
        data = path.read_bytes()
        return ModelFormat.LCE_TFLITE if any(m in data for m in LCE_OP_MARKERS) else ModelFormat.TFLITE
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return ModelFormat.ONNX
    if suffix in (".h5", ".hdf5", ".keras", ".tflite"):
        raise ModelLoadError(
            f"model file is damaged: {path} has a {suffix} name but not the {suffix} file signature",
            "re-export or re-download it",
        )
    raise ModelLoadError(
        f"unknown model format: {path}",
        "supported: Keras .h5/.keras, SavedModel directories, .tflite and .onnx",
    )


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def size_of(path: Path) -> int:
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


@dataclass(frozen=True)
class InputSpec:
    """One model input without the batch dimension; layout is NHWC for images."""

    shape: tuple[int | None, ...]
    dtype: str = "float32"
    name: str = "input"
    layout: str = "NHWC"

    def to_dict(self) -> dict:
        return {"shape": list(self.shape), "dtype": self.dtype, "name": self.name, "layout": self.layout}

    @classmethod
    def from_dict(cls, data: dict) -> InputSpec:
        return cls(
            shape=tuple(data["shape"]),
            dtype=data.get("dtype", "float32"),
            name=data.get("name", "input"),
            layout=data.get("layout", "NHWC"),
        )


@dataclass(frozen=True)
class LineageStep:
    """One pass applied: its name, parameters, and the content hash of what it read."""

    step: str
    params: dict[str, Any]
    source_sha256: str
    source: str
    timestamp: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))

    def to_dict(self) -> dict:
        return {
            "step": self.step,
            "params": self.params,
            "source_sha256": self.source_sha256,
            "source": self.source,
            "timestamp": self.timestamp,
        }

    @classmethod
    def from_dict(cls, data: dict) -> LineageStep:
        return cls(**{k: data[k] for k in ("step", "params", "source_sha256", "source", "timestamp") if k in data})


@dataclass(frozen=True)
class Metadata:
    task: str | None = None
    inputs: tuple[InputSpec, ...] = ()
    preprocessing: Preprocessing | None = None
    labels: tuple[str, ...] | None = None
    lineage: tuple[LineageStep, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "edgecompress_metadata": 1,
            "task": self.task,
            "inputs": [spec.to_dict() for spec in self.inputs],
            "preprocessing": self.preprocessing.to_dict() if self.preprocessing else None,
            "labels": list(self.labels) if self.labels is not None else None,
            "lineage": [step.to_dict() for step in self.lineage],
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Metadata:
        pre = data.get("preprocessing")
        labels = data.get("labels")
        return cls(
            task=data.get("task"),
            inputs=tuple(InputSpec.from_dict(d) for d in data.get("inputs", [])),
            preprocessing=Preprocessing.from_dict(pre) if pre else None,
            labels=tuple(labels) if labels is not None else None,
            lineage=tuple(LineageStep.from_dict(d) for d in data.get("lineage", [])),
            extra=dict(data.get("extra", {})),
        )

    def with_step(self, step: LineageStep, **changes: Any) -> Metadata:
        return replace(self, lineage=(*self.lineage, step), **changes)


def sidecar_path(model_path: Path) -> Path:
    model_path = Path(model_path)
    return model_path.with_name(model_path.name + ".json")


def read_sidecar(model_path: Path) -> Metadata | None:
    path = sidecar_path(model_path)
    if not path.is_file():
        return None
    try:
        return Metadata.from_dict(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(
            f"metadata sidecar {path} is not valid: {exc}", "delete it or fix it; it is rewritten on export"
        ) from exc


@dataclass(frozen=True)
class Artifact:
    """An immutable handle on a model file: path, format and metadata."""

    path: Path
    format: ModelFormat
    metadata: Metadata = field(default_factory=Metadata)

    @classmethod
    def open(cls, path: str | os.PathLike) -> Artifact:
        path = Path(path)
        fmt = detect_format(path)
        return cls(path=path, format=fmt, metadata=read_sidecar(path) or Metadata())

    @property
    def size_bytes(self) -> int:
        return size_of(self.path)

    def sha256(self) -> str:
        return sha256_of(self.path)

    @property
    def sidecar(self) -> Path:
        return sidecar_path(self.path)

    def lineage_step(self, step: str, params: dict[str, Any]) -> LineageStep:
        return LineageStep(step=step, params=params, source_sha256=self.sha256(), source=str(self.path))


def check_output_path(path: Path, force: bool) -> Path:
    path = Path(path)
    if path.exists() and not force:
        raise UsageError(f"output {path} already exists", "pass --force to overwrite it, or choose another -o")
    if not path.parent.exists():
        raise UsageError(f"output directory {path.parent} does not exist", "create it first")
    return path


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; rename it into place only if the block succeeds."""
    final = Path(final)
    # The suffix is kept so the partial file is still recognised by format (ONNX has no magic bytes).
    fd, tmp = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=f".partial{final.suffix}", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    tmp_path.unlink()
    try:
        yield tmp_path
        if final.is_dir():  # a SavedModel or bundle directory: os.replace cannot overwrite it
            shutil.rmtree(final)
        os.replace(tmp_path, final)
    finally:
        if tmp_path.is_dir():
            shutil.rmtree(tmp_path, ignore_errors=True)
        elif tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def write_metadata(model_path: Path, metadata: Metadata) -> Path:
    path = sidecar_path(model_path)
    write_text_atomic(path, json.dumps(metadata.to_dict(), indent=2, sort_keys=False) + "\n")
    return path
