"""The conformance kit catches deliberately broken layers and passes a correct one."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from support import requires_h5py

from framework import hookimpl
from framework.base.layer import Layer
from framework.base.parameter import Parameter
from framework.errors import ConfigError
from framework.registry.manager import REGISTRY
from framework.testing import (
    ConformanceError,
    check_initializer,
    check_layer,
    check_loss,
    check_optimizer,
)


class ConfScale(Layer):
    """Correct: ``y = factor * w * x`` with a learnable per-feature ``w``."""

    def __init__(self, factor: float = 1.0, *, name: str | None = None) -> None:
        super().__init__(name=name)
        if not factor > 0:
            raise ConfigError(f"ConfScale: factor must be > 0, got {factor!r}")
        self.factor = float(factor)
        self.weight: Parameter | None = None

    def build(self, input_shape: Any) -> None:
        from framework.runtime.dtype import get_default_dtype

        rng = np.random.default_rng(0)
        self.weight = Parameter(rng.uniform(0.5, 1.5, input_shape[-1]).astype(get_default_dtype()))
        super().build(input_shape)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._x = x
        return self.factor * self.weight.data * x

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        self.weight.grad += self.factor * (grad_out * self._x).reshape(-1, grad_out.shape[-1]).sum(axis=0)
        return self.factor * self.weight.data * grad_out

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "factor": self.factor}


class ConfWrongBackward(ConfScale):
    """Broken: the input gradient forgets the factor ``w``."""

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        self.weight.grad += self.factor * (grad_out * self._x).reshape(-1, grad_out.shape[-1]).sum(axis=0)
        return self.factor * grad_out


class ConfLyingShape(ConfScale):
    """Broken: drops the last feature but claims to keep the shape."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._x = x
        return (self.factor * self.weight.data * x)[..., :-1]

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        g = np.concatenate([grad_out, np.zeros_like(grad_out[..., :1])], axis=-1)
        self.weight.grad += self.factor * (g * self._x).reshape(-1, g.shape[-1]).sum(axis=0)
        return self.factor * self.weight.data * g


class ConfLostArgument(ConfScale):
    """Broken: ``factor`` is taken by the constructor but not written by get_config."""

    def get_config(self) -> dict[str, Any]:
        return Layer.get_config(self)


class ConfNested(ConfScale):
    """Correct, with LSTM's output form: ``(y, (h, c))``; ``backward`` takes the gradients alike.

    ``y = factor * w * x`` ``(N, F)``; the "final state" ``h = tanh(x)``,
    ``c = x ** 2``, each ``(1, N, F)`` (a first axis that is not the batch).
    """

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        self._x = x
        return self.factor * self.weight.data * x, (np.tanh(x)[None], (x**2)[None])

    def backward(self, grad_out: Any) -> np.ndarray:
        if not (isinstance(grad_out, tuple) and isinstance(grad_out[1], tuple)):
            raise TypeError(f"expected gradients as (g_y, (g_h, g_c)), got {type(grad_out).__name__}")
        g_y, (g_h, g_c) = grad_out
        g_x = super().backward(g_y)
        return g_x + g_h[0] * (1 - np.tanh(self._x) ** 2) + g_c[0] * 2 * self._x

    def output_shape(self, input_shape: Any) -> Any:
        state = (1, *input_shape)
        return [tuple(input_shape), [state, state]]


class ConfNestedOneShape(ConfNested):
    """Broken like LSTM's default today: ``output_shape`` gives only the first output's shape."""

    def output_shape(self, input_shape: Any) -> Any:
        return tuple(input_shape)


class ConfNestedIgnoresState(ConfNested):
    """Broken: ``backward`` drops the gradient arriving through the ``c`` output."""

    def backward(self, grad_out: Any) -> np.ndarray:
        g_y, (g_h, g_c) = grad_out
        return super().backward((g_y, (g_h, np.zeros_like(g_c))))


class _ConformancePlugin:
    @hookimpl
    def register_layers(self, register: Any) -> None:
        for cls in (
            ConfScale,
            ConfWrongBackward,
            ConfLyingShape,
            ConfLostArgument,
            ConfNested,
            ConfNestedOneShape,
            ConfNestedIgnoresState,
        ):
            register(cls)


@pytest.fixture(scope="module", autouse=True)
def registered() -> None:
    """Register the test layers once, as a plugin would (the checkpoint needs their names)."""
    if not REGISTRY.contains("layers", "ConfScale"):
        REGISTRY.register_plugin(_ConformancePlugin(), name="conformance-tests", distribution="tests")


def _failed(layer: Layer, shape: tuple[int, ...]) -> tuple[list[str], str]:
    with pytest.raises(ConformanceError) as info:
        check_layer(layer, shape)
    report = check_layer(layer, shape, raise_on_failure=False)
    return report.checks("FAIL"), str(info.value)


@requires_h5py
def test_correct_layer_passes_every_check() -> None:
    report = check_layer(ConfScale(2.5), (4, 3))
    assert report.passed
    assert report.checks("FAIL") == []
    assert set(report.checks("ok")) >= {
        "forward",
        "gradients",
        "output_shape",
        "config",
        "registry",
        "checkpoint",
        "train_eval",
        "dtype_float32",
        "dtype_float64",
        "backward",
    }


def test_wrong_backward_is_caught_by_the_gradient_check() -> None:
    failed, message = _failed(ConfWrongBackward(2.0), (4, 3))
    assert failed == ["gradients"]
    assert "ConfWrongBackward" in message
    assert "[FAIL] gradients" in message
    assert "input" in message and "FAIL" in message


def test_lying_output_shape_is_caught() -> None:
    failed, message = _failed(ConfLyingShape(), (4, 3))
    assert failed == ["output_shape"]
    assert "ConfLyingShape" in message
    assert "(None, 3)" in message and "(None, 2)" in message


@requires_h5py
def test_config_that_loses_an_argument_is_caught() -> None:
    failed, message = _failed(ConfLostArgument(3.0), (4, 3))
    assert failed == ["config", "checkpoint"]
    assert "[FAIL] config" in message and "ConfLostArgument" in message
    assert "get_config" in message


def test_report_lists_every_failure_at_once() -> None:
    class TwoFaults(ConfWrongBackward):
        def output_shape(self, input_shape: Any) -> Any:
            return (*input_shape[:-1], input_shape[-1] + 1)

    report = check_layer(TwoFaults(), (4, 3), raise_on_failure=False)
    assert {"gradients", "output_shape", "registry"} <= set(report.checks("FAIL"))
    text = str(report)
    assert text.startswith("TwoFaults layer")
    assert text.count("[FAIL]") == len(report.checks("FAIL"))
    assert "not registered" in text


def test_unregistered_layer_fails_the_registry_check_only() -> None:
    class Unlisted(ConfScale):
        pass

    report = check_layer(Unlisted(), (4, 3), raise_on_failure=False, skip=("checkpoint",))
    assert report.checks("FAIL") == ["registry"]
    assert report.checks("skip") == ["checkpoint"]


def test_dtype_leak_is_caught() -> None:
    class Upcasts(ConfScale):
        def forward(self, x: np.ndarray) -> np.ndarray:
            return super().forward(x).astype(np.float64)

        def backward(self, grad_out: np.ndarray) -> np.ndarray:
            return super().backward(grad_out).astype(np.float64)

    report = check_layer(Upcasts(), (4, 3), raise_on_failure=False)
    assert "dtype_float32" in report.checks("FAIL")
    assert "dtype_float64" in report.checks("ok")
    assert "output is float64" in str(report)


def test_zero_grad_that_does_nothing_is_caught() -> None:
    class StickyGrad(ConfScale):
        def zero_grad(self) -> None:
            pass

    report = check_layer(StickyGrad(), (4, 3), raise_on_failure=False)
    assert "backward" in report.checks("FAIL")
    assert "zero_grad() left non-zero gradients" in str(report)


def test_eval_nondeterminism_is_caught() -> None:
    class Noisy(ConfScale):
        def forward(self, x: np.ndarray) -> np.ndarray:
            return super().forward(x) + np.random.default_rng().standard_normal(x.shape).astype(x.dtype)

    report = check_layer(Noisy(), (4, 3), raise_on_failure=False)
    assert "train_eval" in report.checks("FAIL")


def test_broken_loss_gradient_is_caught() -> None:
    from framework.base.loss import Loss

    class HalfMSE(Loss):
        def forward(self, y_pred: Any, y_true: Any, sample_weight: Any = None) -> float:
            self._d = y_pred - y_true
            return float(np.mean(self._d**2))

        def backward(self) -> np.ndarray:
            return self._d / self._d.size  # missing the factor 2

    report = check_loss(HalfMSE(), raise_on_failure=False)
    assert "gradients" in report.checks("FAIL")
    assert "scalar" in report.checks("ok")


def test_optimizer_with_hidden_state_is_caught() -> None:
    from framework.base.optimizer import Optimizer

    class CountingSGD(Optimizer):
        """Learning rate shrinks with a counter kept outside state_dict."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.calls = 0

        def update(self, param: Parameter, grad: np.ndarray, state: dict, lr: float) -> None:
            self.calls += 1
            param.data -= lr / self.calls * grad

    report = check_optimizer(CountingSGD(0.1), raise_on_failure=False)
    assert "state_dict" in report.checks("FAIL")
    assert "in_place" in report.checks("ok")


def test_initializer_ignoring_the_rng_is_caught() -> None:
    from framework.base.initializer import Initializer

    class GlobalNormal(Initializer):
        def sample(self, shape: tuple[int, ...], rng: Any, gain: Any) -> np.ndarray:
            return np.random.default_rng().standard_normal(shape)

    report = check_initializer(GlobalNormal(), raise_on_failure=False)
    assert "reproducible" in report.checks("FAIL")
    assert "shape" in report.checks("ok")


# -- layers of several outputs (issue 14 item 11: LSTM's default output="both") --


def test_nested_multi_output_layer_passes_every_check() -> None:
    report = check_layer(ConfNested(1.5), (4, 3))
    assert report.checks("FAIL") == []
    assert report.checks("skip") == ["checkpoint"]
    assert {"gradients", "output_shape", "config", "dtype_float32", "backward"} <= set(report.checks("ok"))


def test_multi_output_shapes_may_be_given_flat() -> None:
    class Flat(ConfNested):
        def output_shape(self, input_shape: Any) -> Any:
            state = (1, *input_shape)
            return [tuple(input_shape), state, state]

    report = check_layer(Flat(), (4, 3), raise_on_failure=False)
    assert "output_shape" in report.checks("ok")


def test_multi_output_layer_claiming_one_shape_is_caught() -> None:
    failed, message = _failed(ConfNestedOneShape(), (4, 3))
    assert failed == ["output_shape"]
    assert "ConfNestedOneShape" in message
    assert "one shape per output" in message and "3 arrays" in message


def test_multi_output_batch_only_where_the_batch_is() -> None:
    class NoneEverywhere(ConfNested):
        def output_shape(self, input_shape: Any) -> Any:
            return [tuple(input_shape), [(None, *input_shape), (None, *input_shape)]]

    report = check_layer(NoneEverywhere(), (4, 3), skip=("registry",), raise_on_failure=False)
    assert report.checks("FAIL") == ["output_shape"]
    assert "None only where the size is the batch 4" in str(report)


def test_multi_output_gradient_through_a_later_output_is_checked() -> None:
    failed, message = _failed(ConfNestedIgnoresState(), (4, 3))
    assert failed == ["gradients"]
    assert "ConfNestedIgnoresState" in message and "input" in message


def test_check_gradients_gives_backward_the_output_structure() -> None:
    from framework.runtime.dtype import get_default_dtype, set_default_dtype
    from framework.testing import check_gradients

    old = get_default_dtype()
    set_default_dtype("float64")
    try:
        layer = ConfNested(0.5)
        layer.build((4, 3))
        report = check_gradients(layer, np.random.default_rng(0).standard_normal((4, 3)))
    finally:
        set_default_dtype(old)
    assert report.ok and set(report.errors) == {"input", "weight"}
