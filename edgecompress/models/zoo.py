"""Zoo models by name: the table of entries, each with its task, defaults and preprocessing.

Builders live in one module per family (``mobilenet``, ``resnet``, ``inception``, ``binarynet``, ``unet``,
``blazepose``); this module only says how they are offered. Every entry also names a ``small``
configuration and the embedded data it trains on, which the contract tests and benchmarks use:
registering an entry is all it takes to be tested end to end.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgecompress.artifacts import InputSpec, Metadata
from edgecompress.calibration.preprocessing import Preprocessing
from edgecompress.errors import UsageError
from edgecompress.models import binarynet, blazepose, inception, mobilenet, resnet, unet
from edgecompress.models.blocks import fast_batchnorm  # noqa: F401 - re-exported for older imports
from edgecompress.registry import Registry

#: MobileNet-style inputs in [-1, 1]; used by every zoo model since all are trained from scratch.
SYMMETRIC = Preprocessing(scale=1 / 127.5, offset=-1.0)
TASK_DATA = {
    "classification": "digits",
    "segmentation": "synthetic-shapes",
    "keypoints": "synthetic-poses",
    "detection": "synthetic-poses",
}


@dataclass(frozen=True)
class ZooEntry:
    name: str
    family: str
    task: str
    build: Callable[..., Any]
    defaults: dict[str, Any] = field(default_factory=dict)
    #: a small, narrow configuration for tests and benchmarks (a subset of ``defaults``' keys)
    small: dict[str, Any] = field(default_factory=dict)
    preprocessing: Preprocessing = SYMMETRIC
    description: str = ""

    def __post_init__(self) -> None:
        unknown = set(self.small) - set(self.defaults)
        if unknown:
            raise ValueError(f"zoo entry {self.name}: small config has unknown keys {sorted(unknown)}")

    @property
    def embedded_data(self) -> str:
        """The built-in data set this entry trains on without a download."""
        return TASK_DATA[self.task]

    def params(self, **overrides: Any) -> dict[str, Any]:
        unknown = set(overrides) - set(self.defaults)
        given = {k for k, v in overrides.items() if v is not None}
        if unknown & given:
            raise UsageError(
                f"{self.name} has no parameter(s) {', '.join(sorted(unknown & given))}",
                f"it takes: {', '.join(sorted(self.defaults))}",
            )
        return {**self.defaults, **{k: v for k, v in overrides.items() if v is not None and k in self.defaults}}


ZOO: Registry[ZooEntry] = Registry("zoo model")

_CLASSIFIER = {"input_size": 224, "alpha": 1.0, "classes": 1000}
_ENTRIES = [
    ZooEntry("mobilenet_v1", "mobilenet", "classification", mobilenet.mobilenet_v1, _CLASSIFIER,
             {"input_size": 32, "alpha": 0.25, "classes": 10},
             description="MobileNet (Howard et al. 2017): depthwise-separable convolutions"),
    ZooEntry("mobilenet_v2", "mobilenet", "classification", mobilenet.mobilenet_v2, _CLASSIFIER,
             {"input_size": 32, "alpha": 0.35, "classes": 10},
             description="MobileNetV2 (Sandler et al. 2018): inverted residuals, linear bottlenecks"),
    ZooEntry("mobilenet_v3_small", "mobilenet", "classification", mobilenet.mobilenet_v3_small, _CLASSIFIER,
             {"input_size": 32, "alpha": 0.75, "classes": 10},
             description="MobileNetV3-Small (Howard et al. 2019): squeeze-excite, hard-swish"),
    ZooEntry("mobilenet_v3_large", "mobilenet", "classification", mobilenet.mobilenet_v3_large, _CLASSIFIER,
             {"input_size": 32, "alpha": 0.75, "classes": 10},
             description="MobileNetV3-Large (Howard et al. 2019): squeeze-excite, hard-swish"),
    ZooEntry("resnet18", "resnet", "classification", resnet.resnet18, _CLASSIFIER,
             {"input_size": 32, "alpha": 0.25, "classes": 10},
             description="ResNet-18, v1 basic blocks (He et al. 2016): residual adds after BN"),
    ZooEntry("resnet18_v2", "resnet", "classification", resnet.resnet18_v2, _CLASSIFIER,
             {"input_size": 32, "alpha": 0.25, "classes": 10},
             description="ResNet-18, v2 pre-activation basic blocks (He et al. 2016, identity mappings)"),
    ZooEntry("resnet50", "resnet", "classification", resnet.resnet50, _CLASSIFIER,
             {"input_size": 32, "alpha": 0.125, "classes": 10},
             description="ResNet-50, v1 bottleneck blocks (Keras applications)"),
    ZooEntry("resnet50_v2", "resnet", "classification", resnet.resnet50_v2, _CLASSIFIER,
             {"input_size": 32, "alpha": 0.125, "classes": 10},
             description="ResNet-50, v2 pre-activation bottlenecks (Keras applications)"),
    ZooEntry("inception_v3", "inception", "classification", inception.inception_v3,
             {"input_size": 299, "alpha": 1.0, "classes": 1000},
             {"input_size": 75, "alpha": 0.125, "classes": 10},
             description="Inception v3 (Szegedy et al. 2016): factorised, concatenated branches"),
    ZooEntry("binarynet", "binarynet", "classification", binarynet.binarynet,
             {"input_size": 32, "alpha": 1.0, "classes": 10}, {"input_size": 32, "alpha": 0.5, "classes": 10},
             description="BinaryNet-style VGG (Courbariaux et al. 2016): conv-BN-ReLU stacks, shaped for binarization"),
    ZooEntry("unet", "unet", "segmentation", unet.unet,
             {"input_size": 128, "alpha": 1.0, "classes": 4, "depth": 4, "base_filters": 32, "decoder": "transpose"},
             {"input_size": 32, "alpha": 0.25, "depth": 3, "decoder": "transpose"},
             description="U-Net (Ronneberger et al. 2015): skip concatenations, Conv2DTranspose decoder"),
    ZooEntry("unet_upsample", "unet", "segmentation", unet.unet,
             {"input_size": 128, "alpha": 1.0, "classes": 4, "depth": 4, "base_filters": 32, "decoder": "upsample"},
             {"input_size": 32, "alpha": 0.25, "depth": 3},
             description="U-Net with an UpSampling2D + conv decoder"),
    ZooEntry("blazepose_detector", "blazepose", "detection", blazepose.blazepose_detector,
             {"input_size": 224, "alpha": 1.0},
             {"input_size": 64, "alpha": 0.25},
             description="BlazePose-style person detector (Bazarevsky et al. 2020): regresses one box"),
    ZooEntry("blazepose_landmark", "blazepose", "keypoints", blazepose.blazepose_landmark,
             {"input_size": 256, "alpha": 1.0, "keypoints": 33},
             {"input_size": 64, "alpha": 0.25},
             description="BlazePose-style landmarks: heatmap head + 33 × (x, y, z, visibility) regression"),
]  # fmt: skip
for _entry in _ENTRIES:
    ZOO.add(_entry.name, _entry, _entry.name.replace("_", ""))


def build(name: str, **params: Any):
    """Build a zoo model (random weights) and the metadata its files should carry."""
    entry = ZOO.get(name)
    values = entry.params(**params)
    model = entry.build(**values)
    keypoints = values.get("keypoints")
    labels = blazepose.BLAZEPOSE_KEYPOINTS if keypoints == len(blazepose.BLAZEPOSE_KEYPOINTS) else None
    metadata = Metadata(
        task=entry.task,
        inputs=(InputSpec(shape=tuple(int(d) for d in model.inputs[0].shape[1:])),),
        preprocessing=entry.preprocessing,
        labels=labels,
        extra={"zoo": entry.name, "zoo_params": values, "output_names": list(model.output_names)},
    )
    return model, metadata


def profile(name: str, **params: Any) -> tuple[int, int]:
    """(parameters, MACs) of a zoo model at the given (default: its default) size."""
    from edgecompress.models.blocks import count_macs

    model, _ = build(name, **params)
    return model.count_params(), count_macs(model)
