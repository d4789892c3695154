"""Loading Keras models safely, whichever Keras wrote them, and copying Keras 3 models to tf_keras.

Why a scan before loading: a Keras file can carry a ``Lambda`` layer whose marshalled bytecode runs
on load (the Keras code-injection advisory behind ``safe_mode``). We read the JSON config without
deserializing anything and refuse such models unless the user says ``--trust-model``.

Why two Keras flavours: TensorFlow ≥ 2.16 saves Keras 3 files by default, which tf_keras rejects
(``Unrecognized keyword arguments: ['batch_shape']``). PTQ and export take Keras 3 models as they
are; passes built on TFMOT or Larq need :func:`to_tf_keras`.
"""

from __future__ import annotations

import inspect
import json
import logging
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecompress._env import import_tf_keras, native_output_silenced
from edgecompress.artifacts import ModelFormat, detect_format
from edgecompress.errors import ModelLoadError, UnsafeModelError, UnsupportedError

log = logging.getLogger(__name__)

#: class names in a Keras config that deserialize arbitrary Python.
UNSAFE_CLASSES = {"Lambda", "__lambda__"}
#: Keras 3 configs name the module each object is imported from; anything outside Keras is custom code.
SAFE_MODULE_PREFIXES = ("keras", "tf_keras")
#: TensorFlow functions a TFOpLambda layer may name that touch files or run Python when the model runs.
UNSAFE_TF_FUNCTIONS = ("io.", "raw_ops.", "py_func", "numpy_function", "print", "summary.", "debugging.",
                       "data.", "saved_model", "write_file", "read_file", "gfile", "compat.v1.io")


@dataclass
class KerasModel:
    """A loaded Keras model and which Keras built it (``"tf_keras"`` or ``"keras3"``)."""

    model: Any
    flavor: str
    path: Path | None = None

    @property
    def input_shape(self) -> tuple[int | None, ...]:
        shape = self.model.inputs[0].shape
        return tuple(None if d is None else int(d) for d in shape[1:])

    @property
    def output_shape(self) -> tuple[int | None, ...]:
        shape = self.model.outputs[0].shape
        return tuple(None if d is None else int(d) for d in shape[1:])

    def predict(self, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
        outs = [np.asarray(self.model(x[i : i + batch_size], training=False)) for i in range(0, len(x), batch_size)]
        return np.concatenate(outs, axis=0)


def read_config(path: Path, fmt: ModelFormat) -> tuple[dict | None, str | None]:
    """The model's JSON config and the Keras version that wrote it, without deserializing."""
    try:
        if fmt is ModelFormat.KERAS_H5:
            import h5py

            with h5py.File(path, "r") as handle:
                raw = handle.attrs.get("model_config")
                version = handle.attrs.get("keras_version")
            if raw is None:
                raise ModelLoadError(
                    f"{path} holds only weights, no model architecture",
                    "save the whole model with model.save(...), not save_weights",
                )
            raw = raw.decode() if isinstance(raw, bytes) else raw
            version = version.decode() if isinstance(version, bytes) else version
            return json.loads(raw), version
        if fmt is ModelFormat.KERAS_V3:
            with zipfile.ZipFile(path) as archive:
                config = json.loads(archive.read("config.json"))
                meta = json.loads(archive.read("metadata.json")) if "metadata.json" in archive.namelist() else {}
            return config, meta.get("keras_version")
        if fmt is ModelFormat.SAVEDMODEL:
            meta_file = Path(path) / "keras_metadata.pb"
            if not meta_file.exists():
                raise ModelLoadError(
                    f"{path} is a SavedModel without Keras metadata",
                    "save it from Keras (model.save) or convert the SavedModel with the TFLite converter directly",
                )
            return {"raw": meta_file.read_bytes().decode(errors="replace")}, None
    except ModelLoadError:
        raise
    except (OSError, KeyError, ValueError, EOFError, zlib.error, zipfile.BadZipFile) as exc:  # EOFError: a cut zip member
        raise ModelLoadError(f"model file is damaged: {path}: {_first_line(exc)}", "re-export or re-download it") from exc
    return None, None


def unsafe_layers(config: dict | None) -> list[str]:
    """Names of layers whose deserialization would run Python from the file."""
    if not config:
        return []
    if "raw" in config:  # SavedModel Keras metadata: a protobuf of JSON strings
        text = config["raw"]
        return ["Lambda"] if '"class_name": "Lambda"' in text or '"class_name":"Lambda"' in text else []
    found = []
    for node in _walk(config):
        inner = node.get("config") if isinstance(node.get("config"), dict) else {}
        name = inner.get("name", node.get("name", "?"))
        class_name = node.get("class_name")
        module = node.get("module")
        if class_name in UNSAFE_CLASSES:
            found.append(f"{name} ({class_name})")
        elif isinstance(module, str) and not module.startswith(SAFE_MODULE_PREFIXES):
            found.append(f"{name} ({class_name} from module '{module}')")
        elif class_name in ("TFOpLambda", "SlicingOpLambda"):
            function = str(inner.get("function", ""))
            if any(marker in function for marker in UNSAFE_TF_FUNCTIONS):
                found.append(f"{name} (TensorFlow op tf.{function})")
    return found


def _walk(obj: Any) -> Iterator[dict]:
    if isinstance(obj, dict):
        if "class_name" in obj:
            yield obj
        for value in obj.values():
            yield from _walk(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from _walk(value)


#: the last model loaded: `compress quantize` reads the source for its input shape, then converts it.
_LAST: dict[tuple, KerasModel] = {}


def load_keras(path: str | Path, trust_model: bool = False) -> KerasModel:
    """Load a Keras model of any flavour; refuse code-carrying models unless trusted.

    Passes never mutate a loaded model (TFMOT and our rewrites clone), so the last one is cached.
    """
    path = Path(path)
    detect_format(path)  # a missing or damaged file fails here, before the cache is consulted
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, trust_model)
    if key in _LAST:
        return _LAST[key]
    loaded = _load_uncached(path, trust_model)
    _LAST.clear()
    _LAST[key] = loaded
    return loaded


def _load_uncached(path: Path, trust_model: bool) -> KerasModel:
    from edgecompress.runtimes.probe import probe

    fmt = detect_format(path)
    if not fmt.is_keras:
        raise ModelLoadError(f"{path} is a {fmt.value} model, not a Keras model", "pass the Keras source model")
    if fmt is ModelFormat.KERAS_H5:
        probe("hdf5", path)  # a corrupted HDF5 file can hang the library: read it in a child first
    config, version = read_config(path, fmt)
    risky = unsafe_layers(config)
    if risky and not trust_model:
        raise UnsafeModelError(
            f"{path} contains layers that run arbitrary Python when loaded: {', '.join(risky)}",
            "pass --trust-model (API: trust_model=True) only if you trust where this file came from",
        )
    flavor = "keras3" if version and str(version).startswith("3") else "tf_keras"
    try:
        with native_output_silenced():
            model = _load(path, fmt, flavor, trust_model)
    except Exception as exc:  # noqa: BLE001 - every loader failure becomes one clear line
        message = _first_line(exc)
        if flavor == "tf_keras" and ("batch_shape" in message or "Unrecognized keyword" in message):
            try:
                with native_output_silenced():
                    model = _load(path, fmt, "keras3", trust_model)
                flavor = "keras3"
            except Exception as exc3:  # noqa: BLE001
                raise _load_error(path, exc3) from exc3
        else:
            raise _load_error(path, exc) from exc
    return KerasModel(model=model, flavor=flavor, path=path)


def _load(path: Path, fmt: ModelFormat, flavor: str, trust_model: bool):
    if flavor == "keras3":
        import_tf_keras()  # TensorFlow first, quietly
        import keras

        return keras.models.load_model(path, compile=False, safe_mode=not trust_model)
    tf_keras = import_tf_keras()
    if fmt is ModelFormat.KERAS_V3:
        return tf_keras.models.load_model(path, compile=False, safe_mode=not trust_model)
    return tf_keras.models.load_model(path, compile=False)


def _load_error(path: Path, exc: Exception) -> ModelLoadError:
    message = _first_line(exc)
    lowered = message.lower()
    if "unknown layer" in lowered or "could not locate class" in lowered:
        return ModelLoadError(
            f"{path} uses a custom layer that is not part of Keras: {message}",
            "convert the model to built-in layers, or export it to .tflite/.onnx yourself",
        )
    if any(word in lowered for word in ("truncated", "signature", "unable to", "bad zip", "corrupt", "eof")):
        return ModelLoadError(f"model file is damaged: {path}: {message}", "re-export or re-download it")
    return ModelLoadError(f"could not load {path}: {message}", "check that it was saved with model.save(...)")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


# --------------------------------------------------------------------------- Keras 3 → tf_keras


def to_tf_keras(keras_model: KerasModel, atol: float = 1e-5) -> KerasModel:
    """A faithful tf_keras copy of a Keras 3 model: same layers, same weights, outputs checked equal."""
    if keras_model.flavor == "tf_keras":
        return keras_model
    tf_keras = import_tf_keras()
    source = keras_model.model
    copy = _copy_model(source, tf_keras)
    probe = np.random.default_rng(0).standard_normal((2, *keras_model.input_shape)).astype(np.float32)
    expected = np.asarray(source(probe, training=False))
    got = np.asarray(copy(probe, training=False))
    diff = float(np.max(np.abs(expected - got)))
    if not np.isfinite(diff) or diff > atol * max(1.0, float(np.max(np.abs(expected)))):
        raise UnsupportedError(
            f"the tf_keras copy of this Keras 3 model differs from it (max |Δ| = {diff:.3g})",
            "save the model with tf_keras (TF_USE_LEGACY_KERAS=1) before running this pass",
        )
    return KerasModel(model=copy, flavor="tf_keras", path=keras_model.path)


def _copy_model(source, tf_keras):
    import keras

    if isinstance(source, keras.Sequential):
        shape = tuple(source.inputs[0].shape[1:])
        layers = [_copy_layer(layer, tf_keras) for layer in source.layers]
        model = tf_keras.Sequential([tf_keras.Input(shape=shape), *layers], name=source.name)
        for old, new in zip(source.layers, layers, strict=True):
            new.set_weights(old.get_weights())
        return model
    tensors: dict[int, Any] = {}
    for tensor in source.inputs:
        tensors[id(tensor)] = tf_keras.Input(shape=tuple(tensor.shape[1:]), dtype=tensor.dtype, name=tensor.name)
    for operation in source.operations:
        if type(operation).__name__ == "InputLayer":
            continue
        new_layer = _copy_layer(operation, tf_keras)
        for node in operation._inbound_nodes:  # noqa: SLF001 - the graph structure is only reachable here
            args, kwargs = node.arguments.args, node.arguments.kwargs
            flat = keras.tree.flatten((args, kwargs))
            if not all(id(t) in tensors for t in flat if isinstance(t, keras.KerasTensor)):
                continue  # a call of this layer from outside this model
            mapped_args, mapped_kwargs = keras.tree.map_structure(
                lambda t: tensors[id(t)] if isinstance(t, keras.KerasTensor) else t, (args, kwargs)
            )
            outputs = new_layer(*mapped_args, **mapped_kwargs)
            for old, new in zip(keras.tree.flatten(node.outputs), keras.tree.flatten(outputs), strict=True):
                tensors[id(old)] = new
        if operation.weights:
            new_layer.set_weights(operation.get_weights())
    outputs = [tensors[id(t)] for t in source.outputs]
    return tf_keras.Model(
        [tensors[id(t)] for t in source.inputs], outputs if len(outputs) > 1 else outputs[0], name=source.name
    )


def _copy_layer(layer, tf_keras):
    import keras

    if isinstance(layer, keras.Model):
        return _copy_model(layer, tf_keras)
    name = type(layer).__name__
    target = getattr(tf_keras.layers, name, None)
    if target is None or not isinstance(layer, keras.layers.Layer):
        raise UnsupportedError(
            f"layer '{layer.name}' ({name}) has no Keras 2 twin, so TFMOT/Larq passes cannot take this model",
            "rebuild the model with tf_keras layers, or use post-training quantization, which needs no copy",
        )
    config = layer.get_config()
    allowed = set(inspect.signature(target.__init__).parameters) | {"name", "trainable", "dtype"}
    clean = {}
    for key, value in config.items():
        if key not in allowed or key.endswith(("_initializer", "_regularizer", "_constraint")):
            continue  # weights are copied; initialisers and Keras-3-only options do not matter
        if key == "dtype" and isinstance(value, dict):
            value = value.get("config", {}).get("name", "float32")
        clean[key] = value
    return target(**clean)
