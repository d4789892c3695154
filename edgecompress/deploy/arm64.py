"""An emulated Raspberry Pi userland: a Debian arm64 root filesystem run under qemu-user.

Why: a bundle promises a 64-bit ARM device, and the aarch64 wheels of ai-edge-litert and
tflite-runtime are different builds from the x86 ones. Running them here, in Debian bookworm (what
Raspberry Pi OS Bookworm is built on: Python 3.11, glibc 2.36), shows they compute what the toolkit
measured. The root filesystem is built once with debootstrap and cached; venvs live inside it.

Three traps, each handled here (measured in ../shared/ARM64.md):
1. qemu-user shows the host's x86 ``/proc/cpuinfo``, and ai-edge-litert's cpuinfo library then
   crashes: every run sees a Raspberry Pi cpuinfo bind-mounted over it.
2. qemu's default ``max`` CPU has SME, and XNNPACK's int8 path returns wrong values through it; a Pi
   has none: ``QEMU_CPU`` is always set to the Pi's core.
3. A bind mount left under the root makes deleting it delete what is mounted: every run mounts in a
   private mount namespace (``unshare``) that vanishes with the process, no ``/dev`` is bind-mounted
   (debootstrap makes the device nodes), and nothing is deleted while anything under it is mounted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from edgecompress.deploy.venv import FORBIDDEN_MODULES, cache_root, locked, requirements_key
from edgecompress.errors import RuntimeUnavailableError, UsageError, ValidationError

log = logging.getLogger(__name__)

SUITE = "bookworm"
#: bump when the recipe below changes: an older cached root filesystem is then rebuilt
ROOTFS_VERSION = 1
PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
#: host command → the Debian package that provides it
TOOLS = {"qemu-aarch64-static": "qemu-user-static", "update-binfmts": "binfmt-support", "debootstrap": "debootstrap"}
INSTALL_HINT = "install them with: apt-get install -y qemu-user-static binfmt-support debootstrap (or: make arm64-tools)"
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
READY_MARKER = ".edgecompress-rootfs.json"
VENV_MARKER = ".edgecompress-ready.json"
VENVS_IN_ROOT = "/opt/edgecompress/venvs"
CA_IN_ROOT = "/etc/edgecompress/host-ca.pem"
BUILD_TIMEOUT_S = 3600
RUN_TIMEOUT_S = 1800


@dataclass(frozen=True)
class EmulatedCpu:
    """The core of a Raspberry Pi model, as qemu emulates it and as its /proc/cpuinfo describes it."""

    name: str
    qemu_cpu: str
    description: str
    part: str
    variant: str
    revision: int
    features: str

    def cpuinfo(self, processors: int) -> str:
        block = (
            "processor\t: {n}\nBogoMIPS\t: 108.00\nFeatures\t: {features}\nCPU implementer\t: 0x41\n"
            "CPU architecture: 8\nCPU variant\t: {variant}\nCPU part\t: {part}\nCPU revision\t: {revision}\n\n"
        )
        body = "".join(block.format(n=n, features=self.features, variant=self.variant, part=self.part,
                                    revision=self.revision) for n in range(processors))
        return body + f"Model\t\t: {self.description}\n"


CPUS = {
    "pi4": EmulatedCpu("pi4", "cortex-a72", "Raspberry Pi 4 Model B (Cortex-A72)", "0xd08", "0x0", 3,
                       "fp asimd evtstrm crc32 cpuid"),
    "pi5": EmulatedCpu("pi5", "cortex-a76", "Raspberry Pi 5 Model B (Cortex-A76)", "0xd0b", "0x4", 1,
                       "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"),
}


def get_cpu(name: str) -> EmulatedCpu:
    if name not in CPUS:
        raise UsageError(f"unknown --cpu {name!r}", f"choose one of: {', '.join(sorted(CPUS))}")
    return CPUS[name]


def missing_tools() -> list[str]:
    return [package for command, package in TOOLS.items() if shutil.which(command) is None]


def require_tools() -> None:
    """Root and the three host tools, or one line naming what is missing and how to install it."""
    missing = missing_tools()
    if missing:
        raise RuntimeUnavailableError(f"emulating aarch64 needs {', '.join(missing)}, which is not installed", INSTALL_HINT)
    if os.geteuid() != 0:
        raise RuntimeUnavailableError("emulating aarch64 needs root (debootstrap, chroot and mounts)",
                                      "run the check as root, e.g. with sudo")


def ensure_binfmt() -> None:
    """Register qemu-aarch64 with the kernel, so aarch64 programs in the root filesystem just run."""
    entry = BINFMT_DIR / "qemu-aarch64"
    if not (BINFMT_DIR / "register").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR)], capture_output=True, check=False)
    if not entry.exists() or "enabled" not in entry.read_text():
        subprocess.run(["update-binfmts", "--enable", "qemu-aarch64"], capture_output=True, check=False)
    if not entry.exists() or "enabled" not in entry.read_text():
        raise RuntimeUnavailableError(
            "the kernel does not run aarch64 programs through qemu (binfmt_misc: no enabled qemu-aarch64 entry)",
            f"run: mount -t binfmt_misc binfmt_misc {BINFMT_DIR}; update-binfmts --enable qemu-aarch64",
        )


def debian_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The Debian mirror apt already uses here (deb822 ``.sources`` or one-line ``.list``), else Debian's CDN."""
    files = sorted((sources / "sources.list.d").glob("*.sources")) + [sources / "sources.list",
                                                                       *sorted((sources / "sources.list.d").glob("*.list"))]
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, flags=re.M))
                suites = fields.get("Suites", "").split()
                if "deb" in fields.get("Types", "").split() and SUITE in suites and fields.get("URIs"):
                    return fields["URIs"].split()[0].rstrip("/")
        else:
            for line in text.splitlines():
                match = re.match(r"\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+" + SUITE + r"\s", line + " ")
                if match:
                    return match.group(1).rstrip("/")
    return DEFAULT_MIRROR


def processors() -> int:
    """How many CPUs the emulated cpuinfo lists: the host's possible CPUs, as the cpuinfo library expects."""
    try:
        text = Path("/sys/devices/system/cpu/possible").read_text().strip()
    except OSError:
        return os.cpu_count() or 1
    count = 0
    for part in text.split(","):
        low, _, high = part.partition("-")
        count += int(high or low) - int(low) + 1
    return max(count, 1)


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` in this process's mount namespace (deepest first)."""
    root = str(Path(path).resolve())
    points = []
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            point = line.split()[4].encode().decode("unicode_escape")
            if point == root or point.startswith(root + "/"):
                points.append(point)
    return sorted(points, key=len, reverse=True)


def remove_tree(path: Path) -> None:
    """Delete a root filesystem only when nothing is mounted under it (trap 3)."""
    for point in mounts_under(path):
        subprocess.run(["umount", point], capture_output=True, check=False)
    left = mounts_under(path)
    if left:
        raise RuntimeUnavailableError(f"{path} still has mounts ({', '.join(left)}); not deleting it",
                                      f"unmount them (umount {left[0]}) and run again")
    shutil.rmtree(path, ignore_errors=True)


@dataclass(frozen=True)
class Rootfs:
    """A ready arm64 root filesystem and how to run programs in it."""

    path: Path
    cache_dir: Path

    def host_path(self, inside: str) -> Path:
        return self.path / inside.lstrip("/")

    def inside_path(self, host: Path) -> str:
        return "/" + str(Path(host).resolve().relative_to(self.path.resolve()))

    def run(self, argv: list[str], cpu: EmulatedCpu, env: dict[str, str] | None = None, cwd: str = "/",
            timeout: float = RUN_TIMEOUT_S) -> subprocess.CompletedProcess:
        """Run ``argv`` inside, as on the given Pi: its cpuinfo, its core, a clean environment."""
        cpuinfo = self.cache_dir / f"cpuinfo-{cpu.name}-{processors()}"
        if not cpuinfo.is_file():  # written aside and renamed: a concurrent run never binds a half file
            partial = cpuinfo.with_name(f"{cpuinfo.name}.{os.getpid()}.partial")
            partial.write_text(cpu.cpuinfo(processors()))
            os.replace(partial, cpuinfo)
        inner = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME": "/root", "LANG": "C.UTF-8",
                 "QEMU_CPU": cpu.qemu_cpu, **(env or {})}
        return _in_namespace(self.path, argv, inner, cwd, cpuinfo, timeout)


def _in_namespace(root: Path, argv: list[str], env: dict[str, str], cwd: str, cpuinfo: Path | None,
                  timeout: float) -> subprocess.CompletedProcess:
    """chroot inside a private mount namespace: proc, sys and the fake cpuinfo disappear with the process."""
    mounts = ""
    if cpuinfo is not None:
        mounts = ('mount -t proc proc "$R/proc" && mount -t sysfs sysfs "$R/sys" && '
                  'mount --bind "$C" "$R/proc/cpuinfo" && ')
    script = mounts + 'exec chroot "$R" /usr/bin/env -i "$@"'
    command = ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", script, "sh",
               *(f"{k}={v}" for k, v in env.items()), "/usr/bin/env", "-C", cwd, *argv]
    outer = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "R": str(root), "C": str(cpuinfo or ""),
             "QEMU_CPU": env.get("QEMU_CPU", CPUS["pi4"].qemu_cpu)}
    try:
        return subprocess.run(command, capture_output=True, text=True, env=outer, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise RuntimeUnavailableError(f"{' '.join(argv[:3])} did not finish in {timeout:.0f} s under emulation",
                                      "run it by hand in the root filesystem to see why") from None


def arm64_cache(cache_dir: Path | None = None) -> Path:
    return (Path(cache_dir) if cache_dir else cache_root()) / "arm64"


def ensure_rootfs(cache_dir: Path | None = None) -> Rootfs:
    """The cached root filesystem, built on first use (about 5 minutes) under a lock.

    Built into ``NAME.partial`` and renamed into place after its marker is written, so a crash or a
    concurrent run never sees a half-built root; a stale partial is removed (mounts checked first).
    """
    require_tools()
    ensure_binfmt()
    cache = arm64_cache(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    final = cache / f"{SUITE}-arm64-v{ROOTFS_VERSION}"
    with locked(cache / "rootfs.lock"):
        if (final / READY_MARKER).is_file():
            return Rootfs(final, cache)
        if final.exists():
            remove_tree(final)
        partial = cache / (final.name + ".partial")
        if partial.exists():
            remove_tree(partial)
        started = time.monotonic()
        _build(partial)
        marker = {"version": ROOTFS_VERSION, "suite": SUITE, "packages": list(PACKAGES),
                  "mirror": debian_mirror(), "build_seconds": round(time.monotonic() - started, 1)}
        (partial / READY_MARKER).write_text(json.dumps(marker, indent=1) + "\n")
        os.replace(partial, final)
        log.info("arm64 root filesystem ready in %.0f s: %s", marker["build_seconds"], final)
        return Rootfs(final, cache)


def _build(root: Path) -> None:
    mirror = debian_mirror()
    log.info("building an arm64 Debian %s root filesystem from %s in %s (once; about 5 minutes)", SUITE, mirror, root)
    _host(["debootstrap", "--arch=arm64", "--foreign", "--variant=minbase", f"--include={','.join(PACKAGES)}",
           SUITE, str(root), mirror], "debootstrap (first stage)")
    shutil.copy2(shutil.which("qemu-aarch64-static"), root / "usr/bin/qemu-aarch64-static")
    result = _in_namespace(root, ["/debootstrap/debootstrap", "--second-stage"],
                           {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "QEMU_CPU": CPUS["pi4"].qemu_cpu}, "/", None,
                           BUILD_TIMEOUT_S)
    if result.returncode != 0:
        raise RuntimeUnavailableError(f"debootstrap's second stage failed: {_last_line(result.stdout + result.stderr)}",
                                      f"see {root}/debootstrap/debootstrap.log")
    (root / "etc/apt/sources.list").write_text(f"deb {mirror} {SUITE} main\n")
    for deb in (root / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()  # 100+ MB of downloaded packages nobody needs again


def _host(command: list[str], what: str) -> None:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise RuntimeUnavailableError(f"{what} took longer than {BUILD_TIMEOUT_S} s", "check the network to the Debian mirror") from None
    if result.returncode != 0:
        raise RuntimeUnavailableError(f"{what} failed: {_last_line(result.stderr or result.stdout)}",
                                      "check the network to the Debian mirror (read from /etc/apt/sources.list.d)")


# --- pip inside the root filesystem ------------------------------------------------------------------

PIP_PASSTHROUGH = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST", "PIP_DEFAULT_TIMEOUT", "PIP_RETRIES",
                   "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")
PIP_CONFIG_FILES = ("/etc/pip.conf", "/etc/xdg/pip/pip.conf", "~/.config/pip/pip.conf", "~/.pip/pip.conf")


def host_pip_settings() -> tuple[dict[str, str], Path | None]:
    """The host's pip index settings as environment variables, and the CA bundle it trusts.

    pip inside the root filesystem must reach the registry the way pip does here: the same index,
    proxy and certificates (a TLS-intercepting egress needs the host's extra CA). ``PIP_FIND_LINKS``
    is left out on purpose: it points at host folders of x86 wheels.
    """
    import configparser

    env: dict[str, str] = {}
    cert: str | None = None
    files = [os.path.expanduser(p) for p in PIP_CONFIG_FILES]
    if os.environ.get("PIP_CONFIG_FILE"):
        files.append(os.environ["PIP_CONFIG_FILE"])
    for name in files:
        parser = configparser.ConfigParser()
        with contextlib.suppress(OSError, configparser.Error):
            parser.read(name)
        for section in ("global", "install"):
            if not parser.has_section(section):
                continue
            for key in ("index-url", "extra-index-url", "trusted-host", "timeout"):
                if parser.has_option(section, key):
                    env["PIP_" + key.upper().replace("-", "_")] = " ".join(parser.get(section, key).split())
            if parser.has_option(section, "cert"):
                cert = parser.get(section, "cert")
    if "PIP_TIMEOUT" in env:
        env["PIP_DEFAULT_TIMEOUT"] = env.pop("PIP_TIMEOUT")
    env.update({k: os.environ[k] for k in PIP_PASSTHROUGH if os.environ.get(k)})
    for variable in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        if not cert and os.environ.get(variable):
            cert = os.environ[variable]
    cert = cert or "/etc/ssl/certs/ca-certificates.crt"
    return env, (Path(cert) if Path(cert).is_file() else None)


def _prepare_network(rootfs: Rootfs) -> dict[str, str]:
    """DNS and trust for pip inside, refreshed on every install (the host's may have changed)."""
    for name in ("resolv.conf", "hosts"):
        source = Path("/etc") / name
        if source.is_file():
            target = rootfs.path / "etc" / name
            if target.is_symlink():
                target.unlink()
            shutil.copyfile(source, target)
    env, cert = host_pip_settings()
    if cert is not None:
        target = rootfs.host_path(CA_IN_ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(cert, target)
        env.update({"PIP_CERT": CA_IN_ROOT, "SSL_CERT_FILE": CA_IN_ROOT, "REQUESTS_CA_BUNDLE": CA_IN_ROOT})
    return env


_PROBE = (
    "import importlib.metadata as m, importlib.util as u, json, platform, sys; "
    "print(json.dumps({'importable': [n for n in %r if u.find_spec(n) is not None], "
    "'packages': sorted(f\"{d.metadata['Name']}=={d.version}\" for d in m.distributions()), "
    "'python': sys.version.split()[0], 'machine': platform.machine()}))"
)


def ensure_venv(rootfs: Rootfs, requirements: str) -> tuple[str, dict]:
    """A venv inside the root filesystem with exactly these requirements (aarch64 wheels), created once."""
    key = requirements_key(requirements, f"{SUITE}-arm64-v{ROOTFS_VERSION}")
    inside = f"{VENVS_IN_ROOT}/{key}"
    host = rootfs.host_path(inside)
    cpu = CPUS["pi4"]
    with locked(rootfs.cache_dir / f"venv-{key}.lock"):
        marker = host / VENV_MARKER
        if marker.is_file():
            return inside, json.loads(marker.read_text())
        shutil.rmtree(host, ignore_errors=True)  # a venv, never a mount point
        log.info("creating the emulated check environment %s (aarch64 wheels)", inside)
        _checked(rootfs.run(["python3", "-m", "venv", inside], cpu), "creating a virtual environment under emulation")
        (host / "requirements.txt").write_text(requirements)
        env = _prepare_network(rootfs)
        _checked(rootfs.run([f"{inside}/bin/python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                             "--no-input", "-r", f"{inside}/requirements.txt"], cpu, env=env),
                 "installing the bundle's requirements under emulation (aarch64 wheels)")
        probe = rootfs.run([f"{inside}/bin/python", "-c", _PROBE % (FORBIDDEN_MODULES,)], cpu)
        _checked(probe, "probing the emulated check environment")
        info = json.loads(probe.stdout.strip().splitlines()[-1])
        if info["importable"]:
            raise ValidationError(f"the emulated check environment can import {', '.join(info['importable'])}",
                                  "remove that package from the bundle's requirements.txt")
        marker.write_text(json.dumps(info, indent=1) + "\n")
        return inside, info


def _checked(result: subprocess.CompletedProcess, what: str) -> None:
    if result.returncode != 0:
        raise RuntimeUnavailableError(f"{what} failed: {_last_line(result.stderr or result.stdout)}",
                                      "check the network to the package registry and the pins in requirements.txt")


@contextlib.contextmanager
def staging(rootfs: Rootfs) -> Iterator[Path]:
    """A scratch folder inside the root filesystem (its /tmp), removed afterwards."""
    import tempfile

    tmp = rootfs.path / "tmp"
    tmp.mkdir(exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="edgecompress-check-", dir=tmp))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _last_line(text: str) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"
