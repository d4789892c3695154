"""Synthetic data with exact labels, for segmentation and keypoints without any download.

Both generators are seeded and deterministic, and their labels are exact by construction (the mask
is what was drawn; the keypoints are what was projected), so a metric measured on them is real:
a model must find the shapes and the joints in clutter, which no constant predictor does.

- ``synthetic-shapes``: circles, rectangles and triangles of random colours on textured backgrounds;
  classes 0 background, 1 circle, 2 rectangle, 3 triangle. The colour never tells the class.
- ``synthetic-poses``: articulated figures from BlazePose's 33-joint skeleton, posed with random
  joint angles, turned about the vertical axis, projected and drawn back to front; keypoints are
  (x, y) normalised to [0, 1], z (depth, same scale as x) and visibility (inside the image).
"""

from __future__ import annotations

import functools

import numpy as np

SHAPE_CLASSES = ("background", "circle", "rectangle", "triangle")
SPLITS = {"train": (1000, 11), "test": (250, 23), "all": (1250, 11)}
POSE_SPLITS = {"train": (1200, 31), "test": (300, 47), "all": (1500, 31)}


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    return xs, ys


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Stripes at a random angle over blotchy low-frequency noise: texture with edges, like clutter."""
    xs, ys = _grid(size)
    angle, period = rng.uniform(0, np.pi), rng.uniform(4, 14) * size / 64
    stripes = np.sin((xs * np.cos(angle) + ys * np.sin(angle)) * 2 * np.pi / period)
    coarse = rng.uniform(0, 1, (5, 5, 3)).astype(np.float32)
    index = np.minimum((np.stack([ys, xs]) / size * 4).astype(int), 4)
    blotches = coarse[index[0], index[1]]
    base, tint = rng.uniform(40, 200, 3), rng.uniform(20, 60)
    image = base + (blotches - 0.5) * 80 + stripes[..., None] * tint * rng.uniform(0.3, 1, 3)
    return image + rng.normal(0, 6, image.shape)


def _shape_mask(kind: int, rng: np.random.Generator, size: int) -> np.ndarray:
    xs, ys = _grid(size)
    cx, cy = rng.uniform(0.2, 0.8, 2) * size
    r = rng.uniform(0.1, 0.22) * size
    if kind == 1:
        return (xs - cx) ** 2 + (ys - cy) ** 2 <= r**2
    theta = rng.uniform(0, np.pi)
    u = (xs - cx) * np.cos(theta) + (ys - cy) * np.sin(theta)
    v = -(xs - cx) * np.sin(theta) + (ys - cy) * np.cos(theta)
    if kind == 2:
        return (np.abs(u) <= r) & (np.abs(v) <= r * rng.uniform(0.5, 1.0))
    corners = [(r * np.cos(a), r * np.sin(a)) for a in (np.pi / 2, np.pi / 2 + 2 * np.pi / 3, np.pi / 2 + 4 * np.pi / 3)]
    inside = np.ones_like(u, dtype=bool)
    for (x0, y0), (x1, y1) in zip(corners, corners[1:] + corners[:1], strict=True):
        inside &= (x1 - x0) * (v - y0) - (y1 - y0) * (u - x0) >= 0
    return inside


@functools.lru_cache(maxsize=8)
def synthetic_shapes(split: str = "train", size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, size, size, 3), masks uint8 (N, size, size)); later shapes occlude earlier ones."""
    count, seed = SPLITS[split]
    rng = np.random.default_rng(seed)
    images = np.empty((count, size, size, 3), np.uint8)
    masks = np.zeros((count, size, size), np.uint8)
    for i in range(count):
        image = _background(rng, size)
        for _ in range(rng.integers(1, 4)):
            kind = int(rng.integers(1, 4))
            inside = _shape_mask(kind, rng, size)
            colour = rng.uniform(0, 255, 3) + rng.normal(0, 10, (size, size, 3))
            image = np.where(inside[..., None], colour, image)
            masks[i][inside] = kind
        images[i] = np.clip(image, 0, 255).astype(np.uint8)
    images.setflags(write=False)
    masks.setflags(write=False)
    return images, masks


# --------------------------------------------------------------------------- articulated figures

# Rest pose, body frame: x to the person's left, y up, z towards the camera; pelvis at the origin.
_FACE = {
    0: (0.0, 0.68, 0.09), 1: (0.02, 0.71, 0.08), 2: (0.035, 0.71, 0.075), 3: (0.05, 0.71, 0.07),
    4: (-0.02, 0.71, 0.08), 5: (-0.035, 0.71, 0.075), 6: (-0.05, 0.71, 0.07), 7: (0.08, 0.69, 0.0),
    8: (-0.08, 0.69, 0.0), 9: (0.025, 0.645, 0.075), 10: (-0.025, 0.645, 0.075),
}  # fmt: skip
_LIMBS = (  # (segment, from joint, to joint) pairs drawn as capsules, with a width factor
    (11, 13, 0.055), (13, 15, 0.045), (12, 14, 0.055), (14, 16, 0.045), (15, 19, 0.03), (16, 20, 0.03),
    (23, 25, 0.075), (25, 27, 0.06), (24, 26, 0.075), (26, 28, 0.06), (29, 31, 0.035), (30, 32, 0.035),
)  # fmt: skip


def _direction(rng: np.random.Generator, side: float, spread: tuple[float, float], forward: tuple[float, float]):
    """A unit limb direction: down, swung outwards by ``spread`` and forwards by ``forward`` (radians)."""
    a, f = rng.uniform(*spread), rng.uniform(*forward)
    return np.array([side * np.sin(a) * np.cos(f), -np.cos(a) * np.cos(f), np.sin(f)])


def _pose(rng: np.random.Generator) -> np.ndarray:
    """33 joints (body frame) with random arm and leg angles."""
    joints = np.zeros((33, 3))
    for index, point in _FACE.items():
        joints[index] = point
    for side, (sh, el, wr, pk, ix, th, hip, kn, an, he, ft) in (
        (1.0, (11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31)),
        (-1.0, (12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32)),
    ):
        joints[sh] = (side * 0.18, 0.5, 0.0)
        joints[el] = joints[sh] + 0.28 * _direction(rng, side, (0.0, 2.6), (-0.6, 1.2))
        joints[wr] = joints[el] + 0.25 * _direction(rng, side, (-0.3, 2.8), (-0.3, 1.5))
        hand = (joints[wr] - joints[el]) / 0.25
        lateral = np.cross(hand, [0.0, 0.0, 1.0]) * side
        joints[ix] = joints[wr] + 0.08 * hand
        joints[pk] = joints[wr] + 0.065 * hand + 0.025 * lateral
        joints[th] = joints[wr] + 0.05 * hand - 0.03 * lateral
        joints[hip] = (side * 0.1, 0.0, 0.0)
        joints[kn] = joints[hip] + 0.42 * _direction(rng, side, (-0.1, 0.6), (-0.3, 1.3))
        joints[an] = joints[kn] + 0.40 * _direction(rng, side, (-0.2, 0.4), (-1.3, 0.2))
        joints[he] = joints[an] + (0.0, -0.05, -0.04)
        joints[ft] = joints[an] + (side * 0.02, -0.06, 0.13)
    return joints


def _rotate_y(points: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return points @ np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]])


def _capsule(xs, ys, p0, p1, radius):
    d = p1 - p0
    t = np.clip(((xs - p0[0]) * d[0] + (ys - p0[1]) * d[1]) / max(float(d @ d), 1e-9), 0, 1)
    return (xs - p0[0] - t * d[0]) ** 2 + (ys - p0[1] - t * d[1]) ** 2 <= radius**2


def _torso(xs, ys, quad):
    inside = np.ones_like(xs, dtype=bool)
    sign = np.sign(np.cross(quad[1] - quad[0], quad[2] - quad[1])) or 1.0
    for a, b in zip(quad, np.roll(quad, -1, axis=0), strict=True):
        inside &= sign * ((b[0] - a[0]) * (ys - a[1]) - (b[1] - a[1]) * (xs - a[0])) >= 0
    return inside


@functools.lru_cache(maxsize=8)
def synthetic_poses(split: str = "train", size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, size, size, 3), keypoints float32 (N, 33, 4) = x, y, z, visibility)."""
    count, seed = POSE_SPLITS[split]
    rng = np.random.default_rng(seed)
    xs, ys = _grid(size)
    images = np.empty((count, size, size, 3), np.uint8)
    keypoints = np.zeros((count, 33, 4), np.float32)
    for i in range(count):
        body = _rotate_y(_pose(rng), rng.uniform(-1.2, 1.2))
        scale = rng.uniform(0.45, 0.8) * size / 1.6  # pixels per body unit; the figure is ~1.6 units tall
        centre = np.array([rng.uniform(0.3, 0.7), rng.uniform(0.45, 0.6)]) * size
        pixels = np.stack([centre[0] + scale * body[:, 0], centre[1] - scale * body[:, 1]], axis=1)
        image = _background(rng, size)
        skin, top, bottom = rng.uniform(0, 255, (3, 3))
        parts = [(_torso(xs, ys, pixels[[11, 12, 24, 23]]), top, body[[11, 12, 23, 24], 2].mean())]
        head = (pixels[7] + pixels[8]) / 2
        parts.append((_capsule(xs, ys, head, head, 0.1 * scale), skin, body[0, 2] - 0.05))
        neck = (pixels[11] + pixels[12]) / 2
        parts.append((_capsule(xs, ys, neck, head, 0.04 * scale), skin, body[[11, 12], 2].mean() - 0.01))
        for a, b, width in _LIMBS:
            colour = bottom if a >= 23 else (top if a in (11, 12) else skin)
            parts.append((_capsule(xs, ys, pixels[a], pixels[b], width * scale), colour, body[[a, b], 2].mean()))
        for inside, colour, _ in sorted(parts, key=lambda part: part[2]):  # back to front
            image = np.where(inside[..., None], colour + rng.normal(0, 8, (size, size, 3)), image)
        images[i] = np.clip(image, 0, 255).astype(np.uint8)
        normalised = pixels / size
        keypoints[i, :, :2] = normalised
        keypoints[i, :, 2] = body[:, 2] * scale / size
        keypoints[i, :, 3] = np.all((normalised >= 0) & (normalised < 1), axis=1)
    images.setflags(write=False)
    keypoints.setflags(write=False)
    return images, keypoints
