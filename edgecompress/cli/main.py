"""The `compress` command line: thin commands over the Python API.

Errors a user can cause are EdgeCompressErrors: one line, a non-zero exit code, no traceback
(``--debug`` shows it). Heavy imports happen inside commands so ``compress --help`` is instant.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import click

from edgecompress._env import configure_environment
from edgecompress.cli.options import accuracy_options as _accuracy_options
from edgecompress.cli.options import accuracy_overrides as _accuracy
from edgecompress.cli.options import input_options, input_overrides, print_run
from edgecompress.cli.options import overrides as _overrides
from edgecompress.cli.options import preprocessing_options as _preprocessing_options

configure_environment()

INTERNAL_ERROR_EXIT = 70


class CompressGroup(click.Group):
    """Turns library errors into one clear line and an exit code."""

    def invoke(self, ctx: click.Context):
        from edgecompress.errors import EdgeCompressError

        try:
            return super().invoke(ctx)
        except EdgeCompressError as exc:
            if _debug():
                raise
            click.secho(f"error: {exc}", fg="red", err=True)
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("interrupted; no partial output was left behind", err=True)
            ctx.exit(130)
        except Exception as exc:  # noqa: BLE001 - anything else is our bug: say so, briefly
            if _debug():
                raise
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            click.secho(f"internal error: {type(exc).__name__}: {first}", fg="red", err=True)
            click.echo("run again with --debug for the traceback, and please report it", err=True)
            ctx.exit(INTERNAL_ERROR_EXIT)


def _debug() -> bool:
    return os.environ.get("EDGECOMPRESS_DEBUG") == "1"


@click.group(cls=CompressGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks and TensorFlow's own log output.")
@click.version_option(package_name="edgecompress")
def cli(debug: bool) -> None:
    """Compress trained Keras models, export TFLite/ONNX, and benchmark every output."""
    if debug:
        os.environ["EDGECOMPRESS_DEBUG"] = "1"
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s: %(message)s", stream=sys.stderr
    )
    if not debug:
        from edgecompress._env import quiet_python_loggers

        quiet_python_loggers()


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Output file (default: next to MODEL).")
@click.option("--mode", type=click.Choice(["dynamic", "float16", "int8", "int16x8"]), help="Default: int8 with --calib, else dynamic.")
@click.option("--format", "fmt", type=click.Choice(["tflite", "onnx"]), help="Default: onnx for an .onnx MODEL, else tflite.")
@click.option("--per-tensor", is_flag=True, help="One scale per tensor instead of per output channel.")
@click.option("--io", type=click.Choice(["float", "int8", "uint8"]), default="float", show_default=True, help="Input/output type of int8 TFLite models.")
@click.option("--calib", help="Calibration data: image folder, .npy/.npz, or 'digits'.")
@click.option("--calib-samples", type=click.IntRange(1), default=100, show_default=True)
@click.option("--eval", "eval_data", help="Labelled data to measure source and output on: folder, .npz or 'digits'.")
@_accuracy_options
@_preprocessing_options
def quantize(model, output, mode, fmt, per_tensor, io, calib, calib_samples, eval_data, calibration, percentile, keep_float, auto_keep_float, max_drop, equalize, bias_correction, scale, offset, mean, std, color, trust_model, force, as_json, quiet):
    """Post-training quantization of a Keras, float .tflite or float .onnx MODEL to TFLite or ONNX."""
    from edgecompress import api
    from edgecompress.compress.quantize import choose_mode, default_format

    chosen, _ = choose_mode(mode, calib is not None)
    fmt = fmt or default_format(api.load(model).format).value
    output = output or _default_output(model, chosen.value, fmt)
    started = time.perf_counter()
    report = api.quantize(
        model, output, mode=mode, format=fmt, per_channel=not per_tensor, io=io, calib=calib,
        calib_samples=calib_samples, eval=eval_data, preprocessing=_overrides(scale, offset, mean, std, color),
        trust_model=trust_model, force=force, progress=not (quiet or as_json),
        **_accuracy(calibration, percentile, keep_float, auto_keep_float, max_drop, equalize, bias_correction),
    )
    print_run("quantize", report, time.perf_counter() - started, as_json, quiet)


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Output file (default: next to MODEL).")
@click.option("--format", "fmt", type=click.Choice(["tflite", "onnx"]), default="tflite", show_default=True)
@click.option("--eval", "eval_data", help="Labelled data to measure source and output on.")
@_preprocessing_options
def export(model, output, fmt, eval_data, scale, offset, mean, std, color, trust_model, force, as_json, quiet):
    """Float export of a Keras MODEL to TFLite or ONNX, validated against the source."""
    from edgecompress import api

    output = output or _default_output(model, "float", fmt)
    started = time.perf_counter()
    report = api.export(
        model, output, format=fmt, eval=eval_data, preprocessing=_overrides(scale, offset, mean, std, color),
        trust_model=trust_model, force=force,
    )
    print_run("export", report, time.perf_counter() - started, as_json, quiet)


def _default_output(model: Path, tag: str, fmt: str) -> Path:
    return Path(model).with_name(f"{Path(model).stem}.{tag}.{fmt}")


@cli.command()
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--runtime", "runtimes", multiple=True, help="keras, litert, onnxruntime (repeatable; default: every one that runs the format).")
@click.option("--threads", type=click.IntRange(1), default=None, help="Threads per runtime (default: the runtime's own).")
@click.option("--warmup", type=click.IntRange(0), default=5, show_default=True)
@click.option("--runs", type=click.IntRange(1), default=50, show_default=True)
@click.option("--device", type=click.Choice(["cpu", "gpu"]), default="cpu", show_default=True)
@click.option("--eval", "eval_data", help="Labelled data for the task metric: folder, .npz or 'digits'.")
@click.option("--csv", "csv_path", type=click.Path(path_type=Path), help="Also write the records as CSV.")
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON.")
@click.option("--trust-model", is_flag=True, help="Allow code stored in Keras model files.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@input_options
def bench(models, runtimes, threads, warmup, runs, device, eval_data, csv_path, as_json, trust_model, quiet):
    """Latency, size, memory and accuracy of MODELS on each runtime."""
    from edgecompress import api
    from edgecompress.artifacts import write_text_atomic
    from edgecompress.reports.tables import fastest_summary, markdown_table, to_csv, to_json

    records = api.bench(
        models, runtimes=runtimes or None, threads=threads, warmup=warmup, runs=runs, eval=eval_data,
        device=device, trust_model=trust_model, progress=not (quiet or as_json), preprocessing=input_overrides(),
    )
    if csv_path:
        write_text_atomic(csv_path, to_csv(records))
    if as_json:
        click.echo(to_json(records))
    else:
        click.echo(markdown_table(records))
        for line in fastest_summary(records):
            click.echo(line)
        for record in records:
            if record.status == "ok" and record.note.startswith("int8 not faster"):
                click.echo(f"note: {record.model} {record.variant}: {record.note}")
        if records:
            click.echo(f"measured on {records[0].machine}; batch 1, {runs} runs after {warmup} warm-up")
    # One bad model does not stop the others, but a script must still see that something failed.
    failed = [r for r in records if r.status == "error"]
    if failed:
        first = failed[0]
        click.secho(f"error: {len(failed)} of {len(records)} measurements failed; {first.model} on {first.runtime}: "
                    f"{first.note}", fg="red", err=True)  # fmt: skip
        click.get_current_context().exit(first.error_code or 1)


@cli.command()
@click.option("-o", "--output-dir", type=click.Path(path_type=Path), default=Path("demo-output"), show_default=True)
@click.option("--epochs", type=click.IntRange(1), default=15, show_default=True)
@click.option("--runs", type=click.IntRange(1), default=100, show_default=True)
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
def demo(output_dir, epochs, runs, quiet):
    """Train a small MobileNetV2 on digits, quantize it every way, and benchmark every output."""
    from edgecompress.demo import run_demo
    from edgecompress.reports.tables import fastest_summary, markdown_table

    def say(message: str) -> None:
        if not quiet:
            click.echo(message, err=True)

    records = run_demo(output_dir, epochs=epochs, runs=runs, say=say, progress=not quiet)
    click.echo(markdown_table(records))
    for line in fastest_summary(records):
        click.echo(line)
    click.echo(f"measured on {records[0].machine}; batch 1, {runs} runs; accuracy on digits:test (360 images)")


from edgecompress.cli.deploy import deploy  # noqa: E402 - command groups kept in their own modules
from edgecompress.cli.inspect import inspect  # noqa: E402
from edgecompress.cli.pipeline import pipeline, report  # noqa: E402
from edgecompress.cli.qat import binarize, qat  # noqa: E402
from edgecompress.cli.train import cluster, distill, prune  # noqa: E402
from edgecompress.cli.tune import tune  # noqa: E402
from edgecompress.cli.zoo import zoo  # noqa: E402

for _command in (deploy, zoo, prune, cluster, distill, qat, binarize, pipeline, report, inspect, tune):
    cli.add_command(_command)


def main() -> None:
    cli(prog_name="compress")

