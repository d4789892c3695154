"""Empirical bias correction: undo the mean shift that int8 weight rounding puts on each layer.

Reference: Nagel et al., "Data-Free Quantization Through Weight Equalization and Bias Correction"
(ICCV 2019), section 4.2 — its empirical variant, with calibration data instead of BatchNorm
statistics. Rounding a kernel W to W + ε shifts the layer's expected output by ε·E[x]; with
per-tensor scales and wide channel ranges that shift is systematic, and it accumulates along the
depth. We simulate the converter's weight quantization (symmetric int8, per channel or per tensor,
on the BatchNorm-folded kernels it will see) and add E[y_float] − E[y_int8-weights] per channel to each
layer's bias (its own, or the shift of the BatchNorm that follows it), layer by layer in model order
so that each measures what is left after the corrections before it.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgecompress.calibration.data import ModelInputs
from edgecompress.compress import kerasgraph as kg
from edgecompress.compress.equalize import add_bn_shift, fold_batchnorm, is_folded

log = logging.getLogger(__name__)

BATCH = 32


@dataclass(frozen=True)
class BiasCorrectionResult:
    corrected: tuple[str, ...]
    skipped: tuple[str, ...]
    samples: int
    per_channel: bool
    #: mean |correction| relative to the mean |bias| it was added to, over the corrected layers
    relative_shift: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def quantize_kernel(kernel: np.ndarray, per_channel: bool, bits: int = 8) -> np.ndarray:
    """Symmetric int8 rounding as TFLite and ONNX Runtime do it (scale = max|W| / 127), dequantized."""
    levels = 2 ** (bits - 1) - 1
    flat = kernel.reshape(-1, kernel.shape[-1])
    absmax = np.abs(flat).max(axis=0) if per_channel else np.full(kernel.shape[-1], np.abs(flat).max())
    scale = np.where(absmax > 0, absmax / levels, 1.0)
    return (np.clip(np.round(kernel / scale), -levels, levels) * scale).astype(kernel.dtype)


def _bias_holder(model, layer, wiring: kg.Wiring):
    """Where a correction of ``layer``'s output can go: its bias, or the folded BatchNorm after it."""
    if getattr(layer, "use_bias", False):
        return layer
    after = wiring.sole_consumer(layer.name)
    if after is not None:
        bn = model.get_layer(after)
        if kg.kind(bn) == "BatchNormalization" and is_folded(bn):
            return bn
    return None


def _add(holder, delta: np.ndarray) -> None:
    if kg.kind(holder) == "BatchNormalization":
        add_bn_shift(holder, delta)
    else:
        weights = holder.get_weights()
        weights[1] = weights[1] + delta.astype(weights[1].dtype)
        holder.set_weights(weights)


def _channel_means(probe, calibration: ModelInputs) -> list[np.ndarray]:
    sums, count = None, 0
    for x in calibration.batches(BATCH):
        outputs = probe(x, training=False)
        outputs = outputs if isinstance(outputs, list | tuple) else [outputs]
        values = [np.asarray(o, dtype=np.float64) for o in outputs]
        batch = [v.reshape(-1, v.shape[-1]).sum(axis=0) for v in values]
        rows = [v.reshape(-1, v.shape[-1]).shape[0] for v in values]
        sums = batch if sums is None else [s + b for s, b in zip(sums, batch, strict=True)]
        count = rows if isinstance(count, int) else [c + r for c, r in zip(count, rows, strict=True)]
    return [s / c for s, c in zip(sums, count, strict=True)]


def bias_correct(model, calibration: ModelInputs, per_channel: bool = True) -> BiasCorrectionResult:
    """Correct the biases of ``model`` in place (BatchNorms folded first)."""
    from edgecompress._env import import_tf_keras

    tf_keras = import_tf_keras()
    fold_batchnorm(model)
    wiring = kg.Wiring.of(model)
    targets, skipped = [], []
    for layer in model.layers:
        if not kg.is_linear(layer):
            continue
        holder = _bias_holder(model, layer, wiring)
        if holder is None:
            skipped.append(f"{layer.name}: no bias and no BatchNorm after it to hold a correction")
            continue
        targets.append((layer, holder))
    if not targets:
        return BiasCorrectionResult((), tuple(skipped), len(calibration), per_channel, 0.0)
    # Means are taken where the bias is added, before any activation fused into the layer.
    twins: dict[str, Any] = {}
    float_probe = tf_keras.Model(model.inputs, [_pre_activation(h, twins) for _, h in targets])
    reference = _channel_means(float_probe, calibration)

    quantized = tf_keras.models.clone_model(model)
    quantized.set_weights(model.get_weights())
    q_targets = [(quantized.get_layer(layer.name), quantized.get_layer(holder.name)) for layer, holder in targets]
    for layer, _ in q_targets:
        kg.set_kernel(layer, quantize_kernel(kg.kernel(layer), per_channel))
    q_twins: dict[str, Any] = {}
    q_points = [_pre_activation(h, q_twins) for _, h in q_targets]
    for name, twin in q_twins.items():
        twin.set_weights(quantized.get_layer(name).get_weights())
    # In model order, each layer measured with every layer before it already corrected: corrected all
    # at once, each layer would also undo the shift it inherits, which the layers before it remove too.
    total = []
    for (_, holder), point, r in zip(q_targets, q_points, reference, strict=True):
        (m,) = _channel_means(tf_keras.Model(quantized.inputs, [point]), calibration)
        _add(holder, r - m)
        if holder.name in q_twins:
            q_twins[holder.name].set_weights(holder.get_weights())
        total.append(r - m)
    for (_, holder), delta in zip(targets, total, strict=True):
        _add(holder, delta)
    biases = [np.abs(_bias_of(h)).mean() for _, h in targets]
    shifts = [np.abs(d).mean() for d in total]
    relative = float(np.mean([s / b if b > 0 else 0.0 for s, b in zip(shifts, biases, strict=True)]))
    log.info("bias correction of %d layers: mean shift %.3g of the biases", len(targets), relative)
    return BiasCorrectionResult(tuple(h.name for _, h in targets), tuple(skipped), len(calibration), per_channel, relative)


def _bias_of(holder) -> np.ndarray:
    if kg.kind(holder) == "BatchNormalization":
        from edgecompress.compress.equalize import bn_shift

        return bn_shift(holder)
    return holder.get_weights()[1]


def _pre_activation(holder, twins: dict[str, Any]):
    """The holder's output before its own activation (Dense(activation=softmax) adds the bias first):
    a twin of the layer without the activation, registered in ``twins`` to be kept in step."""
    activation = getattr(holder, "activation", None)
    if activation is None or getattr(activation, "__name__", "linear") == "linear":
        return holder.output
    config = {**holder.get_config(), "activation": "linear", "name": f"{holder.name}__preact"}
    twin = type(holder).from_config(config)
    output = twin(holder.input)
    twin.set_weights(holder.get_weights())
    twins[holder.name] = twin
    return output
