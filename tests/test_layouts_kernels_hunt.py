"""Hunt: the speed paths (batch-last runs, compiled kernels) must never change what a model computes.

Each test runs the same model with the batch-last runs off (``"never"``) and on
(``"always"``, and ``"auto"`` with the kernels), with the compiled kernels off
and on where numba is installed, and compares outputs, input gradients,
parameter gradients, BatchNorm's running statistics and training losses; or
checks that a path raises the same error as the public-layout path.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from support import requires_numba

import framework
from framework import Input, Model, Sequential
from framework.errors import ShapeError
from framework.layers import (
    Add,
    AvgPool2d,
    BatchNorm,
    Concatenate,
    Conv2d,
    Dropout,
    Flatten,
    GlobalAvgPool2d,
    LayerNorm,
    Linear,
    MaxPool2d,
    ReLU,
    Sigmoid,
)
from framework.models import layouts
from framework.runtime import jit

try:
    import numba  # noqa: F401

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - the jit extra is optional
    HAVE_NUMBA = False

#: (layouts mode, compiled kernels) of each path; the first is the reference
PATHS = [("never", False), ("always", False)]
if HAVE_NUMBA:
    PATHS += [("never", True), ("always", True), ("auto", True)]
ENGINES = [False, pytest.param(True, marks=requires_numba)]


@pytest.fixture(autouse=True)
def _restore_dtype():
    yield
    framework.set_default_dtype(np.float32)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _step(model, x, mode, engine, training=True):
    """One forward/backward of a copy of ``model``: (outputs, dx, parameter grads, buffers)."""
    m = copy.deepcopy(model)
    m.train(training)
    with layouts.using(mode), jit.using(engine):
        m.zero_grad()
        y = m.forward(x)
        ys = y if isinstance(y, list) else [y]
        gs = [_rng(1).standard_normal(a.shape).astype(a.dtype) for a in ys]
        dx = m.backward(gs if isinstance(y, list) else gs[0])
    grads = {n: p.grad.copy() for n, p in m.named_parameters() if p.grad is not None}
    buffers = {n: np.asarray(b.data).copy() for n, b in m.named_buffers()}
    return ys, dx if isinstance(dx, list) else [dx], grads, buffers


def _close(a, b, what):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, f"{what}: shape {b.shape} != {a.shape}"
    tol = 1e-10 if a.dtype == np.float64 else 2e-5
    scale = max(1.0, float(np.abs(a).max()) if a.size else 1.0)
    np.testing.assert_allclose(b, a, rtol=0, atol=tol * scale, err_msg=what)


def _assert_all_paths_agree(model, x, training=True):
    ref = _step(model, x, *PATHS[0], training)
    for mode, engine in PATHS[1:]:
        got = _step(model, x, mode, engine, training)
        tag = f"layouts={mode} jit={engine}"
        for i, (a, b) in enumerate(zip(ref[0], got[0])):
            _close(a, b, f"{tag} output {i}")
        for i, (a, b) in enumerate(zip(ref[1], got[1])):
            if a is None or b is None:
                assert a is None and b is None, f"{tag} dx {i}"
            else:
                _close(a, b, f"{tag} dx {i}")
        assert ref[2].keys() == got[2].keys()
        for k in ref[2]:
            _close(ref[2][k], got[2][k], f"{tag} grad {k}")
        for k in ref[3]:
            _close(ref[3][k], got[3][k], f"{tag} buffer {k}")


# -- bugs: the batch-last path skips the input checks of the public path -------------------------


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("pool", [MaxPool2d, AvgPool2d])
def test_a_pool_in_a_run_refuses_an_input_smaller_than_its_window(engine, pool):
    # spatial sizes unknown at build time: the public layout raises ShapeError on a 1-row image,
    # the batch-last pool (pool_base._MaxPool/_AvgPool.forward_batch_last) returns an empty array
    i = Input((3, None, None))
    model = Model(i, pool(2)(Conv2d(3, 4, 1)(i)))
    x = _rng().standard_normal((2, 3, 1, 4)).astype(np.float32)
    with layouts.using("never"), jit.using(engine), pytest.raises(ShapeError):
        model.predict(x)
    with layouts.using("always"), jit.using(engine), pytest.raises(ShapeError):
        model.predict(x)  # actual: an output of shape (2, 4, 0, 2), no error


@pytest.mark.parametrize("engine", ENGINES)
def test_a_sequential_run_refuses_a_too_small_image_as_the_public_layout_does(engine):
    model = Sequential([Conv2d(3, 4, 3, padding=1), MaxPool2d(2), Flatten()])
    model.build((None, 3, None, None))
    x = _rng().standard_normal((2, 3, 1, 6)).astype(np.float32)
    with layouts.using("never"), jit.using(engine), pytest.raises(ShapeError):
        model.predict(x)
    with layouts.using("always"), jit.using(engine), pytest.raises(ShapeError):
        model.predict(x)  # actual: an output of shape (2, 0)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_run_opening_conv_refuses_the_wrong_channel_count_with_a_shape_error(engine):
    # public layout: ShapeError "Conv2d layer 'conv2d' expected input of shape (None, 3, None, None)";
    # batch-last (conv_batch_last.forward_batch_last): a raw NumPy ValueError from matmul
    model = Sequential([Conv2d(3, 4, 3, padding=1), ReLU(), MaxPool2d(2), Flatten()])
    model.build((None, 3, None, None))
    x = _rng().standard_normal((2, 5, 4, 4)).astype(np.float32)
    with layouts.using("never"), jit.using(engine), pytest.raises(ShapeError):
        model.predict(x)
    with layouts.using("always"), jit.using(engine), pytest.raises(ShapeError):
        model.predict(x)


# -- what agrees -----------------------------------------------------------------------------------


def _cnn():
    return Sequential(
        [
            Conv2d(3, 8, 3, padding=1),
            BatchNorm(8, momentum=None),
            ReLU(),
            MaxPool2d(2),
            Conv2d(8, 8, 3, dilation=(1, 2), stride=(2, 1), bias=False),
            BatchNorm(8, affine=False),
            Sigmoid(),
            AvgPool2d(2),
        ]
    )


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sequential_runs_agree_on_odd_sizes_and_batch_one(training, dtype):
    framework.set_default_dtype(dtype)
    framework.set_seed(3)
    model = _cnn()
    model.build((None, 3, 11, 13))
    for n in (1, 3):
        x = _rng(n).standard_normal((n, 3, 11, 13)).astype(dtype)
        _assert_all_paths_agree(model, x, training)


@pytest.mark.parametrize(
    "layout",
    ["fortran", "negative", "strided", "transposed", "float64_into_float32", "readonly"],
)
def test_runs_agree_on_unusual_input_arrays(layout):
    framework.set_seed(3)
    model = _cnn()
    model.build((None, 3, 10, 12))
    base = _rng().standard_normal((8, 3, 20, 12)).astype(np.float32)
    x = {
        "fortran": np.asfortranarray(base[:4, :, :10]),
        "negative": base[:4, ::-1, 10::-1][:, :, :10],
        "strided": base[::2, :, ::2],
        "transposed": np.ascontiguousarray(base[:4, :, :10].transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2),
        "float64_into_float32": base[:4, :, :10].astype(np.float64),
        "readonly": np.array(base[:4, :, :10]),
    }[layout]
    if layout == "readonly":
        x.setflags(write=False)
    _assert_all_paths_agree(model, x)


def _functional(kind: str) -> Model:
    i = Input((4, 10, 12))
    if kind == "skip":  # a conv output used twice: the run must stop there
        c = Conv2d(4, 4, 3, padding=1)(i)
        b = Conv2d(4, 4, 3, padding=1)(ReLU()(c))
        return Model(i, MaxPool2d(2)(Conv2d(4, 3, 3, padding=1)(Add()([c, b]))))
    if kind == "outputs":  # a value inside a would-be run is also a model output
        a = BatchNorm(4)(Conv2d(4, 4, 3, padding=1)(i))
        p = MaxPool2d(2)(ReLU()(a))
        return Model(i, [Conv2d(4, 4, 3)(p), a, p])
    if kind == "concat":
        a = MaxPool2d(2)(ReLU()(Conv2d(4, 4, 3, padding=1)(i)))
        b = AvgPool2d(2)(Conv2d(4, 5, 3, padding=1)(i))
        return Model(i, MaxPool2d(2)(Conv2d(9, 3, 1)(Concatenate(axis=1)([a, b]))))
    if kind == "shared":  # one conv and one BatchNorm called three and two times inside one run
        conv, bn = Conv2d(4, 4, 3, padding=1), BatchNorm(4)
        h = conv(bn(ReLU()(conv(bn(conv(i))))))
        return Model(i, MaxPool2d(2)(h))
    if kind == "pinned":  # a BatchNorm pinned to training inside a run
        h = BatchNorm(4)(Conv2d(4, 4, 3, padding=1)(i), training=True)
        h = Dropout(0.0)(Conv2d(4, 4, 3)(h))
        return Model(i, MaxPool2d(2)(Conv2d(4, 4, 1)(h)))
    if kind == "nested":  # a Sequential with its own run called twice
        inner = Sequential([Conv2d(4, 4, 3, padding=1), BatchNorm(4), ReLU(), Conv2d(4, 4, 1)])
        return Model(i, MaxPool2d(2)(inner(inner(i))))
    raise AssertionError(kind)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("kind", ["skip", "outputs", "concat", "shared", "pinned", "nested"])
def test_functional_graphs_agree(kind, training):
    framework.set_default_dtype(np.float64)
    framework.set_seed(3)
    model = _functional(kind)
    x = _rng().standard_normal((3, 4, 10, 12))
    _assert_all_paths_agree(model, x, training)


def test_inputs_outputs_and_gradients_are_not_overwritten_by_later_calls():
    framework.set_seed(3)
    for mode, engine in PATHS:
        model = Sequential([Conv2d(3, 8, 3, padding=1), BatchNorm(8), ReLU(), MaxPool2d(2), Conv2d(8, 4, 3)])
        model.build((None, 3, 10, 12))
        with layouts.using(mode), jit.using(engine):
            x1 = _rng(1).standard_normal((4, 3, 10, 12)).astype(np.float32)
            x1_copy = x1.copy()
            y1 = model.forward(x1)
            y1_copy = y1.copy()
            g1 = _rng(2).standard_normal(y1.shape).astype(np.float32)
            g1_copy = g1.copy()
            dx1 = model.backward(g1)
            dx1_copy = dx1.copy()
            y2 = model.forward(_rng(3).standard_normal((4, 3, 10, 12)).astype(np.float32))
            model.backward(_rng(4).standard_normal(y2.shape).astype(np.float32))
            model.predict(x1)
        for a, b, what in ((x1, x1_copy, "x"), (g1, g1_copy, "g"), (y1, y1_copy, "y"), (dx1, dx1_copy, "dx")):
            assert np.array_equal(a, b), f"{mode}/{engine}: {what} changed"


def _trained(mode, engine, threads, frozen):
    framework.set_seed(7)
    model = Sequential(
        [
            Conv2d(3, 4, 3, padding=1),
            MaxPool2d(2),
            BatchNorm(4),
            ReLU(),
            Conv2d(4, 4, 3, padding=1),
            BatchNorm(4),
            MaxPool2d(2),
            Flatten(),
            Linear(4, 3),
        ]
    )
    model.build((None, 3, 4, 4))
    if frozen:
        model.layers[0].trainable = False
    x = _rng(5).standard_normal((11, 3, 4, 4))
    y = _rng(6).integers(0, 3, 11)
    with layouts.using(mode), jit.using(engine):
        model.compile(optimizer=framework.optimizers.get("sgd", learning_rate=0.1), loss="cross_entropy")
        history = model.fit(x, y, epochs=2, batch_size=5, shuffle=False, verbose=0, threads=threads)
        prediction = model.predict(x)
    state = {k: np.asarray(v, dtype=float) for k, v in model.state_dict().items()}
    return np.array(history.history["loss"]), prediction, state


@pytest.mark.parametrize("frozen", [False, True])
@pytest.mark.parametrize("threads", [None, 2])
def test_fit_over_several_steps_agrees_in_float64(threads, frozen):
    # shards of 3 and 2 (and 1 and 1): BatchNorm's rows on 2x2 / 1x1 maps straddle the kernels' 8
    framework.set_default_dtype(np.float64)
    ref = _trained(*PATHS[0], threads, frozen)
    for mode, engine in PATHS[1:]:
        got = _trained(mode, engine, threads, frozen)
        np.testing.assert_allclose(got[0], ref[0], rtol=0, atol=1e-10)
        np.testing.assert_allclose(got[1], ref[1], rtol=0, atol=1e-10)
        for k in ref[2]:
            np.testing.assert_allclose(got[2][k], ref[2][k], rtol=0, atol=1e-10, err_msg=k)


def test_deep_convolutions_and_global_pool_agree():
    framework.set_default_dtype(np.float64)
    framework.set_seed(2)
    model = Sequential(
        [
            Conv2d(8, 16, 4, padding="same"),
            BatchNorm(16),
            ReLU(),
            Conv2d(16, 8, 2, padding="same", dilation=2),
            MaxPool2d(2),
            Conv2d(8, 8, 3, padding=1, activation="gelu"),
            GlobalAvgPool2d(),
        ]
    )
    model.build((None, 8, 9, 10))
    _assert_all_paths_agree(model, _rng().standard_normal((3, 8, 9, 10)))


@requires_numba
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layer_norm_and_batch_norm_kernels_agree_with_numpy(dtype):
    from framework.base.context import Context

    framework.set_default_dtype(dtype)
    rng = _rng(4)
    layers = [(LayerNorm((3, 4)), (5, 2, 3, 4)), (BatchNorm(3), (4, 3, 5, 5)), (BatchNorm(3), (64, 3, 1, 1))]
    for layer, shape in layers:
        layer.build((None, *shape[1:]))
        for p in layer.parameters():
            p.data[...] = rng.standard_normal(p.data.shape)
        x = np.asfortranarray(rng.standard_normal(shape).astype(dtype) * 3 + 2)
        g = rng.standard_normal(shape).astype(dtype)
        results = []
        for engine in (False, True):
            clone = copy.deepcopy(layer)
            with jit.using(engine):
                ctx = Context(True, record=True)
                y = clone.forward(ctx, x)
                dx = clone.backward(ctx, g)
            results.append([y, dx, *(p.grad for p in clone.parameters()), *(b.data for b in clone.buffers())])
        for a, b in zip(*results):
            _close(a, b, type(layer).__name__)
