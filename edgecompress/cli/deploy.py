"""`compress deploy`: build a device bundle, or check one in a TensorFlow-free environment."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from edgecompress.cli.options import input_options, input_overrides


@click.command()
@click.argument("model", required=False, type=click.Path(path_type=Path))
@click.option("--target", help="Device family: rpi, android or linux.")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Bundle directory to write.")
@click.option("--archive", is_flag=True, help="Also write DIR.tar.gz for copying.")
@click.option("--force", is_flag=True, help="Replace an existing bundle directory / archive.")
@click.option("--check", "check_dir", type=click.Path(path_type=Path), help="Check an existing bundle DIR instead of building one.")
@click.option("--threads", type=click.IntRange(1), default=2, show_default=True, help="Threads for --check (run.py and bench.py).")
@click.option("--runs", type=click.IntRange(1), default=50, show_default=True, help="Timed runs of bench.py in --check.")
@click.option("--cache-dir", type=click.Path(path_type=Path),
              help="Where --check keeps its venvs and the arm64 root filesystem (default ~/.cache/edgecompress).")
@click.option("--arch", type=click.Choice(["native", "aarch64"]), default="native", show_default=True,
              help="With --check: run the bundle natively, or in an emulated Raspberry Pi userland (qemu-user, root).")
@click.option("--cpu", type=click.Choice(["pi4", "pi5"]), default="pi4", show_default=True,
              help="With --arch aarch64: the Pi whose core (Cortex-A72 / A76) qemu emulates.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@input_options
def deploy(model, target, output, archive, force, check_dir, threads, runs, cache_dir, arch, cpu, as_json):
    """Write a self-contained bundle for a device (model, metadata, run.py, bench.py, README),
    or with --check DIR, run a bundle in a fresh venv without TensorFlow and compare its outputs."""
    from edgecompress.errors import UsageError

    if check_dir is not None:
        if model is not None or target or output:
            raise UsageError("--check takes only a bundle directory", "use: compress deploy --check DIR")
        if arch == "aarch64":
            from edgecompress.cli.deploy_arm64 import check_arm64

            check_arm64(check_dir, cpu, threads, runs, cache_dir, as_json)
            return
        _check(check_dir, threads, runs, cache_dir, as_json)
        return
    if arch != "native" or cpu != "pi4":
        raise UsageError("--arch and --cpu apply to --check", "use: compress deploy --check DIR --arch aarch64 --cpu pi5")
    if model is None:
        raise UsageError("no model given", "use: compress deploy MODEL.tflite --target rpi|android|linux -o DIR")
    if not target:
        raise UsageError("no --target given", "choose --target rpi, android or linux")
    if output is None:
        raise UsageError("no output directory given", "pass -o DIR")
    from edgecompress.deploy import build_bundle

    report = build_bundle(model, target, output, archive=archive, force=force, preprocessing=input_overrides())
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    for finding in report.findings:
        click.secho(f"warning: {finding.message}", fg="yellow", err=True)
        click.echo(f"         fix: {finding.fix}", err=True)
    click.secho(f"compress deploy: {report.source} → {report.path} ({report.target})", bold=True)
    click.echo(f"  files    {', '.join(report.files)}")
    if report.archive:
        click.echo(f"  archive  {report.archive}")
    click.echo(f"  next     see {report.path / 'README.md'}; check it here with: compress deploy --check {report.path}")


def _check(directory: Path, threads: int, runs: int, cache_dir: Path | None, as_json: bool) -> None:
    from edgecompress.deploy import check_bundle

    started = time.perf_counter()
    report = check_bundle(directory, threads=threads, runs=runs, cache_dir=cache_dir)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    worst = max(d.max_abs_diff for d in report.diffs)
    if report.integer:
        agreement = "identical (int8)" if report.exact else f"max |Δ| {worst:.3g}"
    else:
        check = report.tolerance_check
        agreement = (f"max |Δ| {check.max_abs_diff:.3g} ({check.relative:.2%} of the output scale, "
                     f"tolerance {check.tolerance:.2%}, float)")
    bench = report.bench
    lines = [
        click.style(f"compress deploy --check {report.bundle}: ok", bold=True),
        f"  environment  {report.venv} (Python {report.python}, {report.runtime}; no TensorFlow)",
        f"  outputs      {agreement} on {report.samples} raw images vs the toolkit's LiteRT",
    ]
    if report.task_agreement is not None:
        lines.append(f"  {report.task:<12} run.py agrees on {report.task_agreement:.1%}")
    lines.append(
        f"  bench.py     p50 {bench['latency_ms_p50']:.3f} ms, p90 {bench['latency_ms_p90']:.3f} ms "
        f"({bench['threads']} threads, {bench['runs']} runs, {bench['machine']})"
    )
    lines.append(f"  took         {time.perf_counter() - started:.1f} s")
    click.echo("\n".join(lines))
