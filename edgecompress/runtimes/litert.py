"""LiteRT (TFLite) runtime: ``ai_edge_litert``, else ``tflite_runtime``, else ``tf.lite``.

This is the interpreter a phone or a Raspberry Pi runs, so int8 accuracy is measured here, never
re-simulated in Keras. XNNPACK is applied by the interpreter by default; ``threads`` sets its pool.
"""

from __future__ import annotations

import importlib
import logging
import re

import numpy as np

from edgecompress._env import native_output_silenced
from edgecompress.artifacts import Artifact, ModelFormat
from edgecompress.errors import ModelLoadError
from edgecompress.runtimes.base import Runtime, Session, TensorSpec
from edgecompress.runtimes.probe import probe

log = logging.getLogger(__name__)

INTERPRETER_MODULES = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter")


def interpreter_class():
    """The best available Interpreter class and a name for it."""
    for module in INTERPRETER_MODULES:
        try:
            return importlib.import_module(module).Interpreter, module.split(".")[0]
        except ImportError:
            continue
    try:
        from edgecompress._env import import_tensorflow

        return import_tensorflow().lite.Interpreter, "tf.lite"
    except ImportError:
        return None, ""


def _spec(detail: dict) -> TensorSpec:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    shape = tuple(int(d) for d in detail["shape"])
    return TensorSpec(detail["name"], shape, np.dtype(detail["dtype"]).name, scale or None, int(zero_point))


def _output_order(interpreter, keras_names: list[str] | None = None) -> list[dict]:
    """Output details in the Keras model's output order.

    The converter names outputs ``StatefulPartitionedCall:N``, but N follows the signature's output
    *names* in sorted order, not the Keras order: a model returning [landmarks, heatmap] comes out
    as [heatmap, landmarks]. With the Keras output names (recorded in the metadata on export) we
    map each through the signature; without them the ``:N`` order is the best left.
    """
    details = interpreter.get_output_details()
    if keras_names and len(keras_names) == len(details) > 1:
        try:
            signature = interpreter.get_signature_runner().get_output_details()
        except (ValueError, RuntimeError):
            signature = {}
        if set(keras_names) <= set(signature):
            by_index = {d["index"]: d for d in details}
            return [by_index[signature[name]["index"]] for name in keras_names]
        log.warning("output names %s not in the TFLite signature %s; using its order", keras_names, sorted(signature))
    numbers = [re.search(r":(\d+)$", d["name"]) for d in details]
    if all(numbers):
        return [d for _, d in sorted(zip((int(m.group(1)) for m in numbers), details, strict=True), key=lambda p: p[0])]
    return list(details)


class LiteRTSession(Session):
    runtime = "litert"

    def __init__(
        self, interpreter, device: str, threads: int | None, output_names: list[str] | None = None
    ) -> None:
        self.interpreter = interpreter
        self.device = device
        self.threads = threads
        details = interpreter.get_input_details()
        self._input = details[0]
        self._outputs = _output_order(interpreter, output_names)
        # Every input is listed (so a caller can see a multi-input model); run() feeds the first.
        self.inputs = [_spec(d) for d in details]
        self.outputs = [_spec(d) for d in self._outputs]
        self._batch = int(self._input["shape"][0])
        self._resizable = int(self._input.get("shape_signature", self._input["shape"])[0]) == -1

    def _set_batch(self, batch: int) -> None:
        if batch != self._batch:
            self.interpreter.resize_tensor_input(self._input["index"], [batch, *self._input["shape"][1:]])
            self.interpreter.allocate_tensors()
            self._batch = batch

    def _run_float(self, x: np.ndarray) -> list[np.ndarray]:
        if not self._resizable and len(x) != self._batch:
            parts = [self._run_float(x[i : i + self._batch]) for i in range(0, len(x), self._batch)]
            return [np.concatenate(p, axis=0) for p in zip(*parts, strict=True)]
        self._set_batch(len(x))
        self.interpreter.set_tensor(self._input["index"], self.inputs[0].quantize(x))
        self.interpreter.invoke()
        return [
            spec.dequantize(self.interpreter.get_tensor(d["index"]))
            for spec, d in zip(self.outputs, self._outputs, strict=True)
        ]

    def resize_input(self, shape: tuple[int, ...]) -> None:
        from edgecompress.errors import UnsupportedError

        try:
            self.interpreter.resize_tensor_input(self._input["index"], [1, *shape], strict=False)
            self.interpreter.allocate_tensors()
            # Some graphs only fail when run: a converter that folded a 1×1 global pooling away
            # leaves a Reshape that no longer fits a larger feature map.
            self.interpreter.set_tensor(self._input["index"], np.zeros([1, *shape], dtype=self._input["dtype"]))
            self.interpreter.invoke()
        except (ValueError, RuntimeError) as exc:
            raise UnsupportedError(
                f"this model's ops do not allow the input size {tuple(shape)}: {str(exc).splitlines()[0][:200]}",
                "train at a size whose last feature map is larger than 1×1, or export the model at that size",
            ) from None
        self._input = self.interpreter.get_input_details()[0]
        self._outputs = [next(d for d in self.interpreter.get_output_details() if d["index"] == o["index"])
                         for o in self._outputs]  # fmt: skip
        self.inputs = [_spec(self._input)]
        self.outputs = [_spec(d) for d in self._outputs]
        self._batch, self._resizable = 1, False

    def prepare_raw(self, x: np.ndarray):
        self._set_batch(len(x)) if self._resizable else None
        return self.inputs[0].quantize(x)

    def run_raw(self, prepared) -> None:
        self.interpreter.set_tensor(self._input["index"], prepared)
        self.interpreter.invoke()


class LiteRTRuntime(Runtime):
    name = "litert"
    formats = (ModelFormat.TFLITE,)

    def available(self) -> tuple[bool, str]:
        cls, _ = interpreter_class()
        if cls is None:
            return False, 'no LiteRT interpreter: pip install "edgecompress[litert]"'
        return True, ""

    def version(self) -> str:
        _, source = interpreter_class()
        if source in ("ai_edge_litert", "tflite_runtime"):
            from importlib.metadata import version

            return f"{source} {version(source.replace('_', '-'))}"
        return source

    def device_available(self, device: str) -> tuple[bool, str]:
        if device == "cpu":
            return True, ""
        return False, "the LiteRT GPU delegate runs on Android/iOS devices, not in desktop Python; use deploy bundles"

    def _open(self, artifact: Artifact, device: str, threads: int | None, trust_model: bool) -> Session:
        probe(self.name, artifact.path)
        cls, _ = interpreter_class()
        try:
            with native_output_silenced():
                interpreter = cls(model_path=str(artifact.path), num_threads=threads or None)
                interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(
                f"model file is damaged or not runnable: {artifact.path}: {str(exc).splitlines()[0][:200]}",
                "re-export it with `compress export`",
            ) from exc
        return LiteRTSession(interpreter, device, threads, artifact.metadata.extra.get("output_names"))
