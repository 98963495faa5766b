"""Bug hunt: activations, normalization, embedding, reshaping, merge and core layers against PyTorch.

Every registered activation is compared, forward and backward, in float32 and float64,
with a float64 reference (PyTorch's, or the closed form where PyTorch's own float64
evaluation cancels) on a grid of edge inputs: 0 exactly at the kinks, subnormals,
float32's ``exp`` overflow thresholds, huge finite values, infinities and NaN.
Normalization layers (BatchNorm, LayerNorm, GroupNorm, InstanceNorm, RMSNorm) are
stepped against ``torch.nn`` over their options, train and eval, including parameter
gradients and running statistics; Embedding, the shape layers, the merge layers and
Linear / Dropout / Identity likewise, with their bad inputs. Gradients are also checked
against finite differences (``framework.testing``).

Tests marked ``xfail(strict=True, reason="BUG: ...")`` pin a bug found here.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from support import requires_scipy, requires_torch

import framework
from framework import activations
from framework.base.context import Context
from framework.base.layer import format_shape
from framework.errors import ConfigError, DataError, ShapeError
from framework.layers import (
    Add,
    Average,
    BatchNorm,
    Concatenate,
    Dropout,
    Embedding,
    Flatten,
    GroupNorm,
    Identity,
    InstanceNorm1d,
    InstanceNorm2d,
    LayerNorm,
    Linear,
    Maximum,
    Minimum,
    Multiply,
    Permute,
    Reshape,
    RMSNorm,
    Subtract,
)
from framework.testing import check_gradients, numerical_gradient, relative_error

try:
    import torch

    F = torch.nn.functional
except ImportError:
    torch = F = None
try:
    import scipy.special as special
except ImportError:
    special = None

TORCH_DTYPES = {np.float32: torch.float32, np.float64: torch.float64} if torch is not None else {}
#: the base class of the PyTorch modules below (``object`` without torch, whose tests skip)
_Module = torch.nn.Module if torch is not None else object
DTYPES = [np.float32, np.float64]


def _run(layer, x, grad_out=None, training=True):
    """``(y, dL/dx)`` of one call in the context form; ``grad_out`` of ones by default."""
    ctx = Context(training)
    y = layer.forward(ctx, x)
    g = np.ones_like(y) if grad_out is None else grad_out
    return y, layer.backward(ctx, g)


def _torch_run(fn, x, grad_out=None, dtype=None):
    """PyTorch's ``(y, dL/dx)`` for ``fn`` at ``x`` (in ``dtype``, default x's)."""
    t = torch.tensor(np.asarray(x, dtype=dtype or x.dtype), requires_grad=True)
    y = fn(t)
    y.backward(torch.ones_like(y) if grad_out is None else torch.tensor(grad_out, dtype=y.dtype))
    return y.detach().numpy(), t.grad.numpy()


# == activations =============================================================================

_K = math.sqrt(2.0 / math.pi)
_C = 0.044715


def _gelu_exact(x):
    """``x Phi(x)`` and ``Phi(x) + x phi(x)`` in float64, from scipy's ``ndtr`` (no cancellation)."""
    with np.errstate(over="ignore", invalid="ignore"):
        phi = np.exp(-0.5 * np.minimum(x * x, 1e4)) / math.sqrt(2.0 * math.pi)
        slope = special.ndtr(x) + np.where(phi > 0, x * phi, 0.0)
    return x * special.ndtr(x), slope


def _gelu_tanh(x):
    """``x s`` and ``s + x 2 s (1 - s) du``, ``s = sigmoid(2u)``, evaluated where each term is not 0."""
    with np.errstate(over="ignore", invalid="ignore"):
        xc = np.clip(x, -1e3, 1e3)  # s is 0 or 1 in float64 long before |x| = 1e3
        s = special.expit(2.0 * _K * (xc + _C * xc**3))
        tail = 2.0 * s * (1.0 - s)
        slope = s + np.where(tail > 0, xc * tail * _K * (1.0 + 3.0 * _C * xc * xc), 0.0)
    return x * s, slope


def _torch_ref(fn):
    def ref(x):
        return _torch_run(fn, x, dtype=np.float64)

    return ref


#: id -> (registered name, kwargs, float64 reference (x -> (y, dy/dx)), the slope is computed from y)
ACTS = {
    "identity": ("identity", {}, _torch_ref(lambda t: t * 1.0), False),
    "relu": ("relu", {}, _torch_ref(lambda t: F.relu(t)), False),
    "leaky_relu": ("leaky_relu", {}, _torch_ref(lambda t: F.leaky_relu(t)), False),
    "leaky_relu-0.2": (
        "leaky_relu",
        {"negative_slope": 0.2},
        _torch_ref(lambda t: F.leaky_relu(t, 0.2)),
        False,
    ),
    "leaky_relu--1.5": (
        "leaky_relu",
        {"negative_slope": -1.5},
        _torch_ref(lambda t: F.leaky_relu(t, -1.5)),
        False,
    ),
    "elu": ("elu", {}, _torch_ref(lambda t: F.elu(t)), False),
    "elu-1.7": ("elu", {"alpha": 1.7}, _torch_ref(lambda t: F.elu(t, 1.7)), False),
    "sigmoid": ("sigmoid", {}, _torch_ref(lambda t: torch.sigmoid(t)), True),
    "tanh": ("tanh", {}, _torch_ref(lambda t: torch.tanh(t)), True),
    "gelu": ("gelu", {}, _gelu_exact, True),
    "gelu-tanh": ("gelu", {"approximate": "tanh"}, _gelu_tanh, True),
    "silu": ("silu", {}, _torch_ref(lambda t: F.silu(t)), True),
    "softplus": ("softplus", {}, _torch_ref(lambda t: F.softplus(t)), False),
    "softplus-2-5": (
        "softplus",
        {"beta": 2.0, "threshold": 5.0},
        _torch_ref(lambda t: F.softplus(t, 2.0, 5.0)),
        False,
    ),
    "softplus-0.5-3": (
        "softplus",
        {"beta": 0.5, "threshold": 3.0},
        _torch_ref(lambda t: F.softplus(t, 0.5, 3.0)),
        False,
    ),
}

#: The element-wise activations, plus the two normalising ones tested further below.
ALL_NAMES = {name for name, *_ in ACTS.values()} | {"softmax", "log_softmax"}


def test_every_registered_activation_is_covered_here():
    """A newly registered activation must be added to the tables of this file."""
    assert sorted(activations.names()) == sorted(ALL_NAMES)


def _edge_grid(dtype) -> np.ndarray:
    """Finite edge inputs: kinks, subnormals, exp's float32 overflow region, huge values."""
    f = np.finfo(dtype)
    base = [0.0, -0.0, 1e-3, 0.5, 1.0, 2.5, 5.0, 10.0, 17.0, 20.0, 20.5, 30.0, 40.0, 50.0]
    base += [87.0, 88.5, 88.8, 89.0, 100.0, 103.5, 1e4, 1e15, 1e30, float(f.max)]
    base += [float(f.tiny), float(f.smallest_subnormal), 1e-20]
    if dtype == np.float64:
        base += [300.0, 700.0, 710.0, 745.0, 1e200]
    x = np.array(sorted({*base, *(-b for b in base)}), dtype=dtype)
    return np.concatenate([x, np.linspace(-12, 12, 97, dtype=dtype)])


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize(
    "key",
    [
        pytest.param(
            key, marks=requires_scipy if ACTS[key][2] in (_gelu_exact, _gelu_tanh) else requires_torch
        )
        for key in ACTS
    ],
)
def test_activation_value_and_slope_on_edge_inputs(key, dtype):
    """Forward and backward at finite edge inputs against a float64 reference, in the input's dtype.

    Tolerances are relative (a few units of the dtype's rounding), so a slope lost to
    cancellation (0 for ``alpha exp(x)``) or a NaN from an overflow in an intermediate
    (``x^3`` in tanh-GELU past |x| ~ 7e12 in float32) fails; slopes computed from the output
    (``y (1 - y)``, ``1 - y^2``), as PyTorch computes them, are allowed an absolute error of
    the dtype's epsilon.
    """
    name, kwargs, reference, from_output = ACTS[key]
    act = activations.get(name, **kwargs)
    x = _edge_grid(dtype)[None]
    with np.errstate(over="ignore"):
        y, g = _run(act, x.copy())
    ref_y, ref_g = reference(x.astype(np.float64))
    assert y.dtype == dtype and g.dtype == dtype  # no silent upcast
    eps = float(np.finfo(dtype).eps)
    rtol = 16 * eps if dtype == np.float64 else 32 * eps
    if name == "gelu":  # exp of a rounded x^2 / 2 in the left tail: error grows like x^2 * eps
        rtol = 2e-12 if dtype == np.float64 else 2e-5
    tiny = 1e3 * float(np.finfo(dtype).tiny)  # below it a dtype has only a few significant bits
    with np.errstate(over="ignore"):  # leaky_relu(-max) * -1.5 is inf in the dtype, as ours
        ref_y = ref_y.astype(dtype)
    np.testing.assert_allclose(y, ref_y, rtol=rtol, atol=tiny, err_msg=f"{key} forward")
    atol = 4 * eps if from_output else tiny
    assert np.isfinite(g).all(), f"{key}: non-finite slope at finite input {x[~np.isfinite(g)]}"
    np.testing.assert_allclose(g, ref_g, rtol=rtol, atol=atol, err_msg=f"{key} backward")


#: id -> (f(-inf), f'(-inf), f(+inf), f'(+inf)); None: not checked (PyTorch gives NaN there too: inf * 0).
LIMITS = {
    "identity": (-np.inf, 1.0, np.inf, 1.0),
    "relu": (0.0, 0.0, np.inf, 1.0),
    "leaky_relu": (-np.inf, 0.01, np.inf, 1.0),
    "leaky_relu-0.2": (-np.inf, 0.2, np.inf, 1.0),
    "leaky_relu--1.5": (np.inf, -1.5, np.inf, 1.0),
    "elu": (-1.0, 0.0, np.inf, 1.0),
    "elu-1.7": (-1.7, 0.0, np.inf, 1.0),
    "sigmoid": (0.0, 0.0, 1.0, 0.0),
    "tanh": (-1.0, 0.0, 1.0, 0.0),
    "gelu": (None, None, np.inf, None),
    "gelu-tanh": (None, 0.0, np.inf, 1.0),
    "silu": (None, None, np.inf, None),
    "softplus": (0.0, 0.0, np.inf, 1.0),
    "softplus-2-5": (0.0, 0.0, np.inf, 1.0),
    "softplus-0.5-3": (0.0, 0.0, np.inf, 1.0),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("key", list(ACTS))
def test_activation_at_infinities_and_nan(key, dtype):
    """``f(+-inf)`` and the slope there are the limits; NaN propagates to its own output only."""
    name, kwargs, _, _ = ACTS[key]
    act = activations.get(name, **kwargs)
    x = np.array([[-np.inf, np.inf, np.nan, 1.5, -1.5]], dtype=dtype)
    with np.errstate(all="ignore"):
        y, g = _run(act, x.copy())
        ref_y, ref_g = _run(activations.get(name, **kwargs), x[:, 3:].copy())
    assert y.dtype == dtype
    for value, expected in zip((y[0, 0], g[0, 0], y[0, 1], g[0, 1]), LIMITS[key]):
        if expected is not None:
            assert value == expected, (key, x, y, g)
    assert np.isnan(y[0, 2])
    # the NaN stays in its own element
    np.testing.assert_array_equal(y[:, 3:], ref_y)
    np.testing.assert_array_equal(g[:, 3:], ref_g)


@requires_torch
@pytest.mark.parametrize("key", list(ACTS))
def test_activation_matches_torch_in_float32_at_random_inputs(key, rng):
    """Same-dtype parity with PyTorch's float32 kernels on ordinary inputs."""
    name, kwargs, _, _ = ACTS[key]
    torch_fns = {
        "identity": lambda t: t * 1.0,
        "relu": F.relu,
        "leaky_relu": lambda t: F.leaky_relu(t, kwargs.get("negative_slope", 0.01)),
        "elu": lambda t: F.elu(t, kwargs.get("alpha", 1.0)),
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "gelu": lambda t: F.gelu(t, approximate=kwargs.get("approximate", "none")),
        "silu": F.silu,
        "softplus": lambda t: F.softplus(t, kwargs.get("beta", 1.0), kwargs.get("threshold", 20.0)),
    }
    x = (4 * rng.standard_normal((7, 33))).astype(np.float32)
    gout = rng.standard_normal(x.shape).astype(np.float32)
    y, g = _run(activations.get(name, **kwargs), x.copy(), gout.copy())
    ty, tg = _torch_run(torch_fns[name], x, gout)
    # absolute 1e-6: PyTorch's float32 tails (tanh slope 1 - y^2, GELU's 1 + erf) round to 0 early
    np.testing.assert_allclose(y, ty, rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(g, tg, rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("key", list(ACTS))
def test_activation_gradient_against_finite_differences(key, float64, rng):
    name, kwargs, _, _ = ACTS[key]
    x = 3 * rng.standard_normal((3, 5))
    x = np.sign(x) * (np.abs(x) + 0.05)  # away from the kinks
    report = check_gradients(activations.get(name, **kwargs), x, raise_on_failure=False)
    assert report.ok, str(report)


@pytest.mark.parametrize("name", sorted(activations.names()))
def test_integer_input_gives_the_default_float_dtype(name):
    y = activations.get(name)(np.array([[-2, 0, 3]]))
    assert y.dtype == framework.get_default_dtype()


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("layout", ["fortran", "reversed", "strided"])
def test_activation_on_large_non_contiguous_input_equals_its_contiguous_copy(layout, dtype, rng):
    """More values than one block (GELU's blockwise path), in three memory layouts: bit for bit."""
    base = (3 * rng.standard_normal((300, 480))).astype(dtype)
    x = {"fortran": np.asfortranarray(base), "reversed": base[::-1, ::-1], "strided": base[:, ::2]}[layout]
    for key, (name, kwargs, _, _) in ACTS.items():
        y, g = _run(activations.get(name, **kwargs), x)
        y2, g2 = _run(activations.get(name, **kwargs), np.ascontiguousarray(x))
        assert y.shape == g.shape == x.shape, key
        np.testing.assert_array_equal(y, y2, err_msg=key)
        np.testing.assert_array_equal(g, g2, err_msg=key)


@pytest.mark.parametrize(
    ("make", "arg"),
    [
        (lambda: activations.get("leaky_relu", negative_slope="0.1"), "negative_slope"),
        (lambda: activations.get("leaky_relu", negative_slope=float("nan")), "negative_slope"),
        (lambda: activations.get("elu", alpha=float("inf")), "alpha"),
        (lambda: activations.get("softplus", beta=0.0), "beta"),
        (lambda: activations.get("softplus", beta=-1.0), "beta"),
        (lambda: activations.get("softplus", threshold=None), "threshold"),
        (lambda: activations.get("gelu", approximate="erf"), "approximate"),
        (lambda: activations.get("softmax", axis=1.0), "axis"),
        (lambda: activations.get("softmax", axis=0, dim=1), "dim"),
    ],
)
def test_bad_activation_arguments_raise_config_error_naming_the_argument(make, arg):
    with pytest.raises(ConfigError, match=arg):
        make()


# -- softmax and log-softmax ---------------------------------------------------------------


@requires_torch
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("axis", [0, 1, 2, -1, -2])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_along_every_axis_matches_torch(name, axis, dtype, rng):
    x = (5 * rng.standard_normal((3, 4, 5))).astype(dtype)
    x[0, 0, 0] = 1e30 if dtype == np.float32 else 1e300  # a huge entry: no overflow
    x[1, 1, :] = -np.inf  # -inf entries get probability 0
    x[1, :, 1] = -np.inf
    x[1, 1, 1] = 0.0
    gout = rng.standard_normal(x.shape).astype(dtype)
    layer = activations.get(name, axis=axis)
    y, g = _run(layer, x.copy(), gout.copy())
    fn = F.softmax if name == "softmax" else F.log_softmax
    ty, tg = _torch_run(lambda t: fn(t, dim=axis), x, gout)
    assert y.dtype == dtype and g.dtype == dtype
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-14}
    np.testing.assert_allclose(y, ty, **tol)
    np.testing.assert_allclose(g, tg, **tol)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_dim_alias_and_out_of_range_axis(name, rng):
    x = rng.standard_normal((2, 3))
    np.testing.assert_array_equal(activations.get(name, dim=0)(x), activations.get(name, axis=0)(x))
    with pytest.raises(ShapeError, match=r"axis 2 is out of range.*\(2, 3\)"):
        activations.get(name, axis=2)(x)


# == normalization ============================================================================


def _copy_params_to_torch(ours, ref, rng):
    """Random parameters in ours, the same in torch's module (same names)."""
    theirs = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        value = rng.standard_normal(p.data.shape).astype(p.data.dtype)
        p.data[...] = value
        with torch.no_grad():
            theirs[name].copy_(torch.tensor(value))


def _step_and_compare(ours, ref, x, gout, training, tol):
    """One call of both, then outputs, input gradients, parameter gradients and buffers."""
    ours.zero_grad()
    ref.zero_grad()
    y, gx = _run(ours, x.copy(), gout.copy(), training=training)
    ref.train(training)
    ty, tg = _torch_run(ref, x, gout)
    np.testing.assert_allclose(y, ty, **tol, err_msg="output")
    np.testing.assert_allclose(gx, tg, **tol, err_msg="input gradient")
    assert y.dtype == x.dtype and gx.dtype == x.dtype
    theirs = dict(ref.named_parameters())
    assert sorted(n for n, _ in ours.named_parameters()) == sorted(theirs)
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad, theirs[name].grad.numpy(), **tol, err_msg=name)
    buffers = {k: v for k, v in ref.named_buffers() if k != "num_batches_tracked"}
    assert sorted(n for n, _ in ours.named_buffers()) == sorted(buffers)
    for name, b in ours.named_buffers():
        np.testing.assert_allclose(b.data, buffers[name].numpy(), **tol, err_msg=name)


def _tol(dtype):
    return {"rtol": 1e-4, "atol": 1e-5} if dtype == np.float32 else {"rtol": 1e-10, "atol": 1e-12}


def _with_dtype(dtype):
    framework.set_default_dtype(np.dtype(dtype).name)
    torch_dtype = TORCH_DTYPES[dtype]
    return torch_dtype


@pytest.fixture
def restore_dtype():
    old = framework.get_default_dtype()
    yield
    framework.set_default_dtype(old)


BN_KWARGS = [
    {},
    {"affine": False},
    {"track_running_stats": False},
    {"momentum": 0.0},
    {"momentum": 1.0},
    {"momentum": 0.3, "eps": 1e-2},
    {"affine": False, "track_running_stats": False},
]


@requires_torch
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize(
    "kwargs", BN_KWARGS, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()) or "default"
)
@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5), (2, 3, 4, 5)], ids=["NC", "NCL", "NCHW"])
def test_batchnorm_matches_torch_over_steps_then_eval(shape, kwargs, dtype, rng, restore_dtype):
    """Three training steps (running statistics with the unbiased variance), then two eval calls."""
    tdt = _with_dtype(dtype)
    ours = BatchNorm(3, **kwargs)
    ref = (torch.nn.BatchNorm1d if len(shape) < 4 else torch.nn.BatchNorm2d)(3, **kwargs).to(tdt)
    _copy_params_to_torch(ours, ref, rng)
    for training in (True, True, True, False, False):
        x = (3 * rng.standard_normal(shape) + 2).astype(dtype)
        gout = rng.standard_normal(shape).astype(dtype)
        _step_and_compare(ours, ref, x, gout, training, _tol(dtype))
    if ours.track_running_stats:
        assert ours.num_batches_tracked == int(ref.num_batches_tracked) == 3


@requires_torch
@pytest.mark.parametrize(
    ("ours_cls", "torch_cls", "shape"),
    [(BatchNorm, "BatchNorm1d", (6, 3)), (InstanceNorm1d, "InstanceNorm1d", (4, 3, 5))],
)
def test_momentum_none_is_the_cumulative_average(ours_cls, torch_cls, shape, float64, rng):
    """BatchNorm: the average of every batch's statistics; InstanceNorm: PyTorch passes 0 (no move)."""
    extra = {"track_running_stats": True} if ours_cls is InstanceNorm1d else {}
    ours = ours_cls(3, momentum=None, **extra)
    ref = getattr(torch.nn, torch_cls)(3, momentum=None, **extra).double()
    for _ in range(4):
        x = 2 * rng.standard_normal(shape) + 1
        _step_and_compare(ours, ref, x, rng.standard_normal(shape), True, _tol(np.float64))
    if ours_cls is BatchNorm:
        assert ours.num_batches_tracked == int(ref.num_batches_tracked) == 4


@requires_torch
def test_batchnorm_on_a_non_contiguous_input(float64, rng):
    """A transposed view (what Permute returns) normalises like its copy."""
    ours, ref = BatchNorm(3), torch.nn.BatchNorm2d(3).double()
    x = rng.standard_normal((2, 4, 5, 3)).transpose(0, 3, 1, 2)
    gout = rng.standard_normal((2, 4, 5, 3)).transpose(0, 3, 1, 2)
    assert not x.flags.c_contiguous and not gout.flags.c_contiguous
    _step_and_compare(ours, ref, x, gout, True, _tol(np.float64))


LN_CASES = [
    (4, (2, 4), {}),
    (4, (2, 3, 4), {"elementwise_affine": False}),
    (4, (2, 3, 4), {"bias": False}),
    ((3, 4), (2, 3, 4), {}),
    ((3, 4), (2, 5, 3, 4), {"eps": 1e-2}),
    ((2, 3, 4), (2, 2, 3, 4), {"elementwise_affine": False, "eps": 0.5}),
]


@requires_torch
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize(("normalized_shape", "shape", "kwargs"), LN_CASES)
def test_layernorm_matches_torch(normalized_shape, shape, kwargs, dtype, rng, restore_dtype):
    tdt = _with_dtype(dtype)
    ours = LayerNorm(normalized_shape, **kwargs)
    ref = torch.nn.LayerNorm(normalized_shape, **kwargs).to(tdt)
    _copy_params_to_torch(ours, ref, rng)
    for training in (True, False):
        x = (3 * rng.standard_normal(shape) + 5).astype(dtype)
        gout = rng.standard_normal(shape).astype(dtype)
        _step_and_compare(ours, ref, x, gout, training, _tol(dtype))


GN_CASES = [
    (1, 4, (2, 4), {}),
    (2, 4, (3, 4, 5), {}),
    (4, 4, (2, 4, 3, 3), {"affine": False}),
    (2, 6, (2, 6, 2, 2, 2), {"eps": 1e-1}),
    (3, 6, (2, 6, 7), {"affine": False, "eps": 1e-3}),
]


@requires_torch
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize(("groups", "channels", "shape", "kwargs"), GN_CASES)
def test_groupnorm_matches_torch(groups, channels, shape, kwargs, dtype, rng, restore_dtype):
    tdt = _with_dtype(dtype)
    ours = GroupNorm(groups, channels, **kwargs)
    ref = torch.nn.GroupNorm(groups, channels, **kwargs).to(tdt)
    _copy_params_to_torch(ours, ref, rng)
    for training in (True, False):
        x = (2 * rng.standard_normal(shape) - 3).astype(dtype)
        _step_and_compare(ours, ref, x, rng.standard_normal(shape).astype(dtype), training, _tol(dtype))


IN_KWARGS = [
    {},
    {"affine": True},
    {"track_running_stats": True},
    {"affine": True, "track_running_stats": True, "momentum": 0.5, "eps": 1e-3},
]


@requires_torch
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize(
    "kwargs", IN_KWARGS, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()) or "default"
)
@pytest.mark.parametrize(
    ("ours_cls", "torch_name", "shape"),
    [(InstanceNorm1d, "InstanceNorm1d", (3, 4, 5)), (InstanceNorm2d, "InstanceNorm2d", (3, 4, 2, 3))],
    ids=["1d", "2d"],
)
def test_instancenorm_matches_torch_over_steps_then_eval(
    ours_cls, torch_name, shape, kwargs, dtype, rng, restore_dtype
):
    tdt = _with_dtype(dtype)
    ours = ours_cls(4, **kwargs)
    ref = getattr(torch.nn, torch_name)(4, **kwargs).to(tdt)
    _copy_params_to_torch(ours, ref, rng)
    for training in (True, True, False):
        x = (2 * rng.standard_normal(shape) + 1).astype(dtype)
        _step_and_compare(ours, ref, x, rng.standard_normal(shape).astype(dtype), training, _tol(dtype))


@requires_torch
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize(
    ("normalized_shape", "kwargs"), [(4, {}), ((3, 4), {"eps": 1e-3}), (4, {"elementwise_affine": False})]
)
def test_rmsnorm_matches_torch(normalized_shape, kwargs, dtype, rng, restore_dtype):
    tdt = _with_dtype(dtype)
    ours = RMSNorm(normalized_shape, **kwargs)
    ref = torch.nn.RMSNorm(normalized_shape, **kwargs).to(tdt)
    _copy_params_to_torch(ours, ref, rng)
    x = (2 * rng.standard_normal((2, 3, 4)) + 1).astype(dtype)
    _step_and_compare(ours, ref, x, rng.standard_normal((2, 3, 4)).astype(dtype), True, _tol(dtype))


@pytest.mark.parametrize(
    "make",
    [
        lambda: LayerNorm((3, 4)),
        lambda: GroupNorm(1, 3),
        lambda: InstanceNorm1d(3, affine=True),
        lambda: RMSNorm((3, 4)),
        lambda: RMSNorm(np.int64(4)),
    ],
    ids=["layernorm", "groupnorm", "instancenorm", "rmsnorm", "rmsnorm-numpy-int"],
)
def test_norms_take_an_empty_batch(make):
    """An empty batch (a last partial shard, a filtered batch) gives an empty output and gradient."""
    x = np.zeros((0, 3, 4), dtype=np.float32)
    y, g = _run(make(), x)
    assert y.shape == g.shape == (0, 3, 4) and y.dtype == np.float32


@pytest.mark.parametrize(
    ("make", "shape"),
    [
        (lambda: BatchNorm(3), (4, 3, 2)),
        (lambda: BatchNorm(3, affine=False), (4, 3)),
        (lambda: LayerNorm((3, 2)), (4, 3, 2)),
        (lambda: GroupNorm(3, 3), (4, 3, 5)),
        (lambda: InstanceNorm1d(3, affine=True, track_running_stats=True), (4, 3, 5)),
        (lambda: InstanceNorm2d(3, affine=True), (2, 3, 2, 2)),
        (lambda: RMSNorm(2), (4, 3, 2)),
    ],
)
@pytest.mark.parametrize("training", [True, False])
def test_norm_gradients_against_finite_differences(make, shape, training, float64, rng):
    layer = make()
    layer.train(training)
    x = 2 * rng.standard_normal(shape) + 1
    if not training and getattr(layer, "running_var", None) is not None:
        layer.running_mean.data[...] = rng.standard_normal(shape[1])
        layer.running_var.data[...] = rng.uniform(0.5, 2.0, shape[1])
    report = check_gradients(layer, x, raise_on_failure=False)
    assert report.ok, str(report)


@pytest.mark.parametrize(
    ("make", "good_shape", "bad_shape", "expected"),
    [
        (lambda: BatchNorm(3), (4, 3), (4, 5), r"\(N, 3, \*\)"),
        (lambda: LayerNorm((3, 4)), (2, 3, 4), (2, 4, 3), r"\(N, \*, 3, 4\)"),
        (lambda: GroupNorm(2, 4), (2, 4, 3), (2, 6, 3), r"\(N, 4, \*\)|\(None, 4, None\)"),
        (lambda: InstanceNorm2d(4), (2, 4, 3, 3), (2, 4, 3), r"rank-4|\(None, 4, None, None\)"),
        (lambda: RMSNorm(4), (2, 4), (2, 3), r"\(N, \*, 4\)"),
    ],
)
@pytest.mark.parametrize("built", [False, True])
def test_norm_shape_errors_name_layer_expected_and_actual(make, good_shape, bad_shape, expected, built):
    """Before and after the layer is built on a good input."""
    layer = make()
    if built:
        layer(np.zeros(good_shape, dtype=np.float32))
    with pytest.raises(ShapeError) as info:
        layer(np.zeros(bad_shape, dtype=np.float32))
    message = str(info.value)
    assert f"{type(layer).__name__} layer" in message
    assert re.search(expected, message), message
    assert format_shape(bad_shape) in message, message


@pytest.mark.parametrize(
    "make",
    [
        lambda: GroupNorm(3, 4),
        lambda: GroupNorm(0, 4),
        lambda: BatchNorm(3, momentum=1.5),
        lambda: BatchNorm(3, eps=0.0),
        lambda: LayerNorm(0),
        lambda: LayerNorm((3, 2.0)),
        lambda: InstanceNorm1d(3, momentum=-0.1),
        lambda: RMSNorm(4, eps=-1.0),
    ],
)
def test_bad_norm_arguments_raise_config_error(make):
    with pytest.raises(ConfigError):
        make()


# == embedding ================================================================================


@requires_torch
@pytest.mark.parametrize("padding_idx", [None, 0, 3, -1, -5])
def test_embedding_matches_torch_with_repeats_and_padding(padding_idx, float64, rng):
    ours = Embedding(5, 3, padding_idx=padding_idx)
    ref = torch.nn.Embedding(5, 3, padding_idx=padding_idx).double()
    if padding_idx is not None:  # both start the padding row at zero
        assert not ours.weight.data[padding_idx].any()
    with torch.no_grad():
        ref.weight.copy_(torch.tensor(ours.weight.data))
    idx = np.array([[0, 1, 3, 3], [4, 4, 4, 1], [3, 0, 0, 2]])
    gout = rng.standard_normal((3, 4, 3))
    ours.zero_grad()
    y = ours.forward(ctx := Context(True), idx)
    assert ours.backward(ctx, gout) is None
    ty = ref(torch.tensor(idx))
    ty.backward(torch.tensor(gout))
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_allclose(ours.weight.grad, ref.weight.grad.numpy(), rtol=1e-14, atol=0)
    if padding_idx is not None:
        assert not ours.weight.grad[padding_idx].any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.uint8, np.int64])
def test_embedding_float_and_integer_index_arrays(dtype, rng):
    layer = Embedding(7, 2)
    idx = np.array([[0, 6, 2], [5, 5, 1]])
    np.testing.assert_array_equal(layer(idx.astype(dtype)), layer.weight.data[idx])


@pytest.mark.parametrize(
    ("indices", "match"),
    [
        (np.array([[1, 7]]), r"index 7 is out of range \[0, 7\)"),
        (np.array([[1, -1]]), r"index -1 is out of range \[0, 7\)"),
        (np.array([[-8, 1]]), r"index -8 is out of range"),
        (np.array([[1.5, 2.0]]), r"integers in \[0, 7\), got 1.5"),
        (np.array([[np.nan, 2.0]]), r"got nan"),
        (np.array([[np.inf, 2.0]]), r"got inf"),
        (np.array([[7.0, 2.0]]), r"index 7 is out of range"),
        (np.array([True, False]), r"integer array, got dtype bool"),
        (np.array(["1"]), r"integer array"),
        (np.array(3), r"batch axis"),
    ],
)
def test_embedding_bad_indices_raise_data_error_naming_the_layer(indices, match):
    """Never NumPy's IndexError (or a silent wrap-around of negative indices)."""
    with pytest.raises(DataError, match=match) as info:
        Embedding(7, 2, name="tokens")(indices)
    assert "Embedding layer 'tokens'" in str(info.value)


@pytest.mark.parametrize("padding_idx", [7, -8, 1.0, True])
def test_embedding_bad_padding_idx(padding_idx):
    with pytest.raises(ConfigError, match=r"padding_idx must be an integer in \[-7, 7\)"):
        Embedding(7, 2, padding_idx=padding_idx)


def test_embedding_has_no_max_norm_and_says_so():
    """``max_norm`` (renormalising looked-up rows in place) is not supported: refused, not ignored."""
    with pytest.raises(TypeError, match="max_norm"):
        Embedding(7, 2, max_norm=1.0)


def test_embedding_weight_gradient_against_finite_differences(float64, rng):
    """Without padding: the padding row's gradient is 0 by definition, not by differentiation."""
    layer = Embedding(6, 3)
    report = check_gradients(layer, np.array([[0, 2, 5, 5], [1, 2, 0, 4]]), check_input=False)
    assert report.ok


# == reshaping ================================================================================

FLATTEN_CASES = [(1, -1), (1, 2), (2, 3), (-2, -1), (-3, 2), (3, 3), (1, 1), (-1, -1)]


@requires_torch
@pytest.mark.parametrize(("start", "end"), FLATTEN_CASES)
def test_flatten_matches_torch(start, end, rng):
    x = rng.standard_normal((2, 3, 4, 5))
    gout_shape = torch.flatten(torch.tensor(x), start, end).shape
    gout = rng.standard_normal(tuple(gout_shape))
    layer = Flatten(start, end)
    y, g = _run(layer, x, gout)
    ty, tg = _torch_run(lambda t: torch.flatten(t, start, end), x, gout)
    np.testing.assert_array_equal(y, ty)
    np.testing.assert_array_equal(g, tg)
    assert layer.output_shape((None, 3, 4, 5)) == (None, *ty.shape[1:])


@pytest.mark.parametrize(("start", "end"), [(5, -1), (-5, -1), (1, 4), (1, -5), (3, 1)])
def test_flatten_out_of_range_dims_raise_shape_error(start, end):
    """PyTorch raises for dims outside [-rank, rank); wrapping them modulo the rank is a silent reshape."""
    with pytest.raises(ShapeError, match="Flatten layer"):
        Flatten(start, end)(np.zeros((2, 3, 4, 5)))


@pytest.mark.parametrize("start", [0, 1.0, True, None])
def test_flatten_bad_start_dim_is_a_config_error(start):
    with pytest.raises(ConfigError, match="Flatten"):
        Flatten(start)


@pytest.mark.parametrize(("start", "end", "out"), [(1, -1, (0, 60)), (2, 3, (0, 3, 20))])
def test_flatten_and_reshape_take_an_empty_batch(start, end, out):
    x = np.zeros((0, 3, 4, 5), dtype=np.float32)
    y, g = _run(Flatten(start, end), x)
    assert y.shape == out and g.shape == x.shape
    assert _run(Reshape(-1, 5), x)[0].shape == (0, 12, 5)


@requires_torch
@pytest.mark.parametrize(
    "target", [(12, 5), (-1,), (3, -1), (-1, 4, 5), (60,), (2, 2, 15)], ids=lambda t: str(t)
)
def test_reshape_matches_torch(target, rng):
    x = rng.standard_normal((2, 3, 4, 5))
    layer = Reshape(*target)
    ty_shape = torch.tensor(x).reshape(2, *target).shape
    gout = rng.standard_normal(tuple(ty_shape))
    y, g = _run(layer, x, gout)
    ty, tg = _torch_run(lambda t: t.reshape(2, *target), x, gout)
    np.testing.assert_array_equal(y, ty)
    np.testing.assert_array_equal(g, tg)


def test_reshape_size_mismatch_names_layer_and_sizes():
    with pytest.raises(ShapeError, match=r"Reshape layer.*\(3, 4\).*12 elements.*\(5, -1\)"):
        Reshape(5, -1)(np.zeros((2, 3, 4)))


@requires_torch
@pytest.mark.parametrize("dims", [(1, 2, 3), (2, 3, 1), (3, 1, 2), (3, 2, 1), (1, 3, 2)])
def test_permute_matches_torch(dims, rng):
    x = rng.standard_normal((2, 3, 4, 5))
    order = (0, *dims)
    gout = rng.standard_normal(tuple(x.shape[d] for d in order))
    y, g = _run(Permute(dims), x, gout)
    ty, tg = _torch_run(lambda t: t.permute(*order), x, gout)
    np.testing.assert_array_equal(y, ty)
    np.testing.assert_array_equal(g, tg)


@pytest.mark.parametrize("dims", [(0, 1), (1, 1), (1, 3), (), [2.0, 1.0]])
def test_permute_bad_dims_is_a_config_error(dims):
    with pytest.raises(ConfigError, match="Permute"):
        Permute(dims)


def test_permute_rank_mismatch_is_a_shape_error():
    with pytest.raises(ShapeError, match=r"Permute layer.*\(N, d1, d2\)"):
        Permute((2, 1))(np.zeros((2, 3, 4, 5)))


# == merge layers =============================================================================

MERGES = {
    "add": (Add, lambda ts: ts[0] + ts[1] + ts[2], 3),
    "subtract": (Subtract, lambda ts: ts[0] - ts[1], 2),
    "multiply": (Multiply, lambda ts: ts[0] * ts[1] * ts[2], 3),
    "average": (Average, lambda ts: (ts[0] + ts[1] + ts[2]) / 3, 3),
    "maximum": (Maximum, lambda ts: torch.maximum(torch.maximum(ts[0], ts[1]), ts[2]), 3),
    "minimum": (Minimum, lambda ts: torch.minimum(torch.minimum(ts[0], ts[1]), ts[2]), 3),
}


@requires_torch
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("key", list(MERGES))
def test_merge_matches_torch(key, dtype, rng):
    """Values and one gradient per input; Multiply with exact zeros (no division by an input)."""
    cls, fn, k = MERGES[key]
    xs = [rng.standard_normal((4, 3, 2)).astype(dtype) for _ in range(k)]
    if cls in (Add, Multiply):  # no ties for Maximum / Minimum (see the test below)
        xs[0][0, 0, 0] = xs[1][0, 0, 0] = 0.0  # two zeros at one place: each product of others is 0
        xs[2][1, 1, 1] = 0.0
    gout = rng.standard_normal((4, 3, 2)).astype(dtype)
    layer = cls()
    ctx = Context(True)
    y = layer.forward(ctx, [a.copy() for a in xs])
    grads = layer.backward(ctx, gout.copy())
    ts = [torch.tensor(a, requires_grad=True) for a in xs]
    ty = fn(ts)
    ty.backward(torch.tensor(gout))
    tol = {"rtol": 1e-6, "atol": 1e-7} if dtype == np.float32 else {"rtol": 1e-13, "atol": 1e-15}
    np.testing.assert_allclose(y, ty.detach().numpy(), **tol)
    assert y.dtype == dtype and len(grads) == k
    for g, t in zip(grads, ts):
        assert g.dtype == dtype
        np.testing.assert_allclose(g, t.grad.numpy(), **tol)


@pytest.mark.parametrize(("cls", "pick"), [(Maximum, np.maximum), (Minimum, np.minimum)])
def test_maximum_and_minimum_ties_send_the_gradient_to_the_first_input(cls, pick):
    """Documented (Keras/TF's rule); PyTorch's ``torch.maximum`` splits a tie's gradient in halves."""
    a, b = np.array([[1.0, 2.0, 3.0]]), np.array([[1.0, 0.0, 5.0]])
    layer, ctx = cls(), Context(True)
    y = layer.forward(ctx, [a, b])
    np.testing.assert_array_equal(y, pick(a, b))
    ga, gb = layer.backward(ctx, np.ones_like(y))
    first = (a == pick(a, b)).astype(float)
    np.testing.assert_array_equal(ga, first)
    np.testing.assert_array_equal(gb, 1.0 - first)


@requires_torch
@pytest.mark.parametrize("axis", [1, 2, -1, -2])
def test_concatenate_matches_torch(axis, rng):
    shapes = [(2, 3, 4), (2, 3, 4)]
    dim = axis % 3
    shapes = [tuple(5 if i == dim else s for i, s in enumerate(shapes[0])), shapes[1]]
    xs = [rng.standard_normal(s) for s in shapes]
    layer = Concatenate(axis=axis)
    ctx = Context(True)
    y = layer.forward(ctx, xs)
    gout = rng.standard_normal(y.shape)
    grads = layer.backward(ctx, gout)
    ts = [torch.tensor(a, requires_grad=True) for a in xs]
    ty = torch.cat(ts, dim=axis)
    ty.backward(torch.tensor(gout))
    np.testing.assert_array_equal(y, ty.detach().numpy())
    for g, t in zip(grads, ts):
        np.testing.assert_array_equal(g, t.grad.numpy())


ALL_MERGES = [Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate]


@pytest.mark.parametrize("cls", ALL_MERGES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("sizes", [(2, 4), (1, 4), (4, 1)], ids=["2-4", "1-4", "4-1"])
def test_merge_inputs_of_different_batch_sizes_raise_shape_error(cls, sizes):
    """A batch of 1 must not broadcast against a batch of 4 (a silent (4, 3) output), nor crash in NumPy."""
    xs = [np.ones((sizes[0], 3)), np.ones((sizes[1], 3))]
    with pytest.raises(ShapeError, match=rf"{cls.__name__} layer.*batch sizes \[{sizes[0]}, {sizes[1]}\]"):
        cls()(xs)
    built = cls()
    built([np.ones((2, 3)), np.ones((2, 3))])
    with pytest.raises(ShapeError, match="batch size"):
        built(xs)


@pytest.mark.parametrize("cls", ALL_MERGES, ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    "second", [(2, 1), (2, 4, 1), (2, 3, 1)], ids=["broadcastable", "other-size", "other-rank"]
)
def test_merge_mismatched_feature_shapes_raise_shape_error(cls, second):
    """One shape per input, as documented (no broadcasting of (N, 1) against (N, 3))."""
    first = (2, 4, 3) if len(second) == 3 else (2, 3)
    if cls is Concatenate and second == (2, 1):  # sizes may differ along the joined axis 1
        assert cls()([np.ones(first), np.ones(second)]).shape == (2, 4)
        return
    with pytest.raises(ShapeError) as info:
        cls()([np.ones(first), np.ones(second)])
    message = str(info.value)
    assert cls.__name__ in message and format_shape((None, *first[1:])) in message


@pytest.mark.parametrize("cls", ALL_MERGES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("inputs", [[np.ones((2, 3))], np.ones((2, 3))], ids=["one", "not-a-list"])
def test_merge_needs_a_list_of_two_or_more(cls, inputs):
    with pytest.raises(ShapeError, match=rf"{cls.__name__} layer"):
        cls()(inputs)


def test_average_of_integer_inputs_is_their_mean():
    y = Average()([np.array([[1, 2]]), np.array([[2, 5]])])
    np.testing.assert_array_equal(y, [[1.5, 3.5]])
    assert y.dtype == framework.get_default_dtype()


@pytest.mark.parametrize("cls", [Add, Average, Multiply], ids=lambda c: c.__name__)
def test_merge_of_integer_and_float_inputs_promotes(cls):
    xs = [np.array([[1, 2]]), np.array([[3, 4]]), np.array([[0.5, 0.25]])]
    expected = {Add: [[4.5, 6.25]], Average: [[1.5, 6.25 / 3]], Multiply: [[1.5, 2.0]]}[cls]
    np.testing.assert_allclose(cls()(xs), expected, rtol=1e-15)


@pytest.mark.parametrize("cls", ALL_MERGES, ids=lambda c: c.__name__)
def test_merge_gradients_against_finite_differences(cls, float64, rng):
    k = 2 if cls is Subtract else 3
    xs = [rng.standard_normal((2, 3, 2)) for _ in range(k)]
    report = check_gradients(cls(), xs, raise_on_failure=False)
    assert report.ok, str(report)


# == core layers ==============================================================================


@requires_torch
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("layout", ["2d", "2d-fortran", "3d", "4d-permuted"])
def test_linear_matches_torch(layout, bias, dtype, rng, restore_dtype):
    tdt = _with_dtype(dtype)
    ours = Linear(4, 3, bias=bias)
    ref = torch.nn.Linear(4, 3, bias=bias).to(tdt)
    _copy_params_to_torch(ours, ref, rng)
    x = {
        "2d": rng.standard_normal((5, 4)),
        "2d-fortran": np.asfortranarray(rng.standard_normal((5, 4))),
        "3d": rng.standard_normal((2, 5, 4)),
        "4d-permuted": rng.standard_normal((2, 4, 3, 5)).transpose(0, 2, 3, 1),
    }[layout].astype(dtype)
    if layout == "2d-fortran":
        x = np.asfortranarray(x)
    assert (ours.bias is None) is (not bias)
    gout = rng.standard_normal((*x.shape[:-1], 3)).astype(dtype)
    ours.zero_grad()
    y, gx = _run(ours, x, gout.copy())
    ty, tg = _torch_run(ref, x, gout)
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == np.float32 else {"rtol": 1e-13, "atol": 1e-14}
    np.testing.assert_allclose(y, ty, **tol)
    np.testing.assert_allclose(gx, tg, **tol)
    assert y.dtype == dtype and gx.dtype == dtype
    theirs = dict(ref.named_parameters())
    assert sorted(n for n, _ in ours.named_parameters()) == sorted(theirs)
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad, theirs[name].grad.numpy(), **tol)


def test_linear_gradients_against_finite_differences(float64, rng):
    for bias in (True, False):
        report = check_gradients(Linear(3, 2, bias=bias, activation="tanh"), rng.standard_normal((4, 3)))
        assert report.ok


def test_linear_wrong_input_size_names_layer_and_shapes():
    with pytest.raises(
        ShapeError, match=r"Linear layer 'fc' expected input of shape \(N, \*, 3\), got \(2, 4\)"
    ):
        Linear(3, 2, name="fc")(np.ones((2, 4)))


@requires_torch
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.7, 0.9])
def test_dropout_keeps_torchs_exact_scale(p, dtype):
    """Kept values equal PyTorch's kept values bit for bit, the rest are 0; backward uses the same mask."""
    x = np.linspace(-3, 3, 4000).astype(dtype).reshape(40, 100)
    layer = Dropout(p, seed=3)
    y, g = _run(layer, x.copy(), training=True)
    ty = F.dropout(torch.tensor(x), p, training=True).numpy()
    kept, tkept = y != 0, ty != 0
    np.testing.assert_array_equal(y[kept & tkept], ty[kept & tkept])
    assert kept.any() and (kept & tkept).any()
    scale = F.dropout(torch.ones(1000, dtype=TORCH_DTYPES[dtype]), p, training=True).max().item()
    np.testing.assert_array_equal(g, np.where(kept, scale, 0).astype(dtype))
    assert y.dtype == g.dtype == dtype
    # the drop fraction is p (4000 draws: 5 standard deviations)
    assert abs((~kept).mean() - p) < 5 * math.sqrt(p * (1 - p) / x.size)


def test_dropout_zero_and_eval_are_the_identity(rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    for layer, training in ((Dropout(0.0), True), (Dropout(0.5), False)):
        y, g = _run(layer, x, training=training)
        np.testing.assert_array_equal(y, x)
        np.testing.assert_array_equal(g, np.ones_like(x))


@pytest.mark.parametrize("p", [1.0, -0.1, 1.5, float("nan"), "0.5", True])
def test_dropout_probability_outside_0_1_is_a_config_error(p):
    """``p = 1`` is refused by design (docstring: ``p in [0, 1)``), not turned into inf * 0."""
    with pytest.raises(ConfigError, match=r"Dropout: p must be a probability in \[0, 1\)"):
        Dropout(p)


def test_identity_passes_values_and_gradients_through(rng):
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    gout = rng.standard_normal(x.shape).astype(np.float32)
    y, g = _run(Identity(), x, gout)
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(g, gout)
    assert y.dtype == g.dtype == np.float32


# -- a whole stack, through Sequential's in-place gradient paths -------------------------------


class _Permute21(_Module):
    def forward(self, t):
        return t.permute(0, 2, 1)


@requires_torch
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_sequential_stack_of_these_layers_matches_torch(dtype, rng, restore_dtype):
    """Every layer family of this file in one Sequential (whose backward lets layers overwrite
    intermediate gradients in place) against the same torch.nn.Sequential, two training steps."""
    tdt = _with_dtype(dtype)
    act = activations.get
    ours = framework.Sequential(
        [
            Reshape(3, 4),
            Permute((2, 1)),
            Flatten(),
            Linear(12, 8, activation="relu"),
            BatchNorm(8),
            act("elu"),
            Linear(8, 6),
            act("gelu"),
            LayerNorm(6),
            Dropout(0.0),
            Linear(6, 5, activation="silu"),
            act("softplus"),
            Identity(),
            Linear(5, 4, bias=False),
            act("sigmoid"),
            act("tanh"),
            act("leaky_relu"),
            act("log_softmax"),
        ]
    )
    nn = torch.nn
    ref = nn.Sequential(
        nn.Unflatten(1, (3, 4)),
        _Permute21(),
        nn.Flatten(),
        nn.Linear(12, 8),
        nn.ReLU(),
        nn.BatchNorm1d(8),
        nn.ELU(),
        nn.Linear(8, 6),
        nn.GELU(),
        nn.LayerNorm(6),
        nn.Dropout(0.0),
        nn.Linear(6, 5),
        nn.SiLU(),
        nn.Softplus(),
        nn.Identity(),
        nn.Linear(5, 4, bias=False),
        nn.Sigmoid(),
        nn.Tanh(),
        nn.LeakyReLU(),
        nn.LogSoftmax(-1),
    ).to(tdt)
    ours.build((None, 12))
    pairs = list(
        zip(
            [p for layer in ours.layers for p in layer.parameters()],
            [p for module in ref for p in module.parameters()],
        )
    )
    assert len(pairs) == 11
    for p, t in pairs:
        value = rng.standard_normal(p.data.shape).astype(dtype)
        p.data[...] = value
        with torch.no_grad():
            t.copy_(torch.tensor(value))
    tol = _tol(dtype)
    for _ in range(2):
        x = rng.standard_normal((7, 12)).astype(dtype)
        gout = rng.standard_normal((7, 4)).astype(dtype)
        ours.zero_grad()
        ref.zero_grad()
        y = ours.forward(x)
        gx = ours.backward(gout.copy())
        ty, tg = _torch_run(ref, x, gout)
        np.testing.assert_allclose(y, ty, **tol)
        np.testing.assert_allclose(gx, tg, **tol)
        for p, t in pairs:
            np.testing.assert_allclose(p.grad, t.grad.numpy(), **tol)


# -- the numerical-gradient helper itself agrees with torch autograd ----------------------------


@requires_torch
def test_numerical_gradient_agrees_with_torch_autograd_on_a_layernorm(float64, rng):
    layer = LayerNorm(4, elementwise_affine=False)
    x = rng.standard_normal((3, 4))
    w = rng.standard_normal((3, 4))
    numeric = numerical_gradient(lambda: float(np.sum(layer(x) * w)), x)
    _, tg = _torch_run(lambda t: F.layer_norm(t, (4,)), x, w)
    assert relative_error(numeric, tg) < 1e-8
