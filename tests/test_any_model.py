"""Any trained model: non-image inputs, float .tflite and .onnx sources, Keras 3 back to Keras 3, honest sizes.

Every model here is built in the test (tests/any_models.py); nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import any_models as am
import numpy as np
import pytest
from click.testing import CliRunner

from edgecompress import api
from edgecompress.calibration.data import ImageSet, ModelInputs, random_inputs
from edgecompress.calibration.preprocessing import Preprocessing
from edgecompress.errors import DataError, UnsupportedError, UsageError
from edgecompress.models.inputs import input_shape_of

#: int8 may lose at most this much top-1 against float on held-out data (the issue's 0.5 points)
MAX_DROP = 0.005
#: int8 against float on the trained tiny MobileNetV2 below (the issue's 0.5 and 0.3 points are
#: measured on the zoo models by benchmarks/any_model.py): a little over one point, since its 360 test
#: images still hold a few borderline ones and CPU training is not bit-reproducible run to run.
TINY_DROP = 0.012
TRAINED_EPOCHS = 16


def top1(report) -> tuple[float, float]:
    return report.evaluation.source.metrics["top1"], report.evaluation.output.metrics["top1"]


# --------------------------------------------------------------------------- inputs of any rank (no TensorFlow)


def test_float_arrays_of_any_rank_feed_the_model_as_they_are():
    for shape in ((640,), (28, 28), (49, 10, 1)):
        x = np.random.default_rng(0).standard_normal((5, *shape)).astype(np.float32)
        inputs = ModelInputs.build(ImageSet(x, None, "arrays", preprocessed=True), shape, Preprocessing())
        assert np.array_equal(inputs.array(), x)
    with pytest.raises(DataError, match=r"float samples of shape \(28, 28\) but the model takes \(640,\)"):
        ModelInputs.build(ImageSet(np.zeros((2, 28, 28), np.float32), None, "a", preprocessed=True), (640,), Preprocessing())


def test_integer_samples_of_a_non_image_input_are_only_scaled():
    raw = np.arange(2 * 640, dtype=np.uint8).reshape(2, 640)
    inputs = ModelInputs.build(ImageSet(raw, None, "ints"), (640,), Preprocessing(scale=0.5, offset=1.0))
    assert np.allclose(inputs.array(), raw * 0.5 + 1.0)
    with pytest.raises(DataError, match="not an image"):
        ModelInputs.build(ImageSet(np.zeros((2, 8, 8), np.uint8), None, "img"), (640,), Preprocessing())


def test_nchw_images_are_preprocessed_channels_last_then_transposed():
    pixels = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3)).astype(np.uint8)
    pre = Preprocessing(mean=am.MEAN, std=am.STD)
    nchw = ModelInputs.build(ImageSet(pixels, None, "rgb"), (3, 16, 16), pre, layout="NCHW").array()
    nhwc = ModelInputs.build(ImageSet(pixels, None, "rgb"), (16, 16, 3), pre).array()
    assert nchw.shape == (3, 3, 16, 16) and np.allclose(nchw, nhwc.transpose(0, 3, 1, 2))
    assert random_inputs((3, 16, 16), pre, 2, layout="NCHW").shape == (2, 3, 16, 16)
    assert random_inputs((640,), pre, 2).shape == (2, 640)


def test_progress_off_a_terminal_is_a_few_plain_lines():
    import io

    from edgecompress._progress import progress_bar

    stream = io.StringIO()
    with progress_bar(total=20000, desc="calibrating", file=stream) as bar:
        for i in range(20000):
            bar.update(1)
            if i % 1000 == 0:
                bar.set_description(f"model {i}")  # bench renames its bar per model: no extra lines
    text = stream.getvalue()
    assert "\r" not in text and 1 <= text.count("\n") <= 3 and "20000/20000" in text


# --------------------------------------------------------------------------- non-image Keras models


@pytest.mark.parametrize("name", sorted(am.NON_IMAGE))
def test_non_image_models_quantize_to_int8_qat_and_prune(out, name):
    # Trained here, saved with Adam's state as users' files are, with float .npz data of the input shape.
    model, train, test = am.non_image_model(name, out, epochs=12)
    report = api.quantize(model, out / "m.int8.tflite", mode="int8", calib=train, eval=test)
    source, output = top1(report)
    assert source > 0.5 and output >= source - MAX_DROP, (source, output)
    assert report.output.metadata.inputs[0].shape == input_shape_of(api.load(model))
    # The source .h5 holds Adam's state: the report says so, and the ratio is against the parameters.
    sizes = report.sizes
    assert sizes.optimizer_bytes > 0 and "float32 parameters" in sizes.reference
    assert sizes.ratio == pytest.approx(sizes.reference_bytes / report.output.size_bytes)
    pruned = api.prune(model, out / "m.pruned.h5", data=train, eval=test, epochs=1, measure=False, progress=False)
    assert pruned.output.path.is_file() and pruned.evaluation.samples > 0
    qat = api.qat(model, out / "m.qat.tflite", data=train, eval=test, epochs=1, compare=False, progress=False)
    assert qat.output.path.is_file()


# --------------------------------------------------------------------------- float .tflite sources


@pytest.fixture(scope="session")
def trained_classifier(workdir) -> Path:
    """The session's tiny MobileNetV2 (32 px, α 0.35) trained to convergence for the accuracy checks
    here: the shared 4-epoch one (80-84 %) sits on many borderline images, and int8 moved between 0 and
    9 of them from run to run."""
    from edgecompress.models.train import save_model, train_classifier
    from edgecompress.models.zoo import build

    model, metadata = build("mobilenet_v2", input_size=32, alpha=0.35, classes=10)
    metadata = dataclasses.replace(metadata, labels=tuple(str(i) for i in range(10)))
    train = api.model_inputs("digits", metadata.inputs[0].shape, metadata.preprocessing, split="train")
    train_classifier(model, train, epochs=TRAINED_EPOCHS, lr=3e-3, progress=False)
    return save_model(model, workdir / "trained.h5", metadata)


@pytest.fixture(scope="session")
def tiny_float_tflite(workdir, trained_classifier) -> Path:
    return api.export(trained_classifier, workdir / "trained.any_model.float.tflite").output.path


@pytest.fixture(scope="session")
def trained_onnx(workdir, trained_classifier) -> Path:
    """Exported through tf2onnx, as `compress export --format onnx` does."""
    return api.export(trained_classifier, workdir / "trained.float.onnx", format="onnx").output.path


def test_a_float_tflite_quantizes_like_its_keras_source(trained_classifier, tiny_float_tflite, out):
    from edgecompress.compress.tflite_graph import float_ops

    keras = api.quantize(trained_classifier, out / "k.tflite", mode="int8", calib="digits", eval="digits")
    tflite = api.quantize(tiny_float_tflite, out / "t.tflite", mode="int8", calib="digits", eval="digits")
    # Same float model in both formats; each int8 keeps its accuracy (the two quantizers may flip
    # different borderline images, so they are not compared image for image).
    assert top1(tflite)[0] == pytest.approx(top1(keras)[0], abs=1 / 360), (top1(tflite), top1(keras))
    for report in (keras, tflite):
        assert top1(report)[1] >= top1(report)[0] - TINY_DROP, top1(report)
    assert not float_ops(tflite.output.path.read_bytes())
    assert tflite.report.backend["quantizer"] == "ai-edge-quantizer" and tflite.report.check.passed
    # The sidecar of the source is carried over; the ratio is against the float .tflite itself.
    assert tflite.output.metadata.preprocessing == api.load(tiny_float_tflite).metadata.preprocessing
    assert tflite.sizes.reference_bytes == tiny_float_tflite.stat().st_size and tflite.size_ratio > 2.5
    dynamic = api.quantize(tiny_float_tflite, out / "d.tflite", mode="dynamic", eval="digits")
    assert top1(dynamic)[1] >= top1(dynamic)[0] - 0.01


def test_a_tflite_source_quantizes_per_tensor(tiny_float_tflite, out):
    from ai_edge_litert.interpreter import Interpreter

    path = api.quantize(tiny_float_tflite, out / "pt.tflite", mode="int8", per_channel=False, calib="digits").output.path
    details = Interpreter(model_path=str(path)).get_tensor_details()
    assert max(len(t["quantization_parameters"]["scales"]) for t in details) == 1


def test_a_tflite_without_signature_and_sidecar_quantizes(tiny_float_tflite, out):
    bare = out / "bare.tflite"
    bare.write_bytes(am.strip_signatures(tiny_float_tflite.read_bytes()))
    pre = api.load(tiny_float_tflite).metadata.preprocessing.to_dict()
    report = api.quantize(bare, out / "bare.int8.tflite", mode="int8", calib="digits", eval="digits", preprocessing=pre)
    assert report.report.backend["signature_added"] is True
    source, output = top1(report)
    assert output >= source - TINY_DROP, (source, output)


def test_cli_quantizes_a_tflite_and_says_what_the_ratio_is_against(tiny_float_tflite, out):
    from edgecompress.cli.main import cli

    result = CliRunner().invoke(cli, ["quantize", str(tiny_float_tflite), "--mode", "dynamic", "-o", str(out / "d.tflite")])
    assert result.exit_code == 0, result.output
    size_line = next(line for line in result.output.splitlines() if line.strip().startswith("size"))
    assert "smaller than the float model" in size_line and "the float .tflite source itself" in size_line


def test_modes_a_tflite_source_cannot_serve_are_refused_with_the_alternative(tiny_float_tflite, tiny_int8, out):
    with pytest.raises(UnsupportedError, match="float16 is not available for a .tflite source") as info:
        api.quantize(tiny_float_tflite, out / "x.tflite", mode="float16")
    assert "--mode dynamic" in info.value.hint
    with pytest.raises(UnsupportedError, match="uint8"):
        api.quantize(tiny_float_tflite, out / "x.tflite", mode="int8", io="uint8", calib="digits")
    with pytest.raises(UsageError, match="already quantized"):
        api.quantize(tiny_int8, out / "y.tflite", mode="dynamic")


# --------------------------------------------------------------------------- .onnx sources


def test_a_tf2onnx_model_quantizes_to_int8(trained_onnx, out):
    report = api.quantize(trained_onnx, out / "q.onnx", mode="int8", calib="digits", eval="digits")
    assert report.output.format.value == "onnx" and report.report.backend["quantizer"] == "onnxruntime"
    source, output = top1(report)
    assert output >= source - TINY_DROP, (source, output)


@pytest.fixture(scope="session")
def torch_style_onnx(workdir) -> Path:
    return am.nchw_onnx(am.train_nchw_twin(workdir, epochs=15), workdir / "torch_style.onnx")


def test_a_pytorch_style_nchw_onnx_quantizes_to_int8(torch_style_onnx, out):
    pre = {"mean": am.MEAN, "std": am.STD}
    report = api.quantize(torch_style_onnx, out / "q.onnx", mode="int8", calib="digits", eval="digits", preprocessing=pre)
    source, output = top1(report)
    assert source > 0.6 and output >= source - MAX_DROP, (source, output)
    spec = report.output.metadata.inputs[0]
    assert spec.layout == "NCHW" and tuple(spec.shape) == (3, am.NCHW_SIZE, am.NCHW_SIZE)
    assert report.output.metadata.preprocessing.mean == am.MEAN
    # The sidecar carries the layout: bench measures the output on raw images without options.
    records = api.bench([report.output.path], runs=2, warmup=0, eval="digits")
    assert records[0].metric_value == pytest.approx(output)


def test_nchw_onnx_to_tflite_is_refused_in_one_line(torch_style_onnx, out):
    from edgecompress.cli.main import cli

    result = CliRunner().invoke(cli, ["quantize", str(torch_style_onnx), "--format", "tflite", "--mode", "int8",
                                      "--calib", "digits", "-o", str(out / "x.tflite")])  # fmt: skip
    assert result.exit_code not in (0, 70), result.output
    assert "onnx2tf" in result.output and "Traceback" not in result.output
    assert not (out / "x.tflite").exists()


# --------------------------------------------------------------------------- Keras 3 in, Keras 3 out


def test_a_keras3_model_is_pruned_to_keras_and_loaded_back_by_keras3(out):
    import keras

    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 20)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    np.savez(out / "data.npz", x=x, y=y)
    model = keras.Sequential([keras.Input((20,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(2, activation="softmax")])  # fmt: skip
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, verbose=0)
    model.save(out / "k3.keras")
    report = api.prune(out / "k3.keras", out / "k3.pruned.keras", data=out / "data.npz", epochs=1, measure=False,
                       progress=False)  # fmt: skip
    assert report.output.format.value == "keras-v3"
    # Keras 3 itself, without the legacy-Keras switch edgecompress sets, loads it and predicts what we load.
    code = ("import sys, numpy as np, keras; m = keras.saving.load_model(sys.argv[1]); "
            "np.save(sys.argv[3], m.predict(np.load(sys.argv[2])['x'][:16], verbose=0)); print(keras.__version__)")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    done = subprocess.run([sys.executable, "-c", code, str(report.output.path), str(out / "data.npz"),
                           str(out / "pred.npy")], env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().startswith("3.")
    from edgecompress.runtimes.keras_io import load_keras

    ours = load_keras(report.output.path).predict(x[:16])
    assert np.allclose(ours, np.load(out / "pred.npy"), atol=1e-6)
    assert json.loads(report.output.sidecar.read_text())["extra"]["keras_flavor"] == "keras3"


# --------------------------------------------------------------------------- foreign models end to end


def test_bench_takes_preprocessing_options_for_a_model_without_sidecar(tiny_float_tflite, out):
    from edgecompress.cli.main import cli

    bare = out / "bare.tflite"
    bare.write_bytes(tiny_float_tflite.read_bytes())  # no sidecar next to it
    pre = api.load(tiny_float_tflite).metadata.preprocessing  # what the model was trained with: [-1, 1]
    runner = CliRunner()
    args = ["bench", str(bare), "--runs", "2", "--warmup", "0", "--eval", "digits", "--json", "-q"]
    assumed = json.loads(runner.invoke(cli, args).output)[0]["metric_value"]  # [0, 1] pixels assumed
    given = runner.invoke(cli, [*args, "--scale", str(pre.scale), "--offset", str(pre.offset)])
    right = json.loads(given.output)[0]["metric_value"]
    with_sidecar = api.bench([tiny_float_tflite], runs=2, warmup=0, eval="digits")[0].metric_value
    assert right == pytest.approx(with_sidecar) and right > assumed + 0.2, (right, assumed)


def test_multi_input_models_get_one_clear_error(out):
    from edgecompress._env import import_tf_keras
    from edgecompress.models.inputs import input_spec_of

    tf_keras = import_tf_keras()
    a, b = tf_keras.Input((4,), name="a"), tf_keras.Input((3,), name="b")
    model = tf_keras.Model([a, b], tf_keras.layers.Dense(2)(tf_keras.layers.Concatenate()([a, b])))
    model.save(out / "two.h5")
    with pytest.raises(UnsupportedError, match=r"has 2 inputs \(a \(4,\), b \(3,\)\)"):
        input_spec_of(api.load(out / "two.h5"))


def test_a_tflite_quantized_from_a_tflite_deploys_and_passes_the_check(tiny_float_tflite, out):
    from edgecompress.deploy import build_bundle, check_bundle

    quantized = api.quantize(tiny_float_tflite, out / "q.tflite", mode="int8", io="int8", calib="digits").output.path
    build_bundle(quantized, "linux", out / "bundle")
    report = check_bundle(out / "bundle", runs=5)  # raises ValidationError when run.py disagrees
    assert report.integer and report.samples > 0
    # A model without a sidecar takes the preprocessing as options, like `compress quantize`.
    bare = out / "bare.tflite"
    bare.write_bytes(tiny_float_tflite.read_bytes())
    build_bundle(bare, "linux", out / "bare_bundle", preprocessing={"scale": 1 / 127.5, "offset": -1.0})
    written = json.loads((out / "bare_bundle" / "model.tflite.json").read_text())
    assert written["preprocessing"]["offset"] == -1.0 and written["deploy"]["preprocessing_origin"] == "options"


def test_a_non_image_int8_model_deploys_and_run_py_takes_float_npy(out):
    from edgecompress.deploy import build_bundle, check_bundle

    model, train, _ = am.non_image_model("dense_640", out, epochs=2)
    quantized = api.quantize(model, out / "v.int8.tflite", mode="int8", calib=train).output.path
    build_bundle(quantized, "linux", out / "bundle")
    assert np.load(out / "bundle" / "sample.npy").shape == (640,)
    report = check_bundle(out / "bundle", runs=5)  # run.py on float (N, 640) arrays, compared with the toolkit
    assert report.samples == 4
