"""Pieces every zoo family shares: BatchNorm settings for short trainings, width scaling, profiles."""

from __future__ import annotations

import numpy as np

from edgecompress._env import import_tf_keras

#: BatchNorm momentum for zoo models. Keras applications use 0.999, tuned for ImageNet-length
#: training; on a few hundred steps the moving statistics never converge and inference stays at chance.
BN_MOMENTUM = 0.9


def fast_batchnorm(model, momentum: float = BN_MOMENTUM):
    """Set every BatchNormalization's momentum (in place; returns the model)."""
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            layer.momentum = momentum
    return model


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of ``divisor`` (SIMD-friendly), never below 90 % of it."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def scale_width(model, alpha: float):
    """A copy of ``model`` (fresh random weights) with every convolution's filter count × ``alpha``.

    Why a config rewrite: Keras' ResNet50 and InceptionV3 take no width multiplier. Equal original
    counts map to equal scaled counts, so residual additions and concatenations still line up.
    """
    if alpha == 1.0:
        return model
    tf_keras = import_tf_keras()
    config = model.get_config()
    for layer in config["layers"]:
        if layer["class_name"] in ("Conv2D", "Conv2DTranspose"):
            layer["config"]["filters"] = make_divisible(layer["config"]["filters"] * alpha)
    return tf_keras.Model.from_config(config)


def conv_bn(x, filters: int, kernel: int = 3, strides: int = 1, activation: str | None = "relu", name: str = ""):
    """Conv (no bias: BatchNorm adds it) → BatchNorm → activation."""
    layers = import_tf_keras().layers
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return layers.Activation(activation, name=f"{name}_{activation}")(x) if activation else x


def classifier_head(x, classes: int):
    """Global average pooling and a softmax Dense, as in Keras applications."""
    layers = import_tf_keras().layers
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return layers.Dense(classes, activation="softmax", name="predictions")(x)


def count_macs(model) -> int:
    """Multiply-accumulates of one inference (batch 1), from the layers' static shapes.

    Counts convolutions (incl. depthwise, transposed) and dense layers, the ops that dominate
    latency; element-wise ops, pooling and BatchNorm (folded on export) are left out.
    """
    total = 0
    for layer in model.layers:
        kind = type(layer).__name__
        if hasattr(layer, "layers") and kind in ("Functional", "Model", "Sequential"):
            total += count_macs(layer)
            continue
        if kind not in ("Conv2D", "DepthwiseConv2D", "Conv2DTranspose", "Dense"):
            continue
        out_shape, in_shape = layer.output_shape, layer.input_shape
        kernel = tuple(layer.weights[0].shape)
        if kind == "Conv2D":
            total += int(np.prod(out_shape[1:])) * int(np.prod(kernel[:3]))
        elif kind == "DepthwiseConv2D":
            total += int(np.prod(out_shape[1:])) * int(np.prod(kernel[:2]))
        elif kind == "Conv2DTranspose":
            total += int(np.prod(in_shape[1:])) * int(np.prod(kernel[:3]))
        else:
            total += int(np.prod(in_shape[1:])) * int(kernel[-1])
    return total
