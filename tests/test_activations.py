"""Tests of the built-in activations: gradients, values, stability, dtypes, lookup, config."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from framework import Input, Model, activations
from framework.base.context import Context
from framework.base.layer import takes_context
from framework.errors import ConfigError, ShapeError
from framework.layers import Linear
from framework.registry.namespace import serialize
from framework.testing import check_gradients
from plugins.activations import (
    ELU,
    GELU,
    IdentityActivation,
    LeakyReLU,
    LogSoftmax,
    ReLU,
    Sigmoid,
    SiLU,
    Softmax,
    Softplus,
    Tanh,
    erfc,
    normal_cdf,
)

# (registered name, constructor kwargs): every activation, some with non-default arguments.
CASES = [
    ("identity", {}),
    ("relu", {}),
    ("leaky_relu", {}),
    ("leaky_relu", {"negative_slope": 0.3}),
    ("elu", {}),
    ("elu", {"alpha": 0.7}),
    ("sigmoid", {}),
    ("tanh", {}),
    ("softmax", {}),
    ("softmax", {"axis": 1}),
    ("log_softmax", {}),
    ("log_softmax", {"axis": 1}),
    ("gelu", {}),
    ("gelu", {"approximate": "tanh"}),
    ("silu", {}),
    ("softplus", {}),
    ("softplus", {"beta": 2.0, "threshold": 1.0}),
]
IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in kw.items()) or 'default'}" for name, kw in CASES]


def _away_from_kinks(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal * 2, pushed at least 0.05 away from 0 (ReLU's kink)."""
    x = 2.0 * rng.standard_normal(shape)
    return np.sign(x) * (np.abs(x) + 0.05)


# -- gradients -------------------------------------------------------------------


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=IDS)
def test_gradients(name, kwargs, float64, rng):
    act = activations.get(name, **kwargs)
    x = _away_from_kinks(rng, (3, 4, 5))
    if name == "softplus" and kwargs.get("threshold") == 1.0:
        x = x[np.abs(2.0 * x - 1.0) > 0.05].reshape(-1)[:40].reshape(4, 10)  # off the switch point
    report = check_gradients(act, x)
    assert report.errors["input"] < 1e-6


def test_softplus_gradient_covers_both_regions(float64):
    act = Softplus(beta=2.0, threshold=1.0)
    x = np.array([[-3.0, -0.4, 0.2, 0.8, 1.5, 4.0]])
    check_gradients(act, x)
    ctx = Context(training=True)
    act.forward(ctx, x)
    np.testing.assert_array_equal(ctx.linear, 2.0 * x > 1.0)
    assert ctx.linear.any() and not ctx.linear.all()


# -- values against formula-level references ------------------------------------------------


@pytest.fixture
def x_moderate(rng):
    return rng.uniform(-6.0, 6.0, size=(8, 16))


def test_relu_family_values(x_moderate):
    x = x_moderate
    np.testing.assert_array_equal(ReLU()(x), np.maximum(x, 0.0))
    np.testing.assert_allclose(LeakyReLU(0.2)(x), np.where(x > 0, x, 0.2 * x), rtol=1e-15)
    np.testing.assert_allclose(ELU(alpha=1.5)(x), np.where(x > 0, x, 1.5 * (np.exp(x) - 1.0)), rtol=1e-13)
    np.testing.assert_array_equal(IdentityActivation()(x), x)


def test_sigmoid_tanh_silu_softplus_values(x_moderate):
    x = x_moderate
    sig = 1.0 / (1.0 + np.exp(-x))
    np.testing.assert_allclose(Sigmoid()(x), sig, rtol=1e-14)
    np.testing.assert_allclose(Tanh()(x), (np.exp(x) - np.exp(-x)) / (np.exp(x) + np.exp(-x)), rtol=1e-13)
    np.testing.assert_allclose(SiLU()(x), x * sig, rtol=1e-14)
    np.testing.assert_allclose(Softplus()(x), np.log(1.0 + np.exp(x)), rtol=1e-13)
    np.testing.assert_allclose(
        Softplus(beta=3.0)(x / 10), np.log(1.0 + np.exp(3.0 * x / 10)) / 3.0, rtol=1e-13
    )


def test_softplus_threshold_switches_to_identity():
    x = np.array([[5.0, 10.0, 10.5, 30.0]])
    out = Softplus(beta=2.0, threshold=20.0)(x)
    np.testing.assert_allclose(out[0, :2], np.log1p(np.exp(2.0 * x[0, :2])) / 2.0, rtol=1e-14)
    np.testing.assert_array_equal(out[0, 2:], x[0, 2:])


def test_softmax_and_log_softmax_values(rng):
    x = rng.standard_normal((4, 3, 5))
    e = np.exp(x)
    for axis in (-1, 1):
        ref = e / e.sum(axis=axis, keepdims=True)
        np.testing.assert_allclose(Softmax(axis=axis)(x), ref, rtol=1e-14)
        np.testing.assert_allclose(Softmax(axis=axis)(x).sum(axis=axis), 1.0, rtol=1e-14)
        np.testing.assert_allclose(LogSoftmax(axis=axis)(x), np.log(ref), rtol=1e-13, atol=1e-14)


def test_softmax_dim_alias():
    assert Softmax(dim=1).axis == 1
    assert LogSoftmax(dim=0).get_config() == {"axis": 0}


def _gelu_reference(v: float) -> float:
    return v * 0.5 * (1.0 + math.erf(v / math.sqrt(2.0)))


def test_gelu_exact_matches_math_erf(rng):
    x = np.concatenate([rng.uniform(-8.0, 8.0, 500), np.linspace(-3.0, 3.0, 61)])
    ref = np.array([_gelu_reference(v) for v in x])
    np.testing.assert_allclose(GELU()(x[None]), ref[None], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_float32_agrees_with_float64(approximate, rng):
    x = rng.uniform(-10.0, 10.0, size=(64, 64))
    act32, act64 = GELU(approximate), GELU(approximate)
    y32 = act32(x.astype(np.float32))
    g32 = act32.backward(np.ones_like(y32))
    y64 = act64(x.astype(np.float32).astype(np.float64))
    g64 = act64.backward(np.ones_like(y64))
    np.testing.assert_allclose(y32, y64, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g32, g64, rtol=1e-5, atol=1e-6)


def test_gelu_tanh_approximation_formula(x_moderate):
    x = x_moderate
    u = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)
    y = GELU(approximate="tanh")(x)
    # PyTorch's form: 1 + tanh(u) cancels for negative x, so compare absolutely
    np.testing.assert_allclose(y, 0.5 * x * (1.0 + np.tanh(u)), rtol=1e-14, atol=1e-14)
    # the same function as x / (1 + exp(-2u)), which keeps full relative accuracy
    np.testing.assert_allclose(y, x / (1.0 + np.exp(-2.0 * u)), rtol=1e-13)
    assert np.abs(GELU(approximate="tanh")(x) - GELU()(x)).max() < 1e-3


def test_erfc_matches_math_erfc_including_tails():
    x = np.concatenate([np.linspace(-6.0, 6.0, 2401), np.linspace(6.0, 26.0, 201), [0.0, 1.0, 2.0, 30.0]])
    ref = np.array([math.erfc(v) for v in x])
    got = erfc(x)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-15)
    tail = x > 2.0
    assert np.max(np.abs(got[tail] - ref[tail]) / ref[tail].clip(1e-300)) < 1e-12


def test_normal_cdf_symmetry_and_known_values():
    x = np.array([-1.959963984540054, 0.0, 1.0])
    np.testing.assert_allclose(
        normal_cdf(x), [0.025, 0.5, 0.5 * (1.0 + math.erf(1.0 / math.sqrt(2.0)))], rtol=1e-13
    )
    y = np.linspace(-10.0, 10.0, 101)
    np.testing.assert_allclose(normal_cdf(y) + normal_cdf(-y), 1.0, rtol=0, atol=4e-15)


# -- stability ------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_no_overflow_at_large_inputs(name, kwargs, dtype):
    act = activations.get(name, **kwargs)
    x = np.array([[-1000.0, -50.0, 0.5, 50.0, 1000.0]], dtype=dtype).repeat(2, axis=0)
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        y = act.forward(x)
        g = act.backward(np.ones_like(y))
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(g))


def test_saturation_limits():
    x = np.array([[-1000.0, 1000.0]])
    np.testing.assert_array_equal(Sigmoid()(x), [[0.0, 1.0]])
    np.testing.assert_array_equal(Softplus()(x), [[0.0, 1000.0]])
    np.testing.assert_array_equal(SiLU()(x), [[0.0, 1000.0]])
    np.testing.assert_array_equal(np.abs(GELU()(x)), [[0.0, 1000.0]])
    np.testing.assert_array_equal(ELU()(x), [[-1.0, 1000.0]])
    np.testing.assert_array_equal(Softmax()(x), [[0.0, 1.0]])
    np.testing.assert_array_equal(LogSoftmax()(x), [[-2000.0, 0.0]])


# -- dtypes and shapes ----------------------------------------------------------------------


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=IDS)
def test_float32_stays_float32(name, kwargs, rng):
    act = activations.get(name, **kwargs)
    x = rng.standard_normal((4, 6, 3)).astype(np.float32)
    y = act.forward(x)
    assert y.dtype == np.float32
    assert act.backward(np.ones_like(y)).dtype == np.float32


def test_integer_input_becomes_float():
    assert Sigmoid()(np.array([[0, 1]])).dtype == np.float32
    assert ReLU()(np.array([[-2, 3]])).dtype == np.float32


def test_activation_accepts_any_shape_after_building(rng):
    act = ReLU()
    act(rng.standard_normal((2, 3)))
    assert act.input_spec is None
    assert act(rng.standard_normal((5, 7, 2))).shape == (5, 7, 2)


def test_softmax_axis_out_of_range_raises_shape_error():
    with pytest.raises(ShapeError, match="axis 3"):
        Softmax(axis=3)(np.ones((2, 4)))


def test_backward_checks_gradient_shape():
    act = Tanh()
    act(np.ones((2, 3)))
    with pytest.raises(ShapeError, match=r"\(2, 3\)"):
        act.backward(np.ones((3, 2)))


# -- gains, lookup, Linear -----------------------------------------------------------------


def test_gains():
    assert ReLU().gain == pytest.approx(math.sqrt(2.0))
    assert LeakyReLU(0.2).gain == pytest.approx(math.sqrt(2.0 / 1.04))
    assert Tanh().gain == pytest.approx(5.0 / 3.0)
    for cls in (Sigmoid, ELU, GELU, SiLU, Softplus, Softmax, IdentityActivation):
        assert cls().gain == 1.0


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("relu", ReLU),
        ("ReLU", ReLU),
        ("leaky_relu", LeakyReLU),
        ("LeakyReLU", LeakyReLU),
        ("elu", ELU),
        ("sigmoid", Sigmoid),
        ("tanh", Tanh),
        ("softmax", Softmax),
        ("log_softmax", LogSoftmax),
        ("gelu", GELU),
        ("silu", SiLU),
        ("swish", SiLU),
        ("softplus", Softplus),
        ("identity", IdentityActivation),
        ("linear", IdentityActivation),
    ],
)
def test_lookup_as_activation(name, cls):
    assert type(activations.get(name)) is cls


def test_lookup_as_layer():
    from framework import layers
    from framework.layers import ELU as LayerELU
    from framework.layers import GELU as LayerGELU
    from framework.layers import LeakyReLU as LayerLeakyReLU
    from framework.layers import ReLU as LayerReLU
    from framework.layers import Sigmoid as LayerSigmoid
    from framework.layers import SiLU as LayerSiLU
    from framework.layers import Softmax as LayerSoftmax
    from framework.layers import Softplus as LayerSoftplus
    from framework.layers import Tanh as LayerTanh

    assert (LayerReLU, LayerLeakyReLU, LayerELU, LayerSigmoid, LayerTanh) == (
        ReLU,
        LeakyReLU,
        ELU,
        Sigmoid,
        Tanh,
    )
    assert (LayerSoftmax, LayerGELU, LayerSiLU, LayerSoftplus) == (Softmax, GELU, SiLU, Softplus)
    assert layers.Identity is not IdentityActivation  # the core Identity layer keeps its name


def test_unknown_activation_lists_names():
    with pytest.raises(ConfigError, match="relu"):
        activations.get("rleu")


def test_linear_with_relu_uses_relu_gain():
    from framework.layers import Linear

    small = Linear(3, 4, activation="relu")
    y = small(np.ones((2, 3), dtype=np.float32))
    assert y.shape == (2, 4) and np.all(y >= 0)
    assert isinstance(small.activation, ReLU)

    bound = math.sqrt(2.0) * math.sqrt(3.0 / 1000)
    w = Linear(1000, 400, activation="relu").weight.data
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.999 * bound
    tanh_bound = 5.0 / 3.0 * math.sqrt(3.0 / 1000)
    w = Linear(1000, 400, activation="tanh").weight.data
    assert np.abs(w).max() <= tanh_bound and np.abs(w).max() > 0.999 * tanh_bound


# -- config -------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=IDS)
def test_config_round_trip(name, kwargs, rng):
    act = activations.get(name, **kwargs)
    data = serialize("activations", act)
    rebuilt = activations.get(data)
    assert type(rebuilt) is type(act)
    assert rebuilt.get_config() == act.get_config()
    x = rng.standard_normal((3, 4))
    np.testing.assert_array_equal(rebuilt(x), act(x))


def test_serialize_names_and_configs():
    assert serialize("activations", ReLU()) == "relu"
    assert serialize("activations", SiLU()) == "silu"
    assert serialize("activations", LeakyReLU(0.2)) == {
        "class_name": "leaky_relu",
        "config": {"negative_slope": 0.2},
    }
    assert serialize("layers", LeakyReLU(0.2))["class_name"] == "LeakyReLU"


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: LeakyReLU(negative_slope="steep"), "negative_slope must be a real number"),
        (lambda: ELU(alpha=float("inf")), "alpha must be finite"),
        (lambda: GELU(approximate="erf"), "none, tanh"),
        (lambda: Softplus(beta=0.0), "beta must be > 0"),
        (lambda: Softmax(axis=1.5), "axis must be an integer"),
        (lambda: Softmax(axis=1, dim=2), "pass only one"),
    ],
)
def test_bad_arguments_raise_config_error(factory, match):
    with pytest.raises(ConfigError, match=match):
        factory()


# -- the per-call context ------------------------------------------------------------


def _forward_backward(layer, ctx: Context, x: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = layer.forward(ctx, x)
    return y.copy(), layer.backward(ctx, g.copy())


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=IDS)
def test_interleaved_calls_keep_their_own_context(float64, rng, name, kwargs):
    """Two forwards, then their backwards in reverse order, equal the calls made one at a time."""
    act = activations.get(name, **kwargs)
    assert takes_context(act)
    x1, x2 = _away_from_kinks(rng, (3, 4, 5)), _away_from_kinks(rng, (2, 4, 5))
    g1, g2 = rng.standard_normal((3, 4, 5)), rng.standard_normal((2, 4, 5))
    ref1 = _forward_backward(act, Context(True), x1, g1)
    ref2 = _forward_backward(act, Context(True), x2, g2)
    c1, c2 = Context(True), Context(True)
    y1, y2 = act.forward(c1, x1).copy(), act.forward(c2, x2).copy()
    dx2 = act.backward(c2, g2.copy())
    dx1 = act.backward(c1, g1.copy())
    for got, want in ((y1, ref1[0]), (dx1, ref1[1]), (y2, ref2[0]), (dx2, ref2[1])):
        np.testing.assert_array_equal(got, want)
    assert not any(k.startswith("_") and isinstance(v, np.ndarray) for k, v in vars(act).items())


def test_an_activation_shared_by_two_places_of_a_model(float64, rng):
    """One Tanh / Softmax / GELU / SiLU instance at two places of a functional model: gradients exact.

    (Smooth ones: a zero bias can put ReLU's input exactly on its kink, where finite differences fail.)
    """
    for shared in (Tanh(), Softmax(), GELU(), SiLU()):
        x = Input((4,))
        h = shared(Linear(4, 5)(x))
        y = shared(Linear(5, 3)(h))
        check_gradients(Model(x, y), _away_from_kinks(rng, (6, 4)))


def test_inference_call_skips_what_only_backward_reads(rng):
    """``record=False`` (predict): ReLU keeps no mask, and the output is unchanged."""
    x = rng.standard_normal((4, 6)).astype(np.float32)
    ctx = Context(False, record=False)
    np.testing.assert_array_equal(ReLU().forward(ctx, x), np.maximum(x, 0))
    assert "mask" not in vars(ctx)


def test_output_links_for_the_loss_pairing():
    assert Softmax.link == "softmax" and Softmax(axis=1).link == "softmax"
    assert Sigmoid.link == "sigmoid"
    assert LogSoftmax.link == "log_softmax"
    for cls in (ReLU, Tanh, GELU, SiLU, IdentityActivation):
        assert cls.link is None
    assert activations.get("softmax").link == "softmax"


def test_entry_point_module_still_registers_everything():
    """``plugins.activations`` (the entry point) registers the classes now defined in other modules."""
    import plugins.activations as module

    exported = {getattr(module, n) for n in module.__all__ if isinstance(getattr(module, n), type)}
    registered = {type(activations.get(name)) for name, _ in CASES}
    assert exported - {module.ActivationLayer} == registered
    assert len(registered) == 11


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_erfc_in_blocks_equals_the_whole_array_evaluation(dtype) -> None:
    """Large arrays are evaluated block by block (cache-resident passes): same values."""
    import math

    from plugins import activation_math

    rows = 3 * activation_math._BLOCK // 7 + 5  # several blocks and a ragged last one
    x = np.linspace(-6, 6, rows * 7, dtype=dtype).reshape(rows, 7)
    tail, gaussian = activation_math.erfc_and_gaussian(x)
    whole_tail, whole_gaussian = activation_math._erfc_and_gaussian(x)
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(tail, whole_tail, rtol=tol, atol=0)
    np.testing.assert_allclose(gaussian, whole_gaussian, rtol=tol, atol=0)
    fortran_tail, _ = activation_math.erfc_and_gaussian(np.asfortranarray(x))  # Linear's layout, kept
    assert fortran_tail.flags.f_contiguous
    np.testing.assert_array_equal(fortran_tail, tail)
    picks = x.reshape(-1)[:: x.size // 50]
    reference = np.array([math.erfc(float(v)) for v in picks])
    np.testing.assert_allclose(tail.reshape(-1)[:: x.size // 50], reference, rtol=10 * tol, atol=0)


def test_float32_normal_cdf_from_the_erfcx_table_is_accurate() -> None:
    """Float32 GELU's CDF (a table of erfcx, interpolated) against math.erfc: within float32's rounding."""
    from plugins import activation_math

    x = np.concatenate([np.linspace(-14, 14, 200001), [0.0, -0.0, 1e-30, -1e-30]]).astype(np.float32)
    # several blocks, C and Fortran order (Linear's transposed output keeps its layout)
    rows = np.tile(x[:70000], 2).reshape(-1, 7)
    reference = np.array([0.5 * math.erfc(-float(v) / math.sqrt(2.0)) for v in x])
    cdf, gaussian = activation_math.normal_cdf_and_gaussian(x)
    assert cdf.dtype == gaussian.dtype == np.float32
    central = np.abs(x) <= 3
    assert np.max(np.abs(cdf[central] - reference[central]) / reference[central]) < 1e-6
    tail = reference > 1e-37  # the left tail: exp of a rounded -x^2/2 costs about x^2 ulps
    rel = np.abs(cdf[tail] - reference[tail]) / reference[tail]
    assert np.max(rel / np.maximum(1.0, x[tail].astype(np.float64) ** 2)) < 5e-7
    exact = np.exp(-(x.astype(np.float64) ** 2) / 2)
    normal = exact > 1e-37
    rel = np.abs(gaussian[normal] - exact[normal]) / exact[normal]
    assert np.max(rel / np.maximum(1.0, x[normal].astype(np.float64) ** 2)) < 5e-7
    fortran, _ = activation_math.normal_cdf_and_gaussian(np.asfortranarray(rows))
    assert fortran.flags.f_contiguous
    np.testing.assert_array_equal(fortran, activation_math.normal_cdf_and_gaussian(rows)[0])
    special = np.array([np.nan, np.inf, -np.inf, 40.0, -40.0], dtype=np.float32)
    cdf, gaussian = activation_math.normal_cdf_and_gaussian(special)
    np.testing.assert_array_equal(cdf, [np.nan, 1.0, 0.0, 1.0, 0.0])
    np.testing.assert_array_equal(gaussian, [np.nan, 0.0, 0.0, 0.0, 0.0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_far_beyond_the_tails_raises_no_floating_point_error(dtype) -> None:
    """|x| near the dtype's maximum: x^2 must not overflow (the float32 table path once squared x itself)."""
    big = np.finfo(dtype).max / 2
    x = np.array([[big, -big, 1e20, -1e20, 0.5]], dtype=dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is the answer
        layer = GELU()
        y = layer(x)
        g = layer.backward(np.ones_like(y))
    np.testing.assert_array_equal(y[0, :4], [x[0, 0], 0.0, x[0, 2], 0.0])
    np.testing.assert_array_equal(g[0, :4], [1.0, 0.0, 1.0, 0.0])
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(g))
