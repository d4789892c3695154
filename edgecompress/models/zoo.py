"""Zoo models by name. Each entry knows its task and the preprocessing its inputs expect."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgecompress._env import import_tf_keras
from edgecompress.artifacts import InputSpec, Metadata
from edgecompress.calibration.preprocessing import Preprocessing
from edgecompress.registry import Registry

#: MobileNet-style inputs in [-1, 1].
SYMMETRIC = Preprocessing(scale=1 / 127.5, offset=-1.0)


@dataclass(frozen=True)
class ZooEntry:
    name: str
    family: str
    task: str
    build: Callable[..., Any]
    defaults: dict[str, Any] = field(default_factory=dict)
    preprocessing: Preprocessing = SYMMETRIC
    description: str = ""

    def params(self, **overrides: Any) -> dict[str, Any]:
        unknown = set(overrides) - set(self.defaults)
        if unknown:
            from edgecompress.errors import UsageError

            raise UsageError(
                f"{self.name} has no parameter(s) {', '.join(sorted(unknown))}",
                f"it takes: {', '.join(sorted(self.defaults))}",
            )
        return {**self.defaults, **{k: v for k, v in overrides.items() if v is not None}}


ZOO: Registry[ZooEntry] = Registry("zoo model")


def fast_batchnorm(model, momentum: float = 0.9):
    """Keras applications use BatchNorm momentum 0.999, tuned for ImageNet-length training; on a
    few hundred steps the moving statistics never converge and inference accuracy stays at chance."""
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            layer.momentum = momentum
    return model


def _mobilenet_v2(input_size: int, alpha: float, classes: int, channels: int = 3):
    tf_keras = import_tf_keras()
    model = tf_keras.applications.MobileNetV2(
        input_shape=(input_size, input_size, channels), alpha=alpha, weights=None, classes=classes
    )
    return fast_batchnorm(model)


ZOO.add(
    "mobilenet_v2",
    ZooEntry(
        "mobilenet_v2",
        "mobilenet",
        "classification",
        _mobilenet_v2,
        {"input_size": 224, "alpha": 1.0, "classes": 1000},
        description="MobileNetV2 (Sandler et al. 2018), inverted residuals with linear bottlenecks",
    ),
    "mobilenetv2",
)


def build(name: str, **params: Any):
    """Build a zoo model (random weights) and the metadata its files should carry."""
    entry = ZOO.get(name)
    values = entry.params(**params)
    model = entry.build(**values)
    metadata = Metadata(
        task=entry.task,
        inputs=(InputSpec(shape=tuple(int(d) for d in model.inputs[0].shape[1:])),),
        preprocessing=entry.preprocessing,
        extra={"zoo": entry.name, "zoo_params": values},
    )
    return model, metadata
