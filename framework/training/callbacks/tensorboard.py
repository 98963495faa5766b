"""The :class:`TensorBoard` callback: event files for TensorBoard, written with ``tensorboardX``."""

from __future__ import annotations

import itertools
import numbers
import os
import time
from types import SimpleNamespace
from typing import Any

import numpy as np

from framework.errors import ConfigError
from framework.training.callbacks.arguments import check_count, check_path
from framework.training.callbacks.base import Callback, Logs, is_scalar

__all__ = ["TensorBoard"]

_FILE_NUMBERS = itertools.count()
"""Numbers the event files this process opens, so no two ever share a name."""


def _tensorboardx() -> SimpleNamespace:
    """The parts of ``tensorboardX`` the event files are written with, imported on first use."""
    try:
        import tensorboardX  # noqa: F401  # first: its submodules may be cached while it is not
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.summary import histogram, scalar
    except ImportError as exc:
        raise ImportError(
            'TensorBoard needs tensorboardX: pip install "framework[tensorboard]" '
            "(or: pip install tensorboardX)"
        ) from exc
    return SimpleNamespace(EventsWriter=EventsWriter, Event=Event, histogram=histogram, scalar=scalar)


def _default_bins() -> list[float]:
    """``tensorboardX.SummaryWriter``'s (and TensorFlow's) histogram bin edges: +-1e-12 * 1.1**k and 0."""
    edges = []
    value = 1e-12
    while value < 1e20:
        edges.append(value)
        value *= 1.1
    return [-v for v in reversed(edges)] + [0.0] + edges


class _EventFile:
    """One event file in ``log_dir``, written synchronously (no queue, no thread).

    ``tensorboardX.SummaryWriter`` hands events to a background thread, so its
    ``flush()`` does not wait for them: an epoch's scalars could still be in
    its queue after the flush, and are lost if ``fit`` then raises. Its file
    name, ``events.out.tfevents.<seconds>.<host>``, is also the same for two
    writers opened in one second, and the second truncates the first's file
    (two ``fit`` calls into one log directory). Here each event is written
    when added; the name carries the process id and a number unique in it.
    """

    def __init__(self, log_dir: str) -> None:
        self._tbx = _tensorboardx()
        os.makedirs(log_dir, exist_ok=True)
        suffix = f".{os.getpid()}.{next(_FILE_NUMBERS)}"
        self._events = self._tbx.EventsWriter(os.path.join(log_dir, "events"), suffix)
        self._bins: list[float] | None = None
        self.closed = False

    def _add(self, summary: Any, step: int) -> None:
        self._events.write_event(self._tbx.Event(summary=summary, step=int(step), wall_time=time.time()))

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self._add(self._tbx.scalar(tag, value), step)

    def add_histogram(self, tag: str, values: np.ndarray, step: int) -> None:
        if self._bins is None:
            self._bins = _default_bins()
        self._add(self._tbx.histogram(tag, values, self._bins), step)

    def flush(self) -> None:
        """Write everything added so far to the disk."""
        if not self.closed:
            self._events.flush()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._events.close()


def _summary_writer() -> Any:
    """The class of the event-file writers: ``writer(log_dir)``; raises ImportError without tensorboardX."""
    _tensorboardx()
    return _EventFile


class TensorBoard(Callback):
    """Writes TensorBoard event files: scalars per epoch (and per batch) and weight histograms.

    As Keras does, training values go to ``<log_dir>/train`` and validation
    values (the ``val_`` keys, without the prefix) to ``<log_dir>/validation``,
    under the tags ``epoch_<key>`` (step: the epoch index) and
    ``batch_<key>`` (step: the number of batches since epoch 0, the running
    means of the epoch so far; a ``fit`` resumed at ``initial_epoch`` goes on
    from ``initial_epoch * steps``, so its points follow the earlier run's). A
    metric whose value is an array (``confusion_matrix``) has no scalar and is
    not written. View them with ``tensorboard --logdir <log_dir>``.

    Each ``fit`` writes new event files (several fits may share ``log_dir``).
    An epoch's events are on disk when its ``on_epoch_end`` returns, so they
    survive a later exception; the files are closed when training ends
    (Ctrl-C included), or, after an exception, at the next ``fit`` with this
    callback or when it is garbage-collected.

    Needs the ``tensorboard`` extra (``pip install "framework[tensorboard]"``,
    which installs ``tensorboardX``); it is imported when training starts.

    Args:
        log_dir: the directory of the event files (created if missing); a
            ``str`` or ``os.PathLike``, not ``None`` or empty.
        histogram_freq: write a histogram of every parameter (tag: its dotted
            name, as in ``state_dict``) every ``histogram_freq`` epochs; ``0``
            writes none. An integer (NumPy's too).
        update_freq: ``"epoch"`` (scalars once per epoch), ``"batch"`` (also
            after every batch) or an integer ``n`` (also every ``n`` batches).

    Raises:
        ConfigError: a ``log_dir`` that is not a path, a ``histogram_freq``
            that is not an integer ``>= 0`` or an unknown ``update_freq``.
        ImportError: at ``on_train_begin``, when tensorboardX is not installed
            (the message names the extra).
    """

    main_process_only = True  # data-parallel fit: rank 0 alone writes the files

    def __init__(
        self, log_dir: Any = "logs", histogram_freq: int = 0, update_freq: str | int = "epoch"
    ) -> None:
        super().__init__()
        histogram_freq = check_count("TensorBoard", "histogram_freq", histogram_freq)
        if isinstance(update_freq, str) and update_freq in ("epoch", "batch"):
            update_freq = 1 if update_freq == "batch" else "epoch"
        elif (
            isinstance(update_freq, numbers.Integral)
            and not isinstance(update_freq, bool)
            and update_freq >= 1
        ):
            update_freq = int(update_freq)
        else:
            raise ConfigError(
                f"TensorBoard: update_freq must be 'epoch', 'batch' or an integer >= 1, got {update_freq!r}"
            )
        self.log_dir = check_path("TensorBoard", "log_dir", log_dir)
        self.histogram_freq = histogram_freq
        self.update_freq: str | int = update_freq
        self.batch_hooks = update_freq != "epoch"
        self._writers: dict[str, Any] = {}
        self._step = 0
        self._first_epoch = True

    def _writer(self, name: str) -> Any:
        writer = self._writers.get(name)
        if writer is None:
            writer = self._writers[name] = _summary_writer()(os.path.join(self.log_dir, name))
        return writer

    def _close(self) -> None:
        writers, self._writers = self._writers, {}
        for writer in writers.values():
            writer.close()

    def on_train_begin(self, logs: Logs | None = None) -> None:
        _summary_writer()  # fail before the first epoch, not after it
        self._close()  # the files of an earlier fit that ended with an exception
        self._first_epoch = True

    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None:
        if self._first_epoch:
            self._first_epoch = False
            steps = self.params.get("steps")
            if isinstance(steps, int) and steps > 0:
                self._step = epoch * steps
            elif epoch == 0:
                self._step = 0
            # else (batches of unknown number, resumed): go on from this callback's last fit

    def on_train_batch_end(self, batch: int, logs: Logs | None = None) -> None:
        self._step += 1
        if self.update_freq == "epoch" or self._step % int(self.update_freq):
            return
        writer = self._writer("train")
        for key, value in (logs or {}).items():
            if is_scalar(value):
                writer.add_scalar(f"batch_{key}", float(value), self._step)

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        for key, value in (logs or {}).items():
            if not is_scalar(value):
                continue
            name, tag = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            self._writer(name).add_scalar(f"epoch_{tag}", float(value), epoch)
        if self.histogram_freq and epoch % self.histogram_freq == 0:
            writer = self._writer("train")
            for name, param in self.model.named_parameters():
                writer.add_histogram(name, np.asarray(param.data, dtype=np.float64), epoch)
        for writer in self._writers.values():
            writer.flush()

    def on_train_end(self, logs: Logs | None = None) -> None:
        self._close()
