"""Issue 15's done-means: shared layers, tied weights and thread-safe inference.

Per-call state lives in a per-call context (``framework.base.context``), so one
layer may be called at several places of a graph and from several threads.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from support import requires_torch

import framework
from framework import Input, Model, Sequential
from framework.layers import Dropout, Embedding, Linear, Subtract

try:
    import torch
except ImportError:
    torch = None


def _siamese() -> tuple[Model, Sequential]:
    tower = Sequential([Linear(5, 8, activation="tanh"), Linear(8, 3)], name="tower")
    left, right = Input((5,), name="left"), Input((5,), name="right")
    return Model([left, right], Subtract()([tower(left), tower(right)])), tower


@requires_torch
def test_siamese_gradients_equal_pytorch_module_called_twice(float64) -> None:
    model, tower = _siamese()
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((6, 5)), rng.standard_normal((6, 5))
    g = rng.standard_normal((6, 3))

    net = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()
    with torch.no_grad():
        for ours, theirs in zip(tower.parameters(), net.parameters()):
            theirs.copy_(torch.from_numpy(ours.data))
    ta = torch.tensor(a, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True)
    expected = net(ta) - net(tb)
    expected.backward(torch.from_numpy(g))

    model.zero_grad()
    out = model([a, b])
    da, db = model.backward(g)
    np.testing.assert_allclose(out, expected.detach().numpy(), rtol=1e-10)
    for ours, theirs in zip(tower.parameters(), net.parameters()):
        np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(da, ta.grad.numpy(), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(db, tb.grad.numpy(), rtol=1e-6, atol=1e-12)
    assert len(model.parameters()) == 4  # the tower's weights once


def test_siamese_network_trains() -> None:
    model, _ = _siamese()
    rng = np.random.default_rng(1)
    a = rng.standard_normal((64, 5)).astype(np.float32)
    b = rng.standard_normal((64, 5)).astype(np.float32)
    target = (a - b)[:, :3] * 0.5
    model.compile(optimizer=framework.optimizers.get("adam", lr=0.01), loss="mse")
    history = model.fit([a, b], target, epochs=40, batch_size=16, verbose=0)
    assert history.history["loss"][-1] < 0.2 * history.history["loss"][0]


def _tied_language_model() -> tuple[Model, Embedding, Linear]:
    tokens = Input((4,), name="tokens")
    embed = Embedding(20, 6, name="embed")
    head = Linear(6, 20, bias=False, name="head")
    head.weight = embed.weight  # tie: one Parameter, two layers
    return Model(tokens, head(embed(tokens))), embed, head


def _next_token_loss() -> framework.base.loss.Loss:
    """Cross-entropy over ``(N, L, V)`` logits: the class axis last, as a language model has it."""
    from framework.base.loss import Loss

    class NextToken(Loss):
        def forward(self, y_pred, y_true, sample_weight=None):
            z = y_pred - y_pred.max(axis=-1, keepdims=True)
            p = np.exp(z)
            p /= p.sum(axis=-1, keepdims=True)
            n, length = y_true.shape
            picked = p[np.arange(n)[:, None], np.arange(length)[None, :], y_true]
            self._grad = p.copy()
            self._grad[np.arange(n)[:, None], np.arange(length)[None, :], y_true] -= 1
            self._grad /= n * length
            return float(-np.log(picked).mean())

        def backward(self):
            return self._grad

    return NextToken()


def test_tied_embedding_and_output_weight_train_and_count_once() -> None:
    model, embed, head = _tied_language_model()
    assert head.weight is embed.weight
    assert [name for name, _ in model.named_parameters()] == ["embed.weight"]
    assert model.count_params() == 20 * 6
    text = model.summary(print_fn=lambda line: None)
    assert f"Total params: {20 * 6:,}" in text
    rng = np.random.default_rng(2)
    x = rng.integers(0, 20, size=(32, 4))
    y = np.roll(x, -1, axis=1)
    model.compile(optimizer="adam", loss=_next_token_loss())
    assert len(model.optimizer.params) == 1
    history = model.fit(x, y, epochs=15, batch_size=8, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert head.weight is embed.weight


def test_tied_weight_gradient_is_the_sum_of_both_uses(float64) -> None:
    model, embed, _ = _tied_language_model()
    x = np.array([[1, 2, 3, 1]])
    g = np.random.default_rng(3).standard_normal((1, 4, 20))
    model.zero_grad()
    model(x)
    model.backward(g)
    w = embed.weight.data
    h = w[x]  # (1, 4, 6)
    expected = np.einsum("nlv,nld->vd", g, h)  # the head's use: dL/dW = G^T h
    np.add.at(expected, x.ravel(), (g @ w).reshape(-1, 6))  # the embedding's use: rows scattered
    np.testing.assert_allclose(embed.weight.grad, expected, rtol=1e-10)


def test_tied_weight_is_saved_once_and_tied_again_on_load(tmp_path) -> None:
    pytest.importorskip("h5py")
    import h5py

    model, _, _ = _tied_language_model()
    model.compile(optimizer="adam", loss=_next_token_loss())
    x = np.random.default_rng(4).integers(0, 20, size=(8, 4))
    model.fit(x, np.roll(x, 1, axis=1), epochs=1, verbose=0)
    path = tmp_path / "tied.h5"
    model.save(path)
    with h5py.File(path, "r") as f:
        names: list[str] = []
        f.visit(names.append)
    assert not any(name.endswith("head/weight") or name.endswith("head.weight") for name in names)
    restored = framework.load_model(path, custom_objects={"NextToken": type(model.loss)})
    assert restored.get_layer("head").weight is restored.get_layer("embed").weight
    np.testing.assert_array_equal(restored.predict(x), model.predict(x))
    assert len(restored.optimizer.params) == 1


def test_tied_weights_survive_get_config_and_from_config() -> None:
    # the config is the architecture: a tie is part of it, so from_config must not untie silently
    model, _, _ = _tied_language_model()
    config = model.get_config()
    assert config["tied"] == [["embed.weight", "head.weight"]]
    clone = Model.from_config(config)
    assert clone.get_layer("head").weight is clone.get_layer("embed").weight
    assert [name for name, _ in clone.named_parameters()] == ["embed.weight"]


def test_tied_weights_of_a_sequential_survive_get_config_and_from_config() -> None:
    first, second = Linear(8, 8, name="first"), Linear(8, 8, name="second")
    model = Sequential([first, second])
    model.build((None, 8))
    second.weight = first.weight
    clone = Sequential.from_config(model.get_config())
    assert clone.get_layer("second").weight is clone.get_layer("first").weight
    assert clone.count_params() == model.count_params() == 8 * 8 + 2 * 8
    # and inside a functional model: the nested Sequential's config carries its own ties
    x = Input((8,))
    outer = Model(x, model(x))
    rebuilt = Model.from_config(outer.get_config())
    inner = rebuilt.layers[-1]
    assert inner.get_layer("second").weight is inner.get_layer("first").weight


def test_an_untied_model_config_has_no_tied_key() -> None:
    model = Sequential([Linear(4, 4), Linear(4, 2)])
    model.build((None, 4))
    assert "tied" not in model.get_config()


def _mlp() -> Sequential:
    framework.set_seed(0)
    model = Sequential([Linear(16, 64, activation="relu"), Dropout(0.3), Linear(64, 8)])
    model.compile(optimizer="sgd", loss="mse")
    model.build((None, 16))
    model.train()  # the default mode of a fresh model; predict must not depend on it
    return model


def test_eight_threads_predict_exactly_the_serial_results() -> None:
    model = _mlp()
    rng = np.random.default_rng(5)
    inputs = [rng.standard_normal((7 + i, 16)).astype(np.float32) for i in range(8)]
    expected = [model.predict(x) for x in inputs]
    wrong: list[tuple[int, int]] = []
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for k in range(200):
                if not np.array_equal(model.predict(inputs[i]), expected[i]):
                    wrong.append((i, k))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert wrong == []
    assert model.training is True  # predict never touched the flag


def test_evaluate_in_one_thread_while_predict_runs_in_another() -> None:
    model = _mlp()
    rng = np.random.default_rng(6)
    x = rng.standard_normal((64, 16)).astype(np.float32)
    y = rng.standard_normal((64, 8)).astype(np.float32)
    expected_pred = model.predict(x)
    expected_eval = model.evaluate(x, y)
    results: dict[str, list] = {"predict": [], "evaluate": []}

    def predict() -> None:
        for _ in range(100):
            results["predict"].append(np.array_equal(model.predict(x), expected_pred))

    def evaluate() -> None:
        for _ in range(100):
            results["evaluate"].append(model.evaluate(x, y) == expected_eval)

    threads = [threading.Thread(target=predict), threading.Thread(target=evaluate)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(results["predict"]) and len(results["predict"]) == 100
    assert all(results["evaluate"]) and len(results["evaluate"]) == 100


def test_an_older_form_layer_called_from_two_threads_is_refused_not_wrong() -> None:
    started = threading.Event()
    release = threading.Event()
    armed = threading.Event()  # build's own trial forward must not wait

    class Slow(framework.Layer):  # forward(x): state on the layer
        def forward(self, x):
            self._x = x
            if armed.is_set():
                started.set()
                release.wait(5)
            return x

        def backward(self, grad_out):
            return grad_out

    model = Sequential([Slow(), Linear(3, 2)])
    model.build((None, 3))
    x = np.ones((2, 3), dtype=np.float32)
    armed.set()
    t = threading.Thread(target=model.predict, args=(x,))
    t.start()
    assert started.wait(5)
    try:
        with pytest.raises(framework.ConfigError, match="cannot be called from two threads at once"):
            model.predict(x)
    finally:
        release.set()
        t.join()
