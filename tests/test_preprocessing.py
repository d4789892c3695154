import numpy as np
import pytest

from edgecompress.calibration.preprocessing import Preprocessing, match_channels, resize


@pytest.mark.parametrize("size", [(16, 16), (7, 11), (96, 96)])
def test_bilinear_resize_matches_tensorflow(size):
    import tensorflow as tf

    images = np.random.default_rng(0).uniform(0, 255, (2, 8, 10, 3)).astype(np.float32)
    ours = resize(images, *size)
    theirs = tf.image.resize(images, size, method="bilinear", antialias=False).numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-3)


def test_nearest_resize_keeps_values():
    images = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    out = resize(images, 8, 8, "nearest")
    assert out.shape == (1, 8, 8, 1)
    assert set(np.unique(out)) <= set(range(16))


def test_apply_scales_and_normalizes():
    pre = Preprocessing(scale=1 / 127.5, offset=-1.0)
    x = pre.apply(np.array([[[0, 255]]], dtype=np.uint8), 1, 2, 3)
    assert x.shape == (1, 1, 2, 3)
    np.testing.assert_allclose(x[0, 0, :, 0], [-1.0, 1.0], atol=1e-6)
    pre = Preprocessing(scale=1.0, mean=(10.0,), std=(2.0,))
    np.testing.assert_allclose(pre.apply(np.full((1, 1, 1), 20, np.uint8), 1, 1, 1), 5.0)


def test_channels_and_color_order():
    rgb = np.array([[[[10.0, 20.0, 30.0]]]], dtype=np.float32)
    assert match_channels(rgb, 3, "bgr")[0, 0, 0].tolist() == [30.0, 20.0, 10.0]
    assert match_channels(rgb[..., :1], 3, "rgb").shape[-1] == 3
    assert match_channels(np.concatenate([rgb, rgb[..., :1]], -1), 3, "rgb").shape[-1] == 3
    with pytest.raises(ValueError, match="channels"):
        match_channels(np.zeros((1, 2, 2, 2), np.float32), 3, "rgb")


def test_config_round_trip_and_validation():
    pre = Preprocessing(scale=0.5, offset=1, mean=(1, 2, 3), std=(4, 5, 6), color="bgr")
    assert Preprocessing.from_dict(pre.to_dict()) == pre
    with pytest.raises(ValueError):
        Preprocessing(color="cmyk")
    with pytest.raises(ValueError):
        Preprocessing(std=(0.0,))
