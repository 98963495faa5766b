"""An older-form hand-written model calls its children by hand: they run in the mode of fit or predict.

The executors hand each call's mode to every layer on its context; children a
``forward(x)`` calls itself run in their own ``training`` flag, which ``fit``
(training) and ``evaluate``/``predict`` (inference) set for the duration.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from support import subprocess_env

import framework
from framework import Model, Sequential
from framework.layers import BatchNorm, Dropout, Linear


class _ByHand(Model):
    """Linear -> BatchNorm -> Dropout -> Linear, each child called by hand (the older form)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.a, self.bn, self.drop, self.b = Linear(4, 8), BatchNorm(8), Dropout(p), Linear(8, 3)

    def forward(self, x):
        return self.b(self.drop(self.bn(self.a(x))))

    def backward(self, grad):
        return self.a.backward(self.bn.backward(self.drop.backward(self.b.backward(grad))))


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((48, 4)), rng.integers(0, 3, 48)


def test_a_second_fit_trains_the_children_called_by_hand(float64):
    """The first fit used to leave them in eval mode: the second trained BatchNorm on running statistics."""
    framework.set_seed(3)
    mine = _ByHand()
    framework.set_seed(3)
    ref = Sequential([Linear(4, 8), BatchNorm(8), Dropout(0.0), Linear(8, 3)])
    x, y = _data()
    for net in (mine, ref):
        net.compile(framework.optimizers.get("sgd", learning_rate=0.1), "cross_entropy")
    for _ in range(2):
        h_mine = mine.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
        h_ref = ref.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
        np.testing.assert_allclose(h_mine.history["loss"], h_ref.history["loss"], rtol=1e-12)
    assert mine.bn.num_batches_tracked == ref.layers[1].num_batches_tracked == 6
    np.testing.assert_allclose(mine.bn.running_mean.data, ref.layers[1].running_mean.data, rtol=1e-12)
    assert not mine.training and not mine.bn.training  # fit hands the model back in inference mode


def test_predict_and_evaluate_run_the_children_in_inference_mode_and_give_their_flags_back(float64):
    net = _ByHand(p=0.5)
    x, y = _data()
    net.compile("sgd", "cross_entropy")
    assert net.drop.training  # a new layer trains, as in PyTorch
    first = net.predict(x, verbose=0)
    np.testing.assert_array_equal(net.predict(x, verbose=0), first)  # no dropout: the same twice
    np.testing.assert_array_equal(net.predict_on_batch(x), first)
    loss = net.evaluate(x, y, verbose=0)["loss"]
    assert loss == pytest.approx(net.test_on_batch(x, y), rel=1e-12)
    assert net.drop.training and net.bn.training and net.bn.num_batches_tracked == 0


def test_validation_inside_fit_runs_in_inference_mode(float64):
    net = _ByHand(p=0.5)
    x, y = _data()
    net.compile(framework.optimizers.get("sgd", learning_rate=0.0), "cross_entropy")
    history = net.fit(x, y, epochs=1, batch_size=16, validation_data=(x, y), verbose=0)
    assert history.history["val_loss"][0] == pytest.approx(net.evaluate(x, y, verbose=0)["loss"], rel=1e-12)


def test_train_on_batch_trains_the_children_and_gives_their_flags_back(float64):
    net = _ByHand()
    x, y = _data()
    net.compile("sgd", "cross_entropy")
    net.eval()
    net.train_on_batch(x[:16], y[:16])
    assert net.bn.num_batches_tracked == 1  # batch statistics: training mode for the step
    assert not net.bn.training and not net.training


_FRESH_PROCESS = """
import numpy as np
import framework
from framework import Model, Sequential, layers
from framework.base.calling import older_form_defined
from framework.layers import Dropout, Linear

layers.names()  # every built-in layer's class defined: all take the call's context
assert not older_form_defined(), "a built-in layer class has an older-form forward(x)"
x = np.random.default_rng(0).standard_normal((64, 4))
net = Sequential([Linear(4, 8), Dropout(0.5), Linear(8, 3)])
a, b = net(x, training=False), net(x, training=False)
assert np.array_equal(a, b), "training=False ran dropout"
assert not np.array_equal(net(x, training=True), a), "training=True skipped dropout"
assert net.layers[1].training


class ByHand(Model):
    def __init__(self):
        super().__init__()
        self.a, self.drop, self.b = Linear(4, 8), Dropout(0.5), Linear(8, 3)

    def forward(self, x):
        return self.b(self.drop(self.a(x)))


assert older_form_defined()
hand = ByHand()
hand.build((None, 4))
a, b = hand(x, training=False), hand(x, training=False)
assert np.array_equal(a, b), "training=False ran the dropout called by hand"
assert hand.drop.training, "the child's own flag was not given back"
print("OK")
"""


def test_a_call_walks_its_layers_for_the_older_form_only_once_one_exists() -> None:
    """``layer(x, training=...)`` sets every flag for the call only when an older-form layer may be in it.

    In a fresh process no such class exists (the built-ins all take the context), so calls skip the walk
    (20-110 us a call); once one is defined, its children called by hand run in the call's mode.
    """
    command = [sys.executable, "-c", _FRESH_PROCESS]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=subprocess_env())
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "OK"
