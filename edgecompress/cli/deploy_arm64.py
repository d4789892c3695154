"""`compress deploy --check DIR --arch aarch64`: the emulated Raspberry Pi check, printed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click


def check_arm64(directory: Path, cpu: str, threads: int, runs: int, cache_dir: Path | None, as_json: bool) -> None:
    from edgecompress.deploy.emulated import check_emulated

    started = time.perf_counter()
    report = check_emulated(directory, cpu=cpu, threads=threads, runs=runs, cache_dir=cache_dir)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    lines = [
        click.style(f"compress deploy --check {report.bundle} --arch aarch64 --cpu {report.cpu.name}: ok", bold=True),
        f"  userland     Debian arm64 (Python {report.python}) under qemu-user, QEMU_CPU={report.cpu.qemu_cpu} "
        f"({report.cpu.description}, emulated)",
    ]
    for run in report.runs:
        lines.append(f"  {run.interpreter}")
        for agreement in run.agreements:
            lines.append(f"    outputs    {agreement.describe(report.integer)} on {report.samples} raw images "
                         f"vs {agreement.reference}")
        lines.append(f"    self-check {run.self_check.get('summary', run.self_check.get('self_check'))}")
        bench = run.bench
        lines.append(f"    bench.py   p50 {bench['latency_ms_p50']:.3f} ms, p90 {bench['latency_ms_p90']:.3f} ms "
                     f"emulated ({bench['threads']} threads, {bench['runs']} runs; qemu time, not device time)")
    lines.append(f"  took         {time.perf_counter() - started:.1f} s")
    click.echo("\n".join(lines))
