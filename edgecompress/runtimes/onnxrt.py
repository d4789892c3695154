"""ONNX Runtime: CPU by default, CUDA when onnxruntime-gpu and a GPU are present."""

from __future__ import annotations

import numpy as np

from edgecompress.artifacts import Artifact, ModelFormat
from edgecompress.errors import ModelLoadError, require
from edgecompress.runtimes.base import Runtime, Session, TensorSpec
from edgecompress.runtimes.probe import probe

_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int64)": "int64",
}


def _spec(arg) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) else None for d in arg.shape)
    return TensorSpec(arg.name, shape, _ORT_TYPES.get(arg.type, arg.type))


class OnnxSession(Session):
    runtime = "onnxruntime"

    def __init__(self, session, device: str, threads: int | None) -> None:
        self.session = session
        self.device = device
        self.threads = threads
        self.inputs = [_spec(a) for a in session.get_inputs()]
        self.outputs = [_spec(a) for a in session.get_outputs()]
        self._name = self.inputs[0].name
        batch = self.inputs[0].shape[0]
        self._fixed_batch = batch if isinstance(batch, int) and batch > 0 else None

    def _run_float(self, x: np.ndarray) -> list[np.ndarray]:
        if self._fixed_batch and len(x) != self._fixed_batch:
            parts = [self._run_float(x[i : i + self._fixed_batch]) for i in range(0, len(x), self._fixed_batch)]
            return [np.concatenate(p, axis=0) for p in zip(*parts, strict=True)]
        outs = self.session.run(None, {self._name: x.astype(self.inputs[0].dtype)})
        return [np.asarray(o, dtype=np.float32) for o in outs]

    def prepare_raw(self, x: np.ndarray):
        return {self._name: np.asarray(x, dtype=self.inputs[0].dtype)}

    def run_raw(self, prepared) -> None:
        self.session.run(None, prepared)


class OnnxRuntime(Runtime):
    name = "onnxruntime"
    formats = (ModelFormat.ONNX,)

    def available(self) -> tuple[bool, str]:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return False, 'onnxruntime is not installed: pip install "edgecompress[onnx]"'
        return True, ""

    def version(self) -> str:
        import onnxruntime

        return onnxruntime.__version__

    def device_available(self, device: str) -> tuple[bool, str]:
        if device == "cpu":
            return True, ""
        import onnxruntime

        if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            return True, ""
        return False, "no CUDAExecutionProvider (install onnxruntime-gpu on a machine with an NVIDIA GPU)"

    def _open(self, artifact: Artifact, device: str, threads: int | None, trust_model: bool) -> Session:
        ort = require("onnxruntime", "onnx", "running ONNX models")
        probe(self.name, artifact.path)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "gpu" else ["CPUExecutionProvider"]
        try:
            session = ort.InferenceSession(str(artifact.path), sess_options=options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types for bad files
            raise ModelLoadError(
                f"model file is damaged or not runnable: {artifact.path}: {str(exc).splitlines()[0][:200]}",
                "re-export it with `compress export --format onnx`",
            ) from exc
        return OnnxSession(session, device, threads)
