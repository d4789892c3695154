"""Process-wide set-up that must happen before TensorFlow is imported, and log silencing.

Why here: TFMOT and Larq only work with Keras 2 (``tf_keras``); TensorFlow picks Keras 3 unless
``TF_USE_LEGACY_KERAS`` is set before its first import. TensorFlow and its converters also write
C++ log lines straight to file descriptor 2, which Python-level logging cannot catch.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from typing import IO

_DEFAULTS = {
    "TF_USE_LEGACY_KERAS": "1",
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "GRPC_VERBOSITY": "ERROR",
    "GLOG_minloglevel": "3",
    "ABSL_MIN_LOG_LEVEL": "3",
    "TF_ENABLE_ONEDNN_OPTS": "0",
}


def configure_environment() -> None:
    """Set our defaults without overriding what the user exported explicitly."""
    if "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        warnings.warn(
            "TensorFlow was imported before edgecompress; TFMOT and Larq passes need "
            "TF_USE_LEGACY_KERAS=1 set before that import.",
            stacklevel=3,
        )
    for key, value in _DEFAULTS.items():
        os.environ.setdefault(key, value)


def quiet_python_loggers() -> None:
    """TensorFlow, absl and tf2onnx log INFO/WARNING chatter through Python logging."""
    for name in ("tensorflow", "absl", "tf2onnx", "h5py", "onnxruntime", "larq"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"tensorflow.*|tf_keras.*|keras.*|tf2onnx.*|onnxconverter_common.*")


def debug_enabled() -> bool:
    return os.environ.get("EDGECOMPRESS_DEBUG") == "1"


@contextlib.contextmanager
def native_output_silenced() -> Iterator[IO[str]]:
    """Redirect fd 1 and 2 to a temp file while native code runs.

    The TFLite converter and TensorFlow's C++ runtime print directly to the file descriptors. On
    an exception the captured text is logged at DEBUG level so ``--debug`` can still show it.
    Yields a stream to the real stderr, for progress bars drawn while native output is muted.
    """
    if debug_enabled():
        yield sys.stderr
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    terminal = os.fdopen(os.dup(saved[1]), "w", buffering=1)
    with tempfile.TemporaryFile(mode="w+b") as sink, terminal:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield terminal
        except BaseException:
            _restore(saved)
            sink.seek(0)
            logging.getLogger("edgecompress").debug("native output:\n%s", sink.read().decode(errors="replace"))
            raise
        else:
            _restore(saved)


def _restore(saved: list[int]) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    for fd, copy in zip((1, 2), saved, strict=True):
        os.dup2(copy, fd)
        os.close(copy)
    saved.clear()


def import_tensorflow():
    """Import TensorFlow quietly (its import prints absl/CUDA probing lines on fd 2)."""
    configure_environment()
    if "tensorflow" not in sys.modules:
        with native_output_silenced():
            import tensorflow as tf  # noqa: F401
        quiet_python_loggers()
        tf.get_logger().setLevel(logging.ERROR)
    import tensorflow as tf

    return tf


def import_tf_keras():
    import_tensorflow()
    import tf_keras

    return tf_keras
