"""`compress zoo`: list, build and train the reference models. Thin: the work is in models/."""

from __future__ import annotations

from pathlib import Path

import click

from edgecompress.cli.options import start_strategy, strategy_option

PARAM_OPTIONS = [
    click.option("--input-size", type=click.IntRange(8), help="Input height = width in pixels."),
    click.option("--alpha", type=click.FloatRange(0.01), help="Width multiplier."),
    click.option("--classes", type=click.IntRange(1), help="Number of classes (classification, segmentation)."),
    click.option("--keypoints", type=click.IntRange(1), help="Number of keypoints (landmark models)."),
    click.option("--depth", type=click.IntRange(1), help="U-Net: number of down-sampling levels."),
    click.option("--base-filters", type=click.IntRange(1), help="U-Net: filters of the first level."),
    click.option("--decoder", type=click.Choice(["transpose", "upsample"]), help="U-Net: up-sampling layer."),
]


def _param_options(func):
    for option in reversed(PARAM_OPTIONS):
        func = option(func)
    return func


@click.group()
def zoo() -> None:
    """Reference models (MobileNet, ResNet, Inception, U-Net, BlazePose-style) to build and train."""


@zoo.command("list")
@click.option("--no-macs", is_flag=True, help="Skip building each model to count its MACs (faster).")
def list_models(no_macs: bool) -> None:
    """Every zoo model with its task, parameters and MACs at the default size."""
    from edgecompress.models.zoo import ZOO, profile

    rows = [("name", "task", "default parameters", "params", "MACs", "description")]
    for name, entry in ZOO.items():
        params = ", ".join(f"{k}={v}" for k, v in entry.defaults.items())
        counts = ("-", "-") if no_macs else tuple(_count(v) for v in profile(name))
        rows.append((name, entry.task, params, *counts, entry.description))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        click.echo("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])


def _count(value: int) -> str:
    return f"{value / 1e9:.2f} G" if value >= 1e9 else f"{value / 1e6:.1f} M"


@zoo.command()
@click.argument("name")
@_param_options
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Output .h5 or .keras file.")
@click.option("--force", is_flag=True, help="Overwrite the output if it exists.")
def build(name, output, force, **params):
    """Build zoo model NAME with random weights and write it with its metadata sidecar."""
    from edgecompress.artifacts import check_output_path
    from edgecompress.models.blocks import count_macs
    from edgecompress.models.train import save_model
    from edgecompress.models.zoo import build as build_model

    output = check_output_path(output, force)
    model, metadata = build_model(name, **params)
    save_model(model, output, metadata)
    click.echo(f"{output}: {metadata.extra['zoo']} ({metadata.task}), {model.count_params():,} parameters, "
               f"{_count(count_macs(model))} MACs, input {metadata.inputs[0].shape}")  # fmt: skip


@zoo.command()
@click.argument("name")
@_param_options
@click.option("--data", help="Training data (default: the model's embedded set: digits, synthetic-shapes or synthetic-poses).")
@click.option("--epochs", type=click.IntRange(1), default=10, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True)
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=2e-3, show_default=True, help="Peak learning rate (cosine decay).")
@click.option("--val-split", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.1, show_default=True)
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Output .h5 or .keras file.")
@click.option("--force", is_flag=True, help="Overwrite the output if it exists.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@strategy_option
def train(name, data, epochs, batch_size, lr, val_split, output, force, quiet, strategy, **params):
    """Train zoo model NAME; keeps the best validation epoch and writes the metadata sidecar."""
    from edgecompress.models.train import train_zoo

    output = start_strategy(strategy, output)
    result = train_zoo(
        name, output, data, epochs, val_split, batch_size, lr, params, progress=not quiet, force=force, strategy=strategy
    )
    metric = result.metric
    click.echo(f"{result.output}: {name} ({result.task}) trained {result.epochs} epochs on {result.data}")
    scores = ", ".join(f"{k} {v:.4g}" for k, v in result.scores.items() if k != "samples")
    baseline = ", ".join(f"{k} {v:.4g}" for k, v in result.baseline.items())
    click.echo(f"  validation    {result.validation}: {scores}")
    click.echo(f"  trivial       constant predictor: {baseline}")
    click.echo(f"  {metric:<13} {result.scores[metric]:.2%} (trivial {result.baseline[metric]:.2%})")
