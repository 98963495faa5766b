"""Precision and initializer hunt: loss scaling against ``torch.amp.GradScaler``, dtypes end to end,
and every initializer against ``torch.nn.init`` and its documented formula.

Mixed precision: the scale's trajectory (growth interval, backoff on inf and NaN, the float32
bound of the growth) step for step against ``GradScaler``; a skipped step is an exact no-op;
the gradients are unscaled before clipping and weight decay; the masters stay float32 and keep
updates below float16's resolution; the scale and its schedule survive a state round trip.
Dtypes: float64 models stay float64 (values against PyTorch in float64 to 1e-10, so no layer
computes in float32 inside), float32 models never hand back float64, other input dtypes are cast
at the model's edge. Initializers: fans, gains, bounds and distributions (Kolmogorov-Smirnov,
fixed seeds) against ``torch.nn.init``, orthogonality, dtypes, seeding, empty shapes, bad
arguments, and the layers' default initializations against their docstrings.
Strict xfails mark the bugs whose fix lies outside the initializer/mixed-precision modules.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from support import requires_h5py, requires_scipy, requires_torch

import framework
from framework import Parameter, Sequential
from framework.base.context import Context
from framework.base.initializer import calculate_gain, compute_fans
from framework.base.mixed_precision import LossScaler, all_finite
from framework.errors import ConfigError, DataError, FrameworkError
from framework.layers import (
    GRU,
    LSTM,
    RNN,
    BatchNorm,
    Conv1d,
    Conv2d,
    ConvTranspose2d,
    Embedding,
    Flatten,
    LayerNorm,
    Linear,
    MultiheadAttention,
)
from framework.optimizers import SGD, Adam
from framework.runtime.dtype import default_dtype
from plugins.initializers import (
    Constant,
    KaimingNormal,
    KaimingUniform,
    Normal,
    Ones,
    Orthogonal,
    Uniform,
    XavierNormal,
    XavierUniform,
    Zeros,
)

try:
    import torch
except ImportError:
    torch = None


class _LazyStats:
    """``scipy.stats``, imported at its first use in a test (0.4 s), not at every worker's collection."""

    def __getattr__(self, name: str):
        if name.startswith("_"):  # pytest's collection probes module objects for these
            raise AttributeError(name)
        from scipy import stats

        return getattr(stats, name)


stats = _LazyStats()

#: KS tests: fixed seeds make every p-value a constant; this threshold only guards against a wrong law.
P_MIN = 1e-3


def _gen(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# =============================================================================================
# initializers: fans and gains against torch.nn.init
# =============================================================================================


@requires_torch
@pytest.mark.parametrize("shape", [(3, 4), (7, 1), (6, 3, 5, 5), (2, 3, 7), (4, 2, 3, 3, 3), (1, 1, 1, 1)])
def test_fans_match_torch(shape):
    expected = torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))
    assert compute_fans(shape) == tuple(expected)


TORCH_GAIN_NAMES = [
    "linear",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "sigmoid",
    "tanh",
    "relu",
    "leaky_relu",
    "selu",
]


@requires_torch
@pytest.mark.parametrize("name", TORCH_GAIN_NAMES)
def test_calculate_gain_matches_torch_for_every_torch_name(name):
    """The table is "PyTorch's values": PyTorch's own names (conv2d, conv_transpose2d...) must resolve."""
    assert calculate_gain(name) == pytest.approx(torch.nn.init.calculate_gain(name), rel=1e-15)


@requires_torch
@pytest.mark.parametrize("slope", [0.0, 0.01, 0.2, -0.3, 1.0, 3])
def test_leaky_relu_gain_matches_torch(slope):
    assert calculate_gain("leaky_relu", slope) == pytest.approx(
        torch.nn.init.calculate_gain("leaky_relu", slope), rel=1e-15
    )


@requires_torch
@pytest.mark.parametrize(
    ("activation", "torch_name", "param"),
    [
        ("relu", "relu", None),
        ("tanh", "tanh", None),
        ("sigmoid", "sigmoid", None),
        ("identity", "linear", None),
    ],
)
def test_activation_gains_match_torch(activation, torch_name, param):
    """The gain an activation hands its layer's initializer is torch's calculate_gain."""
    gain = framework.activations.get(activation).gain
    assert gain == pytest.approx(torch.nn.init.calculate_gain(torch_name, param), rel=1e-15)


@requires_torch
@pytest.mark.parametrize("slope", [0.01, 0.2, 0.5])
def test_leaky_relu_activation_gain_matches_torch(slope):
    gain = framework.activations.get("leaky_relu", negative_slope=slope).gain
    assert gain == pytest.approx(torch.nn.init.calculate_gain("leaky_relu", slope), rel=1e-15)


def test_vectors_take_keras_fans_as_documented():
    """torch refuses fans of a 1-D tensor; compute_fans documents Keras's rule fan_in = fan_out = n."""
    assert compute_fans((40,)) == (40, 40) and compute_fans(()) == (1, 1)
    w = KaimingUniform()((4000,), dtype="float64", rng=_gen(0))
    assert np.abs(w).max() <= math.sqrt(6 / 4000) and np.abs(w).max() > 0.99 * math.sqrt(6 / 4000)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((None,), r"calculate_gain.*nonlinearity.*None"),
        ((3,), r"calculate_gain.*nonlinearity.*3"),
        (("swish",), r"calculate_gain.*'swish'.*known"),
        (("leaky_relu", "steep"), r"calculate_gain.*param.*'steep'"),
        (("leaky_relu", float("nan")), r"calculate_gain.*param.*nan"),
        (("leaky_relu", True), r"calculate_gain.*param.*True"),
    ],
)
def test_calculate_gain_bad_arguments_are_config_errors(args, match):
    with pytest.raises(ConfigError, match=match):
        calculate_gain(*args)


# =============================================================================================
# initializers: distributions against torch.nn.init and the closed form
# =============================================================================================

LINEAR_SHAPE = (64, 300)
CONV_SHAPE = (32, 16, 3, 3)


def _torch_sample(fn, shape, seed=0):
    torch.manual_seed(seed)
    t = torch.empty(shape, dtype=torch.float64)
    fn(t)
    return t.numpy().ravel()


def _uniform_bound(kind, shape, **kw):
    fan_in, fan_out = compute_fans(shape)
    if kind == "xavier":
        return kw.get("gain", 1.0) * math.sqrt(6.0 / (fan_in + fan_out))
    fan = fan_in if kw.get("mode", "fan_in") == "fan_in" else fan_out
    gain = torch.nn.init.calculate_gain(kw.get("nonlinearity", "leaky_relu"), kw.get("a", 0.0))
    return gain * math.sqrt(3.0 / fan)


UNIFORM_CASES = [
    ("xavier", {}, XavierUniform, lambda t: torch.nn.init.xavier_uniform_(t)),
    ("xavier", {"gain": 5 / 3}, XavierUniform, lambda t: torch.nn.init.xavier_uniform_(t, gain=5 / 3)),
    ("kaiming", {}, KaimingUniform, lambda t: torch.nn.init.kaiming_uniform_(t)),
    (
        "kaiming",
        {"a": math.sqrt(5)},
        KaimingUniform,
        lambda t: torch.nn.init.kaiming_uniform_(t, a=math.sqrt(5)),
    ),
    (
        "kaiming",
        {"mode": "fan_out", "nonlinearity": "relu"},
        KaimingUniform,
        lambda t: torch.nn.init.kaiming_uniform_(t, mode="fan_out", nonlinearity="relu"),
    ),
    (
        "kaiming",
        {"nonlinearity": "tanh"},
        KaimingUniform,
        lambda t: torch.nn.init.kaiming_uniform_(t, nonlinearity="tanh"),
    ),
    (
        "kaiming",
        {"a": 0.2, "nonlinearity": "leaky_relu", "mode": "fan_out"},
        KaimingUniform,
        lambda t: torch.nn.init.kaiming_uniform_(t, a=0.2, mode="fan_out"),
    ),
]


@requires_scipy
@requires_torch
@pytest.mark.parametrize("shape", [LINEAR_SHAPE, CONV_SHAPE])
@pytest.mark.parametrize(("kind", "kw", "cls", "torch_fn"), UNIFORM_CASES)
def test_uniform_initializers_bound_and_law_match_torch(kind, kw, cls, torch_fn, shape):
    bound = _uniform_bound(kind, shape, **kw)
    if kind == "xavier":
        init, gain = cls(), kw.get("gain")
    else:
        init, gain = cls(**kw), None
    ours = init(shape, dtype="float64", rng=_gen(1), gain=gain).ravel()
    theirs = _torch_sample(torch_fn, shape)
    # the bound is exact: every value inside, the extremes reach it
    assert np.abs(ours).max() <= bound and np.abs(ours).max() > 0.995 * bound
    assert np.abs(theirs).max() <= bound and np.abs(theirs).max() > 0.995 * bound
    assert stats.kstest(ours, stats.uniform(-bound, 2 * bound).cdf).pvalue > P_MIN
    assert stats.ks_2samp(ours, theirs).pvalue > P_MIN


NORMAL_CASES = [
    (XavierNormal(), None, lambda t: torch.nn.init.xavier_normal_(t), "xavier", 1.0),
    (XavierNormal(), 0.5, lambda t: torch.nn.init.xavier_normal_(t, gain=0.5), "xavier", 0.5),
    (KaimingNormal(), None, lambda t: torch.nn.init.kaiming_normal_(t), "kaiming_in", math.sqrt(2)),
    (
        KaimingNormal(mode="fan_out", nonlinearity="relu"),
        None,
        lambda t: torch.nn.init.kaiming_normal_(t, mode="fan_out", nonlinearity="relu"),
        "kaiming_out",
        math.sqrt(2),
    ),
    (
        KaimingNormal(a=0.5),
        None,
        lambda t: torch.nn.init.kaiming_normal_(t, a=0.5),
        "kaiming_in",
        math.sqrt(2 / 1.25),
    ),
]


@requires_scipy
@requires_torch
@pytest.mark.parametrize("shape", [LINEAR_SHAPE, CONV_SHAPE])
@pytest.mark.parametrize(("init", "gain", "torch_fn", "kind", "g"), NORMAL_CASES)
def test_normal_initializers_std_and_law_match_torch(init, gain, torch_fn, kind, g, shape):
    fan_in, fan_out = compute_fans(shape)
    std = {
        "xavier": g * math.sqrt(2.0 / (fan_in + fan_out)),
        "kaiming_in": g / math.sqrt(fan_in),
        "kaiming_out": g / math.sqrt(fan_out),
    }[kind]
    ours = init(shape, dtype="float64", rng=_gen(2), gain=gain).ravel()
    theirs = _torch_sample(torch_fn, shape)
    assert stats.kstest(ours, stats.norm(0.0, std).cdf).pvalue > P_MIN
    assert stats.ks_2samp(ours, theirs).pvalue > P_MIN


@requires_scipy
@requires_torch
def test_plain_normal_and_uniform_match_torch():
    shape = (200, 100)
    ours = Normal(mean=0.3, std=2.0)(shape, dtype="float64", rng=_gen(3)).ravel()
    assert stats.kstest(ours, stats.norm(0.3, 2.0).cdf).pvalue > P_MIN
    assert (
        stats.ks_2samp(ours, _torch_sample(lambda t: torch.nn.init.normal_(t, 0.3, 2.0), shape)).pvalue
        > P_MIN
    )
    ours = Uniform(-0.2, 0.7)(shape, dtype="float64", rng=_gen(4)).ravel()
    assert ours.min() >= -0.2 and ours.max() < 0.7
    assert stats.kstest(ours, stats.uniform(-0.2, 0.9).cdf).pvalue > P_MIN
    assert (
        stats.ks_2samp(ours, _torch_sample(lambda t: torch.nn.init.uniform_(t, -0.2, 0.7), shape)).pvalue
        > P_MIN
    )


def test_keras_aliases_follow_the_keras_formulas():
    """``glorot_uniform``: limit sqrt(6/(fan_in+fan_out)); ``he_uniform``: sqrt(6/fan_in);
    conv fans count the receptive field."""
    for shape in [(30, 50), (8, 4, 3, 5)]:
        fan_in, fan_out = compute_fans(shape)
        glorot = framework.initializers.get("glorot_uniform")(shape, dtype="float64", rng=_gen(5))
        assert np.abs(glorot).max() <= math.sqrt(6 / (fan_in + fan_out))
        he = framework.initializers.get("he_uniform")(shape, dtype="float64", rng=_gen(5))
        assert np.abs(he).max() <= math.sqrt(6 / fan_in)
        assert np.abs(he).max() > 0.98 * math.sqrt(6 / fan_in)
        # Keras's he_normal/glorot_normal variance (its truncation is compensated to these)
        he_n = framework.initializers.get("he_normal")((400, 500), dtype="float64", rng=_gen(6))
        assert he_n.std() == pytest.approx(math.sqrt(2 / 500), rel=0.01)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("cls", [XavierUniform, pytest.param(KaimingUniform, marks=requires_torch)])
def test_uniform_bound_holds_after_the_cast(cls, dtype):
    shape = (50, 40)
    w = cls()(shape, dtype=dtype, rng=_gen(7))
    bound = _uniform_bound("xavier" if cls is XavierUniform else "kaiming", shape)
    assert w.dtype == np.dtype(dtype)
    assert np.abs(w).max() <= np.dtype(dtype).type(bound)


# -- orthogonal -----------------------------------------------------------------------------


@requires_torch
@pytest.mark.parametrize("shape", [(8, 3), (3, 8), (6, 6), (4, 2, 3, 3), (30, 2, 2, 2), (1, 5), (5, 1)])
@pytest.mark.parametrize(("own_gain", "passed"), [(1.0, None), (2.0, None), (1.0, math.sqrt(2)), (0.5, 3.0)])
def test_orthogonal_is_orthogonal_for_tall_wide_and_conv_shapes(shape, own_gain, passed):
    w = Orthogonal(gain=own_gain)(shape, dtype="float64", rng=_gen(8), gain=passed)
    assert w.shape == shape
    g = own_gain * (1.0 if passed is None else passed)
    m = w.reshape(shape[0], -1)
    gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    np.testing.assert_allclose(gram, g * g * np.eye(gram.shape[0]), atol=1e-12)
    # torch's orthogonal_ gives the same Gram matrix
    t = torch.empty(shape, dtype=torch.float64)
    torch.nn.init.orthogonal_(t, gain=g)
    tm = t.numpy().reshape(shape[0], -1)
    tgram = tm @ tm.T if tm.shape[0] <= tm.shape[1] else tm.T @ tm
    np.testing.assert_allclose(gram, tgram, atol=1e-12)


@requires_scipy
@requires_torch
def test_orthogonal_entries_follow_haar_like_torch():
    """One entry of a Haar orthogonal matrix: same law as torch's orthogonal_ (sign fix included)."""
    ours = np.array([Orthogonal()((4, 4), dtype="float64", rng=_gen(s))[0, 0] for s in range(1500)])
    torch.manual_seed(0)
    theirs = []
    for _ in range(1500):
        t = torch.empty(4, 4, dtype=torch.float64)
        torch.nn.init.orthogonal_(t)
        theirs.append(float(t[0, 0]))
    assert stats.ks_2samp(ours, np.array(theirs)).pvalue > P_MIN


# -- constants ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_constants_exact_in_every_dtype_and_ignore_gain(dtype):
    for init, value in [(Zeros(), 0.0), (Ones(), 1.0), (Constant(-2.5), -2.5), (Constant(3), 3.0)]:
        w = init((3, 4, 2), dtype=dtype, gain=7.0)
        assert w.dtype == np.dtype(dtype) and w.shape == (3, 4, 2)
        assert np.all(w == value)


# -- dtype, seeding, empty and odd shapes -----------------------------------------------------

ALL_NAMES = sorted(framework.initializers.names())


@pytest.mark.parametrize("name", ALL_NAMES)
def test_every_initializer_dtype_follows_the_request_and_the_default(name):
    init = framework.initializers.get(name)
    for dtype in ("float16", "float32", "float64"):
        assert init((6, 4), dtype=dtype).dtype == np.dtype(dtype)
        with default_dtype(dtype):
            assert init((6, 4)).dtype == np.dtype(dtype)
    with pytest.raises(ConfigError, match="int32"):
        init((6, 4), dtype="int32")


@pytest.mark.parametrize("name", ALL_NAMES)
def test_every_initializer_is_deterministic_under_set_seed(name):
    init = framework.initializers.get(name)
    framework.set_seed(11)
    a = init((7, 5))
    framework.set_seed(11)
    b = init((7, 5))
    framework.set_seed(12)
    c = init((7, 5))
    assert np.array_equal(a, b)
    if name not in ("Zeros", "Ones", "Constant"):
        assert not np.array_equal(a, c)


@pytest.mark.parametrize("name", ALL_NAMES)
@pytest.mark.parametrize("shape", [(5, 0), (0, 5), (0, 0), (4, 0, 3, 3), (0,)])
def test_empty_shapes_give_empty_arrays_not_a_crash(name, shape):
    """PyTorch returns zero-element tensors unchanged; a zero fan must not divide by zero."""
    init = framework.initializers.get(name)
    if name == "Orthogonal" and len(shape) < 2:  # refuses vectors by design, as PyTorch's orthogonal_
        with pytest.raises(FrameworkError, match="Orthogonal"):
            init(shape, dtype="float64", rng=_gen(0))
        return
    w = init(shape, dtype="float64", rng=_gen(0))
    assert w.shape == shape and w.dtype == np.float64


@pytest.mark.parametrize("name", ["XavierUniform", "KaimingNormal", "Normal", "Zeros"])
def test_integer_like_shapes_are_accepted(name):
    init = framework.initializers.get(name)
    assert init(5, rng=_gen(0)).shape == (5,)
    assert init(np.int64(4), rng=_gen(0)).shape == (4,)
    assert init((np.int64(3), np.int32(2)), rng=_gen(0)).shape == (3, 2)
    assert init(np.array([3, 2]), rng=_gen(0)).shape == (3, 2)


@pytest.mark.parametrize("name", ["XavierUniform", "KaimingUniform", "Orthogonal", "Zeros"])
@pytest.mark.parametrize(
    ("shape", "shown"),
    [
        ((2.5, 3), "2.5"),
        (("a", 3), "'a'"),
        (None, "None"),
        ((3, -1), "-1"),
        ((True, 3), "True"),
        (2.0, "2.0"),
    ],
)
def test_bad_shapes_are_config_errors_naming_the_initializer(name, shape, shown):
    init = framework.initializers.get(name)
    with pytest.raises(ConfigError, match=rf"{name}.*shape.*{shown}"):
        init(shape)


@pytest.mark.parametrize("rng", [5, "seed", np.random.RandomState(0)])
def test_a_generator_that_is_not_one_is_a_config_error(rng):
    with pytest.raises(ConfigError, match=r"XavierUniform.*rng.*Generator"):
        XavierUniform()((3, 3), rng=rng)


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: KaimingUniform()((3, 3), gain=-1.0), r"KaimingUniform: gain must be >= 0, got -1"),
        (lambda: XavierNormal()((3, 3), gain=-0.5), r"XavierNormal: gain must be >= 0, got -0.5"),
        (lambda: XavierUniform()((3, 3), gain=float("inf")), r"XavierUniform: gain must be finite"),
        (lambda: Orthogonal()((3, 3), gain=-2), r"Orthogonal: gain must be >= 0"),
        (lambda: KaimingNormal(mode="fan_avg"), r"KaimingNormal: mode.*fan_in, fan_out.*'fan_avg'"),
        (lambda: KaimingUniform(nonlinearity="swish"), r"KaimingUniform.*'swish'"),
        (lambda: KaimingUniform(nonlinearity=None), r"KaimingUniform: nonlinearity.*None"),
        (lambda: KaimingUniform(a=float("nan")), r"KaimingUniform: a must be finite"),
        (lambda: Orthogonal()((6,)), r"Orthogonal.*2 or more dimensions.*\(6,\)"),
        (lambda: Normal(std=-1), r"Normal: std must be >= 0, got -1"),
        (lambda: Uniform(0.5, -0.5), r"Uniform: low must be < high, got low=0.5, high=-0.5"),
        (lambda: Constant("x"), r"Constant: value must be a real number, got 'x'"),
    ],
)
def test_bad_initializer_arguments_name_the_initializer_and_the_value(factory, match):
    with pytest.raises(ConfigError, match=match):
        factory()


# =============================================================================================
# layers' default initializations against their docstrings
# =============================================================================================


def _assert_uniform(w, bound):
    w = np.asarray(w, dtype=np.float64).ravel()
    assert np.abs(w).max() <= np.float32(bound) * (1 + 1e-7)
    assert np.abs(w).max() > 0.97 * bound
    assert stats.kstest(w, stats.uniform(-bound, 2 * bound).cdf).pvalue > P_MIN


@requires_scipy
@pytest.mark.parametrize(
    ("factory", "bound"),
    [
        (lambda: Linear(300, 64), math.sqrt(6 / 300)),  # He uniform, ReLU's gain when no activation
        (lambda: Linear(300, 64, activation="relu"), math.sqrt(6 / 300)),
        (lambda: Linear(300, 64, activation="tanh"), 5 / 3 * math.sqrt(3 / 300)),
        (lambda: Linear(300, 64, activation="sigmoid"), math.sqrt(3 / 300)),
        (lambda: Linear(300, 64, activation="leaky_relu"), math.sqrt(2 / (1 + 1e-4)) * math.sqrt(3 / 300)),
        (lambda: Linear(300, 64, weight_init="xavier_uniform"), math.sqrt(6 / 364)),
        (lambda: Conv2d(16, 32, 3), math.sqrt(6 / (16 * 9))),
        (lambda: Conv2d(16, 32, (3, 5), activation="tanh"), 5 / 3 * math.sqrt(3 / (16 * 15))),
        (lambda: Conv2d(16, 32, 3, groups=4), math.sqrt(6 / (4 * 9))),
        (lambda: Conv1d(12, 40, 5), math.sqrt(6 / 60)),
        (lambda: ConvTranspose2d(16, 24, 3), math.sqrt(6 / (24 * 9))),  # PyTorch's fan of (in, out, k, k)
    ],
)
def test_default_weight_init_of_linear_and_conv_follows_the_docs(factory, bound):
    framework.set_seed(0)
    layer = factory()
    _assert_uniform(layer.weight.data, bound)
    assert layer.weight.data.dtype == np.float32
    assert np.all(layer.bias.data == 0)  # biases start at zero (docs/maths/initialisation.md)


@requires_scipy
@pytest.mark.parametrize("cls", [RNN, LSTM, GRU])
def test_recurrent_default_init_is_pytorchs_uniform(cls):
    framework.set_seed(0)
    layer = cls(10, 25, num_layers=2, bidirectional=True)
    named = dict(layer.named_parameters())
    assert any(k.endswith("_reverse") for k in named) and "weight_hh_l1" in named
    for name, p in named.items():
        assert p.data.dtype == np.float32, name
    everything = np.concatenate([p.data.ravel() for p in named.values()])
    _assert_uniform(everything, 1 / math.sqrt(25))
    for name, p in named.items():
        assert np.abs(p.data).max() <= np.float32(1 / math.sqrt(25)), name


@requires_scipy
def test_embedding_default_is_standard_normal_with_a_zero_padding_row():
    framework.set_seed(0)
    emb = Embedding(2000, 32, padding_idx=3)
    w = emb.weight.data
    assert w.dtype == np.float32
    assert np.all(w[3] == 0)
    rest = np.delete(w, 3, axis=0).ravel().astype(np.float64)
    assert stats.kstest(rest, stats.norm(0, 1).cdf).pvalue > P_MIN


@requires_scipy
def test_multihead_attention_default_init_is_pytorchs():
    framework.set_seed(0)
    mha = MultiheadAttention(64, 4)
    _assert_uniform(mha.in_proj_weight.data, math.sqrt(6 / (64 + 3 * 64)))
    assert np.all(mha.in_proj_bias.data == 0) and np.all(mha.out_proj.bias.data == 0)
    split = MultiheadAttention(64, 4, kdim=32, vdim=16)
    # each projection its own Xavier bound, as PyTorch's xavier_uniform_ on each weight
    _assert_uniform(split.k_proj_weight.data, math.sqrt(6 / (64 + 32)))
    _assert_uniform(split.v_proj_weight.data, math.sqrt(6 / (64 + 16)))


@pytest.mark.parametrize(
    "factory",
    [
        lambda: Linear(6, 4),
        lambda: Conv2d(2, 3, 3),
        lambda: LSTM(3, 4),
        lambda: GRU(3, 4),
        lambda: Embedding(10, 4),
        lambda: MultiheadAttention(8, 2),
    ],
)
def test_layers_are_deterministic_under_set_seed_and_built_in_the_default_dtype(factory):
    framework.set_seed(5)
    a = [p.data.copy() for p in factory().parameters()]
    framework.set_seed(5)
    b = [p.data.copy() for p in factory().parameters()]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    with default_dtype("float64"):
        assert {p.data.dtype for p in factory().parameters()} == {np.dtype(np.float64)}


# =============================================================================================
# dtypes through whole layers and models
# =============================================================================================


def _copy_into(layer, module):
    theirs = dict(module.named_parameters())
    for name, p in layer.named_parameters():
        p.data[...] = theirs[name].detach().double().numpy()


def _layer_case(kind, rng):
    """(framework layer, torch module, x, grad_out, torch forward)."""
    if kind == "linear":
        return Linear(6, 5), torch.nn.Linear(6, 5), rng.standard_normal((7, 6)), (7, 5), None
    if kind == "conv2d":
        return (
            Conv2d(2, 3, 3, stride=2, padding=1),
            torch.nn.Conv2d(2, 3, 3, stride=2, padding=1),
            rng.standard_normal((4, 2, 7, 6)),
            (4, 3, 4, 3),
            None,
        )
    if kind == "batchnorm":
        return (
            BatchNorm(3),
            torch.nn.BatchNorm2d(3),
            rng.standard_normal((5, 3, 4, 4)) * 3 + 1,
            (5, 3, 4, 4),
            None,
        )
    if kind == "layernorm":
        return LayerNorm(8), torch.nn.LayerNorm(8), rng.standard_normal((3, 5, 8)) * 2, (3, 5, 8), None
    if kind == "lstm":
        return (
            LSTM(4, 5, batch_first=True, output="sequence"),
            torch.nn.LSTM(4, 5, batch_first=True),
            rng.standard_normal((3, 6, 4)),
            (3, 6, 5),
            lambda m, t: m(t)[0],
        )
    if kind == "gru":
        return (
            GRU(4, 5, batch_first=True, output="sequence"),
            torch.nn.GRU(4, 5, batch_first=True),
            rng.standard_normal((3, 6, 4)),
            (3, 6, 5),
            lambda m, t: m(t)[0],
        )
    if kind == "mha":
        return (
            MultiheadAttention(8, 2),
            torch.nn.MultiheadAttention(8, 2, batch_first=True),
            rng.standard_normal((3, 5, 8)),
            (3, 5, 8),
            lambda m, t: m(t, t, t, need_weights=False)[0],
        )
    assert kind == "embedding"
    return Embedding(10, 4), torch.nn.Embedding(10, 4), rng.integers(0, 10, (3, 5)), (3, 5, 4), None


LAYER_KINDS = ["linear", "conv2d", "batchnorm", "layernorm", "lstm", "gru", "mha", "embedding"]


@requires_torch
@pytest.mark.parametrize("kind", LAYER_KINDS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_layer_forward_backward_keep_the_dtype_and_match_torch_float64(kind, dtype):
    """float64 layers agree with PyTorch in float64 to 1e-10 (nothing inside runs in float32);
    float32 layers return float32 outputs, input gradients and parameter gradients."""
    rng = _gen(0)
    with default_dtype(dtype):
        layer, module, x, gshape, call = _layer_case(kind, rng)
    module = module.double()
    _copy_into(layer, module)
    floating = x.dtype.kind == "f"
    x = x.astype(dtype) if floating else x
    g = rng.standard_normal(gshape).astype(dtype)
    ctx = Context(True)
    out = layer.forward(ctx, x)
    dx = layer.backward(ctx, g)
    assert out.dtype == np.dtype(dtype)
    if floating:
        assert dx.dtype == np.dtype(dtype)
    for name, p in layer.named_parameters():
        assert p.data.dtype == np.dtype(dtype) and p.grad.dtype == np.dtype(dtype), name

    tx = torch.tensor(x.astype(np.float64) if floating else x, requires_grad=floating)
    tout = call(module, tx) if call else module(tx)
    tout.backward(torch.tensor(g.astype(np.float64)))
    tol = {"rtol": 1e-10, "atol": 1e-12} if dtype == "float64" else {"rtol": 2e-4, "atol": 2e-5}
    np.testing.assert_allclose(out, tout.detach().numpy(), **tol)
    if floating:
        np.testing.assert_allclose(dx, tx.grad.numpy(), **tol)
    theirs = dict(module.named_parameters())
    for name, p in layer.named_parameters():
        np.testing.assert_allclose(p.grad, theirs[name].grad.numpy(), **tol, err_msg=name)


def _family(kind):
    if kind == "linear":
        return [Linear(6, 5, activation="tanh"), Linear(5, 3)], (16, 6)
    if kind == "conv_bn":
        from framework.layers import MaxPool2d, ReLU

        return [Conv2d(2, 3, 3, padding=1), BatchNorm(3), ReLU(), MaxPool2d(2), Flatten(), Linear(12, 3)], (
            16,
            2,
            4,
            4,
        )
    if kind == "lstm":
        return [LSTM(4, 5, batch_first=True, output="last"), Linear(5, 3)], (16, 3, 4)
    if kind == "gru":
        return [GRU(4, 5, batch_first=True, output="last"), Linear(5, 3)], (16, 3, 4)
    if kind == "mha":
        return [MultiheadAttention(4, 2), LayerNorm(4), Flatten(), Linear(12, 3)], (16, 3, 4)
    return [Embedding(10, 4), Flatten(), Linear(12, 3)], None


FAMILIES = ["linear", "conv_bn", "lstm", "gru", "mha", "embedding"]


@pytest.mark.parametrize("kind", FAMILIES)
@pytest.mark.parametrize("model_dtype", ["float64", "float32", "float16"])
def test_models_stay_in_their_dtype_through_fit_predict_evaluate(kind, model_dtype):
    rng = _gen(1)
    with default_dtype(model_dtype):
        framework.set_seed(0)
        layers, xshape = _family(kind)
        model = Sequential(layers)
    model.compile("sgd", "mse")
    y = rng.standard_normal((16, 3))
    inputs = (
        [rng.integers(0, 10, (16, 3))]
        if xshape is None
        else [rng.standard_normal(xshape).astype(d) for d in ("float64", "float32")]
    )
    for x in inputs:
        model.fit(x, y, epochs=1, batch_size=8, verbose=0)
        for p in model.parameters():
            assert p.data.dtype == np.dtype(model_dtype) and p.grad.dtype == np.dtype(model_dtype)
        for key, value in model.state_dict().items():  # BatchNorm's running statistics too
            assert value.dtype == np.dtype(model_dtype), key
        assert model.predict(x).dtype == np.dtype(model_dtype)
        assert model(x).dtype == np.dtype(model_dtype)
        logs = model.evaluate(x, y, verbose=0)
        assert type(logs["loss"]) is float


@pytest.mark.parametrize("kind", FAMILIES)
def test_other_input_dtypes_are_cast_once_at_the_models_edge(kind):
    """float64, int and bool inputs to a float32 model give exactly what their float32 cast gives."""
    rng = _gen(2)
    framework.set_seed(0)
    layers, xshape = _family(kind)
    model = Sequential(layers)
    if xshape is None:
        x = rng.integers(0, 10, (16, 3))
        variants = [x.astype(np.int32), x.astype(np.uint8), x.astype(np.float64)]
        reference = model.predict(x)
    else:
        x = rng.standard_normal(xshape)
        variants = [x, np.round(x * 2).astype(np.int64), x > 0]
        reference = None
    for v in variants:
        cast = v.astype(np.float32) if xshape is not None else x
        expected = model.predict(cast) if reference is None else reference
        got = model.predict(v)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, expected)


def test_float32_fit_on_float64_data_equals_fit_on_its_float32_cast():
    rng = _gen(3)
    x, y = rng.standard_normal((32, 5)), rng.standard_normal((32, 2))
    results = []
    for xx, yy in [(x, y), (x.astype(np.float32), y.astype(np.float32))]:
        framework.set_seed(0)
        model = Sequential([Linear(5, 4, activation="relu"), Linear(4, 2)])
        model.compile(Adam(1e-2), "mse")
        history = model.fit(xx, yy, epochs=3, batch_size=8, verbose=0, shuffle=False)
        results.append(([p.data.copy() for p in model.parameters()], history.history["loss"]))
    for a, b in zip(results[0][0], results[1][0]):
        assert a.dtype == np.float32
        np.testing.assert_array_equal(a, b)
    assert results[0][1] == results[1][1]


@requires_torch
def test_float64_model_losses_are_float64_exact():
    rng = _gen(4)
    with default_dtype("float64"):
        model = Sequential([Linear(5, 3)])
    x, y = rng.standard_normal((20, 5)), rng.standard_normal((20, 3))
    model.compile("sgd", "mse")
    pred = model.predict(x)
    assert model.evaluate(x, y, verbose=0)["loss"] == pytest.approx(np.mean((pred - y) ** 2), rel=1e-14)
    model.compile("sgd", "cross_entropy")
    labels = rng.integers(0, 3, 20)
    ref = torch.nn.functional.cross_entropy(torch.tensor(pred), torch.tensor(labels)).item()
    assert model.evaluate(x, labels, verbose=0)["loss"] == pytest.approx(ref, rel=1e-14)


@pytest.mark.parametrize(
    "x", [np.ones((2, 4)) + 1j, np.array([["a"] * 4] * 2), np.ones((2, 4), dtype=object)]
)
def test_unusable_input_dtypes_are_data_errors(x):
    model = Sequential([Linear(4, 3)])
    with pytest.raises(DataError, match=r"x: arrays of dtype"):
        model.predict(x)


@pytest.mark.parametrize("kind", ["linear", "conv_bn", "mha"])
def test_float32_model_backward_of_a_float64_gradient_stays_float32(kind):
    rng = _gen(5)
    layers, xshape = _family(kind)
    model = Sequential(layers)
    out = model.forward(rng.standard_normal(xshape).astype(np.float32))
    assert out.dtype == np.float32
    dx = model.backward(np.ones(out.shape))  # float64, as np.ones makes it
    assert dx.dtype == np.float32


def test_float16_model_reports_a_finite_loss_when_float32_would():
    with default_dtype("float16"):
        model = Sequential([Linear(2, 1, weight_init="zeros")])
    model.compile("sgd", "mse")
    x, y = np.ones((64, 2), np.float16), np.full((64, 1), 300, np.float16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert model.evaluate(x, y, verbose=0)["loss"] == pytest.approx(90000.0)


# =============================================================================================
# mixed precision against torch.amp.GradScaler
# =============================================================================================


def _scaled_float16(g, scale):
    with np.errstate(over="ignore"):
        return (np.asarray(g, np.float32) * np.float32(scale)).astype(np.float16)


@requires_torch
@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("growth_interval", [1, 3])
def test_scale_trajectory_and_weights_match_grad_scaler(growth_interval):
    """Events: finite, +inf, NaN, +inf and -inf together. Scale, growth tracker, step count and
    weights follow torch.amp.GradScaler step for step; the overflow path warns nothing."""
    events = "FFFIFFNFFMFFIIFFFFF"
    rng = _gen(6)
    start = (np.round(rng.standard_normal(6) * 64) / 64).astype(np.float16)
    grads = [np.round(rng.standard_normal(6) * 64) / 1024 for _ in events]

    p = Parameter(start.copy())
    opt = Adam([p], 1e-2)
    opt.loss_scaler = LossScaler(2.0**10, growth_interval=growth_interval)
    tp = torch.nn.Parameter(torch.tensor(start.astype(np.float32)))
    topt = torch.optim.Adam([tp], lr=1e-2)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=growth_interval)
    for ev, g in zip(events, grads):
        opt.zero_grad()
        scaled = _scaled_float16(g, opt.loss_scaler.scale)
        topt.zero_grad()
        loss = (tp * torch.tensor(g, dtype=torch.float32)).sum()
        scaler.scale(loss).backward()
        if ev == "I":
            scaled[1], tp.grad[1] = np.inf, math.inf
        elif ev == "N":
            scaled[2], tp.grad[2] = np.nan, math.nan
        elif ev == "M":
            scaled[:2], tp.grad[0], tp.grad[1] = [np.inf, -np.inf], math.inf, -math.inf
        p.grad = scaled
        opt.loss_scaler.pending = True
        opt.step()
        scaler.step(topt)
        scaler.update()
        assert opt.loss_scaler.scale == scaler.get_scale()
        assert opt.loss_scaler.good_steps == int(scaler._growth_tracker)
        assert opt.iterations == int(topt.state[tp].get("step", 0)) if topt.state else opt.iterations == 0
        np.testing.assert_allclose(opt.master(p).data, tp.detach().numpy(), rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(p.data, opt.master(p).data.astype(np.float16))
    assert opt.loss_scaler.skipped == sum(e in "INM" for e in events)


@requires_torch
def test_scale_never_grows_past_float32_like_grad_scaler():
    """GradScaler keeps the scale finite in float32 (2**127); a scale of inf would skip every step forever."""
    ours = LossScaler(2.0**126, growth_interval=1)
    p = torch.nn.Parameter(torch.ones(3))
    topt = torch.optim.SGD([p], lr=0.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**126, growth_interval=1)
    for _ in range(4):
        ours.stepped()
        topt.zero_grad()
        scaler.scale((p * 0).sum()).backward()
        scaler.step(topt)
        scaler.update()
        assert ours.scale == scaler.get_scale()
    assert math.isfinite(ours.scale)


def test_a_huge_scale_never_becomes_inf_and_stalls_training():
    """With all-zero gradients the scale doubles every interval; were it to reach inf, every later
    step would be skipped for good (inf * 0 = NaN, inf / 2 = inf). It must come down and train."""
    p = Parameter(np.ones(3, np.float16))
    opt = SGD([p], 0.5)
    opt.loss_scaler = LossScaler(2.0**120, growth_interval=1)
    opt.loss_scaler.scale = 2.0**1022  # as if grown for a million steps
    for _ in range(10):
        p.grad = np.zeros(3, np.float16)
        opt.loss_scaler.pending = True
        opt.step()
    assert math.isfinite(opt.loss_scaler.scale)
    for _ in range(1200):  # overflowing steps halve the scale until a gradient of 1 gets through
        p.grad = _scaled_float16(np.ones(3), opt.loss_scaler.scale)
        opt.loss_scaler.pending = True
        opt.step()
        if opt.iterations > 10:
            break
    assert opt.master(p).data[0] == pytest.approx(0.5)


def _adam_run(steps, opt_kwargs, scale):
    p = Parameter(np.array([0.5, -1.0, 2.0, 0.25], np.float16))
    opt = Adam([p], 1e-2, **opt_kwargs)
    opt.loss_scaler = LossScaler(scale, growth_interval=1000)
    for g in steps:
        if g is None:  # an overflowing step
            p.grad = np.array([np.inf, 1, np.nan, 0], np.float16)
        else:
            p.grad = _scaled_float16(g, opt.loss_scaler.scale)
        opt.loss_scaler.pending = True
        opt.step()
    return p, opt


@pytest.mark.parametrize("opt_kwargs", [{}, {"weight_decay": 0.1}, {"clipnorm": 0.05}, {"amsgrad": True}])
def test_a_skipped_step_is_an_exact_no_op(opt_kwargs):
    g1 = np.array([0.25, -0.5, 1.0, 0.0])
    g2 = np.array([-0.125, 0.75, 0.5, 0.25])
    g3 = np.array([0.5, 0.5, -0.25, 1.0])
    with_skip, opt_a = _adam_run([g1, None, g2, None, None, g3], opt_kwargs, 2.0**8)
    without, opt_b = _adam_run([g1, g2, g3], opt_kwargs, 2.0**8)
    assert opt_a.iterations == opt_b.iterations == 3
    assert opt_a.loss_scaler.scale == 2.0**5 and opt_a.loss_scaler.skipped == 3
    np.testing.assert_array_equal(with_skip.data, without.data)
    state_a, state_b = opt_a.state_dict()["slots"][0], opt_b.state_dict()["slots"][0]
    assert set(state_a) == set(state_b)
    for key in state_a:
        assert state_a[key].dtype == np.float32
        np.testing.assert_array_equal(state_a[key], state_b[key], err_msg=key)


@pytest.mark.parametrize(
    "kwargs",
    [{"clipnorm": 0.3}, {"clipvalue": 0.01}, {"weight_decay": 0.2}, {"clipnorm": 1e-3, "weight_decay": 0.1}],
)
@pytest.mark.parametrize("cls", [SGD, Adam])
def test_unscaled_before_clipping_and_weight_decay(cls, kwargs):
    """float16 + scale 2**12 takes the float32 path on the unscaled gradients (GradScaler.unscale_)."""
    extra = {"momentum": 0.9} if cls is SGD else {}
    start = np.array([[0.5, -1.0], [2.0, 0.25]], np.float16)
    grads = [np.array([[0.25, -0.5], [1.0, 0.0]]), np.array([[3.0, 0.125], [-2.0, 0.5]])]
    half = Parameter(start.copy())
    opt = cls([half], 0.05, **extra, **kwargs)
    opt.loss_scaler = LossScaler(2.0**12)
    ref = Parameter(start.astype(np.float32))
    ref_opt = cls([ref], 0.05, **extra, **kwargs)
    for g in grads:
        half.grad = _scaled_float16(g, opt.loss_scaler.scale)
        opt.loss_scaler.pending = True
        opt.step()
        ref.grad = g.astype(np.float32)
        ref_opt.step()
    np.testing.assert_allclose(opt.master(half).data, ref.data, rtol=1e-6, atol=1e-7)


def test_masters_keep_updates_below_float16_resolution():
    """1.0 + 20 steps of -1e-4 stays 1.0 in float16 arithmetic; the float32 master moves."""
    p = Parameter(np.ones(4, np.float16))
    opt = SGD([p], 1e-4)
    ref = np.ones(4, np.float32)
    for _ in range(20):
        p.grad = _scaled_float16(np.ones(4), opt.loss_scaler.scale)
        opt.loss_scaler.pending = True
        opt.step()
        ref -= np.float32(1e-4) * np.float32(1.0)
    master = opt.master(p).data
    assert master.dtype == np.float32 and p.data.dtype == np.float16
    np.testing.assert_allclose(master, ref, rtol=1e-7)
    np.testing.assert_array_equal(p.data, ref.astype(np.float16))
    assert p.data[0] < 1.0


def test_every_parameter_dtype_in_one_optimizer_is_unscaled_and_no_false_overflow():
    """float16, float32 and float64 parameters bound together: all three unscaled; large finite
    float64 gradients are not an overflow."""
    p16, p32, p64 = (
        Parameter(np.ones(2, np.float16)),
        Parameter(np.ones(2, np.float32)),
        Parameter(np.ones(2)),
    )
    opt = SGD([p16, p32, p64], 0.5)
    scale = opt.loss_scaler.scale
    p16.grad = _scaled_float16([0.5, 1.0], scale)
    p32.grad = np.array([0.5, 1.0], np.float32) * np.float32(scale)
    p64.grad = np.array([0.5, 1.0]) * scale
    opt.loss_scaler.pending = True
    opt.step()
    for p in (p16, p32, p64):
        np.testing.assert_array_equal(p.data, np.array([0.75, 0.5], p.dtype))
    assert p64.dtype == np.float64 and p32.dtype == np.float32
    big = Parameter(np.zeros(2))
    assert all_finite([big]) and all_finite([p16])
    big.grad = np.array([1.5e308, 1.5e308])
    assert all_finite([big])
    big.grad = np.array([np.inf, -np.inf])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not all_finite([big])


def test_scale_and_growth_schedule_survive_an_optimizer_state_round_trip():
    def run(resume_at):
        p = Parameter(np.ones(3, np.float16))
        opt = SGD([p], 1e-3)
        opt.loss_scaler = LossScaler(2.0**9, growth_interval=4)
        scales = []
        for step in range(11):
            if step == resume_at:
                state = opt.state_dict()
                fresh_p = Parameter(p.data.copy())
                opt = SGD([fresh_p], 1e-3)
                opt.load_state_dict(state)
                p = fresh_p
            p.grad = _scaled_float16([0.5, 0.25, 1.0], opt.loss_scaler.scale)
            opt.loss_scaler.pending = True
            opt.step()
            scales.append(opt.loss_scaler.scale)
        return scales, opt.master(p).data

    straight, w_straight = run(None)
    resumed, w_resumed = run(6)
    assert straight == resumed
    assert straight[3] == 2.0**10 and straight[7] == 2.0**11
    np.testing.assert_array_equal(w_straight, w_resumed)


@requires_h5py
def test_model_save_keeps_a_custom_growth_interval(tmp_path):
    with default_dtype("float16"):
        model = Sequential([Linear(3, 2)])
    model.compile(SGD(1e-3), "mse")
    x, y = np.ones((8, 3), np.float16), np.zeros((8, 2), np.float16)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    model.optimizer.loss_scaler.growth_interval = 5
    model.save(tmp_path / "m.h5")
    loaded = framework.load_model(tmp_path / "m.h5")
    assert loaded.optimizer.loss_scaler.growth_interval == 5


def test_fit_with_threads_scales_like_one_thread():
    rng = _gen(7)
    x = rng.standard_normal((64, 4)).astype(np.float16)
    y = (x @ rng.standard_normal((4, 2))).astype(np.float16)
    results = []
    for threads in (1, 2):
        with default_dtype("float16"):
            framework.set_seed(1)
            model = Sequential([Linear(4, 8, activation="relu"), Linear(8, 2)])
        model.compile(SGD(1e-2), "mse")
        model.optimizer.bind(model)
        model.optimizer.loss_scaler.scale = 2.0**21  # a few overflowing steps first
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            model.fit(x, y, epochs=3, batch_size=16, verbose=0, shuffle=False, threads=threads)
        sc = model.optimizer.loss_scaler
        results.append((sc.scale, sc.good_steps, sc.skipped, model.optimizer.iterations))
    assert results[0] == results[1]
    assert results[0][2] > 0 and results[0][3] > 0


@pytest.mark.parametrize(
    ("kwargs", "ok"),
    [
        ({"scale": np.float32(1024.0)}, 1024.0),
        ({"scale": np.int64(8)}, 8.0),
        ({"growth_interval": np.int64(5)}, 2.0**15),
    ],
)
def test_loss_scaler_accepts_numpy_numbers(kwargs, ok):
    assert LossScaler(**kwargs).scale == ok


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scale": True}, r"LossScaler: scale.*True"),
        ({"scale": 0.0}, r"LossScaler: scale.*0\.0"),
        ({"scale": float("inf")}, r"LossScaler: scale.*inf"),
        ({"scale": "big"}, r"LossScaler: scale.*'big'"),
        ({"growth_interval": 0}, r"LossScaler: growth_interval.*0"),
        ({"growth_interval": 2.5}, r"LossScaler: growth_interval.*2\.5"),
        ({"growth_interval": True}, r"LossScaler: growth_interval.*True"),
    ],
)
def test_loss_scaler_bad_arguments(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        LossScaler(**kwargs)


@requires_torch
def test_loss_scaler_state_dict_like_grad_scaler_holds_the_growth_interval():
    ours = LossScaler(2.0**7, growth_interval=3)
    ours.stepped()
    state = ours.state_dict()
    theirs = torch.amp.GradScaler("cpu", init_scale=2.0**7, growth_interval=3).state_dict()
    assert state["growth_interval"] == theirs["growth_interval"] == 3
    fresh = LossScaler()
    fresh.load_state_dict(state)
    assert (fresh.scale, fresh.good_steps, fresh.growth_interval) == (2.0**7, 1, 3)
    fresh.load_state_dict({"scale": 4.0, "good_steps": 0})  # an older state without it keeps the current one
    assert fresh.growth_interval == 3
    with pytest.raises(ConfigError, match=r"LossScaler.load_state_dict: growth_interval.*0"):
        fresh.load_state_dict({"scale": 4.0, "good_steps": 0, "growth_interval": 0})
