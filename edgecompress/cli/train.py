"""`compress prune`, `compress cluster`, `compress distill`: the passes that fine-tune. Thin: the work
is in ``compress/prune.py``, ``channels.py``, ``cluster.py`` and ``distill.py``."""

from __future__ import annotations

import time
from pathlib import Path

import click

from edgecompress.cli.options import overrides as _overrides
from edgecompress.cli.options import preprocessing_options as _preprocessing_options
from edgecompress.cli.options import print_run


def _training_options(epochs: int, lr: float, tflite: bool = True):
    options = [
        click.option("--data", required=True, help="Training data: image folder, .npz, 'digits' or 'synthetic-*'."),
        click.option("--eval", "eval_data", help="Held-out data for the report (default: the data's test split, "
                     "or --val-split of it)."),
        click.option("--val-split", type=click.FloatRange(0.01, 0.9), default=0.2, show_default=True,
                     help="Fraction held out when --data has no test split and --eval is not given."),
        click.option("--epochs", type=click.IntRange(0), default=epochs, show_default=True),
        click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True),
        click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=lr, show_default=True),
        click.option("-o", "--output", type=click.Path(path_type=Path), help="Output .h5 (default: next to MODEL)."),
    ]  # fmt: skip
    if tflite:
        options.append(click.option("--no-tflite", is_flag=True,
                                    help="Skip converting source and output to TFLite to compare size, MACs, latency."))  # fmt: skip

    def decorator(func):
        for option in reversed(options):
            func = option(func)
        return _preprocessing_options(func)

    return decorator


def _default_output(model: Path, tag: str) -> Path:
    return Path(model).with_name(f"{Path(model).stem}.{tag}.h5")


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--sparsity", type=click.FloatRange(0, 1, max_open=True), default=0.5, show_default=True,
              help="Fraction of weights (unstructured) or of each layer's channels (channels) to remove.")
@click.option("--structure", type=click.Choice(["unstructured", "2:4", "channels"]), default="unstructured",
              show_default=True)
@click.option("--schedule", type=click.Choice(["constant", "polynomial"]), default="constant", show_default=True,
              help="Unstructured: prune at once, or ramp up over the first 70 % of the steps.")
@click.option("--criterion", type=click.Choice(["l1", "bn"]), default="l1", show_default=True,
              help="Channels: rank filters by kernel L1 norm or by BatchNorm |gamma|.")
@click.option("--distill/--no-distill", default=False, show_default=True,
              help="Channels: fine-tune with the unpruned model as teacher (knowledge distillation).")
@_training_options(epochs=2, lr=1e-4)
def prune(model, sparsity, structure, schedule, criterion, distill, data, eval_data, val_split, epochs, batch_size, lr, output,
          no_tflite, scale, offset, mean, std, color, trust_model, force, as_json, quiet):  # fmt: skip
    """Prune MODEL (unstructured or 2:4 with TFMOT, or whole channels) and fine-tune it on --data."""
    from edgecompress import api

    output = output or _default_output(model, "channels" if structure == "channels" else "pruned")
    started = time.perf_counter()
    report = api.prune(
        model, output, data, sparsity=sparsity, structure=structure, schedule=schedule, criterion=criterion,
        distill=distill, epochs=epochs, batch_size=batch_size, lr=lr, eval=eval_data, val_split=val_split,
        preprocessing=_overrides(scale, offset, mean, std, color), measure=not no_tflite, trust_model=trust_model,
        force=force, progress=not (quiet or as_json),
    )  # fmt: skip
    print_run("prune", report, time.perf_counter() - started, as_json, quiet)


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--clusters", type=click.IntRange(2, 256), default=16, show_default=True,
              help="Distinct values per clustered weight tensor.")
@click.option("--init", "init", type=click.Choice(["kmeans++", "linear", "density", "random"]), default="kmeans++",
              show_default=True, help="How the centroids start.")
@_training_options(epochs=2, lr=1e-4)
def cluster(model, clusters, init, data, eval_data, val_split, epochs, batch_size, lr, output, no_tflite,
            scale, offset, mean, std, color, trust_model, force, as_json, quiet):  # fmt: skip
    """Cluster MODEL's weights into --clusters shared values (TFMOT) and fine-tune it on --data."""
    from edgecompress import api

    output = output or _default_output(model, "clustered")
    started = time.perf_counter()
    report = api.cluster(
        model, output, data, clusters=clusters, init=init, epochs=epochs, batch_size=batch_size, lr=lr,
        eval=eval_data, val_split=val_split, preprocessing=_overrides(scale, offset, mean, std, color),
        measure=not no_tflite, trust_model=trust_model, force=force, progress=not (quiet or as_json),
    )  # fmt: skip
    print_run("cluster", report, time.perf_counter() - started, as_json, quiet)


@click.command()
@click.option("--teacher", required=True, type=click.Path(path_type=Path), help="The trained teacher model (.h5).")
@click.option("--student", required=True,
              help="A zoo name with parameters (mobilenet_v2:alpha=0.35,input_size=96) or a model file.")
@click.option("--temperature", type=click.FloatRange(min=0, min_open=True), default=4.0, show_default=True)
@click.option("--alpha", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Weight of the distillation loss (1 - alpha goes to the ground-truth loss).")
@click.option("--no-baseline", is_flag=True, help="Skip training the student alone for comparison.")
@_training_options(epochs=10, lr=2e-3, tflite=False)
def distill(teacher, student, temperature, alpha, no_baseline, data, eval_data, val_split, epochs, batch_size, lr,
            output, scale, offset, mean, std, color, trust_model, force, as_json, quiet):  # fmt: skip
    """Train --student from --teacher's outputs on --data (and alone, for comparison)."""
    from edgecompress import api

    output = output or _default_output(teacher, "student")
    started = time.perf_counter()
    report = api.distill(
        teacher, student, output, data, temperature=temperature, alpha=alpha, baseline=not no_baseline,
        epochs=epochs, batch_size=batch_size, lr=lr, eval=eval_data, val_split=val_split,
        preprocessing=_overrides(scale, offset, mean, std, color), trust_model=trust_model, force=force,
        progress=not (quiet or as_json),
    )  # fmt: skip
    print_run("distill", report, time.perf_counter() - started, as_json, quiet)
