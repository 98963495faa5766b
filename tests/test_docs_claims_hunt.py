"""Documentation hunt: the prose claims of README.md and docs/ checked against the code.

``tests/test_docs.py`` runs every code block; this file checks what the text *says*:
default values, shapes and dtypes, which error class is raised and when, what a
checkpoint holds, registry names and aliases, CLI output, and every formula of
docs/maths against the layer's behaviour (finite differences or a closed form).
Each test's docstring cites its page and a few words of the claim. A false claim
whose code is right was fixed in the doc; a doc that is right about code that is
wrong is a strict xfail naming the bug.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from support import requires_h5py, run_script

import framework
from framework import Input, Model, Sequential
from framework.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    FrameworkError,
    NotBuiltError,
    NotCompiledError,
    ShapeError,
    UnknownNameError,
)
from framework.layers import Dropout, Linear
from framework.optimizers import SGD
from framework.registry.manager import REGISTRY

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _fd_input_grad(fn, x: np.ndarray, g: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of ``sum(fn(x) * g)`` with respect to every entry of ``x``."""
    out = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += eps
        xm[idx] -= eps
        out[idx] = (np.sum(fn(xp) * g) - np.sum(fn(xm) * g)) / (2 * eps)
    return out


def _spirals(n: int = 200):
    from framework.datasets import make_spirals

    return make_spirals(n_samples=n, seed=0)


# -- README.md ---------------------------------------------------------------------------


def test_readme_digits_shapes_dtype_range():
    """README 'A first model': load_digits is '(1797, 1, 8, 8) float32 in [0, 1], labels 0..9'."""
    pytest.importorskip("sklearn", reason="the digits ship inside scikit-learn (the [data] extra)")
    from framework.datasets import load_digits

    x, y = load_digits()
    assert x.shape == (1797, 1, 8, 8) and x.dtype == np.float32
    assert x.min() == 0.0 and x.max() == 1.0
    assert sorted(set(y.tolist())) == list(range(10)) and y.shape == (1797,)
    assert y.dtype == np.int64  # docs/guide/data.md: 'class labels are int64 of shape (N,)'


def test_readme_conv_weight_layout():
    """README: 'Conv2d(1, 16, 3, padding=1, ...)  # PyTorch layout: weight (16, 1, 3, 3)'."""
    from framework.layers import Conv2d

    conv = Conv2d(1, 16, 3, padding=1, activation="relu")
    conv.build((None, 1, 8, 8))
    assert conv.weight.shape == (16, 1, 3, 3) and conv.bias.shape == (16,)


README_LAYERS = (
    "Linear Conv1d Conv2d ConvTranspose2d MaxPool2d AvgPool2d BatchNorm LayerNorm Dropout Flatten "
    "Embedding RNN LSTM GRU RNNCell LSTMCell GRUCell GCNConv Add Concatenate Multiply ReLU GELU Softmax "
    "MultiheadAttention TransformerEncoderLayer TransformerDecoderLayer TransformerEncoder "
    "TransformerDecoder GroupNorm InstanceNorm1d InstanceNorm2d RMSNorm AdaptiveAvgPool2d "
    "PositionalEncoding"
).split()


@pytest.mark.parametrize("name", README_LAYERS)
def test_readme_feature_layers_are_registered(name):
    """README 'Features': every layer the list names is registered under that name."""
    assert name in framework.layers.names()


def test_readme_feature_callbacks_and_kit_exist():
    """README 'Features': the callbacks, History.plot and the conformance kit it names exist."""
    from framework.training import callbacks
    from plugins.attention import scaled_dot_product_attention

    for name in ("EarlyStopping", "ModelCheckpoint", "ReduceLROnPlateau", "CSVLogger", "TensorBoard"):
        assert isinstance(getattr(callbacks, name), type)
    assert callable(callbacks.History.plot)
    assert callable(framework.testing.check_layer) and callable(framework.testing.check_gradients)
    assert callable(scaled_dot_product_attention)
    for name in ("precision", "recall", "f1_score", "auc", "confusion_matrix"):
        assert name in framework.metrics.names()


def test_readme_digits_accuracy_statements_agree():
    """README: the Examples table, the Results paragraph and the set-up prose quote one digits accuracy.

    (examples/digits_cnn.py, seed 0, prints 'test accuracy 0.9911 (446/450)'.)
    """
    text = (ROOT / "README.md").read_text()
    table = re.search(r"`examples/digits_cnn.py` \| small CNN on the 8x8 digits \| ([\d.]+)% test", text)
    results = re.search(r"\*\*([\d.]+)%\*\* test accuracy \((\d+)/450", text)
    assert table and results
    assert round(float(results.group(1)), 1) == float(table.group(1))
    assert round(int(results.group(2)) / 450 * 100, 2) == float(results.group(1))
    assert "about 99% on a held-out quarter" in text


def test_readme_fashion_cnn_parameter_count():
    """docs/results/fashion-mnist.md: '207,114 parameters (96 of them BatchNorm running statistics)'."""
    from framework.layers import BatchNorm, Conv2d, Flatten, MaxPool2d, ReLU

    model = Sequential(
        [
            Conv2d(1, 16, 3, padding=1),
            BatchNorm(16),
            ReLU(),
            MaxPool2d(2),
            Conv2d(16, 32, 3, padding=1),
            BatchNorm(32),
            ReLU(),
            MaxPool2d(2),
            Dropout(0.25),
            Flatten(),
            Linear(1568, 128),
            ReLU(),
            Dropout(0.4),
            Linear(128, 10),
        ],
        input_shape=(1, 28, 28),
    )
    buffers = sum(b.data.size for layer in model.layers for b in layer.buffers())
    trainable = sum(p.data.size for p in model.parameters())
    assert buffers == 96
    assert trainable + buffers == 207_114
    assert model.count_params() == 207_114 and model.count_params(trainable=False) == 96


# -- docs/index.md, docs/maths/linear.md --------------------------------------------------


@pytest.mark.parametrize("shape", [(5, 4), (2, 3, 4)])
def test_index_linear_backward_formulas(float64, shape):
    """index.md / maths/linear.md: dL/dX = G W, dL/dW = G^T X, dL/db = sum_n G_n (also for (N, ..., d_in))."""
    rng = np.random.default_rng(0)
    layer = Linear(4, 3)
    x = rng.standard_normal(shape)
    g = rng.standard_normal((*shape[:-1], 3))
    y = layer(x)
    W, b = layer.weight.data, layer.bias.data
    assert np.allclose(y, x @ W.T + b)
    layer.zero_grad()
    dx = layer.backward(g)
    x2, g2 = x.reshape(-1, 4), g.reshape(-1, 3)
    assert np.allclose(dx, g @ W)
    assert np.allclose(layer.weight.grad, g2.T @ x2)
    assert np.allclose(layer.bias.grad, g2.sum(axis=0))
    assert np.allclose(dx, _fd_input_grad(lambda t: t @ W.T + b, x, g), atol=1e-7)


def test_linear_with_activation_backward(float64):
    """maths/linear.md 'With an activation': dL/dZ = phi'(Z) * G, then the Linear formulas."""
    rng = np.random.default_rng(1)
    layer = Linear(4, 3, activation="tanh")
    x = rng.standard_normal((6, 4))
    g = rng.standard_normal((6, 3))
    layer(x)
    layer.zero_grad()
    dx = layer.backward(g)
    W, b = layer.weight.data, layer.bias.data
    z = x @ W.T + b
    dz = (1 - np.tanh(z) ** 2) * g
    assert np.allclose(dx, dz @ W)
    assert np.allclose(layer.weight.grad, dz.T @ x)
    assert np.allclose(layer.bias.grad, dz.sum(axis=0))


# -- docs/getting-started.md -----------------------------------------------------------------


def test_getting_started_relu_linear_init():
    """getting-started: Linear(2, 64, activation='relu') has weight (64, 2), He's rule for ReLU, a zero bias.

    maths/initialisation.md: kaiming_uniform with the ReLU gain draws from U(-a, a), a = sqrt(6 / n_in).
    """
    framework.set_seed(0)
    layer = Linear(200, 64, activation="relu")
    layer.build((None, 200))
    assert layer.weight.shape == (64, 200)
    assert np.all(layer.bias.data == 0)
    bound = math.sqrt(6 / 200)
    w = layer.weight.data
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound
    assert abs(w.var() - bound**2 / 3) < 0.1 * bound**2 / 3
    small = Linear(2, 64, activation="relu")
    small.build((None, 2))
    assert small.weight.shape == (64, 2)


def test_getting_started_predict_returns_logits_and_fit_shuffles():
    """getting-started: 'fit shuffled the data each epoch ... predict ... returned logits'."""
    from framework.base.layer import Layer

    seen: list[np.ndarray] = []

    class Spy(Layer):
        def forward(self, ctx, x):
            if ctx.training:
                seen.append(x[:, 0].copy())
            return x

        def backward(self, ctx, grad_out):
            return grad_out

    x = np.arange(64, dtype=np.float32).reshape(32, 2)
    y = np.arange(32) % 2
    model = Sequential([Spy(), Linear(2, 2)])
    model.compile(optimizer="adam", loss="cross_entropy")
    model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    assert len(seen) == 2
    assert sorted(seen[0].tolist()) == sorted(seen[1].tolist()) == x[:, 0].tolist()
    assert not np.array_equal(seen[0], seen[1]) and not np.array_equal(seen[0], x[:, 0])
    out = model.predict(x)
    assert not np.allclose(out.sum(axis=1), 1.0)  # logits, not probabilities


# -- docs/guide/sequential.md, functional.md, layers.md ------------------------------------


def test_sequential_shape_error_names_both_layers_and_shapes():
    """sequential.md: 'a layer that cannot take the previous layer's output raises a ShapeError naming
    both layers and both shapes'."""
    model = Sequential([Linear(4, 16, name="first")])
    with pytest.raises(ShapeError) as info:
        model.add(Linear(8, 2, name="second"))
    text = str(info.value)
    assert "first" in text and "second" in text and "16" in text and "8" in text


def test_sequential_infers_input_size_and_is_a_nestable_layer():
    """sequential.md: 'Linear(output_size=16) infers it from the previous layer'; a Sequential 'is itself
    a Layer (it can be nested in another model)'."""
    inner = Sequential([Linear(4, 8), Linear(output_size=16)])
    inner.build((None, 4))
    assert inner.layers[1].weight.shape == (16, 8)
    assert isinstance(inner, framework.Layer)
    outer = Sequential([inner, Linear(16, 2)])
    x = np.ones((3, 4), np.float32)
    assert outer(x).shape == (3, 2)
    assert np.allclose(outer(x), outer.layers[1](inner(x)))


def test_sequential_summary_lists_output_shapes_and_counts():
    """sequential.md: 'model.summary() prints a table of each layer's output shape and parameter count'."""
    model = Sequential([Linear(4, 16, name="a"), Linear(16, 3, name="b")])
    model.build((None, 4))
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        model.summary()
    text = buf.getvalue()
    assert "16" in text and "80" in text and "51" in text and "131" in text
    assert model.count_params() == 131


def test_functional_fan_out_gradients_add(float64):
    """functional.md / maths/backprop.md: a tensor feeding two consumers gets the sum of their gradients."""
    inputs = Input((3,))
    lin = Linear(3, 3, name="f")
    out = framework.layers.Add()([inputs, lin(inputs)])
    model = Model(inputs, out)
    x = np.random.default_rng(0).standard_normal((2, 3))
    g = np.random.default_rng(1).standard_normal((2, 3))
    model(x)
    model.zero_grad()
    dx = model.backward(g)
    assert np.allclose(dx, g + g @ lin.weight.data)


def test_functional_shared_layer_gradients_sum(float64):
    """functional.md: 'A layer instance called at two places shares its weights, and the gradients from
    both calls add up in its .grad'."""
    a, b = Input((3,)), Input((3,))
    shared = Linear(3, 2, name="shared")
    model = Model([a, b], framework.layers.Add()([shared(a), shared(b)]))
    rng = np.random.default_rng(0)
    xa, xb, g = rng.standard_normal((4, 3)), rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    model([xa, xb])
    model.zero_grad()
    model.backward(g)
    assert np.allclose(shared.weight.grad, g.T @ xa + g.T @ xb)
    assert np.allclose(shared.bias.grad, 2 * g.sum(axis=0))
    assert len(model.parameters()) == 2


def _two_head_model():
    a = Input((4,), name="a")
    cls = Linear(4, 3, name="cls")(a)
    value = Linear(4, 1, name="value")(a)
    return Model(a, [cls, value])


def test_functional_compile_loss_per_output_list_dict_and_weights():
    """functional.md: 'compile takes one loss per output (a list, or a dict keyed by output name) and
    optional loss_weights'; training.md: the loss is the weighted sum."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 4)).astype(np.float32)
    yc, yv = rng.integers(0, 3, 8), rng.standard_normal((8, 1)).astype(np.float32)
    model = _two_head_model()
    model.compile(SGD(learning_rate=0.0), loss={"cls": "cross_entropy", "value": "mse"})
    both = model.evaluate(x, [yc, yv], verbose=0)
    model.compile(SGD(learning_rate=0.0), loss=["cross_entropy", "mse"], loss_weights=[2.0, 0.5])
    weighted = model.evaluate(x, {"cls": yc, "value": yv}, verbose=0)
    parts = [both[k] for k in both if k.endswith("_loss")]
    assert len(parts) == 2
    assert np.isclose(both["loss"], sum(parts), rtol=1e-5)
    assert np.isclose(weighted["loss"], 2.0 * both["cls_loss"] + 0.5 * both["value_loss"], rtol=1e-5)


def test_functional_loss_none_for_one_output():
    """functional.md: '`None` as an output's loss ... leaves that output out of training: its target may be
    `None` (or left out of a target dict), no gradient reaches it, and its `<name>_loss` is logged as 0.
    At least one output needs a loss'."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 4)).astype(np.float32)
    yc = rng.integers(0, 3, 8)
    for loss, target in (
        (["cross_entropy", None], [yc, None]),
        ({"cls": "cross_entropy", "value": None}, {"cls": yc}),
    ):
        model = _two_head_model()
        model.build((None, 4))
        value_layer = next(layer for layer in model.layers if layer.name == "value")
        cls_layer = next(layer for layer in model.layers if layer.name == "cls")
        before, cls_before = value_layer.weight.data.copy(), cls_layer.weight.data.copy()
        model.compile(SGD(learning_rate=0.1), loss=loss)
        history = model.fit(x, target, epochs=1, verbose=0)
        assert np.array_equal(value_layer.weight.data, before)
        assert not np.array_equal(cls_layer.weight.data, cls_before)
        assert history.history["value_loss"] == [0.0]
    with pytest.raises(ConfigError):
        _two_head_model().compile("sgd", loss=[None, None])


def test_layers_catalogue_fused_activation_equals_separate_layer():
    """guide/layers.md: 'Linear(4, 8, activation="relu") and Linear(4, 8), ReLU() are the same model'."""
    from framework.layers import ReLU

    fused = Linear(4, 8, activation="relu")
    plain = Linear(4, 8)
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    fused(x)
    plain(x)
    plain.weight.data[...] = fused.weight.data
    plain.bias.data[...] = fused.bias.data
    assert np.array_equal(Sequential([fused])(x), Sequential([plain, ReLU()])(x))


def test_layers_catalogue_aliases():
    """guide/layers.md: names are matched without case or underscores; aliases resolve to one object."""
    assert REGISTRY.get("layers", "MaxPooling2D") is framework.layers.MaxPool2d
    assert REGISTRY.get("layers", "max_pool_2d") is framework.layers.MaxPool2d
    assert REGISTRY.get("layers", "dense") is framework.layers.Linear
    assert REGISTRY.get("losses", "CrossEntropyLoss") is REGISTRY.get("losses", "cross_entropy")
    assert REGISTRY.get("initializers", "he_uniform") is REGISTRY.get("initializers", "kaiming_uniform")
    assert REGISTRY.get("initializers", "KaimingUniform") is REGISTRY.get("initializers", "kaiming_uniform")


# -- docs/guide/training.md -------------------------------------------------------------------


def _mse_model(n_in: int = 3, metrics=("mae",)):
    model = Sequential([Linear(n_in, 1)])
    model.compile(SGD(learning_rate=0.0), "mse", metrics=list(metrics))
    return model


def test_training_history_keys_and_epoch_loss_weighted_by_batch_size(float64):
    """training.md: History has 'loss, accuracy, val_loss, val_accuracy'; the epoch loss is 'the mean over
    the epoch's samples, each batch's loss weighted by its size'."""
    x, y = _spirals()
    model = Sequential([Linear(2, 8, activation="relu"), Linear(8, 2)])
    model.compile(optimizer="adam", loss="cross_entropy", metrics=["accuracy"])
    history = model.fit(x, y, epochs=2, batch_size=32, validation_split=0.2, verbose=0)
    assert list(history.history) == ["loss", "accuracy", "val_loss", "val_accuracy"]
    assert all(len(v) == 2 for v in history.history.values())
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((10, 3)), rng.standard_normal((10, 1))
    model = _mse_model()
    pred = model.predict(x)
    history = model.fit(x, y, epochs=1, batch_size=4, shuffle=False, verbose=0)  # batches 4, 4, 2
    assert np.isclose(history.history["loss"][0], np.mean((pred - y) ** 2), rtol=1e-12)
    assert np.isclose(history.history["mae"][0], np.mean(np.abs(pred - y)), rtol=1e-12)


def test_training_validation_split_cuts_at_floor(float64):
    """training.md: 'validation_split=s keeps the first floor(N * (1 - s)) samples for training and the rest
    for validation, as Keras cuts them, before any shuffling'."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((10, 3)), rng.standard_normal((10, 1))
    for split in (0.25, 0.3, 0.35, 0.5):
        model = _mse_model()
        pred = model.predict(x)
        history = model.fit(x, y, epochs=1, batch_size=3, validation_split=split, verbose=0)
        cut = math.floor(10 * (1 - split))
        assert np.isclose(history.history["val_loss"][0], np.mean((pred[cut:] - y[cut:]) ** 2), rtol=1e-12)
        assert np.isclose(history.history["loss"][0], np.mean((pred[:cut] - y[:cut]) ** 2), rtol=1e-12)


def test_training_evaluate_return_dict_false(float64):
    """training.md: 'return_dict=False gives Keras's default form instead, the values as a list in the
    dict's order (the loss alone when there are no metrics)'."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((10, 3)), rng.standard_normal((10, 1))
    model = _mse_model(metrics=("mae", "mse"))
    scores = model.evaluate(x, y, verbose=0)
    assert isinstance(scores, dict) and list(scores) == ["loss", "mae", "mse"]
    assert model.evaluate(x, y, verbose=0, return_dict=False) == list(scores.values())
    bare = _mse_model(metrics=())
    alone = bare.evaluate(x, y, verbose=0, return_dict=False)
    assert isinstance(alone, float) and alone == bare.evaluate(x, y, verbose=0)["loss"]


def test_training_verbose_levels():
    """training.md: '0 prints nothing, 1 a bar (still one line per epoch when the output is not a terminal,
    never a stream of bar redraws), 2 one line per epoch'; "auto" writes one line per epoch off a terminal."""
    x, y = _spirals(64)
    model = Sequential([Linear(2, 2)])
    model.compile("adam", "cross_entropy", metrics=["accuracy"])
    for verbose, lines in ((0, 0), (1, 3), (2, 3), ("auto", 3)):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            model.fit(x, y, epochs=3, batch_size=16, verbose=verbose)
        text = out.getvalue() + err.getvalue()
        assert "\r" not in text
        assert len(text.splitlines()) == lines, (verbose, text)


def test_training_fit_returns_inference_mode_when_a_callback_raises():
    """training.md: 'fit returns the model in inference mode however it ends, also when a callback raises;
    ... fit can be called again'."""
    from framework.training.callbacks import LambdaCallback

    x, y = _spirals(64)
    model = Sequential([Linear(2, 4), Dropout(0.5), Linear(4, 2)])
    model.compile("adam", "cross_entropy")

    def boom(batch, logs):
        raise RuntimeError("callback failure")

    with pytest.raises(RuntimeError, match="callback failure"):
        model.fit(x, y, epochs=1, callbacks=LambdaCallback(on_batch_end=boom), verbose=0)
    assert not model.training and not any(layer.training for layer in model.layers)
    assert len(model.fit(x, y, epochs=1, verbose=0).history["loss"]) == 1


def test_training_iterable_rules():
    """training.md 'Data that is not in memory': y beside an iterable is a DataError; batch_size is refused;
    shuffle=True is ignored with a warning; a one-shot generator over several epochs is refused; running out
    mid-epoch warns, logs the short epoch and stops; a malformed batch is a DataError naming its index."""
    x, y = _spirals(200)
    model = Sequential([Linear(2, 2)])
    model.compile("adam", "cross_entropy")

    def gen():
        for i in range(0, 200, 50):
            yield x[i : i + 50], y[i : i + 50]

    with pytest.raises(DataError):
        model.fit(gen(), y, epochs=1, verbose=0)
    with pytest.raises(ConfigError, match="batch_size"):
        model.fit(gen(), epochs=1, batch_size=10, verbose=0)
    with pytest.warns(UserWarning, match="shuffle=True is ignored"):
        model.fit(list(gen()), epochs=1, shuffle=True, verbose=0)
    with pytest.raises(FrameworkError, match="steps_per_epoch"):
        model.fit(gen(), epochs=2, verbose=0)
    with pytest.warns(UserWarning, match="ran out"):
        history = model.fit(gen(), epochs=3, steps_per_epoch=3, verbose=0)
    assert len(history.history["loss"]) == 2
    for bad in (
        [(x[:50], y[:50]), (x[50:100], y[50:90])],
        [(x[:50], y[:50]), (x[50:50], y[50:50])],
        [(x[:50], y[:50]), (np.ones((50, 3), np.float32), y[50:100])],
    ):
        with pytest.raises(DataError, match="batch 1"):
            model.fit(bad, epochs=1, verbose=0)


@pytest.mark.parametrize("dtype", [object, complex, str])
def test_training_checked_data_dtypes(dtype):
    """training.md 'Checked data': 'a dtype of object, string or complex is refused' (fit and evaluate)."""
    x, y = _spirals(64)
    model = Sequential([Linear(2, 2)])
    model.compile("adam", "cross_entropy")
    with pytest.raises(DataError, match="x"):
        model.fit(x.astype(dtype), y, epochs=1, verbose=0)
    with pytest.raises(DataError, match="x"):
        model.evaluate(x.astype(dtype), y, verbose=0)


def test_training_checked_data_nan_message_and_switch():
    """training.md: NaN is refused 'with the array's name and the first bad index' ('x contains nan at index
    (3, 1)'); check_finite=False turns the check off."""
    x, y = _spirals(64)
    model = Sequential([Linear(2, 2)])
    model.compile("adam", "cross_entropy")
    bad = x.copy()
    bad[3, 1] = np.nan
    bad[5, 0] = np.inf
    for call in (lambda: model.fit(bad, y, epochs=1, verbose=0), lambda: model.evaluate(bad, y, verbose=0)):
        with pytest.raises(DataError, match=re.escape("x contains nan at index (3, 1)")):
            call()
    model.fit(bad, y, epochs=1, verbose=0, check_finite=False)


def test_training_sample_weight_semantics(float64):
    """training.md 'Sample weights': a batch's loss is sum(w_i l_i) / N (a 0/1 mask over half the samples
    halves the loss); metrics are sum(w_i m_i) / sum(w_i); class_weight and sample_weight multiply."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((10, 3)), rng.standard_normal((10, 1))
    model = _mse_model()
    model.compile(SGD(learning_rate=0.0), "mse", metrics=["mae"], weighted_metrics=["mae"])
    pred = model.predict(x)
    se, ae = ((pred - y) ** 2)[:, 0], np.abs(pred - y)[:, 0]
    w = np.zeros(10)
    w[:5] = 1.0
    scores = model.evaluate(x, y, sample_weight=w, verbose=0)
    assert np.isclose(scores["loss"], np.sum(w * se) / 10)
    assert np.isclose(scores["mae"], ae.mean())  # as Keras: metrics are not weighted
    assert np.isclose(scores["weighted_mae"], np.sum(w * ae) / w.sum())
    history = model.fit(x, y, sample_weight=w, validation_data=(x, y, 2 * w), epochs=1, verbose=0)
    assert np.isclose(history.history["loss"][0], np.sum(w * se) / 10)
    assert np.isclose(history.history["val_loss"][0], np.sum(2 * w * se) / 10)
    labels = (x[:, 0] > 0).astype(int)
    clf = Sequential([Linear(3, 2)])
    clf.compile(SGD(learning_rate=0.0), "cross_entropy")
    logits = clf.predict(x)
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    nll = -logp[np.arange(10), labels]
    cw = {0: 3.0, 1: 0.5}
    sw = rng.uniform(0.5, 2.0, 10)
    history = clf.fit(x, labels, class_weight=cw, sample_weight=sw, epochs=1, batch_size=10, verbose=0)
    v = np.array([cw[c] for c in labels]) * sw
    assert np.isclose(history.history["loss"][0], np.sum(v * nll) / 10)


def test_training_full_batch_layers(float64):
    """training.md 'Whole-batch layers': fit runs one full, unshuffled batch per epoch; shuffle=True, a
    smaller batch_size or validation_split are refused with a ConfigError; threads is refused too."""
    from framework.base.layer import Layer

    sizes: list[tuple[int, float]] = []

    class Whole(Layer):
        needs_full_batch = True

        def forward(self, ctx, x):
            if ctx.training:
                sizes.append((x.shape[0], float(x[0, 0])))
            return x

        def backward(self, ctx, grad_out):
            return grad_out

    x = np.arange(40, dtype=np.float64).reshape(20, 2)
    y = np.arange(20) % 2
    model = Sequential([Whole(), Linear(2, 4), Linear(4, 2)])
    model.compile("adam", "cross_entropy")
    model.fit(x, y, epochs=2, verbose=0)
    assert [s for s, _ in sizes] == [20, 20]
    assert sizes[0][1] == sizes[1][1] == 0.0  # unshuffled: the first row is sample 0 both epochs
    for kwargs in ({"shuffle": True}, {"batch_size": 8}, {"validation_split": 0.2}, {"threads": 2}):
        with pytest.raises(ConfigError):
            model.fit(x, y, epochs=1, verbose=0, **kwargs)


def test_training_dict_inputs_unknown_or_missing_key():
    """training.md 'Dict inputs': 'An unknown or missing key raises a DataError listing the expected names; a
    dict given to a Sequential does too'."""
    image, meta = Input((2,), name="image"), Input((1,), name="meta")
    two = Model([image, meta], [Linear(2, 2, name="label")(image), Linear(1, 1, name="score")(meta)])
    two.compile(optimizer="adam", loss=["cross_entropy", "mse"])
    x, y = _spirals(32)
    m = x[:, :1]
    with pytest.raises(DataError, match="meta"):
        two.predict({"image": x})
    with pytest.raises(DataError, match="image"):
        two.predict({"image": x, "meta": m, "extra": m})
    with pytest.raises(DataError, match="score"):
        two.fit({"image": x, "meta": m}, {"label": y}, epochs=1, verbose=0)
    seq = Sequential([Linear(2, 2)])
    seq.compile("adam", "cross_entropy")
    with pytest.raises(DataError):
        seq.fit({"image": x}, y, epochs=1, verbose=0)


def test_training_on_batch_methods(float64):
    """training.md 'One batch at a time': train_on_batch returns the loss (one step), test_on_batch the loss
    without a step, both a dict with return_dict=True; predict_on_batch is predict on one batch."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((8, 3)), rng.standard_normal((8, 1))
    model = Sequential([Linear(3, 1)])
    model.compile(SGD(learning_rate=0.1), "mse", metrics=["mae"])
    pred = model.predict(x)
    before = model.layers[0].weight.data.copy()
    assert np.isclose(model.test_on_batch(x, y), np.mean((pred - y) ** 2))
    assert np.array_equal(model.layers[0].weight.data, before)
    loss = model.train_on_batch(x, y)
    assert isinstance(loss, float) and np.isclose(loss, np.mean((pred - y) ** 2))
    assert not np.array_equal(model.layers[0].weight.data, before)
    logs = model.test_on_batch(x, y, return_dict=True)
    assert list(logs) == ["loss", "mae"]
    assert np.array_equal(model.predict_on_batch(x), model.predict(x))


def _recording_hook(calls: list[str], name: str):
    """A callback method that records ``name`` when called."""

    def hook(self, *args, **kwargs):
        calls.append(name)

    return hook


def test_training_callback_hooks_fired():
    """training.md 'Callbacks': fit fires on_train_*, on_epoch_*, on_batch_end (Keras's alias of the train
    batch hooks); evaluate and fit's validation fire on_test_begin, on_test_batch_begin/end, on_test_end;
    predict fires the on_predict_* hooks; callbacks= takes a list or a single callback."""
    from framework.training.callbacks import Callback

    calls: list[str] = []
    hooks = [n for n in dir(Callback) if n.startswith("on_") and n not in ("on_batch_begin", "on_batch_end")]
    Recorder = type("Recorder", (Callback,), {name: _recording_hook(calls, name) for name in hooks})

    class Plain(Callback):
        def on_batch_end(self, batch, logs=None):
            calls.append("on_batch_end")

    x, y = _spirals(64)
    model = Sequential([Linear(2, 2)])
    model.compile("adam", "cross_entropy", metrics=["accuracy"])
    model.evaluate(x, y, callbacks=Recorder(), verbose=0)
    assert set(calls) == {"on_test_begin", "on_test_batch_begin", "on_test_batch_end", "on_test_end"}
    calls.clear()
    model.predict(x, callbacks=[Recorder()])
    assert set(calls) == {
        "on_predict_begin",
        "on_predict_batch_begin",
        "on_predict_batch_end",
        "on_predict_end",
    }
    calls.clear()
    model.fit(
        x, y, epochs=1, batch_size=16, validation_split=0.25, callbacks=[Recorder(), Plain()], verbose=0
    )
    expected = {"on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end", "on_train_batch_begin"}
    expected |= {
        "on_train_batch_end",
        "on_test_begin",
        "on_test_batch_begin",
        "on_test_batch_end",
        "on_test_end",
    }
    assert set(calls) == expected | {"on_batch_end"}
    assert calls.count("on_batch_end") == 3


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_training_terminate_on_nan_and_csv_logger_append(tmp_path):
    """training.md: 'TerminateOnNaN (stops at the first NaN or infinite batch loss), CSVLogger (one row per
    epoch; with append=True it adds rows under the existing header)'."""
    from framework.training.callbacks import CSVLogger, TerminateOnNaN

    x, y = _spirals(64)
    model = Sequential([Linear(2, 2)])
    model.compile("adam", "cross_entropy", metrics=["accuracy"])
    path = tmp_path / "log.csv"
    model.fit(x, y, epochs=2, callbacks=CSVLogger(path), verbose=0)
    model.fit(x, y, epochs=3, callbacks=CSVLogger(path, append=True), verbose=0)
    rows = path.read_text().strip().splitlines()
    assert len(rows) == 1 + 2 + 3 and rows[0].split(",")[0] == "epoch"
    assert "loss" in rows[0] and "accuracy" in rows[0]

    bad = Sequential([Linear(2, 2)])
    bad.compile(SGD(learning_rate=1e30), "mse")
    batches_seen: list[int] = []
    from framework.training.callbacks import LambdaCallback

    big = np.full((64, 2), 1e30, np.float32)
    history = bad.fit(
        big,
        np.zeros((64, 2), np.float32),
        epochs=5,
        batch_size=16,
        verbose=0,
        check_finite=False,
        callbacks=[TerminateOnNaN(), LambdaCallback(on_batch_end=lambda b, logs: batches_seen.append(b))],
    )
    assert len(history.history["loss"]) == 1 and batches_seen == [0]


def test_training_tensorboard_defaults():
    """training.md: 'TensorBoard(log_dir, histogram_freq=0, update_freq="epoch")'."""
    import inspect

    from framework.training.callbacks import TensorBoard

    params = inspect.signature(TensorBoard).parameters
    assert list(params)[:3] == ["log_dir", "histogram_freq", "update_freq"]
    assert params["histogram_freq"].default == 0 and params["update_freq"].default == "epoch"


def test_training_float16_loss_scaling():
    """training.md 'float16': masters and slots in float32; a loss of 90000 is 90000, not inf; the scale
    starts at 2**15; a non-finite step is skipped (weights, iterations unchanged, gradients zeroed) and
    halves it; 2000 finite steps double it; Adam's eps stays 1e-8; float32 models have no loss scaler."""
    old = framework.get_default_dtype()
    framework.set_default_dtype("float16")
    try:
        model = Sequential([Linear(1, 1, bias=False)])
        model.build((None, 1))
    finally:
        framework.set_default_dtype(old)
    weight = model.layers[0].weight
    weight.data[...] = 1
    model.compile("adam", "mse")
    opt = model.optimizer
    x, y = np.full((4, 1), 300, np.float16), np.zeros((4, 1), np.float16)
    assert model.evaluate(x, y, verbose=0)["loss"] == 90000.0
    assert opt.loss_scaler.scale == 2.0**15 and opt.loss_scaler.growth_interval == 2000
    assert opt.eps == 1e-8
    model.train_on_batch(x, y)  # 300 * 2 * 300 * 2**15 overflows float16: skipped
    assert opt.loss_scaler.scale == 2.0**14 and opt.iterations == 0 and opt.loss_scaler.skipped == 1
    assert weight.data[0, 0] == 1 and not np.any(weight.grad)
    model.train_on_batch(np.full((4, 1), 0.01, np.float16), y)
    assert opt.iterations == 1 and weight.data[0, 0] < 1
    assert opt.master(weight).data.dtype == np.float32
    slots = opt.state[[id(q) for q in opt.params].index(id(weight))]
    assert slots and all(s.dtype == np.float32 for s in slots.values() if isinstance(s, np.ndarray))
    plain = Sequential([Linear(1, 1)])
    plain.compile("adam", "mse")
    plain.build((None, 1))
    assert plain.optimizer.loss_scaler is None


# -- docs/guide/metrics.md -------------------------------------------------------------------


def test_metrics_builtin_names():
    """metrics.md: 'The built-ins are ... accuracy, top_k_accuracy, mae and mse, and the stateful epoch
    metrics precision, recall, f1_score, auc and confusion_matrix'."""
    assert sorted(framework.metrics.names()) == sorted(
        [
            "accuracy",
            "top_k_accuracy",
            "mae",
            "mse",
            "precision",
            "recall",
            "f1_score",
            "auc",
            "confusion_matrix",
        ]
    )


def test_metrics_bind_output_thresholds():
    """metrics.md: 'one score per sample is thresholded at 0 on logits and 0.5 on probabilities, a sigmoid
    over several columns (multi-label) is thresholded element by element ... An explicit
    Accuracy(threshold=...) is in y_pred's units and wins'."""
    acc = framework.metrics.get("accuracy")
    z = np.array([[1.5, -0.2], [-0.3, 0.1]])
    t = np.array([[1, 0], [1, 1]])
    acc.bind_output("logits", "sigmoid")
    assert acc(z, t) == 0.75
    acc.bind_output("probabilities", "sigmoid")
    assert acc(1 / (1 + np.exp(-z)), t) == 0.75
    explicit = framework.metrics.get("accuracy", threshold=0.2)
    explicit.bind_output("logits", "sigmoid")
    assert explicit(np.array([[0.1], [0.3]]), np.array([1, 1])) == 0.5
    several = framework.metrics.get("accuracy")
    several.bind_output("logits", "softmax")
    assert several(np.array([[0.1, 0.3, -1.0], [2.0, 0.0, 1.0]]), np.array([1, 2])) == 0.5


@pytest.mark.parametrize("average", ["binary", "macro", "micro", "weighted", None])
def test_metrics_stateful_equal_sklearn(average):
    """metrics.md 'Stateful epoch metrics': the epoch value equals scikit-learn's on all the epoch's
    predictions (zero_division=0), average binary (default), macro, micro, weighted or None."""
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    if average == "binary":
        y, scores = rng.integers(0, 2, 60), rng.uniform(size=60)
        pred = (scores > 0.5).astype(int)
        kwargs = {}
    else:
        y, scores = rng.integers(0, 3, 60), rng.standard_normal((60, 3))
        pred = scores.argmax(1)
        kwargs = {"average": average}
    for name, fn in (
        ("precision", sk.precision_score),
        ("recall", sk.recall_score),
        ("f1_score", sk.f1_score),
    ):
        metric = framework.metrics.get(name, **kwargs)
        for part in (slice(0, 25), slice(25, 60)):
            metric.update_state(y[part], scores[part])
        expected = fn(y, pred, zero_division=0, **({"average": average} if average else {"average": None}))
        assert np.allclose(metric.result(), expected, atol=1e-12), name


def test_metrics_auc_accuracy_claims():
    """metrics.md: AUC(curve="ROC"|"PR", num_thresholds=200) within 1e-3 of roc_auc_score and 2e-2 of
    average_precision_score on 1000 random samples; num_thresholds=None is exact; logits get a sigmoid
    first."""
    sk = pytest.importorskip("sklearn.metrics")
    import inspect

    params = inspect.signature(type(framework.metrics.get("auc"))).parameters
    assert params["curve"].default == "ROC" and params["num_thresholds"].default == 200
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 1000)
    p = np.clip(0.3 * y + 0.7 * rng.uniform(size=1000), 0, 1)
    roc = framework.metrics.get("auc")
    roc.update_state(y, p)
    assert abs(roc.result() - sk.roc_auc_score(y, p)) < 1e-3
    pr = framework.metrics.get("auc", curve="PR")
    pr.update_state(y, p)
    assert abs(pr.result() - sk.average_precision_score(y, p)) < 2e-2
    exact = framework.metrics.get("auc", num_thresholds=None)
    exact.update_state(y, p)
    assert np.isclose(exact.result(), sk.roc_auc_score(y, p), rtol=0, atol=1e-12)
    z = rng.standard_normal(1000)
    logit = framework.metrics.get("auc", num_thresholds=None, from_logits=True)
    logit.update_state(y, z)
    assert np.isclose(logit.result(), sk.roc_auc_score(y, z), atol=1e-12)


def test_metrics_confusion_matrix_claims():
    """metrics.md: ConfusionMatrix is (C, C), rows true and columns predicted, float sums of sample
    weights; scalar is False; History keeps one array per epoch, evaluate returns the array, the
    progress line leaves it out."""
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    y, scores = rng.integers(0, 3, 50), rng.standard_normal((50, 3))
    w = rng.uniform(0.5, 2.0, 50)
    cm = framework.metrics.get("confusion_matrix")
    cm.update_state(y, scores, sample_weight=w)
    assert cm.scalar is False and cm.result().dtype.kind == "f"
    assert np.allclose(cm.result(), sk.confusion_matrix(y, scores.argmax(1), sample_weight=w))
    x = rng.standard_normal((40, 2)).astype(np.float32)
    labels = (x[:, 0] > 0).astype(int)
    model = Sequential([Linear(2, 2)])
    model.compile("adam", "cross_entropy", metrics=["accuracy", "confusion_matrix"])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        history = model.fit(x, labels, epochs=2, verbose=2)
    assert "confusion" not in out.getvalue() and "accuracy" in out.getvalue()
    assert len(history.history["confusion_matrix"]) == 2
    assert all(a.shape == (2, 2) for a in history.history["confusion_matrix"])
    assert model.evaluate(x, labels, verbose=0)["confusion_matrix"].shape == (2, 2)


def test_metrics_plain_function_weighting():
    """metrics.md 'Plain functions as metrics': named by the function; values per sample average
    sample-weighted; a number is the batch mean weighted by the batch size (by the batch's total sample
    weight under sample_weight)."""

    def mean_error(y_true, y_pred):
        return y_pred - y_true

    def batch_number(y_true, y_pred):
        return float(np.mean(y_pred))

    model = Sequential([Linear(2, 1)])
    model.compile("sgd", "mse", weighted_metrics=[mean_error, batch_number])
    x, y = np.random.default_rng(1).standard_normal((10, 2)), np.zeros((10, 1))
    p = model.predict(x)[:, 0]
    scores = model.evaluate(x, y, verbose=0, batch_size=4)
    assert np.isclose(scores["mean_error"], p.mean(), rtol=1e-5) and np.isclose(
        scores["batch_number"], p.mean()
    )
    w = np.arange(10.0)
    scores = model.evaluate(x, y, verbose=0, batch_size=4, sample_weight=w)
    assert np.isclose(scores["mean_error"], np.dot(w, p) / w.sum(), rtol=1e-5)
    means = [p[0:4].mean(), p[4:8].mean(), p[8:].mean()]
    totals = [w[0:4].sum(), w[4:8].sum(), w[8:].sum()]
    assert np.isclose(scores["batch_number"], np.dot(means, totals) / w.sum(), rtol=1e-5)


@requires_h5py
def test_metrics_function_metric_loads_with_custom_objects(tmp_path):
    """metrics.md: 'A saved model records such a metric by the function's name; load it with
    custom_objects={"mean_error": mean_error} or compile again'."""

    def mean_error(y_true, y_pred):
        return y_pred - y_true

    model = Sequential([Linear(2, 1)])
    model.compile("sgd", "mse", metrics=[mean_error])
    model.build((None, 2))
    model.save(tmp_path / "m.h5")
    with pytest.raises(CheckpointError, match="custom_objects"):
        framework.load_model(tmp_path / "m.h5")
    restored = framework.load_model(tmp_path / "m.h5", custom_objects={"mean_error": mean_error})
    assert "mean_error" in restored.evaluate(np.ones((3, 2)), np.zeros((3, 1)), verbose=0)


# -- docs/guide/losses.md, docs/maths/softmax-cross-entropy.md -----------------------------------


@pytest.mark.parametrize(
    "alias, canonical",
    [
        ("BinaryCrossentropy", "binary_crossentropy"),
        ("bce", "binary_crossentropy"),
        ("BCELoss", "binary_crossentropy"),
        ("binary_cross_entropy", "binary_crossentropy"),
        ("CategoricalCrossentropy", "categorical_crossentropy"),
        ("SparseCategoricalCrossentropy", "sparse_categorical_crossentropy"),
        ("CrossEntropyLoss", "cross_entropy"),
        ("BCEWithLogitsLoss", "bce_with_logits"),
    ],
)
def test_losses_table_aliases(alias, canonical):
    """losses.md table: the names in brackets are aliases of the loss (binary_cross_entropy is the Keras
    loss)."""
    assert REGISTRY.get("losses", alias) is REGISTRY.get("losses", canonical)


@pytest.mark.parametrize(
    "name, expects, link, from_logits",
    [
        ("binary_crossentropy", "probabilities", "sigmoid", False),
        ("categorical_crossentropy", "probabilities", "softmax", False),
        ("sparse_categorical_crossentropy", "probabilities", "softmax", False),
        ("cross_entropy", "logits", "softmax", None),
        ("bce_with_logits", "logits", "sigmoid", None),
        ("mse", None, None, None),
    ],
)
def test_losses_expects_link_and_from_logits_default(name, expects, link, from_logits):
    """losses.md: each loss declares expects / link; the Keras names default to from_logits=False and
    expect logits with from_logits=True; a regression loss expects None."""
    loss = framework.losses.get(name)
    assert loss.expects == expects and loss.link == link
    if from_logits is not None:
        assert loss.from_logits is False
        assert framework.losses.get(name, from_logits=True).expects == "logits"


def test_losses_keras_clip_and_renormalise(float64):
    """losses.md: 'the probabilities are clipped into [1e-7, 1 - 1e-7] before the log (the categorical ones
    are first divided by their sum over the class axis, axis 1)'."""
    bce = framework.losses.get("binary_crossentropy")
    assert np.isclose(bce(np.array([[0.0], [1.0]]), np.array([[1.0], [0.0]])), -np.log(1e-7), rtol=1e-6)
    cce = framework.losses.get("categorical_crossentropy")
    assert np.isclose(cce(np.array([[0.4, 0.2, 0.2]]), np.array([[1.0, 0, 0]])), np.log(2))
    scce = framework.losses.get("sparse_categorical_crossentropy")
    assert np.isclose(scce(np.array([[0.4, 0.2, 0.2]]), np.array([0])), np.log(2))
    assert np.isclose(cce(np.array([[0.0, 1.0]]), np.array([[1.0, 0.0]])), -np.log(1e-7), rtol=1e-6)


@pytest.mark.parametrize(
    "name", ["binary_crossentropy", "categorical_crossentropy", "sparse_categorical_crossentropy"]
)
def test_losses_logits_to_probability_loss_is_refused(name):
    """losses.md: 'Logits given to a probabilities loss are refused with a DataError that says to pass
    from_logits=True'."""
    loss = framework.losses.get(name)
    y_true = {
        "binary_crossentropy": np.array([[1.0], [0.0]]),
        "sparse_categorical_crossentropy": np.array([0, 1]),
    }
    target = y_true.get(name, np.array([[1.0, 0.0], [0.0, 1.0]]))
    logits = (
        np.array([[2.0], [-1.0]]) if name == "binary_crossentropy" else np.array([[2.0, -1.0], [0.5, 0.1]])
    )
    with pytest.raises(DataError, match="from_logits=True"):
        loss(logits, target)


@pytest.mark.parametrize(
    "name, link", [("categorical_crossentropy", "softmax"), ("binary_crossentropy", "sigmoid")]
)
def test_losses_from_logits_equals_probabilities(float64, name, link):
    """losses.md: 'With from_logits=True they compute the same loss from logits, stably'."""
    rng = np.random.default_rng(0)
    if link == "softmax":
        z = rng.standard_normal((5, 3))
        p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        t = np.eye(3)[rng.integers(0, 3, 5)]
    else:
        z = rng.standard_normal((5, 1))
        p = 1 / (1 + np.exp(-z))
        t = rng.integers(0, 2, (5, 1)).astype(float)
    assert np.isclose(framework.losses.get(name)(p, t), framework.losses.get(name, from_logits=True)(z, t))
    big = framework.losses.get(name, from_logits=True)(z * 1e4, t)
    assert np.isfinite(big)


def test_losses_compile_warning_pairs():
    """losses.md 'The warning at compile': warns, naming the layer and the loss, when a softmax/sigmoid
    ends a model whose loss expects logits, or a probabilities loss follows no activation of its link;
    no warning for a right pairing."""
    from framework.layers import Sigmoid, Softmax

    cases = [
        ([Linear(2, 3), Softmax()], "cross_entropy", True),
        ([Linear(2, 1), Sigmoid()], "bce_with_logits", True),
        ([Linear(2, 3)], "categorical_crossentropy", True),
        ([Linear(2, 1)], "binary_crossentropy", True),
        ([Linear(2, 3), Softmax()], "categorical_crossentropy", False),
        ([Linear(2, 3)], "cross_entropy", False),
    ]
    for layers, loss, warns in cases:
        model = Sequential(layers)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.compile("adam", loss)
        messages = [str(w.message) for w in caught]
        assert len(messages) == int(warns), (loss, messages)
        if warns:
            assert loss in messages[0] and layers[-1].name in messages[0]


def test_softmax_cross_entropy_fused_gradient_and_sample_weights(float64):
    """losses.md / maths/softmax-cross-entropy.md: backward_logits() is (p - t) w / N; cross_entropy's
    gradient is (P - Y)/N and its weighted loss is sum(w l)/N; 'the gradient of sample i is scaled by
    w_i'."""
    rng = np.random.default_rng(0)
    z = rng.standard_normal((4, 3))
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    labels = np.array([0, 2, 1, 1])
    t = np.eye(3)[labels]
    w = np.array([1.0, 2.0, 0.0, 0.5])
    for name, target in (("categorical_crossentropy", t), ("sparse_categorical_crossentropy", labels)):
        loss = framework.losses.get(name)
        loss(p, target, sample_weight=w)
        assert np.allclose(loss.backward_logits(), w[:, None] * (p - t) / 4)
    ce = framework.losses.get("cross_entropy")
    value = ce(z, labels, sample_weight=w)
    assert np.isclose(value, np.sum(w * -np.log(p[np.arange(4), labels])) / 4)
    assert np.allclose(ce.backward(), w[:, None] * (p - t) / 4)
    ce(z, t)  # one-hot targets too
    assert np.allclose(ce.backward(), (p - t) / 4)
    sig = framework.losses.get("binary_crossentropy")
    zb = rng.standard_normal((4, 2))
    pb = 1 / (1 + np.exp(-zb))
    yb = rng.integers(0, 2, (4, 2)).astype(float)
    sig(pb, yb, sample_weight=w)
    assert np.allclose(sig.backward_logits(), w[:, None] * (pb - yb) / 8)


def test_softmax_cross_entropy_label_smoothing_and_class_weights(float64):
    """maths/softmax-cross-entropy.md: with smoothing the gradient is (P - Y^eps)/N, Y^eps = (1-eps) y +
    eps/K; class weights give L = sum v l / sum v and dL/dz_n = v_n / sum v (p_n - y_n) (PyTorch's
    weighted mean)."""
    rng = np.random.default_rng(0)
    N, K, eps = 5, 4, 0.1
    z = rng.standard_normal((N, K))
    labels = rng.integers(0, K, N)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    y_eps = (1 - eps) * np.eye(K)[labels] + eps / K
    ls = framework.losses.get("cross_entropy", label_smoothing=eps)
    assert np.isclose(ls(z, labels), -(y_eps * np.log(p)).sum() / N)
    assert np.allclose(ls.backward(), (p - y_eps) / N)
    weights = np.array([1.0, 2.0, 0.5, 3.0])
    cw = framework.losses.get("cross_entropy", weight=weights)
    v = weights[labels]
    ell = -np.log(p[np.arange(N), labels])
    assert np.isclose(cw(z, labels), np.sum(v * ell) / v.sum())
    assert np.allclose(cw.backward(), v[:, None] / v.sum() * (p - np.eye(K)[labels]))


def test_binary_cross_entropy_from_logits_stable_form(float64):
    """maths/softmax-cross-entropy.md: l = max(z, 0) - z y + log(1 + e^-|z|), dL/dz_n = (sigma(z_n) -
    y_n)/N."""
    rng = np.random.default_rng(0)
    z = np.concatenate([rng.standard_normal((6, 1)) * 3, [[800.0], [-800.0]]])
    y = np.concatenate([rng.uniform(size=(6, 1)), [[0.0], [1.0]]])
    loss = framework.losses.get("bce_with_logits")
    value = loss(z, y)
    ell = np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))
    assert np.isclose(value, ell.mean())
    sigma = np.exp(-np.logaddexp(0, -z))
    assert np.allclose(loss.backward(), (sigma - y) / 8)


def test_keras_probability_gradients(float64):
    """maths/softmax-cross-entropy.md 'Probabilities': dl/dp_j = (g_j - sum_c g_c q_c) / S with q = p / S,
    g_c = -t_c / q_c (categorical); (p - y) / (p (1 - p)) for binary, divided by N (by the element count)."""
    rng = np.random.default_rng(0)
    p = rng.uniform(0.1, 0.9, (3, 4))
    t = np.eye(4)[[0, 3, 1]]
    cce = framework.losses.get("categorical_crossentropy")
    cce(p, t)
    S = p.sum(axis=1, keepdims=True)
    q = p / S
    g = -t / q
    expected = (g - (g * q).sum(axis=1, keepdims=True)) / S / 3
    assert np.allclose(cce.backward(), expected)
    assert np.allclose(
        expected, _fd_input_grad(lambda a: framework.losses.get("categorical_crossentropy")(a, t), p, 1.0)
    )
    pb = rng.uniform(0.1, 0.9, (3, 2))
    yb = rng.integers(0, 2, (3, 2)).astype(float)
    bce = framework.losses.get("binary_crossentropy")
    bce(pb, yb)
    assert np.allclose(bce.backward(), (pb - yb) / (pb * (1 - pb)) / 6)


def test_losses_plain_function_refused():
    """losses.md: 'a plain function given as a loss is refused with a ConfigError'."""
    with pytest.raises(ConfigError, match="backward"):
        framework.losses.get(lambda y_true, y_pred: np.mean((y_true - y_pred) ** 2))
    model = Sequential([Linear(2, 1)])
    with pytest.raises(ConfigError):
        model.compile("adam", loss=lambda a, b: 0.0)


# -- docs/guide/checkpoints.md, docs/checkpoint-format.md, docs/security.md ---------------------


def _bn_model():
    from framework.layers import BatchNorm

    model = Sequential([Linear(4, 3), BatchNorm(3, momentum=None), Linear(3, 2)])
    model.compile(SGD(learning_rate=0.01, momentum=0.9), "mse")
    return model


def _xy(n: int = 16):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 4)).astype(np.float32), rng.standard_normal((n, 2)).astype(np.float32)


@requires_h5py
def test_checkpoint_format_every_group_and_attribute(tmp_path):
    """checkpoint-format.md 'Structure' and 'Every attribute': root attrs format / format_version 1 /
    framework_version / contents; /model config (class_name, config, build_input_shape) and plugins;
    /weights layer_names; /compile config; /optimizer iterations and param_names, slots momentum_buffer
    (SGD); /training state {epoch, rng}; /training/callbacks/<class> state; trainable on parameters;
    BatchNorm's num_batches_tracked an attribute of running_mean; compression="gzip" on datasets of more
    than one element."""
    import h5py

    from framework.training.callbacks import EarlyStopping, ReduceLROnPlateau

    model = _bn_model()
    x, y = _xy()
    model.fit(
        x,
        y,
        epochs=2,
        batch_size=8,
        validation_split=0.25,
        verbose=0,
        callbacks=[EarlyStopping(patience=3), ReduceLROnPlateau()],
    )
    path = tmp_path / "ck.h5"
    model.save(path, compression="gzip")
    with h5py.File(path) as f:
        assert f.attrs["format"] == "framework.checkpoint" and f.attrs["format_version"] == 1
        assert f.attrs["framework_version"] == framework.__version__ and f.attrs["contents"] == "model"
        config = json.loads(f["model"].attrs["config"])
        assert (
            set(config) == {"class_name", "config", "build_input_shape"}
            and config["class_name"] == "Sequential"
        )
        assert [layer["class_name"] for layer in config["config"]["layers"]] == [
            "Linear",
            "BatchNorm",
            "Linear",
        ]
        plugins = json.loads(f["model"].attrs["plugins"])
        assert plugins["layers:Linear"] == {
            "distribution": "framework",
            "version": framework.__version__,
            "plugin": "core",
        }
        assert json.loads(f["weights"].attrs["layer_names"]) == ["linear", "batch_norm", "linear_1"]
        assert "layer_names" not in f["model"].attrs
        compile_cfg = json.loads(f["compile"].attrs["config"])
        assert {"optimizer", "loss", "metrics"} <= set(compile_cfg)
        assert f["optimizer"].attrs["iterations"] == 4
        assert json.loads(f["optimizer"].attrs["param_names"])[0] == "linear.weight"
        assert f["optimizer/slots/linear/weight/momentum_buffer"].shape == (3, 4)
        state = json.loads(f["training"].attrs["state"])
        assert state["epoch"] == 2 and "rng" in state
        assert {"EarlyStopping", "ReduceLROnPlateau"} <= set(f["training/callbacks"])
        cb_state = json.loads(f["training/callbacks/EarlyStopping"].attrs["state"])
        assert {"monitor", "mode", "best", "wait"} <= set(cb_state)
        assert (
            f["weights/linear/weight"].shape == (3, 4) and f["weights/linear/weight"].attrs["trainable"] == 1
        )
        assert f["weights/batch_norm/running_mean"].attrs["num_batches_tracked"] == 4
        assert "num_batches_tracked" not in f["weights/batch_norm"]
        assert f["weights/linear/weight"].compression == "gzip"


@requires_h5py
def test_checkpoint_adam_slot_names_and_weights_file(tmp_path):
    """checkpoint-format.md: Adam's slots are exp_avg and exp_avg_sq; contents is 'weights' for
    save_weights and load_model refuses a weights file."""
    import h5py

    model = Sequential([Linear(4, 2)])
    model.compile("adam", "mse")
    x, y = _xy()
    model.fit(x, y, epochs=1, verbose=0)
    model.save(tmp_path / "a.h5")
    model.save_weights(tmp_path / "w.h5")
    with h5py.File(tmp_path / "a.h5") as f:
        assert set(f["optimizer/slots/linear/weight"]) == {"exp_avg", "exp_avg_sq"}
    with h5py.File(tmp_path / "w.h5") as f:
        assert f.attrs["contents"] == "weights" and "compile" not in f and "optimizer" not in f
    with pytest.raises(CheckpointError):
        framework.load_model(tmp_path / "w.h5")


@requires_h5py
def test_checkpoint_num_batches_tracked_restored(tmp_path):
    """checkpoint-format.md: num_batches_tracked is 'restored by load_model and load_weights'; batchnorm.md:
    'checkpoints ... keep it, so resumed training continues the average'."""
    model = _bn_model()
    x, y = _xy()
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    bn = model.layers[1]
    assert bn.num_batches_tracked == 4
    model.save(tmp_path / "m.h5")
    model.save_weights(tmp_path / "w.h5")
    restored = framework.load_model(tmp_path / "m.h5")
    assert restored.layers[1].num_batches_tracked == 4
    fresh = _bn_model()
    fresh.build((None, 4))
    fresh.load_weights(tmp_path / "w.h5")
    assert fresh.layers[1].num_batches_tracked == 4
    batch = model.layers[0](x[:4])
    restored.layers[1](batch, training=True)
    bn(batch, training=True)
    assert np.allclose(restored.layers[1].running_mean.data, bn.running_mean.data)


@requires_h5py
def test_checkpoint_restores_dtype_trainable_and_tied(tmp_path):
    """checkpoints.md: 'every parameter and buffer in its saved dtype (a float64 model comes back float64)
    and each parameter's trainable flag, and each layer's layer.trainable'; 'tied weights ... are stored
    once and tied again'."""
    from framework.layers import Embedding

    old = framework.get_default_dtype()
    framework.set_default_dtype("float64")
    try:
        tokens = Input((4,), name="tokens")
        embed = Embedding(20, 6, name="embed")
        head = Linear(6, 20, bias=False, name="head")
        head.weight = embed.weight
        hidden = Linear(6, 6, name="hidden")
        lm = Model(tokens, head(hidden(embed(tokens))))
    finally:
        framework.set_default_dtype(old)
    hidden.trainable = False
    lm.build((None, 4))
    lm.save(tmp_path / "lm.h5")
    back = framework.load_model(tmp_path / "lm.h5")
    layers = {layer.name: layer for layer in back.layers}
    assert layers["embed"].weight.data.dtype == np.float64
    assert layers["head"].weight is layers["embed"].weight
    assert layers["hidden"].trainable is False and not layers["hidden"].weight.trainable
    assert back.count_params() == lm.count_params() == 120 + 42


@requires_h5py
@pytest.mark.filterwarnings("ignore::framework.saving.validation.CheckpointWarning")
def test_checkpoint_load_model_signature_and_bounds(tmp_path):
    """checkpoints.md: load_model(path, compile=True), max_bytes=8 * 1024**3 refuses a file whose arrays
    declare more before reading; strict=True refuses non-finite weights instead of warning
    (CheckpointWarning); load_weights(path, by_name=False, skip_mismatch=False)."""
    import inspect

    from framework.saving import reader

    params = inspect.signature(framework.load_model).parameters
    assert params["compile"].default is True and params["max_bytes"].default == 8 * 1024**3
    assert params["strict"].default is False
    lw = inspect.signature(reader.load_weights).parameters
    assert lw["by_name"].default is False and lw["skip_mismatch"].default is False
    model = Sequential([Linear(4, 2)])
    model.compile("adam", "mse")
    model.build((None, 4))
    model.layers[0].weight.data[0, 0] = np.nan
    model.save(tmp_path / "nan.h5")
    with pytest.raises(CheckpointError):
        framework.load_model(tmp_path / "nan.h5", max_bytes=16)
    with pytest.warns(Warning) as caught:
        framework.load_model(tmp_path / "nan.h5")
    assert any(type(w.message).__name__ == "CheckpointWarning" for w in caught)
    with pytest.raises(CheckpointError):
        framework.load_model(tmp_path / "nan.h5", strict=True)
    with pytest.raises(CheckpointError):
        framework.load_model(tmp_path / "nan.h5", compile=False, strict=True)
    assert framework.load_model(tmp_path / "nan.h5", compile=False).compiled is False


@requires_h5py
def test_checkpoint_load_weights_leaves_model_on_mismatch(tmp_path):
    """checkpoint-format.md: 'load_weights(path) checks every array first and changes the model only when
    all of them were read, so a mismatching file leaves the model as it was'."""
    source = Sequential([Linear(4, 3), Linear(3, 2)])
    source.build((None, 4))
    source.save_weights(tmp_path / "w.h5")
    target = Sequential([Linear(4, 3), Linear(3, 5)])
    target.build((None, 4))
    before = [w.copy() for w in target.get_weights()]
    with pytest.raises(FrameworkError):
        target.load_weights(tmp_path / "w.h5")
    assert all(np.array_equal(a, b) for a, b in zip(before, target.get_weights()))


@requires_h5py
def test_checkpoint_model_checkpoint_after_reduce_lr(tmp_path):
    """checkpoints.md: 'At an epoch's end [ModelCheckpoint] runs after the other callbacks, so the file
    holds the learning rate ReduceLROnPlateau has just set'."""
    from framework.training.callbacks import ModelCheckpoint, ReduceLROnPlateau

    model = Sequential([Linear(4, 2)])
    model.compile(SGD(learning_rate=0.1), "mse")
    x, y = _xy()
    path = tmp_path / "best.h5"
    reduce = ReduceLROnPlateau(monitor="loss", patience=0, factor=0.5, min_delta=1e9)
    model.fit(x, y, epochs=2, verbose=0, callbacks=[ModelCheckpoint(path), reduce])
    lr_now = model.optimizer.learning_rate
    assert lr_now < 0.1
    restored = framework.load_model(path)
    assert restored.optimizer.learning_rate == lr_now


# -- docs/guide/modes.md ----------------------------------------------------------------------


def test_modes_dropout_and_batchnorm_table():
    """modes.md table: Dropout zeroes with probability p and scales the rest by 1/(1-p) in training,
    identity in inference; BatchNorm uses batch statistics and updates the running ones in training, the
    running ones and updates nothing in inference. Layers start in training mode."""
    from framework.layers import BatchNorm

    drop = Dropout(0.25)
    assert drop.training
    x = np.ones((200, 100), np.float32)
    y = drop(x)
    assert set(np.unique(y)) <= {0.0, np.float32(1 / 0.75)}
    assert abs((y == 0).mean() - 0.25) < 0.01
    drop.eval()
    assert np.array_equal(drop(x), x)
    bn = BatchNorm(3)
    batch = np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32) * 2 + 1
    out = bn(batch)
    assert np.allclose(out.mean(axis=0), 0, atol=1e-5)
    assert np.allclose(bn.running_mean.data, 0.1 * batch.mean(axis=0), atol=1e-6)
    bn.eval()
    moved = bn.running_mean.data.copy()
    out = bn(batch)
    assert np.array_equal(bn.running_mean.data, moved)
    assert np.allclose(out, (batch - moved) / np.sqrt(bn.running_var.data + bn.eps), atol=1e-5)


def test_modes_evaluate_predict_and_call_leave_flags():
    """modes.md: 'evaluate and predict run in inference mode and leave every flag as they found it';
    model(x, training=True) sets the mode of one call without changing any flag."""
    model = Sequential([Linear(6, 6), Dropout(0.5)])
    model.compile("adam", "mse")
    x = np.ones((4, 6), np.float32)
    model.train()
    a, b = model.predict(x), model.predict(x)
    assert np.array_equal(a, b) and model.training and model.layers[1].training
    model.evaluate(x, x, verbose=0)
    assert model.training and model.layers[1].training
    model.eval()
    assert np.array_equal(model(x), model(x))
    big = np.ones((4, 200), np.float32)
    drop = Sequential([Dropout(0.5)])
    drop.build((None, 200))
    drop.eval()
    assert (drop(big, training=True) == 0).any() and np.array_equal(drop(big), big)
    assert not drop.training and not drop.layers[0].training
    assert not model.training and not model.layers[1].training


def test_modes_pinned_nodes():
    """modes.md: 'a Dropout pinned to True stays active in predict (Monte Carlo dropout), a BatchNorm
    pinned to False normalises with its running statistics and keeps them during fit while its scale and
    shift still train'."""
    from framework.layers import BatchNorm

    inp = Input((50,))
    mc = Model(inp, Dropout(0.5)(inp, training=True))
    out = mc.predict(np.ones((4, 50), np.float32))
    assert (out == 0).any() and (out == 2).any()
    inp = Input((4,))
    bn = BatchNorm(4)
    model = Model(inp, Linear(4, 1)(bn(inp, training=False)))
    model.compile(SGD(learning_rate=0.1), "mse")
    running, gamma = bn.running_mean.data.copy(), bn.weight.data.copy()
    x = np.random.default_rng(0).standard_normal((16, 4)).astype(np.float32) + 3
    model.fit(x, np.ones((16, 1), np.float32), epochs=1, verbose=0)
    assert np.array_equal(bn.running_mean.data, running)
    assert not np.array_equal(bn.weight.data, gamma)


def test_modes_frozen_normalisation_runs_in_inference():
    """modes.md: 'A frozen normalisation layer (layer.trainable = False) runs in inference mode even in
    training mode ... its running statistics stay'."""
    from framework.layers import BatchNorm

    bn = BatchNorm(3)
    x = np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32) + 2
    bn.trainable = False
    before = bn.running_mean.data.copy()
    out = bn(x, training=True)
    assert np.array_equal(bn.running_mean.data, before)
    assert np.allclose(out, x / np.sqrt(1 + bn.eps), atol=1e-6)


# -- docs/guide/reproducibility.md ---------------------------------------------------------------


def test_reproducibility_sources_of_randomness():
    """reproducibility.md: set_seed pins initialisation and dropout; Dropout(p, seed=...) has its own
    generator; fit(seed=s) pins the shuffling; data helpers take an int, a Generator or None (the global
    generator)."""
    from framework.datasets import make_spirals

    framework.set_seed(5)
    a = Linear(5, 3)
    a.build((None, 5))
    framework.set_seed(5)
    b = Linear(5, 3)
    b.build((None, 5))
    assert np.array_equal(a.weight.data, b.weight.data)
    x = np.ones((10, 10), np.float32)
    d1, d2 = Dropout(0.5, seed=3), Dropout(0.5, seed=3)
    framework.set_seed(1)
    m1 = d1(x)
    framework.set_seed(2)
    assert np.array_equal(m1, d2(x))
    assert np.array_equal(
        make_spirals(30, seed=np.random.default_rng(4))[0], make_spirals(30, seed=np.random.default_rng(4))[0]
    )
    framework.set_seed(9)
    first = make_spirals(30, seed=None)[0]
    framework.set_seed(9)
    assert np.array_equal(first, make_spirals(30, seed=None)[0])


def test_reproducibility_fit_seed_epoch_order_independent_of_history():
    """reproducibility.md: 'with fit(..., seed=s), epoch k shuffles from (s, k) alone, so its order does
    not depend on how many epochs ran in this process'."""
    from framework.base.layer import Layer

    seen: list[np.ndarray] = []

    class Spy(Layer):
        def forward(self, ctx, x):
            if ctx.training:
                seen.append(x[:, 0].copy())
            return x

        def backward(self, ctx, grad_out):
            return grad_out

    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    y = np.zeros((20, 2), np.float32)
    model = Sequential([Spy(), Linear(2, 2)])
    model.compile("sgd", "mse")
    model.fit(x, y, epochs=3, batch_size=20, seed=7, verbose=0)
    straight = seen[2].copy()
    seen.clear()
    framework.set_seed(123)
    model.fit(x, y, epochs=3, initial_epoch=2, batch_size=20, seed=7, verbose=0)
    assert np.array_equal(seen[0], straight)


@functools.cache
def _fresh_interpreter() -> dict[str, list[str]]:
    """What a fresh interpreter (``FRAMEWORK_KEEP_HEAP=1``, no launcher variables) reports, for the
    process-wide claims of reproducibility.md and distributed.md: ``heap_tuned`` (glibc's heap thresholds
    set?) after ``import framework`` and after the first ``predict``; ``distributed`` (``size()``, and
    whether mpi4py was imported) without mpiexec. One child for both tests."""
    import subprocess
    import sys

    from support import subprocess_env

    code = (
        "import numpy as np, framework, sys\n"
        "from framework import distributed\n"
        "from framework.training import trainer\n"
        "print(trainer._HEAP_TUNED)\n"
        "print('|', distributed.size(), 'mpi4py' in sys.modules, '|')\n"
        "m = framework.Sequential([framework.layers.Linear(2, 2)])\n"
        "m.predict(np.ones((2, 2), np.float32))\n"
        "print(trainer._HEAP_TUNED)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
        env=subprocess_env(FRAMEWORK_KEEP_HEAP="1"),
    )
    before, distributed, after = out.stdout.split("|")
    return {"heap_tuned": before.split() + after.split(), "distributed": distributed.split()}


def test_reproducibility_process_wide_settings():
    """reproducibility.md 'Process-wide settings': glibc's heap thresholds are set by 'the first fit /
    evaluate / predict (never import framework)' and FRAMEWORK_KEEP_HEAP=0 turns it off;
    FRAMEWORK_DISABLE_PLUGIN_AUTOLOAD is a switch the code reads."""
    import sys

    if sys.platform.startswith("linux"):  # not on import, on the first predict
        assert _fresh_interpreter()["heap_tuned"] == ["False", "True"]
    # FRAMEWORK_KEEP_HEAP=0 (read at each call): the first predict leaves it off. In this process, with the
    # flag reset as a fresh interpreter has it (the glibc setting itself is not undone, nor read back).
    from framework.training import trainer

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer, "_HEAP_TUNED", False)
        mp.setenv("FRAMEWORK_KEEP_HEAP", "0")
        Sequential([Linear(2, 2)]).predict(np.ones((2, 2), np.float32))
        assert trainer._HEAP_TUNED is False
    sources = "\n".join(p.read_text() for p in (ROOT / "framework").rglob("*.py"))
    assert "FRAMEWORK_DISABLE_PLUGIN_AUTOLOAD" in sources


# -- docs/guide/data.md ------------------------------------------------------------------------


def test_data_helpers_signatures_and_conventions():
    """data.md: batches(x, y, batch_size, shuffle, seed); one_hot(labels, num_classes); standardize(x,
    mean=None, std=None) returns the array with the statistics; train_test_split(x, y, test_size, seed,
    stratify); synthetic sets give float32 features and int64 labels."""
    import inspect

    from framework import datasets

    assert list(inspect.signature(datasets.batches).parameters)[:5] == [
        "x",
        "y",
        "batch_size",
        "shuffle",
        "seed",
    ]
    assert list(inspect.signature(datasets.one_hot).parameters)[:2] == ["labels", "num_classes"]
    sp = inspect.signature(datasets.standardize).parameters
    assert sp["mean"].default is None and sp["std"].default is None
    assert list(inspect.signature(datasets.train_test_split).parameters)[:5] == [
        "x",
        "y",
        "test_size",
        "seed",
        "stratify",
    ]
    x = np.random.default_rng(0).standard_normal((50, 3)) * 4 + 2
    z, mean, std = datasets.standardize(x)
    assert np.allclose(z.mean(axis=0), 0) and np.allclose(z.std(axis=0), 1)
    assert np.allclose(mean, x.mean(axis=0)) and np.allclose(std, x.std(axis=0))
    for maker in (datasets.make_spirals, datasets.make_blobs):
        xs, ys = maker(seed=0)
        assert xs.dtype == np.float32 and ys.dtype == np.int64 and ys.shape == (len(xs),)


def test_data_fashion_mnist_search_order(tmp_path, monkeypatch):
    """data.md: load_fashion_mnist(path=None) reads IDX files in path, then $FRAMEWORK_FASHION_MNIST, then
    /usr/share/datasets/fashion-mnist; load_idx reads one IDX file, gzip or not; images NCHW float32 in
    [0, 1], labels int64 (N,)."""
    import gzip
    import struct

    from framework.datasets import load_fashion_mnist, load_idx

    def write(arr, path, gz):
        head = struct.pack(">HBB", 0, 0x08, arr.ndim) + b"".join(struct.pack(">I", s) for s in arr.shape)
        with (gzip.open if gz else open)(path, "wb") as handle:
            handle.write(head + arr.tobytes())

    for folder, n in ((tmp_path / "a", 3), (tmp_path / "b", 2)):
        folder.mkdir()
        write(np.full((n, 28, 28), 255, np.uint8), folder / "t10k-images-idx3-ubyte.gz", True)
        write(np.arange(n, dtype=np.uint8), folder / "t10k-labels-idx1-ubyte", False)
    monkeypatch.setenv("FRAMEWORK_FASHION_MNIST", str(tmp_path / "b"))
    x, y = load_fashion_mnist(tmp_path / "a", kind="test")
    assert x.shape == (3, 1, 28, 28) and x.dtype == np.float32 and x.max() == 1.0
    assert y.dtype == np.int64 and y.shape == (3,)
    assert load_fashion_mnist(kind="test")[0].shape == (2, 1, 28, 28)
    assert load_idx(tmp_path / "a" / "t10k-labels-idx1-ubyte").tolist() == [0, 1, 2]
    assert load_idx(tmp_path / "a" / "t10k-images-idx3-ubyte.gz").shape == (3, 28, 28)
    from framework.datasets import FASHION_MNIST_DIRS

    assert FASHION_MNIST_DIRS[-1] == "/usr/share/datasets/fashion-mnist"


# -- docs/guide/interchange.md ---------------------------------------------------------------


def _mlp():
    model = Sequential([Linear(4, 8, activation="relu"), Linear(8, 3)])
    model.build((None, 4))
    return model


def test_interchange_weights_file_keys(tmp_path):
    """interchange.md: save_weights("w.safetensors") writes '0.weight, 0.bias, 2.weight, 2.bias' (a fused
    activation takes a position); names="native" gives the layer names; .npz holds the same keys."""
    pytest.importorskip("safetensors")
    from safetensors.numpy import load_file

    model = _mlp()
    model.save_weights(tmp_path / "w.safetensors")
    assert sorted(load_file(tmp_path / "w.safetensors")) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    model.save_weights(tmp_path / "n.safetensors", names="native")
    assert sorted(load_file(tmp_path / "n.safetensors")) == [
        "linear.bias",
        "linear.weight",
        "linear_1.bias",
        "linear_1.weight",
    ]
    model.save_weights(tmp_path / "w.npz")
    assert sorted(np.load(tmp_path / "w.npz").files) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    twin = _mlp()
    twin.load_weights(tmp_path / "n.safetensors")
    assert all(np.array_equal(a, b) for a, b in zip(twin.get_weights(), model.get_weights()))


def test_interchange_refused_files(tmp_path):
    """interchange.md: .npz arrays that need unpickling are refused with a CheckpointError, as is a file
    that is not what its suffix says (an empty file, a lone .npy, a torch.save archive); an unbuilt
    model is refused before anything is written."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    model = _mlp()
    np.savez(tmp_path / "obj.npz", **{"0.weight": np.array([None] * 32, dtype=object).reshape(8, 4)})
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "empty.safetensors").write_bytes(b"")
    np.save(tmp_path / "lone.npy", np.zeros(3))
    (tmp_path / "lone.npy").rename(tmp_path / "lone.npz")
    torch.save({"0.weight": torch.zeros(8, 4)}, tmp_path / "t.npz")
    torch.save({"0.weight": torch.zeros(8, 4)}, tmp_path / "t.safetensors")
    for name in ("obj.npz", "empty.npz", "empty.safetensors", "lone.npz", "t.npz", "t.safetensors"):
        with pytest.raises(CheckpointError):
            model.load_weights(tmp_path / name)
    unbuilt = Sequential([Linear(output_size=8), Linear(8, 3)])
    for suffix in ("safetensors", "npz", "h5"):
        with pytest.raises(CheckpointError, match="not built"):
            unbuilt.save_weights(tmp_path / f"u.{suffix}")
        assert not (tmp_path / f"u.{suffix}").exists()


def test_interchange_bfloat16(tmp_path):
    """interchange.md: bfloat16 tensors of a state dict load through float32; a bfloat16 .safetensors file is
    refused with a CheckpointError."""
    torch = pytest.importorskip("torch")
    st_torch = pytest.importorskip("safetensors.torch")
    twin = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).to(
        torch.bfloat16
    )
    model = _mlp()
    model.load_state_dict(twin.state_dict())
    assert model.layers[0].weight.data.dtype == np.float32
    assert np.array_equal(model.layers[0].weight.data, twin[0].weight.detach().float().numpy())
    st_torch.save_file(twin.state_dict(), tmp_path / "bf.safetensors")
    with pytest.raises((CheckpointError, ConfigError), match="bfloat16"):
        model.load_weights(tmp_path / "bf.safetensors")


def test_interchange_state_dict_naming_rules():
    """interchange.md: state_dict() keeps layer names, format="torch" gives PyTorch's (a Sequential counts
    every layer, parameter-free ones too; a fused activation takes two positions); a functional Model
    names layers by name; BatchNorm gets num_batches_tracked in the PyTorch naming and loading it sets
    the count."""
    from framework.layers import BatchNorm, Conv2d, Flatten, MaxPool2d

    model = _mlp()
    assert sorted(model.state_dict()) == ["linear.bias", "linear.weight", "linear_1.bias", "linear_1.weight"]
    cnn = Sequential(
        [
            Conv2d(1, 4, 3, activation="relu"),
            BatchNorm(4, momentum=None),
            MaxPool2d(2),
            Flatten(),
            Dropout(0.1),
            Linear(4 * 3 * 3, 2),
        ],
        input_shape=(1, 8, 8),
    )
    torch_names = cnn.state_dict(format="torch")
    assert sorted(torch_names) == [
        "0.bias",
        "0.weight",
        "2.bias",
        "2.num_batches_tracked",
        "2.running_mean",
        "2.running_var",
        "2.weight",
        "6.bias",
        "6.weight",
    ]
    assert "batch_norm.num_batches_tracked" not in cnn.state_dict()
    torch_names["2.num_batches_tracked"] = np.array(11)
    cnn.load_state_dict(torch_names)
    assert cnn.layers[1].num_batches_tracked == 11
    a = Input((4,), name="in")
    functional = Model(a, Linear(4, 2, name="head")(Linear(4, 4, name="body")(a)))
    assert sorted(functional.state_dict(format="torch")) == [
        "body.bias",
        "body.weight",
        "head.bias",
        "head.weight",
    ]


def test_interchange_load_state_dict_errors():
    """interchange.md: 'Missing or unexpected keys raise a ConfigError listing them, arrays of the wrong
    shape a ShapeError listing both shapes, and nothing is loaded; with strict=False what fits is loaded
    and the rest is returned'; position-named layers are refused with a ConfigError unless names= says
    which naming."""
    from framework.interchange import load_state_dict
    from framework.layers import ReLU

    model = _mlp()
    state = model.state_dict(format="torch")
    before = [w.copy() for w in model.get_weights()]
    broken = dict(state)
    del broken["2.bias"]
    broken["extra.weight"] = np.zeros(3)
    with pytest.raises(ConfigError, match=r"2\.bias.*extra\.weight"):
        model.load_state_dict(broken)
    wrong = {**state, "2.bias": np.zeros(4), "0.weight": np.ones((8, 4))}
    with pytest.raises(ShapeError, match=r"\(3,\).*\(4,\)"):
        model.load_state_dict(wrong)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    broken["0.bias"] = np.ones(8)
    result = model.load_state_dict(broken, strict=False)
    assert result.missing_keys == ["2.bias"] and result.unexpected_keys == ["extra.weight"]
    assert np.array_equal(model.layers[0].bias.data, np.ones(8))
    ambiguous = Sequential([Linear(4, 4, name="2"), ReLU(), Linear(4, 4, name="0")])
    ambiguous.build((None, 4))
    values = {k: np.full(v.shape, i, np.float32) for i, (k, v) in enumerate(ambiguous.state_dict().items())}
    with pytest.raises(ConfigError, match="names="):
        ambiguous.load_state_dict(values)
    load_state_dict(ambiguous, values, names="torch")
    assert np.all(ambiguous.layers[2].weight.data == values["2.weight"][0, 0])


def test_interchange_numpy_predictor_coverage(tmp_path):
    """interchange.md 'NumPy-only deployment': exactly the listed layers have NumPy emitters; any other
    (GroupNorm, the attention layers, ...) is refused with an ExportError naming it; a path that is a
    file is refused."""
    from framework.errors import ExportError
    from framework.export import EMITTERS, numpy_predictor
    from framework.layers import GroupNorm

    listed = set(
        "Linear Identity Activation ReLU Sigmoid Tanh SiLU ELU LeakyReLU GELU Softplus Softmax LogSoftmax "
        "Conv1d Conv2d ConvTranspose2d MaxPool1d MaxPool2d AvgPool1d AvgPool2d GlobalAvgPool2d BatchNorm "
        "SyncBatchNorm LayerNorm Dropout Flatten Reshape Permute UpSampling2d ZeroPadding2d Embedding "
        "RNN LSTM GRU Add Average Maximum Minimum "
        "Subtract Multiply Concatenate".split()
    )
    have = {key.rsplit(".", 1)[-1] for key in EMITTERS} - {"IdentityActivation"}
    assert have == listed
    model = Sequential([GroupNorm(2, 4)], input_shape=(4, 3))
    with pytest.raises(ExportError, match="GroupNorm"):
        numpy_predictor(model, tmp_path / "out")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError):
        numpy_predictor(_mlp(), tmp_path / "file")
    (tmp_path / "deploy").mkdir()
    numpy_predictor(_mlp(), tmp_path / "deploy")
    assert sorted(p.name for p in (tmp_path / "deploy").iterdir()) == ["predict.py", "weights.npz"]


@requires_h5py
def test_interchange_cli_inspect_and_export(tmp_path, capsys):
    """interchange.md 'The command line': inspect prints the layers, array shapes and parameter counts of
    an HDF5 checkpoint, a .safetensors or .npz file; export MODEL.h5 --format numpy OUT_DIR writes the
    predictor."""
    from framework.cli import main

    model = _mlp()
    model.save(tmp_path / "m.h5")
    model.save_weights(tmp_path / "w.npz")
    main(["inspect", str(tmp_path / "m.h5")])
    text = capsys.readouterr().out
    assert "Linear" in text and "(8, 4)" in text and "67" in text
    main(["inspect", str(tmp_path / "w.npz")])
    text = capsys.readouterr().out
    assert "0.weight" in text and "(8, 4)" in text
    main(["export", str(tmp_path / "m.h5"), "--format", "numpy", str(tmp_path / "out")])
    assert (tmp_path / "out" / "predict.py").exists() and (tmp_path / "out" / "weights.npz").exists()


# -- docs/guide/onnx.md ----------------------------------------------------------------------


def test_onnx_export_defaults_names_and_refusals(tmp_path):
    """onnx.md: export(model, path) defaults to opset=17, dynamic_batch=True (batch axis 'N'); opset may be
    17 to 21; inputs keep the Input names ('input' for a Sequential), outputs 'output' or 'output_0',
    'output_1'; integer inputs become int64; GCNConv and a node pinned to training=True raise
    ExportError; a missing folder raises ExportError and leaves no file."""
    onnx = pytest.importorskip("onnx")
    import inspect

    import framework.onnx
    from framework.errors import ExportError
    from framework.layers import Embedding, Flatten, GCNConv

    params = inspect.signature(framework.onnx.export).parameters
    assert params["opset"].default == 17 and params["dynamic_batch"].default is True
    model = _mlp()
    framework.onnx.export(model, tmp_path / "m.onnx")
    graph = onnx.load(tmp_path / "m.onnx").graph
    assert [i.name for i in graph.input] == ["input"] and [o.name for o in graph.output] == ["output"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    for opset in (17, 21):
        framework.onnx.export(model, tmp_path / f"{opset}.onnx", opset=opset)
    for opset in (16, 22):
        with pytest.raises(ExportError):
            framework.onnx.export(model, tmp_path / "bad.onnx", opset=opset)
    a = Input((4,), name="feat")
    two = Model(a, [Linear(4, 2)(a), Linear(4, 1)(a)])
    framework.onnx.export(two, tmp_path / "two.onnx")
    graph = onnx.load(tmp_path / "two.onnx").graph
    assert [i.name for i in graph.input] == ["feat"] and [o.name for o in graph.output] == [
        "output_0",
        "output_1",
    ]
    emb = Sequential([Embedding(10, 4), Flatten(), Linear(12, 2)], input_shape=(3,))
    framework.onnx.export(emb, tmp_path / "e.onnx")
    assert onnx.load(tmp_path / "e.onnx").graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    gcn = Sequential([GCNConv(3, 2).set_graph(np.eye(4, dtype=np.float32))])
    gcn.build((None, 3))
    with pytest.raises(ExportError, match="GCNConv"):
        framework.onnx.export(gcn, tmp_path / "g.onnx")
    inp = Input((4,))
    pinned = Model(inp, Dropout(0.5)(inp, training=True))
    with pytest.raises(ExportError, match="training=True"):
        framework.onnx.export(pinned, tmp_path / "p.onnx")
    with pytest.raises(ExportError, match="nofolder"):
        framework.onnx.export(model, tmp_path / "nofolder" / "x.onnx")


def test_onnx_layer_operator_table(tmp_path):
    """onnx.md 'Which layer becomes which operator': the layers with converters are exactly the table's; a
    few rows checked on the written graph (Linear -> Gemm on 2-D input, MatMul + Add on rank 3; SiLU ->
    Sigmoid + Mul; Dropout removed; GlobalAvgPool2d -> GlobalAveragePool + Flatten)."""
    onnx = pytest.importorskip("onnx")
    import framework.onnx
    from framework.layers import GlobalAvgPool2d, SiLU
    from framework.onnx import registry

    table = set(
        "Linear Conv1d Conv2d ConvTranspose2d BatchNorm SyncBatchNorm LayerNorm MaxPool1d MaxPool2d "
        "AvgPool1d AvgPool2d GlobalAvgPool2d Dropout Identity Flatten Reshape Permute ZeroPadding2d "
        "UpSampling2d Embedding ReLU LeakyReLU ELU Sigmoid Tanh Softmax LogSoftmax GELU SiLU Softplus "
        "Activation RNN LSTM GRU Add Average Maximum Minimum "
        "Subtract Multiply Concatenate".split()
    )
    assert {cls.__name__ for cls in registry.converters()} - {"IdentityActivation"} == table

    def ops(model, name):
        framework.onnx.export(model, tmp_path / name)
        graph = onnx.load(tmp_path / name).graph
        outputs = {o.name for o in graph.output}
        # the exporter may name the graph output with a final Identity
        return [n.op_type for n in graph.node if not (n.op_type == "Identity" and set(n.output) <= outputs)]

    assert ops(Sequential([Linear(3, 2), Dropout(0.2), Linear(2, 2)], input_shape=(3,)), "a.onnx") == [
        "Gemm",
        "Gemm",
    ]
    assert ops(Sequential([Linear(3, 2)], input_shape=(5, 3)), "b.onnx") == ["MatMul", "Add"]
    assert ops(Sequential([SiLU()], input_shape=(3,)), "c.onnx") == ["Sigmoid", "Mul"]
    assert ops(Sequential([GlobalAvgPool2d()], input_shape=(2, 4, 4)), "d.onnx") == [
        "GlobalAveragePool",
        "Flatten",
    ]


def test_onnx_import_error_names_operator_node_and_file(tmp_path):
    """onnx.md: 'An operator without a built-in layer raises ExportError naming it and the node (operator
    'Sin' (node 'sine') has no built-in layer; supported operators: ...)' and every import error names
    the file."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    import framework.onnx
    from framework.errors import ExportError

    node = helper.make_node("Sin", ["x"], ["y"], name="sine")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "sin.onnx")
    with pytest.raises(
        ExportError, match=r"operator 'Sin' \(node 'sine'\) has no built-in layer; supported operators"
    ) as info:
        framework.onnx.load(tmp_path / "sin.onnx")
    assert "sin.onnx" in str(info.value)


# -- docs/maths/activations.md -----------------------------------------------------------------

_SIG = lambda t: 1 / (1 + np.exp(-t))  # noqa: E731


def _phi_cdf(t):
    from scipy.special import erfc

    return 0.5 * erfc(-t / np.sqrt(2))


ACTIVATION_TABLE = {
    "relu": (lambda t: np.maximum(t, 0), lambda t: (t > 0).astype(float)),
    "leaky_relu": (lambda t: np.where(t > 0, t, 0.01 * t), lambda t: np.where(t > 0, 1.0, 0.01)),
    "elu": (lambda t: np.where(t > 0, t, np.expm1(t)), lambda t: np.where(t > 0, 1.0, np.exp(t))),
    "sigmoid": (_SIG, lambda t: _SIG(t) * (1 - _SIG(t))),
    "tanh": (np.tanh, lambda t: 1 - np.tanh(t) ** 2),
    "softplus": (lambda t: np.logaddexp(0, t), _SIG),
    "silu": (lambda t: t * _SIG(t), lambda t: _SIG(t) * (1 + t * (1 - _SIG(t)))),
    "gelu": (lambda t: t * _phi_cdf(t), lambda t: _phi_cdf(t) + t * np.exp(-(t**2) / 2) / np.sqrt(2 * np.pi)),
}


@pytest.mark.parametrize("name", sorted(ACTIVATION_TABLE))
def test_activation_table_forward_and_derivative(float64, name):
    """maths/activations.md 'The table': each activation's phi and phi' (leaky slope 0.01 and ELU alpha 1 by
    default); backward is phi'(x) * g; and phi' equals finite differences of the layer's own forward."""
    pytest.importorskip("scipy")
    f, df = ACTIVATION_TABLE[name]
    layer = framework.activations.get(name)
    x = np.linspace(-4, 4, 37) + 0.013
    g = np.random.default_rng(0).standard_normal(x.shape)
    y = layer(x)
    assert np.allclose(y, f(x), rtol=1e-12, atol=1e-14)
    grad = layer.backward(g)
    assert np.allclose(grad, df(x) * g, rtol=1e-10, atol=1e-12)
    fresh = framework.activations.get(name)
    assert np.allclose(grad, _fd_input_grad(fresh, x, g), atol=1e-7)


def test_activation_relu_at_zero_and_softplus_overflow(float64):
    """maths/activations.md: 'the convention phi'(0) = 0 is used' for ReLU; softplus is computed without
    overflow for large x."""
    relu = framework.activations.get("relu")
    relu(np.array([0.0, -0.0, 1e-300]))
    assert relu.backward(np.ones(3)).tolist() == [0.0, 0.0, 1.0]
    softplus = framework.activations.get("softplus")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.allclose(softplus(np.array([1000.0, -1000.0, 0.0])), [1000.0, 0.0, np.log(2)])


def test_activation_softmax_vjp(float64):
    """maths/activations.md 'Softmax': dL/dx = p * (g - <p, g>) row by row; the forward subtracts the row
    maximum, so it cannot overflow."""
    softmax = framework.activations.get("softmax")
    rng = np.random.default_rng(0)
    z = rng.standard_normal((3, 5))
    g = rng.standard_normal((3, 5))
    p = softmax(z)
    assert np.allclose(p, np.exp(z) / np.exp(z).sum(axis=1, keepdims=True))
    assert np.allclose(softmax.backward(g), p * (g - (p * g).sum(axis=-1, keepdims=True)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        big = framework.activations.get("softmax")(np.array([[1000.0, 0.0]]))
    assert np.allclose(big, [[1.0, 0.0]])


def test_activation_gelu_accuracy(float64):
    """maths/activations.md: GELU in float64 has a relative error about 1e-13 (Chebyshev series of erfcx);
    in float32 the erfcx table's interpolation error is below 3e-8, and the output's relative error is a
    few 1e-7 where x^2 is small, growing like x^2 times float32's rounding in the left tail."""
    sp = pytest.importorskip("scipy.special")
    from framework.layers import GELU
    from plugins.activation_math import _ERFCX_K, _TABLE_SIZE

    x = np.linspace(-36, 36, 100001)
    ref = x * _phi_cdf(x)
    normal = np.abs(ref) > 1e-290
    assert np.max((np.abs(GELU()(x) - ref) / np.abs(ref).clip(1e-300))[normal]) < 1e-12
    framework.set_default_dtype("float32")
    x32 = np.linspace(-13, 13, 100001).astype(np.float32)
    x64 = x32.astype(np.float64)
    ref = x64 * _phi_cdf(x64)
    ok = np.abs(ref) > np.finfo(np.float32).tiny
    rel = np.abs(GELU()(x32).astype(np.float64) - ref)[ok] / np.abs(ref[ok])
    assert np.all(rel <= 1e-6 + x64[ok] ** 2 * 6e-8)
    assert np.max(rel[np.abs(x64[ok]) < 2]) < 1e-6
    n = _TABLE_SIZE
    grid = np.linspace(-1, 1, n + 1)[:-1]
    table = np.append(0.5 * sp.erfcx(_ERFCX_K * (1 + grid) / (1 - grid)), 0.0)
    u = np.random.default_rng(0).uniform(-1, 1, 100000)
    pos = (u + 1) * n / 2
    i = np.floor(pos).astype(int)
    interp = table[i] + (pos - i) * (table[i + 1] - table[i])
    t = _ERFCX_K * (1 + u) / (1 - u)
    true = 0.5 * sp.erfcx(t)
    assert n + 1 == 8193 and np.max((np.abs(interp - true) / true)[t <= 10]) < 3e-8


# -- docs/maths/conv2d.md, conv-variants.md ------------------------------------------------------


def _conv_reference(x, w, b, s, p, d=1):
    """The definition: cross-correlation of the zero-padded input (the kernel is not flipped)."""
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    n, _, hp, wp = xp.shape
    f, _, kh, kw = w.shape
    ho, wo = (hp - d * (kh - 1) - 1) // s + 1, (wp - d * (kw - 1) - 1) // s + 1
    y = np.zeros((n, f, ho, wo))
    for i in range(ho):
        for j in range(wo):
            patch = xp[:, :, s * i : s * i + d * (kh - 1) + 1 : d, s * j : s * j + d * (kw - 1) + 1 : d]
            y[:, :, i, j] = np.einsum("ncuv,fcuv->nf", patch, w) + b
    return y


@pytest.mark.parametrize("s, p, d", [(1, 0, 1), (2, 1, 1), (3, 2, 1), (1, 2, 2), (2, 1, 2)])
def test_conv2d_definition_output_size_and_gradients(float64, s, p, d):
    """maths/conv2d.md: Y = b + sum W X^p (cross-correlation); H_out = floor((H + 2p - d(k-1) - 1)/s) + 1;
    dW, db and dX (col2im, rows never read get zero gradient) equal finite differences of the forward."""
    from framework.layers import Conv2d

    rng = np.random.default_rng(0)
    conv = Conv2d(2, 3, 3, stride=s, padding=p, dilation=d)
    x = rng.standard_normal((2, 2, 8, 7))
    y = conv(x)
    W, b = conv.weight.data, conv.bias.data
    assert y.shape[2:] == tuple((n + 2 * p - d * 2 - 1) // s + 1 for n in (8, 7))
    assert np.allclose(y, _conv_reference(x, W, b, s, p, d))
    g = rng.standard_normal(y.shape)
    conv.zero_grad()
    dx = conv.backward(g)
    assert np.allclose(dx, _fd_input_grad(lambda t: _conv_reference(t, W, b, s, p, d), x, g), atol=1e-6)
    assert np.allclose(conv.bias.grad, g.sum(axis=(0, 2, 3)))
    dW = _fd_input_grad(lambda t: _conv_reference(x, t, b, s, p, d), W.copy(), g)
    assert np.allclose(conv.weight.grad, dW, atol=1e-6)
    unread = (8 + 2 * p - d * 2 - 1) % s
    if unread and p == 0:
        assert np.all(dx[:, :, 8 - unread :, :] == 0)


def test_conv2d_output_size_examples():
    """maths/conv2d.md: 'a 28 x 28 image, k = 5, p = 2, s = 1 keeps 28 x 28'; '32 x 32 with k = 3, p = 1, s
    = 2 gives 16'; conv-variants.md: padding="same" pads d(k - 1) in total (stride 1 only, as PyTorch)."""
    from framework.layers import Conv2d

    assert Conv2d(1, 1, 5, padding=2)(np.zeros((1, 1, 28, 28), np.float32)).shape[2:] == (28, 28)
    assert Conv2d(1, 1, 3, padding=1, stride=2)(np.zeros((1, 1, 32, 32), np.float32)).shape[2:] == (16, 16)
    for k, d in ((3, 2), (4, 1), (5, 3)):
        assert Conv2d(1, 1, k, dilation=d, padding="same")(np.zeros((1, 1, 11, 9), np.float32)).shape[2:] == (
            11,
            9,
        )
    with pytest.raises(ConfigError):
        Conv2d(1, 1, 3, padding="same", stride=2)


@pytest.mark.parametrize(
    "s, d, o, ok",
    [(1, 2, 1, True), (2, 1, 1, True), (2, 1, 2, False), (1, 1, 1, False), (2, 3, 2, True), (2, 3, 3, False)],
)
def test_conv_transpose_output_padding_rule(s, d, o, ok):
    """maths/conv-variants.md: 'PyTorch requires o < max(s, d), and so does this layer'; the output size is
    (H - 1)s - 2p + d(k - 1) + o + 1."""
    from framework.layers import ConvTranspose2d

    if not ok:
        with pytest.raises(ConfigError):
            ConvTranspose2d(2, 3, 3, stride=s, dilation=d, output_padding=o)
        return
    layer = ConvTranspose2d(2, 3, 3, stride=s, dilation=d, output_padding=o, padding=1)
    y = layer(np.zeros((1, 2, 5, 4), np.float32))
    assert y.shape[2:] == tuple((n - 1) * s - 2 + d * 2 + o + 1 for n in (5, 4))


def test_conv1d_output_size(float64):
    """maths/conv-variants.md: L_out = floor((L + 2p - d(k-1) - 1)/s) + 1 for Conv1d."""
    from framework.layers import Conv1d

    for L, k, s, p, d in ((20, 3, 2, 2, 2), (9, 4, 3, 0, 1), (7, 2, 1, 1, 3)):
        out = Conv1d(2, 3, k, stride=s, padding=p, dilation=d)(np.zeros((1, 2, L)))
        assert out.shape == (1, 3, (L + 2 * p - d * (k - 1) - 1) // s + 1)


# -- docs/maths/pooling.md, pooling-options.md ---------------------------------------------------


def test_pooling_max_routes_to_first_argmax_and_padding_never_wins(float64):
    """maths/pooling.md: stride defaults to the kernel size; the gradient goes to the first maximum of each
    window (ties: numpy.argmax); overlapping windows add; a padded position (-inf) never wins."""
    from framework.layers import MaxPool2d

    pool = MaxPool2d(2)
    assert tuple(np.broadcast_to(pool.stride, (2,))) == (2, 2)
    x = np.array([[1.0, 3.0, 2.0, 0.0], [4.0, 2.0, 1.0, 5.0], [0.0, 1.0, 2.0, 2.0], [3.0, 1.0, 0.0, 1.0]])[
        None, None
    ]
    g = np.array([[10.0, 20.0], [30.0, 40.0]])[None, None]
    assert np.array_equal(pool(x)[0, 0], [[4.0, 5.0], [3.0, 2.0]])
    dx = pool.backward(g)[0, 0]
    assert np.array_equal(dx, [[0, 0, 0, 0], [10, 0, 0, 20], [0, 0, 40, 0], [30, 0, 0, 0]])
    overlap = MaxPool2d(2, stride=1)
    y = overlap(np.array([[[[0.0, 0.0, 0.0], [0.0, 9.0, 0.0], [0.0, 0.0, 0.0]]]]))
    assert np.all(y == 9.0)
    assert overlap.backward(np.ones((1, 1, 2, 2)))[0, 0, 1, 1] == 4.0
    padded = MaxPool2d(2, padding=1)
    neg = -np.ones((1, 1, 3, 3)) - np.arange(9).reshape(1, 1, 3, 3)
    assert np.all(padded(neg) < 0)


def test_pooling_average_gradient_spread(float64):
    """maths/pooling.md: average pooling gives every window element G / (kh kw); global pooling G / (H W)."""
    from framework.layers import AvgPool2d, GlobalAvgPool2d

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4, 6))
    pool = AvgPool2d(2)
    pool(x)
    g = rng.standard_normal((2, 3, 2, 3))
    assert np.allclose(pool.backward(g), np.kron(g, np.ones((1, 1, 2, 2))) / 4)
    gap = GlobalAvgPool2d()
    assert gap(x).shape == (2, 3)
    other = rng.standard_normal((2, 3, 5, 7))  # any H x W: the divisor is read at each call
    assert np.allclose(gap(other), other.mean(axis=(2, 3)))
    G = rng.standard_normal((2, 3))
    assert np.allclose(gap.backward(G), np.broadcast_to(G[:, :, None, None] / 35, other.shape))


def test_pooling_relu_swap_is_exact(float64):
    """maths/pooling.md 'ReLU before a max pool can run after it': Sequential([ReLU(), MaxPool2d(2)]) gives
    the same outputs and input gradients as the declared order, on integer data full of ties and
    all-negative windows; the layers declare monotone_elementwise and window_max."""
    from framework.layers import MaxPool2d, ReLU

    assert ReLU.monotone_elementwise is True and MaxPool2d.window_max is True
    rng = np.random.default_rng(0)
    x = rng.integers(-3, 3, (2, 3, 6, 6)).astype(np.float64)
    x[0, 0, :2, :2] = -1.0
    g = rng.standard_normal((2, 3, 3, 3))
    model = Sequential([ReLU(), MaxPool2d(2)])
    y = model(x)
    model.zero_grad()
    dx = model.backward(g)
    relu, pool = ReLU(), MaxPool2d(2)
    y_ref = pool(relu(x))
    assert np.array_equal(y, y_ref)
    assert np.array_equal(dx, relu.backward(pool.backward(g)))


@pytest.mark.parametrize(
    "n, k, s, p", [(5, 2, 2, 0), (6, 3, 2, 1), (7, 3, 3, 1), (8, 4, 3, 2), (9, 2, 3, 1), (4, 3, 2, 1)]
)
def test_pooling_ceil_mode_and_count_include_pad_against_torch(float64, n, k, s, p):
    """maths/pooling-options.md: n_out = ceil((n + 2p - k)/s) + 1, less one if (n_out - 1)s >= n + p; the
    divisor D_a counts padding (default) or only real inputs; results match torch.nn.MaxPool1d /
    AvgPool1d."""
    torch = pytest.importorskip("torch")
    from framework.layers import AvgPool1d, MaxPool1d

    out = -(-(n + 2 * p - k) // s) + 1
    if (out - 1) * s >= n + p:
        out -= 1
    x = np.random.default_rng(0).standard_normal((1, 2, n))
    for include in (True, False):
        ours = AvgPool1d(k, stride=s, padding=p, ceil_mode=True, count_include_pad=include)(x)
        ref = torch.nn.AvgPool1d(k, stride=s, padding=p, ceil_mode=True, count_include_pad=include)(
            torch.from_numpy(x)
        )
        assert ours.shape[-1] == out and np.allclose(ours, ref.numpy())
        start = np.arange(out) * s - p
        end = np.minimum(start + k, n + p)
        D = (end - start) if include else np.minimum(end, n) - np.maximum(start, 0)
        ones = AvgPool1d(k, stride=s, padding=p, ceil_mode=True, count_include_pad=include)(
            np.ones((1, 1, n))
        )
        covered = np.minimum(end, n) - np.maximum(start, 0)
        assert np.allclose(ones[0, 0], covered / D)
    mx = MaxPool1d(k, stride=s, padding=p, ceil_mode=True)(x)
    assert np.allclose(
        mx, torch.nn.MaxPool1d(k, stride=s, padding=p, ceil_mode=True)(torch.from_numpy(x)).numpy()
    )


# -- docs/maths/batchnorm.md, layernorm.md -------------------------------------------------------


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 2, 5)])
def test_batchnorm_forward_backward_and_running_stats(float64, shape):
    """maths/batchnorm.md: BatchNorm(num_features, eps=1e-5, momentum=0.1) normalises over every axis but 1
    with the biased variance; gamma starts at 1 and beta at 0; the running estimates start at 0 and 1
    and move by the momentum rule with the unbiased m/(m-1) variance; the boxed dx formula; eval mode is
    the fixed affine map."""
    import inspect

    from framework.layers import BatchNorm

    params = inspect.signature(BatchNorm).parameters
    assert params["eps"].default == 1e-5 and params["momentum"].default == 0.1
    rng = np.random.default_rng(0)
    bn = BatchNorm(3)
    x = rng.standard_normal(shape) * 3 + 1
    y = bn(x)
    assert np.all(bn.weight.data == 1) and np.all(bn.bias.data == 0)
    axes = tuple(i for i in range(x.ndim) if i != 1)
    keep = lambda a: a.reshape((1, 3) + (1,) * (x.ndim - 2))  # noqa: E731
    mu, var = x.mean(axis=axes), x.var(axis=axes)
    m = x.size // 3
    xhat = (x - keep(mu)) / np.sqrt(keep(var) + 1e-5)
    assert np.allclose(y, xhat)
    assert np.allclose(bn.running_mean.data, 0.1 * mu)
    assert np.allclose(bn.running_var.data, 0.9 + 0.1 * var * m / (m - 1))
    bn.weight.data[:] = rng.standard_normal(3)
    bn.bias.data[:] = rng.standard_normal(3)
    y = bn(x)
    g = rng.standard_normal(shape)
    bn.zero_grad()
    dx = bn.backward(g)
    r = 1 / np.sqrt(keep(var) + 1e-5)
    dxhat = keep(bn.weight.data) * g
    expected = (
        r
        / m
        * (
            m * dxhat
            - dxhat.sum(axis=axes, keepdims=True)
            - xhat * (dxhat * xhat).sum(axis=axes, keepdims=True)
        )
    )
    assert np.allclose(dx, expected)
    assert np.allclose(bn.weight.grad, (g * xhat).sum(axis=axes)) and np.allclose(
        bn.bias.grad, g.sum(axis=axes)
    )
    assert abs(dx.sum(axis=axes)).max() < 1e-10
    bn.eval()
    rm, rv = bn.running_mean.data.copy(), bn.running_var.data.copy()
    y = bn(x)
    assert np.allclose(
        y, keep(bn.weight.data) * (x - keep(rm)) / np.sqrt(keep(rv) + 1e-5) + keep(bn.bias.data)
    )
    assert np.allclose(bn.backward(g), keep(bn.weight.data) * g / np.sqrt(keep(rv) + 1e-5))
    assert np.array_equal(bn.running_mean.data, rm)


def test_batchnorm_momentum_none_cumulative_average(float64):
    """maths/batchnorm.md: with momentum=None alpha = 1/k at the k-th training batch: the first batch
    replaces the initial values and the running estimates are the plain average of every batch's
    statistics (PyTorch's)."""
    torch = pytest.importorskip("torch")
    from framework.layers import BatchNorm

    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((5, 3)) * (k + 1) + k for k in range(4)]
    bn = BatchNorm(3, momentum=None)
    ref = torch.nn.BatchNorm1d(3, momentum=None).double()
    for k, batch in enumerate(batches, start=1):
        bn(batch)
        ref(torch.from_numpy(batch))
        assert bn.num_batches_tracked == k
        assert np.allclose(bn.running_mean.data, np.mean([b.mean(axis=0) for b in batches[:k]], axis=0))
        assert np.allclose(bn.running_var.data, np.mean([b.var(axis=0, ddof=1) for b in batches[:k]], axis=0))
    assert np.allclose(bn.running_var.data, ref.running_var.numpy())


def test_batchnorm_buffers_non_trainable():
    """maths/batchnorm.md: 'The running statistics are buffers: saved in checkpoints, never updated by the
    optimizer, counted as non-trainable parameters'."""
    from framework.layers import BatchNorm

    model = Sequential([Linear(2, 3), BatchNorm(3)])
    model.compile(SGD(learning_rate=0.5), "mse")
    model.build((None, 2))
    assert len(model.parameters()) == 4
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        model.summary()
    text = out.getvalue().lower()
    assert "non-trainable" in text and re.search(r"non-trainable[^\n]*\b6\b", text)
    bn = model.layers[1]
    x = np.random.default_rng(0).standard_normal((8, 2)).astype(np.float32)
    model.train_on_batch(x, np.zeros((8, 3), np.float32))
    model.eval()
    before = bn.running_var.data.copy()
    model.optimizer.step()
    assert np.array_equal(bn.running_var.data, before)


def test_layernorm_signature_and_formula(float64):
    """maths/layernorm.md: LayerNorm(normalized_shape, eps=1e-5, elementwise_affine=True, bias=True)
    normalises the last axes; identical in train and eval (no running statistics); gradients of gamma
    and beta sum over the leading axes; matches torch.nn.LayerNorm including elementwise_affine=False
    and bias=False."""
    import inspect

    torch = pytest.importorskip("torch")
    from framework.layers import LayerNorm

    params = inspect.signature(LayerNorm).parameters
    assert params["eps"].default == 1e-5 and params["elementwise_affine"].default is True
    assert params["bias"].default is True
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4, 5))
    g = rng.standard_normal(x.shape)
    for kwargs in ({}, {"elementwise_affine": False}, {"bias": False}):
        ours = LayerNorm((4, 5), **kwargs)
        ref = torch.nn.LayerNorm((4, 5), **kwargs).double()
        if ours.weight is not None:
            w = rng.standard_normal((4, 5))
            ours.weight.data[:] = w
            ref.weight.data = torch.from_numpy(w.copy())
        assert (ours.bias is None) == (ref.bias is None)
        xt = torch.from_numpy(x).requires_grad_()
        yt = ref(xt)
        yt.backward(torch.from_numpy(g))
        y = ours(x)
        ours.zero_grad()
        assert np.allclose(y, yt.detach().numpy()) and np.allclose(ours.backward(g), xt.grad.numpy())
        ours.eval()
        assert np.array_equal(ours(x), y)
        if ours.weight is not None:
            assert np.allclose(ours.weight.grad, ref.weight.grad.numpy())


# -- docs/maths/dropout.md, embedding.md ---------------------------------------------------------


def test_dropout_mask_scale_and_backward(float64):
    """maths/dropout.md: y = m x / (1 - p) with m ~ Bernoulli(1 - p); the backward uses the same mask,
    scaled by 1/(1-p); eval is the identity both ways; a new mask per forward call."""
    drop = Dropout(0.3)
    x = np.full((400, 500), 2.0)
    y = drop(x)
    assert set(np.unique(y)) <= {0.0, 2.0 / 0.7}
    assert abs((y == 0).mean() - 0.3) < 0.005 and abs(y.mean() - 2.0) < 0.02
    dx = drop.backward(np.ones_like(x))
    assert np.array_equal(dx == 0, y == 0) and np.allclose(dx[y != 0], 1 / 0.7)
    assert not np.array_equal(drop(x) == 0, y == 0)
    drop.eval()
    g = np.random.default_rng(0).standard_normal(x.shape)
    assert np.array_equal(drop(x), x) and np.array_equal(drop.backward(g), g)


def test_embedding_scatter_add_and_padding_idx(float64):
    """maths/embedding.md: dL/dW_v = sum of G_p over positions holding v (scatter-add); backward returns
    None; padding_idx's row starts at zero and never receives gradient; a negative padding_idx counts
    from the end."""
    from framework.layers import Embedding

    rng = np.random.default_rng(0)
    for padding_idx, row in ((0, 0), (-1, 5)):
        layer = Embedding(6, 3, padding_idx=padding_idx)
        x = np.array([[2, 5, 2, 0], [1, 2, 0, 5]])
        y = layer(x)
        assert np.all(layer.weight.data[row] == 0)
        G = rng.standard_normal(y.shape)
        layer.zero_grad()
        assert layer.backward(G) is None
        expected = np.eye(6)[x.reshape(-1)].T @ G.reshape(-1, 3)
        expected[row] = 0
        assert np.allclose(layer.weight.grad, expected)


# -- docs/maths/recurrent.md, docs/guide/sequences-and-graphs.md ------------------------------


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_recurrent_shapes_last_output_and_torch_parity(float64, kind):
    """sequences-and-graphs.md: states are (num_layers * D, N, H); output="last" is the final hidden state
    of the last layer, (N, D * H) (for a bidirectional layer the forward and reverse final states);
    weights have PyTorch's names and layouts, so a torch state dict loads unchanged and the outputs
    agree."""
    torch = pytest.importorskip("torch")
    layer_cls = getattr(framework.layers, kind)
    torch_cls = getattr(torch.nn, kind)
    x = np.random.default_rng(0).standard_normal((3, 5, 2))
    ours = layer_cls(2, 4, num_layers=2, bidirectional=True, batch_first=True)
    ref = torch_cls(2, 4, num_layers=2, bidirectional=True, batch_first=True).double()
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    gates = {"RNN": 1, "LSTM": 4, "GRU": 3}[kind]
    assert ours.weight_ih_l0.shape == (gates * 4, 2) and ours.weight_hh_l1_reverse.shape == (gates * 4, 4)
    out, state = ours(x)
    t_out, t_state = ref(torch.from_numpy(x))
    h_n = state[0] if kind == "LSTM" else state
    t_h = t_state[0] if kind == "LSTM" else t_state
    assert out.shape == (3, 5, 8) and h_n.shape == (4, 3, 4)
    assert np.allclose(out, t_out.detach().numpy()) and np.allclose(h_n, t_h.detach().numpy())
    last = layer_cls(2, 4, num_layers=2, bidirectional=True, batch_first=True, output="last")
    last.load_state_dict(ours.state_dict())
    assert np.allclose(last(x), np.concatenate([h_n[-2], h_n[-1]], axis=1))
    uni = layer_cls(2, 4, batch_first=True, output="last")
    both = layer_cls(2, 4, batch_first=True)
    both.load_state_dict(uni.state_dict())
    assert np.allclose(uni(x), both(x)[0][:, -1])


def test_recurrent_relu_rnn_and_chunks(float64):
    """maths/recurrent.md: RNN(nonlinearity="relu") is h_t = relu(P_t + Q_t); sequences-and-graphs.md:
    feeding each chunk's final state into the next gives the whole sequence's result."""
    from framework.layers import LSTM, RNN

    rng = np.random.default_rng(0)
    rnn = RNN(3, 4, nonlinearity="relu")
    x = rng.standard_normal((6, 2, 3))
    out, h_n = rnn(x)
    h = np.zeros((2, 4))
    for t in range(6):
        h = np.maximum(
            0,
            x[t] @ rnn.weight_ih_l0.data.T
            + rnn.bias_ih_l0.data
            + h @ rnn.weight_hh_l0.data.T
            + rnn.bias_hh_l0.data,
        )
        assert np.allclose(out[t], h)
    lstm = LSTM(3, 5, batch_first=True)
    xs = rng.standard_normal((2, 9, 3))
    whole, (h_whole, c_whole) = lstm(xs)
    first, state = lstm(xs[:, :4])
    second, (h_n, c_n) = lstm(xs[:, 4:], state)
    assert np.allclose(np.concatenate([first, second], axis=1), whole)
    assert np.allclose(h_n, h_whole) and np.allclose(c_n, c_whole)


def test_recurrent_hand_calls_twice_backward_refused():
    """sequences-and-graphs.md: calling a cell twice by hand then backward twice 'raises a ConfigError
    rather than return wrong gradients'."""
    from framework.layers import RNNCell

    cell = RNNCell(2, 3)
    x0 = np.ones((1, 2), np.float32)
    h1 = cell(x0)
    cell(x0, h1)
    cell.backward(np.ones((1, 3), np.float32))
    with pytest.raises(ConfigError, match="Context"):
        cell.backward(np.ones((1, 3), np.float32))


def test_recurrent_time_first_layer_refused_by_fit():
    """sequences-and-graphs.md: a model holding a batch_first=False layer fed (N, L, features) data is
    refused by fit with a ConfigError naming the layer; batch_first=True passes."""
    from framework.layers import LSTM

    x = np.random.default_rng(0).standard_normal((16, 5, 2)).astype(np.float32)
    y = np.zeros((16, 1), np.float32)
    bad = Sequential([LSTM(2, 4, output="last", name="seq_first"), Linear(4, 1)])
    bad.compile("adam", "mse")
    with pytest.raises(ConfigError, match="batch axis"):
        bad.fit(x, y, epochs=1, verbose=0)
    good = Sequential([LSTM(2, 4, output="last", batch_first=True), Linear(4, 1)])
    good.compile("adam", "mse")
    good.fit(x, y, epochs=1, verbose=0)


# -- docs/maths/gcn.md ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "self_loops, normalize", [(True, True), (False, True), (True, False), (False, False)]
)
def test_gcn_normalisation_options(float64, self_loops, normalize):
    """maths/gcn.md: A_hat = D^-1/2 (A + I) D^-1/2 with degrees of A + I (row sums); add_self_loops=False
    and normalize=False drop the + I and the scaling; dL/dH = A_hat^T G W, dL/dW = G^T A_hat H (dense
    and COO alike)."""
    from framework.layers import GCNConv

    rng = np.random.default_rng(0)
    edges = np.array([[0, 1, 1, 2, 3, 4, 4], [1, 0, 2, 3, 4, 0, 2]])
    A = np.zeros((5, 5))
    A[edges[0], edges[1]] = 1.0
    At = A + np.eye(5) if self_loops else A
    if normalize:
        d = At.sum(axis=1)
        inv = np.where(d > 0, 1 / np.sqrt(np.where(d > 0, d, 1)), 0.0)
        A_hat = At * np.outer(inv, inv)
    else:
        A_hat = At
    H, G = rng.standard_normal((5, 4)), rng.standard_normal((5, 3))
    for graph in (A, (edges, None)):
        layer = GCNConv(4, 3, add_self_loops=self_loops, normalize=normalize).set_graph(graph)
        Z = layer(H)
        W, b = layer.weight.data, layer.bias.data
        assert np.allclose(Z, A_hat @ H @ W.T + b)
        layer.zero_grad()
        assert np.allclose(layer.backward(G), A_hat.T @ G @ W)
        assert np.allclose(layer.weight.grad, G.T @ A_hat @ H)


# -- docs/maths/attention.md ----------------------------------------------------------------


def test_attention_masks_scale_and_safe_softmax(float64):
    """maths/attention.md: default scale 1/sqrt(D); scaled_dot_product_attention reads a boolean True as
    'take part' (PyTorch's), a fully masked row gives zeros (safe softmax) and no NaN in the gradients;
    MultiheadAttention reads True as masked, and a query with every key masked outputs out_proj's bias."""
    torch = pytest.importorskip("torch")
    from framework.layers import MultiheadAttention, ScaledDotProductAttention
    from plugins.attention import scaled_dot_product_attention

    rng = np.random.default_rng(0)
    q, k, v = (
        rng.standard_normal((2, 3, 4, 5)),
        rng.standard_normal((2, 3, 6, 5)),
        rng.standard_normal((2, 3, 6, 7)),
    )
    mask = rng.uniform(size=(4, 6)) > 0.4
    mask[1] = False
    y = scaled_dot_product_attention(q, k, v, attn_mask=mask)
    ref = torch.nn.functional.scaled_dot_product_attention(
        *(torch.from_numpy(a) for a in (q, k, v)), attn_mask=torch.from_numpy(mask)
    )
    assert np.allclose(y, ref.numpy()) and np.all(y[:, :, 1] == 0)
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(5)
    p = np.exp(scores - scores.max(-1, keepdims=True))
    assert np.allclose(scaled_dot_product_attention(q, k, v), (p / p.sum(-1, keepdims=True)) @ v)
    layer = ScaledDotProductAttention()
    out = layer([q, k, v], attn_mask=mask)
    grads = layer.backward(np.ones_like(out))
    assert all(np.all(np.isfinite(g)) for g in grads)
    mha = MultiheadAttention(8, 2, batch_first=True)
    x = rng.standard_normal((2, 4, 8))
    padding = np.zeros((2, 4), bool)
    padding[0] = True
    out = mha(x, key_padding_mask=padding)
    out = out[0] if isinstance(out, tuple) else out
    assert np.allclose(out[0], mha.out_proj.bias.data)


# -- docs/maths/initialisation.md -------------------------------------------------------------


def test_initialisation_fans_gains_and_distributions():
    """maths/initialisation.md: compute_fans for Linear (d_in, d_out) and Conv2d (C kh kw, F kh kw); the
    gain table (linear/identity/conv/sigmoid 1, tanh 5/3, ReLU sqrt 2, leaky ReLU sqrt(2/(1+a^2)) with a
    = 0.01 by default, SELU 3/4); Xavier and He normal / uniform variances and bounds; biases start at
    0."""
    from framework.base.initializer import calculate_gain, compute_fans

    assert compute_fans((6, 3, 5, 5)) == (75, 150) and compute_fans((128, 784)) == (784, 128)
    for name, gain in (
        ("linear", 1),
        ("identity", 1),
        ("conv2d", 1),
        ("sigmoid", 1),
        ("tanh", 5 / 3),
        ("relu", math.sqrt(2)),
        ("leaky_relu", math.sqrt(2 / (1 + 0.01**2))),
        ("selu", 0.75),
    ):
        assert math.isclose(calculate_gain(name), gain), name
    assert math.isclose(calculate_gain("leaky_relu", 0.2), math.sqrt(2 / 1.04))
    with pytest.raises(ConfigError):
        calculate_gain("bogus")
    rng = np.random.default_rng(0)
    n_out, n_in = 400, 300
    for name, var, bound in (
        ("xavier_normal", 2 / (n_in + n_out), None),
        ("xavier_uniform", 2 / (n_in + n_out), math.sqrt(6 / (n_in + n_out))),
        ("kaiming_normal", 2 / n_in, None),
        ("kaiming_uniform", 2 / n_in, math.sqrt(6 / n_in)),
    ):
        w = framework.initializers.get(name)((n_out, n_in), dtype=np.float64, rng=rng)
        assert abs(w.var() / var - 1) < 0.03, name
        if bound is not None:
            assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    w = framework.initializers.get("xavier_uniform")((n_out, n_in), dtype=np.float64, rng=rng, gain=5 / 3)
    assert np.abs(w).max() <= 5 / 3 * math.sqrt(6 / (n_in + n_out))
    assert framework.initializers.get("he_uniform") is not None
    layer = Linear(5, 3, activation="tanh")
    layer.build((None, 5))
    assert np.all(layer.bias.data == 0)


# -- docs/maths/optimizers.md -------------------------------------------------------------------


def _run_optimizer(name, grads, theta0, **kwargs):
    from framework.base.parameter import Parameter

    param = Parameter(theta0.copy())
    opt = framework.optimizers.get(name, **kwargs)
    opt.bind([param])
    for g in grads:
        param.zero_grad()
        param.add_grad(g.copy())
        opt.step()
    return param.data


def test_optimizer_defaults():
    """maths/optimizers.md: PyTorch's defaults: SGD lr 0.01, momentum 0, nesterov off; AdaGrad eps 1e-10,
    s_0 = 0; RMSProp alpha 0.99, eps 1e-8; Adam lr 1e-3, betas (0.9, 0.999), eps 1e-8; AdamW weight
    decay 0.01."""
    import inspect

    def defaults(name):
        return {
            k: v.default
            for k, v in inspect.signature(type(framework.optimizers.get(name))).parameters.items()
        }

    sgd, ada, rms, adam, adamw = (defaults(n) for n in ("sgd", "adagrad", "rmsprop", "adam", "adamw"))
    assert sgd["learning_rate"] == 0.01 and sgd["momentum"] == 0.0 and sgd["nesterov"] is False
    assert sgd["weight_decay"] == 0.0
    assert ada["eps"] == 1e-10 and ada["initial_accumulator_value"] == 0.0
    assert rms["alpha"] == 0.99 and rms["eps"] == 1e-8
    assert adam["learning_rate"] == 1e-3 and tuple(adam["betas"]) == (0.9, 0.999) and adam["eps"] == 1e-8
    assert adamw["weight_decay"] == 0.01
    assert framework.optimizers.get("sgd", lr=0.5).learning_rate == 0.5


def test_optimizer_update_rules(float64):
    """maths/optimizers.md: two steps of each rule as written: SGD with PyTorch's momentum and Nesterov,
    AdaGrad, RMSProp (plain and with momentum), Adam with bias correction, AdamW's decoupled decay; L2
    weight decay adds lambda theta to the gradient for every optimizer but AdamW."""
    g1, g2 = np.array([0.5, -2.0, 1e-3]), np.array([0.4, -1.0, 2e-3])
    th = np.array([1.0, -0.5, 2.0])
    lr, mu, lam = 0.1, 0.9, 0.05
    assert np.allclose(_run_optimizer("sgd", [g1, g2], th, lr=lr), th - lr * g1 - lr * g2)
    v1, v2 = g1, mu * g1 + g2
    assert np.allclose(_run_optimizer("sgd", [g1, g2], th, lr=lr, momentum=mu), th - lr * v1 - lr * v2)
    nest = th - lr * (g1 + mu * v1) - lr * (g2 + mu * v2)
    assert np.allclose(_run_optimizer("sgd", [g1, g2], th, lr=lr, momentum=mu, nesterov=True), nest)
    t1 = th - lr * (g1 + lam * th)
    t2 = t1 - lr * (g2 + lam * t1)
    assert np.allclose(_run_optimizer("sgd", [g1, g2], th, lr=lr, weight_decay=lam), t2)
    s1, s2 = g1**2, g1**2 + g2**2
    a1 = th - lr * g1 / (np.sqrt(s1) + 1e-10)
    assert np.allclose(_run_optimizer("adagrad", [g1, g2], th, lr=lr), a1 - lr * g2 / (np.sqrt(s2) + 1e-10))
    al = 0.99
    r1 = (1 - al) * g1**2
    r2 = al * r1 + (1 - al) * g2**2
    rms = th - lr * g1 / (np.sqrt(r1) + 1e-8) - lr * g2 / (np.sqrt(r2) + 1e-8)
    assert np.allclose(_run_optimizer("rmsprop", [g1, g2], th, lr=lr), rms)
    b1 = g1 / (np.sqrt(r1) + 1e-8)
    b2 = mu * b1 + g2 / (np.sqrt(r2) + 1e-8)
    assert np.allclose(_run_optimizer("rmsprop", [g1, g2], th, lr=lr, momentum=mu), th - lr * b1 - lr * b2)

    def adam(grads, theta, decay=0.0, decoupled=False, lr=1e-3):
        m = v = np.zeros_like(theta)
        for t, g in enumerate(grads, start=1):
            if decay and not decoupled:
                g = g + decay * theta
            m = 0.9 * m + 0.1 * g
            v = 0.999 * v + 0.001 * g**2
            mhat, vhat = m / (1 - 0.9**t), v / (1 - 0.999**t)
            if decoupled:
                theta = theta - lr * decay * theta
            theta = theta - lr * mhat / (np.sqrt(vhat) + 1e-8)
        return theta

    assert np.allclose(_run_optimizer("adam", [g1, g2], th), adam([g1, g2], th), rtol=1e-12)
    assert np.allclose(
        _run_optimizer("adam", [g1, g2], th, weight_decay=lam), adam([g1, g2], th, lam), rtol=1e-12
    )
    assert np.allclose(
        _run_optimizer("adamw", [g1, g2], th, weight_decay=lam), adam([g1, g2], th, lam, True), rtol=1e-12
    )
    first = _run_optimizer("adam", [g1 * 1e3], th)
    assert np.allclose(th - first, 1e-3 * np.sign(g1), rtol=1e-4)


def test_optimizer_schedules_as_documented():
    """maths/optimizers.md 'Learning-rate schedules' (evaluated at k = optimizer.iterations, 0 at the first
    step): StepDecay eta0 gamma^floor(k/T); ExponentialDecay eta0 gamma^(k/T); CosineDecay with eta_min
    = alpha eta0; WarmUp eta0 (k + 1)/T_w, then the wrapped schedule from its own step 0."""
    from framework.base.parameter import Parameter
    from framework.base.schedules import CosineDecay, ExponentialDecay, StepDecay, WarmUp

    step = StepDecay(1.0, 3, 0.5)
    assert [step(k) for k in range(7)] == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25]
    assert [ExponentialDecay(1.0, 0.5, 2)(k) for k in (0, 1, 2, 4)] == [1.0, 0.5**0.5, 0.5, 0.25]
    cos = CosineDecay(2.0, 10, alpha=0.1)
    for k in (0, 3, 10, 14):
        assert math.isclose(cos(k), 0.2 + 0.5 * 1.8 * (1 + math.cos(math.pi * min(k, 10) / 10)))
    warm = WarmUp(StepDecay(1.0, 3, 0.5), 4)
    assert [warm(k) for k in range(9)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5]
    seen = []
    param = Parameter(np.zeros(1))
    opt = SGD([param], learning_rate=lambda k: seen.append(k) or 0.1)
    for _ in range(3):
        param.add_grad(np.ones(1))
        opt.step()
        param.zero_grad()
    assert seen[:1] == [0] and sorted(set(seen)) == [0, 1, 2]


# -- docs/maths/gradient-checking.md ----------------------------------------------------------


def test_gradient_checking_defaults_and_measure(float64):
    """maths/gradient-checking.md: check_gradients uses eps = 1e-6 and requires errors below 1e-6; the
    relative error ||a - n|| / max(||a|| + ||n||, 1e-12) is 0 when equal, 1 when one is zero or they are
    opposite; a wrong backward raises ConformanceError with the report; a correct float64 backward gives
    errors around 1e-9 or below."""
    import inspect

    from framework.testing import ConformanceError, check_gradients, relative_error

    params = inspect.signature(check_gradients).parameters
    assert params["eps"].default == 1e-6 and params["tolerance"].default == 1e-6
    a = np.array([1.0, 2.0, 3.0])
    assert relative_error(a, a) == 0.0 and np.isclose(relative_error(a, -a), 1.0)
    assert np.isclose(relative_error(a, np.zeros(3)), 1.0) and relative_error(np.zeros(3), np.zeros(3)) == 0.0
    b = a + np.array([1e-3, 0, 0])
    assert np.isclose(relative_error(a, b), 1e-3 / (np.linalg.norm(a) + np.linalg.norm(b)))
    x = np.random.default_rng(1).standard_normal((3, 5))
    report = check_gradients(Linear(5, 2), x)
    assert report.ok and max(report.errors.values()) < 1e-8

    class Wrong(Linear):
        def backward(self, grad_out):
            return 0.5 * super().backward(grad_out)

    with pytest.raises(ConformanceError):
        check_gradients(Wrong(5, 2), x)
    assert issubclass(ConformanceError, FrameworkError) and issubclass(ConformanceError, AssertionError)


# -- docs/errors.md --------------------------------------------------------------------------


def test_errors_hierarchy():
    """errors.md: the tree of FrameworkError subclasses and the built-in exceptions they also derive from."""
    from framework.distributed import DistributedError
    from framework.errors import ExportError, PluginError
    from framework.testing import ConformanceError

    tree = {
        ShapeError: ValueError,
        ConfigError: ValueError,
        UnknownNameError: ConfigError,
        DataError: ValueError,
        NotBuiltError: RuntimeError,
        NotCompiledError: RuntimeError,
        DistributedError: RuntimeError,
        ConformanceError: AssertionError,
        PluginError: FrameworkError,
        CheckpointError: FrameworkError,
        ExportError: FrameworkError,
    }
    for cls, base in tree.items():
        assert issubclass(cls, FrameworkError) and issubclass(cls, base), cls
    assert framework.UnknownNameError is UnknownNameError and framework.FrameworkError is FrameworkError


def test_errors_table_examples():
    """errors.md table: backward before forward is NotBuiltError; Dropout(p=1.5) a ConfigError 'p must be a
    probability in [0, 1), got 1.5'; an unknown name an UnknownNameError listing the registered names;
    fit/evaluate before compile NotCompiledError; labels outside [0, classes), lengths that differ, an
    empty array, a non-array: DataError; a grad_out of another shape: ShapeError; a negative learning
    rate: ConfigError."""
    with pytest.raises(NotBuiltError):
        Linear(3, 2).backward(np.ones((1, 2), np.float32))
    with pytest.raises(ConfigError, match=re.escape("p must be a probability in [0, 1), got 1.5")):
        Dropout(p=1.5)
    with pytest.raises(UnknownNameError, match="Linear"):
        framework.layers.get("no_such_layer")
    with pytest.raises(UnknownNameError, match="relu"):
        Linear(3, 2, activation="rleu")
    model = Sequential([Linear(2, 2)])
    for call in (
        lambda: model.fit(np.ones((2, 2)), np.ones((2, 2)), verbose=0),
        lambda: model.evaluate(np.ones((2, 2)), np.ones((2, 2))),
    ):
        with pytest.raises(NotCompiledError):
            call()
    model.compile("sgd", "cross_entropy")
    x = np.ones((2, 2), np.float32)
    for bad_x, bad_y in (
        (x, np.array([0, 5])),
        (x, np.array([0, 1, 1])),
        (x[:0], np.array([], int)),
        ("abc", np.array([0, 1])),
    ):
        with pytest.raises(DataError):
            model.fit(bad_x, bad_y, verbose=0)
    layer = Linear(3, 2)
    layer(np.ones((1, 3), np.float32))
    with pytest.raises(ShapeError, match=r"\(1, 2\).*\(1, 3\)"):
        layer.backward(np.ones((1, 3), np.float32))
    with pytest.raises(ConfigError):
        framework.optimizers.get("sgd", learning_rate=-1)


# -- docs/plugins.md -------------------------------------------------------------------------


def test_plugins_base_class_services(float64):
    """plugins.md: the base class builds on the first call, checks later inputs and grad_out (ShapeError
    with the layer's name and both shapes), casts a grad_out of another floating dtype to the output's
    dtype, finds Parameter attributes, propagates train()/eval(); assigning a plain array to a parameter
    attribute is a ConfigError."""
    from framework import Layer, Parameter

    class Scale(Layer):
        def build(self, input_shape):
            self.weight = Parameter(np.ones(input_shape[-1], np.float32))
            super().build(input_shape)

        def forward(self, ctx, x):
            ctx.x = x
            return x * self.weight.data

        def backward(self, ctx, grad_out):
            self.weight.add_grad((grad_out * ctx.x).reshape(-1, grad_out.shape[-1]).sum(axis=0))
            return grad_out * self.weight.data

    layer = Scale(name="sc")
    assert not layer.built
    y = layer(np.ones((2, 4), np.float32))
    assert layer.built and layer.parameters() == [layer.weight]
    with pytest.raises(ShapeError, match=r"sc.*\(2, 5\)"):
        layer(np.ones((2, 5), np.float32))
    layer(np.ones((2, 4), np.float32))
    with pytest.raises(ShapeError, match=r"\(2, 4\).*\(2, 3\)"):
        layer.backward(np.ones((2, 3), np.float32))
    layer(np.ones((2, 4), np.float32))
    assert layer.backward(np.ones((2, 4), np.float64)).dtype == y.dtype == np.float32
    model = Sequential([layer])
    model.eval()
    assert not layer.training
    model.train()
    assert layer.training
    with pytest.raises(ConfigError):
        layer.weight = np.zeros(4, np.float32)


def test_plugins_context_flags():
    """plugins.md 'The per-call context': ctx.needs_input_grad is False for the first layer under fit (its
    backward may return None, still adding parameter gradients); ctx.grad_out_writable is set before
    backward; ctx.record is False under predict."""
    from framework import Layer, Parameter

    seen: dict[str, list] = {"backward": [], "record": []}

    class Scale(Layer):
        def build(self, input_shape):
            self.w = Parameter(np.ones(input_shape[-1], np.float32))
            super().build(input_shape)

        def forward(self, ctx, x):
            seen["record"].append((ctx.training, ctx.record))
            ctx.x = x
            return x * self.w.data

        def backward(self, ctx, g):
            seen["backward"].append(ctx.needs_input_grad)
            self.w.add_grad((g * ctx.x).sum(axis=0))
            return g * self.w.data if ctx.needs_input_grad else None

    first, last = Scale(), Scale()
    model = Sequential([first, Linear(2, 2), last])
    model.compile(SGD(learning_rate=0.1), "mse")
    model.fit(np.ones((4, 2), np.float32), np.zeros((4, 2), np.float32), epochs=1, verbose=0)
    assert seen["backward"] == [True, False]
    assert first.w.grad is not None and np.any(first.w.grad)
    seen["record"].clear()
    model.predict(np.ones((4, 2), np.float32))
    assert seen["record"] == [(False, False), (False, False)]


def test_plugins_older_form_adapter_refuses_second_place():
    """plugins.md 'Layers written in the older form': the adapter refuses, with a ConfigError naming the
    layer, being called at a second place of one graph; the forms are told apart by forward's first
    argument."""
    from framework import Layer

    class Old(Layer):
        def forward(self, x):
            self.x = x
            return x * 2

        def backward(self, grad_out):
            return grad_out * 2

    old = Old(name="legacy")
    assert np.array_equal(Sequential([old])(np.ones((1, 3), np.float32)), 2 * np.ones((1, 3)))
    a = Input((3,))
    again = Old(name="legacy2")
    with pytest.raises(ConfigError, match="legacy2"):
        model = Model(a, framework.layers.Add()([again(a), again(a)]))
        model(np.ones((1, 3), np.float32))


def test_plugins_blas_helpers():
    """plugins.md: blas.axpy(a, x, y) is y <- a x + y, blas.axpby(a, x, b, y) is y <- a x + b y, in place;
    backend() says which runs."""
    from framework.runtime import blas

    for dtype in (np.float32, np.float64):
        x = np.arange(5, dtype=dtype)
        y = np.ones(5, dtype)
        blas.axpy(2.0, x, y)
        assert np.array_equal(y, 2 * np.arange(5) + 1)
        y = np.ones(5, dtype)
        blas.axpby(2.0, x, 3.0, y)
        assert np.array_equal(y, 2 * np.arange(5) + 3)
    assert isinstance(blas.backend(), str)


def test_plugins_registry_rules():
    """plugins.md: register(obj, name=None, aliases=()) with case and _ ignored; two plugins registering
    one name is a PluginError naming both distributions; check_gradients raises ConformanceError when an
    error exceeds 1e-6."""
    import types

    from framework import Layer, hookimpl
    from framework.errors import PluginError
    from framework.registry.manager import Registry

    class Thing(Layer):
        pass

    class Other(Layer):
        pass

    first, second = types.ModuleType("first_plugin"), types.ModuleType("second_plugin")
    first.register_layers = hookimpl(lambda register: register(Thing, aliases=("my_alias",)))
    second.register_layers = hookimpl(lambda register: register(Other, name="THING"))
    registry = Registry()
    registry.register_plugin(first, distribution="dist-one", version="1.0")
    assert registry.get("layers", "thing") is Thing and registry.get("layers", "My_Alias") is Thing
    with pytest.raises(PluginError) as info:
        registry.register_plugin(second, distribution="dist-two", version="2.0")
        registry.get("layers", "thing")
    assert "dist-one" in str(info.value) and "dist-two" in str(info.value)


# -- docs/guide/shared-layers.md --------------------------------------------------------------


def test_shared_layers_claims():
    """shared-layers.md: a siamese model over one tower has the tower's 4 parameters once; tied weights
    appear once in named_parameters (['embed.weight']) and count_params (120); a tied parameter is
    stepped once with the sum of both layers' gradients."""
    from framework.layers import Embedding, Subtract

    tower = Sequential([Linear(5, 8, activation="tanh"), Linear(8, 3)], name="tower")
    left, right = Input((5,), name="left"), Input((5,), name="right")
    siamese = Model([left, right], Subtract()([tower(left), tower(right)]))
    assert len(siamese.parameters()) == 4
    tokens = Input((4,), name="tokens")
    embed = Embedding(20, 6, name="embed")
    head = Linear(6, 20, bias=False, name="head")
    head.weight = embed.weight
    lm = Model(tokens, head(embed(tokens)))
    assert [name for name, _ in lm.named_parameters()] == ["embed.weight"]
    assert lm.count_params() == 120
    lm.compile(SGD(learning_rate=0.1), "mse")
    ids = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    before = embed.weight.data.copy()
    lm.train_on_batch(ids, np.ones((2, 4, 20), np.float32))
    grad = embed.weight.grad.copy()
    assert np.allclose(embed.weight.data, before - 0.1 * grad)
    assert lm.optimizer.params.count(embed.weight) == 1


def test_shared_layers_threads_predict():
    """shared-layers.md 'Threads': predict from several threads at once gives the same results and changes
    no flag."""
    import threading

    model = Sequential([Linear(16, 32, activation="relu"), Dropout(0.5), Linear(32, 4)])
    model.build((None, 16))
    x = np.random.default_rng(1).standard_normal((64, 16)).astype(np.float32)
    expected = model.predict(x)
    results: list[bool] = []
    threads = [
        threading.Thread(target=lambda: results.append(np.array_equal(model.predict(x), expected)))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 4 and model.training


# -- docs/guide/distributed.md ------------------------------------------------------------------


def test_distributed_single_process_api():
    """distributed.md: without mpiexec size() is 1 and mpi4py is not imported; the functions
    init(timeout=None), rank(), size(), local_rank(), is_main(), barrier(), allreduce(array, op="mean")
    ("sum", "max", "min"), broadcast(obj_or_array, root=0); DistributedOptimizer(bucket_mb=32);
    ModelCheckpoint, CSVLogger and TensorBoard run on rank 0 only; launched by an MPI launcher without
    mpi4py, init() raises DistributedError naming the extra."""
    import inspect
    import subprocess
    import sys

    from support import subprocess_env

    from framework import distributed
    from framework.distributed import DistributedOptimizer
    from framework.training.callbacks import CSVLogger, EarlyStopping, ModelCheckpoint, TensorBoard

    assert _fresh_interpreter()["distributed"] == ["1", "False"]  # a fresh interpreter, no mpiexec
    assert inspect.signature(distributed.init).parameters["timeout"].default is None
    assert inspect.signature(distributed.allreduce).parameters["op"].default == "mean"
    assert inspect.signature(distributed.broadcast).parameters["root"].default == 0
    assert inspect.signature(DistributedOptimizer).parameters["bucket_mb"].default == 32
    assert distributed.rank() == 0 and distributed.local_rank() == 0 and distributed.is_main()
    distributed.barrier()
    for op in ("mean", "sum", "max", "min"):
        assert np.array_equal(distributed.allreduce(np.array([1.0, 2.0]), op=op), [1.0, 2.0])
    assert distributed.broadcast({"a": 1}) == {"a": 1}
    assert ModelCheckpoint.main_process_only and CSVLogger.main_process_only and TensorBoard.main_process_only
    assert not getattr(EarlyStopping, "main_process_only", False)
    code = (
        "import sys; sys.modules['mpi4py'] = None\n"
        "from framework import distributed\n"
        "try:\n    distributed.init()\nexcept distributed.DistributedError as e:\n    print('refused', e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
        env=subprocess_env(clean=True, PMI_SIZE="2", PMI_RANK="0"),
    )
    assert out.stdout.startswith("refused") and "distributed" in out.stdout


# -- docs/security.md ------------------------------------------------------------------------


@requires_h5py
def test_security_refusals(tmp_path):
    """security.md: soft and external links are refused with a CheckpointError naming the path; a negative
    running variance or second moment, an unexpected or a missing dataset, a newer format version are
    refused; loading leaves the global generator alone and keeps the state in model.training_state
    ({"epoch", "rng", ...}) until restore_rng_state(model)."""
    import shutil

    import h5py

    from framework.saving.checkpoint import restore_rng_state

    model = _bn_model()
    x, y = _xy(8)
    model.compile("adam", "mse")
    model.fit(x, y, epochs=1, verbose=0)
    src = tmp_path / "s.h5"
    model.save(src)

    def soft(f):
        del f["weights/linear/bias"]
        f["weights/linear/bias"] = h5py.SoftLink("/weights/batch_norm/bias")

    def external(f):
        del f["weights/linear/bias"]
        f["weights/linear/bias"] = h5py.ExternalLink(str(tmp_path / "other.h5"), "/x")

    mutations = {
        "soft link": soft,
        "external link": external,
        "must be finite and >= 0": lambda f: f["weights/batch_norm/running_var"].__setitem__(0, -1.0),
        "second moment": lambda f: f["optimizer/slots/linear/weight/exp_avg_sq"].__setitem__((0, 0), -1.0),
        "unexpected": lambda f: f.create_dataset("weights/linear/extra", data=np.zeros(3, np.float32)),
        "missing": lambda f: f.__delitem__("weights/linear/bias"),
        "newer": lambda f: f.attrs.__setitem__("format_version", 2),
    }
    for i, (expected, mutate) in enumerate(mutations.items()):
        path = tmp_path / f"m{i}.h5"
        shutil.copy(src, path)
        with h5py.File(path, "r+") as handle:
            mutate(handle)
        with pytest.raises(CheckpointError, match=expected):
            framework.load_model(path)
    framework.set_seed(5)
    state_before = framework.get_rng().bit_generator.state
    restored = framework.load_model(src)
    assert framework.get_rng().bit_generator.state == state_before
    assert {"epoch", "rng"} <= set(restored.training_state) and restored.training_state["epoch"] == 1
    restore_rng_state(restored)
    assert framework.get_rng().bit_generator.state != state_before


# -- training.md 'Several threads per batch', plugin-walkthrough.md ------------------------------


def test_threads_equal_one_thread_and_refuse_mixing(float64):
    """training.md: 'A float64 run with threads=2 or 3 equals the one-thread run to 1e-12' (BatchNorm
    statistics of the whole batch); predict(threads=K) equals predict; a model whose outputs for the
    whole batch are not its shards' joined is refused with a ConfigError."""
    from framework import Layer
    from framework.layers import BatchNorm

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((48, 3)), rng.standard_normal((48, 2))

    def make(opt):
        framework.set_seed(0)
        model = Sequential([Linear(3, 8, activation="relu"), BatchNorm(8), Linear(8, 2)])
        model.compile(opt, "mse")
        return model

    for opt in ("sgd", "adam"):
        one, two, three = make(opt), make(opt), make(opt)
        one.fit(x, y, epochs=2, batch_size=16, seed=1, verbose=0)
        two.fit(x, y, epochs=2, batch_size=16, seed=1, verbose=0, threads=2)
        three.fit(x, y, epochs=2, batch_size=16, seed=1, verbose=0, threads=3)
        for other in (two, three):
            for a, b in zip(one.get_weights(), other.get_weights()):
                assert np.allclose(a, b, rtol=0, atol=1e-12)
    assert np.array_equal(one.predict(x, threads=2), one.predict(x))

    class Mix(Layer):
        def forward(self, ctx, x):
            return x - x.mean(axis=0, keepdims=True)

        def backward(self, ctx, grad_out):
            return grad_out - grad_out.mean(axis=0, keepdims=True)

    mixing = Sequential([Linear(3, 4), Mix(), Linear(4, 2)])
    mixing.compile("sgd", "mse")
    with pytest.raises(ConfigError, match="threads=2"):
        mixing.fit(x, y, epochs=1, threads=2, verbose=0)


def test_plugin_walkthrough_old_import_paths_warn():
    """plugin-walkthrough.md note: the example's older module paths still work, each with a
    DeprecationWarning naming the new place (framework.base.initializer, framework.base.loss,
    framework.base.optimizer)."""
    import importlib
    import sys

    for old, new in (
        ("framework.initializer", "framework.base.initializer"),
        ("framework.loss", "framework.base.loss"),
        ("framework.optimizer", "framework.base.optimizer"),
        ("framework.dtype", "framework.runtime.dtype"),
    ):
        sys.modules.pop(old, None)
        with pytest.warns(DeprecationWarning, match=new):
            module = importlib.import_module(old)
        assert module is importlib.import_module(new)
    assert framework.Loss is importlib.import_module("framework.base.loss").Loss


@requires_h5py
def test_checkpoint_callback_states_resume(tmp_path):
    """checkpoints.md: the first fit(initial_epoch=model.epoch) after loading hands each saved callback
    state to the callback of the same class, after on_train_begin; a state recorded for another monitor
    is left out with a warning."""
    from framework.training.callbacks import EarlyStopping, LambdaCallback

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((32, 3)).astype(np.float32), rng.standard_normal((32, 1)).astype(np.float32)
    model = Sequential([Linear(3, 1)])
    model.compile("adam", "mse")
    stop = EarlyStopping(monitor="loss", patience=5)
    model.fit(x, y, epochs=3, verbose=0, callbacks=[stop])
    model.save(tmp_path / "es.h5")
    restored = framework.load_model(tmp_path / "es.h5")
    again = EarlyStopping(monitor="loss", patience=5)
    seen: list[float] = []
    restored.fit(
        x,
        y,
        epochs=4,
        initial_epoch=restored.epoch,
        verbose=0,
        callbacks=[again, LambdaCallback(on_epoch_begin=lambda epoch, logs: seen.append(again.best))],
    )
    assert seen == [stop.best]
    other = framework.load_model(tmp_path / "es.h5")
    fresh = EarlyStopping(monitor="val_loss", patience=5)
    with pytest.warns(RuntimeWarning, match="afresh"):
        other.fit(
            x, y, epochs=4, initial_epoch=other.epoch, verbose=0, validation_split=0.25, callbacks=[fresh]
        )


@pytest.mark.parametrize(
    "script, pattern, row",
    [
        ("spirals.py", r"test accuracy ([\d.]+)", r"`examples/spirals.py` \|[^|]*\| ([\d.]+)% test accuracy"),
        (
            "regression_mlp.py",
            r"test MSE ([\d.]+)",
            r"`examples/regression_mlp.py` \|[^|]*\| test MSE ([\d.]+)",
        ),
    ],
)
def test_readme_example_results_quick_scripts(tmp_path, monkeypatch, capsys, script, pattern, row):
    """README 'Examples' table: the seeded results of the two examples that run in about a second (spirals:
    98.3% test accuracy; regression: test MSE 0.0103), within one test sample / 2% for another BLAS's
    rounding. The script runs with its defaults as ``python examples/<script> --output DIR`` runs it, in
    this process (its folder first on sys.path, BLAS on one thread as the script asks);
    tests/test_examples.py starts one example in its own interpreter."""
    pytest.importorskip("h5py", reason="the examples save an HDF5 checkpoint (h5py, a run-time dependency)")
    stdout = run_script(ROOT / "examples" / script, ["--output", str(tmp_path)], monkeypatch, capsys)
    measured = float(re.search(pattern, stdout).group(1))
    quoted = float(re.search(row, (ROOT / "README.md").read_text()).group(1))
    if script == "spirals.py":
        assert abs(measured * 100 - quoted) <= 100 / 300 + 0.05
    else:
        assert abs(measured - quoted) <= 0.02 * quoted


def test_training_iterable_checked_per_batch_and_multi_output_weights(float64):
    """training.md: batch iterables are checked batch by batch (a NaN is a DataError naming the batch); for
    several outputs sample_weight is a list or a dict keyed by output name, 'outputs left out are
    unweighted'."""
    model = Sequential([Linear(2, 1)])
    model.compile("sgd", "mse")
    x = np.ones((8, 2))
    bad = x.copy()
    bad[5, 1] = np.nan
    with pytest.raises(DataError, match=re.escape("batch 1 of the iterable contains nan at index (1, 1)")):
        model.fit([(x[:4], np.ones((4, 1))), (bad[4:], np.ones((4, 1)))], epochs=1, verbose=0)
    a = Input((3,), name="a")
    two = Model(a, [Linear(3, 1, name="o1")(a), Linear(3, 1, name="o2")(a)])
    two.compile(SGD(learning_rate=0.0), ["mse", "mse"])
    rng = np.random.default_rng(0)
    xs, y1, y2 = rng.standard_normal((6, 3)), rng.standard_normal((6, 1)), rng.standard_normal((6, 1))
    p1, p2 = two.predict(xs)
    w = np.array([1, 0, 2, 0, 1, 1.0])
    for weights in ({"o1": w}, [w, None]):
        scores = two.evaluate(xs, [y1, y2], sample_weight=weights, verbose=0)
        assert np.isclose(scores["o1_loss"], np.sum(w * (p1 - y1)[:, 0] ** 2) / 6)
        assert np.isclose(scores["o2_loss"], np.mean((p2 - y2) ** 2))


def test_interchange_identity_activation_takes_no_position():
    """interchange.md: a fused activation takes a second position in the PyTorch naming; 'an identity
    activation takes none'."""
    model = Sequential([Linear(4, 8, activation="identity"), Linear(8, 3, activation="tanh"), Linear(3, 2)])
    model.build((None, 4))
    assert sorted(model.state_dict(format="torch")) == [
        "0.bias",
        "0.weight",
        "1.bias",
        "1.weight",
        "3.bias",
        "3.weight",
    ]


def test_training_steps_per_epoch_carries_on_and_restarts_a_list():
    """training.md: 'steps_per_epoch=k reads k batches per epoch, carrying on from where the last epoch
    stopped; a list or re-iterable starts a new pass when it ends'; evaluate(steps=) and predict(steps=)
    do the same."""
    from framework import Layer

    seen: list[float] = []

    class Spy(Layer):
        def forward(self, ctx, x):
            if ctx.training:
                seen.append(float(x[0, 0]))
            return x

        def backward(self, ctx, grad_out):
            return grad_out

    model = Sequential([Spy(), Linear(2, 1)])
    model.compile("sgd", "mse")
    batches = [(np.full((2, 2), float(i), np.float32), np.zeros((2, 1), np.float32)) for i in range(3)]
    model.fit(batches, epochs=2, steps_per_epoch=2, verbose=0)
    assert seen == [0.0, 1.0, 2.0, 0.0]
    assert model.predict((b[0] for b in batches), steps=2).shape == (4, 1)
    two = model.evaluate(batches, steps=2, verbose=0)["loss"]
    assert np.isclose(two, model.evaluate(batches[:2], verbose=0)["loss"])


@requires_h5py
def test_checkpoint_shared_layer_rebuilt_once(tmp_path):
    """checkpoints.md / shared-layers.md: 'a layer called at several places of a graph is rebuilt once';
    load_model rebuilds the siamese tower shared."""
    from framework.layers import Subtract

    tower = Sequential([Linear(5, 8, activation="tanh"), Linear(8, 3)], name="tower")
    left, right = Input((5,), name="left"), Input((5,), name="right")
    siamese = Model([left, right], Subtract()([tower(left), tower(right)]))
    siamese.compile("adam", "mse")
    siamese.build([(None, 5), (None, 5)])
    siamese.save(tmp_path / "s.h5")
    restored = framework.load_model(tmp_path / "s.h5")
    assert len(restored.parameters()) == 4
    assert [layer.name for layer in restored.layers].count("tower") == 1
    a = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    assert np.array_equal(restored.predict([a, 2 * a]), siamese.predict([a, 2 * a]))


def test_onnx_import_float_type_and_batchnorm_momentum(tmp_path):
    """onnx.md 'Import': layers are built in the file's float type (a float64 file gives a float64 model,
    the default dtype back afterwards); BatchNormalization's momentum is read as PyTorch's 1 - momentum
    (a round trip keeps it); the file holds the model in inference form (Dropout removed, BatchNorm on
    running statistics)."""
    pytest.importorskip("onnx")
    import framework.onnx
    from framework.layers import BatchNorm

    old = framework.get_default_dtype()
    framework.set_default_dtype("float64")
    try:
        model = Sequential(
            [Linear(3, 4), BatchNorm(4, momentum=0.3), Dropout(0.5), Linear(4, 2)], input_shape=(3,)
        )
    finally:
        framework.set_default_dtype(old)
    model.layers[1].running_mean.data[:] = [0.5, -1.0, 2.0, 0.1]
    framework.onnx.export(model, tmp_path / "f64.onnx")
    loaded = framework.onnx.load(tmp_path / "f64.onnx")
    assert framework.get_default_dtype() == old
    assert all(p.data.dtype == np.float64 for p in loaded.parameters())
    bns = [layer for layer in loaded.layers if isinstance(layer, BatchNorm)]
    assert len(bns) == 1 and np.isclose(bns[0].momentum, 0.3)
    assert not any(isinstance(layer, Dropout) for layer in loaded.layers)
    x = np.random.default_rng(0).standard_normal((5, 3))
    assert np.allclose(loaded.predict(x), model.predict(x))


def test_getting_started_extras_and_cli_plugins(capsys):
    """getting-started.md / README: Python 3.10 or later; the data extra brings scikit-learn, plot
    matplotlib, onnx onnx and onnxruntime, safetensors, distributed mpi4py and mpich, tensorboard
    tensorboardX; dev has pytest, hypothesis, ruff and mkdocs; `python -m framework plugins` lists each
    plugin, its version and what it registers."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.10"
    extras = {k: " ".join(v) for k, v in project["optional-dependencies"].items()}
    assert "scikit-learn" in extras["data"] and "matplotlib" in extras["plot"]
    assert (
        "onnx" in extras["onnx"]
        and "onnxruntime" in extras["onnx"]
        and "safetensors" in extras["safetensors"]
    )
    assert "mpi4py" in extras["distributed"] and "mpich" in extras["distributed"]
    assert "tensorboardX" in extras["tensorboard"]
    for tool in ("pytest", "hypothesis", "ruff", "mkdocs"):
        assert tool in extras["dev"]
    from framework.cli.main import main  # what ``python -m framework`` runs (tests/test_cli.py starts it)

    capsys.readouterr()
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0].split()
    assert header == ["distribution", "version", "plugin", "registers"]
    assert re.search(
        r"^framework\s+" + re.escape(framework.__version__) + r"\s+core\s+layers: .*Linear", out, re.M
    )


@requires_h5py
def test_checkpoint_format_allowed_storage(tmp_path):
    """checkpoint-format.md 'HDF5 features a valid checkpoint may use': chunked datasets filtered by
    deflate, shuffle, fletcher32 or LZF load; another filter (scale-offset) and a resizable (maxshape)
    dataset are refused with a CheckpointError naming the dataset."""
    import shutil

    import h5py

    model = Sequential([Linear(20, 30)])
    model.compile("sgd", "mse")
    model.build((None, 20))
    model.save(tmp_path / "f.h5")

    def rewrite(name, **kwargs):
        path = tmp_path / f"{name}.h5"
        shutil.copy(tmp_path / "f.h5", path)
        with h5py.File(path, "r+") as handle:
            old = handle["weights/linear/weight"]
            data, attrs = old[...], dict(old.attrs)
            del handle["weights/linear/weight"]
            new = handle.create_dataset("weights/linear/weight", data=data, **kwargs)
            for key, value in attrs.items():
                new.attrs[key] = value
        return path

    for name, kwargs in (
        ("lzf", {"compression": "lzf"}),
        ("all", {"compression": "gzip", "shuffle": True, "fletcher32": True}),
        ("chunked", {"chunks": (30, 20)}),
    ):
        framework.load_model(rewrite(name, **kwargs))
    for name, kwargs in (("scaleoffset", {"scaleoffset": 10}), ("resizable", {"maxshape": (None, 20)})):
        with pytest.raises(CheckpointError, match="/weights/linear/weight"):
            framework.load_model(rewrite(name, **kwargs))


def test_training_compile_takes_names_classes_instances():
    """training.md: compile takes registered names, classes or instances (an instance to set
    hyperparameters)."""
    from framework.optimizers import Adam

    model = Sequential([Linear(2, 1)])
    model.compile(Adam, type(framework.losses.get("mse")), metrics=[type(framework.metrics.get("mae"))])
    assert isinstance(model.optimizer, Adam) and model.optimizer.learning_rate == 1e-3
    model.compile(Adam(learning_rate=3e-4), "mse", metrics=["mae"])
    assert model.optimizer.learning_rate == 3e-4
    scores = model.evaluate(np.ones((4, 2), np.float32), np.zeros((4, 1), np.float32), verbose=0)
    assert list(scores) == ["loss", "mae"]


def test_char_transformer_corpus_size():
    """results/char-transformer.md: the fortunes text, joined as examples/char_transformer.py joins it, is
    2,561,395 characters with a vocabulary of 113 (Debian's fortunes package as installed here)."""
    from framework.datasets import load_fortunes

    try:
        texts = load_fortunes()
    except FrameworkError:
        pytest.skip("the Debian fortunes files are not installed")
    text = "\n\n".join(texts)
    if len(text) != 2_561_395:
        pytest.skip(f"another version of the fortunes package ({len(text):,} characters)")
    assert len(set(text)) == 113


def test_threads_zero_gradient_drift_is_bounded(float64):
    """training.md: where exact gradients stay zero for several parameters together (an output bias and the
    BatchNorm shift before it, targets of mean zero), the threads=2 and one-thread runs 'can drift apart, in
    those parameters by up to the learning rate per step'."""
    from framework.layers import BatchNorm

    x = np.random.default_rng(0).standard_normal((32, 2))
    y = np.zeros((32, 2))

    def make():
        framework.set_seed(0)
        model = Sequential([Linear(2, 8, activation="relu"), BatchNorm(8), Linear(8, 2)])
        model.compile("adam", "mse")
        return model

    one, two = make(), make()
    one.fit(x, y, epochs=2, batch_size=16, seed=1, verbose=0)
    two.fit(x, y, epochs=2, batch_size=16, seed=1, verbose=0, threads=2)
    steps, lr = 4, 1e-3
    for (name, _), a, b in zip(one.named_weights(), one.get_weights(), two.get_weights()):
        limit = 2 * steps * lr if name in ("linear_1.bias", "batch_norm.bias") else 1e-6
        assert np.abs(a - b).max() <= limit, name
