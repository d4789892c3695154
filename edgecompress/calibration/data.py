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


@dataclass(frozen=True)
class ImageSet:
    """Images (raw 0–255 pixels, or preprocessed float model inputs) with optional integer labels."""

    images: np.ndarray
    labels: np.ndarray | None
    source: str
    preprocessed: bool = False
    label_names: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.images)

    def take(self, count: int | None, seed: int = 0) -> ImageSet:
        """A seeded random subset, so class-sorted folders still give every class."""
        if count is None or count >= len(self):
            return self
        index = np.sort(np.random.default_rng(seed).permutation(len(self))[:count])
        labels = self.labels[index] if self.labels is not None else None
        return replace(self, images=self.images[index], labels=labels)


def load_images(
    spec: str | Path,
    split: str = "test",
    target_hw: tuple[int, int] | None = None,
    need_labels: bool = False,
) -> ImageSet:
    """Load ``digits[:split]``, a ``.npy``/``.npz`` file or an image folder.

    ``split`` picks the digits split when ``spec`` is plain ``digits`` (``train`` for calibration
    and training, ``test`` for evaluation, so the two never overlap).
    """
    text = str(spec)
    if text == "digits" or text.startswith("digits:"):
        data = load_digits(text.split(":", 1)[1] if ":" in text else split)
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
    if need_labels and data.labels is None:
        raise DataError(
            f"{data.source} has no labels",
            "use a folder with one subfolder per class, or a .npz with arrays 'x' and 'y'",
        )
    return data


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
    y_key = next((k for k in ("y", "labels") if k in arrays), None)
    images = arrays[x_key]
    labels = arrays[y_key] if y_key else None
    if labels is not None and len(labels) != len(images):
        raise DataError(f"{path}: {len(images)} images but {len(labels)} labels", "save one label per image")
    return ImageSet(images, labels, str(path), preprocessed=images.dtype.kind == "f")


def _load_folder(path: Path, target_hw: tuple[int, int] | None) -> ImageSet:
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


def _read_image(file: Path, target_hw: tuple[int, int] | None) -> np.ndarray | None:
    if file.suffix.lower() not in IMAGE_SUFFIXES:
        return None
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as image:
            image = image.convert("L" if image.mode in ("L", "I", "I;16", "F", "1") else "RGB")
            array = np.asarray(image, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError):
        return None
    if array.ndim == 2:
        array = array[..., None]
    if target_hw and array.shape[:2] != tuple(target_hw):
        array = np.clip(resize(array[None].astype(np.float32), *target_hw)[0], 0, 255).round().astype(np.uint8)
    return array


def _check_values(data: ImageSet) -> None:
    images = data.images
    if len(images) == 0:
        raise DataError(f"{data.source} holds no samples", "pass data with at least one image")
    if images.dtype.kind not in "uif":
        raise DataError(f"{data.source} has dtype {images.dtype}", "use uint8 images or float32 model inputs")
    if images.dtype.kind == "f" and not np.all(np.isfinite(images)):
        raise DataError(f"{data.source} contains NaN or infinite values", "clean the data before calibrating")
    if images.ndim < 3:
        raise DataError(
            f"{data.source} has shape {images.shape}; expected (N, height, width[, channels])",
            "store one image per row of the first axis",
        )
    if data.labels is not None:
        labels = np.asarray(data.labels)
        if labels.dtype.kind not in "iu" or labels.ndim != 1:
            raise DataError(f"labels in {data.source} must be a 1-D integer array", "store class indices 0..K-1")
        if labels.min() < 0:
            raise DataError(f"labels in {data.source} contain negative values", "store class indices 0..K-1")


@dataclass(frozen=True)
class ModelInputs:
    """An ImageSet turned into model inputs: one object for the TFLite converter, ONNX Runtime and us."""

    data: ImageSet
    input_shape: tuple[int, ...]
    preprocessing: Preprocessing

    @classmethod
    def build(cls, data: ImageSet, input_shape: tuple[int | None, ...], preprocessing: Preprocessing) -> ModelInputs:
        shape = tuple(int(d) for d in input_shape if d is not None)
        if len(shape) != 3:
            raise DataError(
                f"the model input {tuple(input_shape)} is not an image (height, width, channels)",
                "pass float arrays of the model's input shape in a .npy/.npz",
            )
        sample = data.images.shape[1:]
        if data.preprocessed and tuple(sample) != shape:
            raise DataError(
                f"{data.source} has float samples of shape {tuple(sample)} but the model takes {shape}",
                "pass raw uint8 images (they are resized) or float arrays of exactly the model's input shape",
            )
        if not data.preprocessed:
            channels = sample[-1] if len(sample) == 3 else 1
            if channels not in (1, 3, 4) or shape[-1] not in (1, 3):
                raise DataError(
                    f"{data.source} has images of shape {tuple(sample)} that cannot feed a model input {shape}",
                    "pass grey or RGB images, or float arrays of the model's input shape",
                )
        return cls(data, shape, preprocessing)

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
        h, w, c = self.input_shape
        return self.preprocessing.apply(chunk, h, w, c)

    def array(self) -> np.ndarray:
        return np.concatenate(list(self.batches(256)), axis=0)

    def representative_dataset(self, progress_file=None):
        """The TFLite converter's generator: one batch-1 sample per step.

        ``progress_file``: where to draw a calibration progress bar (None: no bar).
        """

        def generate():
            from tqdm import tqdm

            with tqdm(total=len(self), desc="calibrating", unit="sample", leave=False, file=progress_file,
                      disable=progress_file is None) as bar:
                for batch in self.batches(32):
                    for sample in batch:
                        yield [sample[None]]
                        bar.update(1)

        return generate


def random_inputs(input_shape: tuple[int, ...], preprocessing: Preprocessing, count: int, seed: int = 0) -> np.ndarray:
    """Random raw pixels pushed through the preprocessing: for export checks, never for calibration ranges."""
    h, w, c = input_shape
    pixels = np.random.default_rng(seed).integers(0, 256, size=(count, h, w, c)).astype(np.uint8)
    return preprocessing.apply(pixels, h, w, c)
