"""One exception base for everything a user can cause; each message names the fix.

The CLI prints ``str(error)`` on one line and exits with ``error.exit_code``; ``--debug`` shows
the traceback. Library code raises these instead of printing.
"""

from __future__ import annotations


class EdgeCompressError(Exception):
    """Base class: ``message`` says what is wrong, ``hint`` says what to do about it."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(EdgeCompressError):
    """Bad arguments or options: an output that exists, an option that does not apply."""

    exit_code = 2


class ModelLoadError(EdgeCompressError):
    """Missing, unknown-format, damaged or unloadable model file."""

    exit_code = 3


class UnsafeModelError(ModelLoadError):
    """The model would run arbitrary Python when loaded (Lambda layers, custom objects)."""


class DataError(EdgeCompressError):
    """Calibration, evaluation or training data that does not fit the model or cannot be read."""

    exit_code = 4


class UnsupportedError(EdgeCompressError):
    """A layer or op the requested pass or format cannot handle."""

    exit_code = 5


class ValidationError(EdgeCompressError):
    """An exported model whose outputs differ from the source beyond the stated tolerance."""

    exit_code = 6


class MissingDependencyError(EdgeCompressError):
    """An optional dependency is not installed; the hint names the extra to install."""

    exit_code = 7

    def __init__(self, module: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the Python package '{module}', which is not installed",
            f'install it with: pip install "edgecompress[{extra}]"',
        )
        self.module = module
        self.extra = extra


class RuntimeUnavailableError(EdgeCompressError):
    """A runtime or device that cannot run on this machine (no GPU, missing provider)."""

    exit_code = 8


class BudgetError(EdgeCompressError):
    """`compress tune` measured variants, and none meets the accuracy, latency and size budget;
    ``result`` holds what was measured (the message names the closest candidate)."""

    exit_code = 9

    def __init__(self, message: str, hint: str | None = None, result=None) -> None:
        super().__init__(message, hint)
        self.result = result


def require(module: str, extra: str, purpose: str):
    """Import an optional dependency or raise MissingDependencyError naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(module.split(".")[0], extra, purpose) from exc
