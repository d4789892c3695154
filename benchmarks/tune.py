"""`compress tune` checked against the full grid: the zoo MobileNetV2 (64 px, trained on digits).

    python benchmarks/tune.py                  # --max-drop 0.5, this machine's target (x86-avx512 here)
    python benchmarks/tune.py --max-drop 1

The model is trained exactly as ``benchmarks/zoo.py`` trains it (its cached
``benchmarks/out/zoo/mobilenet_v2.h5`` is reused when present). Then the same search runs twice,
each from an empty cache: branch and bound (what ``compress tune`` does) and the grid (every
variant built, timed and scored, ``compress tune --grid``). Done when the search's pick meets the drop and is
the fastest of the grid's variants that do (within the timing noise the search itself allows), in
at most a third of the grid's wall time.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from edgecompress._env import configure_environment  # noqa: E402

configure_environment()

NAME = "mobilenet_v2"


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def trained_model(zoo_dir: Path) -> Path:
    from zoo import BENCH

    from edgecompress._env import import_tensorflow
    from edgecompress.models.train import train_zoo

    path = zoo_dir / f"{NAME}.h5"
    if path.exists():
        say(f"{NAME}: cached {path}")
        return path
    import_tensorflow().config.experimental.enable_op_determinism()
    params, epochs, lr = BENCH[NAME]
    started = time.perf_counter()
    trained = train_zoo(NAME, path, None, epochs, 0.1, 32, lr, params, progress=False, force=True)
    say(f"{NAME}: trained in {time.perf_counter() - started:.0f} s, {trained.metric}")
    return path


def one_search(model: Path, workdir: Path, search: str, max_drop: float, runs: int):
    from edgecompress import api

    shutil.rmtree(workdir, ignore_errors=True)  # an empty cache: the wall time is the whole search's
    started = time.perf_counter()
    result = api.tune(model, calib="digits", eval="digits", max_drop=max_drop, output=workdir / "picked",
                      work_dir=workdir, search=search, runs=runs, force=True, strict=False)  # fmt: skip
    return result, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-drop", type=float, default=0.5)
    parser.add_argument("--runs", type=int, default=50, help="Timed runs per variant and thread count.")
    parser.add_argument("--workdir", type=Path, default=HERE / "out" / "tune")
    parser.add_argument("--zoo-dir", type=Path, default=HERE / "out" / "zoo")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    from edgecompress._env import quiet_python_loggers
    from edgecompress.pipeline.tune import NOISE
    from edgecompress.reports.records import machine_description
    from edgecompress.reports.tune import render_lines

    quiet_python_loggers()
    args.zoo_dir.mkdir(parents=True, exist_ok=True)
    model = trained_model(args.zoo_dir)
    from edgecompress._env import import_tensorflow

    import_tensorflow()  # both searches start with TensorFlow loaded: neither pays its import
    searched, search_s = one_search(model, args.workdir / "search", "branch-and-bound", args.max_drop, args.runs)
    say("\n".join(render_lines(searched)))
    grid, grid_s = one_search(model, args.workdir / "grid", "grid", args.max_drop, args.runs)
    budget = grid.budget
    feasible = sorted((m for m in grid.measured if m.ok and budget.met_by(m)), key=lambda m: m.latency_ms)
    pick = searched.pick
    best = feasible[0] if feasible else None
    in_grid = next((m for m in grid.measured if pick is not None and m.label == pick.label), None)
    agrees = pick is not None and best is not None and (
        pick.label == best.label or (in_grid is not None and in_grid.latency_ms <= best.latency_ms * (1 + NOISE)))
    command = "python benchmarks/tune.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        f"Command: `{command.strip()}`  ",
        f"Machine: {machine_description()}; {time.strftime('%Y-%m-%d')}; target {searched.target}.",
        "",
        f"- search (branch and bound): {len(searched.measured)} of {searched.space_size} variants built and timed, "
        f"{searched.scored} of them scored (the others no faster than a variant already known to meet the budget), "
        f"{len(searched.cut)} cut, {search_s:.0f} s; pick: {pick.summary() if pick else 'none'}",
        f"- grid: {len(grid.measured)} variants built, timed and scored, {grid_s:.0f} s; fastest meeting "
        f"{budget.describe(grid.metric_name)}: {best.summary() if best else 'none'}"
        + (f"; the search's pick measured {in_grid.latency_ms:.3f} ms in the grid" if in_grid else ""),
        f"- search / grid wall time: {search_s / grid_s:.2f} (target ≤ 0.33); same pick as the grid's fastest "
        f"(within {NOISE:.0%} timing noise): {'yes' if agrees else 'NO'}",
        "",
        "| variant (grid) | threads | latency ms | size MB | top-1 (grid) | Δ points | meets drop | search |",
        "|---|---|---|---|---|---|---|---|",
    ]
    status = {m.label: _searched(m) for m in searched.measured}
    for m in sorted(grid.measured, key=lambda m: m.latency_ms):
        if not m.ok:
            lines.append(f"| {m.label} | - | failed | - | - | - | - | {status.get(m.label, 'cut')} |")
            continue
        lines.append(f"| {m.label} | {m.threads} | {m.latency_ms:.3f} | {m.size_bytes / 1e6:.2f} | {m.metric:.2%} | "
                     f"{-m.drop:+.2f} | {'yes' if budget.met_by(m) else 'no'} | {status.get(m.label, 'cut')} |")  # fmt: skip
    print("\n".join(lines))
    return 0 if agrees and search_s <= grid_s / 3 else 1


def _searched(m) -> str:
    """What the search did with a variant: its metric comes from the grid, whichever it is."""
    if not m.ok:
        return "built, failed"
    return "built, scored" if m.scored else "built, timed, not scored"


if __name__ == "__main__":
    raise SystemExit(main())
