"""`--auto-keep-float --max-drop X`: the fewest layers left in float so the metric drops ≤ X points.

Calibrated once; every trial is a quantization from the same ranges plus an evaluation. Candidates
are ``compress inspect``'s worst layers (the error each op adds on its own) and the layers the
outputs come from; each is first tried alone, then they are added in the order of what they
recovered until the drop is within X. When no such set is enough — the error is spread over many
layers, none bad alone (a regression head whose every op adds a little noise to coordinates that
must stay within a pixel) — the *tail* of each output is tried: the k layers closest to it, k
doubling, then bisected. Whatever set is found, each layer is tried back out (fewest layers). Each
kept layer's price is measured at the end: file size and median latency with and without it.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from edgecompress.artifacts import Artifact, Metadata, ModelFormat
from edgecompress.calibration.data import ModelInputs
from edgecompress.compress.layermap import LayerMap
from edgecompress.compress.passes import PassContext
from edgecompress.runtimes.keras_io import KerasModel

if TYPE_CHECKING:
    from edgecompress.compress.convert import RangeOptions


class QuantizeSettings(Protocol):
    """What the search reads of a ``QuantizeConfig`` (quantize.py calls this module, not the reverse)."""

    format: Any
    mode: Any
    io: Any
    per_channel: bool
    max_drop: float | None

    def range_options(self, keep_float: tuple[str, ...] | None = None) -> RangeOptions: ...

log = logging.getLogger(__name__)

#: layers of inspect's ranking tried at most
MAX_CANDIDATES = 12
#: an output's tail grows to at most this share of the layers with int8 ops (beyond it, little is int8)
MAX_TAIL_SHARE = 0.5
#: samples of the evaluation data the ranking compares layer by layer
RANK_SAMPLES = 32
LATENCY_RUNS = 30


@dataclass(frozen=True)
class KeepFloatSearch:
    kept: tuple[str, ...]
    metric: str
    float_metric: float
    int8_metric: float  # nothing kept
    final_metric: float
    max_drop: float  # points
    met: bool
    trials: tuple[dict[str, Any], ...] = ()
    #: per kept layer: what leaving it in float costs (bytes, ms) against the same set without it
    costs: tuple[dict[str, Any], ...] = field(default=())

    @property
    def drop(self) -> float:
        return (self.float_metric - self.final_metric) * 100

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "drop_points": self.drop}


class _Trials:
    """Quantize with a keep-float set and score it; results cached by set."""

    def __init__(self, keras_model: KerasModel, config: QuantizeSettings, context: PassContext, task: str, workdir: Path):
        from edgecompress.compress import convert

        self.model = keras_model.model
        self.layer_map = LayerMap.of(self.model)
        self.config, self.task, self.workdir = config, task, workdir
        self.validation: ModelInputs = context.validation
        self.scores: dict[tuple[str, ...], float] = {}
        ranges = config.range_options(())
        if config.format.value == "tflite":
            self.calibrated = convert.keras_calibrated(self.model, context.calibration, ranges)
        else:
            from edgecompress.compress.onnx_calibrate import calibrate_onnx

            proto = convert.keras_to_onnx(self.model)
            self.calibrated = calibrate_onnx(proto, context.calibration, ranges.method or "minmax", ranges.percentile,
                                             config.mode.value)  # fmt: skip

    @property
    def fmt(self) -> ModelFormat:
        return ModelFormat.TFLITE if self.config.format.value == "tflite" else ModelFormat.ONNX

    def ranking(self) -> list[str]:
        from edgecompress.compress.inspect import finish_rows

        samples = dataclasses.replace(self.validation, data=self.validation.data.take(RANK_SAMPLES))
        if self.fmt is ModelFormat.TFLITE:
            from edgecompress.compress.inspect_tflite import inspect_tflite

            rows, _ = inspect_tflite(self.calibrated, self.layer_map, samples, self.config.per_channel)
        else:
            from edgecompress.compress.inspect_onnx import inspect_onnx

            rows, _ = inspect_onnx(self.calibrated, self.layer_map, samples, self.config.mode.value,
                                   self.config.per_channel)  # fmt: skip
        stats = sorted(finish_rows(rows, self.config.per_channel), key=lambda s: (_key(s.sqnr_alone_db), _key(s.sqnr_db)))
        return [name for name in dict.fromkeys(s.layer for s in stats) if name in self.layer_map.order]

    def output_layers(self) -> list[str]:
        """The layers whose ops produce the model's outputs (through reshapes)."""
        names = [str(n) for n in getattr(self.model, "output_names", None) or [] if str(n) in self.layer_map.order]
        return [self.layer_map.reshapes.get(name, name) for name in names]

    def layers_with_ops(self) -> list[str]:
        """Every layer that owns an op of the graph, in model order. Wider than inspect's ranking,
        which files an op under the layer whose output it produces: ONNX keeps a residual Add and its
        ReLU as two nodes, ranked as one (the ReLU), and a tail without the Add leaves it in int8."""
        found: set[str] = set()
        if self.fmt is ModelFormat.TFLITE:
            graph = self.calibrated.graph
            for op in graph.ops:
                for t in op.outputs:
                    found.update(graph.layers_of(t, self.layer_map))
        else:
            for node in self.calibrated.float_model.graph.node:
                found.update(self.layer_map.layers_in(";".join([node.name, *node.output])))
        return sorted(found, key=self.layer_map.order.get)

    def tail(self, output: str, with_ops: list[str]) -> list[str]:
        """The layers ``output`` depends on that have int8 ops, nearest to it first (reverse model order)."""
        from edgecompress.compress.kerasgraph import Wiring

        producers = Wiring.of(self.model).producers
        seen, frontier = {output}, [output]
        while frontier:
            frontier = [p for name in frontier for p in producers.get(name, ()) if p not in seen]
            seen.update(frontier)
        allowed = set(with_ops)
        return sorted((name for name in seen if name in allowed), key=self.layer_map.order.get, reverse=True)

    def write(self, kept: tuple[str, ...]) -> Path:
        from edgecompress.compress import convert
        from edgecompress.runtimes.probe import trust

        path = self.workdir / f"trial{len(list(self.workdir.iterdir()))}.{self.fmt.value}"
        if self.fmt is ModelFormat.TFLITE:
            names = self.calibrated.op_outputs_of(kept, self.layer_map, strict=True)
            data = self.calibrated.quantize(self.config.per_channel, self.config.io.value, names)
            path.write_bytes(convert.finish_tflite(data, self.model))
        else:
            exclude = self.calibrated.nodes_of(kept, self.layer_map)
            self.calibrated.quantize(path, self.config.mode.value, self.config.per_channel, exclude)
        trust(path)  # written by us a moment ago
        return path

    def artifact(self, path: Path) -> Artifact:
        names = [str(n) for n in getattr(self.model, "output_names", None) or []]
        return Artifact(path, self.fmt, Metadata(task=self.task, extra={"output_names": names}))

    def score(self, kept: tuple[str, ...], metric: str) -> float:
        kept = tuple(sorted(kept, key=self.layer_map.order.get))
        if kept not in self.scores:
            from edgecompress.models.tasks import evaluate
            from edgecompress.runtimes import open_session

            with open_session(self.artifact(self.write(kept))) as session:
                self.scores[kept] = evaluate(session, self.validation, self.task)[metric]
        return self.scores[kept]

    def cost(self, kept: tuple[str, ...]) -> tuple[int, float]:
        """(size in bytes, median latency in ms) of the model with ``kept`` in float."""
        import numpy as np

        from edgecompress.runtimes import open_session
        from edgecompress.runtimes.base import time_session

        path = self.write(tuple(kept))
        with open_session(self.artifact(path), threads=2) as session:
            x = self.validation.transform(self.validation.data.images[:1])
            return path.stat().st_size, float(time_session(session, np.asarray(x), warmup=3, runs=LATENCY_RUNS).p50)


def _tail_search(trials: _Trials, outputs: list[str], with_ops: list[str], limit: float, drop, log_rows: list) -> tuple:
    """The shortest tail (layers nearest an output) within the limit: k = 1, 2, 4, … then bisected.
    Outputs are tried in the order their own layer recovered the metric; () if no tail is enough."""
    most = max(1, int(len(with_ops) * MAX_TAIL_SHARE))
    for output in outputs:
        chain = trials.tail(output, with_ops)[:most]
        low, high = 0, None  # low: a size known to fail (0 = nothing kept); high: the first that met
        k = 1
        while k <= len(chain):
            log_rows.append({"kept": chain[:k], "drop_points": drop(tuple(chain[:k])), "tail_of": output})
            if drop(tuple(chain[:k])) <= limit:
                high = k
                break
            low = k
            k = len(chain) if k < len(chain) < 2 * k else 2 * k
        if high is None:
            continue
        while high - low > 1:
            middle = (low + high) // 2
            log_rows.append({"kept": chain[:middle], "drop_points": drop(tuple(chain[:middle])), "tail_of": output})
            if drop(tuple(chain[:middle])) <= limit:
                high = middle
            else:
                low = middle
        return tuple(chain[:high])
    return ()


def _key(value: float) -> float:
    import math

    return value if math.isfinite(value) else 1e9


def search_keep_float(
    keras_model: KerasModel, source: Artifact, config: QuantizeSettings, context: PassContext
) -> KeepFloatSearch:
    from edgecompress.models.tasks import TASKS, evaluate, infer_task
    from edgecompress.runtimes import open_session

    task = source.metadata.task or infer_task(keras_model.output_shape)
    metric = TASKS.get(task).primary_metric
    with open_session(source, trust_model=context.trust_model) as session:
        float_metric = evaluate(session, context.validation, task)[metric]
    limit = float(config.max_drop)
    with tempfile.TemporaryDirectory(prefix="edgecompress-keepfloat-") as tmp:
        trials = _Trials(keras_model, config, context, task, Path(tmp))

        def drop(kept: tuple[str, ...]) -> float:
            return (float_metric - trials.score(kept, metric)) * 100

        log_rows = [{"kept": [], "drop_points": drop(())}]
        kept: tuple[str, ...] = ()
        if drop(()) > limit:
            # Inspect's worst layers, and the layers the outputs come from (a task can be sensitive to an
            # output's resolution that no SQNR shows: keypoints 0.04 apart in a head whose range is 10).
            ranked = trials.ranking()
            candidates = list(dict.fromkeys([*ranked[:MAX_CANDIDATES], *trials.output_layers()]))
            alone = {layer: drop((layer,)) for layer in candidates}
            log_rows += [{"kept": [layer], "drop_points": value} for layer, value in alone.items()]
            for layer in sorted(candidates, key=lambda c: alone[c]):
                kept = (*kept, layer)
                log_rows.append({"kept": list(kept), "drop_points": drop(kept)})
                if drop(kept) <= limit:
                    break
            if drop(kept) > limit:
                outputs = sorted(trials.output_layers(), key=lambda c: alone.get(c, 1e9))
                kept = _tail_search(trials, outputs, trials.layers_with_ops(), limit, drop, log_rows) or kept
            if drop(kept) > limit:  # not reachable with these candidates: keep the best set seen
                kept = min(trials.scores, key=lambda k: (-trials.scores[k], len(k)))
            for layer in reversed(kept):  # fewest: take back out what is not needed, farthest first
                fewer = tuple(k for k in kept if k != layer)
                if fewer != kept and drop(fewer) <= limit:
                    kept = fewer
                    log_rows.append({"kept": list(kept), "drop_points": drop(kept)})
        costs = []
        if kept:
            size, latency = trials.cost(kept)
            for layer in kept:
                without = tuple(k for k in kept if k != layer)
                size_without, latency_without = trials.cost(without)
                costs.append({"layer": layer, "size_bytes": size - size_without, "latency_ms": latency - latency_without})
        final = trials.score(kept, metric)
    result = KeepFloatSearch(kept, metric, float_metric, trials.score((), metric), final, limit,
                             (float_metric - final) * 100 <= limit, tuple(log_rows), tuple(costs))  # fmt: skip
    if not result.met:
        log.warning("no keep-float set of the %d worst layers kept the drop ≤ %.2f points (best: %.2f with %s)",
                    MAX_CANDIDATES, limit, result.drop, ", ".join(kept) or "none")  # fmt: skip
    return result
