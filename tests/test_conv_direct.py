"""The direct lowering of a stride-1 ``Conv2d`` (:mod:`plugins.conv_direct`, compiled kernels in
:mod:`plugins.direct_kernels`): where it runs, and its output and gradients against PyTorch, finite
differences and the NumPy path, over the geometries its flat padded layout has to get right."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from framework.base.context import Context
from framework.layers import Conv1d, Conv2d
from framework.runtime import blas, jit
from framework.runtime.dtype import default_dtype
from framework.testing import check_gradients
from plugins import conv_direct, direct_kernels
from tests.support import requires_numba, requires_torch, spy_on, torch_on_one_thread  # noqa: F401

pytestmark = requires_numba

KERNELS = ("forward", "backward")
ALONE = Context()  # a layer called on its own, not as a step of a model


@pytest.fixture
def calls(monkeypatch):
    """The kernels run, in order."""
    return spy_on(monkeypatch, direct_kernels, KERNELS)


@pytest.fixture
def numba_serves(monkeypatch):
    """As in a process where numba imports and no ``framework kernels build`` or ``check`` runs its
    workloads (the family has no ahead-of-time build)."""
    monkeypatch.setattr(jit, "first_use_kernels", lambda: True)


@pytest.fixture
def always(monkeypatch, numba_serves):
    """The direct lowering for every shape it can take (no limit on the wasted grid positions)."""
    monkeypatch.setattr(conv_direct, "DIRECT_MAX_WASTE", math.inf)
    monkeypatch.setattr(conv_direct, "DIRECT_MAX_WASTE_ONE_THREAD", math.inf)


GEOMETRIES = [  # (Conv2d arguments, input shape): each stresses one part of the flat layout
    ({"in_channels": 16, "out_channels": 32, "kernel_size": 3, "padding": 1}, (5, 16, 14, 14)),
    ({"in_channels": 3, "out_channels": 5, "kernel_size": 3, "padding": 1}, (3, 3, 9, 11)),  # O % 2, C*9 % 4
    ({"in_channels": 4, "out_channels": 7, "kernel_size": (3, 5), "padding": (1, 2)}, (2, 4, 6, 13)),
    ({"in_channels": 5, "out_channels": 3, "kernel_size": 3, "padding": 2, "dilation": 2}, (2, 5, 12, 10)),
    ({"in_channels": 6, "out_channels": 4, "kernel_size": (2, 3), "dilation": (3, 1)}, (3, 6, 9, 8)),
    ({"in_channels": 7, "out_channels": 10, "kernel_size": 4, "padding": "same"}, (2, 7, 10, 12)),  # uneven
    ({"in_channels": 8, "out_channels": 6, "kernel_size": 1}, (4, 8, 7, 7)),  # no padding, no reach
    ({"in_channels": 2, "out_channels": 9, "kernel_size": 5}, (1, 2, 5, 5)),  # one output position
    ({"in_channels": 3, "out_channels": 4, "kernel_size": 3, "padding": 1}, (2, 3, 3, 40)),  # rows > a block
    ({"in_channels": 3, "out_channels": 8, "kernel_size": 3, "padding": (0, 1)}, (3, 3, 30, 2)),  # thin
    (
        {"in_channels": 4, "out_channels": 5, "kernel_size": 3, "bias": False, "activation": "relu"},
        (2, 4, 8, 9),
    ),
]


def _layer(args: dict, dtype: Any = np.float64, seed: int = 0) -> Conv2d:
    with default_dtype(dtype):
        layer = Conv2d(**args)
    rng = np.random.default_rng(seed)
    layer.weight.data[...] = rng.standard_normal(layer.weight.shape)
    if layer.bias is not None:
        layer.bias.data[...] = rng.standard_normal(layer.bias.shape)
    return layer


def _run(layer: Conv2d, x: np.ndarray, g: np.ndarray, engine: bool) -> tuple[np.ndarray, ...]:
    layer.zero_grad()
    with jit.using(engine):
        y = layer(x)
        dx = layer.backward(g)
    grads = (layer.weight.grad,) if layer.bias is None else (layer.weight.grad, layer.bias.grad)
    return (y, dx, *(grad.copy() for grad in grads))  # zero_grad reuses the gradients' arrays


def _torch_reference(layer: Conv2d, x: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, ...]:
    import torch

    w = torch.tensor(layer.weight.data, dtype=torch.float64, requires_grad=True)
    b = None if layer.bias is None else torch.tensor(layer.bias.data, dtype=torch.float64, requires_grad=True)
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    z = torch.nn.functional.conv2d(xt, w, b, padding=layer.padding, dilation=layer.dilation)
    y = torch.relu(z) if layer.activation is not None else z
    y.backward(torch.tensor(g, dtype=torch.float64))
    grads = (w.grad,) if b is None else (w.grad, b.grad)
    return tuple(t.detach().numpy() for t in (y, xt.grad, *grads))


@requires_torch
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize(("args", "shape"), GEOMETRIES)
def test_direct_lowering_equals_pytorch(calls, always, dtype, args, shape):
    rng = np.random.default_rng(1)
    layer = _layer(args, dtype)
    x = rng.standard_normal(shape).astype(dtype)
    y_shape = layer.output_shape(shape)
    g = rng.standard_normal(y_shape).astype(dtype)
    ours = _run(layer, x, g, engine=True)
    assert set(calls) == set(KERNELS), calls
    theirs = _torch_reference(layer, x, g)
    tol = 2e-5 if dtype == np.float32 else 1e-11
    for name, a, b in zip(("y", "dx", "dW", "db")[: len(ours)], ours, theirs, strict=True):
        assert a.dtype == dtype and a.shape == b.shape, name
        scale = np.abs(b).max() or 1.0
        np.testing.assert_allclose(a, b, rtol=0, atol=tol * scale, err_msg=f"{args} {shape} {name}")


@pytest.mark.parametrize("case", [0, 2, 3, 5, 8])
def test_direct_gradients_match_finite_differences(calls, always, case):
    args, shape = GEOMETRIES[case]
    x = np.random.default_rng(2).standard_normal((2, *shape[1:]))
    layer = _layer({**args, "in_channels": args["in_channels"]}, np.dtype(np.float64), seed=3)
    with jit.using(True):
        check_gradients(layer, x)
    assert set(calls) == set(KERNELS)


def test_direct_lowering_equals_the_numpy_path(calls, always, dtype):
    """The same layer and data through the direct kernels and through NumPy's im2col and products."""
    rng = np.random.default_rng(4)
    for args, shape in GEOMETRIES:
        layer = _layer(args, dtype, seed=5)
        x = rng.standard_normal(shape).astype(dtype)
        g = rng.standard_normal(layer.output_shape(shape)).astype(dtype)
        calls.clear()
        ours = _run(layer, x, g, engine=True)
        assert set(calls) == set(KERNELS)
        calls.clear()
        theirs = _run(layer, x, g, engine=False)
        assert calls == []
        tol = 5e-6 if dtype == np.float32 else 1e-12
        for name, a, b in zip(("y", "dx", "dW", "db")[: len(ours)], ours, theirs, strict=True):
            scale = np.abs(b).max() or 1.0
            np.testing.assert_allclose(a, b, rtol=0, atol=tol * scale, err_msg=f"{args} {name}")


def test_without_the_input_gradient_only_the_weights_get_gradients(calls, always, monkeypatch):
    layer = _layer({"in_channels": 8, "out_channels": 6, "kernel_size": 3, "padding": 1})
    x = np.random.default_rng(6).standard_normal((3, 8, 7, 7))
    g = np.random.default_rng(7).standard_normal((3, 6, 7, 7))
    expected = _run(layer, x, g, engine=False)
    layer.needs_input_grad = False
    calls.clear()
    ours = _run(layer, x, g, engine=True)
    assert ours[1] is None
    assert calls == ["forward", "backward"]
    np.testing.assert_allclose(ours[2], expected[2], rtol=1e-12)
    np.testing.assert_allclose(ours[3], expected[3], rtol=1e-12)


def test_the_batch_split_over_threads_gives_the_one_thread_result(monkeypatch, always):
    """Forward: bit for bit (each sample is computed alike); gradients: the per-thread sums added."""
    args = {"in_channels": 6, "out_channels": 5, "kernel_size": 3, "padding": 1}
    layer = _layer(args, np.dtype(np.float32))
    rng = np.random.default_rng(8)
    x = rng.standard_normal((7, 6, 9, 9)).astype(np.float32)
    g = rng.standard_normal((7, 5, 9, 9)).astype(np.float32)
    results = {}
    for threads in (1, 2, 3):
        monkeypatch.setattr(blas, "num_threads", lambda threads=threads: threads)
        assert conv_direct._bounds(7).tolist() == [7 * k // threads for k in range(threads + 1)]
        results[threads] = [a.copy() for a in _run(layer, x, g, engine=True)]
    for threads in (2, 3):
        np.testing.assert_array_equal(results[threads][0], results[1][0])
        np.testing.assert_array_equal(results[threads][1], results[1][1])
        for a, b in zip(results[threads][2:], results[1][2:], strict=True):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-6 * np.abs(b).max())


def test_a_layer_called_twice_before_its_backwards_keeps_each_calls_input(always):
    """Each call keeps its own padded input on its context (a shared layer, as in a siamese model)."""
    layer = _layer({"in_channels": 4, "out_channels": 3, "kernel_size": 3, "padding": 1})
    rng = np.random.default_rng(9)
    x1, x2 = rng.standard_normal((2, 2, 4, 6, 6))
    g1, g2 = rng.standard_normal((2, 2, 3, 6, 6))
    with jit.using(True):
        c1, c2 = Context(True), Context(True)
        layer.forward(c1, x1)
        layer.forward(c2, x2)
        layer.zero_grad()
        dx2 = layer.backward(c2, g2)
        dx1 = layer.backward(c1, g1)
        both = layer.weight.grad.copy()
    e1, e2 = (_run(layer, x, g, engine=False) for x, g in ((x1, g1), (x2, g2)))
    np.testing.assert_allclose(dx1, e1[1], rtol=1e-12)
    np.testing.assert_allclose(dx2, e2[1], rtol=1e-12)
    np.testing.assert_allclose(both, e1[2] + e2[2], rtol=1e-12)


def test_conv1d_runs_the_direct_lowering_too(calls, always, dtype):
    with default_dtype(dtype):
        layer = Conv1d(6, 4, 5, padding=2)
    rng = np.random.default_rng(10)
    x = rng.standard_normal((3, 6, 20)).astype(dtype)
    g = rng.standard_normal((3, 4, 20)).astype(dtype)
    ours = _run(layer, x, g, engine=True)
    assert set(calls) == set(KERNELS)
    theirs = _run(layer, x, g, engine=False)
    tol = 5e-6 if dtype == np.float32 else 1e-12
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=tol * np.abs(b).max())


@pytest.mark.parametrize(
    ("args", "shape", "why"),
    [
        ({"in_channels": 16, "kernel_size": 3, "stride": 2, "padding": 1}, (2, 16, 8, 8), "stride"),
        ({"in_channels": 16, "kernel_size": 3, "groups": 2, "padding": 1}, (2, 16, 8, 8), "groups"),
        ({"in_channels": 16, "kernel_size": 5}, (2, 16, 10, 10), "waste 112/36"),
        ({"in_channels": 16, "kernel_size": 3}, (2, 16, 6, 6), "waste 112/16"),
        ({"in_channels": 16, "kernel_size": 3, "padding": 1}, (0, 16, 8, 8), "empty batch"),
    ],
)
def test_where_the_direct_lowering_does_not_run(numba_serves, args, shape, why):
    layer = Conv2d(out_channels=8, **args)
    with jit.using(True):
        assert not conv_direct.usable(layer, ALONE, np.zeros(shape, np.float32)), why


def test_the_default_limits_take_the_benchmarked_layer_and_refuse_what_is_not_compiled(monkeypatch):
    layer = Conv2d(16, 32, 3, padding=1)
    x = np.zeros((64, 16, 14, 14), np.float32)
    monkeypatch.setattr(blas, "num_threads", lambda: 2)
    with jit.using(True):
        monkeypatch.setattr(jit, "first_use_kernels", lambda: False)  # numba does not import
        assert not conv_direct.usable(layer, ALONE, x)
        monkeypatch.setattr(jit, "first_use_kernels", lambda: True)
        assert conv_direct.usable(layer, ALONE, x)
        assert not conv_direct.usable(layer, ALONE, x.astype(np.float16))
        assert not conv_direct.usable(layer, ALONE, x.astype(np.float64))  # not the weight's dtype
        assert conv_direct.usable(layer, ALONE, np.asfortranarray(x))  # copied once
    with jit.using(False):
        assert not conv_direct.usable(layer, ALONE, x)


@pytest.mark.parametrize("blocked", ["lock taken", "forked child"])
def test_parts_run_in_the_calling_thread_where_numbas_threads_cannot(monkeypatch, always, blocked):
    """Another thread's launch in progress, or a process forked after a launch (OpenMP's threads do not
    survive a fork): the parts run one after another here, with the same result."""
    monkeypatch.setattr(blas, "num_threads", lambda: 2)
    layer = _layer({"in_channels": 6, "out_channels": 5, "kernel_size": 3, "padding": 1})
    rng = np.random.default_rng(11)
    x, g = rng.standard_normal((4, 6, 8, 8)), rng.standard_normal((4, 5, 8, 8))
    expected = _run(layer, x, g, engine=True)
    seen = []
    original = direct_kernels._kernels

    def family():
        kernels = original()
        return {name: (lambda *a, name=name: seen.append(name) or kernels[name](*a)) for name in kernels}

    monkeypatch.setattr(direct_kernels, "_kernels", family)
    if blocked == "lock taken":
        assert conv_direct._launch.acquire(blocking=False)
    else:
        monkeypatch.setattr(conv_direct, "_launched_in", -1)
    try:
        ours = _run(layer, x, g, engine=True)
    finally:
        if blocked == "lock taken":
            conv_direct._launch.release()
    assert seen == ["forward_serial", "backward_serial"]
    for a, b in zip(ours, expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_the_build_and_check_run_the_lowering_a_process_without_numba_takes(monkeypatch):
    """While ``framework kernels build`` or ``check`` runs the workloads, the direct lowering stands
    aside: a process where numba does not import cannot take it, so the build must compile the other
    lowering's kernels, and ``check`` must not import numba for it."""
    layer = Conv2d(8, 4, 3, padding=1)
    x = np.zeros((2, 8, 14, 14), np.float32)  # 224 grid positions for 196 outputs: taken at any thread count
    with jit.using(True):
        assert jit.first_use_kernels()  # numba imports here
        assert conv_direct.usable(layer, ALONE, x)
        monkeypatch.setattr(jit, "_workloads_running", True)  # as in ahead._record and ahead.check
        assert not jit.first_use_kernels()
        assert not conv_direct.usable(layer, ALONE, x)


def test_the_family_is_compiled_at_first_use_never_ahead(monkeypatch, tmp_path):
    """numba's ahead-of-time compiler cannot build ``parallel=True`` kernels: ``framework kernels build``
    skips the family, ``status`` says so, and ``check`` does not count it as unbuilt."""
    from framework.runtime import ahead

    monkeypatch.setenv("FRAMEWORK_KERNEL_CACHE", str(tmp_path))
    family = direct_kernels._kernels
    assert family.ahead is False
    rows = dict(ahead.status())
    assert rows[family.name] == "compiled at first use only (parallel kernels: not built ahead)"
    assert ahead.build(families=[family], workloads=[]) == []
    assert not any(tmp_path.rglob("*.json"))


@pytest.mark.parametrize(
    ("shape", "kernel", "padding", "two", "one"),
    [
        ((8, 16, 14, 14), 3, 1, True, True),  # 224 / 196 = 1.14
        ((8, 6, 14, 14), 5, 0, True, False),  # LeNet-5's second layer: 224 / 100 = 2.24
        ((8, 16, 10, 10), 3, 0, True, False),  # 112 / 64 = 1.75
        ((8, 1, 28, 28), 5, 2, True, True),  # 5 taps deep: no limit on the taps
        ((8, 16, 10, 10), 5, 0, False, False),  # 112 / 36 = 3.1
    ],
)
def test_the_wasted_positions_decide_at_one_and_two_threads(
    monkeypatch, numba_serves, shape, kernel, padding, two, one
):
    layer = Conv2d(shape[1], 4, kernel, padding=padding)
    x = np.zeros(shape, np.float32)
    with jit.using(True):
        for threads, expected in ((2, two), (1, one)):
            monkeypatch.setattr(blas, "num_threads", lambda threads=threads: threads)
            assert conv_direct.usable(layer, ALONE, x) is expected, threads


def test_a_step_of_a_model_takes_the_other_lowerings(calls, always):
    """Inside a model (``ctx.nested``) the other layers' products keep OpenBLAS's threads spinning: the
    convolution runs the lowerings built on BLAS there, and on its own it runs direct."""
    from framework.models.sequential import Sequential

    layer = _layer({"in_channels": 4, "out_channels": 3, "kernel_size": 3, "padding": 1}, np.float32)
    x = np.random.default_rng(12).standard_normal((2, 4, 6, 6)).astype(np.float32)
    with jit.using(True):
        assert not conv_direct.usable(layer, Context(nested=True), x)
        Sequential([layer])(x)
        assert calls == []
        layer(x)
        assert calls == ["forward"]
