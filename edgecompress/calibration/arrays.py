"""Reading ``.npy`` / ``.npz`` data safely: the header decides before a byte of data is loaded.

A ``.npy`` header declares shape and dtype; numpy allocates what it declares. So the header is read
and checked first: no Python objects, a numeric dtype, a shape whose bytes the file (or the zip
member) really holds — a 100-byte file declaring 10¹² elements is damaged, not a request for 4 TB.
An array larger than the memory to spare is memory-mapped (``.npy``: pages are read as batches are
taken) or refused with its size (``.npz`` members are compressed and cannot be mapped).
"""

from __future__ import annotations

import logging
import math
import os
import tokenize
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from edgecompress.errors import DataError

log = logging.getLogger(__name__)

#: share of the memory available now that an array read whole may take
MEMORY_SHARE = 0.5
#: more dimensions than any image batch, keypoint or mask array has
MAX_DIMS = 8
#: dtype kinds a data array may have: booleans, integers, floats (booleans are refused later, by role)
NUMERIC_KINDS = "biuf"
#: what a damaged header or member may raise inside numpy and zipfile
_READ_ERRORS = (ValueError, TypeError, SyntaxError, tokenize.TokenError, RecursionError, OverflowError, EOFError, OSError, KeyError,
                zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError, MemoryError)  # fmt: skip


@dataclass(frozen=True)
class ArrayHeader:
    shape: tuple[int, ...]
    dtype: np.dtype
    #: bytes before the data (magic + header)
    offset: int

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def human_bytes(count: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if count < 1024 or unit == "PiB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def memory_budget() -> int:
    """Bytes one array may take when read whole: a share of what the machine has available now."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(int(line.split()[1]) * 1024 * MEMORY_SHARE)
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") * MEMORY_SHARE)
    except (OSError, ValueError, AttributeError):
        return 2 << 30


def read_header(handle, source: str) -> ArrayHeader:
    """The checked header of the ``.npy`` stream at ``handle`` (positioned at its start)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy warns about Python 2 headers; the checks below decide
            version = npy_format.read_magic(handle)
            if version == (1, 0):
                shape, _, dtype = npy_format.read_array_header_1_0(handle)
            elif version == (2, 0):
                shape, _, dtype = npy_format.read_array_header_2_0(handle)
            else:
                raise ValueError(f"format version {version} is not one numpy.save writes for numeric arrays")
            offset = handle.tell()
    except _READ_ERRORS as exc:
        raise DataError(f"{source} is not a readable .npy array: {_short(exc)}", "re-save it with numpy.save") from None
    if dtype.hasobject:
        raise DataError(f"{source} holds Python objects, which are never unpickled", "save plain numeric arrays")
    if dtype.kind not in NUMERIC_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise DataError(f"{source} has dtype {dtype}", "use uint8 images or float32 model inputs")
    if len(shape) > MAX_DIMS or any(d < 0 for d in shape):
        raise DataError(f"{source} declares the shape {shape}", "re-save it with numpy.save")
    return ArrayHeader(tuple(int(d) for d in shape), dtype, offset)


def _short(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def _check_size(header: ArrayHeader, holds: int, source: str, mappable: bool) -> bool:
    """Whether to memory-map; refuses a header that declares more than the file holds, or too much to load."""
    if header.nbytes > holds:
        raise DataError(
            f"{source} declares shape {header.shape} ({header.dtype}) = {human_bytes(header.nbytes)} "
            f"but holds only {human_bytes(max(holds, 0))}: it is truncated or its header is damaged",
            "re-save it with numpy.save / numpy.savez",
        )
    budget = memory_budget()
    if header.nbytes <= budget:
        return False
    if not mappable:
        raise DataError(
            f"{source} holds {human_bytes(header.nbytes)} ({header.shape}, {header.dtype}), more than the "
            f"{human_bytes(budget)} of memory to spare here",
            "save it as a .npy (read memory-mapped), or pass fewer samples",
        )
    log.info("%s holds %s: memory-mapped, not loaded", source, human_bytes(header.nbytes))
    return True


def read_npy(path: Path) -> np.ndarray:
    """A ``.npy`` array, checked from its header first; memory-mapped when it is larger than the memory to spare."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            header = read_header(handle, str(path))
        mapped = _check_size(header, path.stat().st_size - header.offset, str(path), mappable=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.load(path, mmap_mode="r" if mapped else None, allow_pickle=False)
    except DataError:
        raise
    except _READ_ERRORS as exc:
        raise DataError(f"{path} is not a readable .npy file: {_short(exc)}", "re-save it with numpy.save") from None


def npz_headers(path: Path) -> tuple[zipfile.ZipFile, dict[str, tuple[zipfile.ZipInfo, ArrayHeader]]]:
    """The open archive and every array's (member, header), read without loading any data."""
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except _READ_ERRORS as exc:
        raise DataError(f"{path} is not a readable .npz file: {_short(exc)}", "re-save it with numpy.savez") from None
    try:
        headers = {}
        for info in archive.infolist():
            if info.is_dir() or not info.filename.endswith(".npy"):
                continue
            key = info.filename[: -len(".npy")]
            with archive.open(info) as member:
                headers[key] = (info, read_header(member, f"'{key}' in {path}"))
        return archive, headers
    except DataError:
        archive.close()
        raise
    except _READ_ERRORS as exc:
        archive.close()
        raise DataError(f"{path} is not a readable .npz file: {_short(exc)}", "re-save it with numpy.savez") from None


def read_npz_member(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo, header: ArrayHeader) -> np.ndarray:
    """One array of an ``.npz``: refused when its member cannot hold what its header declares, or when it is too large."""
    key = info.filename[: -len(".npy")]
    source = f"'{key}' in {path}"
    _check_size(header, info.file_size - header.offset, source, mappable=False)
    try:
        with warnings.catch_warnings(), archive.open(info) as member:
            warnings.simplefilter("ignore")
            array = npy_format.read_array(member, allow_pickle=False)
    except _READ_ERRORS as exc:
        raise DataError(f"{source} is damaged: {_short(exc)}", "re-save it with numpy.savez") from None
    if array.shape != header.shape:
        raise DataError(f"{source} is damaged: its data does not match its header", "re-save it with numpy.savez")
    return array
