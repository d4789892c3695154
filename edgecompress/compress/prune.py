"""`compress prune`: magnitude pruning (unstructured or 2:4) with TFMOT, or channel pruning.

Unstructured and 2:4 pruning wrap the prunable layers (TFMOT ``prune_low_magnitude``), fine-tune
with the pruning schedule, and strip the wrappers. The zeros make the model smaller only once
compressed (gzip) or sparse-encoded by the TFLite converter, so the report shows both, and the
measured LiteRT latency, honestly: XNNPACK's sparse kernels are not what the stock x86 interpreter
runs. Channel pruning (``compress/channels.py``) removes whole filters and rebuilds a smaller dense
model, which is faster everywhere.

References: Zhu & Gupta, "To prune, or not to prune" (2017) for the polynomial schedule;
Mishra et al., "Accelerating Sparse Deep Neural Networks" (2021) for 2:4 sparsity;
Li et al., "Pruning Filters for Efficient ConvNets" (ICLR 2017) for channel pruning.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgecompress._env import import_tf_keras
from edgecompress.compress import finetune
from edgecompress.compress.channels import Criterion, prune_channels
from edgecompress.compress.finetune import FineTune
from edgecompress.compress.passes import PASSES, PassContext
from edgecompress.errors import UnsupportedError, UsageError, require

log = logging.getLogger(__name__)

#: layer type → the weight TFMOT prunes (the kernel; biases and BatchNorm are left dense)
PRUNABLE = {"Conv2D": "kernel", "Conv2DTranspose": "kernel", "Dense": "kernel"}
#: weighted layers left dense on purpose, and why
LEFT_DENSE = {
    "DepthwiseConv2D": "TFMOT does not prune depthwise kernels: few weights, and each one filters a whole channel",
    "BatchNormalization": "",
}
#: 2:4 groups 4 consecutive input channels of one filter (TFLite weight layout); only these qualify
M_BY_N_LAYERS = ("Conv2D", "Dense")
#: the polynomial schedule reaches its target after this fraction of the steps, then holds it
POLYNOMIAL_END = 0.7


class Structure(str, enum.Enum):
    UNSTRUCTURED = "unstructured"
    TWO_FOUR = "2:4"
    CHANNELS = "channels"


class Schedule(str, enum.Enum):
    CONSTANT = "constant"
    POLYNOMIAL = "polynomial"


def _enum(kind: type[enum.Enum], value: Any, name: str):
    if isinstance(value, kind):
        return value
    try:
        return kind(str(value).lower())
    except ValueError:
        valid = ", ".join(m.value for m in kind)
        raise UsageError(f"unknown {name} '{value}'", f"choose one of: {valid}") from None


@dataclass(frozen=True)
class PruneConfig:
    sparsity: float = 0.5
    structure: Structure = Structure.UNSTRUCTURED
    schedule: Schedule = Schedule.CONSTANT
    #: channel pruning: how filters are ranked (L1 norm of the kernel, or BatchNorm |gamma|)
    criterion: Criterion = Criterion.L1
    finetune: FineTune = field(default_factory=FineTune)
    #: channel pruning: fine-tune with the unpruned source as teacher (Hinton KD, T 4, alpha 0.5)
    distill: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "structure", _enum(Structure, self.structure, "structure"))
        object.__setattr__(self, "schedule", _enum(Schedule, self.schedule, "schedule"))
        object.__setattr__(self, "criterion", _enum(Criterion, self.criterion, "criterion"))
        if isinstance(self.finetune, dict):
            object.__setattr__(self, "finetune", FineTune.from_dict(self.finetune))
        if not 0.0 <= float(self.sparsity) < 1.0:
            raise UsageError(f"--sparsity must be in [0, 1), not {self.sparsity}", "pass e.g. --sparsity 0.5")
        if self.structure is Structure.TWO_FOUR and not math.isclose(self.sparsity, 0.5):
            raise UsageError("2:4 pruning always removes 2 of every 4 weights (50 %)", "drop --sparsity or pass 0.5")
        if self.distill and (self.structure is not Structure.CHANNELS or self.finetune.epochs < 1):
            raise UsageError(
                "--distill fine-tunes a channel-pruned model with its source as teacher",
                "use it with --structure channels and --epochs 1 or more",
            )
        if self.structure is not Structure.CHANNELS and self.finetune.epochs < 1:
            raise UsageError(
                f"{self.structure.value} pruning sets its masks during training, so it needs --epochs 1 or more",
                "pass --epochs N (N ≥ 1)",
            )

    def to_dict(self) -> dict[str, Any]:
        data = {
            "sparsity": self.sparsity,
            "structure": self.structure.value,
            "schedule": self.schedule.value,
            **self.finetune.to_dict(),
        }
        if self.structure is Structure.CHANNELS:
            data["criterion"] = self.criterion.value
            data["distill"] = self.distill
            del data["schedule"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PruneConfig:
        return finetune.config_from_params(cls, data)


@dataclass(frozen=True)
class LayerSparsity:
    name: str
    kind: str
    weights: int
    zeros: int

    @property
    def sparsity(self) -> float:
        return self.zeros / self.weights if self.weights else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.name, "type": self.kind, "weights": self.weights, "zeros": self.zeros,
                "sparsity": self.sparsity}  # fmt: skip


def measure_sparsity(model, layer_names: list[str]) -> list[LayerSparsity]:
    """Zeros in the pruned weight of each named layer, read from the stripped model."""
    rows = []
    for name in layer_names:
        layer = model.get_layer(name)
        kind = type(layer).__name__
        weight = next(w for w in layer.weights if w.name.split("/")[-1].startswith(PRUNABLE[kind]))
        values = weight.numpy()
        rows.append(LayerSparsity(name, kind, int(values.size), int(np.count_nonzero(values == 0))))
    return rows


def is_two_four(kernel: np.ndarray) -> bool:
    """Every 4 consecutive input-channel weights of a filter hold at least 2 zeros (TFLite layout)."""
    rows = np.moveaxis(kernel, -1, 0).reshape(-1, kernel.shape[-2]) if kernel.ndim == 4 else kernel.T
    usable = rows.shape[1] // 4 * 4
    blocks = rows[:, :usable].reshape(rows.shape[0], -1, 4)
    return bool(np.all(np.count_nonzero(blocks, axis=-1) <= 2))


def _schedule(tfmot, config: PruneConfig, steps_per_epoch: int):
    sparsity = tfmot.sparsity.keras
    total = max(1, config.finetune.epochs * steps_per_epoch)
    # Masks are recomputed every few steps; several updates per epoch even on small data sets.
    frequency = max(1, min(100, steps_per_epoch // 4))
    if config.schedule is Schedule.POLYNOMIAL and config.structure is Structure.UNSTRUCTURED:
        end = max(frequency, int(total * POLYNOMIAL_END) // frequency * frequency)
        return sparsity.PolynomialDecay(0.0, config.sparsity, begin_step=0, end_step=end, frequency=frequency)
    return sparsity.ConstantSparsity(config.sparsity, begin_step=0, frequency=frequency)


def wrap_prunable(model, config: PruneConfig, schedule) -> tuple[Any, list[str], dict[str, str]]:
    """Wrap the layers TFMOT can prune (clone_model with a clone function); leave the rest as they are.

    Returns the wrapped model, the wrapped layers' names and the weighted layers left dense, with why.
    """
    tf_keras = import_tf_keras()
    tfmot = require("tensorflow_model_optimization", "tfmot", "pruning")
    wrapped: list[str] = []
    skipped: dict[str, str] = {}
    m_by_n = (2, 4) if config.structure is Structure.TWO_FOUR else None

    def clone(layer):
        kind = type(layer).__name__
        if kind not in PRUNABLE:
            why = LEFT_DENSE.get(kind, "no pruning rule for this layer type")
            if layer.weights and why:
                skipped[layer.name] = f"{kind}: {why}"
            return layer
        if m_by_n:
            if kind not in M_BY_N_LAYERS:
                skipped[layer.name] = f"{kind}: 2:4 groups input channels of one filter; this layer has none to group"
                return layer
            if int(layer.get_weights()[0].shape[-2]) % 4:
                skipped[layer.name] = f"{kind}: {layer.get_weights()[0].shape[-2]} input channels, not a multiple of 4"
                return layer
        wrapped.append(layer.name)
        return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule, sparsity_m_by_n=m_by_n)

    pruned = tf_keras.models.clone_model(model, clone_function=clone)
    return pruned, wrapped, skipped


@dataclass(frozen=True)
class MagnitudeResult:
    """Unstructured or 2:4 pruning: the zeros actually left in each pruned kernel."""

    layers: tuple[LayerSparsity, ...]
    #: weighted layers left dense, and why
    left_dense: Mapping[str, str]
    prunable_weights: int
    measured_sparsity: float
    #: 2:4 only: every group of 4 input-channel weights holds at least 2 zeros
    two_four_exact: bool | None = None


@dataclass(frozen=True)
class ChannelsResult:
    """Channel pruning: the smaller model's parameters, and the surgery's groups."""

    params_before: int
    params_after: int
    groups_pruned: int
    groups_kept_whole: int
    prunable_channels_before: int
    prunable_channels_after: int
    kept_whole_because: Mapping[str, int]
    layers_without_channel_rule: Mapping[str, str]
    #: held-out scores straight after the surgery, before fine-tuning (None without held-out data)
    before_finetune: Mapping[str, float] | None = None


@dataclass(frozen=True, kw_only=True)
class PruneReport(finetune.FineTuneReport):
    magnitude: MagnitudeResult | None = None
    channels: ChannelsResult | None = None


@PASSES.register("prune")
class PrunePass(finetune.FineTuningPass):
    name = "prune"
    purpose = "pruning"
    report_type = PruneReport

    def __init__(self, config: PruneConfig | None = None, measure: bool = True, **kwargs: Any) -> None:
        self.config = config or finetune.config_from_params(PruneConfig, kwargs)
        self.measure = measure

    def params(self) -> dict[str, Any]:
        return self.config.to_dict()

    def transform(self, model, task: str, train, context: PassContext):
        if self.config.structure is Structure.CHANNELS:
            return self._channels(model, task, train, context)
        return self._magnitude(model, task, train, context)

    def tflite_measurements(self, source_model, output_model) -> dict[str, Any]:
        return tflite_comparison(source_model, output_model, self.config.structure)

    def _magnitude(self, model, task: str, train, context: PassContext):
        tfmot = require("tensorflow_model_optimization", "tfmot", "pruning")
        config = self.config
        steps = math.ceil(len(train) / config.finetune.batch_size)
        schedule = _schedule(tfmot, config, steps)
        wrapped_model, wrapped, skipped = wrap_prunable(model, config, schedule)
        if not wrapped:
            raise UnsupportedError(
                f"no layer of this model can be pruned {config.structure.value}: "
                + "; ".join(f"{k} ({v})" for k, v in list(skipped.items())[:5]),
                "prune Conv2D/Dense models, or try --structure unstructured",
            )
        for name, why in skipped.items():
            log.info("left dense: %s (%s)", name, why)
        ft = config.finetune
        from edgecompress.models.train import fine_tune

        fine_tune(
            wrapped_model, task, train, ft.epochs, ft.batch_size, ft.lr, context.progress, ft.seed,
            callbacks=(tfmot.sparsity.keras.UpdatePruningStep(),),
        )  # fmt: skip
        stripped = tfmot.sparsity.keras.strip_pruning(wrapped_model)
        rows = measure_sparsity(stripped, wrapped)
        total = sum(r.weights for r in rows)
        two_four = None
        if config.structure is Structure.TWO_FOUR:
            two_four = all(is_two_four(stripped.get_layer(n).get_weights()[0]) for n in wrapped)
        result = MagnitudeResult(tuple(rows), skipped, total, sum(r.zeros for r in rows) / total, two_four)
        return stripped, {"magnitude": result}

    def _channels(self, model, task: str, train, context: PassContext):
        config = self.config
        surgery = prune_channels(model, config.sparsity, config.criterion)
        pruned = surgery.model
        before = finetune.score(pruned, context.validation, task) if context.validation is not None else None
        ft = config.finetune
        if ft.epochs and config.distill:
            distill_from(model, pruned, task, train, ft, context.progress)
        elif ft.epochs:
            from edgecompress.models.train import fine_tune

            fine_tune(pruned, task, train, ft.epochs, ft.batch_size, ft.lr, context.progress, ft.seed)
        result = ChannelsResult(
            int(model.count_params()), int(pruned.count_params()), surgery.groups_pruned, surgery.groups_kept,
            surgery.channels_before, surgery.channels_after, surgery.kept_reasons, surgery.kept_whole_layers, before,
        )  # fmt: skip
        return pruned, {"channels": result}


def distill_from(teacher, student, task: str, train, ft: FineTune, progress: bool) -> None:
    """Fine-tune the pruned model on the labels and on the unpruned model's outputs.

    Why: the source still knows what the removed filters contributed; its soft outputs carry that
    to the smaller model, which recovers more of the metric on the same budget than labels alone
    (Hinton et al., "Distilling the Knowledge in a Neural Network", 2015).
    """
    from edgecompress.compress.distill import (
        KD_ALPHA,
        KD_TEMPERATURE,
        kd_losses,
        teacher_outputs,
        train_student,
    )
    from edgecompress.models.train import fit_spec

    x = train.array()
    spec = fit_spec(student, task, train.data)
    kd = kd_losses(task, teacher, student, KD_TEMPERATURE)
    train_student(student, task, x, spec.targets, teacher_outputs(teacher, x), list(spec.losses), kd, KD_ALPHA, ft,
                  progress)  # fmt: skip


def tflite_comparison(
    source_model, pruned_model, structure: Structure, threads: int = 2, runs: int = 50
) -> dict[str, finetune.TFLiteProfile]:
    """Float TFLite of the source and of the pruned model: size, gzip size, MACs, LiteRT latency.

    After magnitude pruning the output is converted with the converter's sparsity optimisation (what
    a pruned model should be exported with): it stores sparse weights in a compressed format, which
    LiteRT expands at load time unless the kernel can use them directly.
    """
    sparse = structure is not Structure.CHANNELS
    return {
        "source": finetune.tflite_profile(source_model, threads=threads, runs=runs),
        "output_sparse" if sparse else "output": finetune.tflite_profile(
            pruned_model, optimize_sparsity=sparse, threads=threads, runs=runs
        ),
    }
