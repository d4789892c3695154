"""`compress deploy --check DIR --arch aarch64`: run a bundle as a Raspberry Pi would, under qemu-user.

The bundle is copied into the cached arm64 root filesystem and run there with each device
interpreter (ai-edge-litert and tflite-runtime, aarch64 wheels): run.py on raw images, bench.py and
``run.py --self-check``. The outputs are compared like with like (../shared/ARM64.md): each
interpreter's aarch64 build against the same interpreter's x86 build on this machine, with its
default kernels, and ai-edge-litert's also against the toolkit's own LiteRT session. Integer models
must agree exactly, float ones within the export tolerance. Emulated times measure qemu, never a
device, and are labelled so.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgecompress.compress.validate import CheckResult, compare_outputs
from edgecompress.deploy import arm64
from edgecompress.deploy.targets import LITERT_PIN, TFLITE_RUNTIME_PIN
from edgecompress.deploy.venv import ensure_venv
from edgecompress.errors import UsageError, ValidationError

#: device interpreter → its pin; the bundle's requirements name the first, the Pi README offers the second
INTERPRETERS = {"ai-edge-litert": LITERT_PIN, "tflite-runtime": TFLITE_RUNTIME_PIN}


#: why tflite-runtime's default int8 kernels are not required to match: measured here, its aarch64 and x86
#: builds differ (other optimized kernels per architecture; it does not route int8 through XNNPACK)
UNJUDGED = "tflite-runtime's optimized int8 kernels differ between its aarch64 and x86 builds"


def interpreter_requirements(requirements: str, interpreter: str) -> str:
    """The bundle's requirements with its LiteRT pin swapped for ``interpreter``'s (as its README says to)."""
    pin = INTERPRETERS[interpreter]
    lines = [pin if line.strip() == LITERT_PIN else line for line in requirements.splitlines()]
    return "\n".join(line for line in lines if not line.startswith("#")) + "\n"


@dataclass(frozen=True)
class Agreement:
    """One interpreter's aarch64 outputs against one x86 reference."""

    reference: str
    max_abs_diff: list[float]
    exact: bool
    tolerance_check: CheckResult | None
    #: False for a comparison that is reported but cannot be required to hold (see UNJUDGED)
    judged: bool = True
    #: int8 outputs of another package's reference kernels: one step of each output's int8 tensor allowed
    one_step: tuple[float, ...] | None = None

    @property
    def within_one_step(self) -> bool:
        steps = self.one_step
        return bool(steps) and len(steps) == len(self.max_abs_diff) and all(
            d <= step * 1.001 for d, step in zip(self.max_abs_diff, steps, strict=True))

    @property
    def passed(self) -> bool:
        if not self.judged:
            return True
        if self.tolerance_check is None:
            return self.exact or self.within_one_step
        return self.tolerance_check.passed

    def describe(self, integer: bool) -> str:
        if not self.judged and not self.exact:
            return f"max |Δ| {max(self.max_abs_diff):.3g} (reported, not judged: {UNJUDGED})"
        if self.exact:
            return "identical (int8)" if integer else "identical (float)"
        if self.within_one_step:
            return f"max |Δ| {max(self.max_abs_diff):.3g}: within one int8 step (another package's reference kernels)"
        if self.tolerance_check is None:
            return f"max |Δ| {max(self.max_abs_diff):.3g}, must be identical (int8)"
        check = self.tolerance_check
        return f"max |Δ| {check.max_abs_diff:.3g} ({check.relative:.2%} of the output scale, tolerance {check.tolerance:.2%}, float)"

    def to_dict(self) -> dict:
        return {"reference": self.reference, "max_abs_diff": self.max_abs_diff, "exact": self.exact, "judged": self.judged,
                "within_one_step": self.within_one_step,
                "tolerance_check": self.tolerance_check.to_dict() if self.tolerance_check else None,
                "passed": self.passed}


@dataclass
class InterpreterRun:
    interpreter: str
    packages: list[str]
    runtime: str
    agreements: list[Agreement]
    self_check: dict
    bench: dict

    def to_dict(self) -> dict:
        return {"interpreter": self.interpreter, "packages": self.packages, "runtime": self.runtime,
                "agreements": [a.to_dict() for a in self.agreements], "self_check": self.self_check,
                "bench_emulated": self.bench}


@dataclass
class EmulatedCheckReport:
    bundle: Path
    cpu: arm64.EmulatedCpu
    rootfs: Path
    python: str
    machine: str
    integer: bool
    task: str | None
    samples: int
    runs: list[InterpreterRun] = field(default_factory=list)
    #: files that differ from what compress deploy wrote, run anyway under --trust-bundle
    foreign: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return all(a.passed for r in self.runs for a in r.agreements) and all(
            r.self_check.get("self_check") == "passed" for r in self.runs)

    def to_dict(self) -> dict:
        return {"bundle": str(self.bundle), "arch": "aarch64", "emulated": True, "cpu": self.cpu.name,
                "qemu_cpu": self.cpu.qemu_cpu, "cpu_description": self.cpu.description, "rootfs": str(self.rootfs),
                "python": self.python, "machine": self.machine, "integer": self.integer, "task": self.task, "samples": self.samples,
                "passed": self.passed, "foreign": list(self.foreign), "interpreters": [r.to_dict() for r in self.runs]}


def check_emulated(
    directory: str | Path,
    cpu: str = "pi4",
    threads: int = 2,
    samples: int = 4,
    runs: int = 20,
    cache_dir: Path | None = None,
    interpreters: tuple[str, ...] = tuple(INTERPRETERS),
    trust_bundle: bool = False,
) -> EmulatedCheckReport:
    """Run the bundle folder in the emulated Pi userland with each interpreter; ValidationError on any disagreement.

    The bundle is verified first, as by ``check_bundle`` (it needs no tools, and a tampered bundle is
    named on any machine): nothing foreign runs (here as root in the emulated userland) unless
    ``trust_bundle``. Then the host tools, before anything is built.
    """
    from edgecompress.deploy.verify import read_bundle, reference_outputs, run_script, verify_bundle

    directory = Path(directory).resolve()
    foreign = verify_bundle(directory, trust_bundle)
    arm64.require_tools()  # one line naming the install command, before any work
    metadata = read_bundle(directory)
    deploy = metadata["deploy"]
    if deploy["binarized"]:
        raise UsageError("binarized (LCE) bundles cannot be checked on aarch64: larq-compute-engine has no aarch64 wheel",
                         "check it on this machine with: compress deploy --check DIR")
    chosen = arm64.get_cpu(cpu)
    rootfs = arm64.ensure_rootfs(cache_dir)
    requirements = (directory / "requirements.txt").read_text()
    if len(deploy["input"]["shape"]) != 4 or deploy["input"]["shape"][-1] not in (1, 3):
        raise UsageError(f"the model input {deploy['input']['shape']} is not an image: the aarch64 check feeds raw images",
                         "check it on this machine with: compress deploy --check DIR")  # fmt: skip
    _, height, width, channels = deploy["input"]["shape"]
    raw = np.random.default_rng(1).integers(0, 256, size=(samples, height + 7, width + 5, channels), dtype=np.uint8)
    toolkit = reference_outputs(directory, metadata, raw, threads)
    from edgecompress.deploy.reference import reference_kernel_outputs

    x86_reference_kernels = reference_kernel_outputs(directory, raw, threads)
    report = None
    with arm64.staging(rootfs) as stage:
        bundle = stage / "bundle"
        shutil.copytree(directory, bundle)
        np.save(stage / "inputs.npy", raw)
        for interpreter in interpreters:
            wanted = interpreter_requirements(requirements, interpreter)
            venv, info = arm64.ensure_venv(rootfs, wanted)
            if report is None:
                report = EmulatedCheckReport(directory, chosen, rootfs.path, info["python"], info["machine"],
                                             bool(deploy["integer"]),
                                             metadata.get("task"), samples, foreign=foreign)
            got, runtime = _emulated_outputs(rootfs, chosen, venv, stage, interpreter, threads, "default")
            x86 = _x86_outputs(directory, wanted, raw, threads, cache_dir, run_script)
            # tflite-runtime's own int8 kernels are not the same code on aarch64 and x86: there the reference
            # kernels are the like-with-like comparison, and the default kernels' difference is reported.
            judged = interpreter == "ai-edge-litert" or not report.integer
            agreements = [_agree(f"{interpreter} x86_64, default kernels", x86, got, report.integer, judged)]
            if interpreter == "ai-edge-litert":
                agreements.append(_agree("the toolkit's LiteRT session (XNNPACK), x86_64", toolkit, got, report.integer))
            got_reference, _ = _emulated_outputs(rootfs, chosen, venv, stage, interpreter, threads, "reference")
            # The same package computes the same integers; another may round an op one step differently.
            steps = None if interpreter == "ai-edge-litert" else tuple(deploy.get("self_check", {}).get("output_steps") or ())
            agreements.append(_agree("ai-edge-litert x86_64, reference kernels", x86_reference_kernels, got_reference,
                                     report.integer, one_step=steps))
            bench = _emulated_json(rootfs, chosen, venv, f"{rootfs.inside_path(bundle)}/bench.py",
                                   ["--threads", str(threads), "--runs", str(runs), "--warmup", "3", "--json"])
            bench["emulated"] = True
            bench["machine"] = f"qemu-user {chosen.qemu_cpu} (emulated {chosen.description}; not device time)"
            self_check = _emulated_json(rootfs, chosen, venv, f"{rootfs.inside_path(bundle)}/run.py",
                                        ["--self-check", "--json", "--threads", str(threads)], allow_failure=True)
            report.runs.append(InterpreterRun(interpreter, info["packages"], runtime, agreements, self_check, bench))
    _require(report)
    return report


def _emulated_outputs(rootfs, cpu, venv, stage: Path, interpreter: str, threads: int,
                      kernels: str) -> tuple[list[np.ndarray], str]:
    saved = stage / f"outputs-{interpreter}-{kernels}.npz"
    saved.unlink(missing_ok=True)
    inside = rootfs.inside_path(stage)
    result = _emulated_json(rootfs, cpu, venv, f"{inside}/bundle/run.py",
                            [f"{inside}/inputs.npy", "--json", "--save", f"{inside}/{saved.name}",
                             "--out", f"{inside}/out-{interpreter}", "--threads", str(threads), "--kernels", kernels])
    with np.load(saved) as data:
        return [data[f"output_{i}"] for i in range(len(data.files))], result["runtime"]


def _emulated_json(rootfs, cpu, venv: str, script: str, args: list[str], allow_failure: bool = False) -> dict:
    result = rootfs.run([f"{venv}/bin/python", script, *args], cpu, cwd=str(Path(script).parent))
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 and not (allow_failure and lines):
        last = (result.stderr.strip().splitlines() or ["no output"])[-1][:300]
        raise ValidationError(f"{Path(script).name} failed under emulated aarch64 ({cpu.qemu_cpu}): {last}",
                              f"run it by hand: chroot {rootfs.path} {venv}/bin/python {script}")
    return json.loads(lines[-1])


def _x86_outputs(directory: Path, requirements: str, raw: np.ndarray, threads: int, cache_dir, run_script) -> list[np.ndarray]:
    """The same interpreter package on this machine, in a TensorFlow-free venv of its own."""
    import tempfile

    venv, _ = ensure_venv(requirements, Path(cache_dir) if cache_dir else None)  # as the native check keeps them
    with tempfile.TemporaryDirectory(prefix="edgecompress-x86-") as tmp:
        work = Path(tmp)
        np.save(work / "inputs.npy", raw)
        run_script(venv, directory / "run.py", work, "inputs.npy", "--json", "--save", "outputs.npz", "--out", "out",
                   "--threads", str(threads))
        with np.load(work / "outputs.npz") as data:
            return [data[f"output_{i}"] for i in range(len(data.files))]


def _agree(reference: str, expected: list[np.ndarray], got: list[np.ndarray], integer: bool,
           judged: bool = True, one_step: tuple[float, ...] | None = None) -> Agreement:
    if [g.shape for g in got] != [e.shape for e in expected]:
        raise ValidationError(f"the emulated outputs {[g.shape for g in got]} differ in shape from {reference}'s "
                              f"{[e.shape for e in expected]}", "rebuild the bundle with this toolkit version")
    diffs = [float(np.max(np.abs(g - e))) if g.size else 0.0 for g, e in zip(got, expected, strict=True)]
    exact = all(np.array_equal(g, e) for g, e in zip(got, expected, strict=True))
    tolerance = None if integer else compare_outputs(expected, got, "float", "raw uint8 images")
    return Agreement(reference, diffs, exact, tolerance, judged, one_step if integer else None)


def _require(report: EmulatedCheckReport) -> None:
    for run in report.runs:
        for agreement in run.agreements:
            if not agreement.passed:
                raise ValidationError(
                    f"on emulated aarch64 ({report.cpu.name}), {run.interpreter} disagrees with {agreement.reference}: "
                    f"{agreement.describe(report.integer)}",
                    "report it with the bundle attached",
                )
        if run.self_check.get("self_check") != "passed":
            problems = "; ".join(run.self_check.get("problems") or ["no verdict"])
            raise ValidationError(f"run.py --self-check failed on emulated aarch64 with {run.interpreter}: {problems}",
                                  "rebuild the bundle; if it persists, report it with the bundle attached")
