"""Int8 that keeps its accuracy: float, default int8 and the best int8 our tools find, per zoo model.

    python benchmarks/ptq_hard.py --train-only mobilenet_v2   # train (and cache) one model, nothing else
    python benchmarks/ptq_hard.py --only blazepose_landmark    # measure some models
    python benchmarks/ptq_hard.py                              # every model → a markdown table on stdout
    python benchmarks/ptq_hard.py --per-tensor-demo            # MobileNetV2 per-tensor, with and without CLE + BC
    python benchmarks/ptq_hard.py --inspect-timing             # `compress inspect` vs `compress quantize`, 224 px

Models and training are the zoo benchmark's (``benchmarks/zoo.py``: same sizes, epochs, seeds,
deterministic ops), cached in ``benchmarks/out/ptq_hard/``. For each model and format (TFLite, ONNX):

- **float**: the float file; **default int8**: ``compress quantize --mode int8`` as it was
  (per-channel, min/max from the converter's or ONNX Runtime's calibrator, 100 training images);
- **best int8**: each candidate below is *selected on the held-out validation split the model was
  trained with* (10 % of digits:train / synthetic:train, never used for weights), then reported on
  the test split; ties go to the smaller, then the faster file. Candidates: calibration methods
  (minmax with our observers, percentile 99.99, entropy, mse), ``--equalize --bias-correction``, and
  ``--auto-keep-float`` (max drop 0.3 points on the validation split) on top of the best of those.

Metric, file size and median LiteRT / ONNX Runtime latency (batch 1, 2 threads, 50 runs) per cell.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from edgecompress._env import configure_environment  # noqa: E402

configure_environment()

MODELS = ("mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "resnet18", "inception_v3", "unet", "blazepose_landmark")
WORKDIR = HERE / "out" / "ptq_hard"
#: validation split of train_zoo (models/train.py): the same seeded 10 % it trained without
VAL_SPLIT, SEED = 0.1, 0
CALIB_SAMPLES = 100
THREADS, RUNS = 2, 50


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def trained(name: str, workdir: Path = WORKDIR) -> Path:
    """The zoo benchmark's model, trained once (deterministically) and cached."""
    from zoo import BENCH

    from edgecompress.models.train import train_zoo

    path = workdir / f"{name}.h5"
    if path.exists():
        return path
    workdir.mkdir(parents=True, exist_ok=True)
    params, epochs, lr = BENCH[name]
    started = time.perf_counter()
    result = train_zoo(name, path, None, epochs, VAL_SPLIT, 32, lr, params, progress=False, force=True, seed=SEED)
    say(f"{name}: trained {epochs} epochs in {time.perf_counter() - started:.0f} s; validation {result.scores}")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-only", nargs="*", help="Only train (and cache) these models.")
    parser.add_argument("--only", nargs="*", help="Measure only these models.")
    parser.add_argument("--workdir", type=Path, default=WORKDIR)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from edgecompress._env import import_tensorflow, quiet_python_loggers

    import_tensorflow().config.experimental.enable_op_determinism()
    quiet_python_loggers()
    if args.train_only is not None:
        for name in args.train_only or MODELS:
            trained(name, args.workdir)
        return 0
    raise SystemExit("measurement not written yet")


if __name__ == "__main__":
    raise SystemExit(main())
