"""Callbacks that watch a logged quantity: :class:`EarlyStopping`, :class:`ModelCheckpoint`,
:class:`ReduceLROnPlateau`. Each keeps what it has seen in :meth:`~_Monitor.state_dict`, which
checkpoints record so that a resumed ``fit`` continues it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from framework.errors import CheckpointError, ConfigError
from framework.training.callbacks.arguments import (
    check_bool,
    check_count,
    check_number,
    check_path,
    check_verbose,
)
from framework.training.callbacks.base import Logs
from framework.training.callbacks.monitoring import _Monitor
from framework.training.callbacks.scheduling import LearningRateScheduler, set_lr

__all__ = ["EarlyStopping", "LearningRateScheduler", "ModelCheckpoint", "ReduceLROnPlateau"]


class EarlyStopping(_Monitor):
    """Stops training when ``monitor`` has not improved for ``patience`` epochs.

    Args:
        monitor: the log key to watch (default ``"val_loss"``).
        min_delta: the smallest change that counts as an improvement.
        patience: epochs without improvement before stopping.
        mode: ``"min"``, ``"max"`` or ``"auto"`` (max for accuracy-like keys).
        restore_best_weights: at the end of training, whether it stopped early
            or ran all its epochs, load the parameters and buffers of the best
            epoch back into the model, with each layer's ``num_batches_tracked``
            (``BatchNorm(momentum=None)`` averages by it) (Keras: the best
            epoch even when none beat ``baseline``; the first monitored epoch
            while no value was comparable, NaN); not the optimizer's state.
            ``True`` or ``False``: a string such as ``"False"`` is refused.
        baseline: training stops if the quantity does not beat it within
            ``patience`` epochs; an epoch that improves on the best so far
            without beating it still counts toward ``patience``, but (as in
            Keras) training stops only at an epoch that does not improve.
        start_from_epoch: epochs to wait before monitoring.
        verbose: ``0`` (silent), ``1`` or ``2``: print a line when stopping.

    Raises:
        ConfigError: an argument of the wrong kind or out of range, naming it.

    Attributes:
        best: the best value seen so far.
        stopped_epoch: the epoch training stopped at (0 if it did not).
        best_epoch: the epoch of the best value.
        best_weights, best_counts: the best epoch's arrays and ``{layer: num_batches_tracked}``.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        min_delta: float = 0.0,
        patience: int = 0,
        mode: str = "auto",
        restore_best_weights: bool = False,
        baseline: float | None = None,
        start_from_epoch: int = 0,
        verbose: int = 0,
    ) -> None:
        super().__init__(monitor, mode, min_delta)
        self.patience = check_count("EarlyStopping", "patience", patience)
        self.restore_best_weights = check_bool("EarlyStopping", "restore_best_weights", restore_best_weights)
        self.baseline = (
            None if baseline is None else check_number("EarlyStopping", "baseline", baseline, None)
        )
        self.start_from_epoch = check_count("EarlyStopping", "start_from_epoch", start_from_epoch)
        self.verbose = check_verbose("EarlyStopping", verbose)
        self.wait = 0
        self.stopped_epoch = 0
        self.best_epoch = 0
        self.best_weights: dict[str, np.ndarray] | None = None
        self.best_counts: dict[str, int] = {}

    resumable = ("best", "wait", "best_epoch")

    def state_dict(self) -> dict[str, Any]:
        """The counters, and the best epoch's weights and ``[[layer, count]]`` when it is to restore them."""
        state = super().state_dict()
        if self.best_weights is not None:
            state["best_weights"] = self.best_weights
            state["best_counts"] = [[name, count] for name, count in self.best_counts.items()]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take back :meth:`state_dict`'s output; a CheckpointError for a value of the wrong kind."""
        weights, counts = state.get("best_weights"), state.get("best_counts", [])
        pairs = isinstance(counts, list) and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in counts)
        if not pairs or not all(isinstance(name, str) and _is_count(n) for name, n in counts):
            raise CheckpointError(
                "EarlyStopping: saved state 'best_counts' should list [layer name, count >= 0] pairs, "
                f"got {counts!r}"
            )
        if self._take_state(state) and self.restore_best_weights and isinstance(weights, dict):
            self.best_weights = {k: np.array(v, copy=True) for k, v in weights.items()}
            self.best_counts = {name: int(count) for name, count in counts}

    def on_train_begin(self, logs: Logs | None = None) -> None:
        self.wait = 0
        self.stopped_epoch = 0
        self.best_epoch = 0
        self.best_weights = None
        self.best_counts = {}
        self.best = math.inf if self.mode == "min" else -math.inf

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        if epoch < self.start_from_epoch:
            return
        value = self._current(logs)
        if value is None:
            return
        self.wait += 1
        improved = self._improved(value)
        # Keras: until an epoch improves, the first monitored epoch's weights are the best ones
        if improved or (self.restore_best_weights and self.best_weights is None):
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = {k: np.array(v, copy=True) for k, v in self.model.state_dict().items()}
                self.best_counts = {k: int(n.num_batches_tracked) for k, n in _counting_layers(self.model)}
        if improved:  # as Keras: an improving epoch never stops training
            self.best = value
            if self.baseline is None or self._improved(value, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs: Logs | None = None) -> None:
        if self.stopped_epoch and self.verbose:
            print(
                f"Epoch {self.stopped_epoch + 1}: early stopping "
                f"(best {self.monitor} at epoch {self.best_epoch + 1})"
            )
        if self.restore_best_weights and self.best_weights is not None:
            self.model.load_state_dict(self.best_weights)
            for name, layer in _counting_layers(self.model):
                layer.num_batches_tracked = self.best_counts.get(name, layer.num_batches_tracked)
            if self.verbose:
                print(f"Restored the weights of epoch {self.best_epoch + 1}")


def _counting_layers(layer: Any, prefix: str = "", seen: set[int] | None = None) -> Iterator[tuple[str, Any]]:
    """``(dotted name, layer)`` of ``layer`` and each layer under it (once) counting its batches (``int``
    ``num_batches_tracked``: ``BatchNorm``, ``InstanceNorm``), for :class:`EarlyStopping` to restore."""
    seen = set() if seen is None else seen
    if id(layer) not in seen and hasattr(layer, "named_children"):  # (not a stand-in model of a test)
        seen.add(id(layer))
        if _is_count(vars(layer).get("num_batches_tracked")):
            yield prefix.rstrip("."), layer
        for name, child in layer.named_children():
            yield from _counting_layers(child, f"{prefix}{name}.", seen)


def _is_count(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and bool(value >= 0)


class ModelCheckpoint(_Monitor):
    """Saves the model (or its weights) after each epoch, or only when ``monitor`` improves.

    Args:
        filepath: the file to write; may contain ``{epoch}`` and log keys as
            format fields, e.g. ``"ckpt-{epoch:02d}-{val_loss:.3f}.h5"``
            (``epoch`` counts from 1); a ``str`` or ``os.PathLike``, not ``None``.
            Missing folders are created, as Keras does.
        monitor: the log key deciding "best".
        save_best_only: write only when the monitored value improves.
        save_weights_only: call ``model.save_weights`` instead of ``model.save``.
        mode: ``"min"``, ``"max"`` or ``"auto"``.
        verbose: ``0`` (silent), ``1`` or ``2``: print a line at each save.

    Raises:
        ConfigError: a ``filepath`` that is not a path, a flag that is not
            ``True``/``False`` (``save_best_only="no"``), a bad ``mode`` or ``verbose``.
    """

    main_process_only = True  # data-parallel fit: rank 0 alone writes the files
    writes_model = True  # at an epoch's end it runs after the other callbacks (ReduceLROnPlateau's rate)

    def __init__(
        self,
        filepath: Any,
        monitor: str = "val_loss",
        save_best_only: bool = False,
        save_weights_only: bool = False,
        mode: str = "auto",
        verbose: int = 0,
    ) -> None:
        super().__init__(monitor, mode, 0.0)
        self.filepath = check_path("ModelCheckpoint", "filepath", filepath)
        self.save_best_only = check_bool("ModelCheckpoint", "save_best_only", save_best_only)
        self.save_weights_only = check_bool("ModelCheckpoint", "save_weights_only", save_weights_only)
        self.verbose = check_verbose("ModelCheckpoint", verbose)
        self.saved: list[str] = []

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        logs = logs or {}
        if self.save_best_only:
            value = self._current(logs)
            if value is None or not self._improved(value):
                return
            self.best = value
        try:
            path = self.filepath.format(epoch=epoch + 1, **logs)
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise ConfigError(
                f"ModelCheckpoint: cannot format filepath {self.filepath!r} with epoch and logs "
                f"{sorted(logs)}: {exc}"
            ) from exc
        folder = os.path.dirname(path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        if self.save_weights_only:
            self.model.save_weights(path)
        else:
            self.model.save(path)
        self.saved.append(path)
        if self.verbose:
            print(f"Epoch {epoch + 1}: saved {'weights' if self.save_weights_only else 'model'} to {path}")


class ReduceLROnPlateau(_Monitor):
    """Multiplies the learning rate by ``factor`` when ``monitor`` stops improving.

    Args:
        monitor: the log key to watch.
        factor: the multiplier, in ``(0, 1)``.
        patience: epochs without improvement before reducing.
        mode: ``"min"``, ``"max"`` or ``"auto"``.
        min_delta: the smallest change that counts as an improvement.
        cooldown: epochs to wait after a reduction before watching again:
            ``cooldown=c`` ignores the ``c`` epochs after it, as PyTorch's
            (Keras's code ignores ``c - 1``).
        min_lr: the learning rate never goes below it.
        verbose: ``0`` (silent), ``1`` or ``2``: print a line at each reduction.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        factor: float = 0.1,
        patience: int = 10,
        mode: str = "auto",
        min_delta: float = 1e-4,
        cooldown: int = 0,
        min_lr: float = 0.0,
        verbose: int = 0,
    ) -> None:
        super().__init__(monitor, mode, min_delta)
        if not isinstance(factor, (float, np.floating)) or not 0.0 < factor < 1.0:
            raise ConfigError(f"ReduceLROnPlateau: factor must be a number in (0, 1), got {factor!r}")
        self.factor = float(factor)
        self.patience = check_count("ReduceLROnPlateau", "patience", patience)
        self.cooldown = check_count("ReduceLROnPlateau", "cooldown", cooldown)
        self.min_lr = check_number("ReduceLROnPlateau", "min_lr", min_lr)
        self.verbose = check_verbose("ReduceLROnPlateau", verbose)
        self.wait = 0
        self.cooldown_counter = 0

    resumable = ("best", "wait", "cooldown_counter")

    def on_train_begin(self, logs: Logs | None = None) -> None:
        self.wait = 0
        self.cooldown_counter = 0
        self.best = math.inf if self.mode == "min" else -math.inf

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        optimizer = self.model.optimizer
        if logs is not None:  # Keras 3's key, and Keras 2's "lr" that earlier versions logged
            logs["learning_rate"] = logs["lr"] = optimizer.lr
        value = self._current(logs)
        if value is None:
            return
        cooling = self.cooldown_counter > 0  # this epoch is one of the cooldown's (PyTorch's count)
        if cooling:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._improved(value):
            self.best = value
            self.wait = 0
            return
        if cooling:
            return
        self.wait += 1
        if self.wait >= self.patience:
            old = optimizer.lr
            new = max(old * self.factor, self.min_lr)
            if new < old:
                set_lr(optimizer, new, "ReduceLROnPlateau")
                if self.verbose:
                    print(f"Epoch {epoch + 1}: ReduceLROnPlateau reduced the learning rate to {new:.3g}")
            self.cooldown_counter = self.cooldown
            self.wait = 0
