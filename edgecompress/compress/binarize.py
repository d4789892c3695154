"""Binarization: 1-bit weights and activations with Larq, exported to bit-packed LCE TFLite.

Convolutions and dense layers become Larq quantized layers (``ste_sign`` on inputs and kernels,
``weight_clip`` on the latent float kernels), initialised from the float weights; BatchNorm stays,
since it sets each binary output's threshold. The first layer (it sees raw pixels, whose sign says
little) and the last (it makes the logits) stay float by default, as in XNOR-Net and Bi-Real Net.
A ReLU straight before a binarized layer is dropped: ``sign`` is that layer's nonlinearity, and
``sign(relu(x))`` would be +1 almost everywhere. Training distils the float model: a KL loss on
temperature-softened outputs plus cross-entropy on the labels.

Export uses the Larq Compute Engine converter, which packs binary weights 32 to a word and turns
binarized convolutions into ``LceBconv2d``; LCE's fast kernels are for 64-bit ARM (see
``runtimes/lce.py``), so on x86 a binarized model wins on size only.

References: Courbariaux et al., "Binarized Neural Networks" (NeurIPS 2016); Rastegari et al.,
"XNOR-Net" (ECCV 2016); Liu et al., "Bi-Real Net" (ECCV 2018); Hinton et al., "Distilling the
Knowledge in a Neural Network" (2015); Bannink et al., "Larq Compute Engine" (MLSys 2021).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecompress._env import import_tensorflow, import_tf_keras, native_output_silenced
from edgecompress.artifacts import Artifact, ModelFormat, atomic_path
from edgecompress.calibration.data import ModelInputs
from edgecompress.compress.passes import (
    PASSES,
    Pass,
    PassContext,
    PassReport,
    PassResult,
    Role,
    commit_metadata,
    load_source,
    output_metadata,
)
from edgecompress.compress.tflite_graph import op_counts
from edgecompress.compress.validate import CheckResult, compare_outputs
from edgecompress.errors import DataError, UnsupportedError, UsageError, ValidationError, require
from edgecompress.runtimes.keras_io import to_tf_keras

log = logging.getLogger(__name__)

#: float layer → (Larq layer, the kernel's config key prefix)
BINARY_TWINS = {
    "Conv2D": ("QuantConv2D", "kernel"),
    "DepthwiseConv2D": ("QuantDepthwiseConv2D", "depthwise"),
    "Dense": ("QuantDense", "kernel"),
}
#: layers a ReLU's output may pass through unchanged in sign on its way to a binarized layer
SIGN_KEEPING = {"MaxPooling2D", "AveragePooling2D", "Dropout", "ZeroPadding2D", "Flatten", "Reshape"}
#: LCE vs Larq agreement, as a fraction of the Larq output range (mean |Δ|): LCE computes binary
#: convolutions exactly and fuses BatchNorm in float, but an activation within float rounding of 0
#: can take the other sign, flipping one bit of the next layer's input
LCE_TOLERANCE = 0.02
CHECK_SAMPLES = 16


@dataclass(frozen=True)
class BinarizeConfig:
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    #: binarize the first and last weight layers too (default: they stay float)
    binarize_all: bool = False
    temperature: float = 4.0
    #: weight of the distillation term; (1 - alpha) goes to cross-entropy on the labels
    alpha: float = 0.7
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise UsageError("--epochs and --batch-size must be at least 1")
        if not self.lr > 0 or not self.temperature > 0:
            raise UsageError("--lr and the distillation temperature must be positive")
        if not 0 <= self.alpha <= 1:
            raise UsageError(f"the distillation weight must be in [0, 1], not {self.alpha}")

    def to_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr, "binarize_all": self.binarize_all,
                "temperature": self.temperature, "alpha": self.alpha, "seed": self.seed}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BinarizeConfig:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def _larq():
    require("larq_compute_engine", "larq", "Binarization")
    return require("larq", "larq", "Binarization")


# --------------------------------------------------------------------------- rebuild


def _weight_layers(model) -> list:
    return [layer for layer in model.layers if type(layer).__name__ in BINARY_TWINS]


def _consumers(layer) -> list:
    return [node.outbound_layer for node in getattr(layer, "_outbound_nodes", [])]


def _feeds_only_binary(layer, binary: set[str]) -> bool:
    """Whether every path from this layer's output reaches a binarized layer through sign-keeping ops."""
    consumers = _consumers(layer)
    if not consumers:
        return False
    for consumer in consumers:
        kind = type(consumer).__name__
        if consumer.name in binary:
            continue
        if kind in SIGN_KEEPING and _feeds_only_binary(consumer, binary):
            continue
        return False
    return True


def _is_relu(layer) -> bool:
    kind = type(layer).__name__
    if kind == "ReLU":
        return not layer.negative_slope and not layer.threshold
    if kind == "Activation":
        return getattr(layer.activation, "__name__", "") in ("relu", "relu6")
    return False


def binarize_model(model, binarize_all: bool = False):
    """A Larq copy of a flat functional model, initialised from its weights; and which layers became binary."""
    lq = _larq()
    tf_keras = import_tf_keras()
    weights = _weight_layers(model)
    if not weights:
        raise UnsupportedError("the model has no Conv2D, DepthwiseConv2D or Dense layer to binarize",
                               "binarization needs a convolutional or dense model")  # fmt: skip
    keep = set() if binarize_all or len(weights) < 3 else {weights[0].name, weights[-1].name}
    binary = {layer.name for layer in weights if layer.name not in keep}
    if not binary:
        raise UnsupportedError("with the first and last layers kept float, nothing is left to binarize",
                               "pass --binarize-all, or use a deeper model")  # fmt: skip
    dropped: list[str] = []

    def clone(layer):
        kind = type(layer).__name__
        config = layer.get_config()
        if layer.name in binary:
            twin, prefix = BINARY_TWINS[kind]
            config.update({"input_quantizer": "ste_sign", f"{prefix}_quantizer": "ste_sign",
                           f"{prefix}_constraint": "weight_clip"})  # fmt: skip
            if _feeds_only_binary(layer, binary) and getattr(layer.activation, "__name__", "") in ("relu", "relu6"):
                config["activation"] = "linear"
                dropped.append(layer.name)
            return getattr(lq.layers, twin).from_config(config)
        if _is_relu(layer) and _feeds_only_binary(layer, binary):
            dropped.append(layer.name)
            return tf_keras.layers.Activation("linear", name=layer.name)
        return layer.__class__.from_config(config)

    student = tf_keras.models.clone_model(model, clone_function=clone)
    for original in model.layers:
        values = original.get_weights()
        copy = student.get_layer(original.name)
        if not values:
            continue
        if original.name in binary:
            values = [np.clip(values[0], -1.0, 1.0), *values[1:]]  # weight_clip's range, from the first step
        copy.set_weights(values)
    return student, sorted(binary), sorted(keep), dropped


# --------------------------------------------------------------------------- MACs


def layer_macs(layer) -> int:
    """Multiply-accumulates of one sample through a conv / dense layer (float or Larq)."""
    kind = type(layer).__name__.replace("Quant", "")
    if kind not in BINARY_TWINS:
        return 0
    out_shape = layer.output_shape
    kernel = tuple(layer.weights[0].shape)
    if kind == "Conv2D":
        return int(np.prod(out_shape[1:])) * int(np.prod(kernel[:3]))
    if kind == "DepthwiseConv2D":
        return int(np.prod(out_shape[1:])) * int(np.prod(kernel[:2]))
    return int(np.prod(layer.input_shape[1:])) * int(kernel[-1])


def mac_profile(student, binary: list[str]) -> dict[str, Any]:
    """Binary vs higher-precision MACs, for convolutions alone and for all weight layers."""
    conv = {"binary": 0, "float": 0}
    total = {"binary": 0, "float": 0}
    for layer in student.layers:
        macs = layer_macs(layer)
        if not macs:
            continue
        key = "binary" if layer.name in binary else "float"
        total[key] += macs
        if "Conv" in type(layer).__name__:
            conv[key] += macs
    share = lambda d: d["binary"] / max(1, d["binary"] + d["float"])  # noqa: E731
    return {
        "conv_macs_binary": conv["binary"], "conv_macs_float": conv["float"], "conv_binary_share": share(conv),
        "macs_binary": total["binary"], "macs_float": total["float"], "binary_share": share(total),
    }  # fmt: skip


# --------------------------------------------------------------------------- distillation


def _as_logits(tf, outputs, softmax: bool):
    return tf.math.log(tf.clip_by_value(outputs, 1e-7, 1.0)) if softmax else outputs


def distill(student, teacher, train: ModelInputs, config: BinarizeConfig, progress: bool = True) -> list[float]:
    """Train ``student`` against ``teacher``'s softened outputs and the labels; returns epoch losses."""
    tf = import_tensorflow()
    tf_keras = import_tf_keras()
    from edgecompress._progress import progress_bar

    tf_keras.utils.set_random_seed(config.seed)
    x, y = train.array(), train.data.labels
    softmax = getattr(getattr(teacher.layers[-1], "activation", None), "__name__", "") == "softmax"
    steps = config.epochs * int(np.ceil(len(x) / config.batch_size))
    schedule = tf_keras.optimizers.schedules.CosineDecay(config.lr, decay_steps=max(1, steps), alpha=0.01)
    optimizer = tf_keras.optimizers.Adam(schedule)
    temperature, alpha = config.temperature, config.alpha
    cross_entropy = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(xb, yb):
        soft_targets = tf.nn.softmax(_as_logits(tf, teacher(xb, training=False), softmax) / temperature)
        with tf.GradientTape() as tape:
            logits = _as_logits(tf, student(xb, training=True), softmax)
            kd = tf_keras.losses.kl_divergence(soft_targets, tf.nn.softmax(logits / temperature))
            loss = alpha * temperature**2 * tf.reduce_mean(kd) + (1 - alpha) * cross_entropy(yb, logits)
        grads = tape.gradient(loss, student.trainable_variables)
        optimizer.apply_gradients(zip(grads, student.trainable_variables, strict=True))
        return loss

    rng = np.random.default_rng(config.seed)
    losses = []
    bar = progress_bar(total=steps, disable=not progress, unit="step", desc="distilling")
    for _ in range(config.epochs):
        order = rng.permutation(len(x))
        total = 0.0
        for start in range(0, len(x), config.batch_size):
            index = order[start : start + config.batch_size]
            total += float(step(tf.constant(x[index]), tf.constant(y[index]))) * len(index)
            bar.update(1)
        losses.append(total / len(x))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    return losses


# --------------------------------------------------------------------------- export


def to_lce(student) -> bytes:
    lce = require("larq_compute_engine", "larq", "Binarization")
    try:
        with native_output_silenced():
            data = lce.convert_keras_model(student)
    except Exception as exc:  # noqa: BLE001 - the MLIR converter raises several types
        raise UnsupportedError(
            f"the Larq Compute Engine converter failed: {str(exc).splitlines()[0][:300]}", "run with --debug for details"
        ) from exc
    if "LceBconv2d" not in op_counts(data):
        raise UnsupportedError(
            "the LCE converter wrote no binary convolution (LceBconv2d)",
            "binarize convolutions with both input and kernel quantizers 'ste_sign'",
        )
    return data


def check_lce(student, output: Artifact, x: np.ndarray) -> tuple[CheckResult, float]:
    """LCE's outputs against the Larq model's on the same inputs, and their top-1 agreement."""
    from edgecompress.runtimes import open_session

    out = student(x, training=False)
    expected = [np.asarray(o) for o in (out if isinstance(out, list | tuple) else [out])]
    with open_session(output, runtime="lce") as session:
        got = session.run(x)
    result = compare_outputs(expected, got, "float", f"samples (LCE vs Larq, tolerance {LCE_TOLERANCE:.0%})")
    result = CheckResult(**{**result.__dict__, "statistic": "mean", "tolerance": LCE_TOLERANCE})
    agreement = float(np.mean(np.argmax(expected[0], -1) == np.argmax(got[0], -1))) if expected[0].ndim == 2 else 1.0
    if not result.passed:
        raise ValidationError(
            f"the LCE model does not match the Larq model: {result.describe()}", "report this with the model attached"
        )
    return result, agreement


@dataclass(frozen=True, kw_only=True)
class BinarizeReport(PassReport):
    binarized_layers: tuple[str, ...]
    float_layers: tuple[str, ...]
    relu_dropped_before_sign: tuple[str, ...]
    #: multiply-accumulates per sample, binary and float, and the binary shares
    macs: Mapping[str, float]
    training: Mapping[str, Any]
    #: op type → count in the written LCE file
    ops: Mapping[str, int]
    seconds_training: float
    check: CheckResult
    #: top-1 agreement of the LCE file with the Larq model on the check inputs
    top1_agreement: float


@PASSES.register("binarize")
class BinarizePass(Pass):
    """Larq rebuild → distillation from the float model → bit-packed LCE TFLite.

    It trains on ``context.train`` (labelled); ``context.validation`` holds the data the LCE
    check runs on (the training data when there is none).
    """

    name = "binarize"
    accepts = (ModelFormat.KERAS_H5, ModelFormat.KERAS_V3, ModelFormat.SAVEDMODEL)
    produces = ModelFormat.LCE_TFLITE

    def needs(self) -> frozenset[Role]:
        return frozenset({Role.TRAIN})

    def __init__(self, config: BinarizeConfig | None = None, **kwargs: Any) -> None:
        self.config = config or BinarizeConfig(**kwargs)

    def params(self) -> dict[str, Any]:
        return self.config.to_dict()

    def apply(self, artifact: Artifact, context: PassContext) -> PassResult:
        from edgecompress.compress.qat import flatten
        from edgecompress.models.tasks import task_of

        self.check_input(artifact)
        _larq()
        train = context.train
        if train is None or train.data.labels is None:
            raise DataError("binarization distils with labels", "pass labelled classification data with --data")
        source = load_source(artifact, context)
        task = task_of(artifact.metadata.task, [tuple(t.shape) for t in source.model.outputs])
        if task != "classification" or len(source.model.outputs) != 1:
            raise UnsupportedError(
                f"binarization supports single-output classifiers, not a {task} model",
                "use `compress qat` for int8, which handles every zoo task",
            )
        started = time.perf_counter()
        teacher, _ = flatten(to_tf_keras(source).model)
        student, binary, kept, dropped = binarize_model(teacher, self.config.binarize_all)
        losses = distill(student, teacher, train, self.config, context.progress)
        trained = time.perf_counter() - started
        output = Path(context.output)
        check_data = context.validation or train
        x = next(check_data.batches(CHECK_SAMPLES))
        with atomic_path(output) as tmp:
            tmp.write_bytes(to_lce(student))
            metadata = output_metadata(artifact, source, context, "binarize", self.params())
            metadata = dataclasses.replace(metadata, extra={**metadata.extra, "binarized_layers": binary})
            check, agreement = check_lce(student, Artifact(tmp, self.produces, metadata), x)
            commit_metadata(output, metadata)
        result = Artifact(output, self.produces, metadata)
        report = BinarizeReport(
            pass_name=self.name, params=self.params(), seconds=time.perf_counter() - started,
            binarized_layers=tuple(binary), float_layers=tuple(kept), relu_dropped_before_sign=tuple(dropped),
            macs=mac_profile(student, binary),
            training={"samples": len(train), "source": train.source, "losses": losses},
            ops=dict(op_counts(output.read_bytes())), seconds_training=trained, check=check, top1_agreement=agreement,
        )  # fmt: skip
        return PassResult(result, report)
