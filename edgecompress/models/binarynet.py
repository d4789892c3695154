"""A BinaryNet-style classifier: the shape binarization wants, from float training onwards.

Reference: Courbariaux et al., "Binarized Neural Networks" (NeurIPS 2016) — their CIFAR-10 net,
narrowed to four convolutions.
"""

from __future__ import annotations

from edgecompress._env import import_tf_keras


def binarynet(input_size: int, alpha: float, classes: int, channels: int = 3):
    """The zoo entry: ``alpha`` scales the base width of 64 filters."""
    return binarynet_cnn(input_size, classes, channels, width=max(8, int(round(64 * alpha))))


def binarynet_cnn(input_size: int = 32, classes: int = 10, channels: int = 1, width: int = 64):
    """A float VGG-style classifier shaped for binarization (BinaryNet's CIFAR-10 net, narrowed).

    Conv → BN → ReLU stacks with max-pooling: every binarized convolution gets a BatchNorm to set
    its threshold, and no depthwise layers (a 3×3 depthwise binary conv has 9 inputs per output,
    too few for sign to carry information). Used by the binarization tests and benchmark.
    """
    tf_keras = import_tf_keras()
    layers = tf_keras.layers
    inputs = tf_keras.Input((input_size, input_size, channels), name="input")
    x = inputs
    for index, (filters, pool) in enumerate(((width // 2, False), (width, True), (width * 2, True), (width * 2, True))):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{index + 1}")(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"bn{index + 1}")(x)
        x = layers.ReLU(name=f"relu{index + 1}")(x)
        if pool:
            x = layers.MaxPooling2D(2, name=f"pool{index + 1}")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(classes, activation="softmax", name="predictions")(x)
    return tf_keras.Model(inputs, outputs, name="binarynet_cnn")
