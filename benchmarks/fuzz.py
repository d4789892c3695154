"""Fuzz the CLI with damaged models of every format and print the outcomes per format.

Each case mutates (bit flips, zeroed or duplicated chunks, truncation, inserted bytes, scrambled
header) a real model written by the toolkit and runs `compress quantize` + `compress export`
(Keras files) or `compress bench` (TFLite, ONNX) on it in a worker process. Target: 0 crashes,
0 hangs beyond the time limit, 0 tracebacks.

    python benchmarks/fuzz.py --cases 1000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fuzz_harness import OUTCOMES, fuzz, make_sources  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000, help="total cases, split evenly over the formats")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds before a case counts as a hang")
    parser.add_argument(
        "--keep",
        type=Path,
        default=Path("benchmarks/out/fuzz-cases"),
        help="where cases that crash, hang or show a traceback are saved",
    )
    args = parser.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgecompress-fuzz-") as tmp:
        workdir = Path(tmp)
        sources = make_sources(workdir)
        per_format = max(1, args.cases // len(sources))
        results = fuzz(sources, per_format, workdir, seed=args.seed, timeout=args.timeout, keep=args.keep)
    print(f"| format | cases | {' | '.join(OUTCOMES)} |")
    print("|---|---|" + "---|" * len(OUTCOMES))
    for name, counts in results.items():
        print(f"| {name} | {sum(counts.values())} | " + " | ".join(str(counts[o]) for o in OUTCOMES) + " |")
    print(
        f"seed {args.seed}, time limit {args.timeout:.0f} s per case, {time.perf_counter() - start:.0f} s in all"
    )


if __name__ == "__main__":
    main()
