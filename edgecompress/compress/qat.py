"""Quantization-aware training to a full-int8 TFLite model, for the layers real edge models use.

prepare → train → convert, never touching the input: the model is first *flattened* into one
private functional tf_keras copy (nested models inlined, ``TFOpLambda`` calls rewritten into small
layers), then annotated from the table in ``compress/qat_configs.py`` (TFMOT's registry for the
rest), wrapped by ``quantize_apply`` (optionally keeping sparsity or clusters), given activation
ranges measured on the data (``compress/qat_ranges.py``), fine-tuned with the task's loss, and
converted with the same converter settings as ``compress quantize --mode int8``. The converter
still needs a representative dataset after QAT (tensors without fake-quant nodes get their ranges
from it); it is the training data, never random inputs.

Two TFMOT/converter faults are guarded against: ``quantize_apply`` can permute a Concatenate's
inputs (``restore_input_order`` puts them back), and the converter can write int32 biases whose
scale is not input × weight scale (``tflite_graph.bias_scale_errors``; such a file is refused).

References: Jacob et al., "Quantization and Training of Neural Networks for Efficient
Integer-Arithmetic-Only Inference" (CVPR 2018); Krishnamoorthi, "Quantizing deep convolutional
networks for efficient inference" (2018).
"""

from __future__ import annotations

import enum
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecompress._env import import_tensorflow, import_tf_keras, native_output_silenced
from edgecompress.artifacts import Artifact, ModelFormat, atomic_path
from edgecompress.compress import convert
from edgecompress.compress.export import float_reference
from edgecompress.compress.passes import (
    PASSES,
    CalibrationInfo,
    Pass,
    PassContext,
    PassReport,
    PassResult,
    Role,
    commit_metadata,
    load_source,
    output_metadata,
)
from edgecompress.compress.qat_ranges import initialize_ranges
from edgecompress.compress.runner import Scores
from edgecompress.compress.tflite_graph import bias_scale_errors, weight_sparsity
from edgecompress.compress.tflite_graph import max_unique_per_output_channel as tflite_unique_per_channel
from edgecompress.compress.validate import CheckResult, check_against_source
from edgecompress.errors import DataError, UnsupportedError, UsageError, ValidationError, require
from edgecompress.runtimes.keras_io import KerasModel, to_tf_keras

log = logging.getLogger(__name__)

#: conv / dense layers whose kernels carry sparsity and clusters
WEIGHT_LAYERS = {"Conv2D": "kernel", "DepthwiseConv2D": "depthwise_kernel", "Conv2DTranspose": "kernel", "Dense": "kernel"}


class Preserve(str, enum.Enum):
    """What QAT keeps of an earlier compression (TFMOT's collaborative-optimization schemes)."""

    NONE = "none"
    SPARSITY = "sparsity"
    CLUSTERS = "clusters"


@dataclass(frozen=True)
class QATConfig:
    epochs: int = 2
    batch_size: int = 32
    lr: float = 3e-5
    preserve: Preserve = Preserve.NONE
    #: layers left without fake quantization in training (the converter calibrates them afterwards)
    skip_layers: tuple[str, ...] = ()
    #: training samples the converter calibrates the remaining ranges on
    calibration_samples: int = 200
    seed: int = 0
    #: start activation ranges from the data instead of TFMOT's [-6, 6] (compress/qat_ranges.py). Off by
    #: default: it brought int8 closer to the QAT Keras model on Inception v3 and ResNet-18, but cost
    #: the digits MobileNetV2 0.83 points of top-1 in benchmarks/qat.py (96.94 % → 96.11 %).
    init_ranges: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.preserve, Preserve):
            try:
                object.__setattr__(self, "preserve", Preserve(str(self.preserve or "none").lower()))
            except ValueError:
                raise UsageError(
                    f"unknown --preserve '{self.preserve}'", f"choose one of: {', '.join(p.value for p in Preserve)}"
                ) from None
        object.__setattr__(self, "skip_layers", tuple(self.skip_layers))
        if self.epochs < 1 or self.batch_size < 1 or self.calibration_samples < 1:
            raise UsageError("--epochs, --batch-size and --calib-samples must be at least 1")
        if not self.lr > 0:
            raise UsageError(f"--lr must be positive, not {self.lr}", "QAT fine-tunes with a small rate, e.g. 3e-5")

    def to_dict(self) -> dict[str, Any]:
        return {
            "epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr, "preserve": self.preserve.value,
            "skip_layers": list(self.skip_layers), "calibration_samples": self.calibration_samples, "seed": self.seed,
            "init_ranges": self.init_ranges,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QATConfig:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


# --------------------------------------------------------------------------- flattening


@dataclass
class _FlattenState:
    copies: dict[int, Any] = field(default_factory=dict)
    pairs: list[tuple[Any, Any]] = field(default_factory=list)
    names: set[str] = field(default_factory=set)
    rewritten: list[str] = field(default_factory=list)
    inlined: list[str] = field(default_factory=list)


def flatten(model, atol: float = 1e-4):
    """One functional tf_keras model with fresh copies of every layer and the same weights.

    Nested models are inlined and known ``TFOpLambda`` calls become layers TFMOT can clone; the
    copy is checked to compute what the source computes. Returns (model, what was changed).
    """
    tf_keras = import_tf_keras()
    if not getattr(model, "_is_graph_network", False):
        raise UnsupportedError(
            f"model '{model.name}' is a subclassed Keras model, whose graph cannot be read",
            "rebuild it with the functional API (or Sequential with an Input) before QAT",
        )
    state = _FlattenState()
    inputs = [
        tf_keras.Input(shape=tuple(t.shape[1:]), dtype=t.dtype, name=_unique(name, state))
        for t, name in zip(model.inputs, model.input_names, strict=True)
    ]
    outputs = _rebuild(model, inputs, state)
    flat = tf_keras.Model(inputs if len(inputs) > 1 else inputs[0], outputs if len(outputs) > 1 else outputs[0],
                          name=model.name)  # fmt: skip
    for original, copy in state.pairs:
        if original.weights:
            copy.set_weights(original.get_weights())
    _check_same(model, flat, atol)
    return flat, {"inlined_models": state.inlined, "rewritten_ops": state.rewritten}


def _rebuild(model, inputs: list, state: _FlattenState) -> list:
    tf = import_tensorflow()
    tf_keras = import_tf_keras()
    tensors = {id(t): new for t, new in zip(model.inputs, inputs, strict=True)}

    def mapped(value):
        return tf.nest.map_structure(lambda t: tensors[id(t)] if _symbolic(t) else t, value)

    for depth in sorted(model._nodes_by_depth, reverse=True):  # noqa: SLF001 - the graph is only reachable here
        for node in model._nodes_by_depth[depth]:  # noqa: SLF001
            layer = node.layer
            if isinstance(layer, tf_keras.layers.InputLayer):
                continue
            args, kwargs = mapped((node.call_args, node.call_kwargs))
            if getattr(layer, "_is_graph_network", False):
                state.inlined.append(layer.name)
                outputs = _rebuild(layer, tf.nest.flatten((args, {k: v for k, v in kwargs.items()
                                                                  if k not in ("training", "mask")})), state)  # fmt: skip
            else:
                outputs = tf.nest.flatten(_call_copy(layer, args, kwargs, state))
            for old, new in zip(tf.nest.flatten(node.outputs), outputs, strict=True):
                tensors[id(old)] = new
    return [tensors[id(t)] for t in model.outputs]


def _call_copy(layer, args: tuple, kwargs: dict, state: _FlattenState):
    kind = type(layer).__name__
    if kind in ("TFOpLambda", "SlicingOpLambda"):
        rewritten = _rewrite_op(layer, args, kwargs, state)
        if rewritten is not None:
            new_layer, call_input = rewritten
            state.rewritten.append(f"{layer.name} → {type(new_layer).__name__}")
            return new_layer(call_input)
    copy = state.copies.get(id(layer))
    if copy is None:
        config = layer.get_config()
        config["name"] = _unique(layer.name, state)
        copy = layer.__class__.from_config(config)
        state.copies[id(layer)] = copy
        state.pairs.append((layer, copy))
    return copy(*args, **kwargs)


def _rewrite_op(layer, args: tuple, kwargs: dict, state: _FlattenState):
    """A layer equivalent to one TFOpLambda call, and what to call it with; None if unknown."""
    from edgecompress.compress import qat_configs as cfg

    tf_keras = import_tf_keras()
    symbol = getattr(layer, "symbol", "")
    name = _unique(re.sub(r"[^A-Za-z0-9]+", "_", layer.name.replace("tf.", "")).strip("_") or "op", state)
    operands = [*args, *(kwargs[k] for k in ("x", "y", "values") if k in kwargs)]
    tensors = [o for o in operands if _symbolic(o)]
    constants = [c for c in (_scalar(o) for o in operands if not _symbolic(o)) if c is not None]
    scalar_op = len(tensors) == 1 and len(constants) == 1 and len(operands) == 2
    if symbol in ("__operators__.add", "math.add") and scalar_op:
        return cfg.ScalarAdd(constants[0], name=name), tensors[0]
    if symbol == "math.subtract" and scalar_op and _symbolic(operands[0]):
        return cfg.ScalarAdd(-constants[0], name=name), tensors[0]
    if symbol in ("math.multiply", "__operators__.mul") and scalar_op:
        return cfg.ScalarMultiply(constants[0], name=name), tensors[0]
    if symbol in ("math.truediv", "math.divide") and scalar_op and _symbolic(operands[0]):
        return cfg.ScalarMultiply(1.0 / constants[0], name=name), tensors[0]
    two = len(tensors) == 2 and len(operands) == 2
    if two and symbol in ("__operators__.add", "math.add"):
        return tf_keras.layers.Add(name=name), tensors
    if two and symbol == "math.subtract" and operands[0] is tensors[0]:
        return tf_keras.layers.Subtract(name=name), tensors
    if two and symbol in ("math.multiply", "__operators__.mul"):
        return tf_keras.layers.Multiply(name=name), tensors
    if symbol == "__operators__.getitem" and len(tensors) == 1:
        # Built in memory the slice is the second call argument; loaded from a file, `slice_spec`.
        key = args[1] if len(args) == 2 else kwargs.get("slice_spec")
        try:
            return (cfg.Slice(cfg.Slice.encode(key), name=name), tensors[0]) if key is not None else None
        except TypeError:
            return None
    if symbol == "image.resize" and len(tensors) == 1:
        size = args[1] if len(args) > 1 else kwargs.get("size")
        method = kwargs.get("method", args[2] if len(args) > 2 else "bilinear")
        if size is None or _symbolic(size):
            return None
        return cfg.ImageResize([int(s) for s in size], str(getattr(method, "value", method)),
                               bool(kwargs.get("antialias", False)), name=name), tensors[0]  # fmt: skip
    if symbol == "concat":
        values = args[0] if args else kwargs.get("values")
        axis = kwargs.get("axis", args[1] if len(args) > 1 else -1)
        if isinstance(values, list | tuple) and all(_symbolic(v) for v in values):
            return tf_keras.layers.Concatenate(axis=int(axis), name=name), list(values)
    if symbol in ("nn.relu", "nn.relu6") and len(tensors) == 1:
        return tf_keras.layers.ReLU(6.0 if symbol.endswith("6") else None, name=name), tensors[0]
    return None


def _symbolic(value) -> bool:
    """A Keras graph tensor (tf_keras' own test raises on plain Python values)."""
    return hasattr(value, "_keras_history")


def _scalar(value) -> float | None:
    array = np.asarray(value) if not hasattr(value, "numpy") else np.asarray(value.numpy())
    if array.dtype.kind in "iuf" and array.size == 1:
        return float(array.reshape(()))
    return None


def _unique(name: str, state: _FlattenState) -> str:
    candidate, index = name, 1
    while candidate in state.names:
        candidate, index = f"{name}_{index}", index + 1
    state.names.add(candidate)
    return candidate


def _outputs(model, x) -> list[np.ndarray]:
    out = model(x, training=False)
    return [np.asarray(o) for o in (out if isinstance(out, list | tuple) else [out])]


def _check_same(source, flat, atol: float) -> None:
    shape = tuple(int(d) for d in source.inputs[0].shape[1:])
    probe = np.random.default_rng(0).uniform(-1, 1, (2, *shape)).astype(np.float32)
    for expected, got in zip(_outputs(source, probe), _outputs(flat, probe), strict=True):
        diff = float(np.max(np.abs(expected - got)))
        if not np.isfinite(diff) or diff > atol * max(1.0, float(np.max(np.abs(expected)))):
            raise UnsupportedError(
                f"flattening the model for QAT changed its outputs (max |Δ| = {diff:.3g})",
                "report this with the model attached; meanwhile use post-training quantization",
            )


# --------------------------------------------------------------------------- annotate and apply


def _inbound_types(layer) -> list[str]:
    tf = import_tensorflow()
    nodes = getattr(layer, "_inbound_nodes", [])
    return [type(inbound).__name__ for node in nodes for inbound in tf.nest.flatten(node.inbound_layers)]


def prepare(model, config: QATConfig):
    """The trainable QAT model (fake-quant wrappers) of a flattened model, the table's choices, and
    the layers whose inputs TFMOT reordered and we put back (see ``restore_input_order``)."""
    tfmot = require("tensorflow_model_optimization", "tfmot", "Quantization-aware training")
    from edgecompress.compress import qat_configs as cfg

    tf_keras = import_tf_keras()
    names = {layer.name for layer in model.layers}
    unknown = [n for n in config.skip_layers if n not in names]
    if unknown:
        raise UsageError(f"--skip-layer names no layer of this model: {', '.join(unknown)}",
                         "see the layer names with model.summary()")  # fmt: skip
    qkeras = tfmot.quantization.keras
    chosen: dict[str, dict[str, str]] = {}
    unsupported: list[str] = []

    def annotate(layer):
        if layer.name in config.skip_layers:
            chosen[layer.name] = {"layer": type(layer).__name__, "config": "skipped (float in training)"}
            return layer
        kind = cfg.config_kind(layer, _inbound_types(layer))
        if kind:
            chosen[layer.name] = {"layer": type(layer).__name__, "config": kind}
            return qkeras.quantize_annotate_layer(layer, cfg.CONFIGS[kind]())
        if cfg.tfmot_supports(layer) or type(layer).__name__ == "BatchNormalization":
            if preserving is not None and not preserving.supports(layer) and default_registry.supports(layer):
                # The preserve scheme has no rule for this layer (Conv2DTranspose, …): quantize it
                # the default way, so the rest of the model keeps its sparsity or clusters.
                chosen[layer.name] = {"layer": type(layer).__name__, "config": f"default 8-bit ({config.preserve.value} "
                                      "not preserved: the preserve scheme has no rule for this layer)"}  # fmt: skip
                return qkeras.quantize_annotate_layer(layer, default_registry.get_quantize_config(layer))
            return qkeras.quantize_annotate_layer(layer)
        unsupported.append(f"{layer.name} ({_describe(layer)})")
        return layer

    scheme = _scheme(tfmot, config.preserve)
    preserving = scheme.get_quantize_registry() if config.preserve is not Preserve.NONE else None
    default_registry = tfmot.quantization.keras.default_8bit.Default8BitQuantizeScheme().get_quantize_registry()
    annotated = tf_keras.models.clone_model(model, clone_function=annotate)
    if unsupported:
        first = unsupported[0].split(" ")[0]
        raise UnsupportedError(
            f"QAT cannot quantize layer(s) {', '.join(unsupported)}",
            f"leave them in float during training with --skip-layer {first} (repeatable; the converter then "
            "quantizes them post-training where TFLite has an int8 kernel), or replace them with built-in layers",
        )
    try:
        with native_output_silenced(), qkeras.quantize_scope(cfg.custom_objects()):
            # No 'quant_' prefix: output names must stay the model's own, since runtimes order a
            # multi-output TFLite model's outputs by the Keras output names in its metadata.
            qat_model = qkeras.quantize_apply(annotated, scheme, quantized_layer_name_prefix="")
    except (RuntimeError, ValueError, TypeError, AttributeError) as exc:
        raise UnsupportedError(
            f"TFMOT could not prepare this model for QAT: {str(exc).splitlines()[0][:300]}",
            "leave the layer it names in float with --skip-layer NAME, or use post-training quantization",
        ) from exc
    qat_model, reordered = restore_input_order(qat_model, model)
    return qat_model, chosen, reordered


def _keras_inputs(node, rename=lambda layer: layer.name) -> list[tuple[str, int]]:
    return [(rename(t._keras_history.layer), t._keras_history.tensor_index) for t in node.keras_inputs]  # noqa: SLF001


def restore_input_order(qat_model, source) -> tuple[Any, list[str]]:
    """Give every multi-input layer of the QAT model its inputs in the source's order again.

    TFMOT's ``ModelTransformer._get_layers`` returns a pattern's input layers in the order they are
    listed in the model, not the order the layer takes them (tensorflow/model-optimization#1179), so
    its ``ConcatTransform`` rewires a Concatenate whose first input was built after another one:
    Inception v3's mixed3, mixed8, mixed9 and mixed10 come out with their channels permuted, and a
    trained model fine-tuned from there starts at chance. We re-call the QAT model's own layers
    (weights and quantizer state shared) with the inputs in the source's order. Returns the model
    (unchanged when nothing was reordered) and the names of the layers whose inputs were restored.
    """
    tf = import_tensorflow()
    tf_keras = import_tf_keras()
    expected = {
        layer.name: _keras_inputs(layer._inbound_nodes[0])  # noqa: SLF001
        for layer in source.layers
        if len(getattr(layer, "_inbound_nodes", [])) == 1 and len(layer._inbound_nodes[0].keras_inputs) > 1  # noqa: SLF001
    }

    def source_name(layer) -> str:  # quantize_apply puts a QuantizeLayer between each input and its users
        if type(layer).__name__ == "QuantizeLayer" and layer._inbound_nodes:  # noqa: SLF001
            return layer._inbound_nodes[0].inbound_layers.name  # noqa: SLF001
        return layer.name

    permutations: dict[str, list[int]] = {}
    for layer in qat_model.layers:
        want = expected.get(layer.name)
        if want is None or len(layer._inbound_nodes) != 1:  # noqa: SLF001
            continue
        got = _keras_inputs(layer._inbound_nodes[0], source_name)  # noqa: SLF001
        if got != want and sorted(got) == sorted(want):
            free = list(range(len(got)))
            permutations[layer.name] = [free.pop(next(i for i, j in enumerate(free) if got[j] == w)) for w in want]
    if not permutations:
        return qat_model, []
    log.info("QAT: restoring the input order TFMOT changed in %s", ", ".join(permutations))
    tensors = {id(t): t for t in qat_model.inputs}
    for depth in sorted(qat_model._nodes_by_depth, reverse=True):  # noqa: SLF001
        for node in qat_model._nodes_by_depth[depth]:  # noqa: SLF001
            layer = node.layer
            if isinstance(layer, tf_keras.layers.InputLayer):
                continue
            args, kwargs = tf.nest.map_structure(lambda t: tensors[id(t)] if _symbolic(t) else t,
                                                 (node.call_args, node.call_kwargs))  # fmt: skip
            order = permutations.get(layer.name)
            if order is not None:
                if not isinstance(args[0], list | tuple) or len(args[0]) != len(order):
                    raise UnsupportedError(
                        f"TFMOT reordered the inputs of '{layer.name}' in a way QAT cannot undo",
                        "use post-training quantization for this model (compress quantize --mode int8)",
                    )
                args = ([args[0][i] for i in order], *args[1:])
            outputs = layer(*args, **kwargs)
            for old, new in zip(tf.nest.flatten(node.outputs), tf.nest.flatten(outputs), strict=True):
                tensors[id(old)] = new
    outputs = [tensors[id(t)] for t in qat_model.outputs]
    fixed = tf_keras.Model(qat_model.inputs, outputs if len(outputs) > 1 else outputs[0], name=qat_model.name)
    return fixed, sorted(permutations)


def _describe(layer) -> str:
    symbol = getattr(layer, "symbol", None)
    return f"{type(layer).__name__} {symbol}" if symbol else type(layer).__name__


def _scheme(tfmot, preserve: Preserve):
    combine = tfmot.experimental.combine
    if preserve is Preserve.SPARSITY:
        return combine.Default8BitPrunePreserveQuantizeScheme()
    if preserve is Preserve.CLUSTERS:
        return combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=True)
    return tfmot.quantization.keras.default_8bit.Default8BitQuantizeScheme()


def _require_consistent_biases(data: bytes) -> None:
    """Refuse a file whose biases the integer kernels would misread (see ``bias_scale_errors``)."""
    errors = bias_scale_errors(data)
    if errors:
        worst = max(errors, key=errors.get)
        raise ValidationError(
            f"the converter wrote {len(errors)} bias(es) quantized against the wrong input scale "
            f"(worst: {worst}, off by {errors[worst]:.1%}); the int8 model would compute wrong values",
            "train for more steps (--epochs) so the activation ranges settle, or use post-training quantization",
        )


def kernel_sparsity(model) -> float:
    """Fraction of exact zeros over conv / dense kernels (what pruning leaves behind)."""
    zeros = total = 0
    for layer in model.layers:
        attr = WEIGHT_LAYERS.get(type(layer).__name__)
        if attr and hasattr(layer, attr):
            values = np.asarray(getattr(layer, attr).numpy())
            zeros += int(np.sum(values == 0))
            total += values.size
    return zeros / total if total else 0.0


def max_unique_per_output_channel(model) -> int:
    """Largest count of distinct values in one output channel of a Conv2D / Dense kernel.

    Why per output channel: that is what cluster-preserving QAT keeps through int8 conversion
    (one weight scale per channel); it matches ``tflite_graph.max_unique_per_output_channel``.
    Depthwise kernels are left out: the cluster pass leaves them unclustered.
    """
    counts = []
    for layer in model.layers:
        if type(layer).__name__ in ("Conv2D", "Dense"):
            kernel = np.asarray(layer.kernel.numpy())
            flat = kernel.reshape(-1, kernel.shape[-1])
            counts.extend(len(np.unique(flat[:, c])) for c in range(flat.shape[1]))
    return max(counts, default=0)


@dataclass(frozen=True)
class TrainingInfo:
    samples: int
    source: str
    final_loss: float | None


@dataclass(frozen=True, kw_only=True)
class QATReport(PassReport):
    task: str
    training: TrainingInfo
    #: the converter's representative data: a seeded subset of the training data
    calibration: CalibrationInfo
    activation_ranges_initialised: int
    #: nested models inlined and TF op calls rewritten as layers before TFMOT saw the model
    flattened: Mapping[str, list[str]]
    #: layers that got one of our QuantizeConfigs: name → {layer, config}
    our_configs: Mapping[str, Mapping[str, str]]
    inputs_reordered_by_tfmot: tuple[str, ...]
    #: fraction of zero conv/dense weights: "source" (Keras) and "int8_tflite"
    weight_sparsity: Mapping[str, float]
    seconds_training: float
    check: CheckResult
    #: with ``compare``: post-training int8 of the source on the same representative samples, scored
    #: on the held-out data in LiteRT
    ptq_int8: Scores | None = None
    #: preserve=clusters: most distinct values in one output channel, source and int8 file
    max_unique_weights_per_output_channel: Mapping[str, int] | None = None


@PASSES.register("qat")
class QATPass(Pass):
    """Fine-tune with fake quantization, then convert to full-int8 TFLite.

    It trains on ``context.train``; a seeded subset of that training data is the converter's
    representative dataset (the ranges QAT did not learn), so QAT needs no calibration role.
    ``context.validation`` (held out) serves the export check.
    """

    name = "qat"
    accepts = (ModelFormat.KERAS_H5, ModelFormat.KERAS_V3, ModelFormat.SAVEDMODEL)
    produces = ModelFormat.TFLITE

    def needs(self) -> frozenset[Role]:
        return frozenset({Role.TRAIN})

    def __init__(self, config: QATConfig | None = None, compare: bool = False, **kwargs: Any) -> None:
        self.config = config or QATConfig(**kwargs)
        #: also convert the source post-training (same representative samples) and score it on the
        #: held-out data, so the report shows what QAT bought; off in recipes, which sweep PTQ anyway
        self.compare = compare

    def params(self) -> dict[str, Any]:
        return self.config.to_dict()

    def apply(self, artifact: Artifact, context: PassContext) -> PassResult:
        from edgecompress.models.tasks import task_of
        from edgecompress.models.train import train_model

        self.check_input(artifact)
        config = self.config
        train = context.train
        if train is None or train.data.kind is None:
            raise DataError("QAT needs labelled training data", "pass --data (class folders, .npz with targets, 'digits', …)")
        started = time.perf_counter()
        source = load_source(artifact, context)
        keras_model = to_tf_keras(source)
        flat, changes = flatten(keras_model.model)
        sparsity_before = kernel_sparsity(flat)
        qat_model, chosen, reordered = prepare(flat, config)
        task = task_of(artifact.metadata.task, [tuple(t.shape) for t in source.model.outputs])
        representative = type(train).build(train.data.take(config.calibration_samples, config.seed),
                                           train.input_shape, train.preprocessing)  # fmt: skip
        ranges = initialize_ranges(flat, qat_model, representative.batches(config.batch_size)) if config.init_ranges else {}
        log.info("QAT: fine-tuning %s for %d epoch(s) on %s", artifact.path.name, config.epochs, train.source)
        history = train_model(
            qat_model, task, train, None, epochs=config.epochs, batch_size=config.batch_size, lr=config.lr,
            progress=context.progress, seed=config.seed,
        )  # fmt: skip
        trained_seconds = time.perf_counter() - started
        output = Path(context.output)
        with atomic_path(output) as tmp:
            data = convert.keras_to_tflite(qat_model, "int8", representative, per_channel=True, io="float")
            _require_consistent_biases(data)
            tmp.write_bytes(data)
            metadata = output_metadata(artifact, source, context, "qat", self.params())
            check = check_against_source(
                KerasModel(qat_model, "tf_keras"), Artifact(tmp, self.produces, metadata), "int8", context
            )
            commit_metadata(output, metadata)
        result = Artifact(output, self.produces, metadata)
        kept = None
        if config.preserve is Preserve.CLUSTERS:
            kept = {"source": max_unique_per_output_channel(flat), "int8_tflite": tflite_unique_per_channel(data)}
        ptq = self._ptq_baseline(keras_model.model, representative, context, task) if self.compare else None
        report = QATReport(
            pass_name=self.name, params=self.params(), seconds=time.perf_counter() - started, task=task,
            training=TrainingInfo(len(train), train.source, history.get("loss", [None])[-1]),
            calibration=CalibrationInfo(len(representative), f"{train.source} (the training data)"),
            activation_ranges_initialised=len(ranges), flattened=changes, our_configs=chosen,
            inputs_reordered_by_tfmot=tuple(reordered),
            weight_sparsity={"source": sparsity_before, "int8_tflite": weight_sparsity(data)},
            seconds_training=trained_seconds, check=check, ptq_int8=ptq, max_unique_weights_per_output_channel=kept,
            float_reference=float_reference(source.model),
        )  # fmt: skip
        return PassResult(result, report)

    @staticmethod
    def _ptq_baseline(model, representative, context: PassContext, task: str) -> Scores | None:
        """Post-training int8 of the source, calibrated on QAT's own representative samples."""
        if context.validation is None:
            return None
        import tempfile

        from edgecompress.models.tasks import evaluate
        from edgecompress.runtimes.litert import LiteRTRuntime
        from edgecompress.runtimes.probe import trust

        data = convert.keras_to_tflite(model, "int8", representative, per_channel=True, io="float")
        with tempfile.TemporaryDirectory(prefix="edgecompress-ptq-") as tmp:
            path = Path(tmp) / "ptq.int8.tflite"
            path.write_bytes(data)
            trust(path)  # the converter wrote it in this process a moment ago
            with LiteRTRuntime().open(Artifact(path, ModelFormat.TFLITE)) as session:
                return Scores("litert", evaluate(session, context.validation, task), len(data))
