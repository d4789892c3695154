"""Honest size ratios: an output is compared with the float model stored the same way, not the source file.

Why: a Keras file often carries the optimizer's state (Adam: two more copies of every weight) and
HDF5 overhead, so "source file / output file" printed a float export as "3× smaller". The
reference is what a pass recorded as ``float_reference`` (the float .tflite/.onnx source itself,
or the source's float32 parameter bytes); both files' own sizes stay visible beside it.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecompress.artifacts import Artifact


@dataclass(frozen=True)
class SizeComparison:
    source_bytes: int
    output_bytes: int
    #: the float model the ratio is taken against, and what it is
    reference_bytes: int
    reference: str
    #: bytes of optimizer state inside a Keras source file (0 when none or not Keras)
    optimizer_bytes: int = 0

    @property
    def ratio(self) -> float:
        return self.reference_bytes / max(1, self.output_bytes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source_bytes": self.source_bytes,
            "output_bytes": self.output_bytes,
            "reference_bytes": self.reference_bytes,
            "reference": self.reference,
            "ratio": self.ratio,
            "optimizer_bytes": self.optimizer_bytes,
        }

    def describe(self, human=None) -> str:
        """One line: both files, the ratio and what it is against (and the optimizer note)."""
        human = human or (lambda n: f"{n} B")
        verdict = f"{self.ratio:.2f}× smaller" if self.ratio >= 1 else f"{1 / self.ratio:.2f}× larger"
        line = (f"{human(self.source_bytes)} → {human(self.output_bytes)}; {verdict} than the float model "
                f"({human(self.reference_bytes)}: {self.reference})")  # fmt: skip
        if self.optimizer_bytes:
            line += f"; the source file also holds {human(self.optimizer_bytes)} of optimizer state"
        return line


def compare_sizes(source: Artifact, output: Artifact, details: dict[str, Any] | None = None) -> SizeComparison:
    """The one place a size ratio is computed (CLI, API, JSON, demo)."""
    details = details or {}
    reference = details.get("float_reference") or {}
    source_bytes = source.size_bytes
    if reference.get("bytes"):
        ref_bytes, what = int(reference["bytes"]), str(reference.get("what", "the float model"))
    else:
        ref_bytes, what = source_bytes, "the source file (no float reference was recorded)"
    optimizer = optimizer_state_bytes(source.path) if source.format.is_keras else 0
    return SizeComparison(source_bytes, output.size_bytes, ref_bytes, what, optimizer)


def optimizer_state_bytes(path: Path) -> int:
    """Bytes of optimizer variables stored in a Keras .h5 / .keras file (0 if none or unreadable)."""
    try:
        import h5py

        path = Path(path)
        if path.is_dir():
            return 0
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                if "model.weights.h5" not in archive.namelist():
                    return 0
                with h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as handle:
                    return _group_bytes(handle.get("optimizer"))
        with h5py.File(path, "r") as handle:
            return _group_bytes(handle.get("optimizer_weights"))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return 0


def _group_bytes(group) -> int:
    if group is None:
        return 0
    import h5py

    total = 0

    def visit(_name, obj) -> None:
        nonlocal total
        if isinstance(obj, h5py.Dataset):
            total += int(obj.size) * int(obj.dtype.itemsize)

    group.visititems(visit)
    return total

