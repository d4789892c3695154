"""`compress tune`: the fastest variant of a model within an accuracy, latency and size budget."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click


def _runtimes(text: str | None) -> tuple[str, ...] | None:
    if not text:
        return None
    from edgecompress.runtimes import RUNTIMES

    return tuple(dict.fromkeys(RUNTIMES.canonical(name.strip()) for name in text.split(",") if name.strip()))


def _threads(text: str | None):
    if not text:
        return None
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise click.BadParameter("--threads takes N (1, 2, 4 … up to N) or a list such as 1,2") from None
    return values[0] if len(values) == 1 else values


@click.command()
@click.argument("model", type=click.Path(path_type=Path), required=False)
@click.option("--calib", help="Calibration data: image folder, .npy/.npz, or 'digits'.")
@click.option("--calib-samples", type=click.IntRange(1), default=100, show_default=True)
@click.option("--eval", "eval_data", help="Labelled held-out data the metric drop is measured on.")
@click.option("--max-drop", type=float, default=0.5, show_default=True, help="Largest metric drop allowed, in points.")
@click.option("--latency-budget", type=float, help="Largest p50 latency allowed, ms (batch 1).")
@click.option("--size-budget", type=float, help="Largest file allowed, MB (10^6 bytes).")
@click.option("--runtimes", help="Comma-separated: litert,onnxruntime (default: the target's).")
@click.option("--threads", help="N: try 1, 2, 4 … up to N threads; or a list such as 1,2 (default: the target's).")
@click.option("--target", help="rpi4, rpi5, android-arm64 or x86-avx512: runtimes, threads and known limits in one word.")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="The picked model (default: MODEL.tuned.<format>).")
@click.option("--work-dir", type=click.Path(path_type=Path), help="Cache, records, plot and report (default: OUTPUT.tune/).")
@click.option("--grid", is_flag=True, help="Build and measure every variant (no cuts): the reference the search is checked against.")
@click.option("--jobs", type=click.IntRange(1), default=1, show_default=True, help="Build variants in this many processes (timing stays serial).")
@click.option("--runs", type=click.IntRange(1), default=50, show_default=True, help="Timed runs per variant and thread count.")
@click.option("--recipe", "recipe", type=click.Path(path_type=Path), help="A YAML file with these options as keys.")
@click.option("--trust-model", is_flag=True, help="Allow code stored in Keras model files.")
@click.option("--force", is_flag=True, help="Overwrite the output if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the picked model's path.")
def tune(model, calib, calib_samples, eval_data, max_drop, latency_budget, size_budget, runtimes, threads, target,
         output, work_dir, grid, jobs, runs, recipe, trust_model, force, as_json, quiet):  # fmt: skip
    """Search quantization variants × runtimes × threads of a Keras MODEL for the fastest one that
    keeps the metric within --max-drop points and fits the budgets; write it with its sidecar."""
    from edgecompress import api
    from edgecompress.errors import UsageError

    started = time.perf_counter()
    if recipe is not None:
        if model is not None:
            raise UsageError("give MODEL or --recipe, not both", "put the model in the recipe's 'model' key")
        result = api.tune_recipe(recipe, progress=not (quiet or as_json), strict=False)
    else:
        if model is None or not calib or not eval_data:
            raise UsageError("compress tune needs MODEL, --calib and --eval", "e.g. compress tune m.h5 --calib digits --eval digits")
        result = api.tune(
            model, calib=calib, eval=eval_data, calib_samples=calib_samples, max_drop=max_drop,
            latency_budget=latency_budget, size_budget=size_budget, runtimes=_runtimes(runtimes),
            threads=_threads(threads), target=target, output=output, work_dir=work_dir,
            search="grid" if grid else "branch-and-bound", jobs=jobs, runs=runs, trust_model=trust_model,
            force=force, progress=not (quiet or as_json), strict=False,
        )  # fmt: skip
    _print(result, time.perf_counter() - started, as_json, quiet)
    from edgecompress.pipeline.tune_run import require_pick

    require_pick(result)


def _print(result, seconds: float, as_json: bool, quiet: bool) -> None:
    if as_json:
        click.echo(json.dumps({**result.to_dict(), "seconds_total": seconds}, indent=2, default=str))
        return
    if quiet:
        if result.output:
            click.echo(result.output)
        return
    from edgecompress.reports.tune import render_lines

    click.echo(click.style(f"compress tune: {result.model}", bold=True))
    for line in render_lines(result):
        click.echo(line)
