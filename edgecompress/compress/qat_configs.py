"""What QAT does with each layer type stock TFMOT rejects: one declarative table, TFMOT's own idea.

Stock TFMOT 0.8.1 stops on ``Multiply`` (MobileNetV3's hard-swish and squeeze-excite gates),
``Rescaling``, a BatchNormalization that follows no convolution (pre-activation ResNets), slicing
and ``tf.image.resize`` calls (``TFOpLambda``/``SlicingOpLambda``: its model cloning breaks on
them), scalar arithmetic (``x + 3.0``, again ``TFOpLambda``) and models nested in models. Two
kinds of config cover them:

- **output** — quantize the layer's output only (arithmetic whose result has a new range);
- **pass-through** — quantize nothing: resampling, pooling and shape ops (slices, crops, resizes,
  nearest/bilinear up-sampling, average pooling) produce values inside their input's range, so
  the converter gives the output the input's scale, which is exact. TFMOT's own UpSampling2D and
  AveragePooling2D configs quantize the output separately, which makes the converter insert a
  re-quantization before int8 RESIZE_BILINEAR / AVERAGE_POOL_2D (both need equal input and output
  scales). Worse, when the pooled tensor also feeds convolutions (every Inception block: one
  max-pooled tensor, three 1×1 convolutions and an average pool), the converter quantized those
  convolutions' biases against the tensor's calibrated range and then gave it the fake-quant
  scale (biases stored 0.11–0.38× too small; a trained Inception v3 fell from 87 % in Keras to
  18 % in LiteRT). Pass-through avoids both.

TFOpLambda calls are rewritten into the small layers below before QAT (see ``compress/qat.py``).
This module imports TFMOT at import time; it is only imported by the QAT pass, lazily.

References: Jacob et al., "Quantization and Training of Neural Networks for Efficient
Integer-Arithmetic-Only Inference" (CVPR 2018).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgecompress._env import import_tensorflow, import_tf_keras
from edgecompress.errors import require

tf = import_tensorflow()
tf_keras = import_tf_keras()
tfmot = require("tensorflow_model_optimization", "tfmot", "Quantization-aware training")
_quantizers = tfmot.quantization.keras.quantizers


class OutputQuantizeConfig(tfmot.quantization.keras.QuantizeConfig):
    """Quantize the output only (asymmetric 8 bit, moving-average range as TFMOT does for activations)."""

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return [_quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False, narrow_range=False)]

    def get_config(self) -> dict[str, Any]:
        return {}


class PassThroughQuantizeConfig(OutputQuantizeConfig):
    """Quantize nothing: the op moves or resamples values, so its output keeps its input's scale."""

    def get_output_quantizers(self, layer):
        return []


OUTPUT = "output"
PASS_THROUGH = "pass-through"
CONFIGS: dict[str, type] = {OUTPUT: OutputQuantizeConfig, PASS_THROUGH: PassThroughQuantizeConfig}

#: layer class name → config kind, for layers stock TFMOT rejects (or handles worse). Everything else
#: goes to TFMOT's Default8BitQuantizeRegistry (or the prune/cluster-preserving one).
LAYER_CONFIGS: dict[str, str] = {
    # element-wise arithmetic: the result has a new range
    "Multiply": OUTPUT,
    "Subtract": OUTPUT,
    "Maximum": OUTPUT,
    "Minimum": OUTPUT,
    "Average": OUTPUT,
    "Rescaling": OUTPUT,
    "ScalarAdd": OUTPUT,
    "ScalarMultiply": OUTPUT,
    "Normalization": OUTPUT,
    # resampling and shape ops: exact with the input's scale
    "AveragePooling1D": PASS_THROUGH,
    "AveragePooling2D": PASS_THROUGH,
    "UpSampling2D": PASS_THROUGH,
    "Resizing": PASS_THROUGH,
    "ImageResize": PASS_THROUGH,
    "Slice": PASS_THROUGH,
    "CenterCrop": PASS_THROUGH,
}
#: BatchNormalization after one of these is folded by TFMOT's own transforms; elsewhere it is ours.
FOLDS_BATCHNORM = {"Conv2D", "DepthwiseConv2D", "Dense"}
#: activations TFMOT's Activation config accepts (``Default8BitActivationQuantizeConfig``)
TFMOT_ACTIVATIONS = {"relu", "swish", "gelu", "relu6", "linear", "softmax", "sigmoid", "tanh"}


def config_kind(layer, inbound_types: list[str]) -> str | None:
    """Which of our configs a layer needs, or None to leave it to TFMOT's registry."""
    kind = type(layer).__name__
    if kind == "BatchNormalization":
        return None if len(inbound_types) == 1 and inbound_types[0] in FOLDS_BATCHNORM else OUTPUT
    if kind == "Activation":
        name = getattr(layer.activation, "__name__", "")
        return None if name in TFMOT_ACTIVATIONS else OUTPUT
    return LAYER_CONFIGS.get(kind)


def quantize_config_for(layer, inbound_types: list[str]):
    kind = config_kind(layer, inbound_types)
    return CONFIGS[kind]() if kind else None


def tfmot_supports(layer) -> bool:
    registry = tfmot.quantization.keras.default_8bit.Default8BitQuantizeScheme().get_quantize_registry()
    return bool(registry.supports(layer))


# --------------------------------------------------------------------------- rewrite targets
# Small layers that replace TFOpLambda calls, so the model clones and quantizes like any other.


class ScalarAdd(tf_keras.layers.Layer):
    """``x + value`` (also ``x - value``): MobileNetV3's ``x + 3`` before ReLU6."""

    def __init__(self, value: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.value = float(value)

    def call(self, inputs):
        return inputs + self.value

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "value": self.value}


class ScalarMultiply(tf_keras.layers.Layer):
    """``x * value`` (also ``x / value``): MobileNetV3's ``* (1 / 6)`` of hard-sigmoid."""

    def __init__(self, value: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.value = float(value)

    def call(self, inputs):
        return inputs * self.value

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "value": self.value}


class Slice(tf_keras.layers.Layer):
    """``x[key]`` for a key of slices, integers, ``...`` and ``None`` (kept as JSON-friendly lists)."""

    def __init__(self, key: list | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.key = list(key or [])

    @staticmethod
    def encode(key) -> list:
        key = key if isinstance(key, tuple | list) else (key,)
        out = []
        for item in key:
            if isinstance(item, dict):  # tf_keras stores slices in call args as dicts
                out.append({"start": item.get("start"), "stop": item.get("stop"), "step": item.get("step")})
            elif isinstance(item, slice):
                out.append({"start": item.start, "stop": item.stop, "step": item.step})
            elif item is Ellipsis:
                out.append("...")
            elif item is None or isinstance(item, int):
                out.append(item)
            else:
                raise TypeError(f"cannot encode slice item {item!r}")
        return out

    def _decode(self) -> tuple:
        parts = []
        for item in self.key:
            if isinstance(item, dict):
                parts.append(slice(item["start"], item["stop"], item["step"]))
            elif item == "...":
                parts.append(Ellipsis)
            else:
                parts.append(item)
        return tuple(parts)

    def call(self, inputs):
        return inputs[self._decode()]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "key": self.key}


class ImageResize(tf_keras.layers.Layer):
    """``tf.image.resize(x, size, method)`` as a layer."""

    def __init__(self, size: tuple[int, int] = (1, 1), method: str = "bilinear", antialias: bool = False,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(**kwargs)
        self.size = tuple(int(s) for s in size)
        self.method = str(method)
        self.antialias = bool(antialias)

    def call(self, inputs):
        return tf.image.resize(inputs, self.size, method=self.method, antialias=self.antialias)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "size": list(self.size), "method": self.method, "antialias": self.antialias}


REWRITE_LAYERS: dict[str, Callable] = {
    cls.__name__: cls for cls in (ScalarAdd, ScalarMultiply, Slice, ImageResize)
}


def custom_objects() -> dict[str, Any]:
    """Everything ``quantize_scope`` must know to clone a model holding our layers and configs."""
    return {**REWRITE_LAYERS, "OutputQuantizeConfig": OutputQuantizeConfig,
            "PassThroughQuantizeConfig": PassThroughQuantizeConfig}  # fmt: skip
