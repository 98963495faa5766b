"""ONNX export: onnxruntime's outputs equal ``model.predict`` for every built-in layer and example model."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="the [onnx] extra (onnx) is not installed")
ort = pytest.importorskip("onnxruntime", reason="the [onnx] extra (onnxruntime) is not installed")

from support import ort_session  # noqa: E402

import framework.onnx  # noqa: E402
from framework import ConfigError, Input, Layer, Model, Sequential, hookimpl  # noqa: E402
from framework import layers as L  # noqa: E402
from framework.errors import ExportError  # noqa: E402
from framework.registry.manager import REGISTRY  # noqa: E402

BATCHES = (1, 7)


def _inputs(model: Model, batch: int, rng: np.random.Generator) -> list[np.ndarray]:
    graph = model._graph
    if graph is not None:
        specs = [(t.shape[1:], flag) for t, flag in zip(graph.inputs, graph.integer_inputs)]
    else:
        specs = [(model.input_shape[1:], model._integer_inputs()[0])]
    return [
        rng.integers(0, 10, size=(batch, *s)) if integer else (rng.normal(size=(batch, *s)) * 2).astype("f4")
        for s, integer in specs
    ]


session_of = ort_session


def check_roundtrip(model: Model, tmp_path: Any, opset: int = 17) -> onnx.ModelProto:
    """Export, check, and compare onnxruntime with predict for batches of 1 and 7."""
    path = tmp_path / "model.onnx"
    framework.onnx.export(model, path, opset=opset)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    session = session_of(path)
    names = [i.name for i in session.get_inputs()]
    rng = np.random.default_rng(0)
    for batch in BATCHES:
        xs = _inputs(model, batch, rng)
        got = session.run(None, dict(zip(names, xs)))
        expected = model.predict(xs if len(xs) > 1 else xs[0])
        expected = expected if isinstance(expected, (list, tuple)) else [expected]
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)
    return proto


def _randomise(model: Layer, seed: int = 1) -> Layer:
    """Random BatchNorm statistics and affine parameters, so the inference form is tested."""
    rng = np.random.default_rng(seed)
    for layer in [model, *model.layers] if isinstance(model, Model) else [model]:
        if type(layer).__name__ == "BatchNorm":
            c = layer.num_features
            layer.running_mean.data[:] = rng.normal(size=c)
            layer.running_var.data[:] = rng.uniform(0.5, 2.0, size=c)
            layer.weight.data[:] = rng.normal(size=c)
            layer.bias.data[:] = rng.normal(size=c)
    return model


SINGLE = {
    "linear": (lambda: L.Linear(6, 4), (6,)),
    "linear_relu": (lambda: L.Linear(6, 4, activation="relu"), (6,)),
    "linear_nobias": (lambda: L.Linear(6, 4, bias=False, activation="tanh"), (6,)),
    "linear_rank3": (lambda: L.Linear(6, 4, activation="sigmoid"), (3, 6)),
    "identity": (lambda: L.Identity(), (5,)),
    "dropout": (lambda: L.Dropout(0.5), (5,)),
    "relu": (lambda: L.ReLU(), (5,)),
    "leaky_relu": (lambda: L.LeakyReLU(0.2), (5,)),
    "elu": (lambda: L.ELU(0.7), (5,)),
    "sigmoid": (lambda: L.Sigmoid(), (5,)),
    "tanh": (lambda: L.Tanh(), (5,)),
    "softmax": (lambda: L.Softmax(), (5,)),
    "softmax_axis1": (lambda: L.Softmax(axis=1), (3, 4)),
    "log_softmax": (lambda: L.LogSoftmax(), (5,)),
    "gelu": (lambda: L.GELU(), (5,)),
    "gelu_tanh": (lambda: L.GELU(approximate="tanh"), (5,)),
    "silu": (lambda: L.SiLU(), (5,)),
    "softplus": (lambda: L.Softplus(), (5,)),
    "softplus_beta": (lambda: L.Softplus(beta=2.0, threshold=3.0), (5,)),
    "activation": (lambda: L.Activation("elu"), (5,)),
    "conv1d": (lambda: L.Conv1d(2, 4, 3, stride=2, padding=1), (2, 9)),
    "conv1d_same": (lambda: L.Conv1d(2, 4, 4, padding="same", dilation=2), (2, 9)),
    "conv2d": (lambda: L.Conv2d(2, 4, 3, stride=2, padding=1, activation="relu"), (2, 7, 7)),
    "conv2d_groups": (lambda: L.Conv2d(4, 6, 3, padding="same", dilation=2, groups=2), (4, 7, 6)),
    "conv2d_even_same": (lambda: L.Conv2d(2, 3, (2, 4), padding="same"), (2, 5, 6)),
    "conv2d_valid": (lambda: L.Conv2d(2, 3, (2, 3), padding="valid", bias=False), (2, 5, 6)),
    "conv_transpose2d": (
        lambda: L.ConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1),
        (2, 4, 5),
    ),
    "conv_transpose2d_groups": (lambda: L.ConvTranspose2d(4, 2, 2, groups=2, dilation=2), (4, 3, 3)),
    "batch_norm_2d": (lambda: L.BatchNorm(3), (3, 4, 4)),
    "batch_norm_1d": (lambda: L.BatchNorm(4), (4,)),
    "max_pool2d": (lambda: L.MaxPool2d(2), (2, 6, 6)),
    "max_pool2d_pad": (lambda: L.MaxPool2d(3, stride=2, padding=1), (2, 7, 6)),
    "max_pool2d_ceil": (lambda: L.MaxPool2d(3, stride=2, ceil_mode=True), (2, 8, 8)),
    "avg_pool2d": (lambda: L.AvgPool2d(2), (2, 6, 6)),
    "avg_pool2d_pad": (lambda: L.AvgPool2d(3, 2, 1, count_include_pad=False), (2, 7, 6)),
    "avg_pool2d_pad_incl": (lambda: L.AvgPool2d(3, 2, 1), (2, 7, 6)),
    "max_pool1d": (lambda: L.MaxPool1d(2), (3, 8)),
    "avg_pool1d": (lambda: L.AvgPool1d(3, 1, 1), (3, 8)),
    "global_avg_pool2d": (lambda: L.GlobalAvgPool2d(), (3, 4, 5)),
    "flatten": (lambda: L.Flatten(), (2, 3, 4)),
    "flatten_partial": (lambda: L.Flatten(start_dim=2), (2, 3, 4)),
    "reshape": (lambda: L.Reshape(4, -1), (2, 3, 4)),
    "permute": (lambda: L.Permute((2, 3, 1)), (2, 3, 4)),
    "zero_padding2d": (lambda: L.ZeroPadding2d((1, 2, 0, 3)), (2, 3, 4)),
    "upsampling2d": (lambda: L.UpSampling2d((2, 3)), (2, 3, 4)),
    "layer_norm": (lambda: L.LayerNorm(6), (3, 6)),
    "layer_norm_2d_noaffine": (lambda: L.LayerNorm((3, 4), elementwise_affine=False), (3, 4)),
    "rnn_relu": (lambda: L.RNN(3, 4, nonlinearity="relu", batch_first=True, output="sequence"), (5, 3)),
    "rnn_deep_bi_last": (
        lambda: L.RNN(3, 4, num_layers=2, bidirectional=True, batch_first=True, output="last"),
        (5, 3),
    ),
    "lstm_time_major": (lambda: L.LSTM(3, 4, output="sequence"), (2, 3)),
    "lstm_bi_last": (lambda: L.LSTM(3, 4, bidirectional=True, batch_first=True, output="last"), (5, 3)),
    "lstm_nobias_deep": (
        lambda: L.LSTM(3, 4, num_layers=2, bias=False, batch_first=True, output="sequence"),
        (5, 3),
    ),
    "gru": (lambda: L.GRU(3, 4, batch_first=True, output="sequence"), (5, 3)),
    "gru_bi_deep_last": (
        lambda: L.GRU(3, 4, num_layers=2, bidirectional=True, batch_first=True, output="last"),
        (5, 3),
    ),
}


@pytest.mark.parametrize("case", sorted(SINGLE))
def test_single_layer(case: str, tmp_path: Any) -> None:
    factory, shape = SINGLE[case]
    check_roundtrip(_randomise(Sequential([Input(shape), factory()])), tmp_path)


def test_embedding(tmp_path: Any) -> None:
    model = Sequential([Input((5,)), L.Embedding(10, 4), L.Flatten(), L.Linear(20, 2)])
    proto = check_roundtrip(model, tmp_path)
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64


def test_recurrent_both_outputs(tmp_path: Any) -> None:
    """``output="both"``: the sequence and the final states, ``(D*num_layers, N, H)``."""
    for layer in (L.GRU(3, 4, num_layers=2, batch_first=True), L.LSTM(3, 4, bidirectional=True)):
        model = Sequential([Input((5, 3)), layer])
        path = tmp_path / "both.onnx"
        framework.onnx.export(model, path)
        session = session_of(path)
        x = np.random.default_rng(0).normal(size=(7, 5, 3)).astype("f4")
        seq, state = model(x, training=False)
        states = state if isinstance(state, tuple) else (state,)
        got = session.run(None, {"input": x})
        assert len(got) == 1 + len(states)
        for g, e in zip(got, [seq, *states]):
            np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"])
def test_merge_layers(name: str, tmp_path: Any) -> None:
    a, b = Input((4,), name="a"), Input((4,), name="b")
    merged = getattr(L, name)()([L.Linear(4, 3)(a), L.Linear(4, 3)(b)])
    check_roundtrip(Model([a, b], merged), tmp_path)


@pytest.mark.parametrize("axis", [1, -1])
def test_concatenate(axis: int, tmp_path: Any) -> None:
    a, b, c = Input((2, 3)), Input((2, 3)), Input((2, 3))
    check_roundtrip(Model([a, b, c], L.Concatenate(axis=axis)([a, b, c])), tmp_path)


def test_gelu_opset20_is_one_node(tmp_path: Any) -> None:
    proto = check_roundtrip(Sequential([Input((5,)), L.GELU()]), tmp_path, opset=20)
    assert [n.op_type for n in proto.graph.node] == ["Gelu", "Identity"]


# -- the example models ------------------------------------------------------


def test_mlp(tmp_path: Any) -> None:
    model = Sequential([Input((20,)), L.Linear(20, 32, activation="relu"), L.Dropout(0.2), L.Linear(32, 10)])
    proto = check_roundtrip(model, tmp_path)
    assert [n.op_type for n in proto.graph.node] == ["Gemm", "Relu", "Gemm", "Identity"]


def test_lenet_with_batchnorm_and_dropout(tmp_path: Any) -> None:
    model = Sequential(
        [
            Input((1, 16, 16)),
            L.Conv2d(1, 6, 5, padding=2, activation="relu"),
            L.BatchNorm(6),
            L.MaxPool2d(2),
            L.Conv2d(6, 8, 3, activation="relu"),
            L.AvgPool2d(2),
            L.Flatten(),
            L.Dropout(0.5),
            L.Linear(8 * 3 * 3, 16, activation="relu"),
            L.Linear(16, 10, activation="softmax"),
        ]
    )
    check_roundtrip(_randomise(model), tmp_path)


def test_lstm_classifier(tmp_path: Any) -> None:
    model = Sequential(
        [
            Input((7,)),
            L.Embedding(10, 6),
            L.LSTM(6, 8, batch_first=True, output="last"),
            L.Linear(8, 3, activation="log_softmax"),
        ]
    )
    check_roundtrip(model, tmp_path)


def test_functional_two_inputs_two_outputs_nested(tmp_path: Any) -> None:
    image, features = Input((1, 8, 8), name="image"), Input((5,), name="features")
    x = L.Flatten()(L.MaxPool2d(2)(L.Conv2d(1, 3, 3, padding=1, activation="relu")(image)))
    tower = Sequential([L.Linear(5, 6, activation="tanh"), L.LayerNorm(6)])
    joined = L.Concatenate()([x, tower(features)])
    out1 = L.Linear(54, 4, activation="softmax", name="label")(joined)
    out2 = L.Linear(54, 1, name="score")(joined)
    model = Model([image, features], [out1, out2])
    proto = check_roundtrip(model, tmp_path)
    assert [i.name for i in proto.graph.input] == ["image", "features"]
    assert [o.name for o in proto.graph.output] == ["output_0", "output_1"]


def test_nested_sequential(tmp_path: Any) -> None:
    inner = Sequential([L.Linear(4, 4, activation="relu"), L.Linear(4, 4)])
    check_roundtrip(Sequential([Input((4,)), inner, L.Linear(4, 2)]), tmp_path)


def test_fixed_batch(tmp_path: Any) -> None:
    path = tmp_path / "fixed.onnx"
    framework.onnx.export(Sequential([Input((3,)), L.Linear(3, 2)]), path, dynamic_batch=False)
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 3]


# -- errors, the model method and the hook -----------------------------------


class Doubler(Layer):
    """A layer no plugin converts."""

    def forward(self, ctx: Any, x: np.ndarray) -> np.ndarray:
        return 2 * x

    def backward(self, ctx: Any, grad_out: np.ndarray) -> np.ndarray:
        return 2 * grad_out


def test_missing_converter_names_layer_and_hook(tmp_path: Any) -> None:
    model = Sequential([Input((3,)), Doubler(name="twice")])
    with pytest.raises(ExportError, match=r"Doubler layer 'twice'.*register_onnx_converters"):
        framework.onnx.export(model, tmp_path / "x.onnx")


def test_plugin_converter_through_the_hook(tmp_path: Any) -> None:
    class Tripler(Doubler):
        def forward(self, ctx: Any, x: np.ndarray) -> np.ndarray:
            return 3 * x

    def convert(ctx: Any, layer: Any, inputs: list[str]) -> str:
        return str(ctx.node("Mul", [inputs[0], ctx.scalar(3.0, "three")]))

    class Plugin:
        @hookimpl
        def register_onnx_converters(self, register: Any) -> None:
            register(Tripler, convert)

    REGISTRY.register_plugin(Plugin(), name="onnx-test-tripler")
    check_roundtrip(Sequential([Input((3,)), Tripler()]), tmp_path)
    with pytest.raises(ExportError, match="Doubler"):  # the converter is not inherited past forward
        framework.onnx.export(Sequential([Input((3,)), Doubler()]), tmp_path / "y.onnx")


def test_model_export_by_suffix(tmp_path: Any) -> None:
    model = Sequential([Input((3,)), L.Linear(3, 2)])
    model.export(tmp_path / "m.onnx", opset=18)
    assert onnx.load(str(tmp_path / "m.onnx")).opset_import[0].version == 18
    with pytest.raises(ConfigError, match=r"no export format for suffix '\.xyz'.*onnx \(\.onnx\)"):
        model.export(tmp_path / "m.xyz")


def test_unbuilt_model_and_bad_opset(tmp_path: Any) -> None:
    with pytest.raises(ExportError, match="not built"):
        framework.onnx.export(Sequential([L.Linear(output_size=2)]), tmp_path / "u.onnx")
    with pytest.raises(ExportError, match="opset"):
        framework.onnx.export(Sequential([Input((3,)), L.Linear(3, 2)]), tmp_path / "o.onnx", opset=11)


def test_describe(tmp_path: Any) -> None:
    path = tmp_path / "d.onnx"
    framework.onnx.export(Sequential([Input((3,)), L.Linear(3, 2, activation="relu")]), path)
    text = framework.onnx.describe(path)
    assert "Gemm" in text and "Relu" in text and "(N, 3)" in text and "8 parameters" in text
