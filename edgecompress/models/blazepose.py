"""BlazePose-style two-stage pose models: a person detector and a landmark model.

Reference: Bazarevsky et al., "BlazePose: On-device Real-time Body Pose tracking" (CVPR-W 2020).
The detector regresses one person box; the landmark model has a heatmap head (stride 4, one channel
per keypoint) that supervises training, and a regression head giving keypoints × (x, y, z,
visibility), the output a device uses. As in the paper the regression encoder reuses the
heatmap decoder's features. Simplifications: one box instead of SSD anchors, and 1×1 projections
instead of channel padding on shortcuts (padding needs a Lambda, which QAT and safe loading reject).
"""

from __future__ import annotations

from edgecompress._env import import_tf_keras
from edgecompress.errors import UsageError
from edgecompress.models.blocks import BN_MOMENTUM, conv_bn, make_divisible

#: BlazePose's 33-keypoint topology (as in MediaPipe Pose), in output order.
BLAZEPOSE_KEYPOINTS = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye", "right_eye_outer",
    "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_pinky", "right_pinky", "left_index", "right_index",
    "left_thumb", "right_thumb", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
    "right_ankle", "left_heel", "right_heel", "left_foot_index", "right_foot_index",
)  # fmt: skip
#: encoder widths at strides 2, 4, 8, 16, 32
LANDMARK_WIDTHS = (16, 32, 64, 128, 192)
DETECTOR_WIDTHS = (24, 48, 96, 96, 192)


def blaze_block(x, filters: int, strides: int = 1, name: str = ""):
    """Depthwise 3×3 → pointwise 1×1, plus a shortcut (max-pooled when strided, projected when widened)."""
    layers = import_tf_keras().layers
    y = layers.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False, name=f"{name}_dw")(x)
    y = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_dw_bn")(y)
    y = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_pw")(y)
    y = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_pw_bn")(y)
    shortcut = x
    if strides != 1:
        shortcut = layers.MaxPooling2D(strides, name=f"{name}_pool")(shortcut)
    if shortcut.shape[-1] != filters:
        shortcut = conv_bn(shortcut, filters, 1, activation=None, name=f"{name}_proj")
    return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([shortcut, y]))


def _check_size(input_size: int, what: str) -> None:
    if input_size % 32:
        raise UsageError(
            f"the BlazePose {what} needs an input size divisible by 32, not {input_size}",
            f"pass --input-size {max(32, round(input_size / 32) * 32)}",
        )


def _encoder(x, widths: tuple[int, ...], alpha: float, name: str) -> list:
    """Stride-2 stages with two blaze blocks each; returns the features at strides 2, 4, …, 32."""
    features = []
    x = conv_bn(x, make_divisible(widths[0] * alpha), 3, 2, name=f"{name}_stem")
    x = blaze_block(x, make_divisible(widths[0] * alpha), name=f"{name}_s1")
    features.append(x)
    for stage, width in enumerate(widths[1:], start=2):
        filters = make_divisible(width * alpha)
        x = blaze_block(x, filters, 2, name=f"{name}_s{stage}a")
        x = blaze_block(x, filters, 1, name=f"{name}_s{stage}b")
        features.append(x)
    return features


def blazepose_detector(input_size: int, alpha: float, channels: int = 3):
    """One person box (x0, y0, x1, y1), normalised to [0, 1] by a sigmoid."""
    _check_size(input_size, "detector")
    tf_keras = import_tf_keras()
    layers = tf_keras.layers
    inputs = tf_keras.Input((input_size, input_size, channels), name="input")
    features = _encoder(inputs, DETECTOR_WIDTHS, alpha, "det")
    x = layers.GlobalAveragePooling2D(name="det_pool")(features[-1])
    box = layers.Dense(4, activation="sigmoid", name="box")(x)
    return tf_keras.Model(inputs, box, name="blazepose_detector")


def blazepose_landmark(input_size: int, alpha: float, keypoints: int = 33, channels: int = 3):
    """Outputs, in this order: landmarks (N, K, 4) = x, y (0–1), z, visibility logit; heatmap (N, H/4, W/4, K).

    Landmarks come first as in MediaPipe's models; the names sort the other way on purpose, so the
    runtimes' output ordering is exercised (LiteRT sorts signature outputs by name).
    """
    _check_size(input_size, "landmark model")
    tf_keras = import_tf_keras()
    layers = tf_keras.layers
    inputs = tf_keras.Input((input_size, input_size, channels), name="input")
    _, s4, s8, s16, s32 = _encoder(inputs, LANDMARK_WIDTHS, alpha, "enc")
    width = make_divisible(LANDMARK_WIDTHS[1] * alpha)
    # Heatmap decoder: up-sample and add projected encoder skips, down to stride 4.
    x = conv_bn(s32, width, 1, name="dec32")
    for skip, stride in ((s16, 16), (s8, 8), (s4, 4)):
        x = layers.UpSampling2D(2, name=f"dec{stride}_up")(x)
        x = layers.Add(name=f"dec{stride}_merge")([x, conv_bn(skip, width, 1, name=f"dec{stride}_skip")])
        x = blaze_block(x, width, name=f"dec{stride}")
    heat = blaze_block(x, width, name="heat")
    heatmap = layers.Conv2D(keypoints, 3, padding="same", name="heatmap")(heat)
    # Regression encoder: back down from the decoder's stride-4 features, joined by encoder skips.
    y = x
    for skip, stride, filters in ((s8, 8, 64), (s16, 16, 128), (s32, 32, 192)):
        filters = make_divisible(filters * alpha)
        y = blaze_block(y, filters, 2, name=f"reg{stride}")
        y = layers.Add(name=f"reg{stride}_merge")([y, conv_bn(skip, filters, 1, name=f"reg{stride}_skip")])
    y = layers.GlobalAveragePooling2D(name="reg_pool")(y)
    y = layers.Dense(keypoints * 4, name="reg_dense")(y)
    landmarks = layers.Reshape((keypoints, 4), name="landmarks")(y)
    return tf_keras.Model(inputs, [landmarks, heatmap], name="blazepose_landmark")
