"""Int8 accuracy tools: observers, calibration routes, weight fixes, keep-float, inspect."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgecompress._env import import_tf_keras
from edgecompress.calibration.observers import (
    OBSERVERS,
    EntropyObserver,
    MSEObserver,
    PercentileObserver,
    expected_squared_error,
    kl_divergence,
    make_observer,
    quantization_params,
)
from edgecompress.errors import UsageError

RNG = np.random.default_rng(0)


def _chunks(x: np.ndarray, parts: int = 5) -> list[np.ndarray]:
    return np.array_split(x, parts)


def _heavy_tailed(n: int = 40_000) -> np.ndarray:
    """ReLU-like activations with a few large outliers, fed in chunks whose range keeps growing."""
    x = np.maximum(RNG.normal(0.5, 1.0, n), 0).astype(np.float32)
    x[RNG.choice(n, 20, replace=False)] = RNG.uniform(8, 30, 20).astype(np.float32)
    return np.sort(x)[np.argsort(RNG.random(n))]


# --------------------------------------------------------------------------- observers vs numpy


def test_minmax_streams_to_numpy_extremes_per_tensor_and_per_channel():
    x = (RNG.normal(size=(64, 5, 5, 7)) * np.arange(1, 8)).astype(np.float32)
    tensor, channel = make_observer("minmax"), make_observer("minmax", axis=-1)
    for chunk in _chunks(x):
        tensor.update(chunk)
        channel.update(chunk)
    assert tensor.range() == (x.min(), x.max())
    lo, hi = channel.range()
    np.testing.assert_array_equal(lo, x.min(axis=(0, 1, 2)))
    np.testing.assert_array_equal(hi, x.max(axis=(0, 1, 2)))


@pytest.mark.parametrize("percentile", [99.0, 99.99])
def test_percentile_matches_numpy_quantiles_of_the_central_share(percentile):
    x = RNG.normal(1.0, 2.0, 60_000).astype(np.float32)
    observer = PercentileObserver(percentile=percentile)
    for chunk in _chunks(np.sort(x)[::-1].copy(), 7):  # descending: the range grows with every chunk
        observer.update(chunk)
    tail = (100 - percentile) / 200
    lo, hi = observer.range()
    width = (x.max() - x.min()) / observer.bins
    assert lo == pytest.approx(np.quantile(x, tail), abs=3 * width)
    assert hi == pytest.approx(np.quantile(x, 1 - tail), abs=3 * width)


def test_percentile_per_channel_matches_numpy_per_channel():
    x = RNG.normal(size=(4000, 3)).astype(np.float32) * np.array([1.0, 5.0, 0.2], np.float32)
    observer = PercentileObserver(axis=-1, percentile=99.0)
    for chunk in _chunks(x):
        observer.update(chunk)
    lo, hi = observer.range()
    for c in range(3):
        assert hi[c] == pytest.approx(np.quantile(x[:, c], 0.995), abs=_tolerance(x[:, c], 0.995, observer.bins))
        assert lo[c] == pytest.approx(np.quantile(x[:, c], 0.005), abs=_tolerance(x[:, c], 0.005, observer.bins))


def _tolerance(values: np.ndarray, q: float, bins: int) -> float:
    """A few histogram bins, plus the gap between neighbouring order statistics (sparse tails)."""
    ordered = np.sort(values)
    k = int(q * (len(values) - 1))
    gap = ordered[min(k + 2, len(values) - 1)] - ordered[max(k - 2, 0)]
    return 3 * (ordered[-1] - ordered[0]) / bins + gap


def _raw_mse(x: np.ndarray, lo: float, hi: float) -> float:
    scale = (hi - lo) / 255
    q = np.clip(np.round((x - lo) / scale), 0, 255) * scale + lo
    return float(np.mean((q - x) ** 2))


def test_mse_range_is_near_the_best_clipping_on_the_raw_values():
    x = _heavy_tailed()
    observer = MSEObserver()
    for chunk in _chunks(x):
        observer.update(chunk)
    lo, hi = observer.range()
    # Reference: the same candidate ranges, scored on the raw values instead of a histogram.
    shrinks = np.linspace(0.125, 1.0, 225)
    best = min(_raw_mse(x, min(x.min(), 0) * s, x.max() * s) for s in shrinks)
    assert _raw_mse(x, lo, hi) <= 1.05 * best
    assert _raw_mse(x, lo, hi) < _raw_mse(x, 0.0, x.max())  # better than min/max


def test_entropy_streaming_agrees_with_a_one_shot_numpy_histogram():
    x = _heavy_tailed()
    observer = EntropyObserver()
    for chunk in _chunks(x):
        observer.update(chunk)
    lo, hi = observer.range()
    # exact zeros are left out of the histogram (zero is on every int8 grid)
    hist, edges = np.histogram(x[x != 0], bins=2048, range=(0.0, float(x.max())))
    centres = (edges[:-1] + edges[1:]) / 2
    shrinks = np.linspace(0.125, 1.0, 225)
    scores = [kl_divergence(hist.astype(float), centres, 0.0, x.max() * s, 256) for s in shrinks]
    reference = x.max() * shrinks[int(np.argmin(scores))]
    assert lo == 0.0
    assert hi == pytest.approx(reference, rel=0.03)


def _entropy_range(x: np.ndarray) -> tuple[float, float]:
    observer = EntropyObserver()
    for chunk in _chunks(x):
        observer.update(chunk)
    return tuple(float(v) for v in observer.range())


def test_entropy_keeps_the_range_of_a_tensor_without_outliers():
    # Clipped mass must cost divergence: were the outliers counted in Q as well as P, the narrowest
    # candidate (1/8 of the range) would always win, as it did before this test.
    x = RNG.uniform(0.0, 6.0, 50_000).astype(np.float32)
    lo, hi = _entropy_range(x)
    assert lo == 0.0 and hi >= 0.9 * x.max()


def test_entropy_clips_rare_outliers_but_not_the_bulk():
    x = _heavy_tailed()
    _, hi = _entropy_range(x)
    bulk = x[x < 8]
    assert np.quantile(bulk, 0.999) <= hi < 0.6 * x.max()  # the widest outliers are clipped, the bulk kept


def test_entropy_ignores_exact_zeros():
    # A ReLU's exact zeros are exact in int8; a spike of them must not pull the range in.
    x = RNG.uniform(0.0, 6.0, 20_000).astype(np.float32)
    with_zeros = np.concatenate([x, np.zeros(60_000, np.float32)])
    assert _entropy_range(with_zeros) == pytest.approx(_entropy_range(x), rel=0.02)


def test_expected_error_and_quantization_params_follow_the_affine_grid():
    centres = np.array([0.0, 1.0, 10.0])
    hist = np.array([1.0, 1.0, 1.0])
    step = 2.0 / 255
    assert expected_squared_error(hist, centres, 0.0, 2.0, 256) == pytest.approx(2 * step**2 / 12 + 64.0)
    assert quantization_params(0.0, 2.55) == (pytest.approx(0.01), -128)
    scale, zero = quantization_params(-1.0, 1.0)
    assert scale == pytest.approx(2 / 255) and zero == 0


def test_observers_are_found_by_name_and_unknown_names_list_the_valid_ones():
    assert set(OBSERVERS.names()) == {"minmax", "percentile", "entropy", "mse"}
    assert isinstance(make_observer("kl"), EntropyObserver)
    with pytest.raises(UsageError) as info:
        make_observer("median")
    assert "minmax" in str(info.value) and "\n" not in str(info.value)


# --------------------------------------------------------------------------- conversions (tiny model)


@pytest.fixture(scope="session")
def tiny_keras(tiny_classifier):
    from edgecompress.runtimes.keras_io import load_keras

    return load_keras(tiny_classifier)


@pytest.fixture(scope="session")
def tiny_calib(tiny_keras):
    from edgecompress.api import model_inputs
    from edgecompress.artifacts import Artifact

    source = Artifact.open(tiny_keras.path)
    return model_inputs("digits", tiny_keras.input_shape, source.metadata.preprocessing, "train", samples=40)


def _tensor(data: bytes, name: str) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    return next(d for d in Interpreter(model_content=data).get_tensor_details() if d["name"] == name)


def test_calibrate_only_route_with_the_converters_ranges_writes_the_plain_conversion(tiny_keras, tiny_calib):
    from edgecompress.compress.convert import RangeOptions, keras_to_tflite
    from edgecompress.compress.tflite_graph import operators, weight_tensors

    plain = keras_to_tflite(tiny_keras.model, "int8", tiny_calib)
    routed = keras_to_tflite(tiny_keras.model, "int8", tiny_calib, ranges=RangeOptions())
    assert len(routed) == len(plain)  # only the order of the two metadata entries differs
    assert operators(routed) == operators(plain)
    for (op_a, a), (op_b, b) in zip(weight_tensors(routed), weight_tensors(plain), strict=True):
        assert op_a == op_b and np.array_equal(a, b)
    assert _quantization(routed) == _quantization(plain)


def _quantization(data: bytes) -> list:
    from ai_edge_litert.interpreter import Interpreter

    return [(d["name"], d["dtype"].__name__, tuple(d["shape"]), tuple(d["quantization_parameters"]["scales"]),
             tuple(d["quantization_parameters"]["zero_points"])) for d in Interpreter(model_content=data).get_tensor_details()]


def test_percentile_range_sets_the_int8_scale_exactly_as_computed(tiny_keras, tiny_calib):
    from edgecompress._env import import_tf_keras
    from edgecompress.compress.convert import RangeOptions, keras_calibrated

    percentile = PercentileObserver(percentile=99.0)
    calibrated = keras_calibrated(tiny_keras.model, tiny_calib, RangeOptions("percentile", 99.0))
    name = next(n for n in calibrated.ranges if n.split(";")[0].endswith("block_3_expand_relu/Relu6"))
    lo, hi = calibrated.ranges[name]
    # Our own percentile of the Keras layer's output: the range written is the one computed.
    layer = tiny_keras.model.get_layer("block_3_expand_relu")
    values = import_tf_keras().Model(tiny_keras.model.inputs, layer.output).predict(tiny_calib.array(), verbose=0)
    percentile.update(values)
    assert (lo, hi) == pytest.approx(tuple(float(v) for v in percentile.range()), rel=2e-3, abs=1e-6)
    assert hi < values.max()  # clipped: min/max would have used the largest value
    detail = _tensor(calibrated.quantize(), name)
    scale, zero = quantization_params(lo, hi)
    assert detail["quantization"][0] == pytest.approx(scale, rel=1e-6)
    assert detail["quantization"][1] == zero


def test_onnx_calibration_methods_set_the_qdq_scales(tiny_keras, tiny_calib, tmp_path):
    import onnx
    from onnx import numpy_helper

    from edgecompress.compress.convert import keras_to_onnx
    from edgecompress.compress.onnx_calibrate import calibrate_onnx

    proto = keras_to_onnx(tiny_keras.model)
    scales = {}
    for method in ("minmax", "mse"):
        calibrated = calibrate_onnx(proto, tiny_calib, method)
        calibrated.quantize(tmp_path / f"{method}.onnx")
        model = onnx.load(str(tmp_path / f"{method}.onnx"))
        inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and "block_3_expand_relu" in n.input[0])
        lo, hi = calibrated.ranges[q.input[0]]
        scales[method] = float(inits[q.input[1]])
        assert scales[method] == pytest.approx(quantization_params(lo, hi)[0], rel=1e-6)
    assert scales["mse"] < scales["minmax"]


# --------------------------------------------------------------------------- weight fixes


def _uneven(model, seed: int = 1):
    """Random BatchNorm scales spanning ~2 decades, like trained networks show after folding."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            gamma, beta, mean, var = layer.get_weights()
            gamma = np.exp(rng.normal(0, 1.2, gamma.shape)).astype(np.float32)
            layer.set_weights([gamma, rng.normal(0, 0.2, beta.shape).astype(np.float32), mean, var])
    return model


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_equalization_keeps_float_outputs_and_narrows_the_channel_spread(name):
    from edgecompress._env import import_tf_keras
    from edgecompress.compress.equalize import _to_relu, equalize
    from edgecompress.models.zoo import build

    params = {"input_size": 32, "alpha": 0.25 if name == "resnet18" else 0.35, "classes": 10}
    model = _uneven(build(name, **params)[0])
    reference = import_tf_keras().models.clone_model(model)
    reference.set_weights(model.get_weights())
    x = RNG.uniform(-1, 1, (8, 32, 32, 3)).astype(np.float32)
    result = equalize(model)
    for layer in result.relu6_replaced:  # the paper's ReLU6 → ReLU, applied to the reference too
        _to_relu(reference.get_layer(layer))
    expected, got = reference(x).numpy(), model(x).numpy()
    assert result.pairs and result.folded
    assert np.max(np.abs(got - expected)) <= 1e-4 * np.max(np.abs(expected))
    assert result.spread_after < result.spread_before / 2


def test_bounded_relu6_equalization_keeps_a_saturating_model_where_replacing_relu6_does_not():
    """ReLU6s that reach their cap (large BatchNorm shifts, as a network trained into saturation has):
    the paper's ReLU6 → ReLU changes the outputs; relu6=bound keeps them on the data it read and still
    narrows the folded channel spread."""
    from edgecompress.compress.equalize import equalize
    from edgecompress.models.inputs import model_inputs
    from edgecompress.models.zoo import build

    tf_keras = import_tf_keras()
    model, metadata = build("mobilenet_v2", input_size=32, alpha=0.35, classes=10)
    rng = np.random.default_rng(2)
    for layer in _uneven(model).layers:
        if type(layer).__name__ == "BatchNormalization":
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([gamma, rng.normal(3.0, 3.0, beta.shape).astype(np.float32), mean, var])
    calib = model_inputs("digits", metadata.inputs[0].shape, metadata.preprocessing, split="train", samples=64)
    x = calib.array()
    logits = tf_keras.Model(model.inputs, model.layers[-1].input)  # before the softmax, which hides differences
    expected = logits.predict(x, verbose=0)
    with pytest.raises(UsageError, match="calibration"):
        equalize(model, relu6="bound")
    errors, results = {}, {}
    for policy in ("replace", "bound"):
        copy = tf_keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
        results[policy] = equalize(copy, relu6=policy, calibration=calib)
        got = tf_keras.Model(copy.inputs, copy.layers[-1].input).predict(x, verbose=0)
        errors[policy] = float(np.max(np.abs(got - expected)) / np.max(np.abs(expected)))
    bound = results["bound"]
    assert bound.pairs and not bound.relu6_replaced and any("ReLU6 kept" in n for n in bound.notes)
    assert bound.spread_after < bound.spread_before  # less than unbounded: channels at the cap stay as they were
    assert errors["bound"] <= 1e-4
    assert errors["replace"] > 1e-2  # the saturated activations, uncapped


def _uneven_convnet(seed: int = 0):
    """Conv → BatchNorm → ReLU ×3 with uneven BatchNorm scales, linear outputs: once folded, per-tensor
    int8 rounds the narrow channels' weights coarsely, a systematic shift bias correction is for."""
    tf_keras = import_tf_keras()
    tf_keras.utils.set_random_seed(seed)
    layers = tf_keras.layers
    inputs = tf_keras.Input((32, 32, 3))
    x = inputs
    for i, width in enumerate((16, 32, 32)):
        x = layers.Conv2D(width, 3, strides=2 if i else 1, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = layers.BatchNormalization(name=f"bn{i}")(x)
        x = layers.ReLU(name=f"relu{i}")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return _uneven(tf_keras.Model(inputs, layers.Dense(10, name="logits")(x)), seed + 1)


def test_bias_correction_lowers_the_mean_output_error(tiny_calib):
    from edgecompress.api import model_inputs
    from edgecompress.compress.bias_correct import bias_correct
    from edgecompress.compress.convert import keras_to_tflite
    from edgecompress.runtimes.litert import LiteRTSession, interpreter_class

    tf_keras = import_tf_keras()
    model = _uneven_convnet()
    held = model_inputs("digits", (32, 32, 3), tiny_calib.preprocessing, "test").array()[:200]
    expected = model.predict(held, verbose=0)
    errors = []
    for correct in (False, True):
        copy = tf_keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
        if correct:
            result = bias_correct(copy, tiny_calib, per_channel=False)
            assert result.corrected and result.samples == len(tiny_calib)
        data = keras_to_tflite(copy, "int8", tiny_calib, per_channel=False)
        got = LiteRTSession(interpreter_class()[0](model_content=data), "cpu", None).run(held)[0]
        errors.append(float(np.mean(np.abs(np.mean(got - expected, axis=0)))))  # mean error per output, on held-out data
    assert errors[1] < errors[0]


# --------------------------------------------------------------------------- keep-float, errors, inspect


def _layers_of(names, model) -> set[str]:
    from edgecompress.compress.layermap import LayerMap

    layer_map = LayerMap.of(model)
    return {layer for name in names for layer in layer_map.layers_in(name)}


def test_keep_float_leaves_exactly_those_layers_in_float_tflite(tiny_classifier, tiny_keras, tmp_path):
    from edgecompress import api
    from edgecompress.compress.layermap import LayerMap
    from edgecompress.compress.tflite_calibrate import Graph
    from edgecompress.compress.tflite_graph import BOUNDARY_OPS, float_op_list, operators

    kept = ("block_2_expand", "predictions")
    report = api.quantize(tiny_classifier, tmp_path / "kf.tflite", mode="int8", calib="digits", calib_samples=40,
                          keep_float=",".join(kept))  # fmt: skip
    data = report.output.path.read_bytes()
    graph, layer_map = Graph.read(data), LayerMap.of(tiny_keras.model)
    index = {name: i for i, name in enumerate(graph.names)}

    def layers(names) -> set[str]:  # a renamed output ("Identity": the softmax) by its position
        return {layer for name in names for layer in graph.layers_of(index[name], layer_map)}

    floats = [name for op in float_op_list(data) for name in op.output_names]
    ints = [name for op in operators(data) if op.name not in BOUNDARY_OPS and op not in float_op_list(data)
            for name in op.output_names]  # fmt: skip
    assert set(kept) <= layers(floats)
    assert all(set(kept) & layers([name]) for name in floats)
    assert not set(kept) & layers(ints)
    assert report.output.metadata.lineage[-1].params["keep_float"] == list(kept)


def test_keep_float_excludes_those_nodes_from_onnx_quantization(tiny_classifier, tiny_keras, tmp_path):
    import onnx

    from edgecompress import api

    report = api.quantize(tiny_classifier, tmp_path / "kf.onnx", mode="int8", format="onnx", calib="digits",
                          calib_samples=40, keep_float=("block_2_expand",))  # fmt: skip
    model = onnx.load(str(report.output.path))
    inits = {i.name for i in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    kept = [n for n in convs if "block_2_expand" in _layers_of([n.name, *n.output], tiny_keras.model)]
    assert kept and all(n.input[1] in inits for n in kept)  # float weights, straight from an initializer
    assert all(n.input[1] not in inits for n in convs if n not in kept)  # the rest read DequantizeLinear


def test_keep_float_tails_hold_every_layer_with_an_op_not_only_inspects_rows():
    """ONNX keeps a residual Add and its ReLU as two nodes, which inspect ranks as one row (the ReLU's);
    a tail without the Add left it in int8 between float layers (the landmark model's ONNX search
    stalled at 2 points however long its tail)."""
    from types import SimpleNamespace

    from edgecompress.compress import convert
    from edgecompress.compress.keepfloat import _Trials
    from edgecompress.compress.layermap import LayerMap

    layers = import_tf_keras().layers
    x = layers.Input((8, 8, 3), name="input")
    a = layers.Conv2D(4, 3, padding="same", name="c1")(x)
    b = layers.Conv2D(4, 3, padding="same", name="c2")(a)
    y = layers.ReLU(name="out")(layers.Add(name="add")([a, b]))
    y = layers.Dense(3, name="dense")(layers.GlobalAveragePooling2D(name="pool")(y))
    model = import_tf_keras().Model(x, y)
    trials = _Trials.__new__(_Trials)  # only what the tail needs: the model, its layer map, the float graph
    trials.model, trials.layer_map = model, LayerMap.of(model)
    trials.config = SimpleNamespace(format=SimpleNamespace(value="onnx"))
    trials.calibrated = SimpleNamespace(float_model=convert.keras_to_onnx(model))
    with_ops = trials.layers_with_ops()
    assert {"c1", "c2", "add", "out", "pool", "dense"} <= set(with_ops)
    assert trials.tail("dense", with_ops) == ["dense", "pool", "out", "add", "c2", "c1"]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--keep-float", "block_2_expnd"], 2, "no layer 'block_2_expnd' (did you mean block_2_expand"),
        # the pass declares held-out data among its roles: the runner refuses before loading anything
        (["--auto-keep-float", "--max-drop", "0.5"], 4, "needs validation data, and none was given"),
        (["--calibration", "entropy", "--mode", "dynamic"], 2, "--calibration applies to --mode int8 or int16x8 only"),
    ],
)
def test_user_errors_are_one_line(tiny_classifier, tmp_path, args, code, message):
    from edgecompress.cli import cli

    base = ["quantize", str(tiny_classifier), "--calib", "digits", "--calib-samples", "20", "-o", str(tmp_path / "x.tflite")]
    if "--mode" not in args:
        base += ["--mode", "int8"]
    result = CliRunner().invoke(cli, [*base, *args])
    assert result.exit_code == code
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0]


def test_inspect_reports_layers_by_their_keras_names(tiny_classifier, tiny_keras, tmp_path):
    from edgecompress.cli import cli

    plot, page = tmp_path / "sqnr.svg", tmp_path / "inspect.html"
    result = CliRunner().invoke(cli, ["inspect", str(tiny_classifier), "--calib", "digits", "--calib-samples", "40",
                                      "--samples", "40", "--eval", "digits", "--json", "--plot", str(plot),  # > one batch (≤ 32)
                                      "--html", str(page)])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    names = {layer.name for layer in tiny_keras.model.layers}
    assert {row["layer"] for row in report["layers"]} <= names
    assert len(report["layers"]) > 50 and report["worst"][0] in names
    first = report["layers"][0]
    assert first["layer"] == "Conv1_relu" and first["op"] == "CONV_2D" and first["weight_min"] < 0 < first["weight_max"]
    assert all(row["sqnr_db"] is None or row["sqnr_db"] > 0 for row in report["layers"])
    assert set(report["metrics"]) == {"float", "int8"}
    assert plot.read_text().lstrip().startswith("<svg") or "<svg" in plot.read_text()[:400]
    assert "Per-layer int8 error" in page.read_text()


def test_accuracy_options_reach_recipes(tmp_path):
    import yaml

    from edgecompress.pipeline.recipe import load_recipe

    def recipe(variants: list) -> Path:
        path = tmp_path / "recipe.yaml"
        path.write_text(yaml.safe_dump({
            "name": "t", "data": {"calibration": {"spec": "digits", "samples": 20}, "eval": "digits"},
            "models": [{"name": "tiny", "zoo": "mobilenet_v2", "params": {"input_size": 32, "alpha": 0.35, "classes": 10},
                        "train": {"epochs": 1}}],
            "variants": variants, "targets": {"runtimes": ["litert", "onnxruntime"]},
        }))  # fmt: skip
        return path

    variants = [
        {"name": "pct", "passes": ["quantize(mode=int8, calibration=percentile, percentile=99.9, keep_float=predictions)"]},
        {"name": "fix", "passes": ["equalize", "bias_correct", "quantize(mode=int8, per_channel=false)"]},
        {"name": "ins", "passes": ["inspect(calibration=mse)"]},
    ]
    built = [spec.build() for variant in load_recipe(recipe(variants)).variants for spec in variant.passes]
    assert built[0].config.keep_float == ("predictions",) and built[0].config.calibration == "percentile"
    assert [b.name for b in built[1:]] == ["equalize", "bias_correct", "quantize", "inspect"]
    with pytest.raises(UsageError, match="unknown calibration method 'median'"):
        load_recipe(recipe([{"name": "x", "passes": ["quantize(mode=int8, calibration=median)"]}]))
