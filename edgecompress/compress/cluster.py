"""`compress cluster`: weight clustering (weight sharing) with TFMOT, fine-tuned and stripped.

Each clustered kernel ends with at most K distinct values. The float file keeps 32-bit values, so
the gain shows in its gzip size (a K-valued tensor compresses to about log2(K) bits per weight),
and in formats that store indices into a codebook.

Reference: Han et al., "Deep Compression: Compressing Deep Neural Networks with Pruning, Trained
Quantization and Huffman Coding" (ICLR 2016).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgecompress._env import import_tf_keras
from edgecompress.compress import finetune
from edgecompress.compress.finetune import FineTune
from edgecompress.compress.passes import PASSES, PassContext
from edgecompress.errors import UnsupportedError, UsageError, require

log = logging.getLogger(__name__)

#: layer type → the weight TFMOT clusters
CLUSTERABLE = {"Conv2D": "kernel", "Conv2DTranspose": "kernel", "Dense": "kernel", "Conv1D": "kernel"}
LEFT_AS_IS = {
    "DepthwiseConv2D": "TFMOT does not cluster depthwise kernels (few weights, each filters a whole channel)",
    "BatchNormalization": "",
}


class Init(str, enum.Enum):
    KMEANS_PLUS_PLUS = "kmeans++"
    LINEAR = "linear"
    DENSITY = "density"
    RANDOM = "random"

    def tfmot(self, tfmot):
        init = tfmot.clustering.keras.CentroidInitialization
        return {
            "kmeans++": init.KMEANS_PLUS_PLUS, "linear": init.LINEAR, "density": init.DENSITY_BASED,
            "random": init.RANDOM,
        }[self.value]  # fmt: skip


@dataclass(frozen=True)
class ClusterConfig:
    clusters: int = 16
    init: Init = Init.KMEANS_PLUS_PLUS
    finetune: FineTune = field(default_factory=FineTune)

    def __post_init__(self) -> None:
        if not isinstance(self.init, Init):
            try:
                object.__setattr__(self, "init", Init(str(self.init).lower().replace("kmeans_plus_plus", "kmeans++")))
            except ValueError:
                raise UsageError(f"unknown --init '{self.init}'", f"choose one of: {', '.join(i.value for i in Init)}") from None
        if isinstance(self.finetune, dict):
            object.__setattr__(self, "finetune", FineTune.from_dict(self.finetune))
        if not 2 <= int(self.clusters) <= 256:
            raise UsageError(f"--clusters must be between 2 and 256, not {self.clusters}", "pass e.g. --clusters 16")

    def to_dict(self) -> dict[str, Any]:
        return {"clusters": int(self.clusters), "init": self.init.value, **self.finetune.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClusterConfig:
        return finetune.config_from_params(cls, data)


def unique_values(model, names: list[str]) -> dict[str, int]:
    """Distinct values in each named layer's clustered kernel."""
    counts = {}
    for name in names:
        layer = model.get_layer(name)
        kernel = next(w for w in layer.weights if w.name.split("/")[-1].startswith(CLUSTERABLE[type(layer).__name__]))
        counts[name] = int(np.unique(kernel.numpy()).size)
    return counts


def wrap_clusterable(model, config: ClusterConfig) -> tuple[Any, list[str], dict[str, str]]:
    tf_keras = import_tf_keras()
    tfmot = require("tensorflow_model_optimization", "tfmot", "weight clustering")
    wrapped: list[str] = []
    skipped: dict[str, str] = {}

    def clone(layer):
        kind = type(layer).__name__
        if kind not in CLUSTERABLE:
            why = LEFT_AS_IS.get(kind, "no clustering rule for this layer type")
            if layer.weights and why:
                skipped[layer.name] = f"{kind}: {why}"
            return layer
        size = int(np.prod(layer.get_weights()[0].shape))
        if size <= config.clusters:
            skipped[layer.name] = f"{kind}: {size} weights, not more than {config.clusters} clusters"
            return layer
        wrapped.append(layer.name)
        return tfmot.clustering.keras.cluster_weights(
            layer, number_of_clusters=int(config.clusters), cluster_centroids_init=config.init.tfmot(tfmot)
        )

    return tf_keras.models.clone_model(model, clone_function=clone), wrapped, skipped


@dataclass(frozen=True, kw_only=True)
class ClusterReport(finetune.FineTuneReport):
    #: clustered layer → distinct values left in its kernel
    layers: Mapping[str, int]
    max_unique: int
    left_unclustered: Mapping[str, str]


@PASSES.register("cluster")
class ClusterPass(finetune.FineTuningPass):
    name = "cluster"
    purpose = "clustering"
    report_type = ClusterReport

    def __init__(self, config: ClusterConfig | None = None, measure: bool = True, **kwargs: Any) -> None:
        self.config = config or finetune.config_from_params(ClusterConfig, kwargs)
        self.measure = measure

    def params(self) -> dict[str, Any]:
        return self.config.to_dict()

    def transform(self, model, task: str, train, context: PassContext):
        tfmot = require("tensorflow_model_optimization", "tfmot", "weight clustering")
        wrapped_model, wrapped, skipped = wrap_clusterable(model, self.config)
        if not wrapped:
            raise UnsupportedError(
                "no layer of this model can be clustered: " + "; ".join(f"{k} ({v})" for k, v in list(skipped.items())[:5]),
                "cluster models with Conv2D/Dense layers, or lower --clusters",
            )
        ft = self.config.finetune
        if ft.epochs:
            from edgecompress.models.train import fine_tune

            fine_tune(wrapped_model, task, train, ft.epochs, ft.batch_size, ft.lr, context.progress, ft.seed)
        clustered = tfmot.clustering.keras.strip_clustering(wrapped_model)
        counts = unique_values(clustered, wrapped)
        return clustered, {"layers": counts, "max_unique": max(counts.values()), "left_unclustered": skipped}
