"""Runtimes by name: ``keras``, ``litert`` (alias ``tflite``), ``onnxruntime`` (alias ``onnx``, ``ort``),
``lce`` (Larq Compute Engine, for binarized models)."""

from __future__ import annotations

from edgecompress.artifacts import Artifact
from edgecompress.errors import UsageError
from edgecompress.registry import Registry
from edgecompress.runtimes.base import Runtime, Session, TensorSpec
from edgecompress.runtimes.keras_tf import KerasRuntime
from edgecompress.runtimes.lce import LCERuntime
from edgecompress.runtimes.litert import LiteRTRuntime
from edgecompress.runtimes.onnxrt import OnnxRuntime

RUNTIMES: Registry[Runtime] = Registry("runtime")
RUNTIMES.add("keras", KerasRuntime(), "tf", "tensorflow")
RUNTIMES.add("litert", LiteRTRuntime(), "tflite")
RUNTIMES.add("onnxruntime", OnnxRuntime(), "onnx", "ort")
RUNTIMES.add("lce", LCERuntime(), "larq", "larq_compute_engine")


def get_runtime(name: str) -> Runtime:
    return RUNTIMES.get(name)


def runtime_for(artifact: Artifact) -> Runtime:
    """The runtime a model of this format is deployed with."""
    for _, runtime in RUNTIMES.items():
        if runtime.accepts(artifact):
            return runtime
    raise UsageError(f"no runtime runs {artifact.format.value} models yet", "see `compress bench --help`")


def open_session(
    artifact: Artifact,
    runtime: str | None = None,
    device: str = "cpu",
    threads: int | None = None,
    trust_model: bool = False,
) -> Session:
    backend = get_runtime(runtime) if runtime else runtime_for(artifact)
    return backend.open(artifact, device, threads, trust_model)


__all__ = ["RUNTIMES", "Runtime", "Session", "TensorSpec", "get_runtime", "open_session", "runtime_for"]
