import json

import pytest

from edgecompress.artifacts import (
    Artifact,
    InputSpec,
    LineageStep,
    Metadata,
    ModelFormat,
    atomic_path,
    detect_format,
    read_sidecar,
    write_metadata,
)
from edgecompress.calibration.preprocessing import Preprocessing
from edgecompress.errors import ModelLoadError, UsageError
from edgecompress.registry import Registry


def test_detect_format_by_content(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 32)
    (tmp_path / "b.bin").write_bytes(b"\x1c\0\0\0TFL3" + b"\0" * 32)
    (tmp_path / "c.bin").write_bytes(b"PK\x03\x04" + b"\0" * 32)
    (tmp_path / "d.onnx").write_bytes(b"\x08\x07" + b"\0" * 32)
    assert detect_format(tmp_path / "a.bin") is ModelFormat.KERAS_H5
    assert detect_format(tmp_path / "b.bin") is ModelFormat.TFLITE
    assert detect_format(tmp_path / "c.bin") is ModelFormat.KERAS_V3
    assert detect_format(tmp_path / "d.onnx") is ModelFormat.ONNX


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.h5", None, "not found"),
        ("tiny.tflite", b"abc", "damaged"),
        ("fake.h5", b"this is not hdf5 at all, just text", "damaged"),
        ("notes.txt", b"just some text, long enough to read", "unknown model format"),
    ],
)
def test_detect_format_errors(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=message):
        detect_format(path)


def test_metadata_round_trip(tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"\x1c\0\0\0TFL3" + b"\0" * 32)
    metadata = Metadata(
        task="classification",
        inputs=(InputSpec(shape=(32, 32, 3)),),
        preprocessing=Preprocessing(scale=1 / 127.5, offset=-1, mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2)),
        labels=("a", "b"),
        lineage=(LineageStep("quantize", {"mode": "int8"}, "ab" * 32, "m.h5"),),
    )
    sidecar = write_metadata(model, metadata)
    assert sidecar.name == "m.tflite.json"
    assert json.loads(sidecar.read_text())["lineage"][0]["params"] == {"mode": "int8"}
    assert read_sidecar(model) == metadata
    assert Artifact.open(model).metadata == metadata


def test_bad_sidecar_is_one_clear_error(tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"\x1c\0\0\0TFL3" + b"\0" * 32)
    (tmp_path / "m.tflite.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="sidecar"):
        Artifact.open(model)


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.tflite"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("converter died")
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_replaces_on_success(tmp_path):
    target = tmp_path / "out.tflite"
    target.write_bytes(b"old")
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".tflite"
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.tflite"]


def test_registry_names_valid_choices():
    registry = Registry("thing")
    registry.add("int8", 1, "full-int8")
    assert registry.get("FULL-INT8") == 1
    with pytest.raises(UsageError, match="choose one of: int8"):
        registry.get("int4")
    with pytest.raises(ValueError, match="twice"):
        registry.add("int8", 2)
