"""The example plugin's objects pass the framework's conformance kit and do their job."""

from __future__ import annotations

import numpy as np
import pytest
from framework_example import FeatureScale, LecunNormal, Lion, LogCosh, Mish

from framework import ConfigError, activations, initializers, layers, losses, optimizers
from framework.testing import (
    check_activation,
    check_initializer,
    check_layer,
    check_loss,
    check_optimizer,
)


@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 4, 5)])
def test_feature_scale_conforms(shape: tuple[int, ...]) -> None:
    check_layer(FeatureScale(init=1.5), shape)


def test_mish_conforms() -> None:
    check_activation("mish")
    check_layer(layers.get("Mish"), (3, 6))


def test_lecun_normal_conforms() -> None:
    check_initializer(LecunNormal(scale=2.0))


def test_log_cosh_conforms() -> None:
    check_loss("log_cosh")
    rng = np.random.default_rng(0)
    check_loss(LogCosh(), rng.standard_normal((5, 2, 3)) * 10, rng.standard_normal((5, 2, 3)))


def test_lion_conforms() -> None:
    check_optimizer(Lion(learning_rate=0.01, weight_decay=0.1))


def test_names_resolve_through_the_framework() -> None:
    assert layers.FeatureScale is FeatureScale
    assert isinstance(activations.get("mish"), Mish)
    assert isinstance(initializers.get("lecun_normal"), LecunNormal)
    assert isinstance(losses.get("logcosh"), LogCosh)
    assert isinstance(optimizers.get("lion"), Lion)


def test_mish_values() -> None:
    x = np.array([-1000.0, -1.0, 0.0, 1.0, 1000.0])
    expected = x * np.tanh(np.log1p(np.exp(np.clip(x, -50, 50))))
    expected[-1] = 1000.0
    np.testing.assert_allclose(Mish()(x[None])[0], expected, rtol=1e-12, atol=1e-15)


def test_log_cosh_is_quadratic_then_linear() -> None:
    small, large = np.array([[1e-3]]), np.array([[50.0]])
    assert LogCosh()(small, np.zeros((1, 1))) == pytest.approx(0.5e-6, rel=1e-6)
    assert LogCosh()(large, np.zeros((1, 1))) == pytest.approx(50.0 - np.log(2.0), rel=1e-12)


def test_lion_moves_each_entry_by_the_learning_rate() -> None:
    from framework import Parameter

    p = Parameter(np.zeros(3))
    p.grad[...] = [2.0, -0.5, 0.0]
    Lion([p], lr=0.1).step()
    np.testing.assert_allclose(p.data, [-0.1, 0.1, 0.0])


def test_bad_arguments_name_the_argument() -> None:
    with pytest.raises(ConfigError, match="num_features"):
        FeatureScale(num_features=0)
    with pytest.raises(ConfigError, match="betas"):
        Lion(betas=(0.9, 1.5))
    with pytest.raises(ConfigError, match="scale"):
        LecunNormal(scale=-1)
