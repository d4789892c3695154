"""The bundle manifest: the sha256 of every file `compress deploy` wrote, checked before anything runs.

``manifest.json`` in the bundle root::

    {"format": "edgecompress-bundle-manifest/1", "files": {"run.py": "<sha256 hex>", ...}}

It lists every file of the bundle except itself, by relative POSIX path. `compress deploy --check`
and the on-device self-check read the same file: a script that differs from the one the toolkit
wrote, a missing file or an extra one (an extra ``numpy.py`` next to ``run.py`` would be imported
in numpy's place) means the bundle is not the one that was built. Bytecode caches are reported
apart: Python writes them when the bundle's scripts run, and the check runs scripts with a pycache
prefix elsewhere, so it never reads a cache that sits in the bundle.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "edgecompress-bundle-manifest/1"
#: directories Python writes by itself when the bundle's scripts run
CACHE_DIRS = ("__pycache__",)


class ManifestError(ValueError):
    """The manifest is missing, unreadable or not in the agreed format."""


@dataclass(frozen=True)
class ManifestCheck:
    """What differs between a bundle directory and its manifest (paths are relative, POSIX)."""

    changed: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    #: bytecode caches (``__pycache__``), never part of the manifest and never trusted
    caches: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not (self.changed or self.missing or self.unexpected)

    def describe(self, limit: int = 6) -> str:
        parts = []
        for label, names in (("changed", self.changed), ("missing", self.missing), ("unexpected", self.unexpected)):
            if names:
                shown = ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")
                parts.append(f"{label}: {shown}")
        return "; ".join(parts) or "every file matches"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def bundle_files(directory: Path) -> tuple[dict[str, Path], list[str], list[str]]:
    """(regular files by relative path, other entries, caches) under ``directory``, links never followed.

    Anything that is not a regular file or a directory (a symbolic link, a FIFO, a device) is listed
    under "other": the toolkit never writes one, and following a link would hash a file outside the bundle.
    """
    directory = Path(directory)
    files: dict[str, Path] = {}
    other: list[str] = []
    caches: list[str] = []
    for root, dirs, names in os.walk(directory, followlinks=False):
        here = Path(root)
        for name in sorted(dirs):
            if (here / name).is_symlink():
                other.append(_relative(here / name, directory))
        dirs[:] = sorted(d for d in dirs if not (here / d).is_symlink())
        for name in sorted(names):
            path = here / name
            relative = _relative(path, directory)
            if relative == MANIFEST_FILE:
                continue
            mode = os.lstat(path).st_mode
            if any(part in CACHE_DIRS for part in PurePosixPath(relative).parts[:-1]):
                caches.append(relative)
            elif stat.S_ISREG(mode):
                files[relative] = path
            else:
                other.append(relative)
    return files, sorted(other), sorted(caches)


def _relative(path: Path, directory: Path) -> str:
    return path.relative_to(directory).as_posix()


def write_manifest(directory: str | os.PathLike) -> Path:
    """Record every file of the bundle; the last step of writing one."""
    directory = Path(directory)
    files, other, _ = bundle_files(directory)
    if other:
        raise ValueError(f"a bundle holds only regular files, not {', '.join(other)}")
    manifest = {"format": MANIFEST_FORMAT, "files": {name: file_sha256(path) for name, path in sorted(files.items())}}
    path = directory / MANIFEST_FILE
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return path


def read_manifest(directory: str | os.PathLike) -> dict[str, str]:
    """The manifest's {relative path: sha256}; ``ManifestError`` when it is absent or malformed."""
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file() or path.is_symlink():
        raise ManifestError(f"{path.parent} has no {MANIFEST_FILE}")
    if path.stat().st_size > 1 << 20:
        raise ManifestError(f"{path} is larger than 1 MiB")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise ManifestError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT or not isinstance(data.get("files"), dict):
        raise ManifestError(f"{path} is not an {MANIFEST_FORMAT} manifest")
    for name, digest in data["files"].items():
        if not _clean_relative(name):
            raise ManifestError(f"{path} lists '{name}', which is not a plain path inside the bundle")
        if not (isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)):
            raise ManifestError(f"{path} gives '{name}' a malformed sha256")
    return dict(data["files"])


def _clean_relative(name: object) -> bool:
    if not isinstance(name, str) or not name or "\\" in name or any(ord(c) < 32 for c in name):
        return False
    parts = PurePosixPath(name).parts
    return not name.startswith("/") and all(p not in ("", ".", "..") for p in parts) and name != MANIFEST_FILE


def verify_manifest(directory: str | os.PathLike) -> ManifestCheck:
    """Compare the bundle with its manifest; raises ``ManifestError`` when there is no usable manifest."""
    directory = Path(directory)
    expected = read_manifest(directory)
    files, other, caches = bundle_files(directory)
    changed = sorted(name for name, digest in expected.items() if name in files and file_sha256(files[name]) != digest)
    changed += sorted(name for name in other if name in expected)
    missing = sorted(name for name in expected if name not in files and name not in other)
    unexpected = sorted({*files, *other} - set(expected))
    return ManifestCheck(tuple(changed), tuple(missing), tuple(unexpected), tuple(caches))
