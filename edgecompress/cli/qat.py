"""`compress qat` and `compress binarize`: the training passes that end in a deployable file."""

from __future__ import annotations

import platform
import time
from collections import Counter
from pathlib import Path

import click

from edgecompress.cli.options import print_for_scripts


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


def _scores(scores: dict, metric: str | None = None) -> str:
    keys = [metric] if metric and metric in scores else [k for k in scores if k != "samples"][:2]
    return ", ".join(f"{k} {scores[k]:.2%}" if k != "nme" else f"{k} {scores[k]:.4f}" for k in keys)


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
    seconds = time.perf_counter() - started
    if print_for_scripts(report, seconds, as_json, quiet):
        return
    from edgecompress.models.tasks import TASKS
    from edgecompress.reports.tables import human_bytes

    d = report.details
    metric = TASKS.get(d["task"]).primary_metric
    lines = [click.style(f"compress qat: {report.source.path} → {report.output.path}", bold=True)]
    lines.append(f"  training      {d['epochs']} epoch(s) on {d['training']['samples']} samples of {d['training']['source']}"
                 f" (batch {d['batch_size']}, lr {d['lr']:g}, preserve {d['preserve']})")  # fmt: skip
    ours = d["our_configs"]
    if ours:
        counts = Counter(f"{v['layer']} {v['config']}" for v in ours.values())
        lines.append(f"  our configs   {len(ours)} layer(s) stock TFMOT rejects or mishandles: "
                     + ", ".join(f"{n}× {k}" for k, n in sorted(counts.items())))  # fmt: skip
    flattened = d["flattened"]
    if flattened["inlined_models"] or flattened["rewritten_ops"]:
        lines.append(f"  flattened     {len(flattened['inlined_models'])} nested model(s) inlined, "
                     f"{len(flattened['rewritten_ops'])} TF op call(s) rewritten as layers")  # fmt: skip
    if d.get("inputs_reordered_by_tfmot"):
        lines.append(f"  TFMOT fix     inputs of {', '.join(d['inputs_reordered_by_tfmot'])} put back in the source's order")
    started_from = d.get("activation_ranges_initialised", 0)
    lines.append(f"  calibration   {d['calibration']['samples']} samples of the training data (converter ranges"
                 + (f", and the start of {started_from} QAT activation ranges)" if started_from else ")"))  # fmt: skip
    sparsity = d["weight_sparsity"]
    if sparsity["source"] > 0.01:
        lines.append(f"  sparsity      {sparsity['source']:.1%} in the source → {sparsity['int8_tflite']:.1%} in the int8 file")
    ptq = f", post-training int8 {human_bytes(d['ptq_size_bytes'])}" if "ptq_size_bytes" in d else ""
    lines.append(f"  size          {report.sizes.describe(human_bytes)}{ptq}")
    check = d["check"]
    lines.append(f"  export check  mean |Δ| {check['mean_abs_diff']:.3g} vs the QAT Keras model on {check['samples']} "
                 f"{check['inputs_from']}: ok")  # fmt: skip
    comparison = d.get("comparison")
    if comparison:
        scores = comparison["scores"]
        lines.append(f"  accuracy on {comparison['data']}:")
        for key, label in (("float", "float (Keras)"), ("ptq_int8", "post-training int8 (LiteRT)"),
                           ("qat_int8", "QAT int8 (LiteRT)")):  # fmt: skip
            lines.append(f"    {label:<28} {_scores(scores[key], metric)}")
    lines.append(f"  took          {seconds:.1f} s")
    click.echo("\n".join(lines))


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
    seconds = time.perf_counter() - started
    if print_for_scripts(report, seconds, as_json, quiet):
        return
    from edgecompress.reports.tables import human_bytes

    d = report.details
    macs = d["macs"]
    check = d["check"]
    lines = [
        click.style(f"compress binarize: {report.source.path} → {report.output.path}", bold=True),
        f"  binarized     {len(d['binarized_layers'])} layer(s); float: {', '.join(d['float_layers']) or 'none'}",
        f"  binary MACs   {macs['conv_binary_share']:.1%} of convolution MACs, {macs['binary_share']:.1%} of all "
        f"({macs['macs_binary']:,} binary, {macs['macs_float']:,} float per sample)",
        f"  distillation  {d['epochs']} epoch(s) on {d['training']['samples']} samples, loss {d['training']['losses'][-1]:.3f}",
        f"  size          {human_bytes(report.source.size_bytes)} → {human_bytes(report.output.size_bytes)} "
        f"(LceBconv2d × {d['ops'].get('LceBconv2d', 0)})",
        f"  LCE check     mean |Δ| {check['mean_abs_diff']:.3g} ({check['relative']:.2%} of the output range, tolerance "
        f"{check['tolerance']:.0%}), top-1 agreement {check['top1_agreement']:.0%} vs the Larq model",
    ]
    source, out = report.evaluation["source"], report.evaluation["output"]
    lines.append(f"  accuracy      float (Keras) top-1 {source['top1']:.2%} → binarized (LCE) {out['top1']:.2%} "
                 f"on {d['evaluation_data']}")  # fmt: skip
    lines.append(f"  note          LCE's fast binary kernels are for 64-bit ARM; this is {platform.machine()}, "
                 "so `compress bench` latency here is not what a Raspberry Pi or phone sees")  # fmt: skip
    lines.append(f"  took          {seconds:.1f} s")
    click.echo("\n".join(lines))
