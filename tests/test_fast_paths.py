"""The training fast paths give the same numbers as the plain ones.

- ``fit`` skips the input gradient of a ``Sequential``'s first parameterised
  layer (``needs_input_grad``) and restores the flag afterwards;
- SGD's in-place update follows PyTorch's rule exactly;
- ``keep_freed_memory`` is safe to call repeatedly;
- ``zero_grad`` only marks gradients as zero, and the first contribution is
  written straight into them (``Parameter.grad_target``);
- the fused BLAS updates of :mod:`framework.runtime.blas` equal the NumPy ones.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from support import subprocess_env

import framework
from framework import Sequential
from framework.base.parameter import Parameter
from framework.layers import Dropout, Flatten, Linear, ReLU
from framework.runtime import blas
from framework.training.loop import keep_freed_memory


def _mlp(seed: int) -> Sequential:
    framework.set_seed(seed)
    return Sequential([Linear(6, 8, activation="relu"), Linear(8, 5), ReLU(), Linear(5, 3)])


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((20, 6)).astype(np.float32), rng.integers(0, 3, 20)


def test_fit_matches_a_manual_loop_and_restores_the_flag() -> None:
    x, y = _data()
    fitted, manual = _mlp(3), _mlp(3)
    for m in (fitted, manual):
        m.compile(optimizer=framework.optimizers.get("sgd", lr=0.1, momentum=0.9), loss="cross_entropy")
    seen: list[bool] = []
    first_layer = fitted.layers[0]
    backward = first_layer.backward
    first_layer.backward = lambda ctx, g: seen.append(ctx.needs_input_grad) or backward(ctx, g)

    fitted.fit(x, y, epochs=2, batch_size=5, shuffle=False, verbose=0)
    assert seen == [False] * 8  # the first layer's input gradient is skipped inside fit
    del first_layer.backward

    loss = manual._losses[0]
    manual.optimizer.bind(manual)
    for _ in range(2):
        for start in range(0, 20, 5):
            out = manual.forward(x[start : start + 5])
            loss.forward(out, y[start : start + 5])
            manual.optimizer.zero_grad()
            dx = manual.backward(loss.backward())
            assert dx.shape == (5, 6)  # outside fit the input gradient is still computed
            manual.optimizer.step()
    for a, b in zip(fitted.parameters(), manual.parameters()):
        np.testing.assert_array_equal(a.data, b.data)

    first = fitted.layers[0]
    assert first.needs_input_grad is True
    out = fitted.forward(x[:4])
    assert fitted.backward(np.ones_like(out)).shape == (4, 6)


def test_linear_without_input_grad_still_accumulates_parameter_grads() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 3)).astype(np.float32)
    g = rng.standard_normal((4, 2)).astype(np.float32)
    full, skip = Linear(3, 2, activation="relu"), Linear(3, 2, activation="relu")
    skip.weight.data[...] = full.weight.data
    skip.needs_input_grad = False
    full.forward(x)
    skip.forward(x)
    assert full.backward(g).shape == (4, 3)
    assert skip.backward(g) is None
    np.testing.assert_array_equal(skip.weight.grad, full.weight.grad)
    np.testing.assert_array_equal(skip.bias.grad, full.bias.grad)


def test_first_layer_choice() -> None:
    model = Sequential([Flatten(), Dropout(0.1), Linear(12, 4), Linear(4, 2)])
    model.build((None, 3, 4))
    assert model._first_needed(model._order()) == 2
    frozen = Sequential([Linear(3, 4), Linear(4, 2)])
    for p in frozen.layers[0].parameters():
        p.trainable = False
    assert frozen._first_needed(frozen._order()) == 1
    nested = Sequential([Sequential([Linear(3, 4)]), Linear(4, 2)])
    assert nested._first_needed(nested._order()) == 0


def test_fit_through_leading_parameter_free_layers() -> None:
    """Flatten before the first Linear: backward stops at the Linear, training still works."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((16, 2, 3)).astype(np.float32)
    y = rng.integers(0, 2, 16)
    model = Sequential([Flatten(), Linear(6, 2)])
    model.compile(optimizer="sgd", loss="cross_entropy")
    before = model.layers[1].weight.data.copy()
    history = model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert not np.array_equal(before, model.layers[1].weight.data)


@pytest.mark.parametrize("nesterov,dampening", [(False, 0.0), (False, 0.3), (True, 0.0)])
def test_sgd_momentum_rule(nesterov: bool, dampening: float) -> None:
    rng = np.random.default_rng(3)
    p = framework.Parameter(rng.standard_normal(5).astype(np.float32))
    opt = framework.optimizers.get("sgd", lr=0.05, momentum=0.9, dampening=dampening, nesterov=nesterov)
    opt.bind([p])
    expected, buf = p.data.astype(np.float64), None
    for _ in range(3):
        g = rng.standard_normal(5).astype(np.float32)
        p.grad[...] = g
        opt.step()
        buf = g.astype(np.float64) if buf is None else 0.9 * buf + (1 - dampening) * g
        d = g + 0.9 * buf if nesterov else buf
        expected = expected - 0.05 * d
    np.testing.assert_allclose(p.data, expected, rtol=1e-5, atol=1e-6)


def test_keep_freed_memory_is_idempotent() -> None:
    first = keep_freed_memory()
    assert isinstance(first, bool)
    assert keep_freed_memory() is first


@pytest.mark.parametrize("order", ["C", "F"])
def test_linear_transposed_products_match_the_plain_ones(order: str) -> None:
    """Y = (W X^T)^T comes back F-ordered; dL/dX comes back in X's layout; both equal the plain products."""
    rng = np.random.default_rng(1)
    layer = Linear(6, 4)
    x = np.asarray(rng.standard_normal((5, 6)), dtype=np.float32, order=order)
    y = layer.forward(x)
    w, b = layer.weight.data, layer.bias.data
    np.testing.assert_allclose(y, x @ w.T + b, rtol=1e-6, atol=1e-6)
    assert y.flags.f_contiguous and not y.flags.c_contiguous
    g = np.asarray(rng.standard_normal((5, 4)), dtype=np.float32, order="F")
    layer.zero_grad()
    dx = layer.backward(g)
    np.testing.assert_allclose(dx, g @ w, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(layer.weight.grad, g.T @ x, rtol=1e-6, atol=1e-6)
    assert dx.flags.c_contiguous == (order == "C") and dx.flags.f_contiguous == (order == "F")


def test_cross_entropy_label_fast_path_matches_the_general_path() -> None:
    """Integer labels (the fast path) and the same labels one-hot (the general path) agree."""
    from framework.losses import CrossEntropy

    rng = np.random.default_rng(2)
    z = np.asfortranarray(rng.standard_normal((7, 5)) * 3.0)
    labels = rng.integers(0, 5, 7)
    loss = CrossEntropy()
    fast = loss.forward(z, labels)
    grad_fast = loss.backward()
    general = loss.forward(z, np.eye(5)[labels])
    grad_general = loss.backward()
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    assert fast == pytest.approx(-log_p[np.arange(7), labels].mean(), rel=1e-12)
    assert fast == pytest.approx(general, rel=1e-12)
    np.testing.assert_allclose(grad_fast, grad_general, rtol=1e-12, atol=1e-15)
    assert loss.forward(z, np.array([0, 1, 2, 3, 4, 0, -100])) == pytest.approx(
        -log_p[np.arange(6), [0, 1, 2, 3, 4, 0]].mean(), rel=1e-12
    )  # an ignored label takes the general path


def test_relu_and_dropout_overwrite_grad_only_inside_sequential_backward():
    """grad_out_writable lets ReLU/Dropout reuse the incoming gradient, never a caller's array."""

    framework.set_seed(3)
    x = np.random.default_rng(0).standard_normal((6, 5)).astype(np.float32)
    relu = ReLU()
    relu(x)
    g = np.ones_like(x)
    before = g.copy()
    out = relu.backward(g)
    np.testing.assert_array_equal(g, before)  # a direct call leaves the caller's gradient alone
    assert out is not g and not relu.grad_out_writable

    def build(p: float) -> framework.Sequential:
        framework.set_seed(7)
        return framework.Sequential(
            [
                framework.layers.Linear(5, 8),
                ReLU(),
                framework.layers.Dropout(p, seed=1),
                framework.layers.Linear(8, 3),
            ]
        )

    model = build(0.4)
    model.train()
    model(x)
    g_top = np.random.default_rng(1).standard_normal((6, 3)).astype(np.float32)
    g_copy = g_top.copy()
    dx = model.backward(g_top)
    np.testing.assert_array_equal(g_top, g_copy)  # the gradient handed to the model is not touched
    assert all(not layer.grad_out_writable for layer in model.layers)

    # The same computation without in-place reuse, layer by layer, gives identical results.
    reference = build(0.4)
    reference.train()
    reference(x)
    g = g_copy
    tape = reference._manual_ctx.tape  # one context per layer, in order
    for layer, ctx in reversed(list(zip(reference.layers, tape))):
        g = layer.backward(ctx, g)
    np.testing.assert_array_equal(dx, g)
    for a, b in zip(model.parameters(), reference.parameters()):
        np.testing.assert_array_equal(a.grad, b.grad)


# -- lazily zeroed gradients -----------------------------------------------------


def test_zero_grad_is_eager_by_default() -> None:
    """A gradient array obtained before ``zero_grad`` sees the zeros, and additions to it count."""
    framework.set_default_dtype(np.float64)
    try:
        layer = Linear(3, 2)
        x = np.random.default_rng(0).standard_normal((4, 3))
        layer(x)
        held = layer.weight.grad
        held += 5.0
        layer.zero_grad()
        np.testing.assert_array_equal(held, np.zeros((2, 3)))
        held += 1.0  # a regulariser's contribution, added before backward
        layer.forward(x)
        g = np.ones((4, 2))
        layer.backward(g)
        np.testing.assert_allclose(layer.weight.grad, 1.0 + g.T @ x, rtol=1e-12)
    finally:
        framework.set_default_dtype(np.float32)


def test_lazy_zero_grad_and_grad_target() -> None:
    p = Parameter(np.zeros(4))
    p.grad += 7.0
    assert p.grad_target() is None  # not lazily zero: the caller must add
    p.zero_grad(lazy=True)
    np.testing.assert_array_equal(p.grad, np.zeros(4))  # reading fills the zeros
    assert p.grad_target() is None
    p.grad += 7.0
    p.zero_grad(lazy=True)
    target = p.grad_target()
    assert target is not None
    target[:] = 2.0  # the first contribution, written in place
    assert p.grad_target() is None
    p.add_grad(np.full(4, 3.0))
    np.testing.assert_array_equal(p.grad, np.full(4, 5.0))


def test_fit_zeroes_gradients_between_steps() -> None:
    """After fit, each gradient is the last batch's alone (the lazy zeroing inside fit works)."""
    x, y = _data()
    model = _mlp(1)
    model.compile(optimizer=framework.optimizers.SGD(lr=0.0), loss="cross_entropy")
    model.fit(x, y, epochs=2, batch_size=5, shuffle=False, verbose=0)
    fitted = [p.grad.copy() for p in model.parameters()]
    model.zero_grad()
    model.train()
    out = model.forward(x[15:20])
    model.loss.forward(out, y[15:20])
    model.backward(model.loss.backward())
    for a, p in zip(fitted, model.parameters()):
        np.testing.assert_allclose(a, p.grad, rtol=1e-5, atol=1e-7)


def test_grad_setter() -> None:
    p = Parameter(np.zeros((2, 2), dtype=np.float32))
    mine = np.ones((2, 2), dtype=np.float32)
    p.grad = mine
    assert p.grad is mine  # the caller's array becomes the gradient, as before
    p.grad = np.ones((2, 2))  # float64: converted
    assert p.grad.dtype == np.float32 and p.grad.sum() == 4
    p.grad = None  # PyTorch's way of saying "no gradient": zeros here
    np.testing.assert_array_equal(p.grad, np.zeros((2, 2)))
    with pytest.raises(framework.FrameworkError, match=r"expected shape \(2, 2\)"):
        p.grad = np.ones(3)


def test_parameter_state_restored_in_any_slot_order() -> None:
    """Unpickling an older Parameter sets ``grad`` before ``data``; that must not fail."""
    p = Parameter.__new__(Parameter)
    p.grad = np.zeros(3)
    p.data = np.ones(3)
    p.trainable = True
    np.testing.assert_array_equal(p.grad, np.zeros(3))
    q = pickle.loads(pickle.dumps(Parameter(np.arange(3.0))))
    np.testing.assert_array_equal(q.data, np.arange(3.0))
    q.zero_grad(lazy=True)
    r = pickle.loads(pickle.dumps(q))
    np.testing.assert_array_equal(r.grad, np.zeros(3))


def test_tied_weight_gets_the_sum_of_both_contributions() -> None:
    """Two Linear layers sharing one weight: the second backward must add, not overwrite."""
    framework.set_default_dtype(np.float64)
    try:
        a, b = Linear(4, 4, bias=False), Linear(4, 4, bias=False)
        x = np.random.default_rng(1).standard_normal((3, 4))
        a(x)
        b.build((None, 4))
        b.weight = a.weight
        g = np.random.default_rng(2).standard_normal((3, 4))
        for _ in range(2):  # twice: zero_grad must reset the lazy state between steps
            a.zero_grad()
            ha = a.forward(x)
            b.forward(ha)
            a.backward(b.backward(g))
            w = a.weight.data
            expected = g.T @ ha + (g @ w).T @ x  # dL/dW through b, then through a
            np.testing.assert_allclose(a.weight.grad, expected, rtol=1e-12)
    finally:
        framework.set_default_dtype(np.float32)


def test_model_dtype_follows_a_conversion() -> None:
    model = _mlp(0)
    model.build((None, 6))
    assert model.dtype == np.float32
    model.astype(np.float64)
    assert model.dtype == np.float64
    assert model.predict(np.ones((2, 6))).dtype == np.float64
    assert next(n for n, _ in model.named_parameters()) == "linear.weight"
    assert all(not n.startswith("_") for n, _ in model.named_parameters())


def test_model_dtype_follows_a_replaced_parameter_and_a_pickle() -> None:
    model = _mlp(0)
    model.build((None, 6))
    model.astype(np.float64)
    assert model.forward(np.ones((2, 6), dtype=np.float32)).dtype == np.float64
    for layer in model.layers:
        for name in ("weight", "bias"):
            p = getattr(layer, name, None)
            if isinstance(p, Parameter):
                setattr(layer, name, Parameter(p.data.astype(np.float32)))
    assert model.dtype == np.float32
    assert model.forward(np.ones((2, 6))).dtype == np.float32
    copy = pickle.loads(pickle.dumps(model))
    assert copy.dtype == np.float32
    copy.astype(np.float64)
    assert copy.dtype == np.float64


# -- fused BLAS updates ----------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 7, 33, 100_003])
def test_axpy_and_axpby_equal_numpy(dtype: type, n: int) -> None:
    rng = np.random.default_rng(n)
    x = rng.standard_normal(n).astype(dtype)
    y0 = rng.standard_normal(n).astype(dtype)
    ulp = np.finfo(dtype).eps * 8
    y = y0.copy()
    blas.axpy(-0.37, x, y)
    np.testing.assert_allclose(y, y0 + dtype(-0.37) * x, rtol=ulp, atol=ulp)
    y = y0.copy()
    blas.axpby(0.5, x, 0.9, y)
    np.testing.assert_allclose(y, dtype(0.9) * y0 + dtype(0.5) * x, rtol=ulp, atol=ulp)


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sum_rows_equals_numpy_sum(order: str, dtype: type) -> None:
    a = np.asarray(np.random.default_rng(0).standard_normal((37, 11)), dtype=dtype, order=order)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(blas.sum_rows(a), a.sum(axis=0), rtol=tol, atol=tol)
    out = np.empty(11, dtype=dtype)
    assert blas.sum_rows(a, out=out) is out
    np.testing.assert_allclose(out, a.sum(axis=0), rtol=tol, atol=tol)
    assert blas.sum_rows(np.zeros((0, 3), dtype=dtype)).tolist() == [0.0, 0.0, 0.0]


def test_axpy_falls_back_on_arrays_blas_cannot_take() -> None:
    rng = np.random.default_rng(0)
    base = rng.standard_normal((6, 8)).astype(np.float32)
    x = rng.standard_normal((6, 4)).astype(np.float32)
    y = base[:, ::2]  # not contiguous: the NumPy path, in place through the view
    expected = y + np.float32(2.0) * x
    blas.axpy(2.0, x, y)
    np.testing.assert_allclose(base[:, ::2], expected, rtol=1e-6)
    y16 = np.ones(5, dtype=np.float16)  # no half-precision routine
    blas.axpby(1.0, np.ones(5, dtype=np.float16), 0.5, y16)
    np.testing.assert_array_equal(y16, np.full(5, 1.5, dtype=np.float16))
    x = np.arange(4.0)
    x.setflags(write=False)  # read-only input: its address is read the slower way
    y = np.ones(4)
    blas.axpy(2.0, x, y)
    np.testing.assert_array_equal(y, 1 + 2 * np.arange(4.0))
    empty = np.empty(0)
    blas.axpby(1.0, empty, 2.0, np.empty(0))
    y = np.arange(6.0)
    blas.axpy(1.0, y, y)  # aliased: y <- 2 y
    np.testing.assert_array_equal(y, 2 * np.arange(6.0))


def test_blas_updates_can_be_switched_off() -> None:
    code = (
        "import framework.runtime.blas as b, numpy as np; "
        "y = np.ones(3); b.axpy(2.0, y.copy(), y); print(b.backend(), y)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=subprocess_env(FRAMEWORK_BLAS_UPDATES="0"),
        check=True,
    ).stdout
    assert out.strip() == "numpy [3. 3. 3.]"


@pytest.mark.parametrize(
    "make",
    [
        lambda: framework.optimizers.SGD(lr=0.1, momentum=0.9),
        lambda: framework.optimizers.SGD(lr=0.1, momentum=0.9, nesterov=True),
        lambda: framework.optimizers.SGD(lr=0.1),
        lambda: framework.optimizers.Adam(lr=0.01),
        lambda: framework.optimizers.Adam(lr=0.01, amsgrad=True, weight_decay=0.1),
        lambda: framework.optimizers.AdamW(lr=0.01),
    ],
    ids=["sgd-momentum", "sgd-nesterov", "sgd", "adam", "adam-amsgrad-l2", "adamw"],
)
def test_fused_and_numpy_updates_agree(make: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = _data()

    def train() -> list[np.ndarray]:
        model = _mlp(3)
        model.compile(optimizer=make(), loss="cross_entropy")
        model.fit(x, y, epochs=3, batch_size=5, shuffle=False, verbose=0)
        return [p.data.copy() for p in model.parameters()]

    fused = train()
    monkeypatch.setattr(blas, "_ROUTINES", {})
    monkeypatch.setattr(blas, "_LOADED", True)
    plain = train()
    for a, b in zip(fused, plain):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# -- ReLU after the max pool -----------------------------------------------------


def _relu_pool_model() -> Sequential:
    from framework.layers import Conv2d, MaxPool2d

    return Sequential(
        [Conv2d(2, 3, 3, padding=1), ReLU(), MaxPool2d(2), ReLU(), MaxPool2d(2, ceil_mode=True), Flatten()]
    )


def test_relu_runs_after_a_following_max_pool() -> None:
    from framework.layers import LeakyReLU, MaxPool2d

    model = _relu_pool_model()
    names = [type(layer).__name__ for layer in model._order()]
    assert names == ["Conv2d", "MaxPool2d", "ReLU", "MaxPool2d", "ReLU", "Flatten"]
    assert [type(layer).__name__ for layer in model.layers][1:3] == ["ReLU", "MaxPool2d"]
    other = Sequential([LeakyReLU(0.1), MaxPool2d(2), ReLU(), Flatten()])
    assert [type(layer).__name__ for layer in other._order()] == ["LeakyReLU", "MaxPool2d", "ReLU", "Flatten"]


def test_relu_after_the_pool_gives_the_same_outputs_and_gradients(float64: None) -> None:
    model = _relu_pool_model()
    rng = np.random.default_rng(5)
    # Integer inputs and weights make ties inside windows, and some windows all negative.
    x = rng.integers(-3, 3, (3, 2, 9, 9)).astype(np.float64)
    model.build((None, 2, 9, 9))
    conv = model.layers[0]
    conv.weight.data[:] = rng.integers(-1, 2, conv.weight.shape)  # integer outputs: ties in the pools
    conv.bias.data[:] = 0.0
    g = rng.standard_normal((3, 3 * 2 * 2))

    def run(layers: list[Any]) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        model.zero_grad()
        h = x
        for layer in layers:
            h = layer.forward(h)
        d = g
        for layer in reversed(layers):
            d = layer.backward(d)
        return h, d, [p.grad.copy() for p in model.parameters()]

    declared = run(model.layers)
    swapped = run(model._order())
    np.testing.assert_array_equal(declared[0], swapped[0])
    np.testing.assert_array_equal(declared[1], swapped[1])
    for a, b in zip(declared[2], swapped[2]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(model.forward(x), declared[0])


def test_run_order_follows_changes_to_the_stack() -> None:
    from framework.layers import MaxPool2d

    model = Sequential([ReLU()])
    assert [type(layer).__name__ for layer in model._order()] == ["ReLU"]
    model.add(MaxPool2d(2))
    assert [type(layer).__name__ for layer in model._order()] == ["MaxPool2d", "ReLU"]
    model.pop()
    assert [type(layer).__name__ for layer in model._order()] == ["ReLU"]


def test_relu_subclass_overriding_forward_is_not_moved() -> None:
    from framework.layers import MaxPool2d

    class NoisyReLU(ReLU):
        def forward(self, x: np.ndarray) -> np.ndarray:
            return super().forward(x) + 0.1

    class PlainReLU(ReLU):  # forward inherited: the promise holds
        pass

    class OptOut(ReLU):
        monotone_elementwise = False

    for cls, moved in ((NoisyReLU, False), (PlainReLU, True), (OptOut, False)):
        model = Sequential([cls(), MaxPool2d(2)])
        first = type(model._order()[0]).__name__
        assert first == ("MaxPool2d" if moved else cls.__name__), cls.__name__


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("tail", ["flatten", "identity", "pool-flatten"])
def test_backward_never_writes_into_the_callers_gradient(mode: str, tail: str) -> None:
    """Pass-through layers hand the caller's array back; later layers must not overwrite it."""
    from framework.layers import Conv2d, Identity, MaxPool2d

    if tail == "pool-flatten":
        model = Sequential([Conv2d(1, 2, 3, padding=1), ReLU(), MaxPool2d(2), Flatten()])
        x = np.random.default_rng(0).standard_normal((3, 1, 4, 4)).astype(np.float32)
    else:
        model = Sequential([Linear(4, 5, activation="relu"), Flatten() if tail == "flatten" else Identity()])
        x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    model.train() if mode == "train" else model.eval()
    out = model.forward(x)
    g = np.random.default_rng(1).standard_normal(out.shape).astype(np.float32)
    kept = g.copy()
    model.backward(g)
    np.testing.assert_array_equal(g, kept)


def test_sgd_on_non_native_byte_order() -> None:
    p = Parameter(np.arange(1, 5, dtype=">f4"))
    opt = framework.optimizers.SGD([p], lr=0.1, momentum=0.9)
    for _ in range(2):
        p.grad[...] = 1.0
        opt.step()
    # b1 = 1, p1 = p0 - 0.1; b2 = 1.9, p2 = p1 - 0.19
    np.testing.assert_allclose(p.data, np.arange(1, 5) - 0.29, rtol=1e-6)


def test_axpby_with_overlapping_arrays() -> None:
    y = np.arange(6.0)
    blas.axpby(2.0, y, 0.5, y)
    np.testing.assert_array_equal(y, 2.5 * np.arange(6.0))
    z = np.arange(6.0)
    blas.axpby(1.0, z[:4], 2.0, z[2:])  # partly overlapping views
    np.testing.assert_array_equal(z, [0.0, 1.0, 4.0, 7.0, 10.0, 13.0])


def test_functional_model_dtype_follows_a_conversion_and_a_replacement() -> None:
    from framework import Input, Model

    x = Input((3,))
    model = Model(x, Linear(5, 2)(Linear(3, 5)(x)))
    assert model.dtype == np.float32
    assert model.predict(np.ones((2, 3))).dtype == np.float32
    model.astype(np.float64)
    assert model.predict(np.ones((2, 3), dtype=np.float32)).dtype == np.float64
    first = next(layer for layer in model.layers if isinstance(layer, Linear))
    first.weight = Parameter(first.weight.data.astype(np.float32))
    assert model.dtype == np.float32


def test_linear_on_3d_input_is_one_2d_product(float64: None, rng: np.random.Generator) -> None:
    """A (N, L, E) input runs as one (N*L, E) product; results equal the per-sample products."""
    from framework.layers import Linear

    layer = Linear(6, 5)
    x = rng.standard_normal((4, 3, 6))
    y = layer(x)
    np.testing.assert_allclose(
        y, np.einsum("nle,fe->nlf", x, layer.weight.data) + layer.bias.data, rtol=1e-12
    )
    assert y.shape == (4, 3, 5) and y.flags.c_contiguous
    g = rng.standard_normal(y.shape)
    layer.zero_grad()
    dx = layer.backward(g)
    np.testing.assert_allclose(dx, g @ layer.weight.data, rtol=1e-12)
    np.testing.assert_allclose(layer.weight.grad, np.einsum("nlf,nle->fe", g, x), rtol=1e-12)
