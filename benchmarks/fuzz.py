"""Fuzz the CLI with damaged and hostile inputs of every kind and print the outcomes per kind.

Kinds: h5, keras, tflite, onnx (mutated model files through `compress quantize`/`export` or `bench`),
images (image folders: truncated, bombs, odd modes, EXIF, links), arrays (.npy/.npz with hostile
headers, keys and lengths), recipes (`compress pipeline --check`: wrong types, alias bombs, deep
nesting, bad encodings), sidecars (tampered and contradicting metadata through `bench`, `deploy` and
`quantize`), bundles (`compress deploy --check` of tampered folders and archives). Each case runs in a
long-lived worker with a time limit and a memory limit (1 GiB above what the worker held before the
case). Target: nothing but clean errors and successes.

    python benchmarks/fuzz.py --cases 10000
    python benchmarks/fuzz.py --kinds images,arrays --cases 400 --start 200   # cases 200..399 of each
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fuzz_harness import BAD_OUTCOMES, KINDS, MEMORY_LIMIT, OUTCOMES, fuzz  # noqa: E402
from fuzz_inputs import make_sources  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1000, help="total cases, split evenly over the kinds")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated, from: {', '.join(KINDS)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", type=int, default=0, help="index of each kind's first case (to run in chunks)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds before a case counts as a hang")
    parser.add_argument("--memory-mib", type=int, default=MEMORY_LIMIT >> 20, help="extra memory a case may take")
    parser.add_argument("--keep", type=Path, default=Path("benchmarks/out/fuzz-cases"),
                        help="where cases that end badly are saved, with a case.json")  # fmt: skip
    parser.add_argument("-v", "--verbose", action="store_true", help="print every case's outcome")
    args = parser.parse_args()
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        parser.error(f"unknown kind {unknown[0] if unknown else '(none)'}; choose from {', '.join(KINDS)}")
    per_kind = max(1, args.cases // len(kinds))
    started = time.perf_counter()
    times: Counter = Counter()

    def progress(case, result):
        times[case.kind] += 1
        if args.verbose or result.outcome in BAD_OUTCOMES:
            print(f"{case.kind} {case.index} {case.mutation}: {result.outcome} {result.detail}", flush=True)

    with tempfile.TemporaryDirectory(prefix="edgecompress-fuzz-") as tmp:
        workdir = Path(tmp)
        sources = make_sources(workdir / "sources")
        prepared = time.perf_counter() - started
        results = fuzz(sources, kinds, per_kind, workdir, seed=args.seed, start=args.start, timeout=args.timeout,
                       keep=args.keep, memory_limit=args.memory_mib << 20, progress=progress)  # fmt: skip
    print(f"| kind | cases | {' | '.join(OUTCOMES)} |")
    print("|---|---|" + "---|" * len(OUTCOMES))
    for kind, counts in results.items():
        print(f"| {kind} | {sum(counts.values())} | " + " | ".join(str(counts[o]) for o in OUTCOMES) + " |")
    total = sum((results[k] for k in results), Counter())
    bad = sum(total[o] for o in BAD_OUTCOMES)
    print(f"| all | {sum(total.values())} | " + " | ".join(str(total[o]) for o in OUTCOMES) + " |")
    print(f"seed {args.seed}, cases {args.start}..{args.start + per_kind - 1} of each kind, time limit "
          f"{args.timeout:.0f} s and {args.memory_mib} MiB per case; sources {prepared:.0f} s, "
          f"{time.perf_counter() - started:.0f} s in all; {bad} bad outcome(s)")  # fmt: skip
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
