"""Real inputs the toolkit reads, and the damage the fuzzer does to them (see fuzz_harness.py).

Sources are written once per run by the toolkit and Pillow/numpy: a small model in every format with
its sidecar, image folders (class folders with every common mode and format, ``images/`` + ``masks/``,
COCO keypoints), ``.npy``/``.npz`` files, a recipe and a deploy bundle with its archive. A case copies
what it damages into its own folder, so cases are independent. Hostile constructions the tests use
directly (a decompression-bomb PNG, an ``.npy`` declaring 10¹² elements, a YAML alias bomb) live here too.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fuzz_harness import Case, code_digest, mutate

SIDE = 16  # the fuzz model's input: 16 × 16 × 3, 10 classes
BENCH = ["--runtime", "litert", "--runs", "1", "--warmup", "0", "-q"]


# --------------------------------------------------------------------------- hostile constructions


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(path: Path, side: int = 30_000, full: bool = True) -> Path:
    """A grey PNG declaring ``side`` × ``side`` pixels of zeros (30,000²: 0.9 GB decoded from 0.9 MB).

    ``full=False`` writes the header and a token of data only (what the fuzzer needs: the header decides).
    The full stream is built from one compressed block repeated after a full flush (which resets the
    compressor's window, so the block's bytes are the same each time), in a fraction of a second.
    """
    rows = 500 if side % 500 == 0 else 1
    block = bytes((side + 1) * rows)  # each row: filter byte 0, then zero pixels
    compressor = zlib.compressobj(9)
    head = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    if full:
        body = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
        checksum = 1
        for _ in range(side // rows):
            checksum = zlib.adler32(block, checksum)
        stream = head + body * (side // rows - 1) + b"\x03\x00" + struct.pack(">I", checksum)  # empty final block
    else:
        stream = head
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", stream) + _png_chunk(b"IEND", b""))
    return path


def npy_bytes(header: dict | str, data: bytes = b"\0" * 64) -> bytes:
    """A version-1.0 ``.npy`` with any header text (a dict is written as numpy writes it)."""
    text = header if isinstance(header, str) else repr(header)
    text += " " * ((64 - (10 + len(text) + 1) % 64) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text) & 0xFFFF) + text.encode("latin1", "replace") + data


def huge_npy(path: Path, shape=(1_000_000, 1000, 1000), descr: str = "|u1") -> Path:
    """An ``.npy`` of a few hundred bytes whose header declares ``shape`` (default 10¹² elements)."""
    path.write_bytes(npy_bytes({"descr": descr, "fortran_order": False, "shape": tuple(shape)}))
    return path


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """The "billion laughs" YAML: each level lists the previous one ``width`` times (9⁹ values)."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * width)}]")
    lines += [f"models: *l{levels - 1}", f"variants: *l{levels - 1}"]
    return "\n".join(lines) + "\n"


def truncated_jpeg(path: Path, side: int = 64, keep: float = 0.5) -> Path:
    from PIL import Image

    buffer = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buffer, "JPEG", quality=90)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue()[: int(len(buffer.getvalue()) * keep)])
    return path


# --------------------------------------------------------------------------- sources


@dataclass
class Sources:
    models: dict[str, Path]
    classes: Path
    masks: Path
    coco: Path
    arrays: list[Path]
    recipe: dict
    sidecar_homes: dict[str, Path]
    bundle: Path
    bundle_code: str


def make_sources(workdir: Path) -> Sources:
    """Every input kind, written by the toolkit (models, bundle) and by Pillow and numpy (data)."""
    models = make_models(workdir / "models")
    from edgecompress.deploy import build_bundle

    bundle = build_bundle(models["tflite"], "linux", workdir / "bundle" / "fuzz-bundle").path
    homes = {}
    for fmt in ("tflite", "h5"):
        home = workdir / f"sidecar-{fmt}"
        home.mkdir()
        os.link(models[fmt], home / models[fmt].name)  # one inode: probed once, loaded once
        homes[fmt] = home / models[fmt].name
    return Sources(
        models=models,
        classes=_image_folder(workdir / "images" / "classes"),
        masks=_mask_folder(workdir / "images" / "masks"),
        coco=_coco_folder(workdir / "images" / "coco"),
        arrays=_arrays(workdir / "arrays"),
        recipe=_recipe(models["h5"]),
        sidecar_homes=homes,
        bundle=bundle,
        bundle_code=code_digest(bundle),
    )


def make_models(workdir: Path) -> dict[str, Path]:
    """Small real models of every format, written by the toolkit itself."""
    from edgecompress import api
    from edgecompress._env import import_tf_keras
    from edgecompress.artifacts import InputSpec, Metadata
    from edgecompress.models.train import save_model

    workdir.mkdir(parents=True, exist_ok=True)
    tf_keras = import_tf_keras()
    inputs = tf_keras.Input((SIDE, SIDE, 3))
    x = tf_keras.layers.Conv2D(8, 3, padding="same")(inputs)
    x = tf_keras.layers.BatchNormalization()(x)
    x = tf_keras.layers.ReLU()(x)
    x = tf_keras.layers.DepthwiseConv2D(3, padding="same")(x)
    x = tf_keras.layers.GlobalAveragePooling2D()(x)
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(10, activation="softmax")(x))
    metadata = Metadata(task="classification", inputs=(InputSpec((SIDE, SIDE, 3)),), labels=tuple("abcdefghij"))
    h5 = save_model(model, workdir / "source.h5", metadata)
    keras_v3 = save_model(model, workdir / "source.keras", metadata)
    tflite = api.quantize(h5, workdir / "source.tflite", mode="int8", calib="digits", calib_samples=20).output.path
    onnx = api.export(h5, workdir / "source.onnx", format="onnx").output.path
    float_tflite = api.export(h5, workdir / "float.tflite").output.path
    return {"h5": h5, "keras": keras_v3, "tflite": tflite, "onnx": onnx, "tflite-source": float_tflite,
            "onnx-source": onnx}  # fmt: skip


def _noise(rng: np.random.Generator, height: int, width: int, channels: int = 3) -> np.ndarray:
    return rng.integers(0, 256, (height, width, channels), dtype=np.uint8)


def _image_variants() -> dict[str, callable]:
    """Every mode and format a calibration folder can hold, each as (name → writer)."""
    from PIL import Image

    def save(image, name, **options):
        return lambda path: image.save(path.with_name(name), **options)

    rng = np.random.default_rng(0)
    rgb = Image.fromarray(_noise(rng, 18, 14))
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.info["transparency"] = 0
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90°
    sixteen = Image.fromarray((rng.integers(0, 65536, (15, 17))).astype(np.uint16))
    frames = [Image.fromarray(_noise(rng, 16, 16)) for _ in range(2)]
    return {
        "rgb.png": save(rgb, "rgb.png"),
        "rgb.jpg": save(rgb, "rgb.jpg", quality=85),
        "grey.png": save(rgb.convert("L"), "grey.png"),
        "palette.png": save(palette, "palette.png"),
        "rgba.png": save(rgb.convert("RGBA"), "rgba.png"),
        "la.png": save(rgb.convert("LA"), "la.png"),
        "cmyk.jpg": save(rgb.convert("CMYK"), "cmyk.jpg"),
        "sixteen.png": save(sixteen, "sixteen.png"),
        "exif.jpg": save(Image.fromarray(_noise(rng, 12, 20)), "exif.jpg", exif=exif.tobytes()),
        "bits.bmp": save(rgb.convert("1"), "bits.bmp"),
        "anim.gif": lambda path: frames[0].save(path.with_name("anim.gif"), save_all=True, append_images=frames[1:]),
        "rgb.webp": save(rgb, "rgb.webp"),
        "float.tif": save(Image.fromarray(rng.random((16, 16), dtype=np.float32) * 255), "float.tif"),
        "rgb.ppm": save(rgb, "rgb.ppm"),
    }


def _image_folder(folder: Path) -> Path:
    variants = _image_variants()
    for label in ("0", "1"):
        (folder / label).mkdir(parents=True)
        for name, write in variants.items():
            write(folder / label / name)
    return folder


def _mask_folder(folder: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(1)
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True)
    for i in range(4):
        Image.fromarray(_noise(rng, 20, 20)).save(folder / "images" / f"{i}.png")
        Image.fromarray(rng.integers(0, 4, (20, 20), dtype=np.uint8)).save(folder / "masks" / f"{i}.png")
    return folder


def _coco_folder(folder: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(2)
    folder.mkdir(parents=True)
    images, notes = [], []
    for i in range(3):
        Image.fromarray(_noise(rng, 24, 24)).save(folder / f"p{i}.jpg")
        images.append({"id": i, "file_name": f"p{i}.jpg"})
        points = [float(v) for k in range(5) for v in (rng.integers(0, 24), rng.integers(0, 24), 2)]
        notes.append({"image_id": i, "keypoints": points})
    (folder / "people.json").write_text(json.dumps({"images": images, "annotations": notes}))
    return folder


def _arrays(folder: Path) -> list[Path]:
    rng = np.random.default_rng(3)
    folder.mkdir(parents=True)
    x = rng.integers(0, 256, (6, SIDE, SIDE, 3), dtype=np.uint8)
    y = rng.integers(0, 10, 6)
    np.savez(folder / "labelled.npz", x=x, y=y)
    np.savez_compressed(folder / "compressed.npz", images=x, labels=y)
    np.savez(folder / "masks.npz", x=x, masks=rng.integers(0, 4, (6, SIDE, SIDE), dtype=np.uint8))
    np.savez(folder / "keypoints.npz", x=x, keypoints=rng.integers(0, SIDE, (6, 5, 3)).astype(np.float32))
    np.save(folder / "inputs.npy", rng.random((6, SIDE, SIDE, 3), dtype=np.float32))
    np.save(folder / "pixels.npy", x[..., 0])
    return sorted(folder.iterdir())


def _recipe(h5: Path) -> dict:
    return {
        "name": "fuzz",
        "output": "results",
        "data": {"train": "digits", "calibration": {"spec": "digits", "samples": 10}, "eval": "digits"},
        "models": [
            {"name": "mine", "file": str(h5)},
            {"name": "mnv2", "zoo": "mobilenet_v2", "params": {"input_size": 32, "alpha": 0.35, "classes": 10},
             "train": {"epochs": 1, "lr": 0.003}},
        ],
        "variants": [
            {"name": "float", "passes": ["export"], "formats": ["tflite", "onnx"]},
            {"name": "int8", "passes": ["quantize(mode=int8)"]},
            {"name": "pruned", "passes": [{"prune": {"sparsity": 0.5}}, {"quantize": {"mode": "dynamic"}}]},
        ],
        "targets": {"runtimes": ["litert", "onnxruntime"], "threads": [1, 2], "devices": ["cpu"]},
        "bench": {"runs": 5, "warmup": 1, "memory": True},
        "training": {"epochs": 1},
        "trust_model": False,
    }  # fmt: skip


# --------------------------------------------------------------------------- shared damage


HOSTILE_TEXT = ["", " ", "x" * 5000, "../../../../etc/passwd", "/dev/zero", "\x1b[2J\x1b[31mred", "a\x00b", "line\nbreak",
                "digits", "quantize(mode=int8)", "☃" * 50]  # fmt: skip


def random_value(rng: random.Random, depth: int = 0):
    """A JSON/YAML value of any type: what a tamperer or a typo puts in a field."""
    choice = rng.randrange(12 if depth < 3 else 8)
    if choice == 0:
        return None
    if choice == 1:
        return rng.choice([True, False])
    if choice == 2:
        return rng.choice([0, -1, 1, 7, 255, 2**31, 10**30, -(10**18)])
    if choice == 3:
        return rng.choice([0.5, -2.5, 1e308, -0.0, 1e-320, 3.0])
    if choice in (4, 5, 6, 7):
        return rng.choice(HOSTILE_TEXT)
    if choice in (8, 9):
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if choice == 10:
        return {rng.choice(["a", "shape", "spec", "name", "1"]): random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))}
    return [[[[[[[[1]]]]]]]]


def _paths(tree, prefix=()):
    """Every (path, value) in a nested dict/list."""
    yield prefix, tree
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            yield from _paths(value, (*prefix, i))


def damage_tree(tree, rng: random.Random) -> str:
    """Change, delete or add one entry somewhere in a parsed JSON/YAML document; return what was done."""
    paths = [p for p, _ in _paths(tree) if p]
    if not paths:
        return "empty"
    path = rng.choice(paths)
    parent = tree
    for part in path[:-1]:
        parent = parent[part]
    action = rng.choice(["value", "value", "value", "delete", "add"])
    if action == "delete":
        del parent[path[-1]]
    elif action == "add" and isinstance(parent, dict):
        parent[rng.choice(["extra_key", "shape", "x" * 300])] = random_value(rng)
    elif action == "add":
        parent.append(random_value(rng))
    else:
        parent[path[-1]] = random_value(rng)
    return f"{action}-{'.'.join(str(p) for p in path)[:40]}"


# --------------------------------------------------------------------------- kinds


def build_case(kind: str, index: int, rng: random.Random, sources: Sources, where: Path) -> Case:
    builders = {"images": _images, "arrays": _arrays_case, "recipes": _recipes, "sidecars": _sidecars, "bundles": _bundles}
    if kind in builders:
        return builders[kind](index, rng, sources, where)
    return _model(kind, index, rng, sources, where)


def _model(kind: str, index: int, rng: random.Random, sources: Sources, where: Path) -> Case:
    source = sources.models[kind]
    data, mutation = mutate(source.read_bytes(), rng)
    path = where / f"model{source.suffix}"
    path.write_bytes(data)
    if kind.endswith("-source"):
        # The parsers a .tflite/.onnx source meets: the probe child, the flatbuffer/ONNX readers, both quantizers.
        commands = [["quantize", str(path), "-o", str(where / f"q{source.suffix}"), "--mode", "int8", "--calib", "digits",
                     "--calib-samples", "8", "--force"]]  # fmt: skip
    elif kind in ("h5", "keras"):
        commands = [
            ["quantize", str(path), "-o", str(where / "q.tflite"), "--mode", "dynamic", "--force"],
            ["export", str(path), "-o", str(where / "e.onnx"), "--format", "onnx", "--force"],
        ]
    else:
        commands = [["bench", str(path), "--runs", "1", "--warmup", "0", "-q"]]
    return Case(kind, index, mutation, path, commands)


def _images(index: int, rng: random.Random, sources: Sources, where: Path) -> Case:
    from PIL import Image

    layout = rng.choices(["classes", "masks", "coco"], weights=[8, 1, 1])[0]
    folder = where / "data"
    shutil.copytree(getattr(sources, layout), folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    target = rng.choice(files)
    mutation = rng.choice(["bytes", "bytes", "truncate", "truncate", "bomb", "huge", "extension", "not-image",
                           "empty", "link", "exif", "mode", "many-sizes"])  # fmt: skip
    if mutation == "bytes":
        data, how = mutate(target.read_bytes(), rng)
        target.write_bytes(data)
        mutation = f"bytes-{how}"
    elif mutation == "truncate":
        data = target.read_bytes()
        target.write_bytes(data[: int(len(data) * rng.uniform(0.05, 0.98))])
    elif mutation == "bomb":
        bomb_png(target.with_suffix(rng.choice([".png", ".jpg", ".gif"])), rng.choice([7000, 9500, 13500, 30_000, 65_535]),
                 full=False)  # fmt: skip
    elif mutation == "huge":
        width = rng.randint(3000, 6000)
        Image.new("RGB", (width, rng.randint(1000, 30_000_000 // width))).save(target.with_name("huge.png"))
    elif mutation == "extension":
        target.rename(target.with_suffix(rng.choice([".png", ".jpg", ".gif", ".txt", ".tiff", ""])))
    elif mutation == "not-image":
        target.write_text("this is not an image\n" * rng.randint(1, 100))
    elif mutation == "empty":
        target.write_bytes(b"")
    elif mutation == "link":
        link = target.with_name(rng.choice(["zero.png", "loop.png", "out.jpg"]))
        link.unlink(missing_ok=True)
        link.symlink_to(rng.choice(["/dev/zero", link.name, "/etc/hostname", "../../nowhere.png"]))
    elif mutation == "exif":
        exif = Image.Exif()
        exif[0x0112] = rng.choice([0, 3, 6, 8, 9, 65535])
        exif[rng.choice([0x010F, 0x0110, 0x0131])] = rng.choice(["x" * 10000, "maker", "\xff" * 100])
        Image.fromarray(_noise(np.random.default_rng(index), 10, 22)).save(target.with_suffix(".jpg"), exif=exif.tobytes())
    elif mutation == "mode":
        values = np.random.default_rng(index)
        image = rng.choice([
            lambda: Image.fromarray(values.integers(-1000, 100_000, (12, 12)).astype(np.int32)),
            lambda: Image.fromarray((values.random((12, 12)) * 1e6 - 5e5).astype(np.float32)),
            lambda: Image.fromarray(values.integers(0, 256, (12, 12, 3), dtype=np.uint8)).convert("YCbCr"),
            lambda: Image.fromarray(values.integers(0, 256, (12, 12, 3), dtype=np.uint8)).convert("LAB"),
            lambda: Image.new("PA", (12, 12)),
            lambda: Image.new("I;16B", (12, 12)),
        ])()  # fmt: skip
        image.save(target.with_suffix(".tif"))
    else:
        for file in files[: rng.randint(1, 4)]:
            if file.suffix == ".png":
                Image.fromarray(_noise(np.random.default_rng(index), rng.randint(1, 40), rng.randint(1, 40))).save(file)
    notes = folder / "people.json"
    if layout == "coco" and notes.is_file() and rng.random() < 0.5:
        try:
            tree = json.loads(notes.read_bytes())
        except ValueError:
            tree = None
        if tree is not None:
            mutation = f"{mutation}+json-{damage_tree(tree, rng)}"
            notes.write_text(json.dumps(tree))
    commands = [["bench", str(sources.models["tflite"]), *BENCH, "--eval", str(folder)]]
    return Case("images", index, f"{layout}-{mutation}", folder, commands)


def _npy_header_damage(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """Rewrite an .npy header with a hostile shape, dtype or text; the data stays as it was."""
    length = struct.unpack("<H", data[8:10])[0]
    header = eval(data[10 : 10 + length].decode("latin1"))  # noqa: S307 - our own file, written by numpy.save
    body = data[10 + length :]
    field = rng.choice(["shape", "shape", "descr", "fortran_order", "text"])
    if field == "shape":
        header["shape"] = rng.choice([(10**12,), (1_000_000, 1000, 1000), (-1, SIDE, SIDE, 3), (0, SIDE, SIDE, 3),
                                      (6, 0, SIDE, 3), (1,) * 40, (6, SIDE, SIDE, 3, 1, 1), (2**63,), (6, SIDE, SIDE, 300),
                                      (1, 2**31, 1, 1), (), (6,), (6, SIDE * SIDE * 3), (3, SIDE, SIDE, 3)])  # fmt: skip
        return npy_bytes(header, body), f"shape{header['shape'][:4]}"
    if field == "descr":
        header["descr"] = rng.choice(["|O", "<U3", "|b1", "<c8", "|V4", ">f8", "<f2", [("a", "<i4")], "<M8[s]", "zz", "<i8"])
        return npy_bytes(header, body), f"descr-{header['descr']}"
    if field == "fortran_order":
        header["fortran_order"] = rng.choice([True, "yes", None])
        return npy_bytes(header, body), "fortran"
    text = rng.choice(["{}", "[1, 2]", "(" * 5000, "9" * 6000, "{'descr': '<f4', 'fortran_order': False, 'shape': (1e9,)}",
                       "__import__('os').system('true')", "\xff" * 100])  # fmt: skip
    return npy_bytes(text, body), "header-text"


def _arrays_case(index: int, rng: random.Random, sources: Sources, where: Path) -> Case:
    source = rng.choice(sources.arrays)
    path = where / source.name
    data = source.read_bytes()
    if source.suffix == ".npy":
        mutation = rng.choice(["bytes", "header", "header", "structured", "structured", "structured"])
        if mutation == "bytes":
            data, how = mutate(data, rng)
        elif mutation == "header":
            data, how = mutate(data[:128], rng)
            data += source.read_bytes()[128:]
        else:
            data, how = _npy_header_damage(data, rng)
        path.write_bytes(data)
        mutation = f"{mutation}-{how}"
    else:
        mutation = _damage_npz(source, path, rng)
    commands = [["bench", str(sources.models["tflite"]), *BENCH, "--eval", str(path)]]
    return Case("arrays", index, f"{source.stem}-{mutation}", path, commands)


def _damage_npz(source: Path, path: Path, rng: random.Random) -> str:
    action = rng.choice(["zip-bytes", "member", "member", "keys", "lengths", "object", "extra-member"])
    if action == "zip-bytes":
        data, how = mutate(source.read_bytes(), rng)
        path.write_bytes(data)
        return f"zip-{how}"
    with zipfile.ZipFile(source) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
        compression = archive.infolist()[0].compress_type
    name = rng.choice(sorted(members))
    if action == "member":
        if rng.random() < 0.6:
            members[name], how = _npy_header_damage(members[name], rng)
        else:
            members[name], how = mutate(members[name], rng)
        action = f"member-{name}-{how}"
    elif action == "keys":
        new = rng.choice(["z.npy", "X.npy", "x", "y.npy", "../x.npy", "x.npy/", "images.npy", "labels.npy"])
        members[new] = members.pop(name)
        action = f"keys-{name}-to-{new}"
    elif action == "lengths":
        buffer = io.BytesIO()
        np.save(buffer, np.arange(rng.choice([0, 1, 5, 7, 10_000])))
        members[name] = buffer.getvalue()
    elif action == "object":
        members[name] = npy_bytes({"descr": "|O", "fortran_order": False, "shape": (6,)}, b"\x80\x04N.")
    else:
        buffer = io.BytesIO()
        np.save(buffer, np.zeros(rng.choice([1, 10]), np.float32))
        members[rng.choice(["notes.npy", "mask.npy", "inputs.npy", "keypoints.npy"])] = buffer.getvalue()
    with zipfile.ZipFile(path, "w", compression) as archive:
        for member, content in members.items():
            archive.writestr(member, content)
    return action


def _recipes(index: int, rng: random.Random, sources: Sources, where: Path) -> Case:
    import yaml

    recipe = json.loads(json.dumps(sources.recipe))
    mutation = rng.choice(["tree", "tree", "tree", "tree", "aliases", "recursive", "deep", "text", "encoding", "huge",
                           "pass-text", "tags", "scalar"])  # fmt: skip
    text = None
    if mutation == "tree":
        for _ in range(rng.randint(1, 3)):
            mutation = damage_tree(recipe, rng)
    elif mutation == "aliases":
        text = alias_bomb(rng.randint(3, 12), rng.randint(2, 12))
    elif mutation == "recursive":
        text = rng.choice(["models: &a [*a]\nvariants: []\n", "a: &a {b: *a}\nmodels: *a\nvariants: *a\n"])
    elif mutation == "deep":
        depth = rng.choice([40, 60, 500, 10_000, 200_000])
        text = "models: " + "[" * depth + "]" * depth + "\nvariants: []\n"
    elif mutation == "text":
        data, how = mutate(yaml.safe_dump(recipe).encode(), rng)
        mutation = f"text-{how}"
    elif mutation == "encoding":
        text = yaml.safe_dump(recipe)
        at = rng.randrange(len(text))
        data = text[:at].encode() + rng.choice([b"\xff\xfe", b"\xc3", b"\x00", b"\xed\xa0\x80"]) + text[at:].encode()
        text = None
    elif mutation == "huge":
        text = yaml.safe_dump(recipe) + "# " + "x" * (1 << 21) + "\n"
    elif mutation == "pass-text":
        recipe["variants"][1]["passes"] = [rng.choice(["quantize(mode=[)", "quantize(mode=&a [*a])", "quantize(mode=!!binary x)",
                                                       "quantize(mode=" + "9" * 6000 + ")", "quantize(mode=2024-13-45)",
                                                       "prune(sparsity=.nan)", "quantize(((", "quantize(mode={a: b})"])]  # fmt: skip
    elif mutation == "tags":
        text = rng.choice(["models: !!python/object/apply:os.system ['true']\nvariants: []\n",
                           "models: !!binary '%%%'\nvariants: []\n", "models: [2024-13-45]\nvariants: []\n",
                           "models: [" + "9" * 6000 + "]\nvariants: []\n", "? [a]\n: b\nmodels: []\n",
                           "<<: 5\nmodels: []\n", "models: !custom x\nvariants: []\n"])  # fmt: skip
    else:
        text = rng.choice(["", "null\n", "- a\n- b\n", "42\n", "'text'\n", "---\n---\n", "models: []\nvariants: []\n"])
    path = where / "recipe.yaml"
    if text is not None:
        path.write_text(text)
    elif mutation.startswith(("text", "encoding")):
        path.write_bytes(data)
    else:
        path.write_text(yaml.safe_dump(recipe, allow_unicode=True))
    return Case("recipes", index, mutation.replace("/", "_"), path, [["pipeline", str(path), "--check"]])


def _sidecars(index: int, rng: random.Random, sources: Sources, where: Path) -> Case:
    fmt = rng.choices(["tflite", "h5"], weights=[3, 1])[0]
    model = sources.sidecar_homes[fmt]
    sidecar = model.with_name(model.name + ".json")
    original = sources.models[fmt].with_name(sources.models[fmt].name + ".json")
    tree = json.loads(original.read_text())
    mutation = rng.choice(["tree", "tree", "tree", "contradict", "contradict", "lineage", "bytes", "deep", "huge", "missing"])
    text = None
    if mutation == "tree":
        for _ in range(rng.randint(1, 3)):
            mutation = damage_tree(tree, rng)
    elif mutation == "contradict":
        tree["preprocessing"] = tree.get("preprocessing") or {}
        tree["extra"] = tree.get("extra") or {}
        change = rng.choice(["shape", "labels", "mean", "outputs", "task", "color"])
        if change == "shape":
            tree["inputs"][0]["shape"] = rng.choice([[32, 32, 3], [SIDE, SIDE, 1], [SIDE, SIDE], [SIDE, SIDE, 3, 1], [None, None, 3]])
        elif change == "labels":
            tree["labels"] = [f"c{i}" for i in range(rng.choice([0, 3, 11, 1000]))]
        elif change == "mean":
            tree["preprocessing"]["mean"] = [0.5] * rng.choice([2, 3, 5])
        elif change == "outputs":
            tree["extra"]["output_names"] = rng.choice([["a", "a"], ["nope"], ["dense", "extra"], []])
        elif change == "task":
            tree["task"] = rng.choice(["segmentation", "keypoints", "detection", "nope", ""])
        else:
            tree["preprocessing"]["color"] = rng.choice(["bgr", "gray", "cmyk"])
        mutation = f"contradict-{change}"
    elif mutation == "lineage":
        step = dict(tree["lineage"][0]) if tree.get("lineage") else {}
        step.update({"source": rng.choice(HOSTILE_TEXT), "source_sha256": rng.choice(["zz", "0" * 64, "", 5])})
        tree["lineage"] = [step] * rng.choice([1, 2, 20_000])
    elif mutation == "bytes":
        data, how = mutate(original.read_bytes(), rng)
        text = data.decode("latin1")
        mutation = f"bytes-{how}"
    elif mutation == "deep":
        text = "[" * rng.choice([100, 5000, 100_000]) + "]" * 10
    elif mutation == "huge":
        tree["extra"] = tree.get("extra") or {}
        tree["extra"]["padding"] = "x" * (9 << 20)
    else:
        text = rng.choice(["", "null", "[]", "{}", '{"edgecompress_metadata": 2}', '{"inputs": {"shape": 1}}'])
    sidecar.write_text(text if text is not None else json.dumps(tree, allow_nan=True), encoding="latin1" if text else "utf-8")
    if fmt == "tflite":
        commands = [["bench", str(model), *BENCH, "--eval", "digits"],
                    ["deploy", str(model), "--target", "linux", "-o", str(where / "bundle"), "--force"]]  # fmt: skip
    else:
        commands = [["quantize", str(model), "-o", str(where / "q.tflite"), "--mode", "dynamic", "--force", "-q"]]
    return Case("sidecars", index, f"{fmt}-{mutation}", sidecar, commands)


def _bundles(index: int, rng: random.Random, sources: Sources, where: Path) -> Case:
    from edgecompress.deploy.manifest import write_manifest

    bundle = where / sources.bundle.name
    shutil.copytree(sources.bundle, bundle)
    files = sorted(p for p in bundle.rglob("*") if p.is_file())
    target = rng.choice(files)
    mutation = rng.choice(["bytes", "delete", "add", "link", "fifo", "rehash", "rehash", "manifest", "metadata",
                           "pycache", "none"])  # fmt: skip
    if mutation == "bytes":
        data, how = mutate(target.read_bytes(), rng)
        target.write_bytes(data)
        mutation = f"bytes-{target.name}-{how}"
    elif mutation == "delete":
        target.unlink()
        mutation = f"delete-{target.name}"
    elif mutation == "add":
        name = rng.choice(["numpy.py", "numpy.cpython-311-x86_64-linux-gnu.so", "sitecustomize.py", "notes.txt",
                           "sub/dir/x.py", "litert_model.pyc", "preprocessing/__init__.py", "numpy.pth"])  # fmt: skip
        (bundle / name).parent.mkdir(parents=True, exist_ok=True)
        (bundle / name).write_text("raise SystemExit('foreign code ran')\n")
        mutation = f"add-{name.replace('/', '_')}"
        if rng.random() < 0.5:
            write_manifest(bundle)
            mutation += "-rehashed"
    elif mutation == "link":
        target.unlink()
        target.symlink_to(rng.choice(["/etc/hostname", "run.py", "../../outside.py", "/dev/zero"]))
        mutation = f"link-{target.name}"
    elif mutation == "fifo":
        target.unlink()
        os.mkfifo(target)
        mutation = f"fifo-{target.name}"
    elif mutation in ("rehash", "metadata"):
        if mutation == "metadata":
            target = bundle / "model.tflite.json"
            tree = json.loads(target.read_text())
            for _ in range(rng.randint(1, 3)):
                how = damage_tree(tree["deploy"] if rng.random() < 0.7 else tree, rng)
            target.write_text(json.dumps(tree))
        else:
            data, how = mutate(target.read_bytes(), rng)
            target.write_bytes(data)
        write_manifest(bundle)  # the tamperer recomputes the manifest
        mutation = f"{mutation}-{target.name}-{how}"
    elif mutation == "manifest":
        manifest = bundle / "manifest.json"
        tree = json.loads(manifest.read_text())
        mutation = f"manifest-{damage_tree(tree, rng)}"
        manifest.write_text(json.dumps(tree))
    elif mutation == "pycache":
        (bundle / "__pycache__").mkdir()
        (bundle / "__pycache__" / "preprocessing.cpython-311.pyc").write_bytes(b"planted bytecode")
    path = bundle
    if rng.random() < 0.35:
        path, how = _archive(bundle, where, rng)
        mutation += f"+{how}"
    commands = [["deploy", "--check", str(path), "--cache-dir", str(where / "venvs"), "--runs", "1"]]
    return Case("bundles", index, mutation.replace("/", "_")[:80], path, commands, guard=sources.bundle_code)


def _archive(bundle: Path, where: Path, rng: random.Random) -> tuple[Path, str]:
    """The bundle as a .tar.gz: as built, damaged byte by byte, or with a hostile member added."""
    path = where / f"{bundle.name}.tar.gz"
    how = rng.choice(["plain", "bytes", "member"])
    with tarfile.open(path, "w:gz") as tar:
        tar.add(bundle, arcname=bundle.name)
        if how == "member":
            info = tarfile.TarInfo(rng.choice([f"{bundle.name}/../escaped.py", "/tmp/absolute.py", f"{bundle.name}/link",
                                               "other/run.py", f"{bundle.name}/run.py", "run.py"]))  # fmt: skip
            info.type = rng.choice([tarfile.REGTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.FIFOTYPE])
            info.linkname = rng.choice(["/etc/passwd", "../../x", f"{bundle.name}/run.py"])
            data = b"print('foreign')\n" if info.type == tarfile.REGTYPE else b""
            if rng.random() < 0.3:
                info.size = rng.choice([10**12, 2**40])  # a header declaring more than it holds
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            how = f"member-{info.name.replace('/', '_')}-{info.type!r}"
    if how == "bytes":
        data, kind = mutate(path.read_bytes(), rng)
        path.write_bytes(data)
        how = f"archive-{kind}"
    shutil.rmtree(bundle)
    return path, how

