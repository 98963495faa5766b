"""The callback protocol: :class:`Callback` (every Keras hook), :class:`CallbackList`
(how the loops call them) and :class:`History` (added to every ``fit``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from framework.errors import ConfigError
from framework.training.callbacks.plotting import check_plot_metrics, check_plot_path

__all__ = ["Callback", "CallbackList", "FitCallbacks", "History", "Logs", "is_scalar"]

Logs = dict[str, Any]


def is_scalar(value: Any) -> bool:
    """Whether a log value is one number (``loss``, ``accuracy``), not an array (``confusion_matrix``)."""
    return np.ndim(value) == 0


class Callback:
    """Base class: every hook does nothing; override the ones you need.

    Attributes:
        main_process_only: ``True`` for a callback that writes files or
            prints (``ModelCheckpoint``, ``CSVLogger``, ``TensorBoard``):
            under data-parallel ``fit`` on several MPI ranks it runs on rank 0
            alone. ``False`` (the default) runs it on every rank, with the same
            epoch logs, so its decisions (``EarlyStopping``) agree.
        writes_model: ``True`` for a callback that saves the model at an
            epoch's end (``ModelCheckpoint``): its ``on_epoch_end`` runs after
            every other callback's, so the file holds their updates (a
            learning rate ``ReduceLROnPlateau`` just lowered, their states).
    """

    main_process_only = False
    writes_model = False

    def __init__(self) -> None:
        self.model: Any = None
        self.params: dict[str, Any] = {}

    def set_model(self, model: Any) -> None:
        self.model = model

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint written during or after ``fit`` keeps of this callback, to resume it.

        Values are numbers, strings or ``{name: array}`` dicts of the model's
        state entries. The default, ``{}``, keeps nothing (a stateless callback).
        """
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take back what :meth:`state_dict` gave.

        The first ``fit(initial_epoch=model.epoch)`` after ``load_model`` calls it,
        after ``on_train_begin``, on the callback of the same class (and rank
        among callbacks of that class) as when the checkpoint was written.
        """

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


_TRAIN_BATCH = ("on_train_batch_begin", "on_train_batch_end", "on_batch_begin", "on_batch_end")
_TEST_BATCH = ("on_test_batch_begin", "on_test_batch_end")
_PREDICT_BATCH = ("on_predict_batch_begin", "on_predict_batch_end")


def _uses(cb: Callback, hooks: tuple[str, ...]) -> bool:
    """Whether ``cb`` overrides (in its class, or on the instance as LambdaCallback does) any of ``hooks``.

    A callback may also say so itself with a ``batch_hooks`` attribute (``TensorBoard``
    with ``update_freq="epoch"`` sets it ``False``), which wins for the training hooks.
    """
    if hooks is _TRAIN_BATCH and isinstance(getattr(cb, "batch_hooks", None), bool):
        return cb.batch_hooks  # type: ignore[attr-defined]
    cls, own = type(cb), vars(cb)
    return any(name in own or getattr(cls, name) is not getattr(Callback, name) for name in hooks)


class CallbackList:
    """Calls each hook on every callback, in order; batch hooks only on those that use them.

    Args:
        callbacks: ``Callback`` instances, or a single one (not wrapped in a list).
        model: set as each callback's ``model``.

    Raises:
        ConfigError: an element that is not a ``Callback``.
    """

    def __init__(self, callbacks: Any, model: Any = None) -> None:
        callbacks = as_callback_list(callbacks)
        self.callbacks = callbacks
        self._train_batch = [cb for cb in callbacks if _uses(cb, _TRAIN_BATCH)]
        self._test_batch = [cb for cb in callbacks if _uses(cb, _TEST_BATCH)]
        self._predict_batch = [cb for cb in callbacks if _uses(cb, _PREDICT_BATCH)]
        self.has_batch_hooks = bool(self._train_batch)
        self.has_test_batch_hooks = bool(self._test_batch)
        self.has_predict_batch_hooks = bool(self._predict_batch)
        if model is not None:
            for cb in callbacks:
                cb.set_model(model)

    def set_params(self, params: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.set_params(params)

    def _each(self, name: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, name)(*args)

    def on_train_begin(self, logs: Logs | None = None) -> None:
        self._each("on_train_begin", logs)

    def on_train_end(self, logs: Logs | None = None) -> None:
        self._each("on_train_end", logs)

    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None:
        self._each("on_epoch_begin", epoch, logs)

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        # the callbacks that write the model (ModelCheckpoint) come last, so a checkpoint holds
        # the epoch's learning-rate changes and every other callback's state after this epoch
        for cb in sorted(self.callbacks, key=lambda c: bool(getattr(c, "writes_model", False))):
            cb.on_epoch_end(epoch, logs)

    def on_train_batch_begin(self, batch: int, logs: Logs | None = None) -> None:
        for cb in self._train_batch:
            cb.on_train_batch_begin(batch, logs)

    def on_train_batch_end(self, batch: int, logs: Logs | None = None) -> None:
        for cb in self._train_batch:
            cb.on_train_batch_end(batch, logs)

    def on_test_begin(self, logs: Logs | None = None) -> None:
        self._each("on_test_begin", logs)

    def on_test_end(self, logs: Logs | None = None) -> None:
        self._each("on_test_end", logs)

    def on_test_batch_begin(self, batch: int, logs: Logs | None = None) -> None:
        for cb in self._test_batch:
            cb.on_test_batch_begin(batch, logs)

    def on_test_batch_end(self, batch: int, logs: Logs | None = None) -> None:
        for cb in self._test_batch:
            cb.on_test_batch_end(batch, logs)

    def on_predict_begin(self, logs: Logs | None = None) -> None:
        self._each("on_predict_begin", logs)

    def on_predict_end(self, logs: Logs | None = None) -> None:
        self._each("on_predict_end", logs)

    def on_predict_batch_begin(self, batch: int, logs: Logs | None = None) -> None:
        for cb in self._predict_batch:
            cb.on_predict_batch_begin(batch, logs)

    def on_predict_batch_end(self, batch: int, logs: Logs | None = None) -> None:
        for cb in self._predict_batch:
            cb.on_predict_batch_end(batch, logs)


class FitCallbacks(list[Any]):
    """The callbacks of a model's last ``fit`` (``model.fit_callbacks``), whose states checkpoints record.

    A record, not part of the model: a copy of the model (``copy.deepcopy``, a
    pickle, the replicas of ``fit(threads=K)``) gets an empty one.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> FitCallbacks:
        return FitCallbacks()

    def __reduce__(self) -> tuple[Any, ...]:
        return (FitCallbacks, ())


def as_callback_list(callbacks: Any) -> list[Callback]:
    """``callbacks`` as a list: ``None`` -> ``[]``, a single ``Callback`` -> ``[it]``.

    Raises:
        ConfigError: an element (or the argument) that is not a ``Callback``.
    """
    if callbacks is None:
        return []
    if isinstance(callbacks, Callback):
        return [callbacks]
    if not isinstance(callbacks, (list, tuple)):
        raise ConfigError(
            f"callbacks must be a Callback or a list of Callback instances, got {type(callbacks).__name__}"
        )
    for cb in callbacks:
        if not isinstance(cb, Callback):
            raise ConfigError(f"callbacks must be Callback instances, got {type(cb).__name__} {cb!r}")
    return list(callbacks)


class History(Callback):
    """Records each epoch's logs; ``fit`` returns it.

    Attributes:
        history: ``{"loss": [...], "accuracy": [...], "val_loss": [...], ...}``,
            one value per completed epoch: a Python float, or for a
            non-scalar metric (``confusion_matrix``) a copy of the epoch's array.
        epoch: the indices of the completed epochs.
        interrupted: ``True`` when ``fit`` was stopped by Ctrl-C.
    """

    def __init__(self) -> None:
        super().__init__()
        self.history: dict[str, list[Any]] = {}
        self.epoch: list[int] = []
        self.interrupted = False

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            record = float(value) if is_scalar(value) else np.array(value, copy=True)
            self.history.setdefault(key, []).append(record)

    def plot(self, path: Any = None, metrics: list[str] | tuple[str, ...] | str | None = None) -> Any:
        """Draw the loss and metric curves, one panel per metric, training and validation together.

        Needs matplotlib (``pip install "framework[plot]"``); it is imported
        only here, and only its object API is used (no ``pyplot``, no GUI).

        Args:
            path: where to save the figure: a ``str`` or ``os.PathLike``
                whose suffix names the format (``.png``, ``.pdf``, ``.svg``,
                ...), in an existing folder, or a binary file object (which
                receives a PNG); default ``None`` saves nothing and only
                returns the figure. A path without a suffix or naming a
                folder is refused, not written under another name.
            metrics: the name or names to draw (``"loss"``, ``"accuracy"``,
                ...; a ``val_`` curve is drawn beside each name that has
                one); default ``None`` draws every recorded training key
                whose values are numbers (a ``confusion_matrix`` is left out).

        Returns:
            The ``matplotlib.figure.Figure``.

        Raises:
            ImportError: when matplotlib is not installed (names the ``plot`` extra).
            ConfigError: when nothing was recorded, a requested name is
                unknown or holds arrays (a non-scalar metric has no curve),
                ``metrics`` is not a name or list of names, ``path`` is not a
                path, has no suffix or an unknown one, is a folder or lies in a
                missing folder, or the file cannot be written.
        """
        try:
            from matplotlib.figure import Figure
            from matplotlib.ticker import MaxNLocator
        except ImportError as exc:
            raise ImportError(
                'History.plot needs matplotlib: pip install "framework[plot]" (or: pip install matplotlib)'
            ) from exc
        if path is not None:  # checked before drawing; the formats are those matplotlib can write
            from matplotlib.backend_bases import FigureCanvasBase

            path = check_plot_path(path, FigureCanvasBase.get_supported_filetypes())
        if not self.history:
            raise ConfigError("History.plot: nothing recorded yet; call fit() first")
        curves = [key for key, values in self.history.items() if all(map(is_scalar, values))]
        if metrics is None:
            names = [key for key in curves if not key.startswith("val_")]
            names.sort(key=lambda key: key != "loss")
        else:
            names = check_plot_metrics(metrics)
            unknown = [name for name in names if name not in self.history]
            if unknown or not names:
                raise ConfigError(
                    f"History.plot: metrics: unknown name(s) {unknown or names!r}; "
                    f"recorded: {sorted(self.history)}"
                )
            arrays = [name for name in names if name not in curves]
            if arrays:
                raise ConfigError(
                    f"History.plot: metrics: {arrays!r} hold an array per epoch, not a number, so they "
                    f"have no curve; plot one of {sorted(curves)} (read the arrays from history.history)"
                )
        figure = Figure(figsize=(4.5 * len(names), 3.5), layout="constrained")
        for ax, name in zip(figure.subplots(1, len(names), squeeze=False)[0], names):
            for key, label in ((name, "train"), (f"val_{name}", "validation")):
                if key in curves:
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
            try:
                figure.savefig(path, dpi=100)
            except OSError as exc:
                raise ConfigError(f"History.plot: cannot write path {path!r}: {exc}") from exc
        return figure

    def __repr__(self) -> str:
        return f"History(epochs={len(self.epoch)}, keys={sorted(self.history)})"
