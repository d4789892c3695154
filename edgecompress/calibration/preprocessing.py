"""Image preprocessing recorded in a model's metadata, so calibration, evaluation and devices agree.

Pure numpy on purpose: deploy bundles copy this file next to ``run.py`` and must not need
TensorFlow or Pillow to reproduce exactly what the toolkit measured.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

COLOR_ORDERS = ("rgb", "bgr", "gray")
RESIZE_METHODS = ("bilinear", "nearest")


@dataclass(frozen=True)
class Preprocessing:
    """``x = (pixel * scale + offset - mean) / std`` after resizing to the model's input size.

    ``pixel`` is the raw 0–255 value. The defaults map to ``[0, 1]``; a MobileNet-style
    ``[-1, 1]`` input is ``scale=1/127.5, offset=-1``.
    """

    scale: float = 1.0 / 255.0
    offset: float = 0.0
    mean: tuple[float, ...] = field(default=(0.0,))
    std: tuple[float, ...] = field(default=(1.0,))
    color: str = "rgb"
    resize: str = "bilinear"

    def __post_init__(self) -> None:
        if self.color not in COLOR_ORDERS:
            raise ValueError(f"color must be one of {COLOR_ORDERS}, not {self.color!r}")
        if self.resize not in RESIZE_METHODS:
            raise ValueError(f"resize must be one of {RESIZE_METHODS}, not {self.resize!r}")
        if any(s == 0 for s in self.std):
            raise ValueError("std must not contain zeros")
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))

    def to_dict(self) -> dict:
        data = asdict(self)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for key in ("mean", "std"):
            if key in known:
                known[key] = tuple(known[key])
        return cls(**known)

    def describe(self) -> str:
        parts = [f"x*{self.scale:.6g}{self.offset:+.6g}"]
        if self.mean != (0.0,) or self.std != (1.0,):
            parts.append(f"mean {list(self.mean)} std {list(self.std)}")
        parts.append(self.color)
        return ", ".join(parts)

    def apply(self, images: np.ndarray, height: int, width: int, channels: int) -> np.ndarray:
        """Raw uint8-range images (N, H, W[, C]) → float32 model inputs (N, height, width, channels)."""
        x = np.asarray(images, dtype=np.float32)
        if x.ndim == 3:
            x = x[..., None]
        x = match_channels(x, channels, self.color)
        if x.shape[1:3] != (height, width):
            x = resize(x, height, width, self.resize)
        x = x * np.float32(self.scale) + np.float32(self.offset)
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        return ((x - mean) / std).astype(np.float32)


def match_channels(x: np.ndarray, channels: int, color: str) -> np.ndarray:
    """Grey → RGB by repetition, RGBA → RGB by dropping alpha, RGB → grey by luma."""
    have = x.shape[-1]
    if have == 4 and channels in (1, 3):
        x, have = x[..., :3], 3
    if have == 1 and channels == 3:
        x = np.repeat(x, 3, axis=-1)
    elif have == 3 and channels == 1:
        x = (x @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None]
    elif have != channels:
        raise ValueError(f"images have {have} channels but the model takes {channels}")
    if color == "bgr" and x.shape[-1] == 3:
        x = x[..., ::-1]
    return x


def resize(x: np.ndarray, height: int, width: int, method: str = "bilinear") -> np.ndarray:
    """Resize a batch (N, H, W, C) with half-pixel centres, like ``tf.image.resize``."""
    n, h, w, c = x.shape
    if method == "nearest":
        rows = np.minimum(((np.arange(height) + 0.5) * h / height).astype(int), h - 1)
        cols = np.minimum(((np.arange(width) + 0.5) * w / width).astype(int), w - 1)
        return x[:, rows][:, :, cols]
    ys = np.clip((np.arange(height) + 0.5) * h / height - 0.5, 0, h - 1)
    xs = np.clip((np.arange(width) + 0.5) * w / width - 0.5, 0, w - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    wy = (ys - y0).astype(np.float32)[None, :, None, None]
    wx = (xs - x0).astype(np.float32)[None, None, :, None]
    top = x[:, y0][:, :, x0] * (1 - wx) + x[:, y0][:, :, x1] * wx
    bottom = x[:, y1][:, :, x0] * (1 - wx) + x[:, y1][:, :, x1] * wx
    return (top * (1 - wy) + bottom * wy).astype(np.float32)
