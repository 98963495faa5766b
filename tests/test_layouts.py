"""Batch-last runs inside a Sequential (framework.models.layouts): the plan, and equal results.

A run passes ``(C, H, W, N)`` activations between consecutive Conv2d,
BatchNorm, activation and MaxPool2d layers. Everything a user sees must be
what the public-layout path gives: outputs, input and parameter gradients,
BatchNorm's running estimates, trained weights, checkpoints. Each model here
runs with the runs forced on (``"always"``) and off (``"never"``), with the
compiled kernels where numba is installed and with NumPy's code.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from support import requires_numba

import framework
from framework import Sequential
from framework.errors import ConfigError
from framework.layers import (
    AvgPool2d,
    BatchNorm,
    Conv2d,
    Dropout,
    Flatten,
    Identity,
    Linear,
    MaxPool2d,
    ReLU,
    Reshape,
    Sigmoid,
)
from framework.models import layouts
from framework.runtime import jit
from plugins.pool_batch_last import (
    avg_pool_2x2_last,
    avg_pool_2x2_last_backward,
    max_pool_2x2_last,
    max_pool_2x2_last_backward,
)

ENGINES = [False, pytest.param(True, marks=requires_numba)]


def deep_cnn() -> list:
    """Convolutions, every kind of member of a run, odd sizes."""
    return [
        Conv2d(3, 8, 3, padding=1),  # 27 rows of columns: its weight gradient in blocks
        BatchNorm(8),
        ReLU(),
        MaxPool2d(2),
        Conv2d(8, 8, 3, padding=1, activation="relu"),
        BatchNorm(8),
        MaxPool2d(2),  # swapped with nothing: the ReLU is fused into the convolution
        Conv2d(8, 12, 3, stride=2, padding=1, bias=False),
        Sigmoid(),
        Conv2d(12, 6, (3, 2), padding=(1, 0), dilation=(1, 2)),
        ReLU(),
        MaxPool2d(2),  # closes the run, after the ReLU it was swapped with
        Flatten(),
        Linear(12, 5),
    ]


def roles_for(model: Sequential, x: np.ndarray) -> list | None:
    """Each layer's part in a batch-last run when the model's runs open on batches like ``x``."""
    plan = model._current_plan(model._order())
    return plan.roles if plan.applies(x) else None


def _both(build, x: np.ndarray, training: bool = True) -> tuple:
    """One step of the same model with the runs off and on: each (y, dx, parameter grads, buffers)."""
    results = []
    for mode in ("never", "always"):
        framework.set_seed(5)
        model = Sequential(build())
        model.train(training)
        model.build((None, *x.shape[1:]))
        shape = (x.shape[0], *model.output_shape(x.shape)[1:])
        g = np.random.default_rng(1).standard_normal(shape).astype(x.dtype)
        with layouts.using(mode):
            model.zero_grad()
            y = model.forward(x)
            dx = model.backward(g)
            ran = roles_for(model, x) is not None
        planned = layouts.plan(model._order()).roles is not None
        assert ran == (mode == "always" and planned)  # the runs ran where forced, and only there
        grads = {name: p.grad.copy() for name, p in model.named_parameters()}
        buffers = {name: b.data.copy() for name, b in model.named_buffers()}
        results.append((model, y, dx, grads, buffers))
    return results[0], results[1]


def _assert_close(a, b, dtype, what):
    tol = 1e-5 if dtype == np.float32 else 1e-12
    scale = max(1.0, float(np.abs(a).max()))
    np.testing.assert_allclose(b, a, rtol=0, atol=tol * scale, err_msg=what)


def test_the_plan_of_a_cnn():
    model = Sequential(deep_cnn())
    model.build((None, 3, 33, 33))
    plan = layouts.plan(model._order())
    names = [type(layer).__name__ for layer in model._order()]
    # one run from the first convolution (27 rows of columns: its weight gradient in blocks) to the
    # last layer that gives NCHW back, the pool before the ReLU swapped behind it
    assert list(zip(names, plan.roles)) == [
        ("Conv2d", "open"),
        ("BatchNorm", "inside"),
        ("MaxPool2d", "inside"),
        ("ReLU", "inside"),
        ("Conv2d", "inside"),
        ("BatchNorm", "inside"),
        ("MaxPool2d", "inside"),
        ("Conv2d", "inside"),
        ("Sigmoid", "inside"),
        ("Conv2d", "inside"),
        ("MaxPool2d", "close"),
        ("ReLU", None),
        ("Flatten", None),
        ("Linear", None),
    ]
    # the runs' parameters: held by a Plan object, which the model's own parameters do not count
    runs = model._order()[:11]
    assert [id(p) for p in plan.parameters] == [id(p) for layer in runs for p in layer.parameters()]
    assert len(model.parameters()) == 13


def test_what_breaks_or_refuses_a_run():
    def roles(layers):
        model = Sequential(layers)
        model.build((None, 8, 8, 8))
        return layouts.plan(model._order()).roles

    deep = lambda: Conv2d(8, 8, 3, padding=1)  # noqa: E731
    assert roles([deep(), MaxPool2d(2)]) == ["open", "close"]
    assert roles([deep(), ReLU(), MaxPool2d(2)]) == ["open", "close", None]  # the ReLU runs after the pool
    assert roles([deep(), BatchNorm(8), deep()]) == ["open", "inside", "close"]
    assert roles([deep(), BatchNorm(8)]) is None  # nothing gives NCHW back after the BatchNorm
    assert roles([deep(), Dropout(0.5), MaxPool2d(2)]) is None  # Dropout's masks follow the layout
    assert roles([deep(), Identity(), MaxPool2d(2)]) is None  # a layer without the protocol
    assert roles([deep(), MaxPool2d(3)]) is None  # only 2x2 windows at stride 2
    assert roles([deep(), MaxPool2d(2, padding=1)]) is None
    assert roles([Conv2d(8, 8, 3, groups=2), MaxPool2d(2)]) is None
    assert roles([Conv2d(8, 8, 3, activation="softmax"), MaxPool2d(2)]) is None
    assert roles([Conv2d(8, 8, 1), MaxPool2d(2)]) == ["open", "close"]  # 8 rows of columns too
    assert roles([deep(), MaxPool2d(2), deep(), MaxPool2d(2)]) == ["open", "inside", "inside", "close"]
    assert roles([deep(), AvgPool2d(2), deep(), AvgPool2d(2)]) == ["open", "inside", "inside", "close"]
    assert roles([deep(), AvgPool2d(2, padding=1)]) is None
    assert roles([deep(), AvgPool2d(2, ceil_mode=True)]) is None


@pytest.mark.parametrize("engine", ENGINES, ids=["numpy", "compiled"])
def test_a_run_after_a_reshape_opens_on_the_array_it_is_given(engine, float64):
    """Flat images reshaped inside the model (a common MNIST model): the run decides at its first
    convolution, on the 4-D array that reaches it, not on the model's 2-D input."""

    def build() -> list:
        return [
            Reshape((2, 10, 10)),
            Conv2d(2, 4, 3, padding=1),
            BatchNorm(4),
            ReLU(),
            MaxPool2d(2),
            Flatten(),
        ]

    x = np.random.default_rng(6).standard_normal((3, 200))
    g = np.random.default_rng(7).standard_normal((3, 100))
    results = []
    for mode in ("never", "always"):
        framework.set_seed(9)
        model = Sequential(build())
        with jit.using(engine), layouts.using(mode):
            model.zero_grad()
            y = model.forward(x)
            dx = model.backward(g)
        seen = [c.__dict__.get("layout_role") for c in model._manual_ctx.tape]
        # the pool runs before the ReLU feeding it, and closes the run
        want = [None, "open", "inside", "close", None, None] if mode == "always" else [None] * 6
        assert seen == want, seen
        results.append((y, dx, {n: p.grad.copy() for n, p in model.named_parameters()}))
    (y0, dx0, g0), (y1, dx1, g1) = results
    _assert_close(y0, y1, np.float64, "output")
    _assert_close(dx0, dx1, np.float64, "dL/dx")
    for name in g0:
        _assert_close(g0[name], g1[name], np.float64, name)


def test_a_subclass_that_overrides_forward_runs_in_the_public_layout():
    class Noisy(ReLU):
        def forward(self, ctx, x):
            return super().forward(ctx, x) + 1.0

    class MyPool(MaxPool2d):
        def forward(self, ctx, x):
            return super().forward(ctx, x) * 2.0

    class MyConv(Conv2d):
        def backward(self, ctx, grad_out):
            return super().backward(ctx, grad_out)

    class SameConv(Conv2d):  # overrides nothing: keeps the protocol
        pass

    def roles(layers):
        model = Sequential(layers)
        model.build((None, 8, 8, 8))
        return layouts.plan(model._order()).roles

    assert roles([Conv2d(8, 8, 3, padding=1), Sigmoid(), MaxPool2d(2)]) == ["open", "inside", "close"]
    assert roles([Conv2d(8, 8, 3, padding=1), Noisy(), MaxPool2d(2)]) is None
    assert roles([Conv2d(8, 8, 3, padding=1), Sigmoid(), MyPool(2)]) is None
    assert roles([MyConv(8, 8, 3, padding=1), MaxPool2d(2)]) is None
    assert roles([SameConv(8, 8, 3, padding=1), MaxPool2d(2)]) == ["open", "close"]


@pytest.mark.parametrize("engine", ENGINES, ids=["numpy", "compiled"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_a_step_equals_the_public_layout_step(engine, training, dtype):
    x = np.random.default_rng(0).standard_normal((5, 3, 33, 33)).astype(dtype)
    with jit.using(engine):
        (m0, y0, dx0, g0, b0), (m1, y1, dx1, g1, b1) = _both(deep_cnn, x, training)
    assert y1.shape == y0.shape and y1.dtype == y0.dtype == dx1.dtype == dtype
    _assert_close(y0, y1, dtype, "output")
    _assert_close(dx0, dx1, dtype, "dL/dx")
    assert g0.keys() == g1.keys() and b0.keys() == b1.keys()
    for name in g0:
        _assert_close(g0[name], g1[name], dtype, name)
    for name in b0:
        _assert_close(b0[name], b1[name], dtype, name)
    assert m0.layers[5].num_batches_tracked == m1.layers[5].num_batches_tracked == int(training)


@pytest.mark.parametrize("engine", ENGINES, ids=["numpy", "compiled"])
def test_the_gradients_of_a_run_match_finite_differences(engine, float64):
    """dL/dx and a weight's gradient through a run (float64, the runs forced on), numerically."""
    framework.set_seed(3)
    model = Sequential(
        [
            Conv2d(8, 8, 3, padding=1),
            BatchNorm(8),
            MaxPool2d(2),
            ReLU(),
            Conv2d(8, 4, 3, padding=1),
            MaxPool2d(2),
        ]
    )
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 8, 6, 6))
    w = rng.standard_normal((3, 4, 1, 1))

    def loss(inputs):
        return float(np.sum(model.forward(inputs) * w))

    with jit.using(engine), layouts.using("always"):
        assert roles_for(model, x) == ["open", *["inside"] * 4, "close"]
        model.zero_grad()
        model.forward(x)
        dx = model.backward(w * np.ones((3, 4, 1, 1)))
        weight = model.layers[4].weight
        dw = weight.grad.copy()
        eps = 1e-6
        for idx in [(0, 0, 2, 3), (1, 5, 0, 0), (2, 7, 5, 4)]:
            plus, minus = x.copy(), x.copy()
            plus[idx] += eps
            minus[idx] -= eps
            np.testing.assert_allclose(dx[idx], (loss(plus) - loss(minus)) / (2 * eps), rtol=1e-5, atol=1e-7)
        for idx in [(0, 0, 0, 0), (3, 7, 2, 1)]:
            saved = weight.data[idx]
            weight.data[idx] = saved + eps
            up = loss(x)
            weight.data[idx] = saved - eps
            down = loss(x)
            weight.data[idx] = saved
            np.testing.assert_allclose(dw[idx], (up - down) / (2 * eps), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("threads", [None, 2])
def test_training_with_fit_equals_the_public_layout(threads):
    """fit with the first layer's input gradient skipped, shuffling, and BatchNorm's statistics
    over the whole batch under threads: the trained weights, buffers and history agree.

    SGD, not Adam: the bias of a convolution followed by BatchNorm has a gradient of zero up to
    rounding, which Adam's normalised steps would blow up to full steps of either sign."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((48, 8, 8, 8)).astype(np.float32)
    y = rng.integers(0, 3, 48)
    trained = []
    for mode in ("never", "always"):
        framework.set_seed(11)
        model = Sequential(
            [Conv2d(8, 8, 3, padding=1), BatchNorm(8), ReLU(), MaxPool2d(2), Flatten(), Linear(128, 3)]
        )
        model.compile(optimizer="sgd", loss="cross_entropy", metrics=["accuracy"])
        with layouts.using(mode):
            history = model.fit(x, y, epochs=2, batch_size=16, verbose=0, threads=threads)
            predicted = model.predict(x)
        trained.append((model.state_dict(), history.history, predicted))
    (s0, h0, p0), (s1, h1, p1) = trained
    assert s0.keys() == s1.keys()
    for key in s0:
        np.testing.assert_allclose(s1[key], s0[key], rtol=1e-4, atol=1e-5, err_msg=key)
    np.testing.assert_allclose(h1["loss"], h0["loss"], rtol=1e-5)
    np.testing.assert_allclose(p1, p0, rtol=1e-4, atol=1e-5)


def test_a_model_that_ran_batch_last_saves_the_same_weights(tmp_path):
    pytest.importorskip("h5py", reason="checkpoints need h5py")
    model = Sequential([Conv2d(8, 8, 3, padding=1), MaxPool2d(2), Flatten(), Linear(128, 2)])
    keys = set(model.state_dict())
    with layouts.using("always"):
        model.predict(np.ones((2, 8, 8, 8), np.float32))
    assert set(model.state_dict()) == keys
    model.save(tmp_path / "m.h5")
    loaded = framework.load_model(tmp_path / "m.h5")
    x = np.random.default_rng(0).standard_normal((2, 8, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_batches_the_runs_do_not_take():
    model = Sequential([Conv2d(8, 8, 3, padding=1), MaxPool2d(2)])
    with layouts.using("always"):
        assert model.forward(np.zeros((0, 8, 4, 4), np.float32)).shape == (0, 8, 2, 2)  # empty
        assert roles_for(model, np.zeros((0, 8, 4, 4), np.float32)) is None
        assert roles_for(model, np.zeros((2, 8, 4, 4), np.float16)) is None
        # float32 weights
        assert roles_for(model, np.zeros((2, 8, 4, 4), np.float64)) is None
        assert roles_for(model, np.zeros((2, 8, 4, 4), np.float32)) == ["open", "close"]
    with layouts.using("never"):
        assert roles_for(model, np.zeros((2, 8, 4, 4), np.float32)) is None
    with jit.using(False):  # "auto": only with the compiled kernels
        assert roles_for(model, np.zeros((2, 8, 4, 4), np.float32)) is None


def test_using_refuses_an_unknown_mode_and_restores_the_previous():
    with pytest.raises(ConfigError, match="'always', 'never'"):
        with layouts.using("sometimes"):
            pass
    assert layouts.mode() == "auto"
    with layouts.using("never"):
        with layouts.using("always"):
            assert layouts.mode() == "always"
        assert layouts.mode() == "never"
    assert layouts.mode() == "auto"


def test_adding_a_layer_makes_a_new_plan():
    model = Sequential([Conv2d(8, 8, 3, padding=1), BatchNorm(8)])
    x = np.ones((2, 8, 4, 4), np.float32)
    with layouts.using("always"):
        model.predict(x)
        assert roles_for(model, x) is None
        model.add(MaxPool2d(2))
        model.predict(x)
        assert roles_for(model, x) == ["open", "inside", "close"]


@pytest.mark.parametrize("engine", ENGINES, ids=["numpy", "compiled"])
def test_the_batch_last_pool_equals_the_public_pool(engine, dtype):
    """Ties (the first maximum wins), NaN (the last NaN wins) and -inf windows, odd sizes."""
    rng = np.random.default_rng(9)
    for shape in [(2, 3, 4, 4), (3, 2, 7, 9), (1, 1, 2, 2), (2, 3, 3, 2)]:
        x = rng.integers(-2, 3, size=shape).astype(dtype)
        x[x == 2] = np.nan
        x[-1, -1, :2, :2] = -np.inf
        pool = MaxPool2d(2)
        with jit.using(False):
            y = pool(x)
            g = rng.standard_normal(y.shape).astype(dtype)
            dx = pool.backward(g)
        last = np.ascontiguousarray(x.transpose(1, 2, 3, 0))
        with jit.using(engine):
            y_last, offsets = max_pool_2x2_last(last, with_argmax=True)
            dx_last = max_pool_2x2_last_backward(
                np.ascontiguousarray(g.transpose(1, 2, 3, 0)), offsets, last.shape
            )
        np.testing.assert_array_equal(y_last.transpose(3, 0, 1, 2), y, err_msg=str(shape))
        np.testing.assert_array_equal(dx_last.transpose(3, 0, 1, 2), dx, err_msg=str(shape))


def test_a_copied_model_plans_again():
    model = Sequential([Conv2d(8, 8, 3, padding=1), MaxPool2d(2)])
    x = np.ones((2, 8, 4, 4), np.float32)
    with layouts.using("always"):
        model.predict(x)
        twin = copy.deepcopy(model)
        np.testing.assert_array_equal(twin.predict(x), model.predict(x))
        assert {id(p) for p in twin._layout_plan.parameters} == {id(p) for p in twin.parameters()}


@pytest.mark.parametrize("engine", ENGINES, ids=["numpy", "compiled"])
def test_a_run_closes_at_a_global_average_pool(engine, float64):
    """The modern CNN head, convolutions into GlobalAvgPool2d and a Linear: one run to the pool."""
    from framework.layers import GlobalAvgPool2d

    def build():
        return [
            Conv2d(8, 12, 3, padding=1),
            BatchNorm(12),
            ReLU(),
            Conv2d(12, 12, 3, stride=2, padding=1, activation="relu"),
            GlobalAvgPool2d(),
            Linear(12, 3),
        ]

    x = np.random.default_rng(8).standard_normal((5, 8, 9, 7))
    with jit.using(engine):
        (_, y0, dx0, g0, b0), (model, y1, dx1, g1, b1) = _both(build, x)
    assert layouts.plan(model._order()).roles == ["open", "inside", "inside", "inside", "close", None]
    _assert_close(y0, y1, np.float64, "output")
    _assert_close(dx0, dx1, np.float64, "dL/dx")
    for name in g0:
        _assert_close(g0[name], g1[name], np.float64, name)
    for name in b0:
        _assert_close(b0[name], b1[name], np.float64, name)


@pytest.mark.parametrize("engine", ENGINES, ids=["numpy", "compiled"])
def test_more_geometries_equal_the_public_layout(engine, float64):
    """'same' padding with an even kernel (more padding after than before), 1x1 and strided
    convolutions, odd sizes into the pools, LeakyReLU fused."""

    def build():
        return [
            Conv2d(8, 8, 4, padding="same"),
            BatchNorm(8),
            Conv2d(8, 8, 3, padding=1),
            MaxPool2d(2),
            Conv2d(8, 8, 3, padding=1),
            Conv2d(8, 64, 3, stride=2, padding=1, activation=framework.layers.LeakyReLU(0.2)),
            Conv2d(64, 8, 1),
            MaxPool2d(2),
        ]

    x = np.random.default_rng(2).standard_normal((3, 8, 15, 13))
    with jit.using(engine):
        (_, y0, dx0, g0, b0), (m1, y1, dx1, g1, b1) = _both(build, x)
    assert layouts.plan(m1._order()).roles == ["open", *["inside"] * 6, "close"]
    for name in b0:
        _assert_close(b0[name], b1[name], np.float64, name)
    assert y0.shape == y1.shape == (3, 8, 2, 1)
    _assert_close(y0, y1, np.float64, "output")
    _assert_close(dx0, dx1, np.float64, "dL/dx")
    for name in g0:
        _assert_close(g0[name], g1[name], np.float64, name)


def _functional():
    """A residual CNN: the value entering the skip feeds two calls (no run through it), the chains
    around it run batch-last; a second output taken inside a chain ends the run there."""
    from framework import Input, Model
    from framework.layers import Add

    inputs = Input((8, 12, 12))
    h = Conv2d(8, 8, 3, padding=1)(inputs)  # opens a run...
    h = BatchNorm(8)(h)
    h = MaxPool2d(2)(h)  # ...closed here: its output feeds two calls
    branch = Conv2d(8, 8, 3, padding=1, activation="relu")(h)
    branch = Conv2d(8, 8, 3, padding=1)(branch)  # a run of two convolutions
    h = Add()([h, branch])
    h = Conv2d(8, 8, 3, padding=1)(h)
    side = ReLU()(h)  # a model output: the run opened above cannot pass through it
    h = MaxPool2d(2)(side)
    out = Linear(8 * 3 * 3, 4)(Flatten()(h))
    return Model(inputs, [out, side])


@pytest.mark.parametrize("engine", ENGINES, ids=["numpy", "compiled"])
def test_a_functional_graph_runs_its_chains_batch_last(engine, float64):
    x = np.random.default_rng(3).standard_normal((4, 8, 12, 12))
    results = []
    for mode in ("never", "always"):
        framework.set_seed(8)
        model = _functional()
        gs = [
            np.random.default_rng(4).standard_normal((4, 4)),
            np.random.default_rng(5).standard_normal((4, 8, 6, 6)),
        ]
        with jit.using(engine), layouts.using(mode):
            model.zero_grad()
            ys = model.forward(x)
            dx = model.backward(gs)
        grads = {name: p.grad.copy() for name, p in model.named_parameters()}
        seen = [c.__dict__.get("layout_role") for c in model._manual_ctx.tape]
        assert seen == (model._graph._layout_plan().roles if mode == "always" else [None] * 11)
        results.append((model, ys, dx, grads))
    (_, ys0, dx0, g0), (model, ys1, dx1, g1) = results
    plan = model._graph._layout_plan()
    names = [type(entry[0]).__name__ for entry in model._graph.plan]
    assert list(zip(names, plan.roles)) == [
        ("Conv2d", "open"),
        ("BatchNorm", "inside"),
        ("MaxPool2d", "close"),
        ("Conv2d", "open"),
        ("Conv2d", "close"),
        ("Add", None),
        ("Conv2d", None),
        ("ReLU", None),
        ("MaxPool2d", None),
        ("Flatten", None),
        ("Linear", None),
    ]
    for a, b, what in ((ys0[0], ys1[0], "output"), (ys0[1], ys1[1], "side output"), (dx0, dx1, "dL/dx")):
        assert a.shape == b.shape
        _assert_close(a, b, np.float64, what)
    for name in g0:
        _assert_close(g0[name], g1[name], np.float64, name)


def test_a_functional_graph_pools_before_the_relu_feeding_it(monkeypatch, float64):
    """As Sequential: ReLU then MaxPool2d run pool first (exactly the same results), unless the
    ReLU's output is read elsewhere; the reordered graph equals the graph run as written."""
    from framework import Input, Model
    from framework.models import executor

    def build():
        framework.set_seed(12)
        inputs = Input((8, 8, 8))
        a = ReLU()(Conv2d(8, 8, 3, padding=1)(inputs))
        pooled = MaxPool2d(2)(a)  # swapped: the ReLU's output feeds this pool only
        b = ReLU()(Conv2d(8, 8, 3, padding=1)(pooled))
        kept = MaxPool2d(2)(b)  # not swapped: b is a model output too
        return Model(inputs, [kept, b])

    model = build()
    names = [type(entry[0]).__name__ for entry in model._graph.plan]
    assert names == ["Conv2d", "MaxPool2d", "ReLU", "Conv2d", "ReLU", "MaxPool2d"]
    with monkeypatch.context() as patch:
        patch.setattr(executor, "pool_first", lambda entries, pinned, outputs: (entries, pinned))
        as_written = build()
    assert [type(e[0]).__name__ for e in as_written._graph.plan][:3] == ["Conv2d", "ReLU", "MaxPool2d"]
    x = np.random.default_rng(6).standard_normal((3, 8, 8, 8))
    x[0, :, :4, :4] = 0.0  # flat blocks: equal convolution outputs, ties in the pools' windows
    x[1, :, :4, :4] = -1.0
    gs = [np.ones((3, 8, 2, 2)), np.random.default_rng(7).standard_normal((3, 8, 4, 4))]
    results = []
    for net in (model, as_written):
        with layouts.using("never"):
            net.zero_grad()
            ys = net.forward(x)
            dx = net.backward(gs)
        results.append((ys, dx, {n: p.grad.copy() for n, p in net.named_parameters()}))
    (ys0, dx0, g0), (ys1, dx1, g1) = results
    np.testing.assert_array_equal(ys0[0], ys1[0])
    np.testing.assert_array_equal(ys0[1], ys1[1])
    np.testing.assert_allclose(dx0, dx1, rtol=0, atol=1e-13)
    for name in g0:
        np.testing.assert_allclose(g0[name], g1[name], rtol=0, atol=1e-12, err_msg=name)


def test_a_layer_reconfigured_after_planning_makes_the_model_plan_again(float64):
    """A convolution given a softmax activation after a first batch no longer serves batch-last:
    the next batch runs in the public layout (a softmax over the wrong axis would be silent)."""
    framework.set_seed(2)
    model = Sequential([Conv2d(8, 8, 3, padding=1), MaxPool2d(2)])
    x = np.random.default_rng(1).standard_normal((2, 8, 6, 6))
    with layouts.using("always"):
        model.predict(x)
        assert roles_for(model, x) == ["open", "close"]
        model.layers[0].activation = framework.activations.get("softmax")
        assert roles_for(model, x) is None
        y = model.predict(x)
    with layouts.using("never"):
        np.testing.assert_allclose(y, model.predict(x), rtol=1e-12)


def test_check_layer_catches_a_layer_that_claims_the_layout_wrongly():
    """The conformance kit's batch_last check: a softmax over the last axis declared channelwise,
    and a pool whose batch-last forward is off, each fail it; the built-in layers pass it."""
    from framework.base.layer import Layer
    from framework.testing import check_layer

    class RowSoftmax(Layer):
        channelwise = True  # wrong: it mixes the positions of the last axis

        def build(self, input_shape):
            super().build(input_shape)
            self.input_spec = None  # any shape, as a channelwise layer must take

        def forward(self, ctx, x):
            e = np.exp(x - x.max(axis=-1, keepdims=True))
            ctx.y = e / e.sum(axis=-1, keepdims=True)
            return ctx.y

        def backward(self, ctx, grad_out):
            return ctx.y * (grad_out - (grad_out * ctx.y).sum(axis=-1, keepdims=True))

    class OffPool(MaxPool2d):
        def forward_batch_last(self, ctx, x, in_last, out_last):
            return super().forward_batch_last(ctx, x, in_last, out_last) * 1.001

    for layer in (RowSoftmax(), OffPool(2)):
        report = check_layer(layer, (2, 3, 4, 4), raise_on_failure=False)
        result = next(r for r in report.results if r.check == "batch_last")
        assert result.status == "FAIL", (type(layer).__name__, result)
        assert "differs from the public layout" in result.detail
    for layer, shape in ((Conv2d(8, 4, 3, padding=1), (2, 8, 5, 5)), (BatchNorm(3), (2, 3, 4, 4))):
        report = check_layer(layer, shape, raise_on_failure=False)
        assert next(r for r in report.results if r.check == "batch_last").status == "ok"


def test_a_channelwise_layer_whose_input_check_pins_the_shape_stays_out_of_runs():
    """Declaring channelwise is not enough when the layer's input check (the default one pins
    every axis) would refuse the (1, C, H*W*N) view: the model runs it in the public layout."""
    from framework.base.layer import Layer

    class Scale(Layer):
        channelwise = True

        def forward(self, ctx, x):
            return 2.0 * x

        def backward(self, ctx, grad_out):
            return 2.0 * grad_out

    model = Sequential([Conv2d(8, 8, 3, padding=1), Scale(), MaxPool2d(2)])
    model.build((None, 8, 6, 6))
    assert layouts.plan(model._order()).roles is None
    x = np.ones((2, 8, 6, 6), np.float32)
    with layouts.using("always"):
        assert model.predict(x).shape == (2, 8, 3, 3)


@pytest.mark.parametrize("engine", ENGINES, ids=["numpy", "compiled"])
def test_random_cnn_stacks_equal_the_public_layout(engine, float64):
    """Twenty-four random stacks of convolutions (kernel, stride, padding, dilation, bias, fused
    activation), BatchNorm, activations and pools on random input sizes: every output, input
    gradient, parameter gradient and running statistic agrees with the public layout."""
    rng = np.random.default_rng(2026)
    activations = [None, "relu", "sigmoid", "tanh", "gelu", "softmax"]
    planned = 0
    for case in range(24):
        channels, size = int(rng.integers(8, 15)), int(rng.integers(10, 18))
        spec = []
        c, hw = channels, size
        for _ in range(int(rng.integers(2, 6))):
            kind = rng.choice(["conv", "bn", "act", "pool"], p=[0.4, 0.2, 0.2, 0.2])
            if kind == "conv":
                k, s, d = int(rng.choice([1, 2, 3, 3, 3])), int(rng.integers(1, 3)), int(rng.integers(1, 3))
                p = int(rng.integers(0, 2))
                out = (hw + 2 * p - d * (k - 1) - 1) // s + 1
                if out < 2:
                    continue
                o = int(rng.integers(8, 15))
                act = activations[int(rng.integers(len(activations)))]
                spec.append(("conv", c, o, k, s, p, d, bool(rng.integers(2)), act))
                c, hw = o, out
            elif kind == "bn":
                spec.append(("bn", c))
            elif kind == "act":
                spec.append(("act", ["relu", "sigmoid", "leaky"][int(rng.integers(3))]))
            elif hw >= 2:
                spec.append(("pool",))
                hw //= 2

        if hw >= 2 and rng.integers(3):  # most stacks end in a pool, a layer that can close a run
            spec.append(("pool",))

        def build(spec=spec):
            made = []
            for entry in spec:
                if entry[0] == "conv":
                    _, ci, co, k, s, p, d, bias, act = entry
                    made.append(Conv2d(ci, co, k, stride=s, padding=p, dilation=d, bias=bias, activation=act))
                elif entry[0] == "bn":
                    made.append(BatchNorm(entry[1]))
                elif entry[0] == "act":
                    made.append(
                        {"relu": ReLU, "sigmoid": Sigmoid, "leaky": framework.layers.LeakyReLU}[entry[1]]()
                    )
                else:
                    made.append(MaxPool2d(2))
            return made

        if not spec:
            continue
        x = rng.standard_normal((int(rng.integers(1, 5)), channels, size, size))
        with jit.using(engine):
            (_, y0, dx0, g0, b0), (model, y1, dx1, g1, b1) = _both(build, x)
        planned += layouts.plan(model._order()).roles is not None
        _assert_close(y0, y1, np.float64, f"case {case} {spec}: output")
        _assert_close(dx0, dx1, np.float64, f"case {case}: dL/dx")
        for name in g0:
            _assert_close(g0[name], g1[name], np.float64, f"case {case}: {name}")
        for name in b0:
            _assert_close(b0[name], b1[name], np.float64, f"case {case}: {name}")
    assert planned >= 8, planned  # the random stacks did exercise runs


def test_the_batch_last_average_pool_equals_the_public_pool_to_the_bit(dtype):
    rng = np.random.default_rng(10)
    for shape in [(2, 3, 4, 4), (3, 2, 7, 9), (1, 1, 2, 2)]:
        x = rng.standard_normal(shape).astype(dtype)
        pool = AvgPool2d(2)
        y = pool(x)
        g = rng.standard_normal(y.shape).astype(dtype)
        dx = pool.backward(g)
        last = np.ascontiguousarray(x.transpose(1, 2, 3, 0))
        y_last = avg_pool_2x2_last(last)
        dx_last = avg_pool_2x2_last_backward(np.ascontiguousarray(g.transpose(1, 2, 3, 0)), last.shape)
        np.testing.assert_array_equal(y_last.transpose(3, 0, 1, 2), y, err_msg=str(shape))
        np.testing.assert_array_equal(dx_last.transpose(3, 0, 1, 2), dx, err_msg=str(shape))


def test_the_blocked_weight_gradient_equals_one_product(dtype):
    """Shallow columns: dW^T over blocks of columns, the tail included, equals cols @ G^T."""
    from plugins.conv_batch_last import BLOCK, weight_gradient_t

    rng = np.random.default_rng(11)
    for k, o, p in [(9, 16, 5 * BLOCK), (25, 6, 3 * BLOCK + 77), (3, 4, BLOCK + 5), (72, 8, 4 * BLOCK)]:
        cols = rng.standard_normal((k, p)).astype(dtype)
        g = rng.standard_normal((o, p)).astype(dtype)
        got = weight_gradient_t(cols, g)
        want = cols.astype(np.float64) @ g.T.astype(np.float64)
        assert got.shape == (k, o) and got.dtype == dtype
        tol = 1e-4 if dtype == np.float32 else 1e-11
        np.testing.assert_allclose(got, want, rtol=0, atol=tol * np.abs(want).max(), err_msg=str((k, o, p)))


def test_the_environment_sets_the_default_mode():
    import subprocess
    import sys

    from support import subprocess_env

    code = "from framework.models import layouts; print(layouts.mode())"
    for value, expected in (("never", "never"), ("Always", "always"), ("", "auto")):
        env = subprocess_env(FRAMEWORK_LAYOUTS=value)
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        assert out.stdout.strip() == expected
    env = subprocess_env(FRAMEWORK_LAYOUTS="sometimes")
    failed = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert failed.returncode != 0
    assert "FRAMEWORK_LAYOUTS must be one of 'auto', 'always', 'never', got 'sometimes'" in failed.stderr


@pytest.mark.parametrize("engine", ENGINES, ids=["numpy", "compiled"])
def test_the_pools_that_close_runs_have_finite_difference_gradients(engine, float64):
    """AvgPool2d(2) inside a run and GlobalAvgPool2d closing it: the kit's gradient check of the
    whole model (input and every parameter) with the runs forced on."""
    from framework.layers import GlobalAvgPool2d
    from framework.testing import check_gradients

    framework.set_seed(4)
    model = Sequential(
        [Conv2d(8, 8, 3, padding=1), AvgPool2d(2), Sigmoid(), Conv2d(8, 5, 3), GlobalAvgPool2d()]
    )
    x = np.random.default_rng(5).standard_normal((3, 8, 9, 10))
    with jit.using(engine), layouts.using("always"):
        model.build((None, 8, 9, 10))
        assert roles_for(model, x) == ["open", "inside", "inside", "inside", "close"]
        report = check_gradients(model, x, raise_on_failure=False)
    assert report.ok, str(report)
