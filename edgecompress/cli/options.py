"""Options shared by several commands (kept apart from cli.py so command modules can import them)."""

from __future__ import annotations

import json

import click


def preprocessing_options(func):
    """Preprocessing, trust, overwrite and output-format options shared by the converting commands."""
    options = [
        click.option("--scale", type=float, help="Pixel scale: x = pixel*scale + offset (0-255 pixels)."),
        click.option("--offset", type=float, help="Added after --scale (e.g. -1 with scale 1/127.5)."),
        click.option("--mean", type=str, help="Per-channel mean subtracted after scale/offset, e.g. 0.485,0.456,0.406."),
        click.option("--std", type=str, help="Per-channel std divided after the mean, e.g. 0.229,0.224,0.225."),
        click.option("--color", type=click.Choice(["rgb", "bgr", "gray"]), help="Channel order the model expects."),
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
        return {"scale": scale, "offset": offset, "mean": floats(mean), "std": floats(std), "color": color}
    except ValueError:
        raise click.BadParameter("--mean/--std take comma-separated numbers") from None


def print_for_scripts(report, seconds: float, as_json: bool, quiet: bool) -> bool:
    """The --json / -q output every compressing command shares; True when it printed."""
    if as_json:
        click.echo(json.dumps({**report.to_dict(), "seconds_total": seconds}, indent=2, default=str))
        return True
    if quiet:
        click.echo(str(report.output.path))
        return True
    return False


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
    """Only what was asked for, so the defaults stay QuantizeConfig's."""
    out = {"calibration": calibration, "percentile": percentile, "keep_float": keep_float or (),
           "auto_keep_float": auto_keep_float, "max_drop": max_drop, "equalize": equalize,
           "bias_correction": bias_correction}  # fmt: skip
    return out
