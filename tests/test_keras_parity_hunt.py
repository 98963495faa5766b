"""Whole-program parity with Keras 3 (torch backend): the same small program, the same initial weights.

Each test builds a Keras model, copies its Dense kernels (``(in, out)``) transposed into the
framework's ``Linear.weight`` (``(out, in)``), runs the same ``compile`` / ``fit`` / ``evaluate`` /
``predict`` / callbacks in both, and compares what a user sees: ``History`` values and keys,
``evaluate``'s list and dict, the outputs, the epochs callbacks stop or save at, the learning rates.

Differences the framework documents (PyTorch's optimizer rules and defaults, the unbiased running
variance of BatchNorm, ReduceLROnPlateau's cooldown count, ``accuracy`` on logits, class_weight
together with sample_weight) are not asserted as Keras's here.

Skipped where Keras is not installed (the ``parity`` and ``dev`` extras install it, and torch).
"""

from __future__ import annotations

import os
import warnings

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np
import pytest


class _LazyKeras:
    """``keras``, imported at its first use in a test (2.8 s, torch included), not when the module is
    collected: an xdist worker that runs none of these tests does not pay for it. A test skips where
    Keras is absent or another backend was chosen before this module was imported."""

    def __getattr__(self, name: str):
        if name.startswith("_"):  # pytest's collection probes module objects for these
            raise AttributeError(name)
        module = pytest.importorskip("keras")
        if module.backend.backend() != "torch":
            pytest.skip("these tests run Keras on its torch backend")
        return getattr(module, name)


keras = _LazyKeras()

from framework import Input, Model, Sequential  # noqa: E402
from framework import losses as flosses  # noqa: E402
from framework import metrics as fmetrics  # noqa: E402
from framework import optimizers as fopt  # noqa: E402
from framework.layers import Activation, BatchNorm, Dropout, Embedding, Flatten, Linear  # noqa: E402
from framework.training import callbacks as fcb  # noqa: E402

RNG = np.random.default_rng(0)
X = RNG.standard_normal((50, 4)).astype(np.float32)
Y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)  # classes 0 and 1 of 3 softmax outputs, or a binary target
YB = Y.reshape(-1, 1).astype(np.float32)
YO = np.eye(3, dtype=np.float32)[Y]
W = np.linspace(0.2, 2.0, 50).astype(np.float32)


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def pair(nout=3, act="softmax", hidden=8, seed=0):
    """A Keras ``Dense(hidden, tanh) -> Dense(nout, act)`` and the framework's copy of it."""
    keras.utils.set_random_seed(seed)
    km = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(hidden, activation="tanh"),
            keras.layers.Dense(nout, activation=act),
        ]
    )
    k1, b1, k2, b2 = km.get_weights()
    l1, l2 = Linear(4, hidden, activation="tanh"), Linear(hidden, nout, activation=act)
    l1.weight.data[...] = k1.T
    l1.bias.data[...] = b1
    l2.weight.data[...] = k2.T
    l2.bias.data[...] = b2
    return km, Sequential([l1, l2])


def compiled(loss, metrics=(), lr=0.1, floss=None, fmets=None, **kw):
    km, fm = pair(**kw)
    km.compile(optimizer=keras.optimizers.SGD(lr), loss=loss, metrics=list(metrics))
    fm.compile(
        optimizer=fopt.SGD(learning_rate=lr),
        loss=loss if floss is None else floss,
        metrics=list(metrics) if fmets is None else fmets,
    )
    return km, fm


def both_fit(km, fm, x=X, y=Y, **kw):
    kw = {"epochs": 2, "batch_size": 16, "shuffle": False, "verbose": 0, **kw}
    return km.fit(x, y, **kw).history, fm.fit(x, y, **kw).history


def assert_history(hk, hf, rtol=1e-5, atol=1e-6):
    assert set(hk) == set(hf) - {"lr"}, (sorted(hk), sorted(hf))
    for key in hk:
        np.testing.assert_allclose(hf[key], hk[key], rtol=rtol, atol=atol, err_msg=key)


def weights_close(km, fm, atol=1e-5):
    for a, b in zip(km.get_weights(), fm.get_weights()):
        b = b.T if a.shape != b.shape else b
        np.testing.assert_allclose(b, a, atol=atol)


def scripted(values, key):
    """A callback body that overwrites ``logs[key]`` with the epoch's scripted value."""
    return lambda epoch, logs: logs.__setitem__(key, values[epoch])


# -- fit, evaluate, predict ---------------------------------------------------------------------


def test_history_evaluate_predict_match_with_validation_split_and_uneven_batches():
    km, fm = compiled("sparse_categorical_crossentropy", ["accuracy"])
    hk, hf = both_fit(km, fm, epochs=3, validation_split=0.2)  # 40 training samples: 16, 16, 8
    assert_history(hk, hf)
    assert list(hf) == ["loss", "accuracy", "val_loss", "val_accuracy"]
    np.testing.assert_allclose(
        fm.evaluate(X, Y, verbose=0, return_dict=False), km.evaluate(X, Y, verbose=0), rtol=1e-5
    )
    kd, fd = km.evaluate(X, Y, verbose=0, return_dict=True), fm.evaluate(X, Y, verbose=0)
    assert set(kd) == set(fd)
    np.testing.assert_allclose(fm.predict(X[:7]), km.predict(X[:7], verbose=0), atol=1e-6)


def test_validation_split_holds_out_the_last_fraction_before_shuffling():
    km, fm = compiled("sparse_categorical_crossentropy", ["accuracy"], lr=0.0)  # weights stay put
    hk, hf = both_fit(km, fm, x=X[:21], y=Y[:21], epochs=1, batch_size=4, shuffle=True, validation_split=0.3)
    assert_history(hk, hf)  # 14 and 7 samples, as Keras cuts them
    assert hf["val_loss"][0] == pytest.approx(fm.evaluate(X[14:21], Y[14:21], verbose=0)["loss"])


def test_evaluate_list_order_follows_compile_order():
    mets = ["recall", "accuracy", "auc", "precision"]
    km, fm = compiled("binary_crossentropy", mets, nout=1, act="sigmoid")
    k = km.evaluate(X, YB, verbose=0, batch_size=7)
    f = fm.evaluate(X, YB, verbose=0, batch_size=7, return_dict=False)
    np.testing.assert_allclose(f, k, rtol=1e-5)  # [loss, recall, accuracy, auc, precision]


@pytest.mark.parametrize(
    "loss, y, nout, act, metrics",
    [
        ("binary_crossentropy", YB, 1, "sigmoid", ["accuracy", "precision", "recall", "auc"]),
        ("categorical_crossentropy", YO, 3, "softmax", ["accuracy", "auc"]),
        ("sparse_categorical_crossentropy", Y.reshape(-1, 1), 3, "softmax", ["accuracy"]),
        ("mse", X[:, :2] * 0.5, 2, None, ["mae", "mse"]),
        ("mse", YB, 1, None, ["accuracy"]),  # Keras: binary_accuracy at 0.5 on a regression output
        ("huber", X[:, :2] * 2, 2, None, ["mae"]),
        ("mae", X[:, :2] * 2, 2, None, ["mse"]),
    ],
)
def test_metrics_chosen_from_the_targets_match(loss, y, nout, act, metrics):
    km, fm = compiled(loss, metrics, nout=nout, act=act)
    hk, hf = both_fit(km, fm, y=y, validation_split=0.2)
    assert_history(hk, hf)
    kd, fd = km.evaluate(X, y, verbose=0, return_dict=True), fm.evaluate(X, y, verbose=0)
    assert set(kd) == set(fd)
    for key in kd:
        assert fd[key] == pytest.approx(kd[key], rel=1e-5, abs=1e-6), key


def test_top_k_accuracy_with_k():
    km, fm = pair()
    km.compile(
        optimizer="sgd", loss="categorical_crossentropy", metrics=[keras.metrics.TopKCategoricalAccuracy(k=2)]
    )
    fm.compile(
        optimizer="sgd", loss="categorical_crossentropy", metrics=[fmetrics.get("top_k_accuracy", k=2)]
    )
    k = km.evaluate(X, YO, verbose=0)
    f = fm.evaluate(X, YO, verbose=0, return_dict=False)
    np.testing.assert_allclose(f, k, rtol=1e-5)


def test_binary_auc_on_logits():
    km, fm = pair(nout=1, act=None)
    km.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
        metrics=[keras.metrics.AUC(from_logits=True, name="auc")],
    )
    fm.compile(
        optimizer=fopt.SGD(learning_rate=0.1),
        loss=flosses.get("binary_crossentropy", from_logits=True),
        metrics=["auc"],
    )
    hk, hf = both_fit(km, fm, y=YB)
    assert_history(hk, hf)


def test_sample_weight_loss_train_validation_split_and_evaluate():
    km, fm = compiled("sparse_categorical_crossentropy")
    hk, hf = both_fit(km, fm, sample_weight=W, validation_split=0.3)
    assert_history(hk, hf)  # sum(w l) / N per batch, batches weighted by their size
    k = km.evaluate(X, Y, sample_weight=W, verbose=0, batch_size=16)
    assert fm.evaluate(X, Y, sample_weight=W, batch_size=16, verbose=0)["loss"] == pytest.approx(k, rel=1e-5)


def test_validation_data_with_sample_weight_loss():
    km, fm = compiled("sparse_categorical_crossentropy")
    hk, hf = both_fit(km, fm, validation_data=(X[:13], Y[:13], W[:13]))
    assert_history(hk, hf)


@pytest.mark.parametrize(
    "loss, y, nout, act",
    [
        ("binary_crossentropy", YB, 1, "sigmoid"),
        ("binary_crossentropy", Y.astype(np.float32), 1, "sigmoid"),
        ("categorical_crossentropy", YO, 3, "softmax"),
        ("sparse_categorical_crossentropy", Y, 3, "softmax"),
    ],
)
def test_class_weight_weights_the_training_loss_only(loss, y, nout, act):
    km, fm = compiled(loss, nout=nout, act=act)
    cw = {0: 0.3, 1: 2.0, 2: 1.0}
    hk, hf = both_fit(km, fm, y=y, class_weight=cw, validation_split=0.2)
    assert_history(hk, hf)  # val_loss unweighted in both


@pytest.mark.parametrize(
    "kloss, floss, y, nout, act",
    [
        (
            lambda: keras.losses.CategoricalCrossentropy(label_smoothing=0.2),
            flosses.get("categorical_crossentropy", label_smoothing=0.2),
            YO,
            3,
            "softmax",
        ),
        (
            lambda: keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.2),
            flosses.get("categorical_crossentropy", from_logits=True, label_smoothing=0.2),
            YO,
            3,
            None,
        ),
        (
            lambda: keras.losses.BinaryCrossentropy(label_smoothing=0.2),
            flosses.get("binary_crossentropy", label_smoothing=0.2),
            YB,
            1,
            "sigmoid",
        ),
        (
            lambda: keras.losses.BinaryCrossentropy(from_logits=True, label_smoothing=0.2),
            flosses.get("binary_crossentropy", from_logits=True, label_smoothing=0.2),
            YB,
            1,
            None,
        ),
        (
            lambda: keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            flosses.get("sparse_categorical_crossentropy", from_logits=True),
            Y,
            3,
            None,
        ),
    ],
)
def test_cross_entropies_with_label_smoothing_and_logits(kloss, floss, y, nout, act):
    km, fm = compiled(kloss(), floss=floss, nout=nout, act=act)
    hk, hf = both_fit(km, fm, y=y, epochs=3)
    assert_history(hk, hf)
    weights_close(km, fm)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum_matches_at_a_constant_rate(nesterov):
    km, fm = pair()
    km.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9, nesterov=nesterov),
        loss="sparse_categorical_crossentropy",
    )
    fm.compile(
        optimizer=fopt.SGD(learning_rate=0.1, momentum=0.9, nesterov=nesterov),
        loss="sparse_categorical_crossentropy",
    )
    hk, hf = both_fit(km, fm, epochs=3)
    assert_history(hk, hf)
    weights_close(km, fm)


def test_adam_defaults_close_to_keras():
    # Keras's epsilon is 1e-7 on the bias-corrected-free sqrt(v); PyTorch's (documented) 1e-8 on sqrt(v_hat):
    # at these gradients the two runs agree to about 1e-5.
    km, fm = pair()
    km.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    fm.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    hk, hf = both_fit(km, fm, epochs=3)
    assert_history(hk, hf, rtol=1e-4)
    weights_close(km, fm, atol=1e-4)


# -- Embedding, Dropout, BatchNorm, several outputs ---------------------------------------------


def test_embedding_flatten_dropout_predict_and_evaluate():
    tokens = np.random.default_rng(1).integers(0, 10, (50, 3))
    keras.utils.set_random_seed(0)
    km = keras.Sequential(
        [
            keras.Input((3,), dtype="int32"),
            keras.layers.Embedding(10, 4),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    table, kernel, bias = km.get_weights()
    emb, lin = Embedding(10, 4), Linear(12, 3, activation="softmax")
    fm = Sequential([emb, Flatten(), Dropout(0.3), lin])
    emb.weight.data[...] = table
    lin.weight.data[...] = kernel.T
    lin.bias.data[...] = bias
    km.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    fm.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    np.testing.assert_allclose(fm.predict(tokens), km.predict(tokens, verbose=0), atol=1e-6)
    np.testing.assert_allclose(
        fm.evaluate(tokens, Y, verbose=0, return_dict=False), km.evaluate(tokens, Y, verbose=0), rtol=1e-5
    )


def test_batchnorm_training_losses_and_running_mean():
    # The running variance is PyTorch's unbiased one (documented), so only the training-mode
    # results and the running mean are compared.
    keras.utils.set_random_seed(0)
    km = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8),
            keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-3),
            keras.layers.Activation("tanh"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    ws = km.get_weights()
    l1, bn, l2 = Linear(4, 8), BatchNorm(8, eps=1e-3, momentum=0.1), Linear(8, 3, activation="softmax")
    fm = Sequential([l1, bn, Activation("tanh"), l2])
    l1.weight.data[...], l1.bias.data[...] = ws[0].T, ws[1]
    bn.weight.data[...], bn.bias.data[...] = ws[2], ws[3]
    l2.weight.data[...], l2.bias.data[...] = ws[6].T, ws[7]
    km.compile(
        optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    fm.compile(
        optimizer=fopt.SGD(learning_rate=0.1), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    hk, hf = both_fit(km, fm)
    assert_history(hk, hf)
    np.testing.assert_allclose(np.asarray(bn.running_mean.data), km.get_weights()[4], atol=1e-5)


def test_two_outputs_keys_loss_weights_and_evaluate():
    keras.utils.set_random_seed(0)
    ki = keras.Input((4,), name="inp")
    kh = keras.layers.Dense(8, activation="tanh", name="h")(ki)
    km = keras.Model(
        ki,
        [keras.layers.Dense(3, activation="softmax", name="cls")(kh), keras.layers.Dense(1, name="reg")(kh)],
    )
    ws = km.get_weights()
    lh, lc, lr = (
        Linear(4, 8, activation="tanh", name="h"),
        Linear(8, 3, activation="softmax", name="cls"),
        Linear(8, 1, name="reg"),
    )
    fi = Input((4,), name="inp")
    fh = lh(fi)
    fm = Model(fi, [lc(fh), lr(fh)])
    for layer, (kernel, bias) in zip([lh, lc, lr], [ws[0:2], ws[2:4], ws[4:6]]):
        layer.weight.data[...], layer.bias.data[...] = kernel.T, bias
    yr = X[:, :1] * 0.5
    args = {"loss": ["sparse_categorical_crossentropy", "mse"], "loss_weights": [1.0, 0.5]}
    km.compile(optimizer=keras.optimizers.SGD(0.1), metrics=[["accuracy"], ["mae"]], **args)
    fm.compile(optimizer=fopt.SGD(learning_rate=0.1), metrics=[["accuracy"], ["mae"]], **args)
    hk, hf = both_fit(km, fm, y=[Y, yr], validation_split=0.2)
    assert_history(hk, hf)
    np.testing.assert_allclose(
        fm.evaluate(X, [Y, yr], verbose=0, return_dict=False), km.evaluate(X, [Y, yr], verbose=0), rtol=1e-5
    )


# -- callbacks ----------------------------------------------------------------------------------


def _early_stopping(values, key="val_loss", **kw):
    km, fm = compiled("sparse_categorical_crossentropy", ["accuracy"])
    out = {}
    for name, model, mod in (("keras", km, keras.callbacks), ("framework", fm, fcb)):
        snaps = []
        snap = mod.LambdaCallback(
            on_epoch_end=lambda e, logs, m=model, snaps=snaps: snaps.append(m.get_weights())
        )
        stop = mod.EarlyStopping(monitor=key, **kw)
        script = mod.LambdaCallback(on_epoch_end=scripted(values, key))
        history = model.fit(
            X,
            Y,
            epochs=len(values),
            batch_size=16,
            shuffle=False,
            verbose=0,
            validation_split=0.2,
            callbacks=[script, snap, stop],
        )
        final = model.get_weights()
        same = [i for i, s in enumerate(snaps) if all(np.array_equal(a, b) for a, b in zip(s, final))]
        out[name] = (len(history.history["loss"]), stop.stopped_epoch, same[-1])
    return out


nan = float("nan")


@pytest.mark.parametrize(
    "values, key, kw",
    [
        ([1.0, 0.9, 0.95, 0.97, 0.99, 1.0], "val_loss", {"patience": 2}),
        ([1.0, 0.9, 0.95, 0.97, 0.99, 1.0], "val_loss", {"patience": 2, "restore_best_weights": True}),
        (
            [1.0, 0.95, 0.91, 0.9, 0.89],
            "val_loss",
            {"patience": 1, "min_delta": 0.05, "restore_best_weights": True},
        ),
        (
            [1.0, 0.9, 0.8, 0.85, 0.86, 0.87, 0.88],
            "val_loss",
            {"patience": 1, "start_from_epoch": 3, "restore_best_weights": True},
        ),
        ([nan, nan, 0.9, 1.0, 1.1], "val_loss", {"patience": 1, "restore_best_weights": True}),
        ([1.0, 1.1, 1.2, 1.3], "val_loss", {"patience": 0, "restore_best_weights": True}),
        ([1.0, 1.0, 1.0, 1.0], "val_loss", {"patience": 1, "baseline": 0.5, "restore_best_weights": True}),
        ([0.5, 0.6, 0.55, 0.4, 0.3], "val_accuracy", {"patience": 1, "restore_best_weights": True}),
    ],
)
def test_early_stopping_stops_and_restores_as_keras(values, key, kw):
    out = _early_stopping(values, key, **kw)
    assert out["framework"] == out["keras"]  # (epochs in History, stopped_epoch, epoch of the final weights)


def _learning_rates(callback_of, epochs=7, values=None, key="val_loss"):
    km, fm = compiled("sparse_categorical_crossentropy", ["accuracy"])
    out = {}
    for name, model, mod in (("keras", km, keras.callbacks), ("framework", fm, fcb)):
        rates = []
        record = mod.LambdaCallback(
            on_epoch_begin=lambda e, logs, m=model, rates=rates: rates.append(
                round(float(m.optimizer.learning_rate), 7)
            )
        )
        cbs = [record, callback_of(mod)]
        if values is not None:
            cbs.insert(0, mod.LambdaCallback(on_epoch_end=scripted(values, key)))
        history = model.fit(
            X, Y, epochs=epochs, batch_size=16, shuffle=False, verbose=0, validation_split=0.2, callbacks=cbs
        )
        out[name] = (
            rates,
            [round(float(v), 7) for v in history.history["learning_rate"]],
            history.history["loss"],
        )
    return out


@pytest.mark.parametrize(
    "values, kw",
    [
        ([1.0] * 7, {"factor": 0.5, "patience": 1}),
        ([1.0] * 7, {"factor": 0.5, "patience": 1, "min_lr": 0.03}),
        ([1.0, 0.99995, 0.9999, 0.9, 0.9, 0.9, 0.9], {"factor": 0.5, "patience": 1, "min_delta": 1e-3}),
        ([1.0, 0.9, 0.95, 0.97, 0.99, 1.0, 1.0], {"factor": 0.5, "patience": 2}),
    ],
)
def test_reduce_lr_on_plateau_rates_as_keras(values, kw):
    out = _learning_rates(lambda mod: mod.ReduceLROnPlateau(**kw), values=values)
    assert out["framework"][:2] == out["keras"][:2]
    np.testing.assert_allclose(out["framework"][2], out["keras"][2], rtol=1e-5)


def test_learning_rate_scheduler_rates_and_losses():
    out = _learning_rates(
        lambda mod: mod.LearningRateScheduler(lambda epoch, lr: lr * 0.5 if epoch >= 1 else lr), epochs=4
    )
    assert out["framework"][:2] == out["keras"][:2]
    assert out["framework"][1] == [0.1, 0.05, 0.025, 0.0125]
    np.testing.assert_allclose(out["framework"][2], out["keras"][2], rtol=1e-5)


@pytest.mark.parametrize(
    "values, key, mode",
    [
        ([1.0, 0.9, 0.9, 0.95, 0.8, nan, 0.7], "val_loss", "auto"),
        ([0.5, 0.6, 0.6, 0.4, 0.7], "val_accuracy", "auto"),
        ([0.5, 0.6, 0.6, 0.4, 0.7], "val_accuracy", "min"),
    ],
)
def test_model_checkpoint_save_best_only_epochs(tmp_path, values, key, mode):
    km, fm = compiled("sparse_categorical_crossentropy", ["accuracy"])
    saved = {}
    for name, model, mod, ext in (("k", km, keras.callbacks, ".weights.h5"), ("f", fm, fcb, ".h5")):
        check = mod.ModelCheckpoint(
            str(tmp_path / (name + "-{epoch}" + ext)),
            monitor=key,
            mode=mode,
            save_best_only=True,
            save_weights_only=True,
        )
        script = mod.LambdaCallback(on_epoch_end=scripted(values, key))
        model.fit(X, Y, epochs=len(values), verbose=0, validation_split=0.2, callbacks=[script, check])
        saved[name] = sorted(int(p.name.split("-")[1].split(".")[0]) for p in tmp_path.glob(name + "-*"))
    assert saved["f"] == saved["k"]


def test_batch_logs_are_running_means_in_fit_validation_and_evaluate():
    km, fm = compiled("sparse_categorical_crossentropy", ["accuracy"])
    seen = {}
    for name, model, mod in (("keras", km, keras.callbacks), ("framework", fm, fcb)):
        log = []

        def keep(tag, logs, log=log):
            log.append((tag, {k: round(float(v), 5) for k, v in (logs or {}).items()}))

        cb = mod.LambdaCallback(
            on_train_batch_end=lambda b, logs: keep("train", logs),
            on_test_batch_end=lambda b, logs: keep("test", logs),
            on_test_end=lambda logs: keep("test_end", logs),
            on_epoch_end=lambda e, logs: keep("epoch", logs),
        )
        model.fit(
            X, Y, epochs=1, batch_size=16, shuffle=False, verbose=0, callbacks=[cb], validation_split=0.3
        )
        model.evaluate(X, Y, batch_size=20, verbose=0, callbacks=[cb])
        seen[name] = log
    assert seen["framework"] == seen["keras"]


def test_terminate_on_nan_history():
    km, fm = compiled("mse", lr=1e3, nout=1, act=None)
    out = {}
    for name, model, mod in (("keras", km, keras.callbacks), ("framework", fm, fcb)):
        h = model.fit(
            X,
            X[:, :1] * 1e3,
            epochs=3,
            batch_size=8,
            shuffle=False,
            verbose=0,
            validation_split=0.2,
            callbacks=[mod.TerminateOnNaN()],
        ).history
        out[name] = {k: [bool(np.isfinite(v)) for v in vs] for k, vs in h.items()}
    assert out["framework"] == out["keras"]  # the epoch with the infinite batch is logged, then it stops


# -- differences from Keras that the docs do not state (bugs) -------------------------------------


def test_validation_data_wins_over_validation_split():
    """Keras uses ``validation_data`` and trains on all N samples when both are given
    (``validation_split and validation_data is None``); the framework splits and drops
    ``validation_data`` without a word."""
    km, fm = compiled("sparse_categorical_crossentropy", lr=0.0)
    hk, hf = both_fit(km, fm, epochs=1, validation_split=0.2, validation_data=(X[:5], Y[:5]))
    assert hk["val_loss"][0] == pytest.approx(km.evaluate(X[:5], Y[:5], verbose=0), rel=1e-5)
    assert hf["val_loss"][0] == pytest.approx(hk["val_loss"][0], rel=1e-5)  # framework: X[40:]'s loss
    assert hf["loss"][0] == pytest.approx(hk["loss"][0], rel=1e-5)  # framework: trained on 40, not 50


def test_class_weight_does_not_weight_the_metrics():
    """Keras applies ``class_weight`` to the loss alone (as the framework's own ``fit`` docstring
    says: "each sample's loss is weighted"); the framework also weights ``accuracy``."""
    km, fm = compiled("sparse_categorical_crossentropy", ["accuracy"], lr=0.0)
    hk, hf = both_fit(km, fm, epochs=1, class_weight={0: 1.0, 1: 3.0})
    unweighted = fm.evaluate(X, Y, verbose=0)["accuracy"]
    assert hk["accuracy"][0] == pytest.approx(unweighted)
    assert hf["accuracy"][0] == pytest.approx(hk["accuracy"][0])


def test_sample_weight_does_not_weight_compiled_metrics():
    """Keras 3 weights ``compile(metrics=...)`` by nothing (only ``weighted_metrics=`` take
    ``sample_weight``), in ``fit``, in validation with ``(x, y, w)`` and in ``evaluate``;
    docs/guide/training.md says "As in Keras ... metrics are weighted means"."""
    km, fm = compiled("sparse_categorical_crossentropy", ["accuracy"], lr=0.0)
    hk, hf = both_fit(km, fm, epochs=1, sample_weight=W, validation_data=(X[:13], Y[:13], W[:13]))
    k_eval = km.evaluate(X, Y, sample_weight=W, verbose=0, return_dict=True)["accuracy"]
    f_eval = fm.evaluate(X, Y, sample_weight=W, verbose=0)["accuracy"]
    assert (hf["accuracy"][0], hf["val_accuracy"][0], f_eval) == pytest.approx(
        (hk["accuracy"][0], hk["val_accuracy"][0], k_eval)
    )


def test_compile_without_an_optimizer_documents_its_default_against_keras():
    """Keras's ``compile`` defaults to ``"rmsprop"``; the framework to ``"sgd"``, a documented
    difference (its optimizers follow PyTorch's rules and defaults, so a name alone could not give
    Keras's RMSprop(1e-3, rho=0.9))."""
    km, fm = pair()
    km.compile(loss="sparse_categorical_crossentropy")
    fm.compile(loss="sparse_categorical_crossentropy")
    assert type(km.optimizer).__name__.lower() == "rmsprop"
    assert type(fm.optimizer).__name__.lower() == "sgd"
    doc = " ".join(type(fm).compile.__doc__.split())
    assert 'The default is ``"sgd"`` (learning rate 0.01), not Keras\'s ``"rmsprop"``' in doc
