"""Keras / TensorFlow runtime: the float reference every other runtime is compared against."""

from __future__ import annotations

import numpy as np

from edgecompress._env import import_tensorflow
from edgecompress.artifacts import Artifact, ModelFormat
from edgecompress.runtimes.base import Runtime, Session, TensorSpec


class KerasSession(Session):
    runtime = "keras"

    def __init__(self, model, device: str, threads: int | None) -> None:
        tf = import_tensorflow()
        self._tf = tf
        self.model = model
        self.device = device
        self.threads = threads
        self._device_name = "/GPU:0" if device == "gpu" else "/CPU:0"
        shape = tuple(None if d is None else int(d) for d in model.inputs[0].shape)
        self.inputs = [TensorSpec(model.inputs[0].name, shape, "float32")]
        self.outputs = [
            TensorSpec(t.name, tuple(None if d is None else int(d) for d in t.shape), "float32") for t in model.outputs
        ]
        self._compiled = tf.function(lambda t: model(t, training=False), reduce_retracing=True)

    def _run_float(self, x: np.ndarray) -> list[np.ndarray]:
        with self._tf.device(self._device_name):
            out = self._compiled(self._tf.constant(x))
        return [np.asarray(o) for o in (out if isinstance(out, list | tuple) else [out])]

    def prepare_raw(self, x: np.ndarray):
        return self._tf.constant(np.asarray(x, dtype=np.float32))

    def run_raw(self, prepared) -> None:
        with self._tf.device(self._device_name):
            out = self._compiled(prepared)
        # Materialize so the timing includes the computation, not just its dispatch.
        (out[0] if isinstance(out, list | tuple) else out).numpy()


class KerasRuntime(Runtime):
    name = "keras"
    formats = (ModelFormat.KERAS_H5, ModelFormat.KERAS_V3, ModelFormat.SAVEDMODEL)

    def available(self) -> tuple[bool, str]:
        return True, ""

    def version(self) -> str:
        return import_tensorflow().__version__

    def device_available(self, device: str) -> tuple[bool, str]:
        if device == "cpu":
            return True, ""
        tf = import_tensorflow()
        if tf.config.list_physical_devices("GPU"):
            return True, ""
        return False, "TensorFlow sees no GPU (install tensorflow[and-cuda] on a machine with an NVIDIA GPU)"

    def _open(self, artifact: Artifact, device: str, threads: int | None, trust_model: bool) -> Session:
        from edgecompress.runtimes.keras_io import load_keras

        tf = import_tensorflow()
        if threads:
            try:
                tf.config.threading.set_intra_op_parallelism_threads(threads)
                tf.config.threading.set_inter_op_parallelism_threads(1)
            except RuntimeError:
                pass  # TensorFlow's thread pools are fixed once it has run; we report what is in force
            threads = tf.config.threading.get_intra_op_parallelism_threads() or threads
        model = load_keras(artifact.path, trust_model=trust_model).model
        return KerasSession(model, device, threads)
