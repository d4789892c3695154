"""Models nobody here wrote, built in-process: non-image Keras models with their data, a PyTorch-style
NCHW ONNX graph (onnx.helper), and a .tflite without a SignatureDef.

Shared by tests/test_any_model.py (small budgets) and benchmarks/any_model.py (full budgets).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import edgecompress  # noqa: F401 - sets TF_USE_LEGACY_KERAS before any TensorFlow import

SEED = 0


def digits_28(split: str) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as (N, 28, 28) floats in [0, 1]: what an MNIST-style MLP takes."""
    from edgecompress.calibration.data import load_digits
    from edgecompress.calibration.preprocessing import resize

    data = load_digits(split)
    x = resize(data.images[..., None].astype(np.float32), 28, 28)[..., 0] / 255.0
    return x.astype(np.float32), data.labels


def keyword_features(count: int, seed: int, classes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """(N, 49, 10, 1) audio-style features: each class a band moving through time (like a formant) plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, count)
    time = np.arange(49)[:, None]
    bands = np.arange(10)[None, :]
    x = np.empty((count, 49, 10, 1), np.float32)
    for i, label in enumerate(labels):
        slope = (label - classes / 2) / 12.0
        centre = 4.5 + slope * (time - 24) + rng.normal(0, 1.0)
        x[i, ..., 0] = np.exp(-((bands - centre) ** 2) / 2.0) * rng.uniform(0.5, 1.5)
    x += rng.normal(0, 0.3, x.shape).astype(np.float32)
    return x, labels.astype(np.int64)


def vectors_640(count: int, seed: int, classes: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """(N, 640) embedding-like vectors: Gaussian classes that overlap (a float model scores about 90 %)."""
    means = np.random.default_rng(SEED).standard_normal((classes, 640)).astype(np.float32) * 0.09
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, count)
    return (means[labels] + rng.standard_normal((count, 640)).astype(np.float32)).astype(np.float32), labels


def save_npz(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    np.savez(path, x=x, y=y)
    return path


def _classifier_head(tf_keras, x, classes: int):
    return tf_keras.layers.Softmax()(tf_keras.layers.Dense(classes)(x))


def build_mlp(tf_keras):
    inputs = tf_keras.Input((28, 28))
    x = tf_keras.layers.Flatten()(inputs)
    x = tf_keras.layers.Dense(64, activation="relu")(x)
    return tf_keras.Model(inputs, _classifier_head(tf_keras, x, 10), name="mlp_28x28")


def build_audio_cnn(tf_keras):
    """A depthwise-separable keyword-spotting CNN (DS-CNN style) on (49, 10, 1) features."""
    inputs = tf_keras.Input((49, 10, 1))
    x = tf_keras.layers.Conv2D(24, (5, 3), strides=(2, 1), padding="same", use_bias=False)(inputs)
    x = tf_keras.layers.BatchNormalization()(x)
    x = tf_keras.layers.ReLU()(x)
    x = tf_keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    x = tf_keras.layers.BatchNormalization()(x)
    x = tf_keras.layers.ReLU()(x)
    x = tf_keras.layers.Conv2D(32, 1, use_bias=False)(x)
    x = tf_keras.layers.BatchNormalization()(x)
    x = tf_keras.layers.ReLU()(x)
    x = tf_keras.layers.GlobalAveragePooling2D()(x)
    return tf_keras.Model(inputs, _classifier_head(tf_keras, x, 4), name="ds_cnn_49x10")


def build_dense_640(tf_keras):
    inputs = tf_keras.Input((640,))
    x = tf_keras.layers.Dense(64, activation="relu")(inputs)
    return tf_keras.Model(inputs, _classifier_head(tf_keras, x, 5), name="dense_640")


#: name → (builder, data function (count, seed) → (x, y), training samples, held-out samples)
NON_IMAGE = {
    "mlp_28x28": (build_mlp, None, None, None),
    "ds_cnn_49x10": (build_audio_cnn, keyword_features, 1200, 400),
    "dense_640": (build_dense_640, vectors_640, 1500, 500),
}


def non_image_model(name: str, workdir: Path, epochs: int) -> tuple[Path, Path, Path]:
    """Train one of NON_IMAGE and save it (.h5, with Adam's state, as users' files are) with its data.

    Returns (model, training .npz, held-out .npz); the .npz hold float arrays of the input shape.
    """
    from edgecompress._env import import_tf_keras

    tf_keras = import_tf_keras()
    tf_keras.utils.set_random_seed(SEED)
    build, data, train_count, test_count = NON_IMAGE[name]
    if data is None:
        (x, y), (xt, yt) = digits_28("train"), digits_28("test")
    else:
        (x, y), (xt, yt) = data(train_count, SEED + 1), data(test_count, SEED + 2)
    model = build(tf_keras)
    model.compile(tf_keras.optimizers.Adam(1e-2 if name == "ds_cnn_49x10" else 3e-3), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    path = workdir / f"{name}.h5"
    model.save(path)  # include_optimizer defaults to True: the file is about 3× the parameters
    return path, save_npz(workdir / f"{name}.train.npz", x, y), save_npz(workdir / f"{name}.test.npz", xt, yt)


# --------------------------------------------------------------------------- a PyTorch-style NCHW ONNX graph

#: ImageNet-style per-channel normalisation, as torchvision models take
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
NCHW_SIZE = 16


def train_nchw_twin(workdir: Path, epochs: int):
    """A small Conv-BN-ReLU CNN trained (channels-last, in Keras) on RGB digits at 16 px with ImageNet mean/std."""
    from edgecompress import api
    from edgecompress._env import import_tf_keras
    from edgecompress.calibration.preprocessing import Preprocessing

    tf_keras = import_tf_keras()
    tf_keras.utils.set_random_seed(SEED)
    pre = Preprocessing(mean=MEAN, std=STD)
    train = api.model_inputs("digits", (NCHW_SIZE, NCHW_SIZE, 3), pre, split="train")
    inputs = tf_keras.Input((NCHW_SIZE, NCHW_SIZE, 3))
    x = inputs
    for filters, stride in ((16, 1), (32, 2)):
        x = tf_keras.layers.Conv2D(filters, 3, strides=stride, padding="same")(x)
        x = tf_keras.layers.BatchNormalization()(x)
        x = tf_keras.layers.ReLU()(x)
    x = tf_keras.layers.GlobalAveragePooling2D()(x)
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(10)(x))
    model.compile(tf_keras.optimizers.Adam(3e-3),
                  tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))  # fmt: skip
    model.fit(train.array(), train.data.labels, epochs=epochs, batch_size=32, verbose=0)
    return model


def nchw_onnx(model, path: Path, fold_batchnorm: bool = False) -> Path:
    """The Keras twin written as a PyTorch export looks: NCHW input named 'input', Conv (OIHW weights),
    BatchNormalization (or folded into the Conv), Relu, GlobalAveragePool, Flatten, Gemm; batch axis 'N'."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, weights = [], []
    current = "input"
    layers = [layer for layer in model.layers if layer.weights or type(layer).__name__ in ("ReLU",)]
    pending_conv = None
    for index, layer in enumerate(layers):
        kind = type(layer).__name__
        name = f"{kind.lower()}_{index}"
        if kind == "Conv2D":
            kernel, bias = layer.get_weights()
            pending_conv = (name, kernel.transpose(3, 2, 0, 1).copy(), bias, layer.strides[0])
            continue
        if kind == "BatchNormalization":
            gamma, beta, mean, var = layer.get_weights()
            conv_name, kernel, bias, stride = pending_conv
            if fold_batchnorm:
                factor = gamma / np.sqrt(var + layer.epsilon)
                kernel, bias = kernel * factor[:, None, None, None], (bias - mean) * factor + beta
            weights += [numpy_helper.from_array(kernel.astype(np.float32), f"{conv_name}.weight"),
                        numpy_helper.from_array(bias.astype(np.float32), f"{conv_name}.bias")]  # fmt: skip
            nodes.append(helper.make_node("Conv", [current, f"{conv_name}.weight", f"{conv_name}.bias"], [conv_name],
                                          kernel_shape=[3, 3], strides=[stride, stride], pads=_same_pads(stride)))  # fmt: skip
            current = conv_name
            if not fold_batchnorm:
                names = [f"{name}.{part}" for part in ("weight", "bias", "running_mean", "running_var")]
                weights += [numpy_helper.from_array(a.astype(np.float32), n)
                            for a, n in zip((gamma, beta, mean, var), names, strict=True)]  # fmt: skip
                nodes.append(helper.make_node("BatchNormalization", [current, *names], [name], epsilon=layer.epsilon))
                current = name
            continue
        if kind == "ReLU":
            nodes.append(helper.make_node("Relu", [current], [name]))
            current = name
            continue
        if kind == "Dense":
            kernel, bias = layer.get_weights()
            nodes.append(helper.make_node("GlobalAveragePool", [current], ["pooled"]))
            nodes.append(helper.make_node("Flatten", ["pooled"], ["flat"], axis=1))
            weights += [numpy_helper.from_array(kernel.T.copy(), "fc.weight"), numpy_helper.from_array(bias, "fc.bias")]
            nodes.append(helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], transB=1))
    graph = helper.make_graph(
        nodes, "torch_style_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, NCHW_SIZE, NCHW_SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        weights,
    )  # fmt: skip
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="pytorch-like")
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


def _same_pads(stride: int) -> list[int]:
    # Keras "same" with a 3×3 kernel: stride 1 pads 1 on each side; stride 2 on an even size pads 0 before, 1 after.
    return [1, 1, 1, 1] if stride == 1 else [0, 0, 1, 1]


# --------------------------------------------------------------------------- a .tflite without a SignatureDef


def strip_signatures(data: bytes) -> bytes:
    """The same model with its SignatureDefs removed, as older converters wrote files."""
    from edgecompress._env import import_tensorflow

    import_tensorflow()
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    model.signatureDefs = []
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))

