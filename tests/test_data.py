import logging

import numpy as np
import pytest
from PIL import Image

from edgecompress.calibration.data import ModelInputs, load_digits, load_images
from edgecompress.calibration.preprocessing import Preprocessing
from edgecompress.errors import DataError


def _png(path, value=128, size=(10, 12), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value, value, value)).save(path)


def test_digits_splits_do_not_overlap():
    train, test = load_digits("train"), load_digits("test")
    assert len(train) + len(test) == 1797
    assert train.images.dtype == np.uint8 and train.images.max() == 255
    assert len({im.tobytes() for im in test.images} & {im.tobytes() for im in train.images}) < 10  # digits has a few duplicates
    assert load_images("digits:train").source.startswith("digits:train")


def test_class_folder_gives_labels_and_resizes(tmp_path):
    for label, value in (("cat", 10), ("dog", 200)):
        for i in range(3):
            _png(tmp_path / label / f"{i}.png", value)
    data = load_images(tmp_path, target_hw=(16, 16), need_labels=True)
    assert data.images.shape == (6, 16, 16, 3)
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert data.label_names == ("cat", "dog")


def test_folder_skips_non_images_with_a_warning(tmp_path, caplog):
    _png(tmp_path / "a.png")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with caplog.at_level(logging.WARNING):
        data = load_images(tmp_path, target_hw=(8, 8))
    assert len(data) == 1
    assert "skipped 2 file(s)" in caplog.text


def test_npz_and_npy(tmp_path):
    x = np.random.default_rng(0).integers(0, 255, (5, 8, 8)).astype(np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(5))
    np.save(tmp_path / "d.npy", x)
    assert load_images(tmp_path / "d.npz", need_labels=True).labels.tolist() == [0, 1, 2, 3, 4]
    assert not load_images(tmp_path / "d.npy").preprocessed
    np.save(tmp_path / "f.npy", x.astype(np.float32))
    assert load_images(tmp_path / "f.npy").preprocessed  # float arrays are model inputs


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda p: p.mkdir(), "no readable images"),
        (lambda p: (p.mkdir(), (p / "a.txt").write_text("x")), "no readable images"),
        (lambda p: np.save(p.with_suffix(".npy"), np.array([{"a": 1}], dtype=object)), "never unpickled"),
        (lambda p: np.savez(p.with_suffix(".npz"), x=np.full((2, 4, 4), np.nan, np.float32)), "NaN"),
        (lambda p: np.savez(p.with_suffix(".npz"), images=np.zeros((2, 4, 4)), y=np.arange(3)), "2 images but 3 labels"),
        (lambda p: np.savez(p.with_suffix(".npz"), z=np.zeros((2, 4, 4))), "no 'x'"),
        (lambda p: np.savez(p.with_suffix(".npz"), x=np.zeros((2, 4, 4), np.uint8), y=np.array([0, -1])), "negative"),
        (lambda p: np.save(p.with_suffix(".npy"), np.zeros(5, np.uint8)), "expected \\(N, height, width"),
        (lambda p: p.with_suffix(".csv").write_text("1,2"), "unsupported data file"),
    ],
)
def test_bad_data_is_one_clear_error(tmp_path, setup, message):
    base = tmp_path / "data"
    setup(base)
    candidates = [p for p in tmp_path.iterdir()]
    with pytest.raises(DataError, match=message):
        load_images(candidates[0])


def test_missing_labels_and_missing_path(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(DataError, match="has no labels"):
        load_images(tmp_path / "x.npy", need_labels=True)
    with pytest.raises(DataError, match="not found"):
        load_images(tmp_path / "nope")


def test_model_inputs_shapes():
    digits = load_digits("test").take(4)
    inputs = ModelInputs.build(digits, (32, 32, 3), Preprocessing(scale=1 / 127.5, offset=-1))
    batch = next(inputs.batches(4))
    assert batch.shape == (4, 32, 32, 3) and batch.dtype == np.float32
    assert batch.min() >= -1.0 and batch.max() <= 1.0
    samples = list(inputs.representative_dataset()())
    assert len(samples) == 4 and samples[0][0].shape == (1, 32, 32, 3)


def test_float_inputs_must_match_the_model(tmp_path):
    np.savez(tmp_path / "f.npz", x=np.zeros((3, 8, 8, 1), np.float32))
    data = load_images(tmp_path / "f.npz")
    assert data.preprocessed
    with pytest.raises(DataError, match="float samples of shape"):
        ModelInputs.build(data, (32, 32, 3), Preprocessing())
    assert ModelInputs.build(data, (8, 8, 1), Preprocessing()).array().shape == (3, 8, 8, 1)
