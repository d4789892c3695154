"""`compress qat` and `compress binarize`: the training passes that end in a deployable file."""

from __future__ import annotations

import time
from pathlib import Path

import click

from edgecompress.cli.options import print_run


def _training_options(epochs: int, lr: float):
    def decorate(func):
        options = [
            click.option("--data", required=True, help="Labelled training data: folder, .npz, 'digits', 'synthetic-shapes', …"),
            click.option("--eval", "eval_data", help="Held-out data (default: the embedded set's test split, else 20 % of --data)."),
            click.option("--epochs", type=click.IntRange(1), default=epochs, show_default=True),
            click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True),
            click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=lr, show_default=True),
            click.option("--trust-model", is_flag=True, help="Allow Lambda layers and other code stored in the model file."),
            click.option("--force", is_flag=True, help="Overwrite the output if it exists."),
            click.option("--json", "as_json", is_flag=True, help="Print the report as JSON."),
            click.option("-q", "--quiet", is_flag=True, help="No progress bar; print only the output path."),
        ]
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def _default_output(model: Path, tag: str) -> Path:
    return Path(model).with_name(f"{Path(model).stem}.{tag}.tflite")


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Output .tflite (default: MODEL.qat.tflite).")
@click.option("--preserve", type=click.Choice(["none", "sparsity", "clusters"]), default="none", show_default=True,
              help="Keep a pruned model's zeros or a clustered model's shared values through QAT.")
@click.option("--skip-layer", "skip_layers", multiple=True, help="Leave this layer without fake quantization (repeatable).")
@click.option("--calib-samples", type=click.IntRange(1), default=200, show_default=True,
              help="Training samples the converter calibrates the remaining ranges on.")
@click.option("--no-compare", is_flag=True, help="Skip the float / post-training int8 / QAT int8 comparison.")
@click.option("--init-ranges/--no-init-ranges", default=False, show_default=True,
              help="Start activation ranges from the data, not TFMOT's [-6, 6] (helps short runs on wide ranges).")
@_training_options(epochs=2, lr=3e-5)
def qat(model, output, preserve, skip_layers, calib_samples, no_compare, init_ranges, data, eval_data, epochs, batch_size, lr,
        trust_model, force, as_json, quiet):  # fmt: skip
    """Quantization-aware training of a Keras MODEL, converted to a full-int8 TFLite file."""
    from edgecompress import api

    output = output or _default_output(model, "qat")
    started = time.perf_counter()
    report = api.qat(
        model, output, data, epochs=epochs, batch_size=batch_size, lr=lr, preserve=preserve, skip_layers=skip_layers,
        eval=eval_data, calib_samples=calib_samples, compare=not no_compare, init_ranges=init_ranges, trust_model=trust_model, force=force,
        progress=not (quiet or as_json),
    )  # fmt: skip
    print_run("qat", report, time.perf_counter() - started, as_json, quiet)


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Output .tflite (default: MODEL.binary.tflite).")
@click.option("--binarize-all", is_flag=True, help="Binarize the first and last layers too (default: they stay float).")
@_training_options(epochs=10, lr=1e-3)
def binarize(model, output, binarize_all, data, eval_data, epochs, batch_size, lr, trust_model, force, as_json, quiet):
    """Binarize a Keras classifier MODEL with Larq (distilled from it) and write a bit-packed LCE TFLite."""
    from edgecompress import api

    output = output or _default_output(model, "binary")
    started = time.perf_counter()
    report = api.binarize(
        model, output, data, epochs=epochs, batch_size=batch_size, lr=lr, binarize_all=binarize_all, eval=eval_data,
        trust_model=trust_model, force=force, progress=not (quiet or as_json),
    )  # fmt: skip
    print_run("binarize", report, time.perf_counter() - started, as_json, quiet)
