"""`compress tune`: the fastest variant that keeps the metric within a drop and fits a latency and size budget.

A sweep (it sits above compress/ and reports/). The space is runtimes × modes × granularity ×
accuracy fixes × thread counts, but it is searched as branch and bound, not as a grid: before a
variant is built, the variants already measured give a floor under its latency and size, and a
variant whose floor cannot beat the best feasible one found so far (or breaks a budget) is cut
with the reason. The floors come from two kinds of fact:

- structural: an accuracy fix (another calibration method, equalization, bias correction) leaves
  the graph as it is, so the variant runs as fast as the variant it refines; layers kept in float
  only add work;
- measured on the target (``TUNE_TARGETS`` below): e.g. LiteRT runs float16 and int16x8 models on
  float or reference kernels, so they are never faster than the float model on that runtime.

Thread counts are measured on every built file (timing is cheap, building is not); accuracy does
not depend on them. Scoring (the metric on the held-out data) is the expensive
part, so a built file is timed first and scored only if it could still be the pick: one no
faster than a variant already known to meet the budget stays "timed, not scored" (``dominated``). Search order only decides how soon the best variant is found, never what is
found. Building and timing live in ``pipeline/tune_run.py``; results and their rendering in
``reports/tune.py``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from edgecompress.errors import UsageError
from edgecompress.registry import Registry
from edgecompress.reports.tune import Budget, Cut, Measured

#: the runtimes the tuner measures, and the file format each runs
RUNTIME_FORMATS = {"litert": "tflite", "onnxruntime": "onnx"}
#: modes in the order they are tried: the one most likely to be fastest first
MODES = ("int8", "dynamic", "float16", "int16x8")
#: a measured latency within this fraction of another counts as equal (medians of timed runs on a
#: shared machine move by a few per cent between runs)
NOISE = 0.05
#: bytes per weight of each mode, for a floor under file sizes before a file exists
_WEIGHT_BYTES = {"float": 4, "float16": 2, "dynamic": 1, "int8": 1, "int16x8": 1}


# --------------------------------------------------------------------------- the space


@dataclass(frozen=True)
class Variant:
    """One point of the search space: how to make one file, and the runtime that runs it."""

    runtime: str
    mode: str  # float | float16 | dynamic | int8 | int16x8
    per_channel: bool = True
    #: accuracy options of QuantizeConfig (calibration method, equalize, bias correction, keep float)
    fixes: tuple[tuple[str, Any], ...] = ()

    @property
    def format(self) -> str:
        return RUNTIME_FORMATS[self.runtime]

    @property
    def family(self) -> Variant:
        """The representative this variant refines: its mode with default settings."""
        return Variant(self.runtime, self.mode)

    @property
    def is_representative(self) -> bool:
        return self == self.family

    @property
    def keeps_float(self) -> bool:
        return any(name in ("keep_float", "auto_keep_float") for name, _ in self.fixes)

    @property
    def label(self) -> str:
        parts = [self.mode]
        if self.mode != "float" and self.mode != "float16":
            parts.append("per-channel" if self.per_channel else "per-tensor")
        parts += [_fix_label(name, value) for name, value in self.fixes]
        return " ".join(parts) + f" · {self.runtime}"

    def settings(self) -> dict[str, Any]:
        return {"mode": self.mode, "format": self.format, "per_channel": self.per_channel, **dict(self.fixes)}


def _fix_label(name: str, value: Any) -> str:
    if value is True:
        return name.replace("_", "-")
    return f"{name.replace('_', '-')}={','.join(value) if isinstance(value, tuple | list) else value}"


def accuracy_fixes(max_drop: float) -> list[tuple[tuple[str, Any], ...]]:
    """The accuracy options QuantizeConfig offers, each a refinement of an int8 variant.

    Read from QuantizeConfig's own fields, so the options of the accuracy work (calibration
    methods, equalization, bias correction, layers kept in float) join the search as soon as the
    pass has them, and an option it does not have is simply not searched.
    """
    from dataclasses import fields

    from edgecompress.compress.quantize import QuantizeConfig

    have = {f.name for f in fields(QuantizeConfig)}
    out: list[tuple[tuple[str, Any], ...]] = []
    if "calibration" in have:
        out += [(("calibration", method),) for method in ("percentile", "entropy", "mse")]
    if "equalize" in have:
        out.append((("equalize", True),))
    if "bias_correction" in have:
        out.append((("bias_correction", True),))
    if "equalize" in have and "bias_correction" in have:
        out.append((("equalize", True), ("bias_correction", True)))
    if "auto_keep_float" in have and "max_drop" in have:
        # last: it only adds float work, so it is the slowest way to win the metric back
        out.append((("auto_keep_float", True), ("max_drop", max_drop)))
    return out


def search_space(runtimes: Sequence[str], fixes: Sequence[tuple[tuple[str, Any], ...]] = ()) -> list[Variant]:
    """Every variant, in search order: per runtime the float model, then each mode's
    representative followed by its refinements (per-tensor, then each accuracy fix)."""
    out: list[Variant] = []
    for runtime in runtimes:
        out.append(Variant(runtime, "float"))
        for mode in MODES:
            out.append(Variant(runtime, mode))
            if mode != "float16":
                out.append(Variant(runtime, mode, per_channel=False))
            if mode == "int8":
                out += [Variant(runtime, mode, True, fix) for fix in fixes]
    return out


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class KnownLimit:
    """A measured fact about a runtime on a target, used as a floor: ``mode`` on ``runtime`` is
    never faster than ``than`` (a mode of the same runtime, or ``per_channel`` for granularity)."""

    runtime: str
    mode: str
    than: str
    reason: str


@dataclass(frozen=True)
class TuneTarget:
    """A device named in one word: runtimes to search, thread counts, and the known limits."""

    name: str
    description: str
    runtimes: tuple[str, ...]
    threads: tuple[int, ...]
    limits: tuple[KnownLimit, ...] = ()
    #: whether this machine is the target; if not, latencies are measured here as a proxy
    arch: str = "x86_64"

    def limit(self, variant: Variant) -> KnownLimit | None:
        key = "per_tensor" if not variant.per_channel and variant.is_representative is False else variant.mode
        return next((lim for lim in self.limits if lim.runtime == variant.runtime and lim.mode == key), None)


_LITERT_CPU = (
    KnownLimit("litert", "float16", "float", "LiteRT's CPU kernels dequantize float16 weights at load and run float"),
    KnownLimit("litert", "int16x8", "float", "XNNPACK has no int16x8 kernels; LiteRT runs reference kernels"),
)
_ORT_X86 = (
    KnownLimit("onnxruntime", "float16", "float", "ONNX Runtime's x86 CPU provider casts float16 back to float"),
    KnownLimit("onnxruntime", "int16x8", "float", "ONNX Runtime has no int16 convolution kernels; Q/DQ pairs wrap float ones"),
    KnownLimit("onnxruntime", "dynamic", "float", "ConvInteger quantizes each activation at run time; measured slower than float"),
)
_GRANULARITY = (
    KnownLimit("litert", "per_tensor", "per_channel", "XNNPACK runs per-channel and per-tensor int8 with the same kernels"),
)

TUNE_TARGETS: Registry[TuneTarget] = Registry("tune target")
TUNE_TARGETS.add("x86-avx512", TuneTarget(
    "x86-avx512", "x86-64 with AVX-512 VNNI (this project's machine)", ("litert", "onnxruntime"), (1, 2),
    _LITERT_CPU + _ORT_X86 + _GRANULARITY,
), "x86")  # fmt: skip
TUNE_TARGETS.add("rpi4", TuneTarget(
    "rpi4", "Raspberry Pi 4 (Cortex-A72, 4 cores, no int8 dot product), LiteRT", ("litert",), (1, 2, 4),
    _LITERT_CPU + _GRANULARITY, arch="aarch64",
), "raspberrypi4")  # fmt: skip
TUNE_TARGETS.add("rpi5", TuneTarget(
    "rpi5", "Raspberry Pi 5 (Cortex-A76, 4 cores, int8 dot product), LiteRT", ("litert",), (1, 2, 4),
    _LITERT_CPU + _GRANULARITY, arch="aarch64",
), "raspberrypi5")  # fmt: skip
TUNE_TARGETS.add("android-arm64", TuneTarget(
    "android-arm64", "Android phone (arm64-v8a, big cores), LiteRT CPU", ("litert",), (1, 2, 4),
    _LITERT_CPU + _GRANULARITY, arch="aarch64",
), "android")  # fmt: skip


def host_target() -> TuneTarget:
    """This machine as a target: x86-avx512 where it applies, else no known limits (nothing is cut
    on assumption; only measured floors cut)."""
    import platform

    try:
        with open("/proc/cpuinfo") as handle:
            flags = next((line for line in handle if line.startswith("flags")), "")
    except OSError:
        flags = ""
    if platform.machine() in ("x86_64", "AMD64") and "avx512_vnni" in flags:
        return TUNE_TARGETS.get("x86-avx512")
    return TuneTarget("host", f"this machine ({platform.machine()})", ("litert", "onnxruntime"), (1, 2),
                      arch=platform.machine())  # fmt: skip


def thread_counts(requested: int | Sequence[int] | None, target: TuneTarget) -> tuple[int, ...]:
    """``--threads N``: 1, 2, 4 … up to N, and N; capped at this machine's cores, where timing
    more threads than cores would only measure contention."""
    cores = os.cpu_count() or 1
    if requested is None:
        wanted = target.threads
    elif isinstance(requested, int):
        if requested < 1:
            raise UsageError(f"--threads must be ≥ 1, not {requested}", "e.g. --threads 2")
        wanted = tuple(sorted({*(2**i for i in range(8) if 2**i < requested), requested}))
    else:
        wanted = tuple(sorted({int(t) for t in requested}))
        if not wanted or wanted[0] < 1:
            raise UsageError(f"thread counts must be ≥ 1, not {requested}", "e.g. --threads 2")
    return tuple(t for t in wanted if t <= cores) or (1,)


# --------------------------------------------------------------------------- the search


@dataclass
class SearchState:
    """What is known so far: measured variants and the cuts made, in order."""

    budget: Budget
    measured: dict[Variant, Measured] = field(default_factory=dict)
    cut: list[Cut] = field(default_factory=list)

    def incumbent(self) -> Measured | None:
        """The fastest measured variant that meets every budget."""
        feasible = [m for m in self.measured.values() if self.budget.met_by(m)]
        return min(feasible, key=lambda m: (m.latency_ms, m.size_bytes)) if feasible else None


def floors(variant: Variant, state: SearchState, target: TuneTarget) -> tuple[float | None, float | None, str]:
    """(latency floor in ms, size floor in bytes, where the latency floor comes from) before building."""
    measured = state.measured
    float_model = measured.get(Variant(variant.runtime, "float"))
    size = None
    if float_model is not None and float_model.size_bytes:
        size = float_model.size_bytes * _WEIGHT_BYTES[variant.mode] / 4 * 0.8
    if variant.mode == "float":
        return None, None, ""
    if not variant.is_representative:
        base = measured.get(replace(variant, fixes=())) if variant.fixes else measured.get(variant.family)
        if variant.fixes and base is not None:
            why = "adds float layers to" if variant.keeps_float else "has the same graph as"
            return base.latency_ms, base.size_bytes * 0.99 if not variant.keeps_float else base.size_bytes, (
                f"{why} {base.label}")  # fmt: skip
        limit = target.limit(variant)
        rep = measured.get(variant.family)
        if limit is not None and rep is not None:
            return rep.latency_ms, size, f"{limit.reason} ({target.name})"
        return None, size, ""
    limit = target.limit(variant)
    if limit is not None and float_model is not None:
        return float_model.latency_ms, size, f"{limit.reason} ({target.name})"
    return None, size, ""


def decide(variant: Variant, state: SearchState, target: TuneTarget) -> Cut | None:
    """A Cut if ``variant`` cannot become the pick, else None (it must be built and measured)."""
    budget = state.budget
    if not variant.is_representative and variant.family not in state.measured:
        cause = next((c for c in state.cut if c.label == variant.family.label), None)
        return Cut(variant.label, f"its representative {variant.family.label} was not built"
                   + (f" ({cause.reason})" if cause else ""))  # fmt: skip
    latency, size, source = floors(variant, state, target)
    incumbent = state.incumbent()
    if latency is not None and incumbent is not None and latency >= incumbent.latency_ms * (1 - NOISE):
        return Cut(variant.label, f"cannot beat {incumbent.label} ({incumbent.latency_ms:.3f} ms): {source}, "
                   f"{latency:.3f} ms", latency)  # fmt: skip
    if latency is not None and budget.latency_ms is not None and latency * (1 - NOISE) > budget.latency_ms:
        return Cut(variant.label, f"over the latency budget: {source}, {latency:.3f} ms", latency)
    if size is not None and budget.size_bytes is not None and size > budget.size_bytes:
        return Cut(variant.label, f"over the size budget: at least {size / 1e6:.2f} MB", latency)
    return None


def dominated(measured: Measured, state: SearchState) -> Measured | None:
    """The incumbent that makes scoring ``measured`` pointless, or None (it must be scored).

    Latency is known before the metric: a built file is timed first. A variant no faster than a
    variant already known to meet every budget (no smaller at the same latency) cannot become the
    pick whatever its metric, since the pick is the fastest feasible variant. The comparison is
    exact, without the timing-noise margin :func:`decide` allows a floor: a variant measured even a
    little faster than the incumbent is scored, so skipping never changes the pick.
    """
    incumbent = state.incumbent()
    if incumbent is None or not measured.ok:
        return None
    if (measured.latency_ms, measured.size_bytes) >= (incumbent.latency_ms, incumbent.size_bytes):
        return incumbent
    return None


def search(
    space: Sequence[Variant],
    build: Callable[[Sequence[Variant]], Iterable[Measured]],
    budget: Budget,
    target: TuneTarget,
    grid: bool = False,
    score: Callable[[Measured], Measured] | None = None,
) -> SearchState:
    """Measure the variants of ``space`` that can still become the pick; cut the rest.

    ``build`` builds and times a batch of variants (the executor may run a batch in parallel);
    each round takes the next undecided variant of every runtime, so runtimes progress side by
    side. ``score`` then adds the metric to a built variant (status "timed" → "ok"), the
    expensive part: the round's variants are scored fastest first, and one that is
    :func:`dominated` by the incumbent stays "timed", its note saying by which. Without ``score``,
    ``build`` returns scored variants. With ``grid`` nothing is cut and everything is scored: the
    reference the benchmark checks the search against.
    """
    state = SearchState(budget)
    queues = {rt: [v for v in space if v.runtime == rt] for rt in dict.fromkeys(v.runtime for v in space)}
    while any(queues.values()):
        batch: list[Variant] = []
        for queue in queues.values():
            while queue:
                variant = queue.pop(0)
                cut = None if grid else decide(variant, state, target)
                if cut is None:
                    batch.append(variant)
                    break
                state.cut.append(cut)
        built = list(zip(batch, build(batch), strict=True))
        for variant, result in sorted(built, key=lambda vr: (vr[1].latency_ms, vr[1].size_bytes)):
            if score is not None and result.status == "timed":
                incumbent = None if grid else dominated(result, state)
                if incumbent is None:
                    result = score(result)
                else:
                    result = replace(result, note=f"not scored: no faster than {incumbent.label} "
                                     f"({incumbent.latency_ms:.3f} ms), which meets the budget")  # fmt: skip
            state.measured[variant] = result
        for variant in batch:  # results in the space's order: the sort only decides what is scored first
            state.measured[variant] = state.measured.pop(variant)
    return state
