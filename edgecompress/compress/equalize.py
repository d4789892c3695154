"""Cross-layer equalization (CLE) of a Keras model, BatchNorm folded first.

Reference: Nagel et al., "Data-Free Quantization Through Weight Equalization and Bias Correction"
(ICCV 2019). For two linear layers joined through a positively homogeneous activation
(ReLU(x/s) = ReLU(x)/s), dividing output channel i of the first by s_i and multiplying input
channel i of the second by s_i leaves the function unchanged; s_i = sqrt(r1_i / r2_i) makes both
per-channel weight ranges sqrt(r1_i · r2_i), so one per-tensor scale no longer has to cover a channel
100× wider than the rest. Depthwise layers sit in two pairs, hence a few sweeps until the scales settle.

BatchNorm folding first (its per-channel scale is what spreads the ranges in real networks): the
scale goes into the kernel, the BatchNorm keeps only its shift (mean 0, variance 1 − ε, γ 1), so the
architecture and the file layout stay the same and the converter folds the shift as a bias.

ReLU6 is not homogeneous (its cap would need to become 6/s_i per channel). ``relu6="replace"`` does
what the paper does for MobileNetV2 and turns the ReLU6 between an equalized pair into ReLU
(the float model changes where activations exceeded 6: the report says how many were replaced);
``relu6="skip"`` leaves those pairs alone. ``relu6="bound"`` keeps every ReLU6 and bounds each
channel's scale by what calibration data shows at the cap: ReLU6(x/s) = ReLU6(x)/s whenever x never
reaches 6 and x/s never exceeds 6, so a channel that reaches the cap keeps s = 1 and the others
may be scaled down freely and up only until they would reach it. On ImageNet MobileNetV2 few
activations reach 6 and "replace" costs little; on a network trained into saturation (a
MobileNetV2 trained on digits with SGD at learning rate 0.1, benchmarks/README.md) "replace" took
the float model from 96 % to 8 % top-1, "bound" changes nothing on the calibration data.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgecompress.compress import kerasgraph as kg
from edgecompress.errors import UsageError

log = logging.getLogger(__name__)

RELU6_POLICIES = ("replace", "skip", "bound")
#: sweeps over all pairs; each moves every scale toward its fixed point
SWEEPS = 20
#: a zero-range channel (dead filter) is left unscaled
TINY = 1e-12
#: ReLU6's cap
CAP = 6.0


@dataclass(frozen=True)
class FoldResult:
    folded: tuple[tuple[str, str], ...]  # (linear layer, BatchNorm)


def fold_batchnorm(model) -> FoldResult:
    """Fold every BatchNorm that directly and solely follows a linear layer into its kernel (in place).

    The BatchNorm keeps the shift: y = conv'(x) + β', conv' = conv · γ/√(σ²+ε), β' = β − μ·γ/√(σ²+ε).
    """
    wiring = kg.Wiring.of(model)
    by_name = {layer.name: layer for layer in model.layers}
    folded = []
    for layer in model.layers:
        if kg.kind(layer) != "BatchNormalization" or not _foldable_bn(layer):
            continue
        sources = wiring.producers.get(layer.name, ())
        if len(sources) != 1 or wiring.sole_consumer(sources[0]) != layer.name:
            continue
        linear = by_name.get(sources[0])
        if linear is None or not kg.is_linear(linear) or _activation(linear) != "linear":
            continue
        if is_folded(layer):
            continue
        gamma, beta, mean, var = _bn_params(layer)
        factor = gamma / np.sqrt(var + layer.epsilon)
        kg.set_kernel(linear, kg.kernel(linear) * factor)
        shift = beta - mean * factor
        if linear.use_bias:
            weights = linear.get_weights()
            weights[1] = weights[1] * factor
            linear.set_weights(weights)
        _set_bn_shift(layer, shift)
        folded.append((linear.name, layer.name))
    return FoldResult(tuple(folded))


def _foldable_bn(layer) -> bool:
    axis = layer.axis if isinstance(layer.axis, list | tuple) else [layer.axis]
    rank = len(layer.input.shape)
    return layer.center and len(axis) == 1 and axis[0] in (-1, rank - 1) and layer.epsilon < 1.0


def _bn_params(layer) -> tuple[np.ndarray, ...]:
    weights = dict(zip([w.name.split("/")[-1].split(":")[0] for w in layer.weights], layer.get_weights(), strict=True))
    channels = len(weights["moving_mean"])
    gamma = weights.get("gamma", np.ones(channels, np.float32))
    return gamma, weights["beta"], weights["moving_mean"], weights["moving_variance"]


def _set_bn_shift(layer, shift: np.ndarray) -> None:
    """Make a BatchNorm the identity plus ``shift``: γ 1, μ 0, σ² 1 − ε."""
    values = []
    for weight, value in zip(layer.weights, layer.get_weights(), strict=True):
        key = weight.name.split("/")[-1].split(":")[0]
        new = {"gamma": np.ones_like(value), "beta": shift.astype(value.dtype), "moving_mean": np.zeros_like(value),
               "moving_variance": np.full_like(value, 1.0 - layer.epsilon)}[key]  # fmt: skip
        values.append(new)
    layer.set_weights(values)


def is_folded(layer) -> bool:
    """A BatchNorm already reduced to a shift (γ 1, μ 0, σ² 1 − ε)."""
    gamma, _, mean, var = _bn_params(layer)
    return bool(np.all(gamma == 1) and np.all(mean == 0) and np.allclose(var, 1.0 - layer.epsilon, rtol=0, atol=1e-7))


def bn_shift(layer) -> np.ndarray:
    return _bn_params(layer)[1]


def add_bn_shift(layer, delta: np.ndarray) -> None:
    """Add to a folded BatchNorm's shift (it acts as the preceding layer's bias)."""
    weights = layer.get_weights()
    names = [w.name.split("/")[-1].split(":")[0] for w in layer.weights]
    weights[names.index("beta")] = weights[names.index("beta")] + delta.astype(weights[0].dtype)
    layer.set_weights(weights)


def _activation(layer) -> str:
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", "linear") if activation is not None else "linear"


@dataclass(frozen=True)
class Pair:
    first: str
    second: str
    between: tuple[str, ...]  # BatchNorm shifts, ReLUs, zero padding


@dataclass(frozen=True)
class EqualizeResult:
    """What equalization did, for the report and the output's lineage."""

    folded: int
    pairs: tuple[Pair, ...]
    relu6_replaced: tuple[str, ...]
    skipped: tuple[str, ...]
    #: worst per-channel weight spread (max range / median range) over the pairs' first layers
    spread_before: float
    spread_after: float
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["pairs"] = [f"{p.first} → {p.second}" for p in self.pairs]
        return out


def check_relu6(policy: str) -> None:
    """One line naming the valid ReLU6 policies (the config, the pass and the function share it)."""
    if policy not in RELU6_POLICIES:
        raise UsageError(f"relu6 must be one of {', '.join(RELU6_POLICIES)}, not '{policy}'", "use relu6=bound")


def equalize(model, relu6: str = "replace", fold: bool = True, calibration=None) -> EqualizeResult:
    """Fold BatchNorms, then equalize every eligible pair of linear layers (in place).

    ``calibration`` (ModelInputs): needed by ``relu6="bound"``, which reads the activations at each cap."""
    check_relu6(relu6)
    if relu6 == "bound" and calibration is None:
        raise UsageError("relu6=bound needs calibration data (it bounds each scale by the activations at the cap)",
                         "pass calibration data, or use relu6=replace")  # fmt: skip
    folded = fold_batchnorm(model).folded if fold else ()
    by_name = {layer.name: layer for layer in model.layers}
    pairs, needs_relu6, skipped = find_pairs(model, relu6)
    replaced = []
    bounds: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if relu6 == "bound":
        bounds = _cap_bounds(model, pairs, calibration)
    else:
        for name in needs_relu6:
            _to_relu(by_name[name])
            replaced.append(name)
    # Each first layer's accumulated scale, kept inside its bounds (relu6=bound).
    total = {name: np.ones(kg.kernel(by_name[name]).shape[-1]) for name in bounds}
    # The spread CLE acts on: output-channel ranges of each pair's first layer.
    layers = list(dict.fromkeys(p.first for p in pairs))
    before = max((kg.channel_spread(kg.out_channel_absmax(by_name[n])) for n in layers), default=1.0)
    for _ in range(SWEEPS):
        moved = 0.0
        for pair in pairs:
            moved = max(moved, _equalize_pair(by_name[pair.first], by_name[pair.second], [by_name[n] for n in pair.between],
                                              bounds.get(pair.first), total.get(pair.first)))  # fmt: skip
        if moved < 1e-3:
            break
    after = max((kg.channel_spread(kg.out_channel_absmax(by_name[n])) for n in layers), default=1.0)
    notes: tuple[str, ...] = ()
    if bounds:
        held = sum(int(np.sum(lo == hi)) for lo, hi in bounds.values())
        notes = (f"ReLU6 kept: {held} of {sum(len(lo) for lo, _ in bounds.values())} channels before a ReLU6 reach "
                 "its cap on the calibration data and stay unscaled",)  # fmt: skip
    if replaced:
        notes = (f"{len(replaced)} ReLU6 between equalized layers became ReLU (as Nagel et al. do for MobileNetV2): "
                 "the float model differs where those activations exceeded 6",)  # fmt: skip
    log.info("equalized %d pairs; spread %.1f → %.1f", len(pairs), before, after)
    return EqualizeResult(len(folded), tuple(pairs), tuple(replaced), tuple(skipped), before, after, notes)


def find_pairs(model, relu6: str = "replace") -> tuple[list[Pair], list[str], list[str]]:
    """Linear → (BatchNorm shift | ReLU | zero padding)* → linear chains, each link the sole reader
    of the one before; returns the pairs, the ReLU6 layers to replace, and skipped chains."""
    wiring = kg.Wiring.of(model)
    by_name = {layer.name: layer for layer in model.layers}
    pairs, relu6_layers, skipped = [], [], []
    for layer in model.layers:
        if not kg.is_linear(layer):
            continue
        own = _activation(layer)
        if own not in ("linear", "relu"):
            skipped.append(f"{layer.name}: activation {own}")
            continue
        between, caps, current = [], [], layer.name
        while True:
            nxt = wiring.sole_consumer(current)
            target = by_name.get(nxt) if nxt else None
            if target is None:
                break
            verdict = _link(target)
            if verdict == "relu6":
                caps.append(target.name)
            elif verdict != "pass":
                break
            between.append(target.name)
            current = target.name
        if target is None or not kg.is_linear(target):
            continue
        if kg.kernel(target).shape[-1 if kg.kind(target) == "DepthwiseConv2D" else -2] != kg.kernel(layer).shape[-1]:
            continue
        if caps and relu6 == "skip":
            skipped.append(f"{layer.name} → {target.name}: ReLU6 between (relu6=skip)")
            continue
        relu6_layers += [c for c in caps if c not in relu6_layers]
        pairs.append(Pair(layer.name, target.name, tuple(between)))
    return pairs, relu6_layers, skipped


def _link(layer) -> str:
    """'pass' for a layer that commutes with a positive per-channel scale, 'relu6' for a capped
    ReLU, anything else stops the chain."""
    name = kg.kind(layer)
    if name == "BatchNormalization":
        return "pass" if _foldable_bn(layer) and is_folded(layer) else "stop"
    if name == "ZeroPadding2D":
        return "pass"
    if name == "ReLU":
        if float(getattr(layer, "threshold", 0.0) or 0.0) != 0.0:
            return "stop"
        cap = getattr(layer, "max_value", None)
        return "pass" if cap is None else ("relu6" if float(cap) > 0 else "stop")
    if name == "Activation":
        fn = _activation(layer)
        return "pass" if fn in ("relu", "linear") else ("relu6" if fn == "relu6" else "stop")
    return "stop"


def _to_relu(layer) -> None:
    if kg.kind(layer) == "ReLU":
        layer.max_value = None
    else:
        from edgecompress._env import import_tf_keras

        layer.activation = import_tf_keras().activations.relu


def _cap_bounds(model, pairs: list[Pair], calibration) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per pair behind a ReLU6: the (low, high) accumulated scale of each of its first layer's channels
    that keeps ReLU6(x/s) = ReLU6(x)/s on the calibration data: s = 1 where x reaches the cap,
    s ≥ max(x)/6 elsewhere (no upper bound: scaling down never reaches the cap)."""
    from edgecompress._env import import_tf_keras

    by_name = {layer.name: layer for layer in model.layers}
    caps = {p.first: [n for n in p.between if _link(by_name[n]) == "relu6"] for p in pairs}
    caps = {first: names for first, names in caps.items() if names}
    if not caps:
        return {}
    points = [(first, name) for first, names in caps.items() for name in names]
    probe = import_tf_keras().Model(model.inputs, [by_name[name].input for _, name in points])
    peaks = [np.full(by_name[name].input.shape[-1], -np.inf) for _, name in points]
    for x in calibration.batches(32):
        outputs = probe(x, training=False)
        outputs = outputs if isinstance(outputs, list | tuple) else [outputs]
        for i, out in enumerate(outputs):
            values = np.asarray(out)
            peaks[i] = np.maximum(peaks[i], values.reshape(-1, values.shape[-1]).max(axis=0))
    bounds: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for (first, _), peak in zip(points, peaks, strict=True):
        reaches = peak >= CAP
        lo = np.where(reaches, 1.0, np.maximum(peak, 0.0) / CAP)
        hi = np.where(reaches, 1.0, np.inf)
        if first in bounds:  # several caps in one chain: the tighter bound of each
            lo, hi = np.maximum(lo, bounds[first][0]), np.minimum(hi, bounds[first][1])
        bounds[first] = (lo, hi)
    return bounds


def _equalize_pair(first, second, between: list, bounds=None, total=None) -> float:
    r1 = kg.out_channel_absmax(first)
    r2 = kg.in_channel_absmax(second)
    ok = (r1 > TINY) & (r2 > TINY)
    scale = np.ones_like(r1)
    scale[ok] = np.sqrt(r1[ok] / r2[ok])
    if bounds is not None:
        wanted = np.clip(total * scale, *bounds)
        scale = wanted / total
        total[:] = wanted
    kg.set_kernel(first, kg.kernel(first) / scale)
    if first.use_bias:
        weights = first.get_weights()
        weights[1] = weights[1] / scale
        first.set_weights(weights)
    for layer in between:
        if kg.kind(layer) == "BatchNormalization":
            _set_bn_shift(layer, bn_shift(layer) / scale)
    kg.scale_in_channels(second, scale)
    return float(np.max(np.abs(np.log(scale))))
