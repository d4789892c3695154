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
import math
import os
import re
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
            inputs=tuple(InputSpec.from_dict(d) for d in data.get("inputs") or []),
            preprocessing=Preprocessing.from_dict(pre) if pre else None,
            labels=tuple(labels) if labels is not None else None,
            lineage=tuple(LineageStep.from_dict(d) for d in data.get("lineage") or []),
            extra=dict(data.get("extra") or {}),
        )

    def with_step(self, step: LineageStep, **changes: Any) -> Metadata:
        return replace(self, lineage=(*self.lineage, step), **changes)


# --------------------------------------------------------------------------- the sidecar's schema

#: a sidecar is a few KB; the labels of a large classifier make it tens of KB
MAX_SIDECAR_BYTES = 8 << 20
#: a model input side or channel count beyond this is no edge model (and data would be allocated for it)
MAX_INPUT_DIM = 1 << 16
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class SidecarError(ValueError):
    """A sidecar field of the wrong type or range; the message starts with the field's place."""


def _shown(value: Any) -> str:
    text = repr(value) if isinstance(value, str | int | float | bool | type(None)) else f"a {type(value).__name__}"
    return text if len(text) <= 60 else text[:57] + "..."


def _text(value: Any, where: str, limit: int = 4096) -> str:
    """Text without control characters: it is printed in tables and terminals, and used in paths' names."""
    if not isinstance(value, str) or len(value) > limit or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise SidecarError(f"{where}: expected text of at most {limit} characters without control characters, got {_shown(value)}")
    return value


def _items(value: Any, where: str, limit: int) -> list:
    if not isinstance(value, list) or len(value) > limit:
        raise SidecarError(f"{where}: expected a list of at most {limit} entries, got {_shown(value)}")
    return value


def _mapping(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise SidecarError(f"{where}: expected an object, got {_shown(value)}")
    return value


def _finite(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SidecarError(f"{where}: expected a finite number, got {_shown(value)}")
    return float(value)


def validate_metadata(data: Any) -> None:
    """Check a sidecar's JSON against what the toolkit writes; raises ``SidecarError`` naming the field."""
    data = _mapping(data, "the sidecar")
    if data.get("edgecompress_metadata", 1) != 1 or isinstance(data.get("edgecompress_metadata"), bool):
        raise SidecarError(f"edgecompress_metadata: version {_shown(data.get('edgecompress_metadata'))} is not one this toolkit reads")
    if data.get("task") is not None:
        _text(data["task"], "task", 64)
    channels = None
    for i, spec in enumerate(_items(data.get("inputs") or [], "inputs", 16)):
        spec = _mapping(spec, f"inputs[{i}]")
        shape = _items(spec.get("shape"), f"inputs[{i}].shape", 8)
        for j, dim in enumerate(shape):
            if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or not 0 < dim <= MAX_INPUT_DIM):
                raise SidecarError(f"inputs[{i}].shape[{j}]: expected a size from 1 to {MAX_INPUT_DIM} or null, got {_shown(dim)}")
        for key, limit in (("dtype", 32), ("name", 256), ("layout", 16)):
            if key in spec:
                _text(spec[key], f"inputs[{i}].{key}", limit)
        if str(spec.get("layout", "NHWC")).upper() not in ("NHWC", "NCHW"):
            raise SidecarError(f"inputs[{i}].layout: expected NHWC or NCHW, got {_shown(spec['layout'])}")
        if i == 0 and len(shape) == 3 and spec.get("layout", "NHWC") == "NHWC":
            channels = shape[-1]
    if data.get("preprocessing") is not None:
        _validate_preprocessing(_mapping(data["preprocessing"], "preprocessing"), channels)
    if data.get("labels") is not None:
        for i, label in enumerate(_items(data["labels"], "labels", 1_000_000)):
            _text(label, f"labels[{i}]", 256)
    for i, step in enumerate(_items(data.get("lineage") or [], "lineage", 10_000)):
        step = _mapping(step, f"lineage[{i}]")
        _text(step.get("step"), f"lineage[{i}].step", 64)
        _mapping(step.get("params"), f"lineage[{i}].params")
        if not isinstance(step.get("source_sha256"), str) or not _SHA256.match(step["source_sha256"]):
            raise SidecarError(f"lineage[{i}].source_sha256: expected 64 hex digits, got {_shown(step.get('source_sha256'))}")
        _text(step.get("source"), f"lineage[{i}].source")
        if "timestamp" in step:
            _text(step["timestamp"], f"lineage[{i}].timestamp", 64)
    _validate_extra(_mapping(data.get("extra") or {}, "extra"))


def _validate_preprocessing(pre: dict, channels: int | None) -> None:
    for key in ("scale", "offset"):
        if key in pre:
            _finite(pre[key], f"preprocessing.{key}")
    for key in ("mean", "std"):
        if key in pre:
            values = [_finite(v, f"preprocessing.{key}[{i}]") for i, v in enumerate(_items(pre[key], f"preprocessing.{key}", 4))]
            if len(values) not in {1, channels or len(values)}:
                raise SidecarError(f"preprocessing.{key}: {len(values)} values for a model input of {channels} channels")
    for key in ("color", "resize"):
        if key in pre:
            _text(pre[key], f"preprocessing.{key}", 16)
    try:
        Preprocessing.from_dict(pre)
    except (ValueError, TypeError) as exc:
        raise SidecarError(f"preprocessing: {exc}") from None


def _validate_extra(extra: dict) -> None:
    """The entries of ``extra`` the toolkit reads back; others are kept as they are."""
    for key in ("model_name", "zoo", "keras_flavor"):
        if key in extra:
            _text(extra[key], f"extra.{key}", 256)
    if "output_names" in extra:
        names = [_text(n, f"extra.output_names[{i}]", 256) for i, n in enumerate(_items(extra["output_names"], "extra.output_names", 64))]
        if len(set(names)) != len(names):
            raise SidecarError("extra.output_names: a name appears twice")
    if "mask_threshold" in extra and not 0 <= _finite(extra["mask_threshold"], "extra.mask_threshold") <= 1:
        raise SidecarError("extra.mask_threshold: expected a number from 0 to 1")


def sidecar_path(model_path: Path) -> Path:
    model_path = Path(model_path)
    return model_path.with_name(model_path.name + ".json")


def read_sidecar(model_path: Path) -> Metadata | None:
    """The model's sidecar, validated against the schema first: a sidecar is data from wherever the model came from."""
    path = sidecar_path(model_path)
    if not path.is_file():
        return None
    try:
        if path.stat().st_size > MAX_SIDECAR_BYTES:
            raise SidecarError(f"it is {path.stat().st_size:,} bytes, more than a sidecar's {MAX_SIDECAR_BYTES:,}")
        data = json.loads(path.read_bytes().decode("utf-8"))
        validate_metadata(data)
        return Metadata.from_dict(data)
    except (ValueError, KeyError, TypeError, RecursionError, OSError) as exc:
        why = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise ModelLoadError(
            f"metadata sidecar {path} is not valid: {why}", "delete it or fix it; it is rewritten on export"
        ) from None


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
    _sweep_stale_partials(final)
    # The suffix is kept so the partial file is still recognised by format (ONNX has no magic bytes);
    # the pid tells a later run whether the writer is still alive.
    fd, tmp = tempfile.mkstemp(
        prefix=f".{final.stem}.", suffix=f".{os.getpid()}{PARTIAL_MARK}{final.suffix}", dir=final.parent
    )
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


PARTIAL_MARK = ".partial"


def _sweep_stale_partials(final: Path) -> None:
    """Remove temporaries of this output left by a writer that was killed (SIGKILL skips cleanup)."""
    pattern = f".{final.stem}.*{PARTIAL_MARK}{final.suffix}"
    for leftover in final.parent.glob(pattern):
        pid_text = leftover.name[: -len(PARTIAL_MARK + final.suffix)].rsplit(".", 1)[-1]
        if pid_text.isdigit() and not _alive(int(pid_text)):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
