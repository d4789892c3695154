"""Bundle archives (``DIR.tar.gz``): written plainly, and read back only when every member is harmless.

A bundle archive comes from elsewhere by nature (it is what gets copied), so before anything is
extracted each member must be a regular file or a directory inside one top folder, with a plain
relative name, and all of them together must fit a size budget. Links, devices, absolute names,
``..`` and a second top folder are refused by name; nothing is written outside the target folder.
"""

from __future__ import annotations

import tarfile
import zlib
from pathlib import Path, PurePosixPath

from edgecompress.errors import UsageError

#: more than any bundle holds (a model, a few scripts and references)
MAX_MEMBERS = 1000
#: uncompressed bytes of all members; the largest edge models are a few hundred MB
MAX_BYTES = 2 << 30
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


def is_archive(path: Path) -> bool:
    return Path(path).is_file() and Path(path).name.lower().endswith(ARCHIVE_SUFFIXES)


def _plain(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """What the archive records of each file: its name, size and mode bits, not who owned it here."""
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_archive(directory: Path, archive: Path) -> None:
    """``archive`` (gzip) holding ``directory`` under its own name."""
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(directory, arcname=directory.name, filter=_plain)


def extract_archive(archive: Path, into: Path) -> Path:
    """Check every member, then extract; returns the bundle folder inside ``into``."""
    archive = Path(archive)
    refuse = _refusal(archive)
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = _checked_members(tar, refuse)
            tar.extractall(into, members=members, filter="data")
    except UsageError:
        raise
    except (tarfile.TarError, EOFError, zlib.error, OSError, ValueError, UnicodeError) as exc:
        raise refuse(f"it is not a readable tar archive ({type(exc).__name__}: {exc})") from None
    top = into / PurePosixPath(members[0].name).parts[0]
    if not top.is_dir():
        raise refuse("its top entry is not a folder")
    return top


def _refusal(archive: Path):
    def refuse(why: str) -> UsageError:
        return UsageError(f"bundle archive {archive} refused: {why}; nothing was extracted",
                          "build the bundle with compress deploy --archive, or check the folder it came from")

    return refuse


def _checked_members(tar: tarfile.TarFile, refuse) -> list[tarfile.TarInfo]:
    members: list[tarfile.TarInfo] = []
    names: set[str] = set()
    tops: set[str] = set()
    total = 0
    for member in tar:  # streamed: a bomb is stopped at the budget, not read to its end
        name = member.name
        parts = PurePosixPath(name).parts
        if not parts or name.startswith("/") or "\\" in name or any(p in ("..", "") for p in parts) or any(
            ord(c) < 32 for c in name
        ):
            raise refuse(f"member '{name[:200]}' is not a plain relative path")
        if not (member.isreg() or member.isdir()):
            kind = "link" if member.issym() or member.islnk() else "device or special file"
            raise refuse(f"member '{name}' is a {kind}; a bundle holds only files and folders")
        normal = str(PurePosixPath(name))
        if normal in names:
            raise refuse(f"member '{name}' appears twice")
        names.add(normal)
        tops.add(parts[0])
        if len(tops) > 1:
            raise refuse(f"it holds more than one top folder ({', '.join(sorted(tops))})")
        if len(parts) == 1 and not member.isdir():
            raise refuse(f"member '{name}' is not inside a folder")
        total += member.size
        if total > MAX_BYTES:
            raise refuse(f"its members hold more than {MAX_BYTES / 2**20:g} MiB")
        if len(names) > MAX_MEMBERS:
            raise refuse(f"it holds more than {MAX_MEMBERS} members")
        members.append(member)
    if not members:
        raise refuse("it is empty")
    return members
