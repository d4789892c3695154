"""What the training passes (prune, cluster, distill) share: their budget, a private tf_keras copy of
the source, scoring on held-out data, the Keras output with its sidecar, and TFLite measurements.

Why a copy: TFMOT wraps layer objects in place and Keras fit changes weights, while a pass must
never touch its input (the loaded model is also cached by ``load_keras``).
"""

from __future__ import annotations

import abc
import dataclasses
import gzip
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgecompress._env import import_tf_keras
from edgecompress.artifacts import Artifact, Metadata, ModelFormat
from edgecompress.calibration.data import ModelInputs
from edgecompress.compress.export import float_reference
from edgecompress.compress.passes import (
    Pass,
    PassContext,
    PassReport,
    PassResult,
    Role,
    load_source,
    output_metadata,
)
from edgecompress.errors import DataError, UsageError
from edgecompress.runtimes.keras_io import KerasModel, to_tf_keras

KERAS_OUTPUTS = (ModelFormat.KERAS_H5, ModelFormat.KERAS_V3, ModelFormat.SAVEDMODEL)


@dataclass(frozen=True)
class FineTune:
    """The training budget of a pass; the same budget is what `distill` gives its baseline."""

    epochs: int = 2
    batch_size: int = 32
    lr: float = 1e-4
    seed: int = 0

    def __post_init__(self) -> None:
        if int(self.epochs) < 0:
            raise UsageError(f"--epochs must be 0 or more, not {self.epochs}", "pass --epochs N")
        if int(self.batch_size) < 1:
            raise UsageError(f"--batch-size must be at least 1, not {self.batch_size}", "pass --batch-size 32")
        if not float(self.lr) > 0:
            raise UsageError(f"--lr must be positive, not {self.lr}", "pass e.g. --lr 1e-4")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FineTune:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def config_from_params(cls: type, params: dict[str, Any]):
    """A pass config from flat parameters, as recipes and lineage write them: the budget's fields
    (epochs, batch_size, lr, seed) go into its ``finetune``, starting from the config's own default
    budget; an unknown name is an error rather than silently ignored."""
    budget_fields = {f.name for f in dataclasses.fields(FineTune)}
    own = {f.name for f in dataclasses.fields(cls)} - {"finetune"}
    unknown = sorted(set(params) - own - budget_fields)
    if unknown:
        raise TypeError(f"unexpected parameter(s): {', '.join(unknown)}")
    default = cls.__dataclass_fields__["finetune"].default_factory()
    budget = {k: v for k, v in params.items() if k in budget_fields}
    finetune = params["finetune"] if isinstance(params.get("finetune"), FineTune) else FineTune(**{**default.to_dict(), **budget})
    return cls(**{k: v for k, v in params.items() if k in own}, finetune=finetune)


def private_copy(artifact: Artifact, context: PassContext) -> tuple[KerasModel, Any]:
    """The loaded source (as tf_keras) and an independent copy with the same weights to train."""
    tf_keras = import_tf_keras()
    source = to_tf_keras(load_source(artifact, context))
    model = source.model
    if isinstance(model, tf_keras.Sequential):
        # A functional view of a Sequential model: same layers, and a config the graph tools read.
        model = tf_keras.Model(model.inputs, model.outputs, name=model.name)
    copy = tf_keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return source, copy


def task_of(artifact: Artifact, keras_model: KerasModel) -> str:
    from edgecompress.models.tasks import task_of as resolve

    return resolve(artifact.metadata.task, [tuple(t.shape) for t in keras_model.model.outputs])


def require_training_data(context: PassContext, what: str) -> ModelInputs:
    if context.train is None:
        raise DataError(f"{what} fine-tunes the model and needs training data", "pass --data DIR|FILE.npz|digits")
    if context.train.data.kind is None:
        raise DataError(f"{what} fine-tunes the model and needs labelled data; {context.train.source} has none",
                        "pass class folders, a .npz with targets, 'digits', …")  # fmt: skip
    return context.train


def score(model, data: ModelInputs | None, task: str) -> dict[str, float] | None:
    """The task's metrics of a Keras model on held-out data (None without data)."""
    if data is None:
        return None
    from edgecompress.models.tasks import evaluate
    from edgecompress.runtimes.keras_tf import KerasSession

    return evaluate(KerasSession(model, "cpu", None), data, task)


def primary_metric(task: str) -> str:
    from edgecompress.models.tasks import TASKS

    return TASKS.get(task).primary_metric


def write_output(
    model, artifact: Artifact, source: KerasModel, context: PassContext, step: str, params: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> Artifact:
    """Save the trained model (.h5/.keras, atomically) with the source's metadata and one more lineage step.

    A ``.keras`` output is written by Keras 3 itself (see :func:`save_keras3`): ``.keras`` is Keras 3's
    format, so the user's own Keras loads it; ``.h5`` (tf_keras) stays available for every source.
    """
    from edgecompress.models.train import save_model

    output = Path(context.output)
    keras3 = output.suffix.lower() == ".keras"
    view = KerasModel(model=model, flavor="tf_keras", path=output)
    metadata: Metadata = output_metadata(artifact, view, context, step, params)
    extra = {**(extra or {}), **({"keras_flavor": "keras3"} if keras3 else {})}
    if extra:
        metadata = dataclasses.replace(metadata, extra={**metadata.extra, **extra})
    if keras3:
        save_keras3(model, output, metadata)
    else:
        save_model(model, output, metadata)  # writes the sidecar before the model's rename
    fmt = ModelFormat.KERAS_V3 if output.suffix.lower() == ".keras" else ModelFormat.KERAS_H5
    return Artifact(output, fmt, metadata)


@dataclass(frozen=True, kw_only=True)
class FineTuneReport(PassReport):
    """What every fine-tuning pass reports; each pass adds its own fields."""

    task: str
    metric: str
    #: float TFLite renderings of source and output ("source", "output" or "output_sparse")
    tflite: Mapping[str, TFLiteProfile] | None = None


#: largest |Δ| allowed between the tf_keras result and its Keras 3 copy, relative to the output scale
KERAS3_ATOL = 1e-5


def save_keras3(model, path: Path, metadata: Metadata) -> Path:
    """Write a tf_keras model as a Keras 3 ``.keras`` file, atomically, checked to predict the same.

    Why through .h5: Keras 3 reads legacy tf_keras HDF5 files (its documented migration route), so
    the layers and weights are rebuilt by Keras 3's own deserializer rather than by a copy of ours.
    """
    import keras

    from edgecompress.artifacts import atomic_path, write_metadata
    from edgecompress.runtimes.probe import trust

    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="edgecompress-k3-") as tmp:
        legacy = Path(tmp) / "model.h5"
        model.save(legacy, include_optimizer=False)
        try:
            copy = keras.saving.load_model(legacy, compile=False, safe_mode=True)
        except Exception as exc:  # noqa: BLE001 - Keras 3 raises ValueError, TypeError… on layers it lacks
            raise UsageError(
                f"Keras 3 cannot rebuild this model: {str(exc).splitlines()[0][:200]}", f"write {path.stem}.h5 instead"
            ) from exc
    shape = tuple(d or 1 for d in model.inputs[0].shape[1:])
    probe = np.random.default_rng(0).standard_normal((2, *shape)).astype(np.float32)
    expected, got = np.asarray(model(probe, training=False)), np.asarray(copy(probe, training=False))
    scale = max(1.0, float(np.max(np.abs(expected))))
    if expected.shape != got.shape or not float(np.max(np.abs(expected - got))) <= KERAS3_ATOL * scale:
        raise UsageError("the Keras 3 copy of the result predicts differently from it", f"write {path.stem}.h5 instead")
    with atomic_path(path) as tmp_path:
        copy.save(tmp_path)
        write_metadata(path, metadata)  # before the rename: the model's appearance is the commit
    trust(path)
    return path


class FineTuningPass(Pass):
    """What prune and cluster share: a private copy is transformed and fine-tuned, measured as float
    TFLite, and saved with its lineage. Scoring source and output is the runner's job."""

    accepts = KERAS_OUTPUTS
    produces = ModelFormat.KERAS_H5
    #: the work, as error messages name it ("pruning")
    purpose: str
    #: convert source and output to TFLite and measure size, MACs and LiteRT latency
    measure: bool = True
    report_type: type[FineTuneReport] = FineTuneReport

    def needs(self) -> frozenset[Role]:
        return frozenset({Role.TRAIN})

    @abc.abstractmethod
    def transform(self, model, task: str, train: ModelInputs, context: PassContext) -> tuple[Any, dict[str, Any]]:
        """The compressed, fine-tuned model and this pass's own report fields."""

    def tflite_measurements(self, source_model, output_model) -> dict[str, TFLiteProfile]:
        return {"source": tflite_profile(source_model), "output": tflite_profile(output_model)}

    def apply(self, artifact: Artifact, context: PassContext) -> PassResult:
        self.check_input(artifact)
        started = time.perf_counter()
        source, model = private_copy(artifact, context)
        task = task_of(artifact, source)
        train = require_training_data(context, self.purpose)
        output, details = self.transform(model, task, train, context)
        tflite = self.tflite_measurements(source.model, output) if self.measure else None
        result = write_output(output, artifact, source, context, self.name, self.params())
        report = self.report_type(
            pass_name=self.name, params=self.params(), seconds=time.perf_counter() - started, task=task,
            metric=primary_metric(task), tflite=tflite, float_reference=float_reference(source.model), **details,
        )  # fmt: skip
        return PassResult(result, report)


# --------------------------------------------------------------------------- TFLite measurements


@dataclass(frozen=True)
class TFLiteProfile:
    """A float TFLite rendering of a Keras model: what a device would load and run."""

    size_bytes: int
    gzip_bytes: int
    macs: int
    latency_ms_p50: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tflite_profile(model, optimize_sparsity: bool = False, threads: int = 2, runs: int = 50) -> TFLiteProfile:
    """Convert to float TFLite and measure size, gzip size, MACs and LiteRT latency (batch 1)."""
    from edgecompress.compress.convert import keras_to_tflite
    from edgecompress.compress.tflite_graph import estimate_macs

    data = keras_to_tflite(model, "float", optimize_sparsity=optimize_sparsity)
    return TFLiteProfile(
        size_bytes=len(data),
        gzip_bytes=len(gzip.compress(data, compresslevel=9)),
        macs=int(sum(estimate_macs(data).values())),
        latency_ms_p50=litert_latency(data, threads, runs) if runs else None,
    )


def litert_latency(data: bytes, threads: int = 2, runs: int = 50) -> float:
    """Median LiteRT latency in ms (XNNPACK, batch 1), timed as `compress bench` times it."""
    from edgecompress.runtimes.base import time_session
    from edgecompress.runtimes.litert import LiteRTRuntime
    from edgecompress.runtimes.probe import trust

    with tempfile.TemporaryDirectory(prefix="edgecompress-lat-") as tmp:
        path = Path(tmp) / "model.tflite"
        path.write_bytes(data)
        trust(path)  # the converter wrote it in this process a moment ago
        with LiteRTRuntime().open(Artifact(path, ModelFormat.TFLITE), "cpu", threads) as session:
            shape = tuple(d if d and d > 0 else 1 for d in session.inputs[0].shape[1:])
            sample = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)
            return time_session(session, sample, warmup=5, runs=runs).p50
