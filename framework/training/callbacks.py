"""Callbacks: code ``fit`` runs at the start and end of training, epochs and batches.

A callback subclasses :class:`Callback` and overrides any of the Keras hooks
``on_train_begin/end``, ``on_epoch_begin/end``, ``on_train_batch_begin/end``
(``on_batch_begin/end`` are the same hooks under their older names),
``on_test_*`` and ``on_predict_*``. ``self.model`` is the model being
trained, ``self.params`` holds ``epochs``, ``steps``, ``verbose`` and
``batch_size``. Setting ``self.model.stop_training = True`` stops ``fit``
after the current batch.

``logs`` at a batch end holds ``loss`` (that batch's) and the running
metrics; at an epoch end, the epoch's mean loss, the metrics and the
validation results (``val_`` keys).

Built-ins: :class:`History` (added to every ``fit``), :class:`EarlyStopping`,
:class:`ModelCheckpoint`, :class:`ReduceLROnPlateau`,
:class:`LearningRateScheduler`, :class:`TerminateOnNaN`, :class:`CSVLogger`,
:class:`LambdaCallback` and :class:`ProgbarLogger` (added by ``verbose``).
"""

from __future__ import annotations

import csv
import math
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from framework.errors import ConfigError

__all__ = [
    "Callback",
    "CallbackList",
    "History",
    "EarlyStopping",
    "ModelCheckpoint",
    "ReduceLROnPlateau",
    "LearningRateScheduler",
    "TerminateOnNaN",
    "CSVLogger",
    "LambdaCallback",
    "ProgbarLogger",
]

Logs = dict[str, Any]


class Callback:
    """Base class: every hook does nothing; override the ones you need."""

    def __init__(self) -> None:
        self.model: Any = None
        self.params: dict[str, Any] = {}

    def set_model(self, model: Any) -> None:
        self.model = model

    def set_params(self, params: dict[str, Any]) -> None:
        self.params = params

    def on_train_begin(self, logs: Logs | None = None) -> None:
        """Called once before the first epoch."""

    def on_train_end(self, logs: Logs | None = None) -> None:
        """Called once after the last epoch (also after an interruption)."""

    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None:
        """Called at the start of epoch ``epoch`` (0-based)."""

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        """Called at the end of an epoch with its mean loss, metrics and ``val_`` results."""

    def on_train_batch_begin(self, batch: int, logs: Logs | None = None) -> None:
        """Called before each training batch (defaults to :meth:`on_batch_begin`)."""
        self.on_batch_begin(batch, logs)

    def on_train_batch_end(self, batch: int, logs: Logs | None = None) -> None:
        """Called after each training batch; ``logs`` holds the running means of the epoch so far.

        (Defaults to :meth:`on_batch_end`.)
        """
        self.on_batch_end(batch, logs)

    def on_batch_begin(self, batch: int, logs: Logs | None = None) -> None:
        """Older name of :meth:`on_train_batch_begin`."""

    def on_batch_end(self, batch: int, logs: Logs | None = None) -> None:
        """Older name of :meth:`on_train_batch_end`."""

    def on_test_begin(self, logs: Logs | None = None) -> None:
        """Called before an evaluation."""

    def on_test_end(self, logs: Logs | None = None) -> None:
        """Called after an evaluation."""

    def on_test_batch_begin(self, batch: int, logs: Logs | None = None) -> None:
        """Called before each evaluation batch."""

    def on_test_batch_end(self, batch: int, logs: Logs | None = None) -> None:
        """Called after each evaluation batch."""

    def on_predict_begin(self, logs: Logs | None = None) -> None:
        """Called before a prediction."""

    def on_predict_end(self, logs: Logs | None = None) -> None:
        """Called after a prediction."""

    def on_predict_batch_begin(self, batch: int, logs: Logs | None = None) -> None:
        """Called before each prediction batch."""

    def on_predict_batch_end(self, batch: int, logs: Logs | None = None) -> None:
        """Called after each prediction batch."""


def _overrides_batch_hooks(cb: Callback) -> bool:
    cls = type(cb)
    return any(
        getattr(cls, name) is not getattr(Callback, name)
        for name in ("on_train_batch_begin", "on_train_batch_end", "on_batch_begin", "on_batch_end")
    ) or isinstance(cb, LambdaCallback)


class CallbackList:
    """Calls each hook on every callback, in order; batch hooks only on those that use them."""

    def __init__(self, callbacks: list[Callback], model: Any = None) -> None:
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise ConfigError(f"callbacks must be Callback instances, got {type(cb).__name__} {cb!r}")
        self.callbacks = list(callbacks)
        self._batch = [cb for cb in self.callbacks if _overrides_batch_hooks(cb)]
        self.has_batch_hooks = bool(self._batch)
        if model is not None:
            for cb in self.callbacks:
                cb.set_model(model)

    def set_params(self, params: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.set_params(params)

    def on_train_begin(self, logs: Logs | None = None) -> None:
        for cb in self.callbacks:
            cb.on_train_begin(logs)

    def on_train_end(self, logs: Logs | None = None) -> None:
        for cb in self.callbacks:
            cb.on_train_end(logs)

    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None:
        for cb in self.callbacks:
            cb.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        for cb in self.callbacks:
            cb.on_epoch_end(epoch, logs)

    def on_train_batch_begin(self, batch: int, logs: Logs | None = None) -> None:
        for cb in self._batch:
            cb.on_train_batch_begin(batch, logs)

    def on_train_batch_end(self, batch: int, logs: Logs | None = None) -> None:
        for cb in self._batch:
            cb.on_train_batch_end(batch, logs)


class History(Callback):
    """Records each epoch's logs; ``fit`` returns it.

    Attributes:
        history: ``{"loss": [...], "accuracy": [...], "val_loss": [...], ...}``,
            one value per completed epoch.
        epoch: the indices of the completed epochs.
        interrupted: ``True`` when ``fit`` was stopped by Ctrl-C.
    """

    def __init__(self) -> None:
        super().__init__()
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []
        self.interrupted = False

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))

    def plot(self, path: Any = None, metrics: list[str] | tuple[str, ...] | str | None = None) -> Any:
        """Draw the loss and metric curves, one panel per metric, training and validation together.

        Needs matplotlib (``pip install "framework[plot]"``); it is imported
        only here, and only its object API is used (no ``pyplot``, no GUI).

        Args:
            path: where to save the figure (a ``.png`` path); default ``None``
                saves nothing and only returns the figure.
            metrics: the names to draw (``"loss"``, ``"accuracy"``, ...; a
                ``val_`` curve is drawn beside each name that has one);
                default ``None`` draws every recorded training key.

        Returns:
            The ``matplotlib.figure.Figure``.

        Raises:
            ImportError: when matplotlib is not installed (names the ``plot`` extra).
            ConfigError: when nothing was recorded or a requested name is unknown.
        """
        try:
            from matplotlib.figure import Figure
            from matplotlib.ticker import MaxNLocator
        except ImportError as exc:
            raise ImportError(
                'History.plot needs matplotlib: pip install "framework[plot]" (or: pip install matplotlib)'
            ) from exc
        if not self.history:
            raise ConfigError("History.plot: nothing recorded yet; call fit() first")
        if metrics is None:
            names = [key for key in self.history if not key.startswith("val_")]
            names.sort(key=lambda key: key != "loss")
        else:
            names = [metrics] if isinstance(metrics, str) else list(metrics)
            unknown = [name for name in names if name not in self.history]
            if unknown or not names:
                raise ConfigError(
                    f"History.plot: metrics: unknown name(s) {unknown or names!r}; "
                    f"recorded: {sorted(self.history)}"
                )
        figure = Figure(figsize=(4.5 * len(names), 3.5), layout="constrained")
        for ax, name in zip(figure.subplots(1, len(names), squeeze=False)[0], names):
            for key, label in ((name, "train"), (f"val_{name}", "validation")):
                if key in self.history:
                    values = self.history[key]
                    start = self.epoch[0] if len(self.epoch) == len(values) else 0
                    epochs = np.arange(start + 1, start + len(values) + 1)
                    ax.plot(epochs, self.history[key], marker="o", markersize=3, label=label)
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_title(name)
            ax.grid(alpha=0.3)
            ax.legend()
        if path is not None:
            figure.savefig(path, dpi=100)
        return figure

    def __repr__(self) -> str:
        return f"History(epochs={len(self.epoch)}, keys={sorted(self.history)})"


def _resolve_mode(monitor: str, mode: str, owner: str) -> str:
    if mode not in ("auto", "min", "max"):
        raise ConfigError(f"{owner}: mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode != "auto":
        return mode
    name = monitor.removeprefix("val_")
    return "max" if any(k in name for k in ("acc", "auc", "precision", "recall", "f1")) else "min"


class _Monitor(Callback):
    """Shared logic of callbacks that watch one logged quantity."""

    def __init__(self, monitor: str, mode: str, min_delta: float) -> None:
        super().__init__()
        if not isinstance(monitor, str) or not monitor:
            raise ConfigError(
                f"{type(self).__name__}: monitor must be a log key such as 'val_loss', got {monitor!r}"
            )
        if min_delta < 0:
            raise ConfigError(f"{type(self).__name__}: min_delta must be >= 0, got {min_delta}")
        self.monitor = monitor
        self.mode = _resolve_mode(monitor, mode, type(self).__name__)
        self.min_delta = float(min_delta)
        self.best = math.inf if self.mode == "min" else -math.inf

    def _current(self, logs: Logs | None) -> float | None:
        value = (logs or {}).get(self.monitor)
        if value is None:
            warnings.warn(
                f"{type(self).__name__}: the monitored quantity {self.monitor!r} is not in the logs; "
                f"available: {sorted(logs or {})}",
                RuntimeWarning,
                stacklevel=3,
            )
            return None
        return float(value)

    def _improved(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta


class EarlyStopping(_Monitor):
    """Stops training when ``monitor`` has not improved for ``patience`` epochs.

    Args:
        monitor: the log key to watch (default ``"val_loss"``).
        min_delta: the smallest change that counts as an improvement.
        patience: epochs without improvement before stopping.
        mode: ``"min"``, ``"max"`` or ``"auto"`` (max for accuracy-like keys).
        restore_best_weights: at the end of training, load the parameters and
            buffers of the best epoch back into the model.
        baseline: training stops if the quantity does not beat it within
            ``patience`` epochs.
        start_from_epoch: epochs to wait before monitoring.
        verbose: print a line when stopping.

    Attributes:
        stopped_epoch: the epoch training stopped at (0 if it did not).
        best_epoch: the epoch of the best value.
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
        if not isinstance(patience, int) or patience < 0:
            raise ConfigError(f"EarlyStopping: patience must be an integer >= 0, got {patience!r}")
        self.patience = patience
        self.restore_best_weights = bool(restore_best_weights)
        self.baseline = baseline
        self.start_from_epoch = start_from_epoch
        self.verbose = verbose
        self.wait = 0
        self.stopped_epoch = 0
        self.best_epoch = 0
        self.best_weights: dict[str, np.ndarray] | None = None

    def on_train_begin(self, logs: Logs | None = None) -> None:
        self.wait = 0
        self.stopped_epoch = 0
        self.best_epoch = 0
        self.best_weights = None
        self.best = math.inf if self.mode == "min" else -math.inf
        if self.baseline is not None:
            self.best = float(self.baseline)

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        if epoch < self.start_from_epoch:
            return
        value = self._current(logs)
        if value is None:
            return
        self.wait += 1
        if self._improved(value):
            self.best = value
            self.best_epoch = epoch
            self.wait = 0
            if self.restore_best_weights:
                self.best_weights = {k: np.array(v, copy=True) for k, v in self.model.state_dict().items()}
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
            if self.verbose:
                print(f"Restored the weights of epoch {self.best_epoch + 1}")


class ModelCheckpoint(_Monitor):
    """Saves the model (or its weights) after each epoch, or only when ``monitor`` improves.

    Args:
        filepath: the file to write; may contain ``{epoch}`` and log keys as
            format fields, e.g. ``"ckpt-{epoch:02d}-{val_loss:.3f}.h5"``
            (``epoch`` counts from 1).
        monitor: the log key deciding "best".
        save_best_only: write only when the monitored value improves.
        save_weights_only: call ``model.save_weights`` instead of ``model.save``.
        mode: ``"min"``, ``"max"`` or ``"auto"``.
        verbose: print a line at each save.
    """

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
        self.filepath = str(filepath)
        self.save_best_only = bool(save_best_only)
        self.save_weights_only = bool(save_weights_only)
        self.verbose = verbose
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
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(
                f"ModelCheckpoint: cannot format filepath {self.filepath!r} with epoch and logs "
                f"{sorted(logs)}: {exc}"
            ) from exc
        if self.save_weights_only:
            self.model.save_weights(path)
        else:
            self.model.save(path)
        self.saved.append(path)
        if self.verbose:
            print(f"Epoch {epoch + 1}: saved {'weights' if self.save_weights_only else 'model'} to {path}")


def _set_lr(optimizer: Any, value: float, owner: str) -> None:
    if callable(optimizer.learning_rate):
        raise ConfigError(
            f"{owner}: the optimizer's learning rate is a schedule ({optimizer.learning_rate!r}); "
            "a callback cannot also change it"
        )
    optimizer.learning_rate = float(value)


class ReduceLROnPlateau(_Monitor):
    """Multiplies the learning rate by ``factor`` when ``monitor`` stops improving.

    Args:
        monitor: the log key to watch.
        factor: the multiplier, in ``(0, 1)``.
        patience: epochs without improvement before reducing.
        mode: ``"min"``, ``"max"`` or ``"auto"``.
        min_delta: the smallest change that counts as an improvement.
        cooldown: epochs to wait after a reduction before watching again.
        min_lr: the learning rate never goes below it.
        verbose: print a line at each reduction.
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
        if not 0.0 < factor < 1.0:
            raise ConfigError(f"ReduceLROnPlateau: factor must be in (0, 1), got {factor!r}")
        self.factor = float(factor)
        self.patience = int(patience)
        self.cooldown = int(cooldown)
        self.min_lr = float(min_lr)
        self.verbose = verbose
        self.wait = 0
        self.cooldown_counter = 0

    def on_train_begin(self, logs: Logs | None = None) -> None:
        self.wait = 0
        self.cooldown_counter = 0
        self.best = math.inf if self.mode == "min" else -math.inf

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        optimizer = self.model.optimizer
        if logs is not None:
            logs["lr"] = optimizer.lr
        value = self._current(logs)
        if value is None:
            return
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._improved(value):
            self.best = value
            self.wait = 0
            return
        if self.cooldown_counter > 0:
            return
        self.wait += 1
        if self.wait >= self.patience:
            old = optimizer.lr
            new = max(old * self.factor, self.min_lr)
            if new < old:
                _set_lr(optimizer, new, "ReduceLROnPlateau")
                if self.verbose:
                    print(f"Epoch {epoch + 1}: ReduceLROnPlateau reduced the learning rate to {new:.3g}")
            self.cooldown_counter = self.cooldown
            self.wait = 0


class LearningRateScheduler(Callback):
    """Sets the learning rate at each epoch's start to ``schedule(epoch, lr)``.

    Args:
        schedule: a function ``(epoch, current_lr) -> new_lr`` (epoch 0-based).
        verbose: print the new rate each epoch.
    """

    def __init__(self, schedule: Callable[[int, float], float], verbose: int = 0) -> None:
        super().__init__()
        if not callable(schedule):
            raise ConfigError(f"LearningRateScheduler: schedule must be callable, got {schedule!r}")
        self.schedule = schedule
        self.verbose = verbose

    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None:
        optimizer = self.model.optimizer
        new = self.schedule(epoch, optimizer.lr)
        if not isinstance(new, (int, float, np.floating)) or not math.isfinite(new) or new < 0:
            raise ConfigError(
                f"LearningRateScheduler: schedule returned {new!r}; expected a finite float >= 0"
            )
        _set_lr(optimizer, float(new), "LearningRateScheduler")
        if self.verbose:
            print(f"Epoch {epoch + 1}: learning rate {float(new):.3g}")

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        if logs is not None:
            logs["lr"] = self.model.optimizer.lr


class TerminateOnNaN(Callback):
    """Stops training at the first batch whose loss is NaN or infinite."""

    def __init__(self) -> None:
        super().__init__()
        self.stopped_batch: int | None = None

    def on_train_batch_end(self, batch: int, logs: Logs | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            self.stopped_batch = batch
            print(f"Batch {batch}: invalid loss {loss}, terminating training")
            self.model.stop_training = True


class CSVLogger(Callback):
    """Writes one CSV row per epoch: ``epoch`` then the log keys.

    Args:
        filename: the CSV file.
        separator: the field separator.
        append: append to an existing file instead of overwriting it.
    """

    def __init__(self, filename: Any, separator: str = ",", append: bool = False) -> None:
        super().__init__()
        self.filename = str(filename)
        self.separator = separator
        self.append = bool(append)
        self.keys: list[str] | None = None
        self._file: Any = None
        self._writer: Any = None

    def on_train_begin(self, logs: Logs | None = None) -> None:
        import os

        exists = self.append and os.path.exists(self.filename) and os.path.getsize(self.filename) > 0
        self._file = open(self.filename, "a" if self.append else "w", newline="")
        self.keys = None
        self._has_header = exists

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        logs = logs or {}
        if self.keys is None:
            self.keys = sorted(logs)
            self._writer = csv.DictWriter(
                self._file, fieldnames=["epoch", *self.keys], delimiter=self.separator
            )
            if not self._has_header:
                self._writer.writeheader()
        row = {"epoch": epoch, **{k: logs.get(k, "NA") for k in self.keys}}
        self._writer.writerow(row)
        self._file.flush()

    def on_train_end(self, logs: Logs | None = None) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class LambdaCallback(Callback):
    """A callback made of functions: ``LambdaCallback(on_epoch_end=lambda epoch, logs: ...)``.

    Args: any hook name as a keyword (``on_train_begin``, ``on_epoch_end``,
    ``on_batch_end``, ``on_train_batch_end``, ...), each a function taking the
    hook's arguments.
    """

    _HOOKS = (
        "on_train_begin",
        "on_train_end",
        "on_epoch_begin",
        "on_epoch_end",
        "on_train_batch_begin",
        "on_train_batch_end",
        "on_batch_begin",
        "on_batch_end",
        "on_test_begin",
        "on_test_end",
        "on_predict_begin",
        "on_predict_end",
    )

    def __init__(self, **hooks: Callable[..., Any]) -> None:
        super().__init__()
        unknown = sorted(set(hooks) - set(self._HOOKS))
        if unknown:
            raise ConfigError(f"LambdaCallback: unknown hooks {unknown}; known: {list(self._HOOKS)}")
        for name, fn in hooks.items():
            if fn is not None:
                if not callable(fn):
                    raise ConfigError(f"LambdaCallback: {name} must be callable, got {fn!r}")
                setattr(self, name, fn)


class ProgbarLogger(Callback):
    """Progress output of ``fit``: a bar per epoch (``verbose=1``) or one line per epoch (2).

    The bar is tqdm's, or a plain one-line text bar where tqdm is not installed.

    The bar shows the running loss and metrics; at the epoch's end it shows
    the epoch's results, validation included, and the epoch time.
    """

    def __init__(self, verbose: int = 1, file: Any = None) -> None:
        super().__init__()
        self.verbose = verbose
        self.file = file
        self._bar: Any = None
        self._start = 0.0
        self._last = 0.0

    def _out(self) -> Any:
        return self.file if self.file is not None else sys.stdout

    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None:
        self._start = time.perf_counter()
        self._epoch_label = f"Epoch {epoch + 1}/{self.params.get('epochs', '?')}"
        if self.verbose == 1:
            self._bar = _progress_bar(self.params.get("steps"), self._epoch_label, self._out())
            self._last = 0.0

    def on_train_batch_end(self, batch: int, logs: Logs | None = None) -> None:
        if self._bar is None:
            return
        now = time.perf_counter()
        if logs and now - self._last > 0.2:
            self._bar.set_postfix_str(_format(logs), refresh=False)
            self._last = now
        self._bar.update(1)

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        elapsed = time.perf_counter() - self._start
        text = f"{elapsed:.2f}s - {_format(logs or {})}"
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=True)
            self._bar.close()
            self._bar = None
        elif self.verbose == 2:
            print(f"{self._epoch_label} - {text}", file=self._out(), flush=True)

    def on_train_end(self, logs: Logs | None = None) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _progress_bar(total: int | None, label: str, file: Any) -> Any:
    """A tqdm bar, or :class:`_TextBar` where tqdm is not installed."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _TextBar(total, label, file)
    return tqdm(total=total, desc=label, unit="batch", file=file, leave=True, dynamic_ncols=True)


class _TextBar:
    """The part of tqdm's interface ``ProgbarLogger`` uses, drawn with ``\\r`` on one line."""

    def __init__(self, total: int | None, label: str, file: Any) -> None:
        self.total, self.label, self.file = total, label, file
        self.n = 0
        self.postfix = ""
        self._width = 0

    def _draw(self) -> None:
        if self.total:
            filled = 30 * self.n // self.total
            done = f"[{'=' * filled}{'.' * (30 - filled)}] {self.n}/{self.total}"
        else:
            done = f"{self.n} batches"
        tail = f" - {self.postfix}" if self.postfix else ""
        line = f"{self.label} {done}{tail}"
        self._width = max(self._width, len(line))
        self.file.write("\r" + line.ljust(self._width))
        self.file.flush()

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self.postfix = text
        if refresh:
            self._draw()

    def update(self, n: int = 1) -> None:
        self.n += n
        self._draw()

    def close(self) -> None:
        self._draw()
        self.file.write("\n")
        self.file.flush()


def _format(logs: Logs) -> str:
    return " - ".join(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}" for k, v in logs.items())
