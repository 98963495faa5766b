"""A fit resumed from a checkpoint continues its callbacks: EarlyStopping, ReduceLROnPlateau, ModelCheckpoint.

One weight trained on x = 1, y = 0 by SGD(0.2) is multiplied by 0.8 each epoch; with a
validation target of 0.5, ``val_loss = (0.8**k - 0.5)**2`` falls for two epochs and then
rises, so the monitored values and the best epoch are known in closed form. Each test
runs straight for n epochs and as k epochs, save, ``load_model``, n - k more; the two
must agree (weights bit for bit, the callbacks' decisions).
"""

from __future__ import annotations

import copy
import pickle
import threading

import numpy as np
import pytest

import framework
from framework import Sequential
from framework.errors import CheckpointError
from framework.layers import Linear
from framework.optimizers import SGD
from framework.training.callbacks import (
    Callback,
    EarlyStopping,
    LambdaCallback,
    ModelCheckpoint,
    ReduceLROnPlateau,
)

h5py = pytest.importorskip("h5py")

X, Y, YV = np.ones((1, 1)), np.zeros((1, 1)), np.full((1, 1), 0.5)


def model() -> Sequential:
    m = Sequential([Linear(1, 1, bias=False)])
    m.compile(SGD(learning_rate=0.1), "mse")
    m.build((None, 1))
    m.set_weights([np.ones((1, 1))])
    return m


def fit(m, callbacks, epochs, initial_epoch=0):
    return m.fit(
        X,
        Y,
        epochs=epochs,
        initial_epoch=initial_epoch,
        validation_data=(X, YV),
        callbacks=callbacks,
        verbose=0,
    )


def weight(m) -> float:
    return float(m.get_weights()[0][0, 0])


def test_early_stopping_resumed_restores_the_best_epoch_from_before_the_checkpoint(tmp_path):
    def stopper():
        return EarlyStopping(patience=3, restore_best_weights=True)

    straight = model()
    stop = stopper()
    fit(straight, [stop], epochs=20)
    assert stop.stopped_epoch == 5 and stop.best_epoch == 2  # val_loss is least after 3 epochs (0.8**3)
    assert weight(straight) == pytest.approx(0.8**3)

    first = model()
    fit(first, [stopper(), ModelCheckpoint(tmp_path / "e{epoch}.h5")], epochs=20)
    resumed = framework.load_model(tmp_path / "e4.h5")  # after epoch index 3: best was epoch 2, wait 1
    again = stopper()
    history = fit(resumed, [again], epochs=20, initial_epoch=resumed.epoch)
    assert (again.stopped_epoch, again.best_epoch, again.wait) == (5, 2, 3)
    assert history.epoch == [4, 5]
    assert weight(resumed) == weight(straight)


def test_early_stopping_without_a_checkpoint_state_starts_afresh_and_stops_later(tmp_path):
    first = model()
    fit(first, [EarlyStopping(patience=3)], epochs=4)
    first.fit_callbacks.clear()  # as a file written by an older version: no callback state
    first.save(tmp_path / "old.h5")
    resumed = framework.load_model(tmp_path / "old.h5")
    again = EarlyStopping(patience=3)
    fit(resumed, [again], epochs=20, initial_epoch=4)
    assert again.stopped_epoch == 7  # its own best is epoch 4; the saved state would have stopped at 5


@pytest.mark.parametrize("checkpoint_first", [True, False])
def test_reduce_lr_on_plateau_resumes_its_rates_whatever_the_callback_order(tmp_path, checkpoint_first):
    def plateau():
        return ReduceLROnPlateau(factor=0.5, patience=1, min_delta=0.0)

    def rates(m, callbacks, **kwargs):
        seen = []
        record = LambdaCallback(on_epoch_begin=lambda epoch, logs: seen.append(m.optimizer.lr))
        fit(m, [*callbacks, record], **kwargs)
        return seen

    straight = model()
    want = rates(straight, [plateau()], epochs=8)
    assert len(set(want)) > 2  # it reduced more than once

    first = model()
    save = ModelCheckpoint(tmp_path / "e{epoch}.h5")
    rates(first, [save, plateau()] if checkpoint_first else [plateau(), save], epochs=8)
    for k in (3, 4, 5):
        resumed = framework.load_model(tmp_path / f"e{k}.h5")
        got = rates(resumed, [plateau()], epochs=8, initial_epoch=resumed.epoch)
        assert got == want[k:], k
        assert weight(resumed) == weight(straight)


def test_best_only_checkpoint_resumed_does_not_overwrite_a_better_file(tmp_path):
    path = tmp_path / "best.h5"
    first = model()
    fit(first, [ModelCheckpoint(path, save_best_only=True)], epochs=4)  # best after epoch 3
    resumed = framework.load_model(path)
    assert resumed.epoch == 3
    again = ModelCheckpoint(path, save_best_only=True)
    fit(resumed, [again], epochs=6, initial_epoch=3)
    assert again.saved == []  # epochs 4-6 are all worse than epoch 3
    assert framework.load_model(path).epoch == 3


def test_a_state_for_another_quantity_is_not_taken(tmp_path):
    first = model()
    fit(first, [EarlyStopping(monitor="val_loss", patience=3), ModelCheckpoint(tmp_path / "e.h5")], epochs=4)
    resumed = framework.load_model(tmp_path / "e.h5")
    again = EarlyStopping(monitor="loss", patience=3)
    with pytest.warns(RuntimeWarning, match="'val_loss'.*starting it afresh"):
        fit(resumed, [again], epochs=5, initial_epoch=4)
    assert again.best == pytest.approx(0.8**8)  # epoch 4's loss, not the saved best val_loss


def test_two_callbacks_of_one_class_keep_their_own_states(tmp_path):
    first = model()
    pair = [ReduceLROnPlateau(monitor="val_loss", patience=1), ReduceLROnPlateau(monitor="loss", patience=9)]
    fit(first, [*pair, ModelCheckpoint(tmp_path / "e.h5")], epochs=5)
    resumed = framework.load_model(tmp_path / "e.h5")
    again = [ReduceLROnPlateau(monitor="val_loss", patience=1), ReduceLROnPlateau(monitor="loss", patience=9)]
    resumed.fit(X, Y, epochs=5, initial_epoch=5, callbacks=again, verbose=0)  # no epoch left: states only
    for old, new in zip(pair, again):
        assert (new.best, new.wait, new.cooldown_counter) == (old.best, old.wait, old.cooldown_counter)


def test_a_model_with_fit_callbacks_copies_and_pickles_without_them():
    class Locked(Callback):  # neither copy.deepcopy nor pickle takes a lock
        def __init__(self):
            super().__init__()
            self.lock = threading.Lock()

    m = model()
    fit(m, [Locked(), EarlyStopping()], epochs=2)
    assert len(m.fit_callbacks) == 2
    assert len(copy.deepcopy(m).fit_callbacks) == 0
    assert len(pickle.loads(pickle.dumps(m)).fit_callbacks) == 0


def test_threads_with_stateful_callbacks_resume_as_one_thread(tmp_path):
    x = np.linspace(-1, 1, 32).reshape(-1, 1)
    m = Sequential([Linear(1, 4), Linear(4, 1)])
    m.compile(SGD(learning_rate=0.05), "mse")
    framework.set_seed(0)
    m.build((None, 1))
    callbacks = [ModelCheckpoint(tmp_path / "t.h5"), ReduceLROnPlateau(monitor="loss", patience=1)]
    m.fit(x, 3 * x, epochs=3, batch_size=8, threads=2, callbacks=callbacks, verbose=0)
    resumed = framework.load_model(tmp_path / "t.h5")
    again = ReduceLROnPlateau(monitor="loss", patience=1)
    resumed.fit(x, 3 * x, epochs=3, initial_epoch=3, callbacks=[again], verbose=0)
    assert (again.best, again.wait) == (callbacks[1].best, callbacks[1].wait)


def _tamper(path, edit) -> None:
    with h5py.File(path, "r+") as handle:
        edit(handle["training/callbacks"])


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda g: g["EarlyStopping"].attrs.__setitem__("state", "[1, 2]"), "should be a JSON dict"),
        (lambda g: g["EarlyStopping"].attrs.__setitem__("state", "{"), "not valid JSON"),
        (lambda g: g["EarlyStopping/best_weights"].attrs.__setitem__("names", '["nope"]'), "does not have"),
        (lambda g: g["EarlyStopping/best_weights"].attrs.__setitem__("names", "[1]"), "distinct strings"),
        (
            lambda g: (
                g["EarlyStopping/best_weights"].__delitem__("0"),
                g["EarlyStopping/best_weights"].create_dataset("0", data=np.zeros((2, 2))),
            ),
            "shape",
        ),
        (
            lambda g: (
                g["EarlyStopping/best_weights"].__delitem__("0"),
                g["EarlyStopping/best_weights"].__setitem__("0", h5py.ExternalLink("other.h5", "/x")),
            ),
            "external link",
        ),
    ],
)
def test_a_malformed_callback_state_is_refused_by_name(tmp_path, edit, message):
    m = model()
    fit(m, [EarlyStopping(restore_best_weights=True)], epochs=2)
    m.save(tmp_path / "m.h5")
    _tamper(tmp_path / "m.h5", edit)
    with pytest.raises(CheckpointError, match=message):
        framework.load_model(tmp_path / "m.h5")


def test_a_saved_counter_of_the_wrong_kind_is_refused(tmp_path):
    m = model()
    fit(m, [ReduceLROnPlateau(patience=3), ModelCheckpoint(tmp_path / "m.h5")], epochs=2)
    _tamper(
        tmp_path / "m.h5",
        lambda g: g["ReduceLROnPlateau"].attrs.__setitem__(
            "state", '{"monitor": "val_loss", "mode": "min", "best": 1.0, "wait": -1, "cooldown_counter": 0}'
        ),
    )
    resumed = framework.load_model(tmp_path / "m.h5")
    with pytest.raises(CheckpointError, match="ReduceLROnPlateau: saved state 'wait'"):
        fit(resumed, [ReduceLROnPlateau(patience=3)], epochs=3, initial_epoch=2)
