"""Small built-in callbacks: :class:`TerminateOnNaN`, :class:`CSVLogger`, :class:`LambdaCallback`."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from framework.errors import ConfigError
from framework.training.callbacks.arguments import check_bool, check_path
from framework.training.callbacks.base import Callback, Logs, is_scalar

__all__ = ["CSVLogger", "LambdaCallback", "TerminateOnNaN"]


class TerminateOnNaN(Callback):
    """Stops training at the first batch whose loss is NaN or infinite.

    The batch logs carry the running mean of the epoch's losses, which turns
    NaN (or infinite) at the first NaN (or infinite) batch loss and stays so.

    Attributes:
        stopped_batch: the index (in its epoch) of the batch that stopped
            training, ``None`` while none did.
    """

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
    """Writes one CSV row per epoch: ``epoch`` then the log keys (sorted).

    An array value (``confusion_matrix``) is written as one field holding
    its JSON list, ``[[3.0, 1.0], [0.0, 4.0]]`` (read back with ``json.loads``).

    With ``append=True`` the rows go after those of an existing file, under
    its header (written once): its columns are kept, a key the file has no
    column for is left out with a warning, a column the logs lack is ``NA``.

    Args:
        filename: the CSV file (a ``str`` or ``os.PathLike``).
        separator: the field separator, one character (default ``","``).
        append: append to an existing file instead of overwriting it
            (``True`` or ``False``: a string such as ``"no"`` is refused).

    Raises:
        ConfigError: a filename that is not a path (``None``), a separator
            that is not one character, a non-bool ``append``; at
            ``on_train_begin``, a file that cannot be opened (a missing
            folder, a directory), or a ``separator`` changed since to a bad one.
    """

    main_process_only = True  # data-parallel fit: rank 0 alone writes the files

    def __init__(self, filename: Any, separator: str = ",", append: bool = False) -> None:
        super().__init__()
        self.filename = check_path("CSVLogger", "filename", filename)
        self.separator = _check_separator(separator)
        self.append = check_bool("CSVLogger", "append", append)
        self.keys: list[str] | None = None
        self._file: Any = None
        self._writer: Any = None
        self._header: list[str] | None = None

    def on_train_begin(self, logs: Logs | None = None) -> None:
        _check_separator(self.separator)  # the attribute may have been changed since __init__
        self._header = None
        try:
            if self.append and os.path.exists(self.filename) and os.path.getsize(self.filename) > 0:
                with open(self.filename, newline="") as f:
                    self._header = next(csv.reader(f, delimiter=self.separator), None)
            self._file = open(self.filename, "a" if self.append else "w", newline="")
        except OSError as exc:
            raise ConfigError(
                f"CSVLogger: cannot open filename {self.filename!r} for writing: "
                f"{exc.strerror or exc}; give a file in an existing, writable folder"
            ) from exc
        self.keys = None

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        logs = logs or {}
        if self._file is None:  # used outside fit: open as fit would
            self.on_train_begin()
        if self.keys is None:
            if self._header:
                self.keys = [k for k in self._header if k != "epoch"]
                extra = sorted(set(logs) - set(self.keys))
                if extra:
                    warnings.warn(
                        f"CSVLogger: {self.filename} has no column for {extra}; appending without them",
                        RuntimeWarning,
                        stacklevel=2,
                    )
            else:
                self.keys = sorted(logs)
            self._writer = csv.DictWriter(
                self._file,
                fieldnames=["epoch", *self.keys],
                delimiter=self.separator,
                extrasaction="ignore",
            )
            if not self._header:
                self._writer.writeheader()
        self._writer.writerow({"epoch": epoch, **{k: _cell(logs.get(k, "NA")) for k in self.keys}})
        self._file.flush()

    def on_train_end(self, logs: Logs | None = None) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _check_separator(value: Any) -> str:
    """``value`` if it is a one-character string the ``csv`` module takes as a delimiter."""
    if not isinstance(value, str) or len(value) != 1:
        raise ConfigError(f"CSVLogger: separator must be a one-character string such as ',', got {value!r}")
    try:
        csv.writer(io.StringIO(), delimiter=value)
    except (csv.Error, TypeError, ValueError) as exc:
        raise ConfigError(f"CSVLogger: separator {value!r} cannot delimit CSV fields: {exc}") from exc
    return value


def _cell(value: Any) -> Any:
    """A log value as a CSV field: a number as it is, an array as one JSON list (``[[3, 1], [0, 4]]``)."""
    if is_scalar(value):
        return value
    return json.dumps(np.asarray(value).tolist())


class LambdaCallback(Callback):
    """A callback made of functions: ``LambdaCallback(on_epoch_end=lambda epoch, logs: ...)``.

    Args: any hook name as a keyword (``on_train_begin``, ``on_epoch_end``,
    ``on_batch_end``, ``on_train_batch_end``, ``on_test_begin``, ...), each a
    function taking the hook's arguments.
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
        "on_test_batch_begin",
        "on_test_batch_end",
        "on_predict_begin",
        "on_predict_end",
        "on_predict_batch_begin",
        "on_predict_batch_end",
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
