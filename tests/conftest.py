"""Shared fixtures: one small trained classifier per session, and files derived from it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

import edgecompress  # noqa: F401 - sets TF_USE_LEGACY_KERAS before any TensorFlow import
from edgecompress import api

TINY = {"input_size": 32, "alpha": 0.35, "classes": 10}


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("edgecompress")


@pytest.fixture(scope="session")
def tiny_classifier(workdir) -> Path:
    """MobileNetV2 α 0.35 at 32 px, trained briefly on digits: a real model, small enough for tests."""
    from edgecompress.models.train import save_model, train_classifier
    from edgecompress.models.zoo import build

    model, metadata = build("mobilenet_v2", **TINY)
    metadata = dataclasses.replace(metadata, labels=tuple(str(i) for i in range(10)))
    train = api.model_inputs("digits", metadata.inputs[0].shape, metadata.preprocessing, split="train")
    train_classifier(model, train, epochs=4, lr=3e-3, progress=False)
    return save_model(model, workdir / "tiny.h5", metadata)


@pytest.fixture(scope="session")
def tiny_int8(workdir, tiny_classifier) -> Path:
    return api.quantize(tiny_classifier, workdir / "tiny.int8.tflite", mode="int8", calib="digits").output.path


@pytest.fixture(scope="session")
def tiny_onnx(workdir, tiny_classifier) -> Path:
    return api.export(tiny_classifier, workdir / "tiny.float.onnx", format="onnx").output.path


@pytest.fixture(scope="session")
def digits_npz(workdir) -> Path:
    """The digits test split as a .npz of raw 8×8 uint8 images with labels."""
    from edgecompress.calibration.data import load_digits

    data = load_digits("test")
    path = workdir / "digits_test.npz"
    np.savez(path, x=data.images, y=data.labels)
    return path


@pytest.fixture()
def out(tmp_path) -> Path:
    return tmp_path


#: why Larq's tests skip in the numpy-2 environment (`make test-numpy2`)
LARQ_MISSING = "needs the larq extra (Larq + LCE, which pins numpy < 2): pip install 'edgecompress[larq]'"


def larq_installed() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("larq", "larq_compute_engine"))


@pytest.fixture(scope="session")
def larq() -> None:
    """Request it in a test or fixture that needs Larq: skips, with the reason, where it is not installed."""
    if not larq_installed():
        pytest.skip(LARQ_MISSING)


def pytest_collection_modifyitems(items):
    """Under pytest-xdist, keep every test of one zoo entry on one worker: its trained model is
    a session fixture, and training it once per worker would cost more than the split gains."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "trained" in params:
            item.add_marker(pytest.mark.xdist_group(f"zoo-{params['trained']}"))
