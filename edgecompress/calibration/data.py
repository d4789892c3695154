"""Image data for calibration, evaluation and training: folders, .npy/.npz, or the embedded digits.

One rule decides how arrays are treated: **uint8 arrays (and image files) are raw pixels** and go
through the model's preprocessing; **float arrays are model inputs** and must already have the
model's input shape. Everything is validated up front so a bad file ends in one clear line.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edgecompress.calibration.preprocessing import Preprocessing, resize
from edgecompress.errors import DataError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".tif", ".tiff"}
DIGITS_SPLITS = ("train", "test", "all")
#: raw pixel range the embedded digits are mapped to (scikit-learn ships 0..16).
DIGITS_TEST_FRACTION = 0.2
#: ImageSet fields that hold targets; one per task family.
TARGET_KINDS = ("labels", "masks", "keypoints")
SYNTHETIC = ("synthetic-shapes", "synthetic-poses")
#: data sets that ship with the toolkit (no download), each with its own train/test split
EMBEDDED_DATA = ("digits", *SYNTHETIC)
NPZ_TARGET_KEYS = {"labels": ("y", "labels"), "masks": ("masks", "mask"), "keypoints": ("keypoints",)}
#: synthetic images are drawn at the model's size up to this, and resized beyond it (drawing is slow).
SYNTHETIC_MAX_SIZE = 128


@dataclass(frozen=True)
class ImageSet:
    """Images (raw 0–255 pixels, or preprocessed float model inputs) with the targets of one task.

    At most one kind of target is set: ``labels`` (N,) class indices, ``masks`` (N, H, W) class
    index per pixel at the images' own size, or ``keypoints`` (N, K, 4) = x, y normalised to [0, 1]
    of the image, z (same scale as x, 0 when unknown) and visibility (1 labelled, 0 not).
    """

    images: np.ndarray
    labels: np.ndarray | None
    source: str
    preprocessed: bool = False
    label_names: tuple[str, ...] | None = None
    masks: np.ndarray | None = None
    keypoints: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.images)

    @property
    def kind(self) -> str | None:
        """Which targets this set carries: 'labels', 'masks', 'keypoints', or None."""
        for name in TARGET_KINDS:
            if getattr(self, name) is not None:
                return name
        return None

    def subset(self, index: np.ndarray) -> ImageSet:
        changes = {name: getattr(self, name)[index] for name in TARGET_KINDS if getattr(self, name) is not None}
        return replace(self, images=self.images[index], **changes)

    def take(self, count: int | None, seed: int = 0) -> ImageSet:
        """A seeded random subset, so class-sorted folders still give every class."""
        if count is None or count >= len(self):
            return self
        return self.subset(np.sort(np.random.default_rng(seed).permutation(len(self))[:count]))

    def split(self, fraction: float, seed: int = 0) -> tuple[ImageSet, ImageSet]:
        """A seeded (rest, held-out) split: the held-out part is ``fraction`` of the samples."""
        held = int(round(len(self) * fraction))
        if not 0 < held < len(self):
            raise DataError(
                f"a validation split of {fraction:.0%} of {len(self)} samples leaves one side empty",
                "pass a --val-split between 0 and 1 that leaves samples on both sides, or more data",
            )
        order = np.random.default_rng(seed).permutation(len(self))
        return self.subset(np.sort(order[held:])), self.subset(np.sort(order[:held]))


def load_images(
    spec: str | Path,
    split: str = "test",
    target_hw: tuple[int, int] | None = None,
    need_labels: bool = False,
) -> ImageSet:
    """Load ``digits[:split]``, ``synthetic-shapes[:split]``, ``synthetic-poses[:split]``, a
    ``.npy``/``.npz`` file, an image folder (class subfolders, or ``images/`` + ``masks/``, or
    images + a COCO-keypoints ``.json``).

    ``split`` picks the split of the embedded sets when the spec names none (``train`` for
    calibration and training, ``test`` for evaluation, so the two never overlap).
    """
    text = str(spec)
    name, _, chosen = text.partition(":")
    if name == "digits":
        data = load_digits(chosen or split)
    elif name in SYNTHETIC:
        data = load_synthetic(name, chosen or split, target_hw)
    else:
        path = Path(text)
        if not path.exists():
            raise DataError(f"data not found: {path}", "pass an image folder, a .npy/.npz file or 'digits'")
        if path.is_dir():
            data = _load_folder(path, target_hw)
        elif path.suffix.lower() == ".npy":
            array = _load_npy(path)
            data = ImageSet(array, None, str(path), preprocessed=array.dtype.kind == "f")
        elif path.suffix.lower() == ".npz":
            data = _load_npz(path)
        else:
            raise DataError(f"unsupported data file: {path}", "use an image folder, a .npy or a .npz file")
    _check_values(data)
    if need_labels and data.kind is None:
        raise DataError(
            f"{data.source} has no labels",
            "use class subfolders, images/ + masks/, images + a COCO keypoints .json, "
            "or a .npz with 'x' and one of 'y', 'masks', 'keypoints'",
        )
    return data


def load_synthetic(name: str, split: str, target_hw: tuple[int, int] | None = None) -> ImageSet:
    """The embedded synthetic sets (see ``calibration/synthetic.py``), drawn near the model's size."""
    from edgecompress.calibration import synthetic

    splits = synthetic.SPLITS if name == "synthetic-shapes" else synthetic.POSE_SPLITS
    if split not in splits:
        raise DataError(f"unknown {name} split '{split}'", f"use one of: {', '.join(splits)}")
    size = min(SYNTHETIC_MAX_SIZE, max(target_hw)) if target_hw else 64
    if name == "synthetic-shapes":
        images, masks = synthetic.synthetic_shapes(split, size)
        return ImageSet(
            images, None, f"{name}:{split} (synthetic, {len(images)} images)", label_names=synthetic.SHAPE_CLASSES,
            masks=masks,
        )
    images, keypoints = synthetic.synthetic_poses(split, size)
    return ImageSet(images, None, f"{name}:{split} (synthetic, {len(images)} images)", keypoints=keypoints)


def load_digits(split: str = "test") -> ImageSet:
    """scikit-learn's 8×8 digits (shipped inside the package, no download), as 0–255 grey images."""
    if split not in DIGITS_SPLITS:
        raise DataError(f"unknown digits split '{split}'", f"use one of: {', '.join(DIGITS_SPLITS)}")
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    order = np.random.default_rng(1797).permutation(len(images))
    cut = int(len(images) * (1 - DIGITS_TEST_FRACTION))
    index = {"train": order[:cut], "test": order[cut:], "all": order}[split]
    return ImageSet(
        images=images[index],
        labels=labels[index],
        source=f"digits:{split} (scikit-learn, {len(index)} images)",
        label_names=tuple(str(i) for i in range(10)),
    )


def _load_npy(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise DataError(f"{path} holds Python objects, which are never unpickled", "save plain numeric arrays") from exc
    except OSError as exc:
        raise DataError(f"{path} is not a readable .npy file: {exc}", "re-save it with numpy.save") from exc
    return array


def _load_npz(path: Path) -> ImageSet:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except ValueError as exc:
        raise DataError(f"{path} holds Python objects, which are never unpickled", "save plain numeric arrays") from exc
    except (OSError, EOFError) as exc:
        raise DataError(f"{path} is not a readable .npz file: {exc}", "re-save it with numpy.savez") from exc
    x_key = next((k for k in ("x", "images", "inputs") if k in arrays), None)
    if x_key is None:
        raise DataError(f"{path} has no 'x' (or 'images') array; it has {sorted(arrays)}", "save images as x=...")
    images = arrays[x_key]
    found = {kind: next((arrays[k] for k in keys if k in arrays), None) for kind, keys in NPZ_TARGET_KEYS.items()}
    given = [kind for kind, value in found.items() if value is not None]
    if len(given) > 1:
        raise DataError(f"{path} holds several kinds of targets ({', '.join(given)})", "save one of y, masks, keypoints")
    for kind in given:
        if len(found[kind]) != len(images):
            raise DataError(f"{path}: {len(images)} images but {len(found[kind])} {kind}", f"save one {kind[:-1]} entry per image")
    keypoints = found["keypoints"]
    if keypoints is not None:
        keypoints = _normalise_keypoints(keypoints, images.shape[1:3], str(path))
    return ImageSet(
        images, found["labels"], str(path), preprocessed=images.dtype.kind == "f", masks=found["masks"], keypoints=keypoints
    )


def _normalise_keypoints(points: np.ndarray, hw: tuple[int, int], source: str) -> np.ndarray:
    """Pixel keypoints (N, K, 2|3|4) → (N, K, 4) normalised x, y, z, visibility.

    Columns follow COCO: (x, y), (x, y, v) or (x, y, z, v), in pixels of the stored images; COCO's
    v = 1 (labelled, hidden) and 2 (visible) both count as labelled.
    """
    points = np.asarray(points)
    if points.ndim != 3 or points.shape[-1] not in (2, 3, 4) or points.dtype.kind not in "iuf":
        raise DataError(
            f"keypoints in {source} have shape {points.shape} ({points.dtype})",
            "store numbers of shape (N, K, 2|3|4): x, y[, z], visibility in pixels",
        )
    out = np.zeros((*points.shape[:2], 4), np.float32)
    height, width = hw
    out[..., 0] = points[..., 0] / width
    out[..., 1] = points[..., 1] / height
    if points.shape[-1] == 4:
        out[..., 2] = points[..., 2] / width
    out[..., 3] = (points[..., -1] > 0) if points.shape[-1] > 2 else 1.0
    return out


def _load_folder(path: Path, target_hw: tuple[int, int] | None) -> ImageSet:
    if (path / "images").is_dir() and (path / "masks").is_dir():
        return _load_segmentation_folder(path, target_hw)
    annotations = sorted(path.glob("*.json"))
    if annotations:
        return _load_coco_keypoints(path, annotations, target_hw)
    classes = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes:
        files = [(f, i) for i, d in enumerate(classes) for f in sorted(d.iterdir()) if f.is_file()]
        names = tuple(d.name for d in classes)
    else:
        files = [(f, None) for f in sorted(path.iterdir()) if f.is_file()]
        names = None
    images, labels, skipped = [], [], []
    for file, label in files:
        image = _read_image(file, target_hw)
        if image is None:
            skipped.append(file.name)
            continue
        images.append(image)
        labels.append(label)
    if skipped:
        log.warning("skipped %d file(s) that are not readable images in %s: %s", len(skipped), path, ", ".join(skipped[:5]))
    if not images:
        raise DataError(f"no readable images in {path}", "put .png/.jpg files there (or one subfolder per class)")
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise DataError(f"images in {path} have different sizes {sorted(shapes)[:3]}", "resize them to one size")
    return ImageSet(
        images=np.stack(images),
        labels=np.asarray(labels, dtype=np.int64) if names else None,
        source=f"{path} ({len(images)} images)",
        label_names=names,
    )


def _read_image(file: Path, target_hw: tuple[int, int] | None, mask: bool = False) -> np.ndarray | None:
    """An image as uint8 (H, W, C), resized to ``target_hw``; a mask as (H, W) class indices (nearest)."""
    array = _read_pixels(file, mask)
    if array is None:
        return None
    if target_hw and array.shape[:2] != tuple(target_hw):
        method = "nearest" if mask else "bilinear"
        array = np.clip(resize(array[None].astype(np.float32), *target_hw, method)[0], 0, 255).round().astype(np.uint8)
    return array[..., 0] if mask else array


def _read_pixels(file: Path, mask: bool = False) -> np.ndarray | None:
    if file.suffix.lower() not in IMAGE_SUFFIXES:
        return None
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as image:
            # A palette mask stores class indices in its pixels; converting it would map them to colours.
            if mask and image.mode not in ("L", "P"):
                raise DataError(
                    f"mask {file} is a {image.mode} image",
                    "save masks as single-channel (L or P mode) PNGs whose pixel values are class indices",
                )
            if not mask:
                image = image.convert("L" if image.mode in ("L", "I", "I;16", "F", "1") else "RGB")
            array = np.asarray(image, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError):
        return None
    return array[..., None] if array.ndim == 2 else array


def _load_segmentation_folder(path: Path, target_hw: tuple[int, int] | None) -> ImageSet:
    """``images/`` + ``masks/``: masks are PNGs with the image's file stem and size."""
    masks_by_stem = {f.stem: f for f in sorted((path / "masks").iterdir()) if f.is_file()}
    images, masks = [], []
    for file in sorted((path / "images").iterdir()):
        pixels = _read_pixels(file) if file.is_file() else None
        if pixels is None:
            continue
        mask_file = masks_by_stem.get(file.stem)
        if mask_file is None:
            raise DataError(f"image {file.name} has no mask in {path / 'masks'}", f"add masks/{file.stem}.png")
        mask = _read_pixels(mask_file, mask=True)
        if mask is None:
            raise DataError(f"mask {mask_file} is not a readable image", "save masks as PNG")
        if mask.shape[:2] != pixels.shape[:2]:
            raise DataError(
                f"mask {mask_file.name} is {mask.shape[1]}×{mask.shape[0]} but its image is "
                f"{pixels.shape[1]}×{pixels.shape[0]}",
                "save each mask at its image's size",
            )
        images.append(_read_image(file, target_hw))
        masks.append(_read_image(mask_file, target_hw, mask=True))
    if not images:
        raise DataError(f"no readable images in {path / 'images'}", "put .png/.jpg files there")
    return ImageSet(np.stack(images), None, f"{path} ({len(images)} images with masks)", masks=np.stack(masks))


def _load_coco_keypoints(path: Path, annotations: list[Path], target_hw: tuple[int, int] | None) -> ImageSet:
    """Images (in ``path`` or ``path/images``) + one COCO-keypoints JSON: the person with most labelled keypoints."""
    import json

    if len(annotations) > 1:
        raise DataError(f"{path} holds several .json files", "keep exactly one COCO keypoints annotation file")
    try:
        coco = json.loads(annotations[0].read_text())
        files = {int(entry["id"]): entry["file_name"] for entry in coco["images"]}
        people: dict[int, list[float]] = {}
        for note in coco["annotations"]:
            points = note["keypoints"]
            best = people.get(int(note["image_id"]))
            if best is None or sum(v > 0 for v in points[2::3]) > sum(v > 0 for v in best[2::3]):
                people[int(note["image_id"])] = points
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(
            f"{annotations[0]} is not a COCO keypoints file: {exc!r}",
            "it needs 'images' (id, file_name) and 'annotations' (image_id, keypoints [x, y, v, ...])",
        ) from exc
    folder = path / "images" if (path / "images").is_dir() else path
    images, points = [], []
    for image_id, name in sorted(files.items()):
        if image_id not in people:
            raise DataError(f"image {name} has no keypoints in {annotations[0].name}", "annotate it or remove it")
        pixels = _read_pixels(folder / name)
        if pixels is None:
            raise DataError(f"image {folder / name} listed in {annotations[0].name} is missing or unreadable", "fix the path")
        flat = np.asarray(people[image_id], dtype=np.float32)
        if flat.size % 3:
            raise DataError(f"keypoints of {name} are not x, y, v triples", "store COCO keypoints [x1, y1, v1, ...]")
        points.append(_normalise_keypoints(flat.reshape(1, -1, 3), pixels.shape[:2], str(annotations[0]))[0])
        images.append(_read_image(folder / name, target_hw))
    if not images:
        raise DataError(f"{annotations[0]} lists no images", "add entries to 'images' and 'annotations'")
    if len({p.shape for p in points}) > 1:
        raise DataError(f"images in {annotations[0].name} have different keypoint counts", "use one skeleton for all")
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise DataError(f"images in {folder} have different sizes {sorted(shapes)[:3]}", "resize them to one size")
    return ImageSet(np.stack(images), None, f"{path} ({len(images)} images with keypoints)", keypoints=np.stack(points))


def _check_values(data: ImageSet) -> None:
    images = data.images
    if len(images) == 0:
        raise DataError(f"{data.source} holds no samples", "pass data with at least one image")
    if images.dtype.kind not in "uif":
        raise DataError(f"{data.source} has dtype {images.dtype}", "use uint8 images or float32 model inputs")
    if images.dtype.kind == "f" and not np.all(np.isfinite(images)):
        raise DataError(f"{data.source} contains NaN or infinite values", "clean the data before calibrating")
    # Samples of any rank (a (640,) vector is (N, 640)); ModelInputs.build checks them against the model.
    if images.ndim < 2:
        raise DataError(
            f"{data.source} has shape {images.shape}; expected (N, height, width[, channels]) images "
            "or (N, *input shape) float arrays",
            "store one sample per row of the first axis",
        )
    given = [kind for kind in TARGET_KINDS if getattr(data, kind) is not None]
    if len(given) > 1:
        raise DataError(f"{data.source} carries several kinds of targets ({', '.join(given)})", "keep one")
    if data.labels is not None:
        labels = np.asarray(data.labels)
        if labels.dtype.kind not in "iu" or labels.ndim != 1:
            raise DataError(f"labels in {data.source} must be a 1-D integer array", "store class indices 0..K-1")
        if labels.min() < 0:
            raise DataError(f"labels in {data.source} contain negative values", "store class indices 0..K-1")
    if data.masks is not None:
        masks = np.asarray(data.masks)
        if masks.dtype.kind not in "iu" or masks.ndim != 3 or len(masks) != len(images):
            raise DataError(
                f"masks in {data.source} have shape {masks.shape} ({masks.dtype})",
                "store integer class indices of shape (N, height, width), one mask per image",
            )
        if masks.shape[1:3] != images.shape[1:3]:
            raise DataError(
                f"masks in {data.source} are {masks.shape[2]}×{masks.shape[1]} but the images are "
                f"{images.shape[2]}×{images.shape[1]}",
                "store each mask at its image's size",
            )
        if masks.min() < 0:
            raise DataError(f"masks in {data.source} contain negative values", "store class indices 0..K-1")
    if data.keypoints is not None:
        points = np.asarray(data.keypoints)
        if points.ndim != 3 or points.shape[-1] != 4 or len(points) != len(images) or points.dtype.kind != "f":
            raise DataError(
                f"keypoints in {data.source} have shape {points.shape}; expected (N, K, 4) floats",
                "store x, y, z, visibility per keypoint (x, y normalised to [0, 1])",
            )
        if not np.all(np.isfinite(points)):
            raise DataError(f"keypoints in {data.source} contain NaN or infinite values", "mark missing ones with v = 0")
        if not np.all(np.isin(points[..., 3], (0.0, 1.0))):
            raise DataError(f"keypoint visibility in {data.source} is not 0 or 1", "store 1 for labelled keypoints, else 0")


#: channel counts an image input may have; anything else is an input of its own kind (audio, vectors…)
IMAGE_CHANNELS = (1, 3)
LAYOUTS = ("NHWC", "NCHW")


def image_hwc(input_shape: tuple[int, ...], layout: str = "NHWC") -> tuple[int, int, int] | None:
    """(height, width, channels) of an image-shaped input in ``layout``, else None.

    Only these inputs are resized and get pixel preprocessing; every other input (a (28, 28) MLP,
    (49, 10, 1) audio features with 1 channel count as an image too, a (640,) vector) takes float
    arrays of its own shape. Unknown sizes are -1.
    """
    if len(input_shape) != 3:
        return None
    if layout == "NCHW":
        c, h, w = input_shape
    else:
        h, w, c = input_shape
    return (h, w, c) if c in IMAGE_CHANNELS else None


def _fits(sample: tuple[int, ...], shape: tuple[int, ...]) -> bool:
    return len(sample) == len(shape) and all(d <= 0 or d == s for s, d in zip(sample, shape, strict=True))


@dataclass(frozen=True)
class ModelInputs:
    """An ImageSet turned into model inputs: one object for the TFLite converter, ONNX Runtime and us.

    ``input_shape`` is the model's, without the batch axis (-1 where it is unknown), in ``layout``:
    raw images are preprocessed channels-last and transposed for an NCHW model.
    """

    data: ImageSet
    input_shape: tuple[int, ...]
    preprocessing: Preprocessing
    layout: str = "NHWC"

    @classmethod
    def build(
        cls, data: ImageSet, input_shape: tuple[int | None, ...], preprocessing: Preprocessing, layout: str = "NHWC"
    ) -> ModelInputs:
        shape = tuple(-1 if d is None else int(d) for d in input_shape)
        layout = str(layout).upper()
        if layout not in LAYOUTS:
            raise DataError(f"unknown input layout '{layout}'", f"choose one of: {', '.join(LAYOUTS)}")
        sample = tuple(int(d) for d in data.images.shape[1:])
        if data.preprocessed:
            if not _fits(sample, shape):
                raise DataError(
                    f"{data.source} has float samples of shape {sample} but the model takes {shape}",
                    "pass float arrays of exactly the model's input shape"
                    + (" (or raw uint8 images, which are resized)" if image_hwc(shape, layout) else ""),
                )
            return cls(data, shape, preprocessing, layout)
        image = image_hwc(shape, layout)
        if image is None:
            if not _fits(sample, shape):
                raise DataError(
                    f"the model input {shape} is not an image, and {data.source} holds integer samples of shape "
                    f"{sample}",
                    "pass float arrays of the model's input shape in a .npy/.npz (integers of exactly that shape "
                    "are scaled by --scale/--offset)",
                )
            return cls(data, shape, preprocessing, layout)
        channels = sample[-1] if len(sample) == 3 else 1
        if len(sample) not in (2, 3) or channels not in (1, 3, 4):
            raise DataError(
                f"{data.source} has images of shape {sample} that cannot feed a model input {shape} ({layout})",
                "pass grey or RGB images, or float arrays of the model's input shape",
            )
        return cls(data, shape, preprocessing, layout)

    def __len__(self) -> int:
        return len(self.data)

    @property
    def source(self) -> str:
        return self.data.source

    def batches(self, batch_size: int = 32) -> Iterator[np.ndarray]:
        for start in range(0, len(self.data), batch_size):
            chunk = self.data.images[start : start + batch_size]
            yield self.transform(chunk)

    def transform(self, chunk: np.ndarray) -> np.ndarray:
        if self.data.preprocessed:
            return np.ascontiguousarray(chunk, dtype=np.float32)
        image = image_hwc(self.input_shape, self.layout)
        if image is None:
            return elementwise(self.preprocessing, chunk)
        h, w, c = image
        # A size the model leaves open (-1) takes the images' own.
        h, w = (chunk.shape[1] if h <= 0 else h), (chunk.shape[2] if w <= 0 else w)
        x = self.preprocessing.apply(chunk, h, w, c)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if self.layout == "NCHW" else x

    def array(self) -> np.ndarray:
        return np.concatenate(list(self.batches(256)), axis=0)

    def representative_dataset(self, progress_file=None):
        """The TFLite converter's generator: one batch-1 sample per step.

        ``progress_file``: where to draw a calibration progress bar (None: no bar).
        """

        def generate():
            from edgecompress._progress import progress_bar

            with progress_bar(total=len(self), desc="calibrating", unit="sample", file=progress_file,
                              disable=progress_file is None) as bar:
                for batch in self.batches(32):
                    for sample in batch:
                        yield [sample[None]]
                        bar.update(1)

        return generate


def elementwise(preprocessing: Preprocessing, values: np.ndarray) -> np.ndarray:
    """Integer samples of a non-image input: only the scale, offset and (scalar) mean/std apply."""
    mean = np.float32(preprocessing.mean[0]) if len(preprocessing.mean) == 1 else None
    std = np.float32(preprocessing.std[0]) if len(preprocessing.std) == 1 else None
    if mean is None or std is None:
        raise DataError("per-channel --mean/--std apply to image inputs only", "pass one --mean and one --std value")
    x = np.asarray(values, dtype=np.float32) * np.float32(preprocessing.scale) + np.float32(preprocessing.offset)
    return ((x - mean) / std).astype(np.float32)


def random_inputs(
    input_shape: tuple[int, ...], preprocessing: Preprocessing, count: int, seed: int = 0, layout: str = "NHWC"
) -> np.ndarray:
    """Inputs for export checks, never for calibration ranges: random raw pixels pushed through the
    preprocessing for an image input, standard-normal values for any other."""
    rng = np.random.default_rng(seed)
    shape = tuple(1 if d is None or d <= 0 else int(d) for d in input_shape)
    image = image_hwc(shape, layout)
    if image is None:
        return rng.standard_normal((count, *shape)).astype(np.float32)
    h, w, c = image
    pixels = rng.integers(0, 256, size=(count, h, w, c)).astype(np.uint8)
    x = preprocessing.apply(pixels, h, w, c)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if layout == "NCHW" else x
