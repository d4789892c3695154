"""Latency of the bundled model on this device: p50 / p90 over timed runs after warm-up.

    python3 bench.py [--threads 4] [--runs 100] [--warmup 10] [--json]

Times ``invoke`` only, on an input prepared (and quantized) beforehand, like `compress bench`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
from litert_model import Model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)

    model = Model(threads=args.threads)
    sample = np.random.default_rng(0).uniform(-1.0, 1.0, size=model.sample_shape).astype(np.float32)
    prepared = model.prepare(sample)
    for _ in range(args.warmup):
        model.run_raw(prepared)
    latencies = np.empty(args.runs)
    for i in range(args.runs):
        start = time.perf_counter()
        model.run_raw(prepared)
        latencies[i] = (time.perf_counter() - start) * 1000.0
    figures = {
        "latency_ms_p50": float(np.percentile(latencies, 50)),
        "latency_ms_p90": float(np.percentile(latencies, 90)),
        "latency_ms_mean": float(latencies.mean()),
        "runs": args.runs,
        "threads": args.threads,
        "runtime": model.runtime,
        "machine": f"{platform.machine()} {platform.platform(terse=True)}",
    }
    if args.json:
        print(json.dumps(figures))
    else:
        print(
            f"p50 {figures['latency_ms_p50']:.3f} ms  p90 {figures['latency_ms_p90']:.3f} ms  "
            f"({args.runs} runs, {args.threads} threads, {model.runtime}, {figures['machine']})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
