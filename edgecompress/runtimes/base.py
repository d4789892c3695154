"""One Session interface over every runtime: float in, float out, quantized I/O handled inside.

Accuracy is measured through the runtime a user deploys with, so each backend quantizes and
dequantizes its own int8/uint8 tensors; ``run_raw`` exists for latency benchmarks, where that
conversion must not be timed.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edgecompress.artifacts import Artifact, ModelFormat
from edgecompress.errors import RuntimeUnavailableError

DEVICES = ("cpu", "gpu")


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int | None, ...]
    dtype: str
    scale: float | None = None
    zero_point: int | None = None

    @property
    def quantized(self) -> bool:
        return self.dtype in ("int8", "uint8", "int16") and bool(self.scale)

    def quantize(self, x: np.ndarray) -> np.ndarray:
        if not self.quantized:
            return np.asarray(x, dtype=self.dtype)
        info = np.iinfo(self.dtype)
        q = np.round(np.asarray(x, dtype=np.float32) / self.scale) + self.zero_point
        return np.clip(q, info.min, info.max).astype(self.dtype)

    def dequantize(self, x: np.ndarray) -> np.ndarray:
        if not self.quantized:
            return np.asarray(x, dtype=np.float32)
        return ((x.astype(np.float32) - self.zero_point) * self.scale).astype(np.float32)


class Session(abc.ABC):
    """An opened model. ``run`` takes a float batch and returns float outputs (one array per output)."""

    runtime: str
    device: str
    threads: int | None
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    def run(self, x: np.ndarray, batch_size: int = 32) -> list[np.ndarray]:
        x = np.asarray(x, dtype=np.float32)
        self._check_shape(x)
        pieces = [self._run_float(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
        return [np.concatenate(parts, axis=0) for parts in zip(*pieces, strict=True)]

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The first output only: the common case of a single-output model."""
        return self.run(x)[0]

    @abc.abstractmethod
    def _run_float(self, x: np.ndarray) -> list[np.ndarray]: ...

    @abc.abstractmethod
    def prepare_raw(self, x: np.ndarray):
        """Native inputs (already quantized) for ``run_raw``."""

    @abc.abstractmethod
    def run_raw(self, prepared) -> None:
        """One inference on prepared inputs, nothing else: what latency benchmarks time."""

    def resize_input(self, shape: tuple[int, ...]) -> None:
        """Run the same file at another input size (batch 1). Convolutional backbones with global
        pooling allow it, and their weights do not change; runtimes that cannot say so."""
        from edgecompress.errors import UnsupportedError

        raise UnsupportedError(f"{self.runtime} cannot change a model's input size", "measure this size in LiteRT")

    def close(self) -> None:  # noqa: B027 - most backends free themselves
        pass

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_shape(self, x: np.ndarray) -> None:
        expected = self.inputs[0].shape[1:]
        if len(x.shape) - 1 != len(expected) or any(
            e is not None and e > 0 and e != g for e, g in zip(expected, x.shape[1:], strict=False)
        ):
            from edgecompress.errors import DataError

            raise DataError(
                f"input of shape {tuple(x.shape[1:])} does not fit the model's input {tuple(expected)}",
                "resize the data to the model's input size (preprocessing does this for raw images)",
            )


class Runtime(abc.ABC):
    name: str
    formats: tuple[ModelFormat, ...]

    @abc.abstractmethod
    def available(self) -> tuple[bool, str]:
        """Whether this runtime can run here, and if not, why (and how to fix it)."""

    def device_available(self, device: str) -> tuple[bool, str]:
        return (True, "") if device == "cpu" else (False, f"{self.name} has no {device} support")

    def version(self) -> str:
        return "unknown"

    def accepts(self, artifact: Artifact) -> bool:
        return artifact.format in self.formats

    def open(
        self, artifact: Artifact, device: str = "cpu", threads: int | None = None, trust_model: bool = False
    ) -> Session:
        ok, why = self.available()
        if not ok:
            raise RuntimeUnavailableError(f"runtime '{self.name}' is not available: {why}")
        if not self.accepts(artifact):
            accepted = ", ".join(f.value for f in self.formats)
            raise RuntimeUnavailableError(
                f"runtime '{self.name}' cannot run a {artifact.format.value} model", f"it runs: {accepted}"
            )
        if device not in DEVICES:
            raise RuntimeUnavailableError(f"unknown device '{device}'", f"choose one of: {', '.join(DEVICES)}")
        ok, why = self.device_available(device)
        if not ok:
            raise RuntimeUnavailableError(f"{self.name} cannot use the {device} here: {why}")
        return self._open(artifact, device, threads, trust_model)

    @abc.abstractmethod
    def _open(self, artifact: Artifact, device: str, threads: int | None, trust_model: bool) -> Session: ...


# --------------------------------------------------------------------------- timing


@dataclass(frozen=True)
class Timing:
    latencies_ms: np.ndarray

    @property
    def p50(self) -> float:
        return float(np.percentile(self.latencies_ms, 50))

    @property
    def p90(self) -> float:
        return float(np.percentile(self.latencies_ms, 90))

    @property
    def p99(self) -> float:
        return float(np.percentile(self.latencies_ms, 99))


def time_session(session, x: np.ndarray, warmup: int = 5, runs: int = 50, tick: Callable[[], None] | None = None) -> Timing:
    prepared = session.prepare_raw(x)
    for _ in range(warmup):
        session.run_raw(prepared)
    latencies = np.empty(runs, dtype=np.float64)
    for i in range(runs):
        start = time.perf_counter()
        session.run_raw(prepared)
        latencies[i] = (time.perf_counter() - start) * 1000.0
        if tick:
            tick()
    return Timing(latencies)


# --------------------------------------------------------------------------- layout


def guess_layout(shape: tuple[int, ...]) -> str:
    """NCHW for an input shaped (1|3, H, W) with H, W not channel counts, as PyTorch exports are; else NHWC.

    Why a guess is enough: a channels-first image has its 1 or 3 channels first and larger sizes
    after; the ambiguous (3, 3, 3) stays NHWC, and ``--layout`` overrides any guess.
    """
    if len(shape) == 3 and shape[0] in (1, 3) and shape[-1] not in (1, 3, 4):
        return "NCHW"
    return "NHWC"
