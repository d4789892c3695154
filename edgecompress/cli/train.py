"""`compress prune`, `compress cluster`, `compress distill`: the passes that fine-tune. Thin: the work
is in ``compress/prune.py``, ``channels.py``, ``cluster.py`` and ``distill.py``."""

from __future__ import annotations

import time
from pathlib import Path

import click

from edgecompress.cli.options import overrides as _overrides
from edgecompress.cli.options import preprocessing_options as _preprocessing_options
from edgecompress.cli.options import print_for_scripts


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
    _print(report, time.perf_counter() - started, as_json, quiet, _prune_lines)


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
    _print(report, time.perf_counter() - started, as_json, quiet, _cluster_lines)


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
    _print(report, time.perf_counter() - started, as_json, quiet, _distill_lines)


# --------------------------------------------------------------------------- reports


def _print(report, seconds: float, as_json: bool, quiet: bool, body) -> None:
    if print_for_scripts(report, seconds, as_json, quiet):
        return
    details = report.details
    lines = [click.style(f"compress {details['pass']}: {report.source.path} → {report.output.path}", bold=True)]
    lines += body(details)
    from edgecompress.reports.tables import human_bytes

    lines.append(f"  size          {report.sizes.describe(human_bytes)}")
    metric = details.get("metric")
    evaluation = details.get("evaluation")
    if evaluation and metric:
        src, out = evaluation["source"][metric], evaluation["output"][metric]
        samples = int(evaluation["output"].get("samples", 0))
        lines.append(f"  {metric:<13} {src:.2%} → {out:.2%} ({(out - src) * 100:+.2f} points, {samples} held-out samples)")
    lines.append(f"  next          compress quantize {report.output.path} | compress export {report.output.path}")
    lines.append(f"  took          {seconds:.1f} s")
    click.echo("\n".join(lines))


def _tflite_lines(tflite: dict | None, macs: bool) -> list[str]:
    from edgecompress.reports.tables import human_bytes

    if not tflite:
        return []
    src = tflite["source"]
    lines = []
    for key, label in (("output", "float TFLite"), ("output_sparse", "sparse TFLite")):
        if key not in tflite:
            continue
        out = tflite[key]
        lines.append(
            f"  {label:<13} {human_bytes(src['size_bytes'])} → {human_bytes(out['size_bytes'])}, gzip "
            f"{human_bytes(src['gzip_bytes'])} → {human_bytes(out['gzip_bytes'])} "
            f"({out['gzip_bytes'] / src['gzip_bytes']:.2f}×)"
        )
        if macs and key == "output":
            lines.append(f"  MACs          {src['macs'] / 1e6:.2f} M → {out['macs'] / 1e6:.2f} M "
                         f"({1 - out['macs'] / src['macs']:.1%} fewer)")  # fmt: skip
        if src.get("latency_ms_p50") and out.get("latency_ms_p50"):
            lines.append(f"  LiteRT        {src['latency_ms_p50']:.3f} ms → {out['latency_ms_p50']:.3f} ms p50 "
                         f"({label}, 2 threads, batch 1)")  # fmt: skip
    return lines


def _prune_lines(details: dict) -> list[str]:
    if details["structure"] == "channels":
        before, after = details["params_before"], details["params_after"]
        lines = [
            f"  channels      {details['sparsity']:.0%} of each prunable group ({details['criterion']} ranking"
            f"{', distilled from the source' if details.get('distill') else ''}): "
            f"{details['prunable_channels_before']} → {details['prunable_channels_after']} channels in "
            f"{details['groups_pruned']} groups; {details['groups_kept_whole']} kept whole",
            f"  parameters    {before:,} → {after:,} ({1 - after / before:.1%} fewer)",
        ]
        for layer, why in list(details["layers_without_channel_rule"].items())[:5]:
            lines.append(f"  kept whole    around '{layer}' ({why})")
        return lines + _tflite_lines(details.get("tflite"), macs=True)
    lines = [f"  sparsity      {details['measured_sparsity']:.2%} of {details['prunable_weights']:,} prunable weights "
             f"({details['structure']}, {details['schedule']} schedule, target {details['sparsity']:.0%})"]  # fmt: skip
    if "two_four_exact" in details:
        lines.append(f"  2:4 pattern   {'exact in every pruned layer' if details['two_four_exact'] else 'NOT exact'}")
    lines.append("  layer                              weights   sparsity")
    for row in details["layers"]:
        lines.append(f"    {row['layer'][:32]:<32} {row['weights']:>9,}   {row['sparsity']:.1%}")
    for layer, why in details["left_dense"].items():
        lines.append(f"    {layer[:32]:<32} left dense: {why}")
    return lines + _tflite_lines(details.get("tflite"), macs=False)


def _cluster_lines(details: dict) -> list[str]:
    lines = [f"  clusters      {details['clusters']} per kernel ({details['init']} init) in "
             f"{len(details['layers'])} layers; at most {details['max_unique']} distinct values per kernel"]  # fmt: skip
    for layer, why in details["left_unclustered"].items():
        lines.append(f"    {layer[:32]:<32} left as is: {why}")
    return lines + _tflite_lines(details.get("tflite"), macs=False)


def _distill_lines(details: dict) -> list[str]:
    metric = details["metric"]
    lines = [f"  student       {details['student']} ({details['student_params']:,} parameters; teacher "
             f"{details['teacher_params']:,})",
             f"  KD            {details['kd_loss']}, temperature {details['temperature']}, alpha {details['alpha']}, "
             f"{details['epochs']} epochs"]  # fmt: skip
    scores = details["scores"]
    for name in ("teacher", "alone", "distilled"):
        if scores.get(name):
            lines.append(f"  {name:<13} {metric} {scores[name][metric]:.2%}")
    return lines
