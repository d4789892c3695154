"""compress tune: the search cuts what cannot win (checked against the grid on a fake measurement
table), scores only what could still be the pick, the pick respects every budget, and a budget
nothing meets ends in one line."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from edgecompress.errors import BudgetError, UsageError
from edgecompress.pipeline.tune import (
    TUNE_TARGETS,
    KnownLimit,
    TuneTarget,
    Variant,
    dominated,
    search,
    search_space,
    thread_counts,
)
from edgecompress.pipeline.tune_run import choose, require_pick
from edgecompress.reports.tune import Budget, Measured, TuneResult, budget_line, render_html, render_lines

FIXES = [(("calibration", "entropy"),), (("equalize", True),), (("auto_keep_float", True), ("max_drop", 0.5))]
SOURCE = 0.96

#: (runtime, mode, per_channel, fix) → (latency ms at 1 and 2 threads, size MB, metric)
TABLE = {
    ("litert", "float", True, ()): ((1.00, 0.60), 2.8, 0.960),
    ("litert", "int8", True, ()): ((0.40, 0.25), 0.9, 0.958),
    ("litert", "int8", False, ()): ((0.42, 0.26), 0.7, 0.956),
    ("litert", "dynamic", True, ()): ((0.90, 0.55), 0.8, 0.960),
    ("litert", "dynamic", False, ()): ((0.90, 0.55), 0.7, 0.960),
    ("litert", "float16", True, ()): ((1.00, 0.61), 1.4, 0.960),
    ("litert", "int16x8", True, ()): ((9.00, 5.00), 0.9, 0.960),
    ("litert", "int16x8", False, ()): ((9.00, 5.00), 0.8, 0.960),
    ("onnxruntime", "float", True, ()): ((0.80, 0.50), 2.8, 0.960),
    ("onnxruntime", "int8", True, ()): ((0.50, 0.30), 1.0, 0.950),
    ("onnxruntime", "int8", False, ()): ((0.45, 0.28), 0.8, 0.940),
    ("onnxruntime", "dynamic", True, ()): ((2.00, 1.50), 0.9, 0.960),
    ("onnxruntime", "dynamic", False, ()): ((2.00, 1.50), 0.8, 0.960),
    ("onnxruntime", "float16", True, ()): ((1.50, 1.00), 1.4, 0.960),
    ("onnxruntime", "int16x8", True, ()): ((3.00, 2.00), 1.0, 0.960),
    ("onnxruntime", "int16x8", False, ()): ((3.00, 2.00), 0.9, 0.960),
}


def fake_metric(variant: Variant) -> tuple[tuple[float, float], float, float]:
    """A fix has the speed of its base; entropy calibration wins back accuracy, keep-float costs 10 %."""
    base = TABLE[(variant.runtime, variant.mode, variant.per_channel, ())]
    fixes = dict(variant.fixes)
    (one, two), size, metric = base
    if fixes.get("calibration") == "entropy":
        metric = min(SOURCE, metric + 0.008)
    if fixes.get("auto_keep_float"):
        one, two, size, metric = one * 1.1, two * 1.1, size * 1.2, SOURCE
    return (one, two), size, metric


class FakeBuilder:
    """Stands in for build + time (``__call__``) and for scoring (``score``): looks each variant up
    in the table and counts the builds and the scorings."""

    def __init__(self, table=None) -> None:
        self.built: list[Variant] = []
        self.scored: list[str] = []
        self.table = table or fake_metric
        self.metrics: dict[str, float] = {}

    def __call__(self, batch):
        out = []
        for v in batch:
            self.built.append(v)
            (one, two), size, metric = self.table(v)
            self.metrics[v.label] = metric
            out.append(Measured(v.label, v.runtime, v.format, v.settings(), f"/fake/{v.label}", int(size * 1e6),
                                {1: one, 2: two}, status="timed"))  # fmt: skip
        return out

    def score(self, measured: Measured) -> Measured:
        self.scored.append(measured.label)
        return replace(measured, status="ok", metric_name="top1", metric=self.metrics[measured.label],
                       source_metric=SOURCE)  # fmt: skip


X86 = TUNE_TARGETS.get("x86-avx512")
SPACE = search_space(("litert", "onnxruntime"), FIXES)


def run(budget: Budget, target: TuneTarget = X86, grid: bool = False, table=None):
    builder = FakeBuilder(table)
    state = search(SPACE, builder, budget, target, grid=grid, score=builder.score)
    return state, builder.built


def test_search_cuts_dominated_branches_and_agrees_with_the_grid():
    budget = Budget(max_drop=0.5)
    state, built = run(budget)
    grid_state, grid_built = run(budget, grid=True)
    assert len(grid_built) == len(SPACE) == len(state.measured) + len(state.cut)
    # The grid's pick is the search's pick, at a fraction of the builds.
    assert choose(state)[0].label == choose(grid_state)[0].label == "int8 per-channel · litert"
    assert len(built) <= len(SPACE) / 2
    labels = {v.label for v in built}
    # float16 and int16x8 on LiteRT run float or reference kernels: floored at the float model's 0.60 ms.
    assert "float16 · litert" not in labels and "int16x8 per-channel · litert" not in labels
    cut = {c.label: c.reason for c in state.cut}
    assert "cannot beat int8 per-channel · litert" in cut["float16 · litert"]
    # the representative meets the drop: an accuracy fix of it has its graph, so its speed at best
    assert "same graph" in cut["int8 per-channel calibration=entropy · litert"]
    assert "adds float layers" in cut["int8 per-channel auto-keep-float max-drop=0.5 · litert"]
    # XNNPACK runs per-tensor at per-channel speed (a known limit); ONNX Runtime's per-tensor is measured
    assert "int8 per-tensor · litert" in cut and "int8 per-tensor · onnxruntime" in labels
    # dynamic has no known limit on LiteRT: it is measured, not assumed
    assert "dynamic per-channel · litert" in labels


def test_an_accuracy_fix_is_searched_only_while_it_could_win():
    """ONNX Runtime alone: its int8 misses the drop (1.0 point); entropy calibration wins it back."""
    space = search_space(("onnxruntime",), FIXES)
    builder = FakeBuilder()
    state = search(space, builder, Budget(max_drop=0.5), X86, score=builder.score)
    pick, why, _ = choose(state)
    assert pick.label == "int8 per-channel calibration=entropy · onnxruntime"
    built = [v.label for v in builder.built]
    # tried in order, and the search stops refining once a fix meets the drop
    assert built.index("int8 per-channel · onnxruntime") < built.index(pick.label)
    assert "int8 per-channel equalize · onnxruntime" not in built
    grid = FakeBuilder()
    assert choose(search(space, grid, Budget(max_drop=0.5), X86, grid=True, score=grid.score))[0].label == pick.label
    assert "fastest of the" in why


def test_without_known_limits_nothing_is_assumed():
    bare = TuneTarget("bare", "no limits", ("litert",), (1, 2))
    space = search_space(("litert",), ())
    builder = FakeBuilder()
    search(space, builder, Budget(), bare, score=builder.score)
    assert {"float16 · litert", "int16x8 per-channel · litert"} <= {v.label for v in builder.built}


def test_a_variant_no_faster_than_the_incumbent_is_timed_but_not_scored():
    budget = Budget(max_drop=0.5)
    builder = FakeBuilder()
    state = search(SPACE, builder, budget, X86, score=builder.score)
    grid = FakeBuilder()
    grid_state = search(SPACE, grid, budget, X86, grid=True, score=grid.score)
    # the pick is the grid's, which scored every variant it built
    pick = choose(state)[0]
    assert pick.label == choose(grid_state)[0].label == "int8 per-channel · litert"
    assert len(grid.scored) == len(grid.built) == len(SPACE)
    assert all(m.scored for m in grid_state.measured.values())
    # Round 1 scores the faster float model (ONNX Runtime, 0.50 ms): it meets the drop, so LiteRT's
    # float (0.60 ms) can no longer be the pick and is only timed; so is every later variant slower
    # than LiteRT's int8 (0.25 ms), whatever its metric would have been.
    assert builder.scored == ["float · onnxruntime", "int8 per-channel · litert"]
    timed = {m.label: m for m in state.measured.values() if m.ok and not m.scored}
    assert set(timed) == {v.label for v in builder.built} - set(builder.scored)
    assert {"float · litert", "int8 per-channel · onnxruntime", "int8 per-tensor · onnxruntime"} <= set(timed)
    float_litert = timed["float · litert"]
    assert float_litert.status == "timed" and float_litert.metric is None and float_litert.drop is None
    assert "not scored: no faster than float · onnxruntime (0.500 ms)" in float_litert.note
    assert "no faster than int8 per-channel · litert" in timed["int8 per-channel · onnxruntime"].note
    assert all(m.latency_ms >= pick.latency_ms for m in timed.values())
    assert not any(budget.met_by(m) for m in timed.values())  # never counted as meeting the drop
    # the report says so; it never shows a metric for them
    result = TuneResult("m", "top1", budget, "x86", "", (1, 2), "here", tuple(state.measured.values()),
                        tuple(state.cut), len(SPACE), pick, choose(state)[1])  # fmt: skip
    assert result.scored == 2 and json.loads(json.dumps(result.to_dict()))["scored"] == 2
    lines = render_lines(result)
    assert any(line.startswith("  timed only    float · litert: 0.600 ms, not scored") for line in lines)
    assert "2 scored" in lines[3]
    assert "Timed, not scored" in render_html(result, None)
    records = [r for r in result.records() if (r.variant, r.runtime) == ("float", "litert")]
    assert records and all(r.metric_value is None and r.note.startswith("not scored") for r in records)
    assert "float · litert" not in {m.label for m in result.front("latency")}


def test_a_variant_faster_than_the_incumbent_is_scored_even_within_the_timing_noise():
    """LiteRT's int8 (0.25 ms) leads when ONNX Runtime's per-tensor int8 is timed at 0.245 ms: 2 %
    faster, less than the noise margin a floor gets, but a measured latency is no floor: scored, picked."""

    def table(variant):
        (one, two), size, metric = fake_metric(variant)
        if (variant.runtime, variant.mode, variant.per_channel) == ("onnxruntime", "int8", False):
            return (one, 0.245), size, 0.958
        return (one, two), size, metric

    builder = FakeBuilder(table)
    state = search(SPACE, builder, Budget(max_drop=0.5), X86, score=builder.score)
    assert "int8 per-tensor · onnxruntime" in builder.scored
    grid = FakeBuilder(table)
    grid_state = search(SPACE, grid, Budget(max_drop=0.5), X86, grid=True, score=grid.score)
    assert choose(state)[0].label == choose(grid_state)[0].label == "int8 per-tensor · onnxruntime"


def test_dominated_compares_latency_then_size_with_the_incumbent_only():
    budget = Budget(max_drop=0.5)
    state = search([], FakeBuilder(), budget, X86)
    timed = Measured("a", "litert", "tflite", {}, "/a", 1000, {1: 0.3}, status="timed")
    assert dominated(timed, state) is None  # no incumbent yet: it must be scored
    scored = replace(timed, label="b", status="ok", metric_name="top1", metric=SOURCE, source_metric=SOURCE)
    state.measured[Variant("litert", "int8")] = scored
    assert dominated(timed, state) is scored  # as fast and as large
    assert dominated(replace(timed, size_bytes=999), state) is None  # as fast, smaller: it wins the tie
    assert dominated(replace(timed, latency_by_threads={1: 0.2999}), state) is None
    # an incumbent that misses the drop bounds nothing
    state.measured[Variant("litert", "int8")] = replace(scored, metric=SOURCE - 0.01)
    assert dominated(timed, state) is None


@pytest.mark.parametrize(
    ("budget", "expected"),
    [
        (Budget(max_drop=0.5), "int8 per-channel · litert"),
        (Budget(max_drop=0.1), "int8 per-channel calibration=entropy · litert"),  # plain int8 drops 0.2 points
        (Budget(max_drop=0.5, size_mb=0.75), "int8 per-tensor · litert"),  # per-channel is 0.9 MB
        (Budget(max_drop=0.1, size_mb=0.75), "dynamic per-tensor · litert"),
        (Budget(max_drop=2.5, latency_ms=0.3), "int8 per-channel · litert"),
    ],
)
def test_the_pick_respects_each_budget(budget, expected):
    state, _ = run(budget)
    pick, _, _ = choose(state)
    assert pick.label == expected
    assert budget.met_by(pick)
    assert pick.drop <= budget.max_drop
    assert budget.latency_ms is None or pick.latency_ms <= budget.latency_ms
    assert budget.size_bytes is None or pick.size_bytes <= budget.size_bytes
    grid_state, _ = run(budget, grid=True)
    assert choose(grid_state)[0].label == expected


def test_a_budget_nothing_meets_names_the_closest_candidate_in_one_line():
    budget = Budget(max_drop=0.5, latency_ms=0.1)
    state, _ = run(budget)
    pick, _, closest = choose(state)
    assert pick is None and closest.label == "int8 per-channel · litert"
    assert all(m.scored for m in state.measured.values())  # no incumbent: nothing was skipped
    result = TuneResult("m", "top1", budget, "x86", "", (1, 2), "here", tuple(state.measured.values()),
                        tuple(state.cut), len(SPACE), None, "nothing meets the budget", closest)  # fmt: skip
    line = budget_line(result)
    assert "\n" not in line
    assert "closest: int8 per-channel · litert" in line and "0.250 ms" in line and "latency ≤ 0.1 ms" in line
    with pytest.raises(BudgetError) as caught:
        require_pick(result)
    assert caught.value.exit_code == 9 and caught.value.result is result
    assert any(row.startswith("  no pick") for row in render_lines(result))
    json.dumps(result.to_dict())


def test_budget_and_threads_are_validated():
    with pytest.raises(UsageError, match="max_drop"):
        Budget(max_drop=-1)
    with pytest.raises(UsageError, match="latency_ms"):
        Budget(latency_ms=0)
    with pytest.raises(UsageError):
        TUNE_TARGETS.get("rpi9")
    assert thread_counts(1, X86) == (1,)
    assert thread_counts(2, X86) == (1, 2)
    assert thread_counts(None, TUNE_TARGETS.get("rpi4"))[0] == 1


def test_known_limits_name_their_target():
    for name in ("x86-avx512", "rpi4", "rpi5", "android-arm64"):
        target = TUNE_TARGETS.get(name)
        assert target.runtimes and target.threads
        assert all(isinstance(limit, KnownLimit) and limit.reason for limit in target.limits)


def test_a_tune_recipe_reads_paths_next_to_it_and_refuses_unknown_keys(tmp_path):
    from edgecompress.pipeline.tune_run import load_tune_recipe

    recipe = tmp_path / "tune.yaml"
    recipe.write_text("tune:\n  model: m.h5\n  calib: digits\n  eval: val/\n  max_drop: 1\n  runtimes: [litert]\n"
                      "  threads: [1, 2]\n  latency_budget: 3\n")  # fmt: skip
    config = load_tune_recipe(recipe)
    assert config.model == tmp_path / "m.h5" and config.calib == "digits" and config.eval == str(tmp_path / "val/")
    assert config.budget == Budget(1, 3, None) and config.runtimes == ("litert",) and config.threads == (1, 2)
    recipe.write_text("model: m.h5\ncalib: digits\neval: digits\nmax_dorp: 1\n")
    with pytest.raises(UsageError, match="unknown key 'max_dorp'"):
        load_tune_recipe(recipe)
    recipe.write_text("model: m.h5\ncalib: digits\neval: digits\nruntimes: tensorrt\n")
    with pytest.raises(UsageError, match="tensorrt"):
        load_tune_recipe(recipe)


@pytest.mark.slow
def test_compress_tune_end_to_end_then_a_budget_nothing_meets(tiny_classifier, workdir):
    """LiteRT only, one thread, 5 timed runs: the float model, int8 and dynamic are built (32 px);
    the second run reuses every stage and ends in one error line naming the closest candidate."""
    from click.testing import CliRunner

    from edgecompress.cli import cli

    work = workdir / "tune-work"
    common = ["tune", str(tiny_classifier), "--calib", "digits", "--calib-samples", "50", "--eval", "digits",
              "--runtimes", "litert", "--threads", "1", "--target", "x86-avx512", "--runs", "5", "--work-dir", str(work)]  # fmt: skip
    result = CliRunner().invoke(cli, [*common, "--max-drop", "3", "-o", str(workdir / "picked")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((work / "tune.json").read_text())
    pick = report["pick"]
    assert pick["drop"] <= 3 and report["output"].endswith("picked.tflite")
    assert (workdir / "picked.tflite").exists() and (workdir / "picked.tflite.json").exists()
    sidecar = json.loads((workdir / "picked.tflite.json").read_text())
    assert sidecar["extra"]["tune"]["pick"] == pick["label"] and sidecar["lineage"]
    assert "← pick" in result.output and "Pareto front" in result.output
    assert "float16 · litert: cannot beat" in result.output  # a known limit of x86-avx512, not built
    assert "<svg" in (work / "tune.html").read_text() and (work / "tune.png").stat().st_size > 1000
    assert report["built"] < report["space_size"]

    result = CliRunner().invoke(cli, [*common, "--latency-budget", "0.00001", "-o", str(workdir / "none")])
    assert result.exit_code == 9
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no variant meets" in errors[0] and "closest: " in errors[0]
    assert "(0 built," in result.output  # every stage came from the first run's cache
    assert not (workdir / "none.tflite").exists()
