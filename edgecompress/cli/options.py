"""Options shared by several commands (kept apart from cli.py so command modules can import them)."""

from __future__ import annotations

import json

import click

_META_KEY = "edgecompress.input_options"


def _remember(ctx: click.Context, param: click.Parameter, value):
    """Keep an input option in the context, so commands take it without a new function parameter."""
    if value is not None:
        ctx.meta.setdefault(_META_KEY, {})[param.name] = value
    return value


LAYOUT_OPTION = click.option(
    "--layout", type=click.Choice(["nhwc", "nchw"], case_sensitive=False), expose_value=False, callback=_remember,
    help="Input layout of an image model (default: the sidecar's, else read from the model: (3, H, W) ONNX is nchw).",
)


def input_options(func):
    """Preprocessing of evaluation data for a model without a sidecar (bench, deploy): the same options as
    `quantize`, read back with :func:`input_overrides`."""
    options = [
        click.option("--scale", type=float, expose_value=False, callback=_remember,
                     help="Pixel scale for a model without a sidecar: x = pixel*scale + offset."),
        click.option("--offset", type=float, expose_value=False, callback=_remember, help="Added after --scale."),
        click.option("--mean", type=str, expose_value=False, callback=_remember, help="Per-channel mean, e.g. 0.485,0.456,0.406."),
        click.option("--std", type=str, expose_value=False, callback=_remember, help="Per-channel std, e.g. 0.229,0.224,0.225."),
        click.option("--color", type=click.Choice(["rgb", "bgr", "gray"]), expose_value=False, callback=_remember,
                     help="Channel order the model expects."),
        LAYOUT_OPTION,
    ]  # fmt: skip
    for option in reversed(options):
        func = option(func)
    return func


def input_overrides() -> dict:
    """The options of :func:`input_options` given on this command line (only those given)."""
    given = dict(click.get_current_context().meta.get(_META_KEY, {}))
    layout = given.pop("layout", None)
    values = {k: v for k, v in overrides(**{k: given.get(k) for k in ("scale", "offset", "mean", "std", "color")}).items()
              if v is not None}  # fmt: skip
    return {**values, **({"layout": layout.upper()} if layout else {})}


def preprocessing_options(func):
    """Preprocessing, trust, overwrite and output-format options shared by the converting commands."""
    options = [
        click.option("--scale", type=float, help="Pixel scale: x = pixel*scale + offset (0-255 pixels)."),
        click.option("--offset", type=float, help="Added after --scale (e.g. -1 with scale 1/127.5)."),
        click.option("--mean", type=str, help="Per-channel mean subtracted after scale/offset, e.g. 0.485,0.456,0.406."),
        click.option("--std", type=str, help="Per-channel std divided after the mean, e.g. 0.229,0.224,0.225."),
        click.option("--color", type=click.Choice(["rgb", "bgr", "gray"]), help="Channel order the model expects."),
        LAYOUT_OPTION,
        click.option("--trust-model", is_flag=True, help="Allow Lambda layers and other code stored in the model file."),
        click.option("--force", is_flag=True, help="Overwrite the output if it exists."),
        click.option("--json", "as_json", is_flag=True, help="Print the report as JSON."),
        click.option("-q", "--quiet", is_flag=True, help="Print only the output path."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def overrides(scale, offset, mean, std, color) -> dict:
    def floats(text):
        return tuple(float(v) for v in text.split(",")) if text else None

    try:
        values = {"scale": scale, "offset": offset, "mean": floats(mean), "std": floats(std), "color": color}
    except ValueError:
        raise click.BadParameter("--mean/--std take comma-separated numbers") from None
    context = click.get_current_context(silent=True)
    layout = context.meta.get(_META_KEY, {}).get("layout") if context else None
    return {**values, "layout": layout.upper()} if layout else values


def print_run(command: str, run, seconds: float, as_json: bool, quiet: bool) -> None:
    """What every compressing command prints: JSON, the output path (-q), or the rendered report."""
    if as_json:
        click.echo(json.dumps({**run.to_dict(), "seconds_total": seconds}, indent=2, default=str))
        return
    if quiet:
        click.echo(str(run.output.path))
        return
    from edgecompress.reports.passes import render_run, title

    click.echo("\n".join([click.style(title(command, run), bold=True), *render_run(run, seconds)]))


def strategy_option(func):
    """``--strategy``: the tf.distribute strategy a training command builds and trains under."""
    from edgecompress.models.distribute import STRATEGIES

    return click.option(
        "--strategy", type=click.Choice(STRATEGIES), default="default", show_default=True,
        help="tf.distribute: mirrored = this machine's GPUs (EDGECOMPRESS_CPU_REPLICAS=N splits the CPU); "
        "multi-worker = the machines TF_CONFIG names, each running this same command.",
    )(func)  # fmt: skip


def start_strategy(strategy: str, output):
    """Build the strategy before TensorFlow runs anything (multi-worker must come first), and the
    output path this worker writes: a multi-worker run's other workers write to a temporary
    directory, since every worker saves (saving reads the replicas) but only the chief's file counts."""
    import tempfile
    from pathlib import Path

    from edgecompress.models import distribute

    if distribute.is_default(strategy):
        return output
    distribute.get_strategy(strategy)
    if strategy == "multi-worker" and not distribute.is_chief():
        return Path(tempfile.mkdtemp(prefix="edgecompress-worker-")) / Path(output).name
    return output


def accuracy_options(func):
    """`quantize`'s int8 accuracy tools: calibration method, weight fixes, layers kept in float."""
    options = [
        click.option("--calibration", type=click.Choice(["minmax", "percentile", "entropy", "mse"]),
                     help="Activation ranges from our observers (ONNX: ONNX Runtime's calibrators; mse ours). "
                          "Default: the converter's own min/max."),
        click.option("--percentile", type=click.FloatRange(50, 100, min_open=True), default=99.99, show_default=True,
                     help="Central share of the values kept by --calibration percentile."),
        click.option("--keep-float", help="Comma-separated Keras layer names to leave in float (`compress inspect` ranks them)."),
        click.option("--auto-keep-float", is_flag=True, help="Keep the fewest layers in float so the metric drops ≤ --max-drop (needs --eval)."),
        click.option("--max-drop", type=float, help="Largest metric drop in points allowed by --auto-keep-float."),
        click.option("--equalize", is_flag=True, help="Cross-layer equalization of the weights first (BatchNorm folded)."),
        click.option("--bias-correction", is_flag=True, help="Correct the biases for int8 weight rounding (uses --calib)."),
    ]  # fmt: skip
    for option in reversed(options):
        func = option(func)
    return func


def accuracy_overrides(calibration, percentile, keep_float, auto_keep_float, max_drop, equalize, bias_correction) -> dict:
    """The accuracy options as QuantizeConfig fields."""
    return {"calibration": calibration, "percentile": percentile, "keep_float": keep_float or (),
            "auto_keep_float": auto_keep_float, "max_drop": max_drop, "equalize": equalize,
            "bias_correction": bias_correction}  # fmt: skip
