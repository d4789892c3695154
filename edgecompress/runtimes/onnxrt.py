"""ONNX Runtime: CPU by default, CUDA when onnxruntime-gpu and a GPU are present."""

from __future__ import annotations

import logging
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from edgecompress.artifacts import Artifact, ModelFormat
from edgecompress.errors import ModelLoadError, require
from edgecompress.runtimes.base import Runtime, Session, TensorSpec
from edgecompress.runtimes.probe import probe

log = logging.getLogger(__name__)
_WARNED: set[tuple[int, int]] = set()

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


def optimizers_to_disable(path: Path) -> list[str]:
    """ONNX Runtime graph rewrites that would change this model's results.

    ``Pad_Fusion`` folds a constant-zero ``Pad`` into the ``MaxPool`` after it, but MaxPool pads with
    -inf: wherever a border window holds only negative values the fused graph returns them instead
    of 0. Keras' ZeroPadding2D → MaxPool2D after a convolution (ResNet v2's stem) is exactly that
    graph; on our ResNet-50 v2 it moved the class scores by up to 0.08.
    """
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    zeros = {t.name for t in graph.initializer if not onnx.numpy_helper.to_array(t).any()}
    consumers: dict[str, list[str]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.op_type)
    for node in graph.node:
        if node.op_type != "Pad":
            continue
        mode = next((a.s.decode() for a in node.attribute if a.name == "mode"), "constant")
        value = node.input[2] if len(node.input) > 2 else ""
        if mode == "constant" and (not value or value in zeros) and "MaxPool" in consumers.get(node.output[0], []):
            return ["Pad_Fusion"]
    return []


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
        ort.set_default_logger_severity(3)  # its C++ warnings would go straight to the user's terminal
        probe(self.name, artifact.path)
        options = session_options(threads)
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "gpu" else ["CPUExecutionProvider"]
        disabled = optimizers_to_disable(artifact.path)
        stat = artifact.path.stat()
        file_id = (stat.st_dev, stat.st_ino)  # kept when a temp file is renamed
        if disabled and file_id not in _WARNED:
            _WARNED.add(file_id)
            log.warning(
                "%s: ONNX Runtime's %s optimization would change this model's outputs (a zero Pad before "
                "MaxPool); it is turned off here. In your own code pass disabled_optimizers=%s to InferenceSession.",
                artifact.path.name, ", ".join(disabled), disabled,
            )  # fmt: skip
        try:
            session = ort.InferenceSession(
                str(artifact.path), sess_options=options, providers=providers, disabled_optimizers=disabled
            )
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types for bad files
            raise ModelLoadError(
                f"model file is damaged or not runnable: {artifact.path}: {str(exc).splitlines()[0][:200]}",
                "re-export it with `compress export --format onnx`",
            ) from exc
        return OnnxSession(session, device, threads)


def session_options(threads: int | None, optimized_to: Path | None = None, profile_prefix: str | None = None):
    """Our ONNX Runtime session settings: all graph optimizations, quiet logs, ``threads`` intra-op."""
    import onnxruntime as ort

    ort.set_default_logger_severity(3)  # C++ warnings at model load would reach the user's terminal
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if optimized_to is not None:
        options.optimized_model_filepath = str(optimized_to)
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return options


def float_islands(path: Path) -> Counter:
    """Op types ONNX Runtime still runs in float inside a quantized model, after its own int8
    fusions: ops fed by a DequantizeLinear or feeding a QuantizeLinear. Each such island costs a
    dequantize, the float op and a quantize, three passes over its tensor. An S8S8 model on x86 shows its unfused convolutions here."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="edgecompress-ort-") as tmp:
        target = Path(tmp) / "optimized.onnx"
        ort.InferenceSession(str(path), session_options(1, target), providers=["CPUExecutionProvider"],
                             disabled_optimizers=optimizers_to_disable(path))  # fmt: skip
        graph = onnx.load(str(target)).graph
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    islands: Counter = Counter()
    for node in graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        quantized_after = any(c.op_type == "QuantizeLinear" for o in node.output for c in consumers.get(o, []))
        if set(node.input) & dequantized or quantized_after:
            islands[node.op_type] += 1
    return islands


def profile_ops(path: Path, threads: int | None = None, runs: int = 20) -> list[tuple[str, float]]:
    """(op type, ms per run) from ONNX Runtime's own profiler, slowest first: where the time goes."""
    import json

    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="edgecompress-ort-") as tmp:
        options = session_options(threads, profile_prefix=str(Path(tmp) / "profile"))
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"],
                                       disabled_optimizers=optimizers_to_disable(path))  # fmt: skip
        spec = session.get_inputs()[0]
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in spec.shape]
        feed = {spec.name: np.zeros(shape, dtype=_ORT_TYPES.get(spec.type, "float32"))}
        for _ in range(runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    totals: Counter = Counter()
    for event in events:
        if event.get("cat") == "Node" and str(event.get("name", "")).endswith("_kernel_time"):
            totals[event["args"]["op_name"]] += event["dur"]
    return [(op, us / runs / 1000) for op, us in totals.most_common()]
