"""Data-pipeline hunt: fit / evaluate / predict on data that is not in-memory arrays.

Generators, one-shot iterators, lists of batches, re-iterable objects, h5py
datasets and ``framework.datasets.batches`` against two references: a NumPy
replay of SGD on MSE in the Keras convention (a batch's loss is
``sum(w * l) / B``, an epoch's loss the batch losses weighted by batch size),
and the same training on the equivalent in-memory arrays with
``shuffle=False``. Then Keras's documented semantics for batch iterables
(``steps_per_epoch`` read on across epochs, a generator running out,
``validation_steps``, ``steps``, ``shuffle`` ignored, ``y`` /
``sample_weight`` refused beside an iterable) and bad batches (each a
``DataError`` naming the batch).
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
from support import requires_h5py

import framework
from framework import Input, Model, Sequential
from framework.datasets import batches as dataset_batches
from framework.errors import ConfigError, DataError
from framework.layers import Concatenate, Linear
from framework.optimizers import SGD
from framework.training.callbacks import Callback

N, D, K, BS, LR = 11, 3, 2, 4, 0.1  # 11 samples in batches of 4: a last batch of 3
TOL = {"float64": {"rtol": 1e-12, "atol": 1e-14}, "float32": {"rtol": 2e-5, "atol": 1e-6}}


@pytest.fixture(params=["float64", "float32"])
def dtype(request):
    old = framework.get_default_dtype()
    framework.set_default_dtype(request.param)
    yield request.param
    framework.set_default_dtype(old)


@pytest.fixture
def f64():
    old = framework.get_default_dtype()
    framework.set_default_dtype("float64")
    yield "float64"
    framework.set_default_dtype(old)


def data(n: int = N, d: int = D, k: int = K, seed: int = 0):
    gen = np.random.default_rng(seed)
    return gen.standard_normal((n, d)), gen.standard_normal((n, k)), gen.uniform(0.2, 2.0, n)


def linear(lr: float = LR, d: int = D, k: int = K, metrics=None) -> Sequential:
    framework.set_seed(0)
    model = Sequential([Linear(d, k)])
    model.compile(SGD(learning_rate=lr), "mse", metrics=metrics or [])
    return model


def params(model) -> list[np.ndarray]:
    return [p.data.copy() for p in model.parameters()]


def slices(n: int = N, bs: int = BS) -> list[slice]:
    return [slice(s, min(n, s + bs)) for s in range(0, n, bs)]


def replay(model, parts, lr: float = LR, epochs=None):
    """SGD on MSE over ``parts`` (``(x, y, w)`` batches; ``epochs``: how many batches each).

    Returns the final ``(W, b)`` and each epoch's loss (batch losses weighted by size).
    """
    w, b = (p.astype(np.float64) for p in params(model))
    losses, sizes = [], []
    for part in parts:
        xb, yb, wb = (*part, None)[:3]
        xb, yb = np.asarray(xb, np.float64), np.asarray(yb, np.float64)
        wb = np.ones(len(xb)) if wb is None else np.asarray(wb, np.float64)
        r = xb @ w.T + b - yb
        per = np.mean(r.reshape(len(xb), -1) ** 2, axis=1)
        losses.append(float(np.sum(wb * per) / len(xb)))
        sizes.append(len(xb))
        g = 2.0 * wb.reshape((-1,) + (1,) * (r.ndim - 1)) * r / r.size
        w = w - lr * g.reshape(-1, r.shape[-1]).T @ xb.reshape(-1, xb.shape[-1])
        b = b - lr * g.reshape(-1, r.shape[-1]).sum(axis=0)
    epochs = epochs or [len(parts)]
    out, start = [], 0
    for count in epochs:
        ls, ss = np.array(losses[start : start + count]), np.array(sizes[start : start + count])
        out.append(float(np.sum(ls * ss) / np.sum(ss)))
        start += count
    return [w, b], out


def batch_list(x, y, w=None, bs: int = BS):
    return [(x[s], y[s]) if w is None else (x[s], y[s], w[s]) for s in slices(len(x), bs)]


class Reiterable:
    """A re-iterable of batches with a length (each ``iter`` starts a new pass)."""

    def __init__(self, make):
        self.make = make
        self.passes = 0

    def __iter__(self):
        self.passes += 1
        return iter(self.make())

    def __len__(self):
        return len(list(self.make()))


def endless(parts):
    yield from itertools.cycle(parts)


class Recorder(Callback):
    def __init__(self):
        super().__init__()
        self.begun: list[tuple[int, int]] = []
        self.epoch = -1

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, step, logs=None):
        self.begun.append((self.epoch, step))


# ------------------------------------------------------------ every form against the closed form

FORMS = ["arrays", "list", "generator_steps", "reiterable", "dataset_batches", "iterator_one_epoch"]


def _fit_form(form, model, x, y, w, epochs, **kw):
    parts = batch_list(x, y, w)
    if form == "arrays":
        return model.fit(x, y, sample_weight=w, batch_size=BS, shuffle=False, epochs=epochs, verbose=0, **kw)
    if form == "list":
        return model.fit(parts, epochs=epochs, verbose=0, **kw)
    if form == "generator_steps":
        return model.fit(endless(parts), steps_per_epoch=len(parts), epochs=epochs, verbose=0, **kw)
    if form == "reiterable":
        return model.fit(Reiterable(lambda: parts), epochs=epochs, verbose=0, **kw)
    if form == "dataset_batches":  # a new pass of framework.datasets.batches each epoch
        if w is None:
            source = Reiterable(lambda: dataset_batches(x, y, batch_size=BS))
        else:
            source = Reiterable(
                lambda: (
                    (xb, yb, wb)
                    for (xb, yb), wb in zip(dataset_batches(x, y, BS), dataset_batches(w, None, BS))
                )
            )
        return model.fit(source, epochs=epochs, verbose=0, **kw)
    assert form == "iterator_one_epoch"
    return model.fit(iter(parts), epochs=1, verbose=0, **kw)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("form", FORMS)
def test_fit_on_every_form_matches_the_closed_form_and_the_arrays(form, weighted, dtype):
    x, y, w = data()
    w = w if weighted else None
    epochs = 1 if form == "iterator_one_epoch" else 3
    rec = Recorder()
    model = linear()
    ref_params, ref_losses = replay(model, batch_list(x, y, w) * epochs, epochs=[3] * epochs)
    history = _fit_form(form, model, x, y, w, epochs, callbacks=[rec])
    for got, want in zip(params(model), ref_params):
        np.testing.assert_allclose(got, want, **TOL[dtype])
    np.testing.assert_allclose(history.history["loss"], ref_losses, **TOL[dtype])
    assert rec.begun == [(e, s) for e in range(epochs) for s in range(3)]
    arrays = linear()
    arrays.fit(x, y, sample_weight=w, batch_size=BS, shuffle=False, epochs=epochs, verbose=0)
    for got, want in zip(params(model), params(arrays)):  # bit for bit the arrays' training
        np.testing.assert_array_equal(got, want)
    assert not model.training


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("form", ["list", "generator", "reiterable", "dataset_batches"])
def test_evaluate_and_predict_on_every_form_match_the_closed_form(form, weighted, f64):
    x, y, w = data()
    w = w if weighted else None
    model = linear()
    wt, b = params(model)
    pred = x @ wt.T + b
    per = np.mean((pred - y) ** 2, axis=1)
    expected = float(np.sum((np.ones(N) if w is None else w) * per) / N)
    parts = batch_list(x, y, w)
    make = {
        "list": lambda: parts,
        "generator": lambda: (p for p in parts),
        "reiterable": lambda: Reiterable(lambda: parts),
        "dataset_batches": lambda: dataset_batches(x, y, BS) if w is None else (p for p in parts),
    }[form]
    assert model.evaluate(make())["loss"] == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(model.predict(make()), pred, rtol=1e-12)
    np.testing.assert_allclose(model.predict(dataset_batches(x, batch_size=BS)), pred, rtol=1e-12)
    np.testing.assert_allclose(model.predict((xb,) for xb, *_ in parts), pred, rtol=1e-12)


def test_predict_on_a_list_of_x_x_batches_reads_them_as_batches_not_as_one_stacked_array(f64):
    """A list of (x, y) batches with x and y of one shape (an autoencoder's) was stacked into (2, 2, B, D)."""
    x, _, _ = data(n=8)
    model = linear(k=D)
    out = model.predict([(x[:4], x[:4]), (x[4:], x[4:])])
    np.testing.assert_allclose(out, model.predict(x), rtol=1e-12)


def one_input_functional() -> Model:
    framework.set_seed(0)
    a = Input((D,), name="a")
    model = Model(a, Linear(D, K)(a))
    model.compile(SGD(learning_rate=LR), "mse")
    return model


@pytest.mark.parametrize("build", [linear, one_input_functional])
def test_a_one_array_list_for_a_one_input_model_is_that_array_as_in_keras(build, f64):
    """``predict([x])`` on a Sequential returned (1, N, K) (x stacked under a new axis), silently."""
    x, y, w = data()
    model = build()
    np.testing.assert_array_equal(model.predict([x]), model.predict(x))
    assert model.evaluate([x], [y], sample_weight=w) == model.evaluate(x, y, sample_weight=w)
    listed, plain = build(), build()
    h1 = listed.fit([x], [y], batch_size=BS, shuffle=False, epochs=2, verbose=0)
    h2 = plain.fit(x, y, batch_size=BS, shuffle=False, epochs=2, verbose=0)
    assert h1.history == h2.history
    for got, want in zip(params(listed), params(plain)):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(model.predict([[1.0, 2.0, 3.0]]), model.predict(np.array([[1.0, 2.0, 3.0]])))


# ------------------------------------------------------------ several inputs and outputs, dicts


def two_in_two_out(lr: float = LR) -> Model:
    framework.set_seed(0)
    a, b = Input((3,), name="a"), Input((2,), name="b")
    h = Linear(5, 4, activation="tanh")(Concatenate()([a, b]))
    reg = Linear(4, 1, name="reg")(h)
    cls = Linear(4, 3, activation="softmax", name="cls")(h)
    model = Model([a, b], [reg, cls])
    model.compile(SGD(learning_rate=lr), ["mse", "sparse_categorical_crossentropy"], metrics=["accuracy"])
    return model


def _multi_data(n: int = 10):
    gen = np.random.default_rng(3)
    return (
        gen.standard_normal((n, 3)),
        gen.standard_normal((n, 2)),
        gen.standard_normal((n, 1)),
        gen.integers(0, 3, n),
        gen.uniform(0.5, 1.5, n),
    )


@pytest.mark.parametrize("form", ["dict_list", "dict_generator", "list_batches", "dataset_batches_dict"])
def test_two_inputs_two_outputs_from_batches_equal_the_arrays(form, f64):
    xa, xb, yr, yc, w = _multi_data()
    arrays = two_in_two_out()
    weighted = form != "dataset_batches_dict"
    sw = {"reg": w} if weighted else None
    ha = arrays.fit([xa, xb], [yr, yc], batch_size=4, shuffle=False, epochs=2, verbose=0, sample_weight=sw)
    ea = arrays.evaluate([xa, xb], [yr, yc], batch_size=4, sample_weight=sw)
    dict_parts = [
        ({"a": xa[s], "b": xb[s]}, {"reg": yr[s], "cls": yc[s]}, {"reg": w[s]}) for s in slices(10, 4)
    ]
    model = two_in_two_out()
    if form == "dict_list":
        history = model.fit(dict_parts, epochs=2, verbose=0)
    elif form == "dict_generator":
        history = model.fit(endless(dict_parts), steps_per_epoch=3, epochs=2, verbose=0)
    elif form == "list_batches":
        history = model.fit(
            [([a, b], [r, c], [ww, None]) for a, b, r, c, ww in _listed(xa, xb, yr, yc, w)],
            epochs=2,
            verbose=0,
        )
    else:
        source = Reiterable(lambda: dataset_batches({"a": xa, "b": xb}, {"reg": yr, "cls": yc}, batch_size=4))
        history = model.fit(source, epochs=2, verbose=0)
    assert history.history.keys() == ha.history.keys()
    for key in ha.history:
        np.testing.assert_allclose(history.history[key], ha.history[key], rtol=1e-12, err_msg=key)
    for got, want in zip(params(model), params(arrays)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    evaluated = model.evaluate(dict_parts if weighted else [p[:2] for p in dict_parts])
    for key in ea:
        assert evaluated[key] == pytest.approx(ea[key], rel=1e-12), key
    predicted = model.predict({"a": xa[s], "b": xb[s]} for s in slices(10, 3))
    for got, want in zip(predicted, model.predict({"a": xa, "b": xb})):
        np.testing.assert_allclose(got, want, rtol=1e-12)


def _listed(xa, xb, yr, yc, w):
    return [(xa[s], xb[s], yr[s], yc[s], w[s]) for s in slices(10, 4)]


def test_a_two_input_model_fed_one_array_per_batch_is_a_data_error_naming_the_batch(f64):
    xa, xb, yr, yc, _ = _multi_data()
    model = two_in_two_out()
    parts = [([xa[:4], xb[:4]], [yr[:4], yc[:4]]), (xa[4:], [yr[4:], yc[4:]])]
    with pytest.raises(DataError, match=r"batch 1 of the iterable: x: the model has 2 inputs"):
        model.fit(parts, verbose=0)
    with pytest.raises(DataError, match=r"batch 0 of the iterable: x: the dict's keys .*unknown: \['c'\]"):
        model.fit([({"a": xa, "c": xb}, [yr, yc])], verbose=0)


# ------------------------------------------------------------ class weights and labels


def softmax_model(lr: float = 0.5) -> Sequential:
    framework.set_seed(0)
    model = Sequential([Linear(D, 3, activation="softmax")])
    model.compile(SGD(learning_rate=lr), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.mark.parametrize("labels", ["int", "float", "float_column"])
@pytest.mark.parametrize("class_weight", [None, {0: 1.0, 1: 3.0, 2: 0.25}])
def test_class_weight_and_float_labels_from_a_generator_equal_the_int_label_arrays(labels, class_weight, f64):
    x, _, w = data()
    y = np.random.default_rng(5).integers(0, 3, N)
    fed = {"int": y, "float": y.astype(np.float64), "float_column": y.astype(np.float64)[:, None]}[labels]
    arrays = softmax_model()
    ha = arrays.fit(
        x, y, batch_size=BS, shuffle=False, epochs=2, class_weight=class_weight, sample_weight=w, verbose=0
    )
    model = softmax_model()
    parts = batch_list(x, fed, w)
    history = model.fit(endless(parts), steps_per_epoch=3, epochs=2, class_weight=class_weight, verbose=0)
    for key in ha.history:
        np.testing.assert_allclose(history.history[key], ha.history[key], rtol=1e-12, err_msg=key)
    for got, want in zip(params(model), params(arrays)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


# ------------------------------------------------------------ epochs of a generator: steps_per_epoch


def test_a_generator_for_several_epochs_without_steps_is_refused_before_training(f64):
    x, y, _ = data()
    model = linear()
    before = params(model)
    with pytest.raises(DataError, match=r"generator .*read once.*steps_per_epoch"):
        model.fit((p for p in batch_list(x, y)), epochs=2, verbose=0)
    for got, want in zip(params(model), before):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(DataError, match="steps_per_epoch"):  # framework.datasets.batches is one pass too
        model.fit(dataset_batches(x, y, BS), epochs=3, verbose=0)


@pytest.mark.parametrize("available", [5, 6])  # runs out mid-epoch 3 / exactly at epoch 3's start
def test_a_generator_that_runs_out_warns_and_stops_after_the_batches_it_had(available, f64):
    x, y, _ = data(n=24)
    parts = batch_list(x, y)[:available]
    model = linear()
    ref_params, ref_losses = replay(model, parts, epochs=[2, 2, 1] if available == 5 else [2, 2, 2])
    with pytest.warns(UserWarning, match="ran out of data"):
        history = model.fit((p for p in parts), steps_per_epoch=2, epochs=5, verbose=0)
    assert history.epoch == [0, 1, 2]
    np.testing.assert_allclose(history.history["loss"], ref_losses, rtol=1e-12)
    for got, want in zip(params(model), ref_params):
        np.testing.assert_allclose(got, want, rtol=1e-12)
    assert not model.training and model.epoch == 3


def test_a_generator_with_steps_continues_across_epochs_and_fit_calls(f64):
    x, y, _ = data(n=40)
    parts = batch_list(x, y)  # 10 batches
    gen = (p for p in parts)
    model = linear()
    ref_params, ref_losses = replay(model, parts[:9], epochs=[3, 3, 3])
    h1 = model.fit(gen, steps_per_epoch=3, epochs=2, verbose=0)
    h2 = model.fit(gen, steps_per_epoch=3, epochs=1, verbose=0)
    np.testing.assert_allclose(h1.history["loss"] + h2.history["loss"], ref_losses, rtol=1e-12)
    for got, want in zip(params(model), ref_params):
        np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("steps", [2, 5])
def test_a_list_with_steps_per_epoch_reads_on_and_wraps_around_as_keras(steps, f64):
    """Keras reads on from where the last epoch stopped (the framework took the first batches each epoch)."""
    x, y, _ = data(n=12)
    parts = batch_list(x, y)  # 3 batches
    epochs = 3
    order = [parts[i % 3] for i in range(steps * epochs)]
    model = linear()
    ref_params, ref_losses = replay(model, order, epochs=[steps] * epochs)
    rec = Recorder()
    history = model.fit(parts, steps_per_epoch=steps, epochs=epochs, verbose=0, callbacks=[rec])
    assert rec.params["steps"] == steps and len(rec.begun) == steps * epochs
    np.testing.assert_allclose(history.history["loss"], ref_losses, rtol=1e-12)
    for got, want in zip(params(model), ref_params):
        np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_step_counts_are_config_errors(bad, f64):
    x, y, _ = data()
    model = linear()
    parts = batch_list(x, y)
    with pytest.raises(ConfigError, match="steps_per_epoch"):
        model.fit(endless(parts), steps_per_epoch=bad, verbose=0)
    with pytest.raises(ConfigError, match="validation_steps"):
        model.fit(parts, validation_data=endless(parts), validation_steps=bad, verbose=0)
    with pytest.raises(ConfigError, match="steps"):
        model.evaluate(endless(parts), steps=bad)
    with pytest.raises(ConfigError, match="steps"):
        model.predict(endless(parts), steps=bad)


def test_steps_with_arrays_are_refused_not_ignored(f64):
    x, y, _ = data()
    model = linear()
    with pytest.raises(ConfigError, match="steps=2 applies to an iterable"):
        model.evaluate(x, y, steps=2)
    with pytest.raises(ConfigError, match="steps=2 applies to an iterable"):
        model.predict(x, steps=2)
    with pytest.raises(ConfigError, match="validation_steps=1 applies to an iterable"):
        model.fit(x, y, validation_data=(x, y), validation_steps=1, verbose=0)
    with pytest.raises(ConfigError, match="no validation_data"):
        model.fit(x, y, validation_steps=1, verbose=0)


# ------------------------------------------------------------ validation data; evaluate and predict steps


def test_validation_generator_with_validation_steps_reads_on_across_epochs(f64):
    x, y, _ = data(n=16)
    xv, yv, wv = data(n=12, seed=9)
    val_parts = batch_list(xv, yv, wv, bs=3)  # 4 batches; 2 per epoch
    model = linear(lr=0.0)  # fixed weights: each epoch's val_loss is a closed form
    wt, b = params(model)
    per = np.mean((xv @ wt.T + b - yv) ** 2, axis=1) * wv
    history = model.fit(
        batch_list(x, y), validation_data=(p for p in val_parts), validation_steps=2, epochs=2, verbose=0
    )
    np.testing.assert_allclose(history.history["val_loss"], [per[:6].mean(), per[6:].mean()], rtol=1e-12)


def test_a_one_shot_validation_generator_for_several_epochs_is_refused_before_training(f64):
    x, y, _ = data()
    model = linear()
    before = params(model)
    with pytest.raises(DataError, match=r"validation_data is a generator.*validation_steps"):
        model.fit(batch_list(x, y), validation_data=(p for p in batch_list(x, y)), epochs=2, verbose=0)
    for got, want in zip(params(model), before):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("val_form", ["list", "arrays", "reiterable"])
def test_validation_data_of_any_form_beside_iterable_training_equals_evaluate(val_form, f64):
    x, y, _ = data()
    xv, yv, wv = data(n=7, seed=4)
    val = {
        "list": batch_list(xv, yv, wv, bs=3),
        "arrays": (xv, yv, wv),
        "reiterable": Reiterable(lambda: batch_list(xv, yv, wv, bs=3)),
    }[val_form]
    seen = []
    model = linear()
    model.fit(
        batch_list(x, y),
        validation_data=val,
        epochs=2,
        verbose=0,
        callbacks=[_EpochEval(seen, xv, yv, wv)],
    )
    np.testing.assert_allclose(model.history.history["val_loss"], seen, rtol=1e-12)


class _EpochEval(Callback):
    def __init__(self, seen, xv, yv, wv):
        super().__init__()
        self.seen, self.data = seen, (xv, yv, wv)

    def on_epoch_end(self, epoch, logs=None):
        wt, b = (p.data for p in self.model.parameters())
        xv, yv, wv = self.data
        self.seen.append(float(np.sum(wv * np.mean((xv @ wt.T + b - yv) ** 2, axis=1)) / len(xv)))


def test_evaluate_and_predict_with_steps_stop_an_endless_generator_and_read_on(f64):
    x, y, w = data(n=12)
    parts = batch_list(x, y, w)  # 3 batches
    model = linear()
    wt, b = params(model)
    pred = x @ wt.T + b
    per = w * np.mean((pred - y) ** 2, axis=1)
    assert model.evaluate(endless(parts), steps=2)["loss"] == pytest.approx(per[:8].mean(), rel=1e-12)
    np.testing.assert_allclose(model.predict(endless(parts), steps=2), pred[:8], rtol=1e-12)
    gen = (p for p in parts)
    first = model.evaluate(gen, steps=1)["loss"]
    second = model.evaluate(gen, steps=1)["loss"]  # a generator's state carries over, as in Keras
    assert (first, second) == pytest.approx((per[:4].mean(), per[4:8].mean()), rel=1e-12)
    with pytest.warns(UserWarning, match="ran out of data"):
        rest = model.evaluate(gen, steps=5)["loss"]
    assert rest == pytest.approx(per[8:].mean(), rel=1e-12)


# ------------------------------------------------------------ arguments that do not apply to iterables


def test_y_and_sample_weight_beside_a_generator_are_refused_not_ignored(f64):
    x, y, w = data()
    model = linear()
    before = params(model)
    with pytest.raises(DataError, match=r"sample_weight: x is an iterable of batches"):
        model.fit(endless(batch_list(x, y)), steps_per_epoch=3, sample_weight=w, verbose=0)
    with pytest.raises(DataError, match=r"y: x is an iterable of batches"):
        model.fit((p for p in batch_list(x, y)), y, verbose=0)
    with pytest.raises(DataError, match=r"sample_weight: x is an iterable of batches"):
        model.evaluate(Reiterable(lambda: batch_list(x, y)), sample_weight=w)
    for got, want in zip(params(model), before):
        np.testing.assert_array_equal(got, want)


def test_batch_size_with_an_iterable_is_refused_not_silently_ignored(f64):
    x, y, _ = data()
    model = linear()
    with pytest.raises(ConfigError, match=r"fit: batch_size=2 does not apply to an iterable"):
        model.fit(batch_list(x, y), batch_size=2, verbose=0)
    with pytest.raises(ConfigError, match=r"evaluate: batch_size=2"):
        model.evaluate(batch_list(x, y), batch_size=2)
    with pytest.raises(ConfigError, match=r"predict: batch_size=2"):
        model.predict(iter([x[:4], x[4:]]), batch_size=2)


def test_shuffle_is_ignored_for_iterables_with_a_warning(f64):
    x, y, _ = data()
    plain, shuffled = linear(), linear()
    h1 = plain.fit(batch_list(x, y), epochs=2, verbose=0)
    with pytest.warns(UserWarning, match="shuffle=True is ignored"):
        h2 = shuffled.fit(batch_list(x, y), epochs=2, verbose=0, shuffle=True, seed=3)
    assert h1.history == h2.history
    for got, want in zip(params(shuffled), params(plain)):
        np.testing.assert_array_equal(got, want)


# ------------------------------------------------------------ bad batches: a DataError naming the batch

_x, _y, _w = data(n=12)
_GOOD = [(_x[:4], _y[:4], _w[:4]), (_x[4:8], _y[4:8], _w[4:8])]
_NAN = _x[8:].copy()
_NAN[1, 0] = np.nan
_INF_Y = _y[8:].copy()
_INF_Y[2, 1] = np.inf

BAD_BATCHES = {
    "not_a_tuple": (
        _x[8:],
        r"batch 2 of the iterable: expected an \(x, y\) or \(x, y, sample_weight\) tuple, got a ndarray",
    ),
    "no_targets": ((_x[8:],), r"batch 2 .*got a tuple of length 1 \(no targets y\)"),
    "four_parts": ((_x[8:], _y[8:], _w[8:], _w[8:]), r"batch 2 .*got a tuple of length 4"),
    "empty": ((_x[:0], _y[:0]), r"batch 2 of the iterable: the batch is empty \(0 samples\)"),
    "empty_y": ((_x[8:], _y[:0]), r"batch 2 .*x has 4, y has 0"),
    "short_y": ((_x[8:], _y[8:11]), r"batch 2 .*x has 4, y has 3"),
    "short_weights": (
        (_x[8:], _y[8:], _w[8:11]),
        r"batch 2 .*sample_weight: expected one weight per sample, shape \(4,\), got \(3,\)",
    ),
    "ragged": (([[1.0, 2.0, 3.0], [1.0]], _y[8:10]), r"batch 2 .*x: cannot convert a list to an array"),
    "strings": ((_x[8:].astype(str), _y[8:]), r"batch 2 .*x: arrays of dtype <U\d+ \(string\)"),
    "nan_x": ((_NAN, _y[8:]), r"x of batch 2 of the iterable contains nan at index \(1, 0\)"),
    "inf_y": ((_x[8:], _INF_Y), r"y of batch 2 of the iterable contains inf at index \(2, 1\)"),
    "nan_weight": (
        (_x[8:], _y[8:], np.array([1.0, np.nan, 1.0, 1.0])),
        r"sample_weight of batch 2 .*nan at index 1",
    ),
    "x_feature_shape": (
        (_x[8:, :2], _y[8:]),
        r"batch 2 of the iterable: x has feature shape \(2,\), the first batch had \(3,\)",
    ),
    "y_feature_shape": (
        (_x[8:], _y[8:, :1]),
        r"batch 2 of the iterable: y has feature shape \(1,\), the first batch had \(2,\)",
    ),
    "scalar_x": (
        (np.float64(1.0), _y[8:9]),
        r"batch 2 .*x: expected an array with a batch axis, got a 0-d array",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_BATCHES))
@pytest.mark.parametrize("source", ["list", "generator"])
def test_a_bad_later_batch_is_a_data_error_naming_it_and_nothing_of_it_is_applied(case, source, f64):
    bad, message = BAD_BATCHES[case]
    parts = [*_GOOD, bad]
    model = linear()
    ref_params, _ = replay(model, _GOOD)
    with pytest.raises(DataError, match=message):
        model.fit(parts if source == "list" else (p for p in parts), verbose=0)
    for got, want in zip(params(model), ref_params):  # the good batches trained, the bad one did not
        np.testing.assert_allclose(got, want, rtol=1e-12)
    assert not model.training


@pytest.mark.parametrize("case", ["ragged", "empty", "short_y", "x_feature_shape", "not_a_tuple"])
def test_bad_batches_are_refused_without_check_finite_and_in_evaluate(case, f64):
    bad, message = BAD_BATCHES[case]
    model = linear()
    with pytest.raises(DataError, match=message):
        model.fit([*_GOOD, bad], verbose=0, check_finite=False)
    with pytest.raises(DataError, match=message):
        model.evaluate([*_GOOD, bad], check_finite=False)


def test_non_finite_batches_train_with_check_finite_false(f64):
    model = linear()
    history = model.fit([*_GOOD, (_NAN, _y[8:])], verbose=0, check_finite=False)
    assert np.isnan(history.history["loss"][0])


def test_predict_names_the_bad_batch(f64):
    model = linear()
    with pytest.raises(DataError, match=r"batch 1 of the iterable: the batch is empty"):
        model.predict(iter([_x[:4], _x[:0]]))
    with pytest.raises(DataError, match=r"batch 1 of the iterable: x has feature shape \(2,\)"):
        model.predict(iter([_x[:4], _x[4:8, :2]]))
    with pytest.raises(DataError, match="yielded no batches"):
        model.predict(iter([]))


def test_feature_shapes_that_vary_legitimately_still_train(f64):
    """A Linear on (N, T, D) takes any T: sequences bucketed by length are not an error."""
    gen = np.random.default_rng(2)
    parts = [(gen.standard_normal((3, t, D)), gen.standard_normal((3, t, K)), None) for t in (4, 2, 5)]
    model = linear()
    ref_params, ref_losses = replay(model, parts)
    history = model.fit([p[:2] for p in parts], verbose=0)
    np.testing.assert_allclose(history.history["loss"], ref_losses, rtol=1e-12)
    for got, want in zip(params(model), ref_params):
        np.testing.assert_allclose(got, want, rtol=1e-12)


def test_batches_of_mixed_dtypes_train_as_the_float64_arrays(f64):
    x, y, _ = data(n=12)
    xi = np.round(x * 4)  # whole numbers: exact in every dtype below
    parts = [
        (xi[:4], y[:4]),
        (xi[4:8].astype(np.float32), y[4:8].astype(np.float32)),
        (xi[8:].astype(np.int64), y[8:]),
    ]
    y32 = y.copy()
    y32[4:8] = y[4:8].astype(np.float32)
    model, arrays = linear(), linear()
    h1 = model.fit(parts, epochs=2, verbose=0)
    h2 = arrays.fit(xi, y32, batch_size=4, shuffle=False, epochs=2, verbose=0)
    assert h1.history == h2.history
    for got, want in zip(params(model), params(arrays)):
        np.testing.assert_array_equal(got, want)


class FailsOnThree(framework.Layer):
    """Identity that raises a plain RuntimeError on a batch of 3 samples."""

    def forward(self, ctx, x):
        if len(x) == 3:
            raise RuntimeError("three is a crowd")
        return x

    def backward(self, ctx, grad_out):
        return grad_out


def test_an_error_inside_the_model_gets_a_note_naming_the_batch(f64):
    x, y, _ = data()
    framework.set_seed(0)
    model = Sequential([FailsOnThree(), Linear(D, K)])
    model.compile(SGD(learning_rate=LR), "mse")
    for call in (lambda: model.fit(batch_list(x, y), verbose=0), lambda: model.evaluate(batch_list(x, y))):
        with pytest.raises(RuntimeError, match="three is a crowd") as info:
            call()
        assert "(raised on batch 2 of the iterable)" in info.value.__notes__


def test_a_bad_batch_read_ahead_between_epochs_is_named_by_its_own_index(f64):
    x, y, _ = data(n=20)
    parts = [*batch_list(x, y)[:4], (x[:0], y[:0])]  # batch 4 is empty
    model = linear()
    with pytest.raises(DataError, match=r"batch 4 of the iterable: the batch is empty"):
        model.fit((p for p in parts), steps_per_epoch=2, epochs=3, verbose=0)


# ------------------------------------------------------------ a generator that raises


def test_a_generator_that_raises_mid_epoch_propagates_and_leaves_the_model_in_inference_mode(f64):
    x, y, _ = data(n=12)
    parts = batch_list(x, y)

    def failing():
        yield parts[0]
        yield parts[1]
        raise RuntimeError("disk gone")

    model = linear()
    ref_params, _ = replay(model, parts[:2])
    with pytest.raises(RuntimeError, match="disk gone"):
        model.fit(failing(), verbose=0)
    assert not model.training and all(not layer.training for layer in model.layers)
    for got, want in zip(params(model), ref_params):
        np.testing.assert_allclose(got, want, rtol=1e-12)
    history = model.fit(parts, verbose=0)  # and it trains on afterwards
    assert len(history.history["loss"]) == 1
    with pytest.raises(RuntimeError, match="disk gone"):
        model.evaluate(failing())
    with pytest.raises(RuntimeError, match="disk gone"):
        model.predict(p[0] for p in failing())


# ------------------------------------------------------------ h5py datasets


@pytest.fixture
def h5(tmp_path):
    h5py = pytest.importorskip("h5py")
    x, y, w = data(n=14)
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f["x"], f["y"], f["labels"] = x, y, np.arange(14) % 3
        bad = x.copy()
        bad[9, 1] = np.nan
        f["bad"] = bad
    f = h5py.File(tmp_path / "d.h5", "r")
    yield f, x, y, w
    f.close()


@requires_h5py
@pytest.mark.parametrize("weighted", [False, True])
def test_h5py_with_shuffle_equals_the_in_memory_arrays_with_the_same_seed(h5, weighted, f64):
    f, x, y, w = h5
    w = w if weighted else None
    lazy, memory = linear(), linear()
    h1 = lazy.fit(f["x"], f["y"], sample_weight=w, batch_size=4, epochs=3, shuffle=True, seed=11, verbose=0)
    h2 = memory.fit(x, y, sample_weight=w, batch_size=4, epochs=3, shuffle=True, seed=11, verbose=0)
    np.testing.assert_allclose(h1.history["loss"], h2.history["loss"], rtol=1e-12)
    for got, want in zip(params(lazy), params(memory)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    assert lazy.evaluate(f["x"], f["y"], sample_weight=w)["loss"] == pytest.approx(
        memory.evaluate(x, y, sample_weight=w)["loss"], rel=1e-12
    )
    np.testing.assert_allclose(lazy.predict(f["x"], batch_size=5), memory.predict(x), rtol=1e-12)


@requires_h5py
def test_h5py_in_float32_trains_bit_for_bit_as_the_in_memory_arrays(h5):
    f, x, y, _ = h5
    lazy, memory = linear(), linear()  # default float32; targets float64 on disk
    h1 = lazy.fit(f["x"], f["y"], batch_size=4, epochs=3, shuffle=False, verbose=0)
    h2 = memory.fit(x, y, batch_size=4, epochs=3, shuffle=False, verbose=0)
    assert h1.history == h2.history
    for got, want in zip(params(lazy), params(memory)):
        np.testing.assert_array_equal(got, want)
    # shuffled, a dataset's batch is read in sorted order: equal up to float32 rounding
    lazy, memory = linear(), linear()
    h1 = lazy.fit(f["x"], f["y"], batch_size=4, epochs=3, shuffle=True, seed=3, verbose=0)
    h2 = memory.fit(x, y, batch_size=4, epochs=3, shuffle=True, seed=3, verbose=0)
    np.testing.assert_allclose(h1.history["loss"], h2.history["loss"], rtol=1e-6)
    for got, want in zip(params(lazy), params(memory)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@requires_h5py
def test_h5py_validation_split_and_int_labels_equal_the_arrays(h5, f64):
    f, x, _, _ = h5
    labels = np.arange(14) % 3
    lazy, memory = softmax_model(), softmax_model()
    h1 = lazy.fit(f["x"], f["labels"], batch_size=4, epochs=2, validation_split=0.25, seed=1, verbose=0)
    h2 = memory.fit(x, labels, batch_size=4, epochs=2, validation_split=0.25, seed=1, verbose=0)
    for key in h2.history:
        np.testing.assert_allclose(h1.history[key], h2.history[key], rtol=1e-12, err_msg=key)


@requires_h5py
def test_nan_in_a_later_h5py_batch_is_refused_naming_its_samples_before_its_step(h5, f64):
    f, x, y, _ = h5
    model = linear()
    ref_params, _ = replay(model, [(x[:4], y[:4], None), (x[4:8], y[4:8], None)])
    with pytest.raises(
        DataError, match=r"^x contains nan at index \(9, 1\) \(read in the batch of the samples 8\.\.11\)"
    ):
        model.fit(f["bad"], f["y"], batch_size=4, shuffle=False, verbose=0)
    for got, want in zip(params(model), ref_params):
        np.testing.assert_allclose(got, want, rtol=1e-12)
    shuffled = (
        r"^x contains nan at index \(9, 1\) \(read in the batch of the samples \d+\.\.\d+ \(shuffled\)\)"
    )
    with pytest.raises(DataError, match=shuffled):
        model.fit(f["bad"], f["y"], batch_size=4, shuffle=True, seed=0, verbose=0)


@requires_h5py
def test_keras_batch_shuffle_on_h5py_is_accepted_as_a_shuffle(h5, f64):
    f, x, y, _ = h5
    batch_mode, full = linear(), linear()
    h1 = batch_mode.fit(f["x"], f["y"], batch_size=4, epochs=2, shuffle="batch", seed=5, verbose=0)
    h2 = full.fit(x, y, batch_size=4, epochs=2, shuffle=True, seed=5, verbose=0)
    np.testing.assert_allclose(h1.history["loss"], h2.history["loss"], rtol=1e-12)


@pytest.mark.parametrize("bad", ["no", "false", 1.5, "Batch "])
def test_a_shuffle_that_is_not_a_bool_or_batch_is_refused_not_read_as_true(bad, f64):
    """``shuffle="no"`` was truthy: it shuffled."""
    x, y, _ = data()
    with pytest.raises(ConfigError, match=r"fit: shuffle must be True, False or 'batch'"):
        linear().fit(x, y, shuffle=bad, verbose=0)
    with pytest.raises(ConfigError, match=r"batches: shuffle must be True or False"):
        list(dataset_batches(x, y, shuffle=bad))
    with pytest.raises(ConfigError, match=r"batches: drop_last must be True or False"):
        list(dataset_batches(x, y, drop_last=bad))


# ------------------------------------------------------------ threads


@pytest.mark.parametrize("form", ["list", "generator_steps"])
def test_threads_2_on_batch_iterables_equals_one_thread(form, f64):
    x, y, w = data(n=13)
    parts = batch_list(x, y, w, bs=5)
    runs = []
    for threads in (None, 2):
        model = linear(metrics=["mae"])
        source = parts if form == "list" else endless(parts)
        steps = None if form == "list" else 3
        history = model.fit(source, steps_per_epoch=steps, epochs=2, verbose=0, threads=threads)
        runs.append(
            (
                history.history,
                params(model),
                model.evaluate(parts, threads=threads),
                model.predict(iter([p[0] for p in parts]), threads=threads),
            )
        )
    (h1, p1, e1, q1), (h2, p2, e2, q2) = runs
    for key in h1:
        np.testing.assert_allclose(h2[key], h1[key], rtol=1e-12, err_msg=key)
    for got, want in zip(p2, p1):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    assert e2 == pytest.approx(e1, rel=1e-12)
    np.testing.assert_allclose(q2, q1, rtol=1e-12)


# ------------------------------------------------------------ warnings must not leak from good runs


def test_a_clean_run_on_each_form_warns_nothing(f64):
    x, y, w = data()
    parts = batch_list(x, y, w)
    model = linear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.fit(parts, epochs=2, verbose=0)
        model.fit(endless(parts), steps_per_epoch=3, epochs=2, verbose=0, validation_data=parts)
        model.evaluate(iter(parts))
        model.predict(iter(p[0] for p in parts))
