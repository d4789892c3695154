"""Who feeds whom in a Keras model, and the weights of its linear layers in one layout.

Weight fixes (equalization, bias correction) work on chains like conv → BatchNorm → ReLU → conv;
they need each layer's consumers and a uniform view of kernels: output channels last, input
channels second to last (Conv2D and Dense already are; a depthwise kernel's channel is both).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LINEAR_KINDS = ("Conv2D", "DepthwiseConv2D", "Dense")


@dataclass(frozen=True)
class Wiring:
    consumers: dict[str, tuple[str, ...]]
    producers: dict[str, tuple[str, ...]]
    outputs: frozenset[str]

    @classmethod
    def of(cls, model) -> Wiring:
        """From the model's config: functional ``inbound_nodes``, or a Sequential's order."""
        config = model.get_config()
        layers = config.get("layers", [])
        producers: dict[str, tuple[str, ...]] = {}
        if type(model).__name__ == "Sequential" or not layers or "inbound_nodes" not in layers[0]:
            names = [layer.name for layer in model.layers]
            producers = {n: ((names[i - 1],) if i else ()) for i, n in enumerate(names)}
            outputs = frozenset(names[-1:])
        else:
            for entry in layers:
                producers[entry["config"]["name"]] = tuple(dict.fromkeys(_names_in(entry.get("inbound_nodes", []))))
            outputs = frozenset(_names_in(config.get("output_layers", [])))
        consumers: dict[str, list[str]] = {name: [] for name in producers}
        for name, sources in producers.items():
            for source in sources:
                consumers.setdefault(source, []).append(name)
        return cls({k: tuple(v) for k, v in consumers.items()}, producers, outputs)

    def sole_consumer(self, name: str) -> str | None:
        """The one layer reading ``name``'s output, if exactly one does and it is not a model output."""
        consumers = self.consumers.get(name, ())
        return consumers[0] if len(consumers) == 1 and name not in self.outputs else None


def _names_in(value) -> list[str]:
    """Layer names in a config's node references ([name, node, tensor, ...] lists, at any depth)."""
    found: list[str] = []
    if isinstance(value, list | tuple):
        if len(value) >= 3 and isinstance(value[0], str) and isinstance(value[1], int) and isinstance(value[2], int):
            found.append(value[0])
            for rest in value[3:]:
                found += _names_in(rest)
        else:
            for item in value:
                found += _names_in(item)
    elif isinstance(value, dict):
        for item in value.values():
            found += _names_in(item)
    return found


def kind(layer) -> str:
    return type(layer).__name__


def is_linear(layer) -> bool:
    """A layer whose weights we can rescale per channel (plain convs, depthwise ×1, dense)."""
    name = kind(layer)
    if name not in LINEAR_KINDS:
        return False
    if name == "Conv2D" and getattr(layer, "groups", 1) != 1:
        return False
    if name == "DepthwiseConv2D" and getattr(layer, "depth_multiplier", 1) != 1:
        return False
    return getattr(layer, "data_format", "channels_last") == "channels_last"


def kernel(layer) -> np.ndarray:
    """The kernel with output channels on the last axis (a depthwise kernel squeezed to (kh, kw, C))."""
    value = layer.get_weights()[0]
    return value[..., 0] if kind(layer) == "DepthwiseConv2D" else value


def set_kernel(layer, value: np.ndarray) -> None:
    weights = layer.get_weights()
    weights[0] = value[..., None] if kind(layer) == "DepthwiseConv2D" else value
    layer.set_weights(weights)


def out_channel_absmax(layer) -> np.ndarray:
    k = kernel(layer)
    return np.abs(k.reshape(-1, k.shape[-1])).max(axis=0)


def in_channel_absmax(layer) -> np.ndarray:
    """Per input channel: for a depthwise kernel that is the same channel as its output."""
    k = kernel(layer)
    if kind(layer) == "DepthwiseConv2D":
        return np.abs(k.reshape(-1, k.shape[-1])).max(axis=0)
    return np.abs(np.moveaxis(k, -2, 0).reshape(k.shape[-2], -1)).max(axis=1)


def scale_in_channels(layer, factors: np.ndarray) -> None:
    k = kernel(layer)
    shape = [1] * k.ndim
    shape[-1 if kind(layer) == "DepthwiseConv2D" else -2] = len(factors)
    set_kernel(layer, (k * factors.reshape(shape)).astype(k.dtype))


def channel_spread(values: np.ndarray) -> float:
    """Largest per-channel range over the median one: 1 is even, 100 means a per-tensor scale
    spends most of its 8 bits on one channel."""
    values = np.asarray(values, dtype=np.float64)
    median = float(np.median(values))
    return float(values.max() / median) if median > 0 else float("inf")
