"""`compress pipeline` runs a recipe (resumable); `compress report` renders its results."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click


@click.command()
@click.argument("recipe", type=click.Path(path_type=Path))
@click.option("-j", "--jobs", type=click.IntRange(1), default=1, show_default=True,
              help="Run independent variants in this many processes (benchmarks still run one at a time); "
                   "with --executor ray and no --ray-address: the local Ray instance's CPUs.")
@click.option("--executor", type=click.Choice(["local", "process", "ray"]), default=None,
              help="Where jobs run: this process, a process pool (default with --jobs > 1), or Ray "
                   "(needs edgecompress[ray]; benchmarks run alone on their node).")
@click.option("--ray-address", metavar="auto|HOST:PORT",
              help="The Ray cluster to run on (default: start a local instance). Every node needs "
                   "--resources='{\"bench\": 1}' and the results directory on a shared filesystem.")
@click.option("--ray-gpus", type=click.FloatRange(0), default=0.0, show_default=True,
              help="GPUs each training job (zoo training, chains with a training pass) asks Ray for.")
@click.option("--results", type=click.Path(path_type=Path),
              help="Results store (.sqlite); the stage cache goes next to it. Default: the recipe's output dir.")
@click.option("--model", "models", multiple=True, help="Only this model of the recipe (repeatable).")
@click.option("--variant", "variants", multiple=True, help="Only this variant of the recipe (repeatable).")
@click.option("--check", is_flag=True, help="Validate the recipe and print the plan; run nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary and records as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No per-stage progress.")
def pipeline(recipe, jobs, executor, ray_address, ray_gpus, results, models, variants, check, as_json, quiet):
    """Run RECIPE.yaml: models × variants (chains of passes) × targets, benchmarked into a results store.

    Every stage is cached by the content of its input and its parameters, so running the same
    recipe again skips what has finished and an interrupted run resumes where it stopped."""
    from edgecompress.pipeline.executors import make_executor
    from edgecompress.pipeline.recipe import load_recipe
    from edgecompress.pipeline.run import results_paths, run_pipeline
    from edgecompress.reports.tables import fastest_summary, markdown_table

    plan = load_recipe(recipe).select(models, variants)
    store, cache = results_paths(plan, results)
    if check:
        _print_plan(plan, store, cache, as_json)
        return
    if ray_gpus and executor != "ray":
        raise click.UsageError("--ray-gpus applies to --executor ray only")
    runner = make_executor(jobs, executor, ray_address)
    result = run_pipeline(plan, store, executor=runner, progress=not (quiet or as_json), training_gpus=ray_gpus)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        click.echo(markdown_table(result.records))
        for line in fastest_summary(result.records):
            click.echo(line)
        done, cached = result.count("done"), result.count("cached")
        click.echo(
            f"{plan.name}: {done} stage(s) run, {cached} cached, {len(result.failures)} failed in {result.seconds:.1f} s; "
            f"{len(result.records)} record(s) in {store}"
        )
        click.echo(f"report: compress report {store} --format html -o {store.parent / 'report.html'}")
    if result.failures:
        for line in result.failures:
            click.secho(f"failed: {line}", fg="red", err=True)
        sys.exit(1)


def _print_plan(plan, store: Path, cache: Path, as_json: bool) -> None:
    variants = [{"name": v.key, "passes": [p.describe() for p in v.passes]} for v in plan.variants]
    data = {
        "recipe": plan.name,
        "store": str(store),
        "cache": str(cache),
        "models": [m.name for m in plan.models],
        "variants": variants,
        "targets": {"runtimes": list(plan.targets.runtimes), "threads": list(plan.targets.threads),
                    "devices": list(plan.targets.devices)},
    }  # fmt: skip
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"recipe {plan.name}: ok")
    click.echo(f"  models    {', '.join(data['models'])}")
    for variant in variants:
        click.echo(f"  variant   {variant['name']}: {' → '.join(variant['passes']) or '(the source itself)'}")
    t = plan.targets
    click.echo(f"  targets   {', '.join(t.runtimes)} × threads {', '.join(str(x or 'default') for x in t.threads)}"
               f" × {', '.join(t.devices)}")  # fmt: skip
    click.echo(f"  results   {store} (cache {cache})")


@click.command()
@click.argument("results", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["md", "csv", "json", "html", "seed-table"]), default="md",
              show_default=True, help="seed-table: the published TFLite quantization table's layout, ours beside it.")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write here instead of stdout (html: default report.html next to RESULTS).")
@click.option("--plots", "plots_dir", type=click.Path(path_type=Path), help="Also write metric-vs-latency/size plots (PNG + SVG) into this directory.")
@click.option("--recipe", help="Only the records of this recipe (a store can hold several).")
@click.option("--title", help="Title of the HTML page.")
def report(results, fmt, output, plots_dir, recipe, title):
    """Render RESULTS (a results.sqlite, its directory, or a records .json) as a table, plots or one HTML page."""
    from edgecompress.artifacts import write_text_atomic
    from edgecompress.reports.store import load_records
    from edgecompress.reports.tables import fastest_summary, markdown_table, to_csv, to_json

    records = load_records(results, recipe)
    if fmt == "html":
        from edgecompress.reports.html import render_html
        from edgecompress.reports.inspect import find_inspections, html_section

        text = render_html(records, title or f"edgecompress report: {recipe or Path(results).stem}",
                           [html_section(report) for report in find_inspections(results)])  # fmt: skip
        base = Path(results) if Path(results).is_dir() else Path(results).parent
        output = output or base / "report.html"
    elif fmt == "md":
        text = "\n".join([markdown_table(records), "", *fastest_summary(records)]) + "\n"
    elif fmt == "seed-table":
        from edgecompress.reports.seed_table import render_seed_table
        from edgecompress.reports.store import load_runs

        text = render_seed_table(records, load_runs(results, recipe))
    else:
        text = to_csv(records) if fmt == "csv" else to_json(records) + "\n"
    written = []
    if plots_dir is not None:
        from edgecompress.reports.plots import write_plots

        written = write_plots(records, plots_dir)
    if output is None:
        click.echo(text, nl=False)
    else:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(Path(output), text)
        click.echo(f"wrote {output} ({len(records)} records)", err=True)
    for path in written:
        click.echo(f"wrote {path}", err=True)
