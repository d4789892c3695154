"""Fresh virtual environments that hold only a bundle's requirements, cached by their hash.

Why a venv and not the toolkit's own interpreter: the point of `compress deploy --check` is to
prove the bundle runs without TensorFlow, with exactly the pinned packages a device installs.
Creating one and installing ai-edge-litert takes a minute, so environments are keyed by the
requirements (and Python version) and reused; a file lock keeps parallel checks from racing.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from edgecompress.errors import RuntimeUnavailableError, ValidationError

log = logging.getLogger(__name__)

READY_MARKER = ".edgecompress-ready.json"
#: modules that must not be importable where a bundle is checked
FORBIDDEN_MODULES = ("tensorflow", "tf_keras", "keras", "edgecompress")
INSTALL_TIMEOUT_S = 1200

_PROBE = """
import importlib.metadata as m, importlib.util as u, json, sys
mods = {mods!r}
print(json.dumps({{
    "importable": [n for n in mods if u.find_spec(n) is not None],
    "packages": sorted(f"{{d.metadata['Name']}}=={{d.version}}" for d in m.distributions()),
    "python": sys.version.split()[0],
}}))
"""


def cache_root() -> Path:
    """``$EDGECOMPRESS_CACHE``, else ``~/.cache/edgecompress`` (XDG): check venvs and the arm64 root live here."""
    root = os.environ.get("EDGECOMPRESS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "edgecompress"
    )
    return Path(root)


def default_cache_dir() -> Path:
    return cache_root() / "deploy-venvs"


def clean_env() -> dict[str, str]:
    """The caller's environment without anything that could leak the toolkit's packages in."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def requirements_key(requirements: str, platform_id: str | None = None) -> str:
    """Which cached venv holds these requirements: their lines plus the Python and machine that run them."""
    lines = sorted(line.strip() for line in requirements.splitlines() if line.strip() and not line.startswith("#"))
    identity = "\n".join([*lines, *([platform_id] if platform_id else [platform.python_version(), platform.machine()])])
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


def python_of(venv: Path) -> Path:
    return venv / "bin" / "python"


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def probe(venv: Path) -> dict:
    """Which forbidden modules import in the venv, and what is installed there."""
    result = subprocess.run(
        [str(python_of(venv)), "-c", _PROBE.format(mods=FORBIDDEN_MODULES)],
        capture_output=True, text=True, env=clean_env(), cwd=venv, timeout=120, check=False,
    )
    if result.returncode != 0:
        raise RuntimeUnavailableError(f"the check environment {venv} is broken: {_last_line(result.stderr)}",
                                      f"delete {venv} and check again")
    return json.loads(result.stdout)


def require_no_tensorflow(venv: Path, info: dict) -> None:
    leaked = info["importable"]
    tf_packages = [p for p in info["packages"] if p.lower().startswith(("tensorflow", "tf-keras", "keras"))]
    if leaked or tf_packages:
        raise ValidationError(
            f"the check environment {venv} can import {', '.join(leaked or tf_packages)}; a bundle must run without them",
            "remove that package from the bundle's requirements.txt",
        )


def ensure_venv(requirements: str, cache_dir: Path | None = None) -> tuple[Path, dict]:
    """A ready venv with exactly these requirements (created once), and its probe result."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    venv = cache_dir / requirements_key(requirements)
    with locked(cache_dir / (venv.name + ".lock")):
        marker = venv / READY_MARKER
        if marker.is_file() and python_of(venv).exists():
            info = probe(venv)
            require_no_tensorflow(venv, info)
            return venv, info
        shutil.rmtree(venv, ignore_errors=True)
        log.info("creating the check environment %s", venv)
        _run([sys.executable, "-m", "venv", str(venv)], "creating a virtual environment")
        (venv / "requirements.txt").write_text(requirements)
        _run([str(python_of(venv)), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input",
              "-r", str(venv / "requirements.txt")], "installing the bundle's requirements")
        info = probe(venv)
        require_no_tensorflow(venv, info)
        marker.write_text(json.dumps(info, indent=1) + "\n")
        return venv, info


def _run(command: list[str], what: str) -> None:
    try:
        result = subprocess.run(command, capture_output=True, text=True, env=clean_env(),
                                timeout=INSTALL_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise RuntimeUnavailableError(f"{what} took longer than {INSTALL_TIMEOUT_S} s", "check the network to PyPI") from None
    if result.returncode != 0:
        raise RuntimeUnavailableError(f"{what} failed: {_last_line(result.stderr or result.stdout)}",
                                      "check the network to PyPI and the pins in requirements.txt")


def _last_line(text: str) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"
