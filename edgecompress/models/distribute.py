"""tf.distribute for the training loops: which strategy, built once per process, and data sharded for it.

``default`` is TensorFlow's no-op strategy and leaves every loop exactly as it was. ``mirrored``
replicates the model on this machine's GPUs (or its CPU devices: ``EDGECOMPRESS_CPU_REPLICAS=N``
splits the CPU into N logical devices, to try data-parallel training where there is no GPU).
``multi-worker`` is MultiWorkerMirroredStrategy over the machines ``TF_CONFIG`` names; every worker
runs the same command. Models must be *built* under the strategy's scope (their variables are then
mirrored), so the training code builds and compiles inside :func:`scope`.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import os
from collections.abc import Iterator
from typing import Any

from edgecompress._env import import_tensorflow
from edgecompress.errors import UsageError

log = logging.getLogger(__name__)

CPU_REPLICAS_ENV = "EDGECOMPRESS_CPU_REPLICAS"


class Strategy(str, enum.Enum):
    DEFAULT = "default"
    MIRRORED = "mirrored"
    MULTI_WORKER = "multi-worker"


STRATEGIES = tuple(s.value for s in Strategy)
_BUILT: dict[Strategy, Any] = {}


def parse_strategy(value: Any, field: str = "--strategy") -> str:
    """A strategy name, checked (``None`` is the default); returned as its plain string."""
    if value is None:
        return Strategy.DEFAULT.value
    try:
        return Strategy(str(value.value if isinstance(value, Strategy) else value).lower().replace("_", "-")).value
    except ValueError:
        raise UsageError(f"unknown {field} '{value}'", f"choose one of: {', '.join(STRATEGIES)}") from None


def is_default(name: str | None) -> bool:
    return parse_strategy(name) == Strategy.DEFAULT.value


def get_strategy(name: str | None = None):
    """The tf.distribute strategy of this name, built on first use and kept for the process.

    ``multi-worker`` must be built before TensorFlow runs any op (the CLI does it first thing)."""
    strategy = Strategy(parse_strategy(name))
    if strategy in _BUILT:
        return _BUILT[strategy]
    tf = import_tensorflow()
    if strategy is Strategy.DEFAULT:
        built = tf.distribute.get_strategy()
    elif strategy is Strategy.MIRRORED:
        built = tf.distribute.MirroredStrategy(devices=_local_devices(tf))
    else:
        built = _multi_worker(tf)
    log.info("training with %s: %d replica(s) in sync", strategy.value, built.num_replicas_in_sync)
    _BUILT[strategy] = built
    return built


def _local_devices(tf) -> list[str] | None:
    """GPUs when there are any (None: TensorFlow's own choice); else the CPU's logical devices."""
    if tf.config.list_physical_devices("GPU"):
        return None
    wanted = int(os.environ.get(CPU_REPLICAS_ENV, "1") or 1)
    if wanted > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * wanted)
        except RuntimeError:
            if len(tf.config.list_logical_devices("CPU")) != wanted:
                raise UsageError(
                    f"{CPU_REPLICAS_ENV}={wanted} came after TensorFlow had started",
                    "choose --strategy on the command line (it is set up first), or build the strategy before any model",
                ) from None
    return [device.name for device in tf.config.list_logical_devices("CPU")]


def _multi_worker(tf):
    config = os.environ.get("TF_CONFIG")
    if not config:
        raise UsageError(
            "--strategy multi-worker needs TF_CONFIG (the cluster's workers and this one's index) on every worker",
            'e.g. TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}\'',
        )
    try:
        json.loads(config)
    except ValueError:
        raise UsageError("TF_CONFIG is not valid JSON", "see the TF_CONFIG example in the README") from None
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except (RuntimeError, ValueError) as exc:
        raise UsageError(
            f"cannot start multi-worker training: {str(exc).splitlines()[0]}",
            "choose --strategy multi-worker on the command line, so it is set up before TensorFlow runs anything",
        ) from None


def is_chief() -> bool:
    """Whether this worker keeps the outputs: the chief, else worker 0, else the only one (no TF_CONFIG)."""
    config = os.environ.get("TF_CONFIG")
    if not config:
        return True
    parsed = json.loads(config)
    task = parsed.get("task", {})
    kind, index = task.get("type", "worker"), int(task.get("index", 0))
    if "chief" in parsed.get("cluster", {}):
        return kind == "chief"
    return kind == "worker" and index == 0


@contextlib.contextmanager
def scope(name: str | None) -> Iterator[Any]:
    """Build and compile under the strategy (nothing at all for the default one); yields it."""
    if is_default(name):
        yield None
        return
    strategy = get_strategy(name)
    with strategy.scope():
        yield strategy


def replicas(name: str | None) -> int:
    return 1 if is_default(name) else int(get_strategy(name).num_replicas_in_sync)


def sharded_dataset(x, targets, batch_size: int, seed: int, shuffle: bool = True):
    """(x, targets) as a tf.data pipeline of *global* batches, sharded by data across workers.

    The batch size stays the global one, so steps per epoch, the learning-rate schedule and the
    budget do not change with the number of replicas; each replica gets its share of a batch."""
    tf = import_tensorflow()
    targets = tuple(targets) if isinstance(targets, list) else targets
    dataset = tf.data.Dataset.from_tensor_slices((x, targets))
    if shuffle:
        dataset = dataset.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.batch(batch_size).with_options(options)
