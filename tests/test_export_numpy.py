"""NumPy-only deployment (issue 17): ``numpy_predictor`` writes a predict.py that needs NumPy alone.

Each model is exported, then run in a separate interpreter (``python -I``)
where importing ``framework`` or ``plugins`` fails; its outputs equal
``model.predict`` to 1e-6.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from framework import Input, Layer, Model, Sequential
from framework.errors import ExportError
from framework.export import numpy_predictor
from framework.layers import (
    ELU,
    GELU,
    GRU,
    LSTM,
    RNN,
    Activation,
    Add,
    Average,
    AvgPool1d,
    AvgPool2d,
    BatchNorm,
    Concatenate,
    Conv1d,
    Conv2d,
    ConvTranspose2d,
    Dropout,
    Embedding,
    Flatten,
    GlobalAvgPool2d,
    LayerNorm,
    LeakyReLU,
    Linear,
    LogSoftmax,
    Maximum,
    MaxPool1d,
    MaxPool2d,
    Minimum,
    Multiply,
    Permute,
    ReLU,
    Reshape,
    SiLU,
    Softmax,
    Softplus,
    Subtract,
    UpSampling2d,
    ZeroPadding2d,
)

_RUNNER = (
    "import sys, runpy\n"
    "sys.modules['framework'] = None\n"  # importing it now raises ImportError
    "sys.modules['plugins'] = None\n"
    "for directory in sys.argv[1:]:\n"
    "    sys.argv = ['predict.py', *sorted(__import__('glob').glob(directory + '/in_*.npy')),"
    " '--out', directory + '/out.npz']\n"
    "    runpy.run_path(directory + '/predict.py', run_name='__main__')\n"
)


def _cnn():
    return Sequential(
        [
            ZeroPadding2d((1, 0, 2, 1)),
            Conv2d(2, 4, 3, stride=2, padding=1, dilation=1, activation="leaky_relu"),
            BatchNorm(4),
            Conv2d(4, 4, 3, padding="same", groups=2, activation="elu"),
            MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
            ConvTranspose2d(4, 3, 3, stride=2, padding=1, output_padding=1),
            AvgPool2d(2, padding=1, count_include_pad=False),
            UpSampling2d(2),
            Conv2d(3, 3, 2, dilation=2),
            GlobalAvgPool2d(),
            Linear(3, 5, activation="softmax"),
        ],
        input_shape=(2, 11, 9),
    ), [(3, 2, 11, 9)]


def _seq1d():
    return Sequential(
        [
            Conv1d(3, 6, 3, padding=1, activation="gelu"),
            MaxPool1d(2),
            Conv1d(6, 4, 2, stride=2, dilation=1, activation="silu"),
            AvgPool1d(2, ceil_mode=True),
            Permute((2, 1)),
            LayerNorm(4),
            Flatten(),
            Dropout(0.3),
            Reshape(2, -1),
            Flatten(),
            Activation("softplus"),
            Linear(None, 3, activation="log_softmax"),
        ],
        input_shape=(3, 16),
    ), [(4, 3, 16)]


def _activations():
    layers: list[Layer] = [Linear(6, 6)]
    layers += [ELU(0.5), GELU(approximate="tanh"), LeakyReLU(0.2), SiLU(), Softplus(2.0, 3.0), ReLU()]
    layers += [Linear(6, 4, activation="sigmoid"), Linear(4, 4, activation="tanh"), Softmax(), LogSoftmax()]
    return Sequential(layers), [(5, 6)]


def _recurrent():
    x = Input((7, 3))
    a = RNN(3, 4, num_layers=2, bidirectional=True, batch_first=True, nonlinearity="relu", output="last")(x)
    b = LSTM(3, 4, batch_first=True, output="last")(x)
    c = GRU(3, 4, num_layers=2, bidirectional=True, batch_first=True, output="sequence")(x)
    c = Flatten()(c)
    return Model(x, Concatenate()([a, b, Linear(56, 4)(c)])), [(3, 7, 3)]


def _merges():
    a, b = Input((5,)), Input((5,))
    ha, hb = Linear(5, 4, activation="relu")(a), Linear(5, 4)(b)
    outs = [
        Add()([ha, hb, ha]),
        Subtract()([ha, hb]),
        Multiply()([ha, hb]),
        Average()([ha, hb]),
        Maximum()([ha, hb]),
        Minimum()([ha, hb]),
    ]
    return Model([a, b], [Concatenate(axis=1)(outs), Linear(4, 2)(outs[0])]), [(4, 5), (4, 5)]


def _embedding():
    tokens = Input((6,))
    h = Embedding(10, 4, padding_idx=0)(tokens)
    h = LSTM(4, 3, batch_first=True, output="sequence")(h)
    return Model(tokens, Linear(3, 2)(h)), "tokens"


MODELS = {
    "cnn": _cnn,
    "seq1d": _seq1d,
    "activations": _activations,
    "recurrent": _recurrent,
    "merges": _merges,
    "embedding": _embedding,
}


def _inputs(spec, rng):
    if spec == "tokens":
        return [rng.integers(0, 10, size=(5, 6))]
    return [rng.standard_normal(shape).astype(np.float32) for shape in spec]


def test_every_model_runs_without_the_framework(tmp_path):
    rng = np.random.default_rng(0)
    expected = {}
    for name, build in MODELS.items():
        model, spec = build()
        for layer in model.layers:  # non-trivial BatchNorm statistics
            if isinstance(layer, BatchNorm):
                layer.running_mean.data[:] = rng.uniform(-1, 1, layer.running_mean.shape)
                layer.running_var.data[:] = rng.uniform(0.5, 2, layer.running_var.shape)
        xs = _inputs(spec, rng)
        directory = tmp_path / name
        script = numpy_predictor(model, directory)
        assert "import framework" not in script.read_text() and "plugins" not in script.read_text()
        for i, x in enumerate(xs):
            np.save(directory / f"in_{i}.npy", x)
        out = model.predict(xs if len(xs) > 1 else xs[0])
        expected[name] = out if isinstance(out, list) else [out]
    proc = subprocess.run(
        [sys.executable, "-I", "-c", _RUNNER, *(str(tmp_path / n) for n in MODELS)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    for name, outs in expected.items():
        path = tmp_path / name / "out.npz"
        if len(outs) > 1:
            with np.load(path) as got:
                results = [got[f"output_{i}"] for i in range(len(outs))]
        else:
            results = [np.load(path)]
        for got_, want in zip(results, outs):
            assert got_.shape == want.shape, name
            np.testing.assert_allclose(got_, want, rtol=1e-6, atol=1e-6, err_msg=name)


def test_the_script_imports_in_process_too(tmp_path):
    model, _ = _activations()
    numpy_predictor(model, tmp_path)
    namespace: dict = {"__file__": str(tmp_path / "predict.py"), "__name__": "predict"}
    exec(compile((tmp_path / "predict.py").read_text(), "predict.py", "exec"), namespace)
    x = np.random.default_rng(2).standard_normal((3, 6)).astype(np.float32)
    np.testing.assert_allclose(namespace["predict"](x), model.predict(x), rtol=1e-6, atol=1e-6)


class _Custom(Layer):
    def forward(self, ctx, x):
        return x * 2

    def backward(self, ctx, grad_out):
        return grad_out * 2


def test_layer_without_numpy_function_is_named(tmp_path):
    model = Sequential([Linear(3, 3), _Custom(name="doubler")])
    with pytest.raises(ExportError, match=r"doubler.*register_numpy_emitter"):
        numpy_predictor(model, tmp_path)


def test_registered_emitter_is_used(tmp_path):
    from framework.export import EMITTERS, register_numpy_emitter

    register_numpy_emitter(_Custom, lambda layer, x, out: f"{x} * 2")
    try:
        model = Sequential([Linear(3, 3), _Custom()])
        numpy_predictor(model, tmp_path)
        namespace: dict = {"__file__": str(tmp_path / "predict.py"), "__name__": "predict"}
        exec((tmp_path / "predict.py").read_text(), namespace)
        x = np.ones((2, 3), np.float32)
        np.testing.assert_allclose(namespace["predict"](x), model.predict(x), rtol=1e-6)
    finally:
        EMITTERS.pop(f"{_Custom.__module__}.{_Custom.__qualname__}")
