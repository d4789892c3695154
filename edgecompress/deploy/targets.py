"""Deploy targets by name: what a device installs, and rough speed figures for the real-time check.

Pins follow ../shared/STACK.md. Wheels checked on PyPI: ai-edge-litert 2.3.0 ships
manylinux_2_27 aarch64 and x86_64 wheels (Python >= 3.10) but none for 32-bit ARM; tflite-runtime
2.14.0 ships aarch64 wheels for glibc >= 2.34 (Raspberry Pi OS Bookworm); larq-compute-engine
0.16.0 has no aarch64 wheel, so binarized models need LCE built from source on a Pi or phone.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgecompress.registry import Registry

LITERT_PIN = "ai-edge-litert==2.3.0"
TFLITE_RUNTIME_PIN = "tflite-runtime==2.14.0"
LCE_PIN = "larq-compute-engine==0.16.0"
#: ai-edge-litert needs >= 1.23.2; LCE's interpreter fails on every input with numpy 2.
NUMPY_PIN = "numpy>=1.23.2,<2"
#: a model slower than this per inference (estimated) is flagged as not real-time.
REALTIME_MS = 100.0


@dataclass(frozen=True)
class Target:
    """A device family. GMAC/s figures are planning estimates for the pre-deploy check, not measurements."""

    name: str
    description: str
    #: int8 and float multiply-accumulates per second with every core, XNNPACK
    int8_gmacs: float
    float_gmacs: float
    #: 32-bit ARM builds exist for this family (armv7 Pi OS, armeabi-v7a phones)
    arm32_possible: bool
    #: a pip-installable Larq Compute Engine interpreter exists for it
    lce_wheel: bool
    #: the bundle's Python programs run on the device itself (not on Android)
    python_on_device: bool
    default_threads: int

    def requirements(self, binarized: bool) -> list[str]:
        lines = [f"# {self.description}", LITERT_PIN, NUMPY_PIN]
        if self.name == "rpi":
            lines.insert(2, f"# Images where ai-edge-litert does not install: replace the line above with {TFLITE_RUNTIME_PIN}")
        if binarized and self.lce_wheel:
            lines.append(LCE_PIN)
        return lines


TARGETS: Registry[Target] = Registry("deploy target")
TARGETS.add(
    "rpi",
    # Cortex-A72/A76: MobileNetV2 (300 MMACs) runs in roughly 30-60 ms on a Pi 4 with 4 threads.
    Target("rpi", "Raspberry Pi 4/5, 64-bit Raspberry Pi OS (aarch64), Python >= 3.10", 10.0, 5.0, True, False, True, 4),
    "raspberrypi",
    "pi",
)
TARGETS.add(
    "android",
    Target("android", "Android phone (arm64-v8a); run.py and bench.py run on a computer for checking", 30.0, 15.0, True, False, False, 4),
    "phone",
)
TARGETS.add(
    "linux",
    Target("linux", "Linux x86_64 or aarch64, Python >= 3.10", 100.0, 50.0, False, True, True, 2),
)


def get_target(name: str) -> Target:
    return TARGETS.get(name)
