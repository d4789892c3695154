"""`compress distill`: train a small student from a teacher's outputs (knowledge distillation).

The student learns from a mix of the ground truth and the teacher's outputs. The distillation
loss depends on the task: tempered soft-max KL for classification (Hinton et al.), the same per
pixel for segmentation, and regression towards the teacher's heatmaps / coordinates / boxes for
keypoints and detection. The teacher's outputs are computed once (no augmentation, so they are the
same every epoch). For the report the same student (same initial weights, data, epochs and
optimiser) is also trained alone, and both are scored on held-out data.

References: Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network" (2015);
Liu et al., "Structured Knowledge Distillation for Semantic Segmentation" (CVPR 2019) for per-pixel
KD; Zhang et al., "Fast Human Pose Estimation" (CVPR 2019) for heatmap distillation.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgecompress._env import import_tensorflow, import_tf_keras
from edgecompress.artifacts import Artifact, Metadata, ModelFormat
from edgecompress.calibration.data import ModelInputs
from edgecompress.compress import finetune
from edgecompress.compress.export import float_reference
from edgecompress.compress.finetune import FineTune
from edgecompress.compress.passes import PASSES, Pass, PassContext, PassReport, PassResult, Role
from edgecompress.errors import UnsupportedError, UsageError

log = logging.getLogger(__name__)


KD_LOSS_NAMES = {"classification": "softmax KL", "segmentation": "per-pixel softmax KL",
                 "keypoints": "heatmap L2 / coordinate L1", "detection": "box L1"}  # fmt: skip
#: Hinton KD defaults, shared with channel pruning's --distill
KD_TEMPERATURE = 4.0
KD_ALPHA = 0.5


@dataclass(frozen=True)
class DistillConfig:
    #: a zoo name with parameters ("mobilenet_v2:alpha=0.35,input_size=96") or a Keras model file
    student: str
    temperature: float = KD_TEMPERATURE
    #: weight of the distillation loss; 1 - alpha goes to the ground-truth loss
    alpha: float = KD_ALPHA
    finetune: FineTune = field(default_factory=lambda: FineTune(epochs=10, lr=2e-3))
    #: also train the student alone, for the report's comparison
    baseline: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.finetune, dict):
            object.__setattr__(self, "finetune", FineTune.from_dict(self.finetune))
        if not float(self.temperature) > 0:
            raise UsageError(f"--temperature must be positive, not {self.temperature}", "pass e.g. --temperature 4")
        if not 0.0 <= float(self.alpha) <= 1.0:
            raise UsageError(f"--alpha must be in [0, 1], not {self.alpha}", "pass e.g. --alpha 0.5")
        if self.finetune.epochs < 1:
            raise UsageError("distillation trains the student, so it needs --epochs 1 or more", "pass --epochs N")

    def to_dict(self) -> dict[str, Any]:
        return {"student": self.student, "temperature": self.temperature, "alpha": self.alpha,
                "baseline": self.baseline, **self.finetune.to_dict()}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DistillConfig:
        return finetune.config_from_params(cls, data)


# --------------------------------------------------------------------------- losses, keyed by task


def _logits(outputs, probabilities: bool):
    """Log-probabilities stand in for logits: softmax(log p / T) is the tempered distribution of p."""
    tf = import_tensorflow()
    return tf.math.log(tf.clip_by_value(outputs, 1e-7, 1.0)) if probabilities else outputs


def softmax_kd(temperature: float, teacher_probs: bool, student_probs: bool) -> Callable:
    """KL(teacher_T || student_T) · T² over the last axis, averaged over samples (and pixels)."""
    tf = import_tensorflow()

    def loss(teacher, student):
        t = tf.nn.softmax(_logits(teacher, teacher_probs) / temperature, axis=-1)
        log_s = tf.nn.log_softmax(_logits(student, student_probs) / temperature, axis=-1)
        kl = tf.reduce_sum(t * (tf.math.log(tf.clip_by_value(t, 1e-12, 1.0)) - log_s), axis=-1)
        return tf.reduce_mean(kl) * temperature**2

    return loss


def heatmap_kd(teacher, student):
    """Squared error to the teacher's heatmaps, summed over each map (as the heatmap task loss)."""
    tf = import_tensorflow()
    return tf.reduce_mean(tf.reduce_sum(tf.square(teacher - student), axis=[1, 2])) * 0.1


def coordinate_kd(teacher, student):
    """L1 to the teacher's coordinates (x, y, z of keypoints, or box corners)."""
    tf = import_tensorflow()
    if len(teacher.shape) == 3:  # keypoints (N, K, x y z visibility): the visibility logit is left out
        teacher, student = teacher[..., :3], student[..., :3]
    return tf.reduce_mean(tf.reduce_sum(tf.abs(teacher - student), axis=-1))


def kd_losses(task: str, teacher, student, temperature: float) -> list[Callable]:
    """One distillation loss per output of the student, chosen by the task."""
    from edgecompress.models.tasks import keypoint_outputs
    from edgecompress.models.train import outputs_probabilities

    shapes = [tuple(o.shape) for o in student.outputs]
    if task in ("classification", "segmentation"):
        return [softmax_kd(temperature, outputs_probabilities(teacher), outputs_probabilities(student))]
    if task == "detection":
        return [coordinate_kd]
    if task == "keypoints":
        regression, heatmap = keypoint_outputs(shapes)
        return [heatmap_kd if i == heatmap else coordinate_kd for i in range(len(shapes))]
    raise UnsupportedError(f"no distillation loss for task '{task}'", "distill classification, segmentation or keypoint models")


def make_distiller(student, task_losses: list[Callable], kd: list[Callable], alpha: float):
    """A tf_keras Model whose train_step mixes the task loss and the distillation loss."""
    tf = import_tensorflow()
    tf_keras = import_tf_keras()

    class Distiller(tf_keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.student = student

        def call(self, x, training=False):
            return self.student(x, training=training)

        def train_step(self, data):
            x, (targets, teacher) = data
            with tf.GradientTape() as tape:
                outputs = self.student(x, training=True)
                outputs = outputs if isinstance(outputs, list | tuple) else [outputs]
                task = tf.add_n([tf.reduce_mean(f(y, o)) for f, y, o in zip(task_losses, targets, outputs, strict=True)])
                distill = tf.add_n([f(t, o) for f, t, o in zip(kd, teacher, outputs, strict=True)])
                loss = (1.0 - alpha) * task + alpha * distill
            variables = self.student.trainable_variables
            self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
            return {"loss": loss, "task_loss": task, "kd_loss": distill}

    return Distiller()


def train_student(
    student, task: str, x: np.ndarray, targets: list[np.ndarray], teacher_out: list[np.ndarray],
    task_losses: list[Callable], kd: list[Callable], alpha: float, ft: FineTune, progress: bool,
) -> dict[str, list[float]]:
    """Fit the student with Adam + cosine decay (as `models/train.py`); alpha 0 is training alone."""
    tf = import_tensorflow()
    tf_keras = import_tf_keras()
    tf_keras.utils.set_random_seed(ft.seed)
    dataset = (
        tf.data.Dataset.from_tensor_slices((x, (tuple(targets), tuple(teacher_out))))
        .shuffle(len(x), seed=ft.seed, reshuffle_each_iteration=True)
        .batch(ft.batch_size)
    )
    steps = ft.epochs * int(np.ceil(len(x) / ft.batch_size))
    schedule = tf_keras.optimizers.schedules.CosineDecay(ft.lr, decay_steps=max(1, steps), alpha=0.05)
    distiller = make_distiller(student, task_losses, kd, alpha)
    distiller.compile(optimizer=tf_keras.optimizers.Adam(schedule))
    callbacks = []
    if progress:
        from edgecompress._progress import keras_progress

        callbacks.append(keras_progress())
    history = distiller.fit(dataset, epochs=ft.epochs, verbose=0, callbacks=callbacks)
    return {k: [float(v) for v in values] for k, values in history.history.items()}


# --------------------------------------------------------------------------- the student


def parse_student(spec: str) -> tuple[str, dict[str, Any]]:
    """``name:key=value,key=value`` → (name, params) with numbers parsed."""
    name, _, rest = spec.partition(":")
    params: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise UsageError(f"student parameter '{item}' has no value", "write e.g. mobilenet_v2:alpha=0.35,input_size=96")
        for cast in (int, float):
            try:
                params[key.strip()] = cast(value)
                break
            except ValueError:
                continue
        else:
            params[key.strip()] = value.strip()
    return name.strip(), params


def build_student(spec: str, teacher, task: str, trust_model: bool) -> tuple[Any, Metadata | None, str]:
    """The student model (fresh weights for a zoo name; a private copy for a file), its metadata, a name."""
    from edgecompress.models.zoo import ZOO, build

    path = Path(spec)
    if path.exists():
        from edgecompress.artifacts import read_sidecar
        from edgecompress.runtimes.keras_io import load_keras, to_tf_keras

        tf_keras = import_tf_keras()
        loaded = to_tf_keras(load_keras(path, trust_model)).model
        student = tf_keras.models.clone_model(loaded)
        student.set_weights(loaded.get_weights())
        return student, read_sidecar(path), path.name
    name, params = parse_student(spec)
    if name not in ZOO:
        raise UsageError(
            f"student '{spec}' is neither a model file nor a zoo model",
            f"pass a .h5 file or one of: {', '.join(ZOO.names())} (e.g. mobilenet_v2:alpha=0.35)",
        )
    entry = ZOO.get(name)
    if entry.task != task:
        raise UsageError(f"zoo model {name} is a {entry.task} model, the teacher a {task} one", "pick a student of the same task")
    # Unless given, the student takes the teacher's input size and number of classes / keypoints.
    shape = tuple(int(d) for d in teacher.inputs[0].shape[1:])
    inferred = {"input_size": shape[0], "classes": int(teacher.outputs[0].shape[-1])}
    if task == "keypoints":
        inferred = {"input_size": shape[0]}
    for key, value in inferred.items():
        if key in entry.defaults:
            params.setdefault(key, value)
    model, metadata = build(name, **params)
    return model, metadata, f"{name}({', '.join(f'{k}={v}' for k, v in params.items())})"


def teacher_outputs(model, x: np.ndarray, batch: int = 128) -> list[np.ndarray]:
    parts = []
    for i in range(0, len(x), batch):
        out = model(x[i : i + batch], training=False)
        parts.append([np.asarray(o) for o in (out if isinstance(out, list | tuple) else [out])])
    return [np.concatenate(p, axis=0) for p in zip(*parts, strict=True)]


@dataclass(frozen=True, kw_only=True)
class DistillReport(PassReport):
    task: str
    metric: str
    student: str
    student_params: int
    teacher_params: int
    kd_loss: str
    #: held-out scores: "teacher", "alone" (the same student trained on labels only), "distilled"
    scores: Mapping[str, Mapping[str, float] | None]
    final_losses: Mapping[str, float]


@PASSES.register("distill")
class DistillPass(Pass):
    """Input: the teacher. Output: the distilled student, with the teacher's task and labels."""

    name = "distill"
    accepts = finetune.KERAS_OUTPUTS
    produces = ModelFormat.KERAS_H5

    def __init__(self, config: DistillConfig | None = None, **kwargs: Any) -> None:
        self.config = config or finetune.config_from_params(DistillConfig, kwargs)

    def needs(self) -> frozenset[Role]:
        return frozenset({Role.TRAIN})

    def params(self) -> dict[str, Any]:
        return self.config.to_dict()

    def apply(self, artifact: Artifact, context: PassContext) -> PassResult:
        from edgecompress.models.train import fit_spec

        self.check_input(artifact)
        config, ft = self.config, self.config.finetune
        started = time.perf_counter()
        teacher_km, teacher = finetune.private_copy(artifact, context)
        task = finetune.task_of(artifact, teacher_km)
        train = finetune.require_training_data(context, "distillation")
        student, student_meta, student_name = build_student(config.student, teacher, task, context.trust_model)
        preprocessing = (student_meta.preprocessing if student_meta else None) or context.preprocessing
        shape = tuple(int(d) for d in student.inputs[0].shape[1:])
        student_train = ModelInputs.build(train.data, shape, preprocessing)
        student_eval = ModelInputs.build(context.validation.data, shape, preprocessing) if context.validation else None

        teacher_out = teacher_outputs(teacher, train.array())
        student_shapes = [tuple(o.shape[1:]) for o in student.outputs]
        if [t.shape[1:] for t in teacher_out] != student_shapes:
            raise UnsupportedError(
                f"the student's outputs {student_shapes} differ from the teacher's {[t.shape[1:] for t in teacher_out]}",
                "build the student with the teacher's number of classes / keypoints and output size",
            )
        spec = fit_spec(student, task, student_train.data)
        task_losses = [tf_loss for tf_loss in spec.losses]
        kd = kd_losses(task, teacher, student, config.temperature)
        x = student_train.array()
        initial = student.get_weights()
        scores: dict[str, Any] = {"teacher": finetune.score(teacher, context.validation, task)}
        if config.baseline:
            train_student(student, task, x, spec.targets, teacher_out, task_losses, kd, 0.0, ft, context.progress)
            scores["alone"] = finetune.score(student, student_eval, task)
            student.set_weights(initial)  # the same start for the distilled run
        history = train_student(student, task, x, spec.targets, teacher_out, task_losses, kd, config.alpha, ft,
                                context.progress)  # fmt: skip
        scores["distilled"] = finetune.score(student, student_eval, task)

        view = student_meta or Metadata()
        result = finetune.write_output(
            student, artifact, teacher_km, dataclasses.replace(context, preprocessing=preprocessing), self.name,
            self.params(), extra={**view.extra, "model_name": Path(context.output).stem, "teacher": str(artifact.path)},
        )  # fmt: skip
        report = DistillReport(
            pass_name=self.name, params=self.params(), seconds=time.perf_counter() - started, task=task,
            metric=finetune.primary_metric(task), student=student_name, student_params=int(student.count_params()),
            teacher_params=int(teacher.count_params()), kd_loss=KD_LOSS_NAMES[task], scores=scores,
            final_losses={k: v[-1] for k, v in history.items()}, float_reference=float_reference(teacher),
        )  # fmt: skip
        return PassResult(result, report)
