"""Callback and learning-rate schedule hunt: Keras's semantics and ``torch.optim.lr_scheduler``.

References:

- ``EarlyStopping`` / ``ModelCheckpoint``: Keras 3's code (``keras/src/callbacks``) transcribed
  in :func:`keras_early_stopping` and :func:`keras_checkpoint_epochs`, run on many random
  monitored sequences (ties, NaN) with every option. An epoch that improves on the best
  so far but not on ``baseline`` still counts toward ``patience``, but never stops
  training itself (checked against Keras 3.15.1 in tests/test_keras_parity_hunt.py).
- ``ReduceLROnPlateau``: torch's scheduler (``threshold_mode="abs"``, torch's
  ``patience = ours - 1``, the documented cooldown count).
- Schedules and ``LearningRateScheduler``: torch's ``StepLR``, ``MultiStepLR``,
  ``ExponentialLR``, ``CosineAnnealingLR``, ``LinearLR``, ``SequentialLR``,
  ``MultiplicativeLR``, stepped per batch or per epoch.
- ``fit``: a one-weight model ``y = w x`` on ``x = 1, y = 0`` with MSE and SGD, so
  ``w_k = (1 - 2 lr)^k`` and a validation target ``t`` gives the V-shaped
  ``val_loss_k = ((1 - 2 lr)^(k+1) - t)^2``: real monitored values in closed form.
"""

from __future__ import annotations

import csv
import math
import types
import warnings

import numpy as np
import pytest
from support import requires_h5py, requires_torch

import framework
from framework import Sequential
from framework.base.schedules import CosineDecay, ExponentialDecay, StepDecay, WarmUp, get, serialize
from framework.errors import ConfigError, FrameworkError
from framework.layers import BatchNorm, Linear
from framework.optimizers import SGD
from framework.training.callbacks import (
    Callback,
    CSVLogger,
    EarlyStopping,
    LambdaCallback,
    LearningRateScheduler,
    ModelCheckpoint,
    ReduceLROnPlateau,
    TerminateOnNaN,
)

try:
    import torch

    LR = torch.optim.lr_scheduler
except ImportError:
    torch = LR = None


def tol(dtype) -> dict[str, float]:
    return {"rtol": 1e-12, "atol": 0} if dtype == np.float64 else {"rtol": 2e-6, "atol": 1e-9}


# ---------------------------------------------------------------- Keras references (transcribed)


def _better(mode: str, min_delta: float):
    """Keras's ``_is_improvement``: ``less(v + d, ref)`` in min mode, ``greater(v - d, ref)`` in max."""
    if mode == "min":
        return lambda v, ref: v + min_delta < ref
    return lambda v, ref: v - min_delta > ref


def keras_early_stopping(values, patience, min_delta, mode, baseline, start_from_epoch, restore):
    """Keras 3's EarlyStopping on ``values``: (epochs run, stopped_epoch, best_epoch, restored epoch)."""
    better = _better(mode, min_delta)
    best = math.inf if mode == "min" else -math.inf
    wait, stopped, best_epoch, best_weights = 0, 0, 0, None
    run = 0
    for epoch, value in enumerate(values):
        run = epoch + 1
        if epoch < start_from_epoch:
            continue
        if restore and best_weights is None:
            best_weights, best_epoch = epoch, epoch
        wait += 1
        if better(value, best):
            best, best_epoch = value, epoch
            if restore:
                best_weights = epoch
            if baseline is None or better(value, baseline):
                wait = 0
            continue  # an improving epoch never stops (Keras 3.15's on_epoch_end returns here)
        if wait >= patience and epoch > 0:
            stopped = epoch
            break
    restored = best_weights if restore and best_weights is not None else run - 1
    return run, stopped, best_epoch, restored


def keras_checkpoint_epochs(values, mode, save_best_only):
    """The epochs at which Keras's ModelCheckpoint writes (``initial_value_threshold=None``)."""
    if not save_best_only:
        return list(range(len(values)))
    better = _better(mode, 0.0)
    best = math.inf if mode == "min" else -math.inf
    saved = []
    for epoch, value in enumerate(values):
        if better(value, best):
            best = value
            saved.append(epoch)
    return saved


class FakeModel:
    """The part of a model a monitor callback uses; its 'weights' are the index of the last epoch."""

    def __init__(self) -> None:
        self.stop_training = False
        self.weights = -1
        self._optimizer: SGD | None = None

    @property
    def optimizer(self) -> SGD:
        """``SGD(learning_rate=1.0)``, made at first use: making one costs more than an EarlyStopping run."""
        if self._optimizer is None:
            self._optimizer = SGD(learning_rate=1.0)
        return self._optimizer

    def state_dict(self):
        return {"w": np.array(self.weights)}

    def load_state_dict(self, state):
        self.weights = int(state["w"])


def drive_early_stopping(stopper: EarlyStopping, values, key="score"):
    model = FakeModel()
    stopper.set_model(model)
    stopper.on_train_begin()
    run = 0
    for epoch, value in enumerate(values):
        run = epoch + 1
        model.weights = epoch
        stopper.on_epoch_end(epoch, {key: value})
        if model.stop_training:
            break
    stopper.on_train_end()
    return run, stopper.stopped_epoch, stopper.best_epoch, model.weights


def random_sequences(count: int, length: int, seed: int, nan: bool = True) -> list[list[float]]:
    gen = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        walk = np.round(1.0 + np.cumsum(gen.normal(0.0, 0.1, length)), 2)  # rounding makes ties
        values = [float(v) for v in walk]
        if nan and gen.random() < 0.3:
            values[int(gen.integers(length))] = math.nan
        out.append(values)
    return out


# ---------------------------------------------------------------- EarlyStopping against Keras


@pytest.mark.parametrize("mode", ["min", "max"])
@pytest.mark.parametrize("baseline", [None, "mid"])
@pytest.mark.parametrize("start_from_epoch", [0, 2])
@pytest.mark.parametrize("restore", [False, True])
def test_early_stopping_matches_keras_on_random_sequences(mode, baseline, start_from_epoch, restore):
    for i, values in enumerate(random_sequences(40, 12, seed=len(mode) + start_from_epoch)):
        base = None if baseline is None else float(np.nanmedian(values))
        for patience in (0, 1, 3):
            for min_delta in (0.0, 0.05):
                want = keras_early_stopping(
                    values, patience, min_delta, mode, base, start_from_epoch, restore
                )
                stopper = EarlyStopping(
                    monitor="score",
                    patience=patience,
                    min_delta=min_delta,
                    mode=mode,
                    baseline=base,
                    start_from_epoch=start_from_epoch,
                    restore_best_weights=restore,
                )
                got = drive_early_stopping(stopper, values)
                assert got == want, (i, values, patience, min_delta, base)


@pytest.mark.parametrize(
    ("values", "kwargs", "epochs_run", "restored"),
    [
        # Keras's own test: no epoch beats the baseline; 5 epochs, the best of them (2) restored
        ([0.9, 0.8, 0.7, 0.71, 0.72, 0.73], {"patience": 5, "baseline": 0.5}, 5, 2),
        # training ends without the stopper triggering: the best epoch is restored all the same
        ([0.9, 0.8, 0.7, 0.71, 0.72, 0.73, 0.74], {"patience": 9, "baseline": 0.5}, 7, 2),
        # never a comparable value: Keras keeps the first monitored epoch's weights
        ([math.nan] * 4, {"patience": 2}, 2, 0),
        ([math.nan, math.nan, 0.3, 0.2, 0.4], {"patience": 9, "start_from_epoch": 1}, 5, 3),
    ],
)
def test_early_stopping_restores_the_best_epoch_even_when_the_baseline_is_never_beaten(
    values, kwargs, epochs_run, restored
):
    stopper = EarlyStopping(monitor="val_loss", restore_best_weights=True, **kwargs)
    run, _, best_epoch, weights = drive_early_stopping(stopper, values, key="val_loss")
    assert (run, weights, best_epoch) == (epochs_run, restored, restored)


def test_early_stopping_keras_patience_table():
    """Keras's test_early_stopping_patience: stopped_epoch == max(patience, 1) + 2."""
    losses = [10.0, 9.0, 8.0, 9.0, 8.9, 8.8, 8.7, 8.6, 8.5]
    for patience in range(4):
        stopper = EarlyStopping(monitor="loss", patience=patience)
        _, stopped, _, _ = drive_early_stopping(stopper, losses, key="loss")
        assert stopped == max(patience, 1) + 2


def test_early_stopping_instance_is_reusable_across_fits():
    stopper = EarlyStopping(monitor="score", patience=1, restore_best_weights=True)
    assert drive_early_stopping(stopper, [0.1, 0.5, 0.6]) == (2, 1, 0, 0)
    # a second run must not compare against the first run's best (0.1) nor keep its weights
    assert drive_early_stopping(stopper, [5.0, 4.0, 4.5, 4.6]) == (3, 2, 1, 1)


@pytest.mark.parametrize(
    ("monitor", "mode"),
    [
        ("loss", "min"),
        ("val_loss", "min"),
        ("val_mae", "min"),
        ("mse", "min"),
        ("accuracy", "max"),
        ("val_acc", "max"),
        ("val_top_k_accuracy", "max"),
        ("auc", "max"),
        ("val_precision", "max"),
        ("recall", "max"),
        ("val_f1_score", "max"),
        # the loss of an output named after a metric is still a loss (multi-output logs)
        ("precision_loss", "min"),
        ("val_recall_head_loss", "min"),
        ("val_accuracy_loss", "min"),
    ],
)
def test_mode_auto_direction(monitor, mode):
    for cls in (EarlyStopping, ModelCheckpoint, ReduceLROnPlateau):  # one test per monitor
        cb = cls("x.h5", monitor=monitor) if cls is ModelCheckpoint else cls(monitor=monitor)
        assert cb.mode == mode, cls.__name__


def test_mode_auto_on_a_real_multi_output_loss(float64):
    """An output named ``precision`` logs ``val_precision_loss``; auto mode must minimise it."""
    x = np.linspace(-1, 1, 8).reshape(-1, 1)
    inp = framework.Input((1,))
    out = Linear(1, 1, name="precision")(inp)
    other = Linear(1, 1, name="other")(inp)
    model = framework.Model(inp, [out, other])
    model.compile(SGD(learning_rate=0.1), "mse")
    stopper = EarlyStopping(monitor="val_precision_loss", patience=0)
    history = model.fit(
        x, [x * 3, x], epochs=4, validation_data=(x, [x * 3, x]), callbacks=[stopper], verbose=0
    )
    assert "val_precision_loss" in history.history
    assert np.all(np.diff(history.history["val_precision_loss"]) < 0)  # it decreases: an improvement
    assert len(history.epoch) == 4


# ---------------------------------------------------------------- closed-form fit


FACTOR = 0.8  # 1 - 2 lr with lr = 0.1
TARGET = 0.5  # val_loss_k = (0.8^(k+1) - 0.5)^2: 0.09, 0.0196, 0.000144, 0.00817, 0.0297, ...


def one_weight(lr=0.1, w0=1.0, optimizer=None) -> Sequential:
    model = Sequential([Linear(1, 1, bias=False)])
    model.compile(optimizer or SGD(learning_rate=lr), "mse")
    model.build((None, 1))
    model.set_weights([np.array([[w0]])])
    return model


def w_of(model) -> float:
    return float(model.get_weights()[0][0, 0])


X1, Y0, YT = np.ones((1, 1)), np.zeros((1, 1)), np.full((1, 1), TARGET)


def v_shape(k: int) -> float:
    return (FACTOR ** (k + 1) - TARGET) ** 2


def test_closed_form_history_and_val_loss(dtype):
    model = one_weight()
    history = model.fit(X1, Y0, epochs=6, validation_data=(X1, YT), verbose=0)
    np.testing.assert_allclose(history.history["loss"], [FACTOR ** (2 * k) for k in range(6)], **tol(dtype))
    np.testing.assert_allclose(history.history["val_loss"], [v_shape(k) for k in range(6)], **tol(dtype))
    assert history.epoch == list(range(6))


@pytest.mark.parametrize("patience", [0, 1, 2, 5])
def test_early_stopping_on_real_val_loss_restores_the_closed_form_best(dtype, patience):
    model = one_weight()
    snapshots = []
    record = LambdaCallback(on_epoch_end=lambda epoch, logs: snapshots.append(model.get_weights()[0].copy()))
    stopper = EarlyStopping(patience=patience, restore_best_weights=True)
    history = model.fit(X1, Y0, epochs=6, validation_data=(X1, YT), callbacks=[record, stopper], verbose=0)
    # best at epoch 2 (w = 0.512); stops at 2 + max(patience, 1) unless the 6 epochs end first
    stopped = 2 + max(patience, 1)
    assert history.epoch == list(range(min(6, stopped + 1)))
    assert stopper.best_epoch == 2 and stopper.stopped_epoch == (stopped if stopped < 6 else 0)
    np.testing.assert_array_equal(model.get_weights()[0], snapshots[2])
    np.testing.assert_allclose(w_of(model), FACTOR**3, **tol(dtype))


def test_early_stopping_restores_buffers_too(dtype):
    """restore_best_weights puts back BatchNorm's running statistics of the best epoch as well."""
    gen = np.random.default_rng(0)
    x = gen.standard_normal((16, 2))
    y = x @ [[1.0], [2.0]]
    framework.set_seed(0)
    model = Sequential([BatchNorm(2), Linear(2, 1)])
    model.compile(SGD(learning_rate=0.05), "mse")
    scores = [3.0, 1.0, 2.0, 2.5, 2.7]
    snapshots = []

    def inject(epoch, logs):
        logs["score"] = scores[epoch]
        snapshots.append({k: np.array(v, copy=True) for k, v in model.state_dict().items()})

    stopper = EarlyStopping(monitor="score", patience=10, restore_best_weights=True)
    model.fit(
        x, y, epochs=5, batch_size=4, callbacks=[LambdaCallback(on_epoch_end=inject), stopper], verbose=0
    )
    state = model.state_dict()
    assert any("running_mean" in k for k in state)
    for key, value in state.items():
        np.testing.assert_array_equal(value, snapshots[1][key], err_msg=key)
        assert value.dtype == dtype


# ---------------------------------------------------------------- ModelCheckpoint


@requires_h5py
@pytest.mark.parametrize("mode", ["min", "max", "auto"])
@pytest.mark.parametrize("save_best_only", [False, True])
def test_model_checkpoint_writes_the_keras_epochs_with_formatted_names(
    tmp_path, mode, save_best_only, float64
):
    for i, values in enumerate(random_sequences(3, 7, seed=11)):
        model = one_weight(lr=0.01)
        inject = LambdaCallback(
            on_epoch_end=lambda epoch, logs, v=values: logs.__setitem__("score", v[epoch])
        )
        pattern = str(tmp_path / f"{mode}{save_best_only}{i}-{{epoch:02d}}-{{score:.3f}}.npz")
        ckpt = ModelCheckpoint(
            pattern, monitor="score", mode=mode, save_best_only=save_best_only, save_weights_only=True
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(X1, Y0, epochs=len(values), callbacks=[inject, ckpt], verbose=0)
        want = keras_checkpoint_epochs(values, "min" if mode == "auto" else mode, save_best_only)
        assert ckpt.saved == [pattern.format(epoch=e + 1, score=values[e]) for e in want], (values, want)
        if not save_best_only and i > 0:
            continue  # every epoch's file, whatever the values: the first sequence's are read back
        for e in want:  # each file holds the weights of the end of its epoch: w = 0.98^(e+1)
            fresh = one_weight()
            fresh.load_weights(pattern.format(epoch=e + 1, score=values[e]))
            np.testing.assert_allclose(w_of(fresh), 0.98 ** (e + 1), rtol=1e-12)


@requires_h5py
def test_model_checkpoint_records_the_epoch_and_step_and_names_val_loss(tmp_path, dtype):
    model = one_weight()
    ckpt = ModelCheckpoint(tmp_path / "m-{epoch:02d}-{val_loss:.6f}.h5")
    model.fit(X1, Y0, epochs=4, validation_data=(X1, YT), callbacks=[ckpt], verbose=0)
    assert [p.split("/")[-1] for p in ckpt.saved] == [f"m-{k + 1:02d}-{v_shape(k):.6f}.h5" for k in range(4)]
    for k, path in enumerate(ckpt.saved):
        loaded = framework.load_model(path)
        assert loaded.epoch == k + 1 and loaded.optimizer.iterations == k + 1
        np.testing.assert_allclose(w_of(loaded), FACTOR ** (k + 1), **tol(dtype))
        assert loaded.get_weights()[0].dtype == dtype


@requires_h5py
def test_model_checkpoint_creates_a_missing_folder_like_keras(tmp_path, float64):
    model = one_weight()
    ckpt = ModelCheckpoint(tmp_path / "new" / "deeper" / "e{epoch}.h5")
    model.fit(X1, Y0, epochs=2, callbacks=[ckpt], verbose=0)
    assert (tmp_path / "new" / "deeper" / "e2.h5").exists()


@requires_h5py
def test_model_checkpoint_save_best_only_on_real_val_loss_keeps_the_best_epoch(tmp_path, float64):
    model = one_weight()
    ckpt = ModelCheckpoint(tmp_path / "best.h5", save_best_only=True)
    model.fit(X1, Y0, epochs=6, validation_data=(X1, YT), callbacks=[ckpt], verbose=0)
    assert len(ckpt.saved) == 3  # epochs 0, 1, 2 improve; 3, 4, 5 do not
    best = framework.load_model(tmp_path / "best.h5")
    assert best.epoch == 3
    np.testing.assert_allclose(w_of(best), FACTOR**3, rtol=1e-12)


def test_model_checkpoint_bad_format_field_is_a_config_error(tmp_path, float64):
    ckpt = ModelCheckpoint(tmp_path / "m-{val_acc:.2f}.h5")
    with pytest.raises(ConfigError, match=r"ModelCheckpoint.*val_acc.*\['loss', 'val_loss'\]"):
        one_weight().fit(X1, Y0, epochs=1, validation_data=(X1, YT), callbacks=[ckpt], verbose=0)


# ---------------------------------------------------------------- ReduceLROnPlateau against torch


def _plateau(values, mode, patience, cooldown, min_delta, min_lr, factor):
    ours = ReduceLROnPlateau(
        monitor="score",
        mode=mode,
        factor=factor,
        patience=patience,
        cooldown=cooldown,
        min_delta=min_delta,
        min_lr=min_lr,
    )
    model = FakeModel()
    ours.set_model(model)
    ours.on_train_begin()
    param = torch.zeros(1, requires_grad=True)
    ref = torch.optim.SGD([param], lr=1.0)
    theirs = LR.ReduceLROnPlateau(
        ref,
        mode=mode,
        factor=factor,
        patience=patience - 1,
        cooldown=cooldown,
        threshold=min_delta,
        threshold_mode="abs",
        min_lr=min_lr,
    )
    got, want, logged = [], [], []
    for epoch, value in enumerate(values):
        logs = {"score": value}
        ours.on_epoch_end(epoch, logs)
        logged.append(logs["lr"])
        theirs.step(value)
        got.append(model.optimizer.lr)
        want.append(ref.param_groups[0]["lr"])
    return got, want, logged


@requires_torch
@pytest.mark.parametrize("mode", ["min", "max"])
@pytest.mark.parametrize("cooldown", [0, 1, 3])
@pytest.mark.parametrize("patience", [1, 2, 4])
def test_reduce_lr_on_plateau_matches_torch_on_random_sequences(mode, cooldown, patience):
    for values in random_sequences(25, 20, seed=patience * 10 + cooldown):
        for min_delta, min_lr, factor in ((0.0, 0.0, 0.5), (0.03, 0.1, 0.3)):
            got, want, logged = _plateau(values, mode, patience, cooldown, min_delta, min_lr, factor)
            np.testing.assert_allclose(got, want, rtol=1e-15, err_msg=str(values))
            assert logged == [1.0, *got[:-1]]  # 'lr' logs the rate the epoch trained with


def keras_plateau(values, mode, patience, min_delta, min_lr, factor):
    """Keras's ReduceLROnPlateau without cooldown (where the documented count differs): the rates."""
    better = _better(mode, min_delta)
    best, wait, lr, out = (math.inf if mode == "min" else -math.inf), 0, 1.0, []
    for value in values:
        if better(value, best):
            best, wait = value, 0
        else:
            wait += 1
            if wait >= patience and lr > min_lr:
                lr, wait = max(lr * factor, min_lr), 0
        out.append(lr)
    return out


@pytest.mark.parametrize("mode", ["min", "max"])
@pytest.mark.parametrize("patience", [0, 1, 3])
def test_reduce_lr_on_plateau_matches_keras_without_cooldown(mode, patience):
    for values in random_sequences(25, 20, seed=patience + 40):
        for min_delta, min_lr, factor in ((0.0, 0.0, 0.5), (0.03, 0.1, 0.3)):
            ours = ReduceLROnPlateau(
                monitor="score",
                mode=mode,
                patience=patience,
                min_delta=min_delta,
                min_lr=min_lr,
                factor=factor,
            )
            ours.set_model(FakeModel())
            ours.on_train_begin()
            rates = []
            for epoch, value in enumerate(values):
                ours.on_epoch_end(epoch, {"score": value})
                rates.append(ours.model.optimizer.lr)
            assert rates == keras_plateau(values, mode, patience, min_delta, min_lr, factor), values


def test_reduce_lr_on_plateau_on_real_val_loss_in_fit(dtype):
    """val_loss falls for 3 epochs, then rises: with patience 2 the rate halves after epoch 4."""
    model = one_weight()
    seen = []
    rec = LambdaCallback(on_train_batch_begin=lambda batch, logs: seen.append(model.optimizer.lr))
    plateau = ReduceLROnPlateau(factor=0.5, patience=2, min_delta=0.0)
    history = model.fit(X1, Y0, epochs=7, validation_data=(X1, YT), callbacks=[plateau, rec], verbose=0)
    assert seen == [0.1] * 5 + [0.05, 0.05]
    assert history.history["lr"] == seen
    # the weights follow the closed form with the rates actually used
    np.testing.assert_allclose(w_of(model), np.prod([1 - 2 * r for r in seen]), **tol(dtype))


def test_reduce_lr_and_scheduler_refuse_an_optimizer_with_a_schedule(float64):
    model = one_weight(optimizer=SGD(learning_rate=StepDecay(0.1, 2)))
    with pytest.raises(ConfigError, match=r"LearningRateScheduler.*schedule.*StepDecay"):
        model.fit(X1, Y0, epochs=1, callbacks=[LearningRateScheduler(lambda e, lr: lr)], verbose=0)
    plateau = ReduceLROnPlateau(monitor="loss", patience=1, min_delta=10.0)
    with pytest.raises(ConfigError, match=r"ReduceLROnPlateau.*schedule"):
        model.fit(X1, Y0, epochs=3, callbacks=[plateau], verbose=0)


# ---------------------------------------------------------------- schedules against torch, per step


def _torch_lrs(make, base: float, steps: int) -> list[float]:
    param = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([param], lr=base)
    sched = make(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


PER_STEP = [
    ("StepLR", lambda: StepDecay(0.1, 3, 0.5), lambda o: LR.StepLR(o, 3, 0.5), 0.1, 40),
    ("StepLR-gamma-above-1", lambda: StepDecay(0.1, 4, 1.5), lambda o: LR.StepLR(o, 4, 1.5), 0.1, 40),
    ("ExponentialLR", lambda: ExponentialDecay(0.2, 0.9), lambda o: LR.ExponentialLR(o, 0.9), 0.2, 40),
    (
        "ExponentialDecay-staircase=StepLR",
        lambda: ExponentialDecay(0.2, 0.7, decay_steps=3, staircase=True),
        lambda o: LR.StepLR(o, 3, 0.7),
        0.2,
        40,
    ),
    (
        "ExponentialDecay-continuous",
        lambda: ExponentialDecay(0.2, 0.7, decay_steps=3),
        lambda o: LR.ExponentialLR(o, 0.7 ** (1 / 3)),
        0.2,
        40,
    ),
    ("CosineAnnealingLR", lambda: CosineDecay(0.1, 40), lambda o: LR.CosineAnnealingLR(o, 40), 0.1, 41),
    (
        "CosineAnnealingLR-eta_min",
        lambda: CosineDecay(0.3, 17, alpha=0.25),
        lambda o: LR.CosineAnnealingLR(o, 17, eta_min=0.075),
        0.3,
        18,
    ),
    ("LinearLR-warmup-1", lambda: WarmUp(0.1, 1), lambda o: LR.LambdaLR(o, lambda k: 1.0), 0.1, 10),
    ("LinearLR-warmup-9", lambda: WarmUp(0.1, 9), lambda o: LR.LinearLR(o, 1 / 9, 1.0, 8), 0.1, 20),
    (
        "SequentialLR-warmup-exponential",
        lambda: WarmUp(ExponentialDecay(0.1, 0.8), 5),
        lambda o: LR.SequentialLR(o, [LR.LinearLR(o, 1 / 5, 1.0, 4), LR.ExponentialLR(o, 0.8)], [5]),
        0.1,
        40,
    ),
    (
        "SequentialLR-warmup-cosine-eta_min",
        lambda: WarmUp(CosineDecay(0.1, 20, alpha=0.1), 6),
        lambda o: LR.SequentialLR(
            o, [LR.LinearLR(o, 1 / 6, 1.0, 5), LR.CosineAnnealingLR(o, 20, eta_min=0.01)], [6]
        ),
        0.1,
        27,
    ),
]


@requires_torch
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize(
    ("make", "tmake", "base", "steps"), [c[1:] for c in PER_STEP], ids=[c[0] for c in PER_STEP]
)
def test_schedule_sequence_matches_torch_per_step(make, tmake, base, steps):
    sched = make()
    np.testing.assert_allclose([sched(k) for k in range(steps)], _torch_lrs(tmake, base, steps), rtol=1e-13)
    rebuilt = get(serialize(sched))  # the saved form gives the same sequence
    assert rebuilt == sched and [rebuilt(k) for k in range(steps)] == [sched(k) for k in range(steps)]


@pytest.mark.parametrize("alpha", [0.0, 0.2])
def test_cosine_decay_is_keras_after_decay_steps(alpha):
    """Keras's CosineDecay stays at alpha * initial_lr after decay_steps (torch's would rise again)."""
    sched = CosineDecay(0.5, 10, alpha=alpha)
    keras = [0.5 * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * min(k, 10) / 10)) + alpha) for k in range(30)]
    np.testing.assert_allclose([sched(k) for k in range(30)], keras, rtol=1e-15)


def test_schedule_in_fit_is_evaluated_at_each_batch(dtype):
    """Per batch: step k of fit uses schedule(k), across epochs; the closed form follows."""
    sched = WarmUp(StepDecay(0.1, 3, 0.5), 4)
    model = one_weight(optimizer=SGD(learning_rate=sched))
    seen = []
    rec = LambdaCallback(on_train_batch_begin=lambda batch, logs: seen.append(model.optimizer.lr))
    x = np.ones((3, 1))
    model.fit(x, np.zeros((3, 1)), epochs=4, batch_size=1, shuffle=False, callbacks=[rec], verbose=0)
    assert seen == [sched(k) for k in range(12)]
    np.testing.assert_allclose(w_of(model), np.prod([1 - 2 * r for r in seen]), **tol(dtype))


@pytest.mark.parametrize(
    "factory",
    [
        lambda: StepDecay(np.float32(0.5), np.int64(3), np.float64(0.5)),
        lambda: ExponentialDecay(np.float32(0.5), np.float32(0.5), np.int32(2)),
        lambda: CosineDecay(np.float64(0.5), np.int64(10), np.float32(0.25)),
        lambda: WarmUp(np.float32(0.5), np.int64(4)),
    ],
)
def test_schedules_accept_numpy_scalars(factory):
    sched = factory()
    plain = type(sched).from_config(
        {k: v.item() if hasattr(v, "item") else v for k, v in sched.get_config().items()}
    )
    assert [sched(k) for k in range(12)] == [plain(k) for k in range(12)]
    assert serialize(sched) == serialize(plain)


# ---------------------------------------------------------------- LearningRateScheduler, per epoch


def _torch_epoch_lrs(make, base: float, epochs: int) -> list[float]:
    """A scheduler stepped once per epoch gives the same sequence as one stepped per step."""
    return _torch_lrs(make, base, epochs)


PER_EPOCH = [
    ("StepLR-2arg", lambda e, lr: 0.1 * 0.5 ** (e // 2), lambda o: LR.StepLR(o, 2, 0.5)),
    (
        "MultiStepLR-1arg",
        lambda e: 0.1 * 0.5 ** sum(e >= m for m in (2, 5)),
        lambda o: LR.MultiStepLR(o, [2, 5], 0.5),
    ),
    (
        "MultiplicativeLR",
        lambda e, lr: lr * 0.9 if e else lr,
        lambda o: LR.MultiplicativeLR(o, lambda e: 0.9),
    ),
    ("StepDecay-object", StepDecay(0.1, 2, 0.5), lambda o: LR.StepLR(o, 2, 0.5)),
    ("ExponentialDecay-object", ExponentialDecay(0.1, 0.7), lambda o: LR.ExponentialLR(o, 0.7)),
    (
        "CosineDecay-object",
        CosineDecay(0.1, 6, alpha=0.1),
        lambda o: LR.CosineAnnealingLR(o, 6, eta_min=0.01),
    ),
    (
        "WarmUp-object",
        WarmUp(StepDecay(0.1, 2, 0.5), 3),
        lambda o: LR.SequentialLR(o, [LR.LinearLR(o, 1 / 3, 1.0, 2), LR.StepLR(o, 2, 0.5)], [3]),
    ),
]


@requires_torch
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize(("schedule", "tmake"), [c[1:] for c in PER_EPOCH], ids=[c[0] for c in PER_EPOCH])
def test_learning_rate_scheduler_per_epoch_matches_torch(schedule, tmake, dtype):
    model = one_weight()
    seen: list[float] = []
    rec = LambdaCallback(on_train_batch_begin=lambda batch, logs: seen.append(model.optimizer.lr))
    x = np.ones((2, 1))
    history = model.fit(
        x,
        np.zeros((2, 1)),
        epochs=7,
        batch_size=1,
        callbacks=[LearningRateScheduler(schedule), rec],
        verbose=0,
    )
    want = _torch_epoch_lrs(tmake, 0.1, 7)
    np.testing.assert_allclose(seen, np.repeat(want, 2), rtol=1e-13)
    np.testing.assert_allclose(history.history["lr"], want, rtol=1e-13)
    np.testing.assert_allclose(w_of(model), np.prod([1 - 2 * r for r in seen]), **tol(dtype))


@pytest.mark.parametrize(
    ("schedule", "match"),
    [
        (lambda e, lr: None, "returned None"),
        (lambda e, lr: math.nan, "returned nan"),
        (lambda e, lr: -0.1, "returned -0.1"),
        (lambda e, lr: "0.1", "returned '0.1'"),
        (lambda e, lr: True, "returned True"),
        (lambda: 0.1, "schedule must take"),
        (lambda a, b, c: 0.1, "schedule must take"),
    ],
)
def test_learning_rate_scheduler_bad_schedules_are_named(schedule, match, float64):
    with pytest.raises(ConfigError, match=rf"LearningRateScheduler.*{match}"):
        one_weight().fit(X1, Y0, epochs=1, callbacks=[LearningRateScheduler(schedule)], verbose=0)


# ---------------------------------------------------------------- resume from a ModelCheckpoint file


def _fit_recording(model, callbacks, **kwargs):
    seen: list[float] = []
    rec = LambdaCallback(on_train_batch_begin=lambda batch, logs: seen.append(model.optimizer.lr))
    x = np.linspace(-1, 1, 10).reshape(-1, 1)
    history = model.fit(x, 0.5 * x, batch_size=3, seed=3, callbacks=[*callbacks, rec], verbose=0, **kwargs)
    return seen, history


RESUME = [
    ("per-step-schedule", lambda: SGD(learning_rate=WarmUp(ExponentialDecay(0.2, 0.5, 3, True), 5)), list),
    (
        "scheduler-multiplicative",
        lambda: SGD(learning_rate=0.2, momentum=0.5),
        lambda: [LearningRateScheduler(lambda e, lr: lr * 0.5 if e % 2 else lr)],
    ),
    (
        "scheduler-object",
        lambda: SGD(learning_rate=0.2),
        lambda: [LearningRateScheduler(StepDecay(0.2, 2, 0.3))],
    ),
]


@requires_h5py
@pytest.mark.parametrize(("opt", "cbs"), [c[1:] for c in RESUME], ids=[c[0] for c in RESUME])
def test_resume_from_a_model_checkpoint_file_continues_the_same_rates(opt, cbs, tmp_path, dtype):
    straight = one_weight(optimizer=opt())
    want, full = _fit_recording(straight, cbs(), epochs=5)
    first = one_weight(optimizer=opt())
    _fit_recording(first, [*cbs(), ModelCheckpoint(tmp_path / "e{epoch}.h5")], epochs=5)
    resumed = framework.load_model(tmp_path / "e2.h5")
    assert resumed.epoch == 2 and resumed.optimizer.iterations == 8  # 4 batches per epoch
    got, rest = _fit_recording(resumed, cbs(), epochs=5, initial_epoch=resumed.epoch)
    assert got == want[8:]
    assert rest.history["loss"] == full.history["loss"][2:]
    np.testing.assert_array_equal(resumed.get_weights()[0], straight.get_weights()[0])


@requires_h5py
def test_resume_with_reduce_lr_on_plateau_continues_the_same_rates(tmp_path, float64):
    def plateau():
        return [ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, min_delta=10.0)]

    straight = one_weight(optimizer=SGD(learning_rate=0.2))
    want, _ = _fit_recording(straight, plateau(), epochs=5)
    first = one_weight(optimizer=SGD(learning_rate=0.2))
    _fit_recording(first, [*plateau(), ModelCheckpoint(tmp_path / "e{epoch}.h5")], epochs=5)
    resumed = framework.load_model(tmp_path / "e2.h5")
    got, _ = _fit_recording(resumed, plateau(), epochs=5, initial_epoch=resumed.epoch)
    assert got == want[8:]


# ---------------------------------------------------------------- TerminateOnNaN, CSVLogger, History, order


@pytest.mark.parametrize("bad", [math.nan, math.inf])
@pytest.mark.parametrize("epoch_of_bad", [0, 1])
def test_terminate_on_nan_stops_at_the_first_bad_batch(bad, epoch_of_bad, float64, capsys):
    model = one_weight(lr=0.01)
    now = {"epoch": -1}
    seen = []

    def poison(batch, logs):
        if now["epoch"] == epoch_of_bad and batch == 2:
            model.layers[0].weight.data[...] = bad  # this batch's loss is NaN (or infinite)

    hooks = LambdaCallback(
        on_epoch_begin=lambda epoch, logs: now.__setitem__("epoch", epoch),
        on_train_batch_begin=poison,
        on_train_batch_end=lambda batch, logs: seen.append((batch, logs["loss"])),
    )
    stop = TerminateOnNaN()
    history = model.fit(
        np.ones((8, 1)),
        np.zeros((8, 1)),
        epochs=3,
        batch_size=2,
        shuffle=False,
        callbacks=[hooks, stop],
        verbose=0,
    )
    assert stop.stopped_batch == 2 and seen[-1][0] == 2 and len(seen) == 4 * epoch_of_bad + 3
    assert all(math.isfinite(loss) for _, loss in seen[:-1])
    assert history.epoch == list(range(epoch_of_bad + 1))
    assert not math.isfinite(history.history["loss"][-1])
    assert model.optimizer.iterations == 4 * epoch_of_bad + 3
    assert "invalid loss" in capsys.readouterr().out


def test_terminate_on_nan_with_a_finite_loss_does_nothing(float64):
    stop = TerminateOnNaN()
    history = one_weight().fit(X1, Y0, epochs=3, callbacks=[stop], verbose=0)
    assert stop.stopped_batch is None and len(history.epoch) == 3


def test_csv_logger_rows_equal_history_exactly_with_lr_and_val_keys(tmp_path, dtype):
    path = tmp_path / "log.csv"
    model = one_weight()
    plateau = ReduceLROnPlateau(factor=0.5, patience=1)
    history = model.fit(
        X1, Y0, epochs=6, validation_data=(X1, YT), callbacks=[plateau, CSVLogger(path)], verbose=0
    )
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["epoch", "learning_rate", "loss", "lr", "val_loss"]
    assert [int(r["epoch"]) for r in rows] == history.epoch
    for key in ("loss", "lr", "val_loss"):
        assert [float(r[key]) for r in rows] == history.history[key]


def test_callbacks_run_in_order_and_see_the_keys_earlier_ones_add(float64):
    order = []

    class Tag(Callback):
        def __init__(self, name):
            super().__init__()
            self.name = name

        def on_epoch_end(self, epoch, logs=None):
            order.append((self.name, sorted(logs)))
            logs[f"seen_by_{self.name}"] = float(epoch)

    model = one_weight()
    history = model.fit(X1, Y0, epochs=2, validation_data=(X1, YT), callbacks=[Tag("a"), Tag("b")], verbose=0)
    assert (
        order
        == [
            ("a", ["loss", "val_loss"]),
            ("b", ["loss", "seen_by_a", "val_loss"]),
        ]
        * 2
    )
    assert history.history["seen_by_b"] == [0.0, 1.0]  # History comes after the user's callbacks


@pytest.mark.parametrize(
    ("hook", "epochs_run", "steps_run"),
    [
        ("on_train_begin", [0], 1),  # as Keras: checked after each batch, so one batch runs
        ("on_epoch_begin", [0], 1),
        ("on_train_batch_end", [0], 1),
        ("on_epoch_end", [0], 3),
    ],
)
def test_stop_training_from_each_hook(hook, epochs_run, steps_run, float64):
    model = one_weight()

    def stop(*args):
        model.stop_training = True

    history = model.fit(
        np.ones((3, 1)),
        np.zeros((3, 1)),
        epochs=3,
        batch_size=1,
        callbacks=[LambdaCallback(**{hook: stop})],
        verbose=0,
    )
    assert history.epoch == epochs_run and model.optimizer.iterations == steps_run


def test_val_metrics_reach_monitors(float64):
    gen = np.random.default_rng(0)
    x = gen.standard_normal((20, 2))
    y = (x[:, :1] > 0).astype(float)
    framework.set_seed(0)
    model = Sequential([Linear(2, 1, activation="sigmoid")])
    model.compile(SGD(learning_rate=0.5), "binary_crossentropy", metrics=["accuracy"])
    stopper = EarlyStopping(monitor="val_accuracy", patience=100)
    history = model.fit(x, y, epochs=4, validation_data=(x, y), callbacks=[stopper], verbose=0)
    assert stopper.mode == "max"
    assert stopper.best == max(history.history["val_accuracy"])
    assert stopper.best_epoch == int(np.argmax(history.history["val_accuracy"]))


# ---------------------------------------------------------------- bad arguments


BAD = [
    (lambda: EarlyStopping(min_delta="a"), r"EarlyStopping.*min_delta.*'a'"),
    (lambda: EarlyStopping(min_delta=None), r"EarlyStopping.*min_delta.*None"),
    (lambda: EarlyStopping(min_delta=-0.1), r"EarlyStopping.*min_delta.*-0.1"),
    (lambda: EarlyStopping(min_delta=math.nan), r"EarlyStopping.*min_delta.*nan"),
    (lambda: EarlyStopping(patience=-1), r"EarlyStopping.*patience.*-1"),
    (lambda: EarlyStopping(patience=1.5), r"EarlyStopping.*patience.*1.5"),
    (lambda: EarlyStopping(patience=True), r"EarlyStopping.*patience.*True"),
    (lambda: EarlyStopping(baseline="a"), r"EarlyStopping.*baseline.*'a'"),
    (lambda: EarlyStopping(baseline=math.nan), r"EarlyStopping.*baseline.*nan"),
    (lambda: EarlyStopping(start_from_epoch="a"), r"EarlyStopping.*start_from_epoch.*'a'"),
    (lambda: EarlyStopping(start_from_epoch=-1), r"EarlyStopping.*start_from_epoch.*-1"),
    (lambda: EarlyStopping(mode="MAX"), r"EarlyStopping.*mode.*'MAX'"),
    (lambda: EarlyStopping(monitor=""), r"EarlyStopping.*monitor.*''"),
    (lambda: ModelCheckpoint("x.h5", monitor=None), r"ModelCheckpoint.*monitor.*None"),
    (lambda: ModelCheckpoint("x.h5", mode="best"), r"ModelCheckpoint.*mode.*'best'"),
    (lambda: ReduceLROnPlateau(factor="x"), r"ReduceLROnPlateau.*factor.*'x'"),
    (lambda: ReduceLROnPlateau(factor=1.0), r"ReduceLROnPlateau.*factor.*1.0"),
    (lambda: ReduceLROnPlateau(factor=math.nan), r"ReduceLROnPlateau.*factor.*nan"),
    (lambda: ReduceLROnPlateau(patience="a"), r"ReduceLROnPlateau.*patience.*'a'"),
    (lambda: ReduceLROnPlateau(patience=-1), r"ReduceLROnPlateau.*patience.*-1"),
    (lambda: ReduceLROnPlateau(patience=2.7), r"ReduceLROnPlateau.*patience.*2.7"),
    (lambda: ReduceLROnPlateau(cooldown=-1), r"ReduceLROnPlateau.*cooldown.*-1"),
    (lambda: ReduceLROnPlateau(min_lr=-1.0), r"ReduceLROnPlateau.*min_lr.*-1.0"),
    (lambda: ReduceLROnPlateau(min_lr="x"), r"ReduceLROnPlateau.*min_lr.*'x'"),
    (lambda: ReduceLROnPlateau(min_delta="x"), r"ReduceLROnPlateau.*min_delta.*'x'"),
    (lambda: LearningRateScheduler(0.1), r"LearningRateScheduler.*callable.*0.1"),
    (lambda: StepDecay(0.1, 0), r"StepDecay.*step_size.*0"),
    (lambda: StepDecay(0.1, 2.0), r"StepDecay.*step_size.*2.0"),
    (lambda: StepDecay(-0.1, 2), r"StepDecay.*initial_lr.*-0.1"),
    (lambda: StepDecay(True, 2), r"StepDecay.*initial_lr.*True"),
    (lambda: ExponentialDecay(0.1, math.inf), r"ExponentialDecay.*decay_rate.*inf"),
    (lambda: ExponentialDecay(0.1, 0.5, decay_steps=np.int64(0)), r"ExponentialDecay.*decay_steps.*0"),
    (lambda: CosineDecay(0.1, 10, alpha=1.5), r"CosineDecay.*alpha.*1.5"),
    (lambda: CosineDecay(0.1, -3), r"CosineDecay.*decay_steps.*-3"),
    (lambda: WarmUp(0.1, 0), r"WarmUp.*warmup_steps.*0"),
    (lambda: WarmUp("x", 3), r"WarmUp.*schedule.*'x'"),
    (lambda: WarmUp({"class_name": "OneCycle"}, 3), r"unknown.*'OneCycle'.*StepDecay"),
]


def test_bad_arguments_raise_a_config_error_naming_object_and_value():
    """Every entry of BAD is tried; the failures are reported together, each by its pattern."""
    failures = []
    for factory, match in BAD:
        try:
            with pytest.raises(ConfigError, match=match):
                factory()
        except (AssertionError, pytest.fail.Exception) as error:
            failures.append(f"{match}: {error}")
    assert not failures, "\n".join(failures)


def test_every_config_error_is_a_framework_error():
    assert issubclass(ConfigError, FrameworkError)


def test_missing_monitor_warns_naming_the_available_keys(float64):
    for cb in (EarlyStopping(monitor="val_loss"), ReduceLROnPlateau(monitor="val_loss")):
        with pytest.warns(RuntimeWarning, match=r"'val_loss'.*not in the logs.*\[.*'loss'"):
            history = one_weight().fit(X1, Y0, epochs=2, callbacks=[cb], verbose=0)
        assert len(history.epoch) == 2  # nothing stops, nothing reduces


def test_learning_rate_scheduler_on_a_fake_model_accepts_numpy_floats():
    cb = LearningRateScheduler(lambda e, lr: np.float32(0.25))
    cb.set_model(types.SimpleNamespace(optimizer=SGD(learning_rate=0.1)))
    cb.on_epoch_begin(0)
    assert cb.model.optimizer.lr == 0.25 and type(cb.model.optimizer.learning_rate) is float
