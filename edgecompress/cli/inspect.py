"""`compress inspect`: which layers break int8, why, and what to try. Thin: the work is in compress/."""

from __future__ import annotations

import json
from pathlib import Path

import click

from edgecompress.cli.options import overrides as _overrides


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--calib", required=True, help="Calibration data: image folder, .npy/.npz, or 'digits'.")
@click.option("--calib-samples", type=click.IntRange(1), default=100, show_default=True)
@click.option("--eval", "eval_data", help="Labelled data: the samples compared come from it, and the metric is measured.")
@click.option("--format", "fmt", type=click.Choice(["tflite", "onnx", "both"]), default="tflite", show_default=True)
@click.option("--calibration", type=click.Choice(["minmax", "percentile", "entropy", "mse"]),
              help="Activation ranges (default: the converter's / ONNX Runtime's own min/max, as `quantize` uses).")
@click.option("--percentile", type=click.FloatRange(50, 100, min_open=True), default=99.99, show_default=True,
              help="Central share of the values kept by --calibration percentile.")
@click.option("--per-tensor", is_flag=True, help="One weight scale per tensor instead of per output channel.")
@click.option("--keep-float", help="Comma-separated Keras layer names to leave in float.")
@click.option("--samples", type=click.IntRange(1), default=32, show_default=True, help="Samples whose every activation is compared.")
@click.option("--worst", type=click.IntRange(1), default=10, show_default=True, help="Layers listed, worst first.")
@click.option("--plot", "plots", multiple=True, type=click.Path(path_type=Path), help="Write SQNR along the depth (.png or .svg; repeatable).")
@click.option("--html", "html_path", type=click.Path(path_type=Path), help="Write a self-contained HTML page.")
@click.option("--scale", type=float, help="Pixel scale: x = pixel*scale + offset (0-255 pixels).")
@click.option("--offset", type=float, help="Added after --scale.")
@click.option("--mean", type=str, help="Per-channel mean subtracted after scale/offset.")
@click.option("--std", type=str, help="Per-channel std divided after the mean.")
@click.option("--color", type=click.Choice(["rgb", "bgr", "gray"]), help="Channel order the model expects.")
@click.option("--trust-model", is_flag=True, help="Allow Lambda layers and other code stored in the model file.")
@click.option("--json", "as_json", is_flag=True, help="Print the report(s) as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def inspect(model, calib, calib_samples, eval_data, fmt, calibration, percentile, per_tensor, keep_float, samples, worst,
            plots, html_path, scale, offset, mean, std, color, trust_model, as_json, quiet):  # fmt: skip
    """Per-layer int8 error of a Keras MODEL, keyed by its layer names, worst first, with advice."""
    from edgecompress import api
    from edgecompress.artifacts import write_text_atomic
    from edgecompress.reports.inspect import render_text, write_plot

    reports = api.inspect(
        model, calib, eval=eval_data, format=fmt, calibration=calibration, percentile=percentile,
        per_channel=not per_tensor, keep_float=keep_float or (), samples=samples, calib_samples=calib_samples,
        preprocessing=_overrides(scale, offset, mean, std, color), trust_model=trust_model,
        progress=not (quiet or as_json),
    )  # fmt: skip
    dicts = [r.to_dict() for r in reports]
    for path in plots:
        write_plot(dicts, path)
    if html_path is not None:
        from edgecompress.reports.inspect import render_inspect_page

        write_text_atomic(html_path, render_inspect_page(dicts, f"compress inspect: {Path(model).name}"))
    if as_json:
        click.echo(json.dumps(dicts[0] if len(dicts) == 1 else dicts, indent=2, default=str))
        return
    click.echo("\n\n".join(render_text(d, worst) for d in dicts))
    for path in [*plots, *([html_path] if html_path else [])]:
        click.echo(f"wrote {path}", err=True)
