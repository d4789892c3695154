"""ResNet-18 (written block by block) and ResNet-50 (Keras applications), with v1 or v2 blocks.

v1 blocks add the shortcut before the last ReLU (He et al., "Deep Residual Learning for Image
Recognition", CVPR 2016); v2 blocks are pre-activation, BN → ReLU → conv, with an identity path
left untouched (He et al., "Identity Mappings in Deep Residual Networks", ECCV 2016).
"""

from __future__ import annotations

from edgecompress._env import import_tf_keras
from edgecompress.models.blocks import (
    BN_MOMENTUM,
    classifier_head,
    conv_bn,
    fast_batchnorm,
    make_divisible,
    scale_width,
)

#: (filters, blocks) per stage of ResNet-18
RESNET18_STAGES = ((64, 2), (128, 2), (256, 2), (512, 2))


def resnet18(input_size: int, alpha: float, classes: int, channels: int = 3):
    return _resnet18(input_size, alpha, classes, channels, preact=False)


def resnet18_v2(input_size: int, alpha: float, classes: int, channels: int = 3):
    return _resnet18(input_size, alpha, classes, channels, preact=True)


def _resnet18(input_size: int, alpha: float, classes: int, channels: int, preact: bool):
    tf_keras = import_tf_keras()
    layers = tf_keras.layers
    inputs = tf_keras.Input((input_size, input_size, channels), name="input")
    stem = make_divisible(64 * alpha)
    # v2 leaves the stem un-normalised: the first block's pre-activation normalises it.
    x = conv_bn(inputs, stem, 7, 2, name="stem") if not preact else layers.Conv2D(stem, 7, 2, padding="same", name="stem_conv")(inputs)
    x = layers.MaxPooling2D(3, 2, padding="same", name="stem_pool")(x)
    block = _preact_block if preact else _basic_block
    for stage, (filters, count) in enumerate(RESNET18_STAGES, start=1):
        for index in range(count):
            strides = 2 if stage > 1 and index == 0 else 1
            x = block(x, make_divisible(filters * alpha), strides, f"stage{stage}_block{index + 1}")
    if preact:
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name="post_bn")(x)
        x = layers.ReLU(name="post_relu")(x)
    name = "resnet18_v2" if preact else "resnet18"
    return tf_keras.Model(inputs, classifier_head(x, classes), name=name)


def _basic_block(x, filters: int, strides: int, name: str):
    layers = import_tf_keras().layers
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = conv_bn(x, filters, 1, strides, activation=None, name=f"{name}_proj")
    y = conv_bn(x, filters, 3, strides, name=f"{name}_1")
    y = conv_bn(y, filters, 3, 1, activation=None, name=f"{name}_2")
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=f"{name}_out")(y)


def _preact_block(x, filters: int, strides: int, name: str):
    layers = import_tf_keras().layers
    pre = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_preact_bn")(x)
    pre = layers.ReLU(name=f"{name}_preact_relu")(pre)
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides, name=f"{name}_proj_conv")(pre)
    y = conv_bn(pre, filters, 3, strides, name=f"{name}_1")
    y = layers.Conv2D(filters, 3, padding="same", name=f"{name}_2_conv")(y)
    return layers.Add(name=f"{name}_add")([shortcut, y])


def resnet50(input_size: int, alpha: float, classes: int, channels: int = 3):
    return _keras_resnet50("ResNet50", input_size, alpha, classes, channels)


def resnet50_v2(input_size: int, alpha: float, classes: int, channels: int = 3):
    return _keras_resnet50("ResNet50V2", input_size, alpha, classes, channels)


def _keras_resnet50(which: str, input_size: int, alpha: float, classes: int, channels: int):
    build = getattr(import_tf_keras().applications, which)
    model = build(input_shape=(input_size, input_size, channels), weights=None, classes=classes)
    return fast_batchnorm(scale_width(model, alpha))
