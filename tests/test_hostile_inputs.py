"""Hostile inputs beyond model files: images, arrays, recipes and sidecars end cleanly, never in exit code 70."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgecompress.artifacts import Artifact, read_sidecar
from edgecompress.calibration import arrays
from edgecompress.calibration.data import load_images
from edgecompress.calibration.images import MAX_IMAGE_PIXELS, decode
from edgecompress.errors import DataError, ModelLoadError, UsageError
from edgecompress.pipeline.recipe import load_recipe

sys.path.insert(0, str(Path(__file__).parent))
from fuzz_inputs import alias_bomb, bomb_png, huge_npy, npy_bytes, truncated_jpeg  # noqa: E402

GIB = 1 << 30

# --------------------------------------------------------------------------- the four named in the issue, through the CLI

_MEASURED = """
import atexit, resource, sys
peak_file = sys.argv[1]
atexit.register(lambda: open(peak_file, "w").write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)))
sys.argv = ["compress", *sys.argv[2:]]
from edgecompress.cli import main
main()
"""


def _cli(tmp_path: Path, *args: str) -> tuple[int, list[str], float, int]:
    """Exit code, output lines, seconds and peak resident bytes of one `compress` process."""
    peak = tmp_path / f"peak-{time.monotonic_ns()}"
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _MEASURED, str(peak), *args], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)  # fmt: skip
    seconds = time.perf_counter() - started
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    return done.returncode, lines, seconds, int(peak.read_text())


@pytest.fixture(scope="module")
def baseline_peak(tiny_int8, tmp_path_factory) -> int:
    """What the same command takes with good data: the reference for "extra" memory."""
    where = tmp_path_factory.mktemp("baseline")
    np.savez(where / "good.npz", x=np.zeros((4, 32, 32, 3), np.uint8), y=np.arange(4))
    code, lines, _, peak = _cli(where, "bench", str(tiny_int8), "--runtime", "litert", "--runs", "1", "--warmup", "0",
                                "-q", "--eval", str(where / "good.npz"))  # fmt: skip
    assert code == 0, lines
    return peak


def _bomb_folder(path: Path) -> Path:
    bomb_png(path / "cats" / "bomb.png")
    Image.new("RGB", (32, 32)).save(path / "cats" / "fine.png")
    return path


def _truncated_folder(path: Path) -> Path:
    truncated_jpeg(path / "cats" / "cut.jpg")
    Image.new("RGB", (32, 32)).save(path / "cats" / "fine.png")
    return path


@pytest.mark.parametrize(
    ("make", "names"),
    [
        (_bomb_folder, ["bomb.png", "too large to decode safely", "downscale it"]),
        (_truncated_folder, ["cut.jpg", "damaged or unreadable", "truncated", "re-save"]),
        (lambda p: huge_npy(p.with_suffix(".npy")), ["declares shape (1000000, 1000, 1000) (uint8) = 931.3 GiB", "holds only 64 bytes"]),
    ],
    ids=["decompression-bomb-png", "truncated-jpeg", "npy-declaring-1e12-elements"],
)
def test_hostile_data_ends_in_one_line_fast_and_small(tmp_path, tiny_int8, baseline_peak, make, names):
    data = make(tmp_path / "data")
    code, lines, seconds, peak = _cli(tmp_path, "bench", str(tiny_int8), "--runtime", "litert", "--runs", "1",
                                      "--warmup", "0", "-q", "--eval", str(data))  # fmt: skip
    assert code == DataError.exit_code and len(lines) == 1 and lines[0].startswith("error: "), lines
    assert all(name in lines[0] for name in names), lines[0]
    assert seconds < 10 and peak - baseline_peak < GIB, (seconds, peak, baseline_peak)


def test_yaml_alias_bomb_ends_in_one_line_fast_and_small(tmp_path, baseline_peak):
    recipe = tmp_path / "laughs.yaml"
    recipe.write_text(alias_bomb())
    code, lines, seconds, peak = _cli(tmp_path, "pipeline", str(recipe), "--check")
    assert code == UsageError.exit_code and len(lines) == 1, lines
    assert "laughs.yaml expands to more than 100,000 values (YAML anchors and aliases)" in lines[0]
    assert seconds < 10 and peak - baseline_peak < GIB, (seconds, peak, baseline_peak)


# --------------------------------------------------------------------------- images


def _save(path: Path, image: Image.Image, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)
    return path


def test_image_modes_become_the_pixels_a_viewer_shows(tmp_path):
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (6, 10, 3), dtype=np.uint8))
    sixteen = np.array([[0, 257 * 128, 65535]], np.uint16)
    assert decode(_save(tmp_path / "s.png", Image.fromarray(sixteen))).tolist() == [[0, 128, 255]]  # scaled, not clipped
    assert decode(_save(tmp_path / "c.jpg", rgb.convert("CMYK"))).shape == (6, 10, 3)
    assert decode(_save(tmp_path / "p.png", rgb.convert("P"))).shape == (6, 10, 3)
    assert decode(_save(tmp_path / "la.png", rgb.convert("LA"))).shape == (6, 10)
    assert np.array_equal(decode(_save(tmp_path / "a.png", rgb.convert("RGBA"))), np.asarray(rgb))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90°": pixels are read as stored, like TensorFlow's decoders and run.py
    assert decode(_save(tmp_path / "e.jpg", rgb, exif=exif.tobytes())).shape == (6, 10, 3)
    assert decode(_save(tmp_path / "png-named.jpg", rgb, format="PNG")).shape == (6, 10, 3)
    with pytest.raises(DataError, match=r"f\.tif holds float pixels outside 0–255"):
        decode(_save(tmp_path / "f.tif", Image.fromarray(np.full((4, 4), 300.0, np.float32))))


def test_damaged_images_are_named_and_non_images_skipped(tmp_path, caplog):
    data = tmp_path / "data"
    _save(data / "a" / "ok.png", Image.new("RGB", (8, 8)))
    (data / "a" / "notes.png").write_text("not an image at all")
    with caplog.at_level(logging.WARNING):
        assert len(load_images(data, target_hw=(8, 8))) == 1
    assert "notes.png" in caplog.text
    truncated_jpeg(data / "a" / "cut.jpg")
    with pytest.raises(DataError, match=r"image .*cut\.jpg is damaged or unreadable"):
        load_images(data, target_hw=(8, 8))


def test_grey_images_among_colour_ones_get_three_channels(tmp_path):
    _save(tmp_path / "a" / "grey.png", Image.new("L", (8, 8), 7))
    _save(tmp_path / "a" / "colour.jpg", Image.new("RGB", (8, 8), (1, 2, 3)))
    data = load_images(tmp_path, target_hw=(8, 8))
    assert data.images.shape == (2, 8, 8, 3) and data.images[1, 0, 0].tolist() == [7, 7, 7]


def test_size_limit_is_checked_from_the_header(tmp_path):
    side = int(MAX_IMAGE_PIXELS**0.5) + 10
    path = bomb_png(tmp_path / "big.png", side, full=False)  # header only: decoding would fail, the header decides
    with pytest.raises(DataError, match=rf"it declares {side} × {side} pixels; the limit is 40 megapixels"):
        decode(path)


# --------------------------------------------------------------------------- arrays


def test_npy_header_is_checked_before_loading(tmp_path):
    path = tmp_path / "h.npy"
    path.write_bytes(npy_bytes({"descr": "<c8", "fortran_order": False, "shape": (2, 4, 4)}, bytes(256)))
    with pytest.raises(DataError, match=r"has dtype complex64"):
        load_images(path)
    path.write_bytes(npy_bytes({"descr": "|u1", "fortran_order": False, "shape": (-2, 4, 4)}))
    with pytest.raises(DataError, match=r"declares the shape \(-2, 4, 4\)"):
        load_images(path)
    path.write_bytes(npy_bytes("{'descr': '<f4', " * 3))
    with pytest.raises(DataError, match=r"is not a readable \.npy array"):
        load_images(path)
    np.save(path, np.float32(1.0))
    with pytest.raises(DataError, match="a single number, not images"):
        load_images(path)


def test_npy_larger_than_the_memory_to_spare_is_memory_mapped(tmp_path, monkeypatch):
    path = tmp_path / "big.npy"
    np.save(path, np.arange(6 * 4 * 4, dtype=np.uint8).reshape(6, 4, 4))
    monkeypatch.setattr(arrays, "memory_budget", lambda: 10)
    data = load_images(path)
    assert isinstance(data.images, np.memmap) and data.take(2).images.shape == (2, 4, 4)
    np.savez(tmp_path / "big.npz", x=np.zeros((6, 4, 4), np.uint8))
    with pytest.raises(DataError, match=r"'x' in .*big\.npz holds 96 bytes .* more than the 10 bytes of memory"):
        load_images(tmp_path / "big.npz")


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({"x.npy": np.zeros((6, 4, 4), np.uint8), "y.npy": np.arange(5)}, r"6 images but 5 labels"),
        ({"x.npy": npy_bytes({"descr": "|O", "fortran_order": False, "shape": (6,)}, b"\x80\x04N.")}, "never unpickled"),
        ({"x.npy": npy_bytes({"descr": "<f4", "fortran_order": False, "shape": (10**6, 1000)}, bytes(64))},
         r"'x' in .* declares shape \(1000000, 1000\) \(float32\) = 3\.7 GiB but holds only 64 bytes"),
        ({"images.npy": np.zeros((2, 4, 4), np.uint8), "keypoints.npy": np.zeros((3, 5, 3))}, "2 images but 3 keypoints"),
        ({"y.npy": np.arange(3)}, r"has no 'x' \(or 'images'\) array; it has \['y'\]"),
    ],
    ids=["lengths", "object", "declares-more-than-it-holds", "keypoint-count", "no-x"],
)
def test_npz_members_are_checked_from_their_headers(tmp_path, members, message):
    path = tmp_path / "d.npz"
    with zipfile.ZipFile(path, "w") as archive:
        for name, value in members.items():
            if isinstance(value, np.ndarray):
                with archive.open(name, "w") as handle:
                    np.lib.format.write_array(handle, value)
            else:
                archive.writestr(name, value)
    with pytest.raises(DataError, match=message):
        load_images(path)


def test_damaged_npz_is_one_data_error(tmp_path):
    path = tmp_path / "d.npz"
    np.savez_compressed(path, x=np.random.default_rng(0).integers(0, 256, (6, 8, 8), dtype=np.uint8))
    data = bytearray(path.read_bytes())
    data[60:70] = bytes(10)  # inside the compressed member: a CRC or inflate error
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"d\.npz"):
        load_images(path)
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match=r"is not a readable \.npz file"):
        load_images(path)


# --------------------------------------------------------------------------- recipes


@pytest.fixture()
def recipe_file(tmp_path):
    def write(text: str | bytes) -> Path:
        path = tmp_path / "r.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return path

    return write


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models: &a [*a]\nvariants: []\n", "an alias refers to a list or mapping that contains it"),
        ("models: " + "[" * 60 + "]" * 60 + "\n", "nests deeper than 50 levels at line 1"),
        ("models: [" + "9" * 5000 + "]\n", "holds a value that cannot be read"),
        ("models: !!python/object/apply:os.system ['true']\n", "is not valid YAML at line 1"),
        ("models: [{zoo: mobilenet_v2, train: true}]\nvariants: [{name: x, passes: [export]}]\ntrust_model: 'false'\n", r"r\.yaml: trust_model: expected true or false, got 'false'"),
        ("models: [{name: 16, zoo: mobilenet_v2, train: true}]\nvariants: [export]\n",
         r"models\[0\]\.name: expected text, got 16 \(quote it"),
        ("models: [{zoo: mobilenet_v2, params: {input_size: '32'}, train: true}]\nvariants: [export]\n",
         r"models\[0\]\.params\.input_size: expected a whole number between 1 and 100000, got '32'"),
        ("models: [{zoo: mobilenet_v2, train: {lr: fast}}]\nvariants: [export]\n",
         r"models\[0\]\.train\.lr: expected a number, got 'fast'"),
        ("models: [{file: 5}]\nvariants: [export]\n", r"models\[0\]\.file: expected text, got 5"),
        ("models: [{zoo: mobilenet_v2, train: true}]\nvariants: [{name: x, passes: [export], formats: [3]}]\n",
         r"variants\[0\]\.formats\[0\]: expected text, got 3"),
        ("models: [{zoo: mobilenet_v2, train: true}]\nvariants: [{name: x, passes: ['quantize(mode=[)']}]\n",
         r"variants\[0\]\.passes\[0\]: cannot read pass argument 'mode=\['"),
        ("models: [{zoo: mobilenet_v2, train: true}]\nvariants: [{name: x, passes: [export]}]\nbench: {memory: 'no'}\n",
         r"bench\.memory: expected true or false, got 'no'"),
    ],
    ids=["recursive-alias", "deep", "huge-int", "python-tag", "trust-as-text", "name", "param", "train", "file", "format",
         "pass-argument", "bench-memory"],
)  # fmt: skip
def test_recipe_limits_and_field_types(recipe_file, text, message):
    with pytest.raises(UsageError, match=message):
        load_recipe(recipe_file(text))


def test_recipe_size_and_encoding(recipe_file):
    with pytest.raises(UsageError, match=r"r\.yaml is not UTF-8 text \(byte 8\)"):
        load_recipe(recipe_file(b"models: \xff\xfe"))
    with pytest.raises(UsageError, match="more than a recipe's 1,048,576"):
        load_recipe(recipe_file("# " + "x" * (1 << 20)))


# --------------------------------------------------------------------------- sidecars


def _sidecar(model: Path, tmp_path: Path, change) -> Path:
    copy = tmp_path / model.name
    copy.write_bytes(model.read_bytes())
    data = json.loads(Path(str(model) + ".json").read_text())
    change(data)
    Path(str(copy) + ".json").write_text(json.dumps(data))
    return copy


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["inputs"][0].update(shape=[32, "32", 3]), r"inputs\[0\]\.shape\[1\]: expected a size from 1 to 65536"),
        (lambda d: d.update(labels=[0, 1]), r"labels\[0\]: expected text"),
        (lambda d: d["preprocessing"].update(scale="fast"), r"preprocessing\.scale: expected a finite number"),
        (lambda d: d["preprocessing"].update(mean=[0.5, 0.5]), r"preprocessing\.mean: 2 values for a model input of 3 channels"),
        (lambda d: d["lineage"][0].update(source="model\x1b[2J.h5"), r"lineage\[0\]\.source: expected text .* without control"),
        (lambda d: d["lineage"][0].update(source_sha256="../x"), r"lineage\[0\]\.source_sha256: expected 64 hex digits"),
        (lambda d: d["extra"].update(output_names=["a", "a"]), r"extra\.output_names: a name appears twice"),
        (lambda d: d.update(edgecompress_metadata=2), r"edgecompress_metadata: version 2 is not one this toolkit reads"),
    ],
    ids=["shape", "labels", "scale", "mean", "lineage-source", "lineage-sha", "output-names", "version"],
)
def test_sidecar_schema_names_the_field(tiny_int8, tmp_path, change, message):
    model = _sidecar(tiny_int8, tmp_path, change)
    with pytest.raises(ModelLoadError, match=rf"metadata sidecar .*tiny\.int8\.tflite\.json is not valid: {message}"):
        Artifact.open(model)


def test_deeply_nested_sidecar_is_refused(tiny_int8, tmp_path):
    copy = tmp_path / "m.tflite"
    copy.write_bytes(tiny_int8.read_bytes())
    Path(str(copy) + ".json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ModelLoadError, match="is not valid"):
        read_sidecar(copy)


def test_a_sidecar_contradicting_its_model_is_named_and_ignored(tiny_int8, tmp_path, caplog):
    from edgecompress.deploy import build_bundle
    from edgecompress.models.inputs import input_shape_of

    def contradict(data):
        data["inputs"][0]["shape"] = [64, 64, 1]
        data["labels"] = ["cat", "dog"]

    model = _sidecar(tiny_int8, tmp_path, contradict)
    with caplog.at_level(logging.WARNING):
        assert input_shape_of(Artifact.open(model)) == (32, 32, 3)
        bundle = build_bundle(model, "linux", tmp_path / "bundle").path
    assert "gives the input shape (64, 64, 1), but the model takes (32, 32, 3): using the model's" in caplog.text
    assert "gives the input shape [64, 64, 1], but the model takes [32, 32, 3]: the bundle records" in caplog.text
    assert "names 2 labels, but the model predicts 10 classes" in caplog.text
    written = json.loads((bundle / "model.tflite.json").read_text())
    assert written["inputs"][0]["shape"] == [32, 32, 3] and written["labels"] is None


def test_a_keras_file_with_a_cut_member_is_one_clean_error(tmp_path):
    """Found by the fuzzer: a .keras whose member data lies past the end of the file raised EOFError (exit 70)."""
    import struct

    from edgecompress.artifacts import ModelFormat
    from edgecompress.runtimes.keras_io import read_config

    path = tmp_path / "model.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.0"}))
        archive.writestr("config.json", json.dumps({"class_name": "Functional", "config": {}}))
    data = bytearray(path.read_bytes())
    struct.pack_into("<H", data, 28, 32000)  # the first local header's extra-field length, as the fuzzer's damage did
    path.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="model file is damaged"):
        read_config(path, ModelFormat.KERAS_V3)


def test_masks_beside_samples_that_are_not_images_are_a_data_error(tmp_path):
    """Found by the fuzzer: masks with (N, 768) float samples reached an IndexError (exit 70)."""
    path = tmp_path / "masks.npz"
    np.savez(path, x=np.zeros((6, 768), np.float32), masks=np.zeros((6, 16, 16), np.int64))
    with pytest.raises(DataError, match=r"masks .* are 16×16 but the images are samples of shape \(768,\)"):
        load_images(path)
