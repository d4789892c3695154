"""The bundle's model: a LiteRT interpreter plus the metadata written next to it.

Copied into deploy bundles by edgecompress; needs only numpy and one interpreter package:
ai_edge_litert (current), tflite_runtime (older Raspberry Pi images), or larq_compute_engine for
binarized models. Quantized inputs and outputs are converted here exactly as the toolkit does,
so a bundle's outputs can be compared bit for bit with the toolkit's own.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import sys
import types
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MODEL_FILE = "model.tflite"
INTERPRETERS = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter")


def load_metadata(directory: Path = HERE) -> dict:
    return json.loads((directory / (MODEL_FILE + ".json")).read_text())


#: "default": the interpreter's own choice (XNNPACK where it applies); "reference": LiteRT's reference
#: kernels, the same integer arithmetic in every build (slow; the self-check compares builds with them)
KERNELS = ("default", "reference")


def interpreter_module():
    """The first LiteRT interpreter module that imports, and its package name."""
    for name in INTERPRETERS:
        try:
            return importlib.import_module(name), name.split(".")[0]
        except ImportError:
            continue
    raise SystemExit(
        "no LiteRT interpreter is installed: pip install -r requirements.txt "
        "(or tflite-runtime on images where ai-edge-litert does not install)"
    )


def lce_interpreter_class():
    """LCE's interpreter without ``larq_compute_engine/__init__.py``, which imports TensorFlow for the converter."""
    spec = importlib.util.find_spec("larq_compute_engine")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            "this binarized model needs the Larq Compute Engine runtime: pip install larq-compute-engine "
            "(x86_64/macOS), or build LCE from source for ARM devices"
        )
    package = types.ModuleType("larq_compute_engine")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules.setdefault("larq_compute_engine", package)
    return importlib.import_module("larq_compute_engine.tflite.python.interpreter").Interpreter


class TensorInfo:
    """Shape, dtype and the affine quantization of one tensor."""

    def __init__(self, name: str, shape, dtype, scale: float, zero_point: int) -> None:
        self.name = name
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self.scale = float(scale)
        self.zero_point = int(zero_point)

    @property
    def quantized(self) -> bool:
        return self.dtype.name in ("int8", "uint8", "int16") and bool(self.scale)

    def quantize(self, x: np.ndarray) -> np.ndarray:
        if not self.quantized:
            return np.asarray(x, dtype=self.dtype)
        info = np.iinfo(self.dtype)
        q = np.round(np.asarray(x, dtype=np.float32) / self.scale) + self.zero_point
        return np.clip(q, info.min, info.max).astype(self.dtype)

    def dequantize(self, x: np.ndarray) -> np.ndarray:
        if not self.quantized:
            return np.asarray(x, dtype=np.float32)
        return ((x.astype(np.float32) - self.zero_point) * self.scale).astype(np.float32)


def _tensor(detail: dict) -> TensorInfo:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return TensorInfo(detail["name"], detail["shape"], detail["dtype"], scale, zero_point)


def _ordered(details: list[dict], names: list[str]) -> list[dict]:
    """Outputs in the order the metadata lists them; else by the converter's ``:N`` suffix."""
    by_name = {d["name"]: d for d in details}
    if names and all(n in by_name for n in names):
        return [by_name[n] for n in names]
    numbers = [re.search(r":(\d+)$", d["name"]) for d in details]
    if all(numbers):
        return [d for _, d in sorted(zip((int(m.group(1)) for m in numbers), details, strict=True), key=lambda p: p[0])]
    return list(details)


def _signature_names(interpreter, indices: list[int]) -> list[str] | None:
    """The model's own output names (``landmarks``, ``heatmap``) from its signature, by tensor index."""
    try:
        outputs = interpreter.get_signature_runner().get_output_details()
    except (ValueError, RuntimeError, AttributeError):  # no (single) signature, or an old interpreter
        return None
    by_index = {detail["index"]: name for name, detail in outputs.items()}
    names = [by_index.get(i) for i in indices]
    return names if all(names) else None


class Model:
    """Batch-1 inference: ``run`` takes one float sample, returns float outputs in metadata order.

    ``kernels="reference"`` runs LiteRT's reference kernels instead of the default (XNNPACK) ones.
    """

    @property
    def runtime_version(self) -> str:
        """``ai_edge_litert 2.3.0``: the interpreter package and its version, for reports."""
        from importlib import metadata

        try:
            return f"{self.runtime} {metadata.version(self.runtime.replace('_', '-'))}"
        except metadata.PackageNotFoundError:
            return self.runtime

    def __init__(self, directory: Path = HERE, threads: int | None = None, kernels: str = "default") -> None:
        self.metadata = load_metadata(directory)
        self.deploy = self.metadata.get("deploy", {})
        path = directory / MODEL_FILE
        if self.deploy.get("binarized"):
            self.runtime = "larq_compute_engine"
            self._lce = lce_interpreter_class()(path.read_bytes(), num_threads=threads or 1)
            self.input = TensorInfo(
                "input", self._lce.input_shapes[0], self._lce.input_types[0],
                self._lce.input_scales[0] or 0.0, self._lce.input_zero_points[0] or 0,
            )
            self.outputs = [
                TensorInfo(f"output_{i}", shape, dtype, scale or 0.0, zero or 0)
                for i, (shape, dtype, scale, zero) in enumerate(zip(
                    self._lce.output_shapes, self._lce.output_types,
                    self._lce.output_scales, self._lce.output_zero_points, strict=True,
                ))
            ]
            self.output_names = [o.name for o in self.outputs]
            return
        module, self.runtime = interpreter_module()
        options = {}
        if kernels == "reference":
            options["experimental_op_resolver_type"] = module.OpResolverType.BUILTIN_REF
        self._interpreter = module.Interpreter(model_path=str(path), num_threads=threads, **options)
        self._interpreter.allocate_tensors()
        self._input_index = self._interpreter.get_input_details()[0]["index"]
        self.input = _tensor(self._interpreter.get_input_details()[0])
        names = [o["name"] for o in self.deploy.get("outputs", [])]
        details = _ordered(self._interpreter.get_output_details(), names)
        self._output_indices = [d["index"] for d in details]
        self.outputs = [_tensor(d) for d in details]
        self.output_names = _signature_names(self._interpreter, self._output_indices) or [o.name for o in self.outputs]

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """One input sample's shape (no batch axis): (H, W, C) for an image model, any shape otherwise."""
        return tuple(int(d) for d in self.input.shape[1:])

    @property
    def is_image(self) -> bool:
        return len(self.input.shape) == 4 and int(self.input.shape[-1]) in (1, 3)

    @property
    def input_hwc(self) -> tuple[int, int, int]:
        _, height, width, channels = self.input.shape
        return height, width, channels

    def prepare(self, sample: np.ndarray) -> np.ndarray:
        """One float sample (H, W, C) → the interpreter's batch-1 input, quantized if need be."""
        return self.input.quantize(np.asarray(sample, dtype=np.float32)[None])

    def run_raw(self, prepared: np.ndarray) -> list[np.ndarray]:
        if self.deploy.get("binarized"):
            outs = self._lce.predict(prepared)
            return [np.asarray(o) for o in (outs if isinstance(outs, list) else [outs])]
        self._interpreter.set_tensor(self._input_index, prepared)
        self._interpreter.invoke()
        return [self._interpreter.get_tensor(i) for i in self._output_indices]

    def run(self, sample: np.ndarray) -> list[np.ndarray]:
        """Float outputs of one sample, without the batch dimension."""
        raw = self.run_raw(self.prepare(sample))
        return [spec.dequantize(out)[0] for spec, out in zip(self.outputs, raw, strict=True)]
