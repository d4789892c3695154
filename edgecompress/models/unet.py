"""U-Net for semantic segmentation, written block by block.

Reference: Ronneberger et al., "U-Net: Convolutional Networks for Biomedical Image Segmentation"
(MICCAI 2015). 'same' padding instead of the paper's crops, so the mask has the input's size.
"""

from __future__ import annotations

from edgecompress._env import import_tf_keras
from edgecompress.errors import UsageError
from edgecompress.models.blocks import conv_bn, make_divisible

DECODERS = ("transpose", "upsample")


def unet(
    input_size: int,
    alpha: float,
    classes: int,
    depth: int = 4,
    base_filters: int = 32,
    decoder: str = "transpose",
    channels: int = 3,
):
    """Per-pixel logits (N, H, W, classes); ``alpha`` scales ``base_filters``.

    ``decoder='upsample'`` uses nearest-neighbour UpSampling2D + a 3×3 conv instead of
    Conv2DTranspose: both are common, and each stresses a different converter/QAT path.
    """
    if decoder not in DECODERS:
        raise UsageError(f"unknown U-Net decoder '{decoder}'", f"choose one of: {', '.join(DECODERS)}")
    if depth < 1 or input_size % (2**depth):
        raise UsageError(
            f"a U-Net of depth {depth} needs an input size divisible by {2**depth}, not {input_size}",
            f"pass --input-size {max(2**depth, input_size // 2**depth * 2**depth)} or a smaller --depth",
        )
    tf_keras = import_tf_keras()
    layers = tf_keras.layers
    inputs = tf_keras.Input((input_size, input_size, channels), name="input")
    widths = [make_divisible(base_filters * alpha * 2**level, 4) for level in range(depth + 1)]
    skips, x = [], inputs
    for level in range(depth):
        x = _double_conv(x, widths[level], f"down{level + 1}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"down{level + 1}_pool")(x)
    x = _double_conv(x, widths[depth], "bottleneck")
    for level in reversed(range(depth)):
        name = f"up{level + 1}"
        if decoder == "transpose":
            x = layers.Conv2DTranspose(widths[level], 2, strides=2, name=f"{name}_transpose")(x)
        else:
            x = layers.UpSampling2D(2, interpolation="nearest", name=f"{name}_upsample")(x)
            x = conv_bn(x, widths[level], 3, name=f"{name}_upconv")
        x = layers.Concatenate(name=f"{name}_concat")([skips[level], x])
        x = _double_conv(x, widths[level], name)
    outputs = layers.Conv2D(classes, 1, name="mask_logits")(x)
    return tf_keras.Model(inputs, outputs, name=f"unet_{decoder}")


def _double_conv(x, filters: int, name: str):
    x = conv_bn(x, filters, 3, name=f"{name}_a")
    return conv_bn(x, filters, 3, name=f"{name}_b")
