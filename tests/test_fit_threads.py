"""``fit(threads=K)``: each batch as K shards on K threads gives what one thread gives."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import framework
from framework import Input, Model, Sequential
from framework.base.context import Context
from framework.base.layer import Layer
from framework.errors import ConfigError
from framework.layers import (
    Add,
    BatchNorm,
    Conv2d,
    Dropout,
    Flatten,
    GCNConv,
    Linear,
    MaxPool2d,
    ReLU,
    Softmax,
)
from framework.runtime import blas
from framework.runtime.threads import GroupAborted, ThreadGroup, current_member, member_of
from framework.training.callbacks import Callback
from framework.training.replicas import Replicas


def _cnn(seed: int = 3) -> Sequential:
    framework.set_seed(seed)
    net = Sequential(
        [Conv2d(1, 4, 3, padding=1), BatchNorm(4), ReLU(), MaxPool2d(2), Flatten(), Linear(4 * 4 * 4, 10)]
    )
    net.compile(
        optimizer=framework.optimizers.get("sgd", lr=0.1, momentum=0.9),
        loss="cross_entropy",
        metrics=["accuracy"],
    )
    return net


def _assert_same_state(a: Model, b: Model, atol: float) -> None:
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_allclose(q.data, p.data, rtol=0, atol=atol, err_msg=name)
    for (name, p), (_, q) in zip(a.named_buffers(), b.named_buffers()):
        np.testing.assert_allclose(q.data, p.data, rtol=0, atol=atol, err_msg=name)


@pytest.mark.parametrize("threads", [2, 3])
def test_cnn_with_batchnorm_trains_as_on_one_thread(float64, threads):
    """50 samples at batch 16: shards of 6/5/5 and a last batch of 2 (1+1 on three threads)."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((50, 1, 8, 8)), rng.integers(0, 10, 50)
    one, many = _cnn(), _cnn()
    x_val, y_val = rng.standard_normal((9, 1, 8, 8)), rng.integers(0, 10, 9)
    h1 = one.fit(x, y, epochs=3, batch_size=16, seed=1, verbose=0, validation_data=(x_val, y_val))
    hk = many.fit(
        x, y, epochs=3, batch_size=16, seed=1, verbose=0, validation_data=(x_val, y_val), threads=threads
    )
    for key, values in h1.history.items():
        np.testing.assert_allclose(hk.history[key], values, rtol=1e-12, err_msg=key)
    _assert_same_state(one, many, atol=1e-12)
    assert many.layers[1].num_batches_tracked == one.layers[1].num_batches_tracked == 12
    np.testing.assert_allclose(many.predict(x_val), one.predict(x_val), rtol=1e-12, atol=1e-14)


def test_two_input_functional_model_with_sample_weights(float64):
    """Two inputs cut alike; weighted loss and metric taken on the whole batch, as on one thread."""

    def build() -> Model:
        framework.set_seed(5)
        a, b = Input((3,)), Input((2,))
        out = Add()([Linear(3, 4, activation="tanh")(a), Linear(2, 4)(b)])
        model = Model([a, b], Linear(4, 1)(out))
        model.compile(framework.optimizers.get("adam", lr=0.01), "mse", metrics=["mae"])
        return model

    rng = np.random.default_rng(1)
    xa, xb = rng.standard_normal((40, 3)), rng.standard_normal((40, 2))
    y, w = rng.standard_normal((40, 1)), rng.uniform(0.1, 2.0, 40)
    one, many = build(), build()
    h1 = one.fit([xa, xb], y, sample_weight=w, epochs=2, batch_size=12, seed=0, verbose=0)
    h2 = many.fit([xa, xb], y, sample_weight=w, epochs=2, batch_size=12, seed=0, verbose=0, threads=2)
    for key, values in h1.history.items():
        np.testing.assert_allclose(h2.history[key], values, rtol=1e-12, err_msg=key)
    _assert_same_state(one, many, atol=1e-12)


def test_dropout_repeats_with_a_seed_and_differs_between_shards():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((64, 8)).astype(np.float32), rng.integers(0, 3, 64)

    def run(seeded_layer: bool) -> list[np.ndarray]:
        framework.set_seed(11)
        net = Sequential([Linear(8, 16), Dropout(0.5, seed=4 if seeded_layer else None), Linear(16, 3)])
        net.compile("sgd", "cross_entropy")
        net.fit(x, y, epochs=2, batch_size=32, seed=0, verbose=0, threads=2)
        return [p.data.copy() for p in net.parameters()]

    for seeded in (False, True):
        first, second = run(seeded), run(seeded)
        for a, b in zip(first, second):
            np.testing.assert_array_equal(a, b)

    framework.set_seed(0)
    net = Sequential([Linear(4, 4), Dropout(0.5, seed=7)])
    net.build((None, 4))
    with Replicas(net, 2) as replicas:
        replicas._make_copies(1)
        mine, theirs = net.layers[1]._rng, replicas.copies[0].layers[1]._rng
        assert mine is not theirs
        assert not np.array_equal(mine.random(16), theirs.random(16))


class _FailsOffTheMainThread(Layer):
    """Raises in every thread but the main one, before the BatchNorm the main thread then waits in."""

    def forward(self, ctx, x):
        if threading.current_thread() is not threading.main_thread():
            raise ValueError("shard failed on purpose")
        return x

    def backward(self, ctx, grad_out):
        return grad_out

    def output_shape(self, input_shape):
        return input_shape


def test_an_error_in_one_shard_is_raised_and_nothing_hangs():
    framework.set_seed(0)
    net = Sequential([Linear(4, 6), _FailsOffTheMainThread(), BatchNorm(6), Linear(6, 2)])
    net.compile("sgd", "cross_entropy")
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((16, 4)).astype(np.float32), rng.integers(0, 2, 16)
    net.fit(x[:8], y[:8], epochs=1, batch_size=8, verbose=0)  # built: the next fit makes replicas
    before = [p.data.copy() for p in net.parameters()]
    outcome: dict[str, BaseException] = {}

    def train() -> None:
        try:
            net.fit(x, y, epochs=1, batch_size=8, verbose=0, threads=2)
        except BaseException as error:  # the test checks which one
            outcome["error"] = error

    worker = threading.Thread(target=train, daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "fit(threads=2) hung after a shard failed"
    assert isinstance(outcome.get("error"), ValueError)
    assert "shard failed on purpose" in str(outcome["error"])
    for old, p in zip(before, net.parameters()):  # the failed step changed no weight
        np.testing.assert_array_equal(p.data, old)


def test_thread_group_sums_in_rank_order_and_aborts():
    group = ThreadGroup(2)
    results: dict[int, np.ndarray] = {}

    def member(rank: int) -> None:
        with member_of(group, rank):
            assert current_member() == (group, rank)
            results[rank] = group.allreduce(rank, np.array([rank + 1.0, 10.0 * rank]))

    threads = [threading.Thread(target=member, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert current_member() is None
    np.testing.assert_array_equal(results[0], [3.0, 10.0])
    np.testing.assert_array_equal(results[1], [3.0, 10.0])
    group.abort()
    with pytest.raises(GroupAborted):
        group.allreduce(0, np.zeros(1))
    group.reset()


@pytest.mark.parametrize("threads", [0, -1, 1.5, "2", True])
def test_bad_thread_counts_are_refused(threads):
    net = _cnn()
    with pytest.raises(ConfigError, match="fit: threads"):
        net.fit(np.zeros((4, 1, 8, 8)), np.zeros(4, dtype=int), verbose=0, threads=threads)
    with pytest.raises(ConfigError, match="Replicas: threads"):
        Replicas(net, 1 if threads == 0 else threads)


def test_a_full_batch_model_is_not_cut():
    net = Sequential([GCNConv(3, 2)])
    net.compile("sgd", "mse")
    with pytest.raises(ConfigError, match="full-batch"):
        net.fit(np.zeros((5, 3)), np.zeros((5, 2)), batch_size=5, shuffle=False, verbose=0, threads=2)


class _BlasThreads(Callback):
    def on_train_batch_end(self, batch, logs=None):
        self.seen = blas.num_threads()


@pytest.mark.skipif(blas.set_num_threads(blas.num_threads()) is None, reason="NumPy's BLAS is not OpenBLAS")
def test_blas_runs_on_one_thread_during_fit_and_gets_its_count_back():
    before = blas.num_threads()
    probe = _BlasThreads()
    net = _cnn()
    rng = np.random.default_rng(0)
    net.fit(rng.standard_normal((8, 1, 8, 8)), rng.integers(0, 10, 8), batch_size=4, verbose=0)
    net.fit(
        rng.standard_normal((8, 1, 8, 8)),
        rng.integers(0, 10, 8),
        batch_size=4,
        verbose=0,
        threads=2,
        callbacks=[probe],
    )
    assert probe.seen == 1
    assert blas.num_threads() == before


def test_replicas_of_an_encoder_layer_give_its_output_input_and_parameter_gradients(float64):
    """A training loop of one's own: Replicas in place of the layer, kwargs passed to every shard."""
    from framework.base.context import Context
    from framework.layers import TransformerEncoderLayer

    framework.set_seed(0)
    layer = TransformerEncoderLayer(8, 2, 16, dropout=0.0, activation="gelu", norm_first=True)
    rng = np.random.default_rng(0)
    x, g = rng.standard_normal((5, 6, 8)), rng.standard_normal((5, 6, 8))
    ctx = Context(True)
    y_ref = layer.forward(ctx, x, is_causal=True)
    dx_ref = layer.backward(ctx, g)
    grads_ref = [p.grad.copy() for p in layer.parameters()]
    layer.zero_grad()
    with Replicas(layer, threads=3) as run:
        ctx = Context(True)
        y = run.forward(ctx, x, is_causal=True)
        dx = run.backward(ctx, g)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-12, atol=1e-13)
    for (name, p), ref in zip(layer.named_parameters(), grads_ref):
        np.testing.assert_allclose(p.grad, ref, rtol=1e-11, atol=1e-13, err_msg=name)


def test_threads_draw_nothing_from_the_global_generator(float64):
    """Shuffling from the global generator (no fit seed) orders the batches as on one thread."""
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((40, 1, 8, 8)), rng.integers(0, 10, 40)
    one, many = _cnn(), _cnn()
    framework.set_seed(21)
    one.fit(x, y, epochs=2, batch_size=8, verbose=0)
    after_one = framework.runtime.random.get_rng().random()
    framework.set_seed(21)
    many.fit(x, y, epochs=2, batch_size=8, verbose=0, threads=2)
    assert framework.runtime.random.get_rng().random() == after_one
    _assert_same_state(one, many, atol=1e-12)


def test_a_softmax_output_fused_with_its_loss_enters_every_shard_below_the_softmax(float64):
    def build() -> Sequential:
        framework.set_seed(8)
        net = Sequential([Linear(6, 12, activation="tanh"), Linear(12, 4), Softmax()])
        net.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
        assert net._fused_output  # the case under test: dL/dlogits from the loss
        return net

    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((30, 6)), rng.integers(0, 4, 30)
    one, many = build(), build()
    h1 = one.fit(x, y, epochs=2, batch_size=10, seed=0, verbose=0)
    h2 = many.fit(x, y, epochs=2, batch_size=10, seed=0, verbose=0, threads=2)
    np.testing.assert_allclose(h2.history["loss"], h1.history["loss"], rtol=1e-12)
    _assert_same_state(one, many, atol=1e-12)


def test_thread_group_keeps_every_call_apart_over_many_calls():
    """One barrier per call: a fast member's next call must not overwrite what a slow one still reads."""
    group, calls, size = ThreadGroup(3), 300, 3
    seen: dict[int, list[float]] = {}

    def member(rank: int) -> None:
        out = []
        for i in range(calls):
            if (i + rank) % 7 == 0:
                time.sleep(0.0002)  # stagger the members
            out.append(float(group.allreduce(rank, np.array([rank * 1000.0 + i]))[0]))
        seen[rank] = out

    threads = [threading.Thread(target=member, args=(k,)) for k in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    expected = [3000.0 + 3 * i for i in range(calls)]  # (0 + 1000 + 2000) + 3 i
    for rank in range(size):
        assert seen[rank] == expected


def test_a_model_that_mixes_the_samples_of_axis_0_is_refused():
    """An LSTM with batch_first=False reads the batch axis as time: its shards are not its batch."""
    from framework.layers import LSTM

    framework.set_seed(0)
    net = Sequential([LSTM(3, 4, output="sequence"), Linear(4, 2)])  # (L, N, F) in, (L, N, 2) out
    net.compile("sgd", "mse")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 5, 3)).astype(np.float32)
    y = rng.standard_normal((8, 5, 2)).astype(np.float32)
    net.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)  # one thread: one batch of 8 time steps
    with pytest.raises(ConfigError, match="mixes the samples of axis 0"):
        net.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0, threads=2)


def test_predict_and_evaluate_with_threads_give_the_one_thread_results(float64):
    rng = np.random.default_rng(9)
    x, y = rng.standard_normal((45, 1, 8, 8)), rng.integers(0, 10, 45)
    net = _cnn()
    net.fit(x, y, epochs=1, batch_size=16, seed=0, verbose=0)
    np.testing.assert_allclose(
        net.predict(x, batch_size=20, threads=2), net.predict(x, batch_size=20), rtol=1e-12, atol=1e-14
    )
    one, many = net.evaluate(x, y, batch_size=20), net.evaluate(x, y, batch_size=20, threads=3)
    assert many.keys() == one.keys()
    for key, value in one.items():
        assert many[key] == pytest.approx(value, rel=1e-12), key
    with pytest.raises(ConfigError, match="predict: threads"):
        net.predict(x, threads=0)
    with pytest.raises(ConfigError, match="evaluate: threads"):
        net.evaluate(x, y, threads="2")


def test_replicas_outside_their_with_block_say_so():
    layer = Linear(3, 2)
    run = Replicas(layer, threads=2)
    with pytest.raises(ConfigError, match="with block"):
        run.forward(framework.base.context.Context(True), np.ones((4, 3), dtype=np.float32))


def test_replicas_are_made_for_the_largest_batch_only():
    """threads=200 on batches of 8 needs 7 replicas, not 199 (each a copy of the gradients)."""
    net = Sequential([Linear(4, 4)])
    net.build((None, 4))
    with Replicas(net, 200) as replicas:
        ctx = Context(True)
        replicas.forward(ctx, np.ones((8, 4), np.float32))
        replicas.backward(ctx, np.ones((8, 4), np.float32))
        assert len(replicas.copies) == 7
        ctx = Context(True)
        replicas.forward(ctx, np.ones((3, 4), np.float32))
        replicas.backward(ctx, np.ones((3, 4), np.float32))
        assert len(replicas.copies) == 7
        assert net.layers[0].weight.grad[0, 0] == 11.0  # 8 + 3 rows of ones, every shard's counted
