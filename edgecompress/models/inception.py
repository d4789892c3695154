"""Inception v3 from Keras applications, random weights, with a width multiplier.

Reference: Szegedy et al., "Rethinking the Inception Architecture for Computer Vision" (CVPR 2016).
Its valid-padded stem and stride-2 reductions need at least 75×75 inputs.
"""

from __future__ import annotations

from edgecompress._env import import_tf_keras
from edgecompress.errors import UsageError
from edgecompress.models.blocks import fast_batchnorm, scale_width

MIN_INPUT = 75


def inception_v3(input_size: int, alpha: float, classes: int, channels: int = 3):
    if input_size < MIN_INPUT:
        raise UsageError(
            f"Inception v3 needs inputs of at least {MIN_INPUT} px, not {input_size}",
            f"pass --input-size {MIN_INPUT} or more",
        )
    apps = import_tf_keras().applications
    model = apps.InceptionV3(input_shape=(input_size, input_size, channels), weights=None, classes=classes)
    return fast_batchnorm(scale_width(model, alpha))
