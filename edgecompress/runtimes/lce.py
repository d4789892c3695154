"""Larq Compute Engine runtime: runs bit-packed binarized TFLite models (``LceBconv2d`` ops).

LCE's fast binary kernels are written for 64-bit ARM (Raspberry Pi 4/5, phones); on x86 its
interpreter falls back to reference kernels, which give correct outputs but no speed. Latencies
measured here say where they were measured; they are never an estimate of ARM speed.

The interpreter takes batch-1 numpy arrays of the exact input shape and needs numpy < 2 (with
numpy 2 it fails on every input: "Expected N bytes but got 0").
"""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np

from edgecompress._env import native_output_silenced
from edgecompress.artifacts import Artifact, ModelFormat
from edgecompress.errors import ModelLoadError, require
from edgecompress.runtimes.base import Runtime, Session, TensorSpec
from edgecompress.runtimes.probe import probe

INTERPRETER_MODULE = "larq_compute_engine.tflite.python.interpreter"
#: machines LCE's optimized binary kernels are written for
FAST_MACHINES = ("aarch64", "arm64")


def _dtype_name(kind) -> str:
    return np.dtype(kind).name


def _spec(name: str, shape, kind, scale, zero_point) -> TensorSpec:
    if isinstance(scale, list | tuple):  # per-axis: boundary tensors are per-tensor in practice
        scale = scale[0] if scale else None
    return TensorSpec(name, tuple(int(d) for d in shape), _dtype_name(kind), scale or None, int(zero_point or 0))


class LCESession(Session):
    runtime = "lce"

    def __init__(self, interpreter, device: str, threads: int | None) -> None:
        self.interpreter = interpreter
        self.device = device
        self.threads = threads
        self.inputs = [
            _spec(f"input_{i}", s, t, sc, zp)
            for i, (s, t, sc, zp) in enumerate(zip(interpreter.input_shapes, interpreter.input_types,
                                                   interpreter.input_scales, interpreter.input_zero_points, strict=True))
        ]  # fmt: skip
        self.outputs = [
            _spec(f"output_{i}", s, t, sc, zp)
            for i, (s, t, sc, zp) in enumerate(zip(interpreter.output_shapes, interpreter.output_types,
                                                   interpreter.output_scales, interpreter.output_zero_points, strict=True))
        ]  # fmt: skip

    def _run_float(self, x: np.ndarray) -> list[np.ndarray]:
        spec = self.inputs[0]
        # One sample at a time: the interpreter's tensors have the converter's fixed batch of 1.
        pieces = [self._invoke(spec.quantize(sample[None])) for sample in x]
        return [np.concatenate([spec_out.dequantize(p[i]) for p in pieces], axis=0)
                for i, spec_out in enumerate(self.outputs)]  # fmt: skip

    def _invoke(self, sample: np.ndarray) -> list[np.ndarray]:
        out = self.interpreter.interpreter.predict([np.ascontiguousarray(sample)])
        return [np.asarray(o) for o in out]

    def prepare_raw(self, x: np.ndarray):
        return np.ascontiguousarray(self.inputs[0].quantize(np.asarray(x[:1], dtype=np.float32)))

    def run_raw(self, prepared) -> None:
        self.interpreter.interpreter.predict([prepared])


class LCERuntime(Runtime):
    name = "lce"
    formats = (ModelFormat.LCE_TFLITE,)

    def available(self) -> tuple[bool, str]:
        try:
            require(INTERPRETER_MODULE, "larq", "The LCE runtime")
        except Exception as exc:  # noqa: BLE001 - MissingDependencyError, or a broken native module
            return False, str(exc)
        if int(np.__version__.split(".")[0]) >= 2:
            return False, f"the LCE interpreter needs numpy < 2 (found {np.__version__}): pip install 'numpy<2'"
        return True, ""

    def version(self) -> str:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return f"larq-compute-engine {version('larq-compute-engine')}"
        except PackageNotFoundError:
            return "unknown"

    def device_available(self, device: str) -> tuple[bool, str]:
        if device == "cpu":
            return True, ""
        return False, "LCE runs binarized models on CPUs only (optimized for 64-bit ARM)"

    @staticmethod
    def optimized_here() -> bool:
        """Whether this machine gets LCE's optimized binary kernels (64-bit ARM) or reference ones."""
        return platform.machine().lower() in FAST_MACHINES

    def _open(self, artifact: Artifact, device: str, threads: int | None, trust_model: bool) -> Session:
        module = require(INTERPRETER_MODULE, "larq", "The LCE runtime")
        probe(self.name, artifact.path)
        try:
            with native_output_silenced():
                interpreter = module.Interpreter(Path(artifact.path).read_bytes(), num_threads=threads or 1)
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(
                f"model file is damaged or not runnable by LCE: {artifact.path}: {str(exc).splitlines()[0][:200]}",
                "re-create it with `compress binarize`",
            ) from exc
        return LCESession(interpreter, device, threads)

