"""A hand-written ``Model`` in the older form (``forward(x)``) with a layer built lazily.

Building such a model runs its ``forward`` once on a zero batch (``Model.build``)
from inside its first call, in the same thread. That is not a concurrent call and
must not be refused as one; a second thread calling an older-form layer whose
forward is running still is, and so is a forward that calls itself.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

import framework
from framework import Model, Sequential
from framework.errors import ConfigError
from framework.layers import BatchNorm, Linear, ReLU

TWO_THREADS = "cannot be called from two threads at once"


class _Lazy(Model):
    """The seed's style: layers as attributes, ``forward(x)`` / ``backward(grad)``; ``middle`` is lazy."""

    def __init__(self, middle: str = "relu") -> None:
        super().__init__(name="lazy")
        self.fc = Linear(4, 8)
        self.middle = ReLU() if middle == "relu" else BatchNorm(8)
        self.out = Linear(8, 3)

    def forward(self, x):
        return self.out(self.middle(self.fc(x)))

    def backward(self, grad):
        return self.fc.backward(self.middle.backward(self.out.backward(grad)))


def _data(seed: int = 0, n: int = 32) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 4)), rng.integers(0, 3, n)


def _reference(net: _Lazy) -> Sequential:
    """The same network as a Sequential, with ``net``'s weights."""
    middle = ReLU() if isinstance(net.middle, ReLU) else BatchNorm(8)
    ref = Sequential([Linear(4, 8), middle, Linear(8, 3)])
    ref.build((None, 4))
    for a, b in zip(ref.parameters(), net.parameters()):
        a.data[...] = b.data
    return ref


@pytest.mark.parametrize("middle", ["relu", "batchnorm"])
def test_first_call_builds_the_lazy_layer(float64, middle: str) -> None:
    framework.set_seed(0)
    net = _Lazy(middle)
    net.eval()  # the older form: layers called by hand run in their own mode, not the call's
    assert not net.middle.built
    x, _ = _data()
    out = net(x)
    assert net.built and net.middle.built
    np.testing.assert_allclose(out, _reference(net).predict(x), rtol=1e-12)
    if middle == "batchnorm":  # the zero batch of the build pass left the running statistics alone
        np.testing.assert_array_equal(net.middle.running_mean.data, np.zeros(8))
        np.testing.assert_array_equal(net.middle.running_var.data, np.ones(8))


@pytest.mark.parametrize(
    "middle",
    ["relu", "batchnorm"],
)
def test_first_fit_builds_the_lazy_layer_and_trains_as_a_sequential(float64, middle: str) -> None:
    framework.set_seed(1)
    net = _Lazy(middle)
    x, y = _data(1)
    net.compile(framework.optimizers.get("sgd", learning_rate=0.1), "cross_entropy", metrics=["accuracy"])
    framework.set_seed(1)
    ref = Sequential([Linear(4, 8), ReLU() if middle == "relu" else BatchNorm(8), Linear(8, 3)])
    ref.compile(framework.optimizers.get("sgd", learning_rate=0.1), "cross_entropy", metrics=["accuracy"])
    history = net.fit(x, y, epochs=2, batch_size=8, seed=0, verbose=0).history
    expected = ref.fit(x, y, epochs=2, batch_size=8, seed=0, verbose=0).history
    assert history["loss"] == pytest.approx(expected["loss"], rel=1e-12)
    for a, b in zip(net.state_dict().values(), ref.state_dict().values()):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_predict_first_builds_the_lazy_layer() -> None:
    framework.set_seed(2)
    net = _Lazy()
    x, _ = _data(2)
    assert net.predict(x).shape == (32, 3)


class _Blocking(Model):
    """An older-form model whose forward waits inside its first real call (not the build pass)."""

    def __init__(self) -> None:
        super().__init__(name="blocking")
        self.fc = Linear(4, 8)
        self.act = ReLU()  # built lazily: the first call runs the build pass first
        self.out = Linear(8, 3)
        self.started = threading.Event()
        self.release = threading.Event()
        self.block = False

    def forward(self, x):
        if self.block and len(x) > 1:  # the build pass runs on a batch of one
            self.started.set()
            self.release.wait(5)
        return self.out(self.act(self.fc(x)))

    def backward(self, grad):
        return self.fc.backward(self.act.backward(self.out.backward(grad)))


def test_a_second_thread_is_still_refused_while_the_forward_runs() -> None:
    net = _Blocking()
    net.block = True
    x, _ = _data(3)
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(net.predict(x)))
    thread.start()
    assert net.started.wait(5)
    try:
        with pytest.raises(ConfigError, match=TWO_THREADS) as info:
            net.predict(x)
        assert "blocking" in str(info.value)
    finally:
        net.release.set()
        thread.join()
    assert len(results) == 1 and results[0].shape == (32, 3)  # the first thread was not disturbed


def test_a_second_thread_during_the_build_pass_is_refused_or_waits() -> None:
    """The build runs the forward on a zero batch; a thread arriving then never sees a half-built model."""
    started, release = threading.Event(), threading.Event()

    class SlowBuild(_Lazy):
        def forward(self, x):
            if len(x) == 1 and not np.any(x):  # the build pass's zero batch
                started.set()
                release.wait(5)
            return super().forward(x)

    framework.set_seed(4)
    net = SlowBuild()
    x, _ = _data(4)
    expected = _reference(net).predict(x)
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(net.predict(x)))
    thread.start()
    assert started.wait(5)
    errors: list[BaseException] = []

    def second() -> None:
        try:
            results.append(net.predict(x))
        except ConfigError as exc:
            errors.append(exc)

    other = threading.Thread(target=second)
    other.start()
    release.set()
    thread.join()
    other.join()
    assert len(results) + len(errors) == 2
    for out in results:
        np.testing.assert_allclose(out, expected, rtol=1e-5)
    assert all(TWO_THREADS in str(exc) for exc in errors)


class _Recursive(Model):
    """An older-form model whose forward calls the model again: the inner call would overwrite its state."""

    def __init__(self) -> None:
        super().__init__(name="recursive")
        self.fc = Linear(4, 4)

    def forward(self, x):
        out = self.fc(x)
        if len(x) > 1:  # not on the build pass's batch of one
            out = self(out[:1])
        return out

    def backward(self, grad):
        return self.fc.backward(grad)


def test_a_forward_that_calls_its_own_model_again_is_refused() -> None:
    net = _Recursive()
    net.build((None, 4))
    x, _ = _data(5)
    with pytest.raises(ConfigError, match="from its own forward") as info:
        net(x)
    assert TWO_THREADS not in str(info.value)
    assert net.fc(x[:2]).shape == (2, 4)  # the refusal released the layer
    net2 = _Recursive()
    with pytest.raises(ConfigError, match="from its own forward"):  # also when the call started by building
        net2.predict(x)
