"""MobileNet v1, v2 and v3 (small, large) from Keras applications, random weights.

References: Howard et al., "MobileNets" (2017); Sandler et al., "MobileNetV2: Inverted Residuals and
Linear Bottlenecks" (CVPR 2018); Howard et al., "Searching for MobileNetV3" (ICCV 2019).
"""

from __future__ import annotations

from edgecompress._env import import_tf_keras
from edgecompress.models.blocks import fast_batchnorm


def _shape(input_size: int, channels: int) -> tuple[int, int, int]:
    return (input_size, input_size, channels)


def mobilenet_v1(input_size: int, alpha: float, classes: int, channels: int = 3):
    apps = import_tf_keras().applications
    model = apps.MobileNet(input_shape=_shape(input_size, channels), alpha=alpha, weights=None, classes=classes)
    return fast_batchnorm(model)


def mobilenet_v2(input_size: int, alpha: float, classes: int, channels: int = 3):
    apps = import_tf_keras().applications
    model = apps.MobileNetV2(input_shape=_shape(input_size, channels), alpha=alpha, weights=None, classes=classes)
    return fast_batchnorm(model)


def mobilenet_v3_small(input_size: int, alpha: float, classes: int, channels: int = 3):
    return _mobilenet_v3("MobileNetV3Small", input_size, alpha, classes, channels)


def mobilenet_v3_large(input_size: int, alpha: float, classes: int, channels: int = 3):
    return _mobilenet_v3("MobileNetV3Large", input_size, alpha, classes, channels)


def _mobilenet_v3(which: str, input_size: int, alpha: float, classes: int, channels: int):
    # include_preprocessing=False: the Rescaling layer would apply our recorded preprocessing twice,
    # and TFMOT's QAT rejects it.
    build = getattr(import_tf_keras().applications, which)
    model = build(
        input_shape=_shape(input_size, channels),
        alpha=alpha,
        weights=None,
        classes=classes,
        include_preprocessing=False,
    )
    return fast_batchnorm(model)
