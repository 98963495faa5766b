"""Bug hunt: the plugin-author kit ``framework.testing`` must FAIL on a broken plugin.

Every test here hands the kit a deliberately broken layer, optimizer or loss (the
small classes below, each broken in ONE way) and asserts that the right check
fails, with a message naming the object and the problem; a correct twin passes.
The finite-difference helpers are checked against closed-form derivatives, on
views, non-contiguous and integer arrays. Finally, the built-in layers' own
conformance tests (``tests/test_builtins_conformance.py``) are shown able to
fail: a built-in's backward is monkeypatched to be wrong by 1%, and the kit's
check on that table's entry must fail.

Every bug found here lay in ``framework/testing`` and is fixed, so nothing is
marked xfail; ``test_cell_weight_hh_is_not_exercised...`` pins a coverage gap of
``tests/test_builtins_conformance.py`` (the kit now reports it).
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from support import requires_h5py

import framework
from framework import hookimpl, layers
from framework.base.context import Context
from framework.base.layer import Layer
from framework.base.loss import Loss
from framework.base.optimizer import Optimizer
from framework.base.parameter import Buffer, Parameter
from framework.errors import DataError, FrameworkError, ShapeError
from framework.registry.manager import REGISTRY
from framework.runtime.dtype import get_default_dtype
from framework.testing import (
    ConformanceError,
    check_gradients,
    check_layer,
    check_loss,
    check_optimizer,
    numerical_gradient,
    relative_error,
)
from framework.testing.gradients import DIRECTIONS, MAX_ENTRIES

# -- the finite-difference helpers ------------------------------------------------------------


KNOWN: list[tuple[str, Callable[[np.ndarray], float], Callable[[np.ndarray], np.ndarray]]] = [
    ("cubic", lambda x: float(np.sum(x**3 - 2 * x)), lambda x: 3 * x**2 - 2),
    (
        "sin_exp",
        lambda x: float(np.sum(np.sin(x) * np.exp(x))),
        lambda x: np.exp(x) * (np.sin(x) + np.cos(x)),
    ),
    ("log_sum_exp", lambda x: float(np.log(np.sum(np.exp(x)))), lambda x: np.exp(x) / np.sum(np.exp(x))),
    (
        "quadratic_form",
        lambda x: float(x.ravel() @ _A @ x.ravel()),
        lambda x: ((_A + _A.T) @ x.ravel()).reshape(x.shape),
    ),
    ("norm", lambda x: float(np.sqrt(np.sum(x**2))), lambda x: x / np.sqrt(np.sum(x**2))),
]
_A = np.random.default_rng(5).standard_normal((12, 12))


@pytest.mark.parametrize(("name", "f", "df"), KNOWN, ids=[k[0] for k in KNOWN])
@pytest.mark.parametrize("layout", ["contiguous", "transposed", "fortran", "reversed", "strided_view"])
def test_numerical_gradient_matches_closed_form(name: str, f: Any, df: Any, layout: str) -> None:
    """Central differences in float64 agree with the derivative to ~1e-7, for any memory layout."""
    base = np.random.default_rng(1).uniform(-1.5, 1.5, (4, 3))
    owner = None
    if layout == "contiguous":
        x = base.copy()
    elif layout == "transposed":
        x = np.ascontiguousarray(base.T).T  # (4, 3), F-ordered view of a (3, 4) array
    elif layout == "fortran":
        x = np.asfortranarray(base)
    elif layout == "reversed":
        x = base[::-1, ::-1].copy()[::-1, ::-1]  # negative strides, the values of ``base``
    else:  # a view into a bigger array, every other column: not expressible as a flat view
        owner = np.zeros((4, 6))
        owner[:, ::2] = base
        x = owner[:, ::2]
    assert np.array_equal(x, base)
    before = x.copy()
    got = numerical_gradient(lambda: f(x), x)
    assert got.shape == x.shape
    assert relative_error(got, df(base)) < 1e-7, f"{layout}: {relative_error(got, df(base)):.3e}"
    assert np.array_equal(x, before), "numerical_gradient must restore the array"
    if owner is not None:
        assert np.all(owner[:, 1::2] == 0.0), "the other entries of the base array were touched"


def test_numerical_gradient_of_a_parameter_view_reaches_the_base() -> None:
    """A parameter whose data is a non-contiguous view: perturbing it must perturb what f reads."""
    big = np.random.default_rng(2).standard_normal((5, 4))
    view = big.T  # f reads ``big``; the gradient is taken with respect to the view
    got = numerical_gradient(lambda: float(np.sum(np.tanh(big))), view)
    assert relative_error(got, (1 - np.tanh(big) ** 2).T) < 1e-7


def test_numerical_gradient_of_float32_array_uses_the_step_actually_taken() -> None:
    """float32 storage rounds ``x + eps``; dividing by the real step keeps the estimate accurate."""
    x = np.random.default_rng(3).uniform(0.5, 4.0, 20).astype(np.float32)
    got = numerical_gradient(lambda: float(np.sum(x.astype(np.float64) ** 2)), x)
    assert relative_error(got, 2 * x.astype(np.float64)) < 1e-5


def test_numerical_gradient_refuses_integer_arrays() -> None:
    """An integer array cannot be perturbed by eps: refuse, instead of returning garbage."""
    idx = np.arange(6)
    with pytest.raises(DataError, match=r"int64.*floating"):
        numerical_gradient(lambda: float(np.sum(idx**2)), idx)


def test_numerical_gradient_refuses_read_only_arrays() -> None:
    x = np.ones(3)
    x.setflags(write=False)
    with pytest.raises(DataError, match="read-only"):
        numerical_gradient(lambda: float(x.sum()), x)


def test_numerical_gradient_refuses_non_scalar_functions() -> None:
    x = np.ones(3)
    with pytest.raises(DataError, match=r"scalar.*\(3,\)"):
        numerical_gradient(lambda: x * 2, x)


def test_numerical_gradient_restores_the_array_when_f_raises() -> None:
    x = np.ones(3)
    calls = [0]

    def f() -> float:
        calls[0] += 1
        if calls[0] == 2:
            raise RuntimeError("boom")
        return float(np.sum(x))

    with pytest.raises(RuntimeError, match="boom"):
        numerical_gradient(f, x)
    assert np.array_equal(x, np.ones(3))


def test_relative_error_is_symmetric_and_scale_free() -> None:
    rng = np.random.default_rng(4)
    for _ in range(20):
        a, b = rng.standard_normal((2, 3, 5))
        assert relative_error(a, b) == pytest.approx(relative_error(b, a), rel=1e-15)
        assert relative_error(1e-9 * a, 1e-9 * b) == pytest.approx(relative_error(a, b), rel=1e-9)
        assert 0.0 <= relative_error(a, b) <= 1.0
    a = rng.standard_normal(7)
    assert relative_error(a, a) == 0.0
    assert relative_error(a, -a) == 1.0
    assert relative_error(a, 1.01 * a) == pytest.approx(0.01 / 2.01)


def test_relative_error_handles_zeros() -> None:
    z = np.zeros(4)
    assert relative_error(z, z) == 0.0
    assert relative_error(z, np.ones(4)) == 1.0
    assert relative_error(np.ones(4), z) == 1.0
    assert relative_error(np.float64(0.0), 0.0) == 0.0
    assert np.isnan(relative_error(np.array([np.nan]), np.array([1.0])))


@pytest.mark.parametrize(("a", "b"), [((1,), (3,)), ((2, 3), (3, 2)), ((6,), (2, 3)), ((3,), (1, 3))])
def test_relative_error_refuses_shape_mismatch(a: tuple[int, ...], b: tuple[int, ...]) -> None:
    """Broadcasting or raveling two shapes into one comparison would hide a wrong-shaped gradient."""
    with pytest.raises(ShapeError, match=rf"{a[0]}.*{b[0]}"):
        relative_error(np.ones(a), np.ones(b))


# -- layers for check_gradients / check_layer: one correct, many broken in one way ------------


class HuntScale(Layer):
    """Correct: ``y = factor * w * x + b`` with per-feature ``w``, ``b``; context form."""

    def __init__(self, factor: float = 1.0, *, name: str | None = None) -> None:
        super().__init__(name=name)
        self.factor = float(factor)
        self.weight: Parameter | None = None
        self.bias: Parameter | None = None

    def build(self, input_shape: Any) -> None:
        rng = np.random.default_rng(0)
        dtype = get_default_dtype()
        self.weight = Parameter(rng.uniform(0.5, 1.5, input_shape[-1]).astype(dtype))
        self.bias = Parameter(rng.uniform(-1.0, 1.0, input_shape[-1]).astype(dtype))
        super().build(input_shape)

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        ctx.x = x
        return self.factor * self.weight.data * x + self.bias.data

    def _grads(self, x: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(dL/dx, dL/dw, dL/db) for input ``x`` and upstream ``g``."""
        flat = (-1, g.shape[-1])
        return (
            self.factor * self.weight.data * g,
            self.factor * (g * x).reshape(flat).sum(axis=0),
            g.reshape(flat).sum(axis=0),
        )

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        gx, gw, gb = self._grads(ctx.x, grad_out)
        self.weight.add_grad(gw)
        self.bias.add_grad(gb)
        return gx

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "factor": self.factor}


class _Scaled(HuntScale):
    """Base of the broken ones: scale one of the three gradients by ``wrong``."""

    which = "input"
    wrong = 1.01

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        grads = dict(zip(("input", "weight", "bias"), self._grads(ctx.x, grad_out)))
        grads[self.which] = grads[self.which] * self.wrong
        self.weight.add_grad(grads["weight"])
        self.bias.add_grad(grads["bias"])
        return grads["input"]


class HuntInputOff1pc(_Scaled):
    """Broken: dL/dx 1% too large."""


class HuntWeightOff1pc(_Scaled):
    """Broken: dL/dw 1% too large (the input gradient is right)."""

    which = "weight"


class HuntBiasOff1pc(_Scaled):
    """Broken: dL/db 1% too large, nothing else."""

    which = "bias"


class HuntFirstSampleOnly(HuntScale):
    """Broken for batch > 1 only: dL/dw from the first sample."""

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        gx, _, gb = self._grads(ctx.x, grad_out)
        self.weight.add_grad(self.factor * (grad_out * ctx.x).reshape(-1, grad_out.shape[-1])[0])
        self.bias.add_grad(gb)
        return gx


class HuntFloat32Only(HuntScale):
    """Broken in float32 only: dL/dx 1% too large when the call runs in float32."""

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        gx = super().backward(ctx, grad_out)
        return gx * np.float32(1.01) if grad_out.dtype == np.float32 else gx


class HuntFloat32WeightOnly(HuntScale):
    """Broken in float32 only, for the weight's gradient alone."""

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        gx, gw, gb = self._grads(ctx.x, grad_out)
        self.weight.add_grad(gw * np.float32(1.01) if grad_out.dtype == np.float32 else gw)
        self.bias.add_grad(gb)
        return gx


class HuntIgnoresUpstream(HuntScale):
    """Broken: the input gradient ignores grad_out's values (as if L = sum(y))."""

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        super().backward(ctx, grad_out)
        return self.factor * self.weight.data * np.ones_like(grad_out)


class HuntClipsUpstream(HuntScale):
    """Broken: clips grad_out to [-1, 1] (a large upstream gradient loses its scale)."""

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        return super().backward(ctx, np.clip(grad_out, -1.0, 1.0))


class HuntNormalisesUpstream(HuntScale):
    """Broken: divides grad_out by its largest magnitude (ignores the upstream scale)."""

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        return super().backward(ctx, grad_out / np.max(np.abs(grad_out)))


class HuntScribblesInput(HuntScale):
    """Broken: forward writes into its input (after using it)."""

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        out = super().forward(ctx, x.copy())
        x[...] = 0.0
        return out


class HuntClampsInputInPlace(HuntScale):
    """Broken: forward clamps its input in place (np.maximum(x, 0, out=x)), a 'harmless' ReLU-first."""

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        np.maximum(x, 0.0, out=x)
        return super().forward(ctx, x)

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        gx = super().backward(ctx, grad_out)
        return gx * (ctx.x > 0)


class HuntScribblesGradOut(HuntScale):
    """Broken: backward multiplies grad_out in place although ctx.grad_out_writable is False."""

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        _gx, gw, gb = self._grads(ctx.x, grad_out)
        self.weight.add_grad(gw)
        self.bias.add_grad(gb)
        grad_out *= self.factor * self.weight.data
        return grad_out


class HuntStateOnSelf(HuntScale):
    """Broken: context form, but the input is kept on ``self`` (shared use / threads break)."""

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        self._last_x = x
        return self.factor * self.weight.data * x + self.bias.data

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        gx, gw, gb = self._grads(self._last_x, grad_out)
        self.weight.add_grad(gw)
        self.bias.add_grad(gb)
        return gx


class HuntReadsSelfTraining(HuntScale):
    """Broken: reads ``self.training`` instead of ``ctx.training`` (predict would run in train mode)."""

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        ctx.scale = 2.0 if self.training else 1.0
        return super().forward(ctx, x) * ctx.scale

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        return super().backward(ctx, grad_out * ctx.scale)


class HuntLyingOutputShape(HuntScale):
    """Broken: output_shape drops the batch axis's ``None`` (answers a fixed batch of 1)."""

    def output_shape(self, input_shape: Any) -> Any:
        return (1, *tuple(input_shape)[1:])


class HuntLostFactor(HuntScale):
    """Broken: get_config forgets ``factor``."""

    def get_config(self) -> dict[str, Any]:
        return Layer.get_config(self)


class HuntRunningMean(HuntScale):
    """Correct: keeps a running mean of the input (a Buffer) and adds it in eval mode."""

    def __init__(self, factor: float = 1.0, momentum: float = 0.1, *, name: str | None = None) -> None:
        super().__init__(factor, name=name)
        self.momentum = float(momentum)
        self.running: Buffer | None = None

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        self.running = Buffer(np.zeros(input_shape[-1], dtype=get_default_dtype()))

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        if ctx.training:
            mean = x.reshape(-1, x.shape[-1]).mean(axis=0)
            self.running.data[...] = (1 - self.momentum) * self.running.data + self.momentum * mean
            return super().forward(ctx, x)
        return super().forward(ctx, x) + self.running.data

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "momentum": self.momentum}


class HuntLostMomentum(HuntRunningMean):
    """Broken: get_config forgets ``momentum``, which only matters in training mode."""

    def get_config(self) -> dict[str, Any]:
        return HuntScale.get_config(self)


class HuntTrainScale(HuntScale):
    """Broken: ``train_scale`` multiplies the output in training mode only and get_config forgets it."""

    def __init__(self, factor: float = 1.0, train_scale: float = 1.0, *, name: str | None = None) -> None:
        super().__init__(factor, name=name)
        self.train_scale = float(train_scale)

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        ctx.s = self.train_scale if ctx.training else 1.0
        return super().forward(ctx, x) * ctx.s

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        return super().backward(ctx, grad_out * ctx.s)


class HuntPlainArrayState(HuntScale):
    """Broken: the running mean is a plain ndarray on self, so checkpoints lose it."""

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        self.running = np.zeros(input_shape[-1], dtype=get_default_dtype())

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        if ctx.training:
            self.running = 0.9 * self.running + 0.1 * x.reshape(-1, x.shape[-1]).mean(axis=0)
            return super().forward(ctx, x)
        return super().forward(ctx, x) + self.running


class HuntPairPlainState(Layer):
    """Broken, two inputs: ``y = a + b + running`` in eval mode, ``running`` a plain array on self."""

    def build(self, input_shape: Any) -> None:
        self.running = np.zeros(input_shape[0][-1], dtype=get_default_dtype())
        super().build(input_shape)

    def forward(self, ctx: Context, x: Any) -> np.ndarray:
        a, b = x
        if ctx.training:
            self.running = 0.9 * self.running + 0.1 * a.mean(axis=0)
            return a + b
        return a + b + self.running

    def backward(self, ctx: Context, grad_out: np.ndarray) -> list[np.ndarray]:
        return [grad_out, grad_out]

    def output_shape(self, input_shape: Any) -> Any:
        return tuple(input_shape[0])


class _ShiftHolder:
    """A helper object of the plugin's own, holding a Parameter."""

    def __init__(self, size: int) -> None:
        self.shift = Parameter(np.zeros(size, dtype=get_default_dtype()))


class HuntParamsInHelper(HuntScale):
    """Broken: a third Parameter kept on a helper object, which parameter discovery does not search."""

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        self.extra = _ShiftHolder(input_shape[-1])

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        return super().forward(ctx, x) + self.extra.shift.data

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        self.extra.shift.add_grad(grad_out.reshape(-1, grad_out.shape[-1]).sum(axis=0))
        return super().backward(ctx, grad_out)


class HuntParamsInSet(HuntScale):
    """Broken: a Parameter kept in a set (a container discovery does not search)."""

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        self.extras = {Parameter(np.zeros(input_shape[-1], dtype=get_default_dtype()))}

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        return super().forward(ctx, x) + next(iter(self.extras)).data


class HuntUpcasts(HuntScale):
    """Broken: a NumPy float64 scalar promotes a float32 output to float64 (NEP 50)."""

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        return super().forward(ctx, x) * np.float64(1.0)


class HuntKeepsReturnedGrad(HuntScale):
    """Broken: declares ``returns_fresh_grad`` but keeps the returned array on the context."""

    returns_fresh_grad = True

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        ctx.kept = super().backward(ctx, grad_out)
        return ctx.kept


class HuntFreshHonest(HuntScale):
    """Correct: declares ``returns_fresh_grad`` and returns a new array."""

    returns_fresh_grad = True


class HuntOlderForm(HuntScale):
    """Correct, in the older form: state on self, which the adapter serves one call at a time."""

    def forward(self, x: np.ndarray) -> np.ndarray:  # type: ignore[override]
        self._x = x
        return self.factor * self.weight.data * x + self.bias.data

    def backward(self, grad_out: np.ndarray) -> np.ndarray:  # type: ignore[override]
        gx, gw, gb = self._grads(self._x, grad_out)
        self.weight.add_grad(gw)
        self.bias.add_grad(gb)
        return gx


HUNT_LAYERS = [
    obj for obj in list(globals().values()) if isinstance(obj, type) and obj.__name__.startswith("Hunt")
]


class _HuntPlugin:
    @hookimpl
    def register_layers(self, register: Any) -> None:
        for cls in HUNT_LAYERS:
            register(cls)


@pytest.fixture(scope="module", autouse=True)
def _registered() -> None:
    """Register the layers once, as a plugin would (the registry and checkpoint checks need it)."""
    if not REGISTRY.contains("layers", "HuntScale"):
        REGISTRY.register_plugin(_HuntPlugin(), name="testing-hunt", distribution="tests-testing-hunt")


def _report(layer: Layer, shape: Any = (4, 3), **kwargs: Any) -> Any:
    return check_layer(layer, shape, raise_on_failure=False, **kwargs)


CORRECT = [HuntScale, HuntRunningMean, HuntFreshHonest, HuntOlderForm]


@requires_h5py
@pytest.mark.parametrize("cls", CORRECT, ids=lambda c: c.__name__)
def test_correct_layers_pass_every_check(cls: type) -> None:
    report = _report(cls(2.5))
    assert report.checks("FAIL") == [], str(report)
    assert {"gradients", "output_shape", "config", "checkpoint", "dtype_float32", "backward"} <= set(
        report.checks("ok")
    )


#: (broken class, constructor kwargs, the checks that must fail, fragments the message must hold)
BROKEN: list[tuple[type, dict[str, Any], set[str], list[str]]] = [
    (HuntInputOff1pc, {}, {"gradients"}, ["input", "FAIL"]),
    (HuntWeightOff1pc, {}, {"gradients"}, ["weight", "FAIL"]),
    (HuntBiasOff1pc, {}, {"gradients"}, ["bias", "FAIL"]),
    (HuntFirstSampleOnly, {}, {"gradients"}, ["weight", "FAIL"]),
    (HuntIgnoresUpstream, {}, {"gradients"}, ["input"]),
    (HuntClipsUpstream, {}, {"gradients"}, ["input"]),
    (HuntNormalisesUpstream, {}, {"gradients"}, ["input"]),
    (HuntFloat32Only, {}, {"dtype_float32"}, ["float32", "input gradient"]),
    (HuntFloat32WeightOnly, {}, {"dtype_float32"}, ["float32", "weight"]),
    (HuntScribblesInput, {}, {"arrays"}, ["forward", "input", "in place"]),
    (HuntClampsInputInPlace, {}, {"arrays"}, ["forward", "input", "in place"]),
    (HuntScribblesGradOut, {}, {"arrays"}, ["backward", "grad_out", "in place"]),
    (HuntKeepsReturnedGrad, {}, {"arrays"}, ["returns_fresh_grad"]),
    (HuntStateOnSelf, {}, {"context"}, ["two calls", "ctx"]),
    (HuntReadsSelfTraining, {}, {"context"}, ["ctx.training"]),
    (HuntLyingOutputShape, {}, {"output_shape"}, ["(1, 3)", "(None, 3)"]),
    (HuntUpcasts, {}, {"dtype_float32"}, ["output is float64"]),
    (HuntParamsInHelper, {}, {"parameters"}, ["extra.shift", "not discovered"]),
    (HuntParamsInSet, {}, {"parameters"}, ["extras[0]", "not discovered"]),
    (HuntPlainArrayState, {}, {"checkpoint"}, ["after saving and loading"]),
    (HuntLostFactor, {"factor": 3.0}, {"config", "checkpoint"}, ["factor"]),
    (HuntLostMomentum, {"momentum": 0.5}, {"config"}, ["momentum"]),
    (HuntTrainScale, {"train_scale": 3.0}, {"config"}, ["train_scale"]),
]


@requires_h5py
@pytest.mark.parametrize(
    ("cls", "kwargs", "failing", "fragments"), BROKEN, ids=[b[0].__name__ for b in BROKEN]
)
def test_broken_layer_fails_the_right_check(
    cls: type, kwargs: dict[str, Any], failing: set[str], fragments: list[str]
) -> None:
    layer = cls(**({"factor": 2.0} | kwargs))
    with pytest.raises(ConformanceError) as info:
        check_layer(layer, (4, 3))
    message = str(info.value)
    assert cls.__name__ in message.splitlines()[0], message
    # the failed checks as the raised report names them (``str(ConformanceReport)``: one
    # ``  [FAIL] <check>: ...`` line each), read from the one run instead of a second one
    named = {
        line[len("  [FAIL] ") :].split(":", 1)[0]
        for line in message.splitlines()
        if line.startswith("  [FAIL] ")
    }
    assert named == failing, message
    failed_lines = "\n".join(
        line for line in message.splitlines() if "[FAIL]" in line or line.startswith(" ")
    )
    for fragment in fragments:
        assert fragment in failed_lines, f"{fragment!r} not in:\n{message}"


@requires_h5py
def test_state_lost_by_a_checkpoint_is_caught_for_a_layer_of_two_inputs() -> None:
    report = _report(HuntPairPlainState(), [(4, 3), (4, 3)])
    assert report.checks("FAIL") == ["checkpoint"], str(report)
    assert "after saving and loading" in str(report)


@requires_h5py
@pytest.mark.parametrize("folder", ["memory", "temp"])
def test_the_checkpoint_check_writes_a_real_file_in_memory_or_in_the_temp_folder(
    monkeypatch: pytest.MonkeyPatch, folder: str
) -> None:
    """The scratch file goes to /dev/shm where usable, else to the temp folder: both catch lost state."""
    import framework.testing._checkpoint as scratch

    if folder == "temp":
        monkeypatch.setattr(scratch, "_MEMORY_FOLDER", "/no/such/folder")
    assert (scratch._scratch_folder(1 << 10) is None) == (folder == "temp" or not os.path.isdir("/dev/shm"))
    assert scratch._scratch_folder(1 << 60) is None  # no room: the temp folder
    others = ("gradients", "output_shape", "config", "registry", "train_eval", "dtype_float32",
              "dtype_float64", "backward", "arrays", "context", "parameters", "batch_last")  # fmt: skip
    assert _report(HuntPlainArrayState(2.0), skip=others).checks("FAIL") == ["checkpoint"]
    assert _report(HuntScale(2.0), skip=others).checks("ok") == ["forward", "checkpoint"]


@requires_h5py
@pytest.mark.parametrize("name", ["BatchNorm", "LayerNorm", "Dropout"])
def test_a_layer_already_trained_is_not_a_false_failure(name: str) -> None:
    """A used layer's counters (BatchNorm's num_batches_tracked) are state, not lost constructor arguments."""
    kwargs = (
        {"num_features": 3} if name == "BatchNorm" else {"normalized_shape": 3} if name == "LayerNorm" else {}
    )
    layer = layers.get(name, **kwargs)
    x = np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32)
    for _ in range(3):
        layer(x)
    layer.eval()
    assert _report(layer).checks("FAIL") == []


def test_check_layer_leaves_the_callers_input_alone_even_for_a_scribbling_layer() -> None:
    x = np.random.default_rng(0).standard_normal((4, 3))
    before = x.copy()
    _report(HuntScribblesInput(), x=x)
    assert np.array_equal(x, before)


def test_older_form_layer_is_not_flagged_for_state_on_self() -> None:
    """The adapter refuses shared use of an older-form layer itself; the kit checks that and passes it."""
    report = _report(HuntOlderForm())
    assert "context" in report.checks("ok")
    assert [r.detail for r in report.results if r.check == "context"] == [
        "older form forward(x): its adapter refuses a second call in flight"
    ]


def test_state_on_self_gives_a_shared_layer_wrong_gradients_as_the_kit_says() -> None:
    """What the ``context`` check predicts happens in a model: a layer shared by two nodes mixes them up."""

    def weight_grad(cls: type) -> np.ndarray:
        with _float64():
            a, b = framework.Input((3,)), framework.Input((3,))
            lay = cls(2.0)
            model = framework.Model([a, b], layers.get("Add")([lay(a), lay(b)]))
            y = model.forward([np.ones((2, 3)), np.full((2, 3), 5.0)])
            model.zero_grad()
            model.backward(np.ones_like(y))
        return lay.weight.grad.copy()

    # dL/dw = factor * sum over both calls of x = 2 * (2 * 1 + 2 * 5) = 24 per feature
    assert np.allclose(weight_grad(HuntScale), 24.0)
    assert np.allclose(weight_grad(HuntStateOnSelf), 40.0)  # call B's input used twice: silently wrong
    report = _report(HuntStateOnSelf())
    assert report.checks("FAIL") == ["context"]


# -- check_gradients on its own (what docs/plugins.md tells authors to run) --------------------


@contextlib.contextmanager
def _float64() -> Iterator[None]:
    """Build in float64 inside the block; the previous default dtype after it."""
    old = framework.get_default_dtype()
    framework.set_default_dtype("float64")
    try:
        yield
    finally:
        framework.set_default_dtype(old)


def _built64(layer: Layer, shape: tuple[int, ...] = (4, 3)) -> Layer:
    with _float64():
        layer.build((None, *shape[1:]))
    return layer


class HuntCentred(HuntScale):
    """Correct: ``y = z - mean_batch(z)``, ``z = w x + b``, so dL/db is exactly zero."""

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        self.bias.data[...] *= 10.0

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        z = super().forward(ctx, x)
        return z - z.mean(axis=0)

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        return super().backward(ctx, grad_out - grad_out.mean(axis=0))


class HuntSoftmaxShift(HuntScale):
    """Correct: ``y = softmax(w x + b)`` over the batch axis: a per-feature ``b`` cancels, so db = 0."""

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        z = super().forward(ctx, x)
        e = np.exp(z - z.max(axis=0))
        ctx.y = e / e.sum(axis=0)
        return ctx.y

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        y = ctx.y
        gz = y * (grad_out - np.sum(grad_out * y, axis=0))
        return super().backward(ctx, gz)


@pytest.mark.parametrize("cls", [HuntCentred, HuntSoftmaxShift], ids=lambda c: c.__name__)
def test_zero_gradient_parameter_is_not_a_false_failure(cls: type) -> None:
    """A parameter whose true gradient is 0 gets finite-difference noise only: that is not an error."""
    layer = _built64(cls(1.7), (8, 5))
    x = 3.0 * np.random.default_rng(0).standard_normal((8, 5))
    report = check_gradients(layer, x)
    assert report.ok, str(report)
    assert np.abs(layer.bias.grad).max() < 1e-12


@pytest.mark.parametrize("cls", [HuntCentred, HuntSoftmaxShift], ids=lambda c: c.__name__)
def test_zero_gradient_parameter_still_catches_a_nonzero_backward(cls: type) -> None:
    class Leaky(cls):  # type: ignore[misc, valid-type]
        def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
            gx = super().backward(ctx, grad_out)
            self.bias.add_grad(1e-4 * grad_out.sum(axis=0))
            return gx

    layer = _built64(Leaky(1.7), (8, 5))
    report = check_gradients(
        layer, 3.0 * np.random.default_rng(0).standard_normal((8, 5)), raise_on_failure=False
    )
    assert not report.ok and report.errors["bias"] > 1e-6, str(report)


class HuntReluScale(HuntScale):
    """Correct: ``y = w * relu(x) + b``."""

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        return super().forward(ctx, np.maximum(x, 0.0))

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        return super().backward(ctx, grad_out) * (ctx.x > 0)


def test_an_input_within_eps_of_a_kink_is_not_a_false_failure_but_a_wrong_backward_still_is() -> None:
    """x = 3e-7 lies within eps = 1e-6 of ReLU's kink: the central difference there is wrong, not backward."""
    x = np.random.default_rng(0).standard_normal((4, 3))
    x[1, 2] = 3e-7
    report = check_gradients(_built64(HuntReluScale(1.5)), x)
    assert report.ok and "non-differentiable" in report.problems["input"]

    class Wrong(HuntReluScale):
        def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
            return super().backward(ctx, grad_out) * 1.01

    with pytest.raises(ConformanceError, match="input"):
        check_gradients(_built64(Wrong(1.5)), x)


def test_check_gradients_refuses_a_float32_layer_with_a_clear_message() -> None:
    """Finite differences of a float32 layer are noise at 1e-6; say so instead of a vague failure."""
    layer = layers.get("Linear", input_size=3, output_size=2)
    layer.build((None, 3))
    with pytest.raises(FrameworkError, match=r"Linear.*weight.*float32.*float64"):
        check_gradients(layer, np.random.default_rng(0).standard_normal((4, 3)))


def test_check_gradients_skips_integer_inputs() -> None:
    """An Embedding's indices are not differentiable: the input is skipped, the weight checked."""
    with _float64():
        layer = layers.get("Embedding", num_embeddings=6, embedding_dim=3)
        idx = np.random.default_rng(0).integers(0, 6, (4, 5))
        layer(idx)
    report = check_gradients(layer, idx)
    assert set(report.errors) == {"weight"} and report.ok


def test_check_gradients_flags_a_wrong_shaped_input_gradient() -> None:
    """A backward summing its input gradient over the batch is a failure, not a broadcast match."""

    class SumsOverBatch(HuntScale):
        def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
            return super().backward(ctx, grad_out).sum(axis=0)

    layer = _built64(SumsOverBatch(), (1, 3))
    with pytest.raises(ConformanceError, match=r"(?s)SumsOverBatch.*input .*shape \(3,\), expected \(1, 3\)"):
        check_gradients(layer, np.random.default_rng(0).standard_normal((1, 3)))


def test_check_gradients_default_tolerance_is_the_documented_1e6() -> None:
    """docs/plugins.md: it raises ConformanceError when a relative error exceeds 1e-6."""

    class Off(HuntScale):
        def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
            return super().backward(ctx, grad_out) * (1 + 1e-5)

    report = check_gradients(
        _built64(Off()), np.random.default_rng(0).standard_normal((4, 3)), raise_on_failure=False
    )
    assert report.tolerance == 1e-6
    assert 1e-6 < report.errors["input"] < 1e-5
    with pytest.raises(ConformanceError):
        check_gradients(_built64(Off()), np.random.default_rng(0).standard_normal((4, 3)))
    assert issubclass(ConformanceError, AssertionError)  # a plain pytest failure, as documented


# -- the built-ins: their conformance tests must be able to fail ------------------------------


def _builtin_specs() -> dict[str, Any]:
    from test_builtins_conformance import DEFAULTS

    return DEFAULTS


def _patch_backward(
    monkeypatch: pytest.MonkeyPatch, cls: type, *, input_factor: float, param: str | None
) -> None:
    """Make ``cls.backward`` wrong: scale the input gradient, or one parameter's gradient."""
    original = cls.backward

    def backward(self: Layer, *args: Any, **kwargs: Any) -> Any:
        g = original(self, *args, **kwargs)
        if param is not None:
            for name, p in self.named_parameters():
                if name == param:
                    p.grad *= 1.01
        if input_factor == 1.0 or g is None:
            return g
        if isinstance(g, list):
            return [gi * input_factor for gi in g]
        return g * input_factor

    monkeypatch.setattr(cls, "backward", backward)


#: built-ins whose DEFAULTS entry takes a float input (Embedding: indices, parameter-only below)
PATCH_INPUT = [
    "Linear", "Conv2d", "Conv1d", "ConvTranspose2d", "MaxPool2d", "AvgPool2d", "BatchNorm", "LayerNorm",
    "ReLU", "GELU", "Softmax", "Flatten", "Add", "Concatenate", "LSTMCell", "GRU", "MultiheadAttention",
    "ScaledDotProductAttention", "GroupNorm", "RMSNorm", "UpSampling2d", "AdaptiveMaxPool2d",
]  # fmt: skip
#: (built-in, one parameter whose gradient alone is made 1% wrong)
PATCH_PARAM = [
    ("Linear", "bias"),
    ("Conv2d", "weight"),
    ("BatchNorm", "bias"),
    ("LayerNorm", "weight"),
    ("Embedding", "weight"),
    ("LSTM", "bias_hh_l0"),
    ("GRUCell", "weight_ih"),
    ("MultiheadAttention", "out_proj.bias"),
]

_ONLY_GRADIENTS = ("output_shape", "config", "registry", "checkpoint", "train_eval", "dtype_float32",
                   "dtype_float64", "backward", "arrays", "context", "parameters", "batch_last")  # fmt: skip


@pytest.mark.parametrize("name", PATCH_INPUT)
def test_builtin_with_1pc_wrong_input_gradient_fails_its_conformance_entry(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    spec = _builtin_specs()[name]
    cls = REGISTRY.get("layers", name)
    assert check_layer(layers.get(name, **spec.kwargs), spec.shape, x=spec.x, prepare=spec.prepare,
                       skip=_ONLY_GRADIENTS).passed  # fmt: skip
    _patch_backward(monkeypatch, cls, input_factor=1.01, param=None)
    with pytest.raises(ConformanceError) as info:
        check_layer(
            layers.get(name, **spec.kwargs), spec.shape, x=spec.x, prepare=spec.prepare, skip=_ONLY_GRADIENTS
        )
    message = str(info.value)
    assert name in message.splitlines()[0] and "[FAIL] gradients" in message
    assert "input" in message


@pytest.mark.parametrize(("name", "param"), PATCH_PARAM, ids=[f"{n}-{p}" for n, p in PATCH_PARAM])
def test_builtin_with_one_1pc_wrong_parameter_gradient_fails(
    monkeypatch: pytest.MonkeyPatch, name: str, param: str
) -> None:
    spec = _builtin_specs()[name]
    _patch_backward(monkeypatch, REGISTRY.get("layers", name), input_factor=1.0, param=param)
    report = check_layer(layers.get(name, **spec.kwargs), spec.shape, x=spec.x, prepare=spec.prepare,
                         skip=_ONLY_GRADIENTS, raise_on_failure=False)  # fmt: skip
    assert report.checks("FAIL") == ["gradients"]
    failing = [line.split()[0] for line in str(report).splitlines() if line.rstrip().endswith("FAIL")]
    assert set(failing) == {param}, str(report)


@pytest.mark.parametrize("name", ["RNNCell", "GRUCell", "LSTMCell"])
def test_cell_weight_hh_is_not_exercised_by_its_conformance_entry_and_the_kit_says_so(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """The DEFAULTS entry calls a cell on x alone (h = 0), where dL/dweight_hh = 0 whatever backward says.

    A 1% error in weight_hh's gradient then passes; the kit must at least say the
    array was not exercised, and an input [x, h] must catch the error.
    """
    spec = _builtin_specs()[name]
    _patch_backward(monkeypatch, REGISTRY.get("layers", name), input_factor=1.0, param="weight_hh")
    report = check_layer(layers.get(name, **spec.kwargs), spec.shape, skip=_ONLY_GRADIENTS)
    detail = next(r.detail for r in report.results if r.check == "gradients")
    assert "not really checked: weight_hh" in detail
    n, h = spec.shape[0], spec.kwargs["hidden_size"]
    states = [(n, h)] * (2 if name == "LSTMCell" else 1)
    with_state = check_layer(layers.get(name, **spec.kwargs), [spec.shape, *states], skip=_ONLY_GRADIENTS,
                             raise_on_failure=False)  # fmt: skip
    assert with_state.checks("FAIL") == ["gradients"] and "weight_hh" in str(with_state)


def test_dropout_backward_wrong_only_in_training_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dropout is stochastic in training; the kit must still check that path, not eval mode only."""
    cls = REGISTRY.get("layers", "Dropout")
    assert "train mode" in next(r.detail for r in _report(layers.get("Dropout", p=0.3), (4, 5)).results
                                if r.check == "gradients")  # fmt: skip
    original = cls.backward

    def backward(self: Layer, *args: Any) -> Any:
        g = original(self, *args)
        return np.where(g != 0, args[-1], 0.0)  # forgets the 1 / (1 - p) of the kept units

    monkeypatch.setattr(cls, "backward", backward)
    report = _report(layers.get("Dropout", p=0.3), (4, 5))
    assert "gradients" in report.checks("FAIL") and "in train mode" in str(report), str(report)


def test_batch_dependent_bug_is_caught_with_the_default_batch_of_two() -> None:
    """A leading None batch axis means batch 2: enough to see a backward that uses only sample 0."""
    report = _report(HuntFirstSampleOnly(), (None, 3))
    assert report.checks("FAIL") == ["gradients"] and "weight" in str(report)


def test_builtin_wrong_only_in_float32_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    cls = REGISTRY.get("layers", "Linear")
    original = cls.backward

    def backward(self: Layer, *args: Any) -> Any:
        g = original(self, *args)
        return g * np.float32(1.01) if g is not None and g.dtype == np.float32 else g

    monkeypatch.setattr(cls, "backward", backward)
    report = _report(layers.get("Linear", output_size=4), (3, 5))
    assert report.checks("FAIL") == ["dtype_float32"], str(report)


def test_builtin_writing_into_grad_out_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    cls = REGISTRY.get("layers", "Tanh")
    original = cls.backward

    def backward(self: Layer, *args: Any) -> Any:
        g = original(self, *args)
        args[-1][...] = 0.0
        return g

    monkeypatch.setattr(cls, "backward", backward)
    report = _report(layers.get("Tanh"), (3, 5), skip=("registry",))
    assert "arrays" in report.checks("FAIL"), str(report)


# -- optimizers -------------------------------------------------------------------------------


class HuntSGD(Optimizer):
    """Correct: SGD with momentum (the buffer in ``state``, so state_dict carries it)."""

    def __init__(
        self, params: Any = None, learning_rate: Any = 0.05, momentum: float = 0.0, **kwargs: Any
    ) -> None:
        super().__init__(params, learning_rate, **kwargs)
        self.momentum = float(momentum)

    def update(self, param: Parameter, grad: np.ndarray, state: dict, lr: float) -> None:
        if self.momentum:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = grad.copy()
            else:
                buf *= self.momentum
                buf += grad
            grad = buf
        param.data -= lr * grad

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "momentum": self.momentum}


class HuntWrongSign(HuntSGD):
    def update(self, param: Parameter, grad: np.ndarray, state: dict, lr: float) -> None:
        param.data += lr * grad


class HuntIgnoresWeightDecay(HuntSGD):
    """Broken: says decay is decoupled (as AdamW) but never applies it."""

    decay_in_gradient = False


class HuntSlotsOnSelf(HuntSGD):
    """Broken: the momentum buffer lives on self, keyed by id: state_dict misses it."""

    def update(self, param: Parameter, grad: np.ndarray, state: dict, lr: float) -> None:
        bufs = self.__dict__.setdefault("_bufs", {})
        buf = bufs.get(id(param))
        buf = grad.copy() if buf is None else self.momentum * buf + grad
        bufs[id(param)] = buf
        param.data -= lr * buf


class HuntDropsSlotsOnLoad(HuntSGD):
    """Broken: load_state_dict restores the step count only."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.iterations = int(state.get("iterations", 0))


class HuntLostMomentumOpt(HuntSGD):
    """Broken: get_config forgets ``momentum``: a saved and loaded model trains with momentum 0."""

    def get_config(self) -> dict[str, Any]:
        return Optimizer.get_config(self)


class HuntCachedLR(HuntSGD):
    """Broken: caches the learning rate at construction; schedules and ReduceLROnPlateau do nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lr0 = self.lr

    def update(self, param: Parameter, grad: np.ndarray, state: dict, lr: float) -> None:
        super().update(param, grad, state, self._lr0)


class HuntReplacesData(HuntSGD):
    def update(self, param: Parameter, grad: np.ndarray, state: dict, lr: float) -> None:
        param.data = param.data - lr * grad


OPT_BROKEN: list[tuple[type, dict[str, Any], set[str], str]] = [
    (HuntWrongSign, {}, {"decreases_quadratic", "weight_decay"}, "steps took the quadratic"),
    (HuntIgnoresWeightDecay, {"weight_decay": 0.1}, {"weight_decay"}, "weight_decay"),
    (HuntSlotsOnSelf, {"momentum": 0.9}, {"state_dict"}, "state_dict"),
    (HuntDropsSlotsOnLoad, {"momentum": 0.9}, {"state_dict"}, "state_dict"),
    (HuntLostMomentumOpt, {"momentum": 0.9}, {"config"}, "momentum"),
    (HuntCachedLR, {}, {"learning_rate"}, "learning_rate"),
    (HuntReplacesData, {}, {"in_place"}, "in place"),
]


@pytest.mark.parametrize("kwargs", [{}, {"momentum": 0.9}, {"momentum": 0.9, "weight_decay": 0.01}])
def test_correct_optimizer_passes(kwargs: dict[str, Any]) -> None:
    report = check_optimizer(HuntSGD(**kwargs), skip=("registry",))
    assert report.passed, str(report)


@pytest.mark.parametrize(
    ("cls", "kwargs", "failing", "fragment"), OPT_BROKEN, ids=[b[0].__name__ for b in OPT_BROKEN]
)
def test_broken_optimizer_fails_the_right_check(
    cls: type, kwargs: dict[str, Any], failing: set[str], fragment: str
) -> None:
    report = check_optimizer(cls(**kwargs), skip=("registry",), raise_on_failure=False)
    assert set(report.checks("FAIL")) == failing, str(report)
    assert cls.__name__ in str(report).splitlines()[0]
    assert fragment in str(report)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop", "adagrad"])
def test_builtin_optimizer_ignoring_weight_decay_fails(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Monkeypatch the base class so no built-in applies L2 decay: the kit must notice for each."""
    cls = REGISTRY.get("optimizers", name)
    assert check_optimizer(cls(weight_decay=0.1)).passed
    # every optimizer now reads weight_decay as 0, whatever it was given
    monkeypatch.setattr(
        Optimizer, "weight_decay", property(lambda self: 0.0, lambda self, v: None), raising=False
    )
    report = check_optimizer(cls(weight_decay=0.1), raise_on_failure=False)
    assert report.checks("FAIL") == ["weight_decay"], str(report)
    assert "weight_decay is ignored" in str(report)


# -- losses -----------------------------------------------------------------------------------


class HuntMSE(Loss):
    """Correct: mean squared error over every entry."""

    def forward(self, y_pred: Any, y_true: Any, sample_weight: Any = None) -> float:
        self._d = y_pred - np.asarray(y_true, dtype=y_pred.dtype)
        return float(np.mean(self._d**2))

    def backward(self) -> np.ndarray:
        return 2 * self._d / self._d.size


class HuntMSENoMean(HuntMSE):
    """Broken: backward misses the 1/N."""

    def backward(self) -> np.ndarray:
        return 2 * self._d / self._d.shape[-1]


class HuntSumLoss(HuntMSE):
    """Broken: a sum over the batch (no 1/N anywhere): consistent with itself, against the contract."""

    def forward(self, y_pred: Any, y_true: Any, sample_weight: Any = None) -> float:
        self._d = y_pred - np.asarray(y_true, dtype=y_pred.dtype)
        return float(np.sum(np.mean(self._d**2, axis=-1)))

    def backward(self) -> np.ndarray:
        return 2 * self._d / self._d.shape[-1]


class HuntFloat32Loss(HuntMSE):
    """Broken in float32 only: the gradient 1% too large."""

    def backward(self) -> np.ndarray:
        g = super().backward()
        return g * np.float32(1.01) if g.dtype == np.float32 else g


class HuntUpcastLoss(HuntMSE):
    def backward(self) -> np.ndarray:
        return super().backward().astype(np.float64)


LOSS_BROKEN = [
    (HuntMSENoMean, {"gradients"}, "ratio of norms analytic/numeric 4"),
    (HuntSumLoss, {"batch_mean"}, "mean over the batch"),
    (HuntFloat32Loss, {"gradient_shape"}, "float32"),
    (HuntUpcastLoss, {"gradient_shape"}, "float64 for float32"),
]


def test_correct_loss_passes() -> None:
    report = check_loss(HuntMSE(), skip=("registry",))
    assert report.passed and "batch_mean" in report.checks("ok"), str(report)


@pytest.mark.parametrize(
    ("cls", "failing", "fragment"), LOSS_BROKEN, ids=[b[0].__name__ for b in LOSS_BROKEN]
)
def test_broken_loss_fails_the_right_check(cls: type, failing: set[str], fragment: str) -> None:
    report = check_loss(cls(), skip=("registry",), raise_on_failure=False)
    assert set(report.checks("FAIL")) == failing, str(report)
    assert cls.__name__ in str(report).splitlines()[0] and fragment in str(report)


def test_builtin_loss_missing_the_mean_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    from plugins.losses import MSE

    original = MSE.backward

    def backward(self: Any, *args: Any, **kwargs: Any) -> Any:
        return original(self, *args, **kwargs) * 4  # the 1/N of a batch of 4 undone

    monkeypatch.setattr(MSE, "backward", backward)
    report = check_loss("mse", raise_on_failure=False)
    assert report.checks("FAIL") == ["gradients"], str(report)


def test_deepcopy_keeps_a_layer_checkable() -> None:
    """The kit deep-copies layers; a copy must check the same as the original."""
    layer = _built64(HuntScale(1.5))
    x = np.random.default_rng(0).standard_normal((4, 3))
    assert check_gradients(copy.deepcopy(layer), x).ok


# -- large arrays: random directions through all entries; small ones entry by entry --------


def _big_linear() -> Layer:
    framework.set_default_dtype("float64")
    try:
        framework.set_seed(5)
        layer = layers.get("Linear", input_size=40, output_size=30)  # weight: 1200 entries
        layer(np.zeros((3, 40)))
    finally:
        framework.set_default_dtype("float32")
    return layer


def test_a_large_array_is_sampled_and_a_correct_backward_passes() -> None:
    layer = _big_linear()
    x = np.random.default_rng(0).standard_normal((3, 40))
    report = check_gradients(layer, x)
    # input 120, weight 1200, bias 30 entries: all above MAX_ENTRIES
    assert report.ok and report.sampled == ["input", "weight", "bias"], str(report)
    assert f"along {DIRECTIONS} random directions through all entries: input, weight, bias" in str(report)
    small = check_gradients(_built64(HuntScale(1.5)), np.random.default_rng(0).standard_normal((4, 3)))
    assert small.ok and small.sampled == [] and MAX_ENTRIES >= 12, "12 entries are checked one by one"


@pytest.mark.parametrize("wrong", ["whole array 1 %", "one entry", "one entry 1 %"])
def test_a_wrong_gradient_in_a_large_array_still_fails(monkeypatch: pytest.MonkeyPatch, wrong: str) -> None:
    layer = _big_linear()
    cls = type(layer)
    original = cls.backward

    def backward(self: Layer, *args: Any, **kwargs: Any) -> Any:
        g = original(self, *args, **kwargs)
        if wrong == "one entry":
            self.weight.grad[7, 11] += 0.5  # one entry of 1200: every direction sees it
        elif wrong == "one entry 1 %":
            self.weight.grad[7, 11] *= 1.01
        else:
            self.weight.grad *= 1.01
        return g

    monkeypatch.setattr(cls, "backward", backward)
    x = np.random.default_rng(0).standard_normal((3, 40))
    report = check_gradients(layer, x, raise_on_failure=False)
    least = 1e-6 if wrong == "one entry 1 %" else 1e-4  # 1% of one entry's share of the gradient's norm
    assert not report.ok and report.errors["weight"] > least, str(report)
    assert report.errors["bias"] < 1e-6 and report.errors["input"] < 1e-6


def test_a_1pc_error_in_any_one_entry_of_a_sampled_array_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """The directions run through every entry: a 1% error in entry k fails, for each k of the bias."""
    layer = _big_linear()
    cls = type(layer)
    original = cls.backward
    wrong = [0]

    def backward(self: Layer, *args: Any, **kwargs: Any) -> Any:
        g = original(self, *args, **kwargs)
        self.bias.grad[wrong[0]] *= 1.01
        return g

    monkeypatch.setattr(cls, "backward", backward)
    x = np.random.default_rng(0).standard_normal((3, 40))
    missed = []
    for k in range(layer.bias.data.size):
        wrong[0] = k
        report = check_gradients(layer, x, raise_on_failure=False)
        assert "bias" in report.sampled
        if not report.errors["bias"] > 1e-6:
            missed.append((k, report.errors["bias"]))
    assert missed == [], f"1% errors in these bias entries passed: {missed}"


def test_numerical_gradient_of_chosen_entries_leaves_the_others_zero() -> None:
    a = np.arange(12, dtype=np.float64).reshape(3, 4).T  # not contiguous: walked where it lives
    grad = numerical_gradient(lambda: float(np.sum(a**2)), a, entries=[0, 5, 11])
    expected = np.zeros(a.shape)
    for k in (0, 5, 11):
        expected.reshape(-1)[k] = 2 * a.reshape(-1)[k]
    np.testing.assert_allclose(grad, expected, atol=1e-6)
