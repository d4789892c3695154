"""Open untrusted model files in a child process first, with a time limit.

Why: interpreters are C++ and trust their input. Of 60 randomly mutated copies of a small int8
.tflite, 33 raised errors and one hung LiteRT for more than 20 s; others can segfault. A crash or a
hang in a child becomes "model file is damaged: …" here instead of killing or freezing the user's
process. Files this process wrote itself (converter outputs) and files already probed are trusted.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from edgecompress._child import run_in_child
from edgecompress.errors import ModelLoadError

PROBE_SECONDS = float(os.environ.get("EDGECOMPRESS_PROBE_SECONDS", "20"))
_TRUSTED: set[tuple[int, int, int, int]] = set()


def _key(path: Path) -> tuple[int, int, int, int]:
    # The inode survives the rename of a temporary output to its final name.
    stat = path.stat()
    return stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_size


def trust(path: Path) -> None:
    """Mark a file as safe to open in-process (we just wrote it, or a probe passed)."""
    _TRUSTED.add(_key(Path(path)))


def probe(runtime: str, path: Path, timeout: float = PROBE_SECONDS) -> None:
    """Open and run the model once in a child; raise ModelLoadError on a crash, hang or error.

    ``runtime`` names a registered runtime, or ``"hdf5"`` to read a Keras .h5 file's every object.
    """
    path = Path(path)
    if _key(path) in _TRUSTED:
        return
    result = run_in_child("edgecompress.runtimes.probe:open_and_run", [runtime, str(path)], timeout)
    if result.timed_out:
        raise ModelLoadError(
            f"model file is damaged: {path}: reading it with {runtime} hung for more than {timeout:.0f} s",
            "re-export or re-download it",
        )
    if result.exitcode is not None:
        raise ModelLoadError(
            f"model file is damaged: {path}: reading it with {runtime} crashed ({_describe(result.exitcode)})",
            "re-export or re-download it",
        )
    if result.error:
        # The runtime's own loader may already have said "model file is damaged …: path: …".
        message = result.error
        if not message.startswith("model file is damaged"):
            message = f"model file is damaged or not runnable: {path}: {message}"
        raise ModelLoadError(message, "re-export or re-download it")
    trust(path)


def _describe(exitcode: int) -> str:
    if exitcode < 0:
        try:
            return signal.Signals(-exitcode).name
        except ValueError:
            pass
    return f"exit code {exitcode}"


def open_and_run(runtime: str, path: str) -> None:
    """The probe child: open the model with the runtime's own code and run it once on zeros."""
    if runtime == "hdf5":
        _read_every_hdf5_object(path)
        return
    import numpy as np

    from edgecompress.artifacts import Artifact
    from edgecompress.runtimes import get_runtime

    trust(Path(path))  # this child is the probe: open in-process here
    if runtime == "onnxruntime":
        import onnx

        onnx.checker.check_model(path)
    with get_runtime(runtime).open(Artifact.open(path), "cpu", 1) as session:
        shape = tuple(d if d and d > 0 else 1 for d in session.inputs[0].shape[1:])
        session.run_raw(session.prepare_raw(np.zeros((1, *shape), dtype=np.float32)))


def _read_every_hdf5_object(path: str) -> None:
    """Touch every attribute and dataset: the HDF5 library can loop forever on corrupted metadata
    (seen by our fuzzer on mutated Keras .h5 files), so this runs in the probe child first."""
    import h5py

    def visit(_name, obj) -> None:
        dict(obj.attrs)
        if isinstance(obj, h5py.Dataset):
            obj[()]

    with h5py.File(path, "r") as handle:
        dict(handle.attrs)
        handle.visititems(visit)
