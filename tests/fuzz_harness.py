"""Mutate real model files and feed them to the CLI in a worker process; count what happens.

Outcomes: ``clean error`` (one ``error:`` line, a documented exit code), ``success``, ``traceback``
(an unexpected exception reached the user), ``crash`` (the worker process died) and ``hang`` (no
answer within the time limit). Used by tests/test_hardening.py (a seeded slice) and
benchmarks/fuzz.py (the long run).
"""

from __future__ import annotations

import multiprocessing
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

OUTCOMES = ("clean error", "success", "crash", "hang", "traceback")
CLEAN_EXIT_CODES = set(range(1, 9))


def mutate(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One random corruption of the kind disks, downloads and tamperers produce."""
    data = bytearray(data)
    kind = rng.choice(["flip", "zero", "truncate", "duplicate", "insert", "header"])
    if kind == "flip":
        for _ in range(rng.randint(1, 16)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == "zero":
        start = rng.randrange(len(data))
        end = min(len(data), start + rng.randint(1, 4096))
        data[start:end] = bytes(end - start)
    elif kind == "truncate":
        del data[rng.randrange(1, len(data)) :]
    elif kind == "duplicate":
        start = rng.randrange(len(data))
        chunk = data[start : start + rng.randint(1, 2048)]
        at = rng.randrange(len(data))
        data[at:at] = chunk
    elif kind == "insert":
        at = rng.randrange(len(data))
        data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    else:
        for i in range(min(len(data), 64)):
            if rng.random() < 0.2:
                data[i] = rng.randrange(256)
    return bytes(data), kind


#: sources fed to `compress quantize` itself (float .tflite / .onnx), not only to `bench`
QUANTIZE_SOURCES = ("tflite-source", "onnx-source")


def commands_for(path: Path, out_dir: Path) -> list[list[str]]:
    suffix = path.suffix.lower()
    if any(f"_{name}_" in path.name for name in QUANTIZE_SOURCES):
        # New parsers read these: the probe child, the flatbuffer/ONNX readers and both quantizers.
        return [["quantize", str(path), "-o", str(out_dir / f"q{suffix}"), "--mode", "int8", "--calib", "digits",
                 "--calib-samples", "8", "--force"]]  # fmt: skip
    if suffix in (".h5", ".keras"):
        return [
            ["quantize", str(path), "-o", str(out_dir / "q.tflite"), "--mode", "dynamic", "--force"],
            ["export", str(path), "-o", str(out_dir / "e.onnx"), "--format", "onnx", "--force"],
        ]
    return [["bench", str(path), "--runs", "1", "--warmup", "0", "-q"]]


def _run_commands(commands: list[list[str]]) -> str:
    from click.testing import CliRunner

    from edgecompress.cli import INTERNAL_ERROR_EXIT, cli

    worst = "success"
    for args in commands:
        result = CliRunner().invoke(cli, args)
        if (
            result.exit_code == INTERNAL_ERROR_EXIT
            or "Traceback" in result.output
            or (result.exception is not None and not isinstance(result.exception, SystemExit))
        ):
            return "traceback"
        if result.exit_code in CLEAN_EXIT_CODES:
            errors = [line for line in result.output.splitlines() if line.startswith("error:")]
            worst = "clean error" if len(errors) == 1 else "traceback"
        elif result.exit_code != 0:
            return "traceback"
    return worst


def _worker(connection) -> None:
    import edgecompress  # noqa: F401

    while True:
        commands = connection.recv()
        if commands is None:
            return
        connection.send(_run_commands(commands))


@dataclass
class Fuzzer:
    """A persistent worker (TensorFlow imported once) that is replaced when it crashes or hangs."""

    timeout: float = 120.0

    def __post_init__(self) -> None:
        self._context = multiprocessing.get_context("spawn")
        self._start()

    def _start(self) -> None:
        self._parent, child = self._context.Pipe()
        self._process = self._context.Process(target=_worker, args=(child,), daemon=False)
        self._process.start()
        child.close()

    def run(self, commands: list[list[str]]) -> str:
        self._parent.send(commands)
        if self._parent.poll(self.timeout):
            try:
                return self._parent.recv()
            except EOFError:
                pass
        outcome = "crash" if not self._process.is_alive() else "hang"
        self._process.kill()
        self._process.join()
        self._start()
        return outcome

    def close(self) -> None:
        if self._process.is_alive():
            self._parent.send(None)
            self._process.join(10)
        if self._process.is_alive():
            self._process.kill()


def fuzz(
    sources: dict[str, Path],
    cases_per_format: int,
    workdir: Path,
    seed: int = 0,
    timeout: float = 120.0,
    keep: Path | None = None,
):
    """Run ``cases_per_format`` mutations of each source; return {format: Counter(outcome)}.

    With ``keep``, every case that did not end in success or a clean error is copied there (named by
    format, case number and mutation), so a hang or crash can be replayed by hand.
    """
    rng = random.Random(seed)
    fuzzer = Fuzzer(timeout=timeout)
    results: dict[str, Counter] = {}
    try:
        for name, source in sources.items():
            counts: Counter = Counter()
            original = source.read_bytes()
            for i in range(cases_per_format):
                mutated, kind = mutate(original, rng)
                case = workdir / f"case_{name}_{i}{source.suffix}"
                case.write_bytes(mutated)
                out_dir = workdir / f"out_{name}_{i}"
                out_dir.mkdir()
                outcome = fuzzer.run(commands_for(case, out_dir))
                counts[outcome] += 1
                if keep is not None and outcome not in ("success", "clean error"):
                    keep.mkdir(parents=True, exist_ok=True)
                    saved = keep / f"{name}_{i}_{kind}_{outcome}{source.suffix}"
                    saved.write_bytes(mutated)
                    print(f"kept {outcome} case: {saved}", flush=True)
                case.unlink()
            results[name] = counts
    finally:
        fuzzer.close()
    return results


def make_sources(workdir: Path) -> dict[str, Path]:
    """Small real models of every format, written by the toolkit itself."""
    from edgecompress import api
    from edgecompress._env import import_tf_keras
    from edgecompress.artifacts import InputSpec, Metadata
    from edgecompress.models.train import save_model

    tf_keras = import_tf_keras()
    inputs = tf_keras.Input((16, 16, 3))
    x = tf_keras.layers.Conv2D(8, 3, padding="same")(inputs)
    x = tf_keras.layers.BatchNormalization()(x)
    x = tf_keras.layers.ReLU()(x)
    x = tf_keras.layers.DepthwiseConv2D(3, padding="same")(x)
    x = tf_keras.layers.GlobalAveragePooling2D()(x)
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(10, activation="softmax")(x))
    metadata = Metadata(task="classification", inputs=(InputSpec((16, 16, 3)),))
    h5 = save_model(model, workdir / "source.h5", metadata)
    keras_v3 = save_model(model, workdir / "source.keras", metadata)
    tflite = api.quantize(
        h5, workdir / "source.tflite", mode="int8", calib="digits", calib_samples=20
    ).output.path
    onnx = api.export(h5, workdir / "source.onnx", format="onnx").output.path
    float_tflite = api.export(h5, workdir / "float.tflite").output.path
    return {"h5": h5, "keras": keras_v3, "tflite": tflite, "onnx": onnx, "tflite-source": float_tflite,
            "onnx-source": onnx}  # fmt: skip
