"""Hostile and broken inputs, interrupted runs: nothing crashes, hangs, leaks code or loses work."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from edgecompress import api
from edgecompress.artifacts import Artifact, sha256_of
from edgecompress.errors import DataError, ModelLoadError, UnsafeModelError
from edgecompress.runtimes.keras_io import load_keras, unsafe_layers

sys.path.insert(0, str(Path(__file__).parent))
from fuzz_harness import OUTCOMES, fuzz, make_sources  # noqa: E402


def _rewrite_config(source: Path, target: Path, change) -> Path:
    target.write_bytes(source.read_bytes())
    with h5py.File(target, "r+") as handle:
        config = json.loads(handle.attrs["model_config"])
        change(config)
        handle.attrs["model_config"] = json.dumps(config)
    return target


def test_tf_op_that_writes_files_is_refused(tmp_path, tiny_classifier):
    def add_write_file(config):
        layer = config["config"]["layers"][1]
        layer["class_name"] = "TFOpLambda"
        layer["config"]["function"] = "io.write_file"

    path = _rewrite_config(tiny_classifier, tmp_path / "writer.h5", add_write_file)
    with pytest.raises(UnsafeModelError, match=r"tf\.io\.write_file"):
        load_keras(path)


def test_keras3_config_naming_a_foreign_module_is_refused():
    config = {"class_name": "Functional", "config": {"layers": [
        {"module": "keras.layers", "class_name": "Dense", "config": {"name": "ok"}},
        {"module": "os", "class_name": "system", "config": {"name": "evil"}},
    ]}}
    assert unsafe_layers(config) == ["evil (system from module 'os')"]


def test_probe_time_limit_turns_a_hang_into_a_clear_error(tiny_int8, tmp_path, monkeypatch):
    from edgecompress.runtimes import probe as probe_module

    copy = tmp_path / "copy.tflite"
    copy.write_bytes(tiny_int8.read_bytes())  # a new inode: not trusted yet
    with pytest.raises(ModelLoadError, match="hung for more than"):
        probe_module.probe("litert", copy, timeout=0.01)
    probe_module.probe("litert", copy)  # a healthy file passes once the child has time
    probe_module.probe("litert", copy)  # and is then trusted without a second child


def test_fuzz_slice_has_no_crash_hang_or_traceback(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("fuzz")
    sources = make_sources(workdir)
    results = fuzz(sources, cases_per_format=3, workdir=workdir, seed=7, timeout=90)
    for name, counts in results.items():
        assert sum(counts.values()) == 3
        assert set(counts) <= set(OUTCOMES)
        bad = {k: counts[k] for k in ("crash", "hang", "traceback") if counts[k]}
        assert not bad, f"{name}: {dict(counts)}"


def _kill_run(source: Path, output: Path, delay: float) -> None:
    command = [sys.executable, "-m", "edgecompress.cli", "quantize", str(source), "-o", str(output),
               "--mode", "int8", "--calib", "digits", "--calib-samples", "20", "--force", "-q"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        process.wait(timeout=delay)  # a run that ends sooner is not waited for: "full" is its real length
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()


def test_sigkill_at_many_points_never_leaves_a_broken_output(tmp_path, tiny_classifier):
    source = tmp_path / "model.h5"
    source.write_bytes(tiny_classifier.read_bytes())
    (tmp_path / "model.h5.json").write_bytes(Path(str(tiny_classifier) + ".json").read_bytes())
    before = sha256_of(source)
    start = time.perf_counter()
    _kill_run(source, tmp_path / "full.tflite", delay=120)  # not killed: how long a whole run takes
    full = time.perf_counter() - start
    assert (tmp_path / "full.tflite").exists()
    for i, fraction in enumerate((0.2, 0.5, 0.8, 0.95)):
        output = tmp_path / f"out{i}.tflite"
        _kill_run(source, output, delay=full * fraction)
        if output.exists():
            artifact = Artifact.open(output)  # a present output is complete: it opens and has its sidecar
            assert artifact.metadata.lineage[-1].source_sha256 == before
            from edgecompress.runtimes import open_session

            with open_session(artifact) as session:
                assert session.predict(np.zeros((1, 32, 32, 3), np.float32)).shape == (1, 10)
        assert sha256_of(source) == before, "the input must be byte-identical"
    # The next write of an output sweeps temporaries left by killed writers.
    api.quantize(source, tmp_path / "out0.tflite", mode="dynamic", force=True)
    leftovers = [p.name for p in tmp_path.iterdir() if ".partial" in p.name and p.name.startswith(".out0.")]
    assert leftovers == []


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: np.save(p / "s.npy", np.array([["a", "b"]] * 4)), "dtype"),
        (lambda p: np.save(p / "b.npy", np.ones((4, 8, 8), bool)), "dtype"),
        (lambda p: np.savez(p / "i.npz", x=np.full((2, 32, 32, 3), np.inf, np.float32)), "NaN or infinite"),
    ],
)
def test_bad_calibration_arrays(tmp_path, tiny_classifier, make, message):
    make(tmp_path)
    data = next(p for p in tmp_path.iterdir() if p.suffix in (".npy", ".npz"))
    with pytest.raises(DataError, match=message):
        api.quantize(tiny_classifier, tmp_path / "x.tflite", mode="int8", calib=data)
    assert not (tmp_path / "x.tflite").exists()


def test_labels_out_of_range_for_the_model(tmp_path, tiny_classifier):
    np.savez(tmp_path / "e.npz", x=np.zeros((4, 8, 8), np.uint8), y=np.array([0, 3, 12, 1]))
    with pytest.raises(DataError, match="labels go up to 12 but the model predicts 10 classes"):
        api.quantize(tiny_classifier, tmp_path / "x.tflite", eval=tmp_path / "e.npz")
    assert not (tmp_path / "x.tflite").exists()


def test_hdf5_is_read_in_a_child_first(tmp_path, tiny_classifier):
    """Corrupted HDF5 metadata can make the library loop forever (our fuzzer found such files)."""
    from edgecompress.runtimes import probe as probe_module

    copy = tmp_path / "copy.h5"
    copy.write_bytes(tiny_classifier.read_bytes())
    with pytest.raises(ModelLoadError, match="hung for more than"):
        probe_module.probe("hdf5", copy, timeout=0.01)
    assert load_keras(copy).input_shape == (32, 32, 3)  # a healthy file passes the probe and loads


def test_a_script_without_a_main_guard_can_load_models(tiny_classifier, tiny_int8, tmp_path):
    """The probe children must not re-run the caller's script (multiprocessing's spawn does)."""
    h5, tflite = tmp_path / "m.h5", tmp_path / "m.tflite"
    h5.write_bytes(tiny_classifier.read_bytes())  # new inodes: both are probed in a child
    tflite.write_bytes(tiny_int8.read_bytes())
    script = tmp_path / "unguarded.py"
    script.write_text(
        "from edgecompress import api\n"
        f"report = api.quantize({str(h5)!r}, {str(tmp_path / 'q.tflite')!r}, mode='dynamic')\n"
        "print('keras', report.output.format.value)\n"
        f"print('tflite', api.bench([{str(tflite)!r}], runtimes=['litert'], runs=2, warmup=0)[0].runtime)\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == ["keras tflite", "tflite litert"]


def test_child_runner_reports_a_crash_and_an_error():
    from edgecompress._child import run_in_child

    crashed = run_in_child("os:abort", [], timeout=60)
    assert crashed.exitcode is not None and crashed.exitcode < 0 and not crashed.ok
    failed = run_in_child("json:loads", ["not json"], timeout=60)
    assert failed.error and failed.error.startswith("Expecting value")
    assert run_in_child("json:loads", ["[1, 2]"], timeout=60).value == [1, 2]
