"""Open untrusted model files in a child process first, with a time limit.

Why: interpreters are C++ and trust their input. Of 60 randomly mutated copies of a small int8
.tflite, 33 raised errors and one hung LiteRT for more than 20 s; others can segfault. A crash or a
hang in a child becomes "model file is damaged: …" here instead of killing or freezing the user's
process. Files this process wrote itself (converter outputs) and files already probed are trusted.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from pathlib import Path

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
    """Open and run the model once in a child; raise ModelLoadError on a crash, hang or error."""
    path = Path(path)
    if _key(path) in _TRUSTED:
        return
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(runtime, str(path), sender), daemon=True)
    child.start()
    sender.close()
    try:
        if not receiver.poll(timeout) and child.is_alive():
            child.kill()
            child.join()
            raise ModelLoadError(
                f"model file is damaged: {path}: the {runtime} interpreter hung for more than {timeout:.0f} s",
                "re-export or re-download it",
            )
        try:
            error = receiver.recv()
        except EOFError:
            child.join()
            raise ModelLoadError(
                f"model file is damaged: {path}: the {runtime} interpreter crashed ({_describe(child.exitcode)})",
                "re-export or re-download it",
            ) from None
    finally:
        receiver.close()
    child.join(5)
    if error:
        raise ModelLoadError(f"model file is damaged or not runnable: {path}: {error}", "re-export or re-download it")
    trust(path)


def _describe(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return signal.Signals(-exitcode).name
        except ValueError:
            pass
    return f"exit code {exitcode}"


def _child(runtime: str, path: str, sender) -> None:
    """Open the model, run it once on zeros, and report an error message or None."""
    import numpy as np

    try:
        if runtime == "litert":
            from edgecompress.runtimes.litert import interpreter_class

            cls, _ = interpreter_class()
            interpreter = cls(model_path=path, num_threads=1)
            interpreter.allocate_tensors()
            for detail in interpreter.get_input_details():
                interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], dtype=detail["dtype"]))
            interpreter.invoke()
        elif runtime == "onnxruntime":
            import onnx
            import onnxruntime

            onnx.checker.check_model(path)
            session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
            feeds = {}
            for arg in session.get_inputs():
                shape = [d if isinstance(d, int) and d > 0 else 1 for d in arg.shape]
                dtype = {"tensor(float)": np.float32, "tensor(float16)": np.float16}.get(arg.type, np.float32)
                feeds[arg.name] = np.zeros(shape, dtype=dtype)
            session.run(None, feeds)
        sender.send(None)
    except Exception as exc:  # noqa: BLE001 - any failure is reported to the parent as one line
        sender.send((str(exc).strip().splitlines() or [type(exc).__name__])[0][:200])
    finally:
        sender.close()
