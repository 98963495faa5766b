"""Tests of the built-in initializers: distributions, fans, gains, dtypes, lookup, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from framework import initializers
from framework.base.initializer import compute_fans
from framework.errors import ConfigError, UnknownNameError
from framework.registry.namespace import serialize
from plugins.initializers import (
    Constant,
    KaimingNormal,
    KaimingUniform,
    Normal,
    Orthogonal,
    Uniform,
    XavierNormal,
    XavierUniform,
)

LINEAR = (1000, 1000)
CONV = (256, 128, 3, 3)


def _sample(init, shape, gain=None, seed=0, dtype="float64"):
    return init(shape, dtype=dtype, rng=np.random.default_rng(seed), gain=gain)


def _check_uniform(w: np.ndarray, bound: float) -> None:
    assert np.abs(w).max() <= bound
    assert np.abs(w).max() > 0.999 * bound
    assert abs(w.mean()) < 0.01 * bound
    assert w.std() == pytest.approx(bound / math.sqrt(3.0), rel=0.01)


def _check_normal(w: np.ndarray, std: float) -> None:
    assert abs(w.mean()) < 0.01 * std
    assert w.std() == pytest.approx(std, rel=0.01)


# -- fans ---------------------------------------------------------------------


def test_fans_count_the_receptive_field():
    assert compute_fans(LINEAR[::-1]) == (1000, 1000)
    assert compute_fans((20, 10)) == (10, 20)
    assert compute_fans(CONV) == (128 * 9, 256 * 9)


# -- Xavier / Glorot ------------------------------------------------------------


@pytest.mark.parametrize("shape", [LINEAR, CONV])
def test_xavier_uniform_bound_and_std(shape):
    fan_in, fan_out = compute_fans(shape)
    _check_uniform(_sample(XavierUniform(), shape), math.sqrt(6.0 / (fan_in + fan_out)))


@pytest.mark.parametrize("shape", [LINEAR, CONV])
def test_xavier_normal_std(shape):
    fan_in, fan_out = compute_fans(shape)
    _check_normal(_sample(XavierNormal(), shape), math.sqrt(2.0 / (fan_in + fan_out)))


def test_xavier_gain_override():
    gain = 5.0 / 3.0
    _check_uniform(_sample(XavierUniform(), LINEAR, gain=gain), gain * math.sqrt(6.0 / 2000))
    _check_normal(_sample(XavierNormal(), LINEAR, gain=gain), gain * math.sqrt(2.0 / 2000))


# -- Kaiming / He ------------------------------------------------------------------


@pytest.mark.parametrize("shape", [LINEAR, CONV])
def test_kaiming_uniform_default_is_relu_gain_over_fan_in(shape):
    fan_in, _ = compute_fans(shape)
    _check_uniform(_sample(KaimingUniform(), shape), math.sqrt(2.0) * math.sqrt(3.0 / fan_in))


@pytest.mark.parametrize("shape", [LINEAR, CONV])
def test_kaiming_normal_default_std(shape):
    fan_in, _ = compute_fans(shape)
    _check_normal(_sample(KaimingNormal(), shape), math.sqrt(2.0) / math.sqrt(fan_in))


def test_kaiming_fan_out_mode():
    shape = (64, 512, 3, 3)  # fan_in = 4608, fan_out = 576: the modes differ 8x
    _, fan_out = compute_fans(shape)
    _check_uniform(_sample(KaimingUniform(mode="fan_out"), shape), math.sqrt(2.0 * 3.0 / fan_out))
    _check_normal(_sample(KaimingNormal(mode="fan_out"), shape), math.sqrt(2.0 / fan_out))


@pytest.mark.parametrize("a", [0.01, 0.2, 1.0])
def test_kaiming_leaky_relu_gain(a):
    gain = math.sqrt(2.0 / (1.0 + a * a))
    _check_uniform(_sample(KaimingUniform(a=a), LINEAR), gain * math.sqrt(3.0 / 1000))
    _check_normal(_sample(KaimingNormal(a=a), LINEAR), gain / math.sqrt(1000))


def test_kaiming_nonlinearity_sets_the_default_gain():
    _check_uniform(_sample(KaimingUniform(nonlinearity="tanh"), LINEAR), 5.0 / 3.0 * math.sqrt(3.0 / 1000))
    _check_normal(_sample(KaimingNormal(nonlinearity="linear"), LINEAR), 1.0 / math.sqrt(1000))


def test_kaiming_passed_gain_overrides_default():
    init = KaimingUniform(a=0.5)
    _check_uniform(_sample(init, LINEAR, gain=1.0), math.sqrt(3.0 / 1000))
    _check_normal(_sample(KaimingNormal(), LINEAR, gain=3.0), 3.0 / math.sqrt(1000))


# -- the others ----------------------------------------------------------------------


def test_constants():
    assert np.array_equal(initializers.get("zeros")((3, 4)), np.zeros((3, 4)))
    assert np.array_equal(initializers.get("ones")((5,)), np.ones(5))
    assert np.all(Constant(0.25)((2, 3), gain=7.0) == 0.25)


def test_normal_and_uniform_use_their_arguments_and_ignore_gain():
    w = _sample(Normal(mean=3.0, std=0.5), LINEAR, gain=10.0)
    assert w.mean() == pytest.approx(3.0, abs=0.005)
    assert w.std() == pytest.approx(0.5, rel=0.01)
    u = _sample(Uniform(low=1.0, high=2.0), LINEAR, gain=10.0)
    assert u.min() >= 1.0 and u.max() < 2.0
    assert u.min() < 1.001 and u.max() > 1.999
    assert u.mean() == pytest.approx(1.5, abs=0.005)


def test_default_uniform_range():
    u = _sample(initializers.get("random_uniform"), LINEAR)
    assert np.abs(u).max() <= 0.05 and np.abs(u).max() > 0.0499


@pytest.mark.parametrize("shape", [(30, 50), (50, 50), (16, 8, 3, 3)])
def test_orthogonal_rows_are_orthonormal(shape):
    w = _sample(Orthogonal(), shape).reshape(shape[0], -1)
    assert w.shape[0] <= w.shape[1]
    np.testing.assert_allclose(w @ w.T, np.eye(shape[0]), atol=1e-12)


def test_orthogonal_tall_has_orthonormal_columns():
    w = _sample(Orthogonal(), (80, 20))
    np.testing.assert_allclose(w.T @ w, np.eye(20), atol=1e-12)


def test_orthogonal_gain_scales_and_passed_gain_multiplies():
    w = _sample(Orthogonal(gain=2.0), (20, 30), gain=1.5)
    np.testing.assert_allclose(w @ w.T, 9.0 * np.eye(20), atol=1e-11)


def test_orthogonal_is_not_biased_towards_positive_diagonal_signs():
    # Without the sign correction, Q's diagonal follows LAPACK's convention;
    # with it, each diagonal entry is positive about half the time.
    positive = [np.diag(_sample(Orthogonal(), (8, 8), seed=seed))[0] > 0 for seed in range(200)]
    assert 60 < sum(positive) < 140


def test_orthogonal_rejects_vectors():
    with pytest.raises(ConfigError, match="Orthogonal"):
        Orthogonal()((10,))


# -- dtype and randomness ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["xavier_uniform", "xavier_normal", "he_uniform", "he_normal", "orthogonal"])
def test_dtype_default_float32_and_float64_on_request(name):
    init = initializers.get(name)
    assert init((8, 4)).dtype == np.float32
    assert init((8, 4), dtype="float64").dtype == np.float64


@pytest.mark.parametrize(
    "name", ["xavier_uniform", "xavier_normal", "he_uniform", "he_normal", "orthogonal", "normal"]
)
def test_same_seed_same_values(name):
    init = initializers.get(name)
    a = _sample(init, (16, 8), seed=42)
    b = _sample(init, (16, 8), seed=42)
    c = _sample(init, (16, 8), seed=43)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_global_seed_drives_the_default_generator():
    import framework.runtime.random

    framework.runtime.random.set_seed(7)
    a = initializers.get("he_uniform")((5, 5))
    framework.runtime.random.set_seed(7)
    b = initializers.get("he_uniform")((5, 5))
    assert np.array_equal(a, b)


# -- lookup, config, errors -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("he_uniform", KaimingUniform),
        ("kaiming_uniform", KaimingUniform),
        ("KaimingUniform", KaimingUniform),
        ("he_normal", KaimingNormal),
        ("glorot_uniform", XavierUniform),
        ("xavier_uniform", XavierUniform),
        ("glorot_normal", XavierNormal),
        ("random_normal", Normal),
        ("random_uniform", Uniform),
        ("orthogonal", Orthogonal),
    ],
)
def test_lookup_by_name_and_alias(name, cls):
    assert isinstance(initializers.get(name), cls)


def test_namespace_attribute_access():
    from framework.initializers import KaimingUniform as FromNamespace

    assert FromNamespace is KaimingUniform


@pytest.mark.parametrize(
    "init",
    [
        KaimingUniform(a=0.1, mode="fan_out", nonlinearity="leaky_relu"),
        KaimingNormal(nonlinearity="relu"),
        Normal(mean=1.0, std=0.1),
        Uniform(low=-1.0, high=3.0),
        Constant(2.5),
        Orthogonal(gain=0.5),
        XavierUniform(),
    ],
)
def test_config_round_trip(init):
    rebuilt = initializers.get(serialize("initializers", init))
    assert type(rebuilt) is type(init)
    assert rebuilt.get_config() == init.get_config()
    assert np.array_equal(_sample(rebuilt, (6, 4), seed=3), _sample(init, (6, 4), seed=3))


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: KaimingUniform(mode="fan_avg"), "fan_in, fan_out"),
        (lambda: KaimingNormal(nonlinearity="swishy"), "swishy"),
        (lambda: KaimingUniform(a="big"), "a must be a real number"),
        (lambda: Normal(std=-1.0), "std must be >= 0"),
        (lambda: Uniform(low=1.0, high=1.0), "low must be < high"),
        (lambda: Constant(float("nan")), "value must be finite"),
        (lambda: Orthogonal(gain=-2.0), "gain must be >= 0"),
        (lambda: XavierUniform()((3, 3), gain="x"), "gain must be a real number"),
    ],
)
def test_bad_arguments_raise_config_error(factory, match):
    with pytest.raises(ConfigError, match=match):
        factory()


def test_unknown_name_lists_registered_names():
    with pytest.raises(UnknownNameError, match="XavierUniform") as info:
        initializers.get("lecun_magic")
    assert "lecun_magic" in str(info.value)
    assert "KaimingUniform" in str(info.value)
