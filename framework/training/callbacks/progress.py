"""Progress output of ``fit``: :class:`ProgbarLogger`, and what ``verbose="auto"`` means."""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np

from framework.errors import ConfigError
from framework.training.callbacks.arguments import check_verbose
from framework.training.callbacks.base import Callback, Logs, is_scalar

__all__ = ["ProgbarLogger", "format_logs", "format_value", "resolve_verbose"]


def is_interactive(file: Any) -> bool:
    """Whether ``file`` is a terminal (or a Jupyter kernel's output), where a live bar is readable."""
    try:
        if file.isatty():
            return True
    except (AttributeError, ValueError, OSError):
        return False
    return "ipykernel" in sys.modules and file in (sys.stdout, sys.stderr)


def resolve_verbose(verbose: Any, owner: str, auto: int | None = None) -> int:
    """``verbose`` as 0, 1 or 2; ``"auto"`` is ``auto`` if given, else 1 on a terminal and 2 otherwise.

    Raises:
        ConfigError: any other value, naming ``owner``.
    """
    if verbose == "auto":
        if auto is not None:
            return auto
        return 1 if is_interactive(sys.stdout) else 2
    if isinstance(verbose, bool) or verbose not in (0, 1, 2):
        raise ConfigError(f"{owner}: verbose must be 'auto', 0, 1 or 2, got {verbose!r}")
    return int(verbose)


class ProgbarLogger(Callback):
    """Progress output of ``fit``: a bar per epoch (``verbose=1``) or one line per epoch (2).

    The bar is tqdm's, or a plain one-line text bar where tqdm is not installed.
    It is drawn only on a terminal (or in a notebook): written to a file or a
    pipe (a CI log, ``nohup``), ``verbose=1`` prints one line per epoch,
    ``Epoch 3/10 - 47/47 - 0.52s - loss: ...``, instead of bar redraws.

    The bar shows the running loss and metrics; at the epoch's end it shows
    the epoch's results, validation included, and the epoch time. Values are
    printed as Keras prints them (:func:`format_value`: four decimals, or
    ``1.2345e-05`` for a magnitude at or below 1e-3). A metric
    whose value is an array (``confusion_matrix``) is not printed; ``History``
    keeps it.
    """

    def __init__(self, verbose: int = 1, file: Any = None) -> None:
        super().__init__()
        self.verbose = check_verbose("ProgbarLogger", verbose)
        self.file = file
        self._bar: Any = None
        self._start = 0.0
        self._last = 0.0
        self._count = 0
        # A live bar only where it is readable; a log file gets one line per epoch.
        self.live = verbose == 1 and is_interactive(self._out())
        self.batch_hooks = self.live

    def _out(self) -> Any:
        return self.file if self.file is not None else sys.stdout

    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None:
        self._start = time.perf_counter()
        self._epoch_label = f"Epoch {epoch + 1}/{self.params.get('epochs', '?')}"
        if self.live:
            self._bar = _progress_bar(self.params.get("steps"), self._epoch_label, self._out())
            self._last = 0.0

    def on_train_batch_end(self, batch: int, logs: Logs | None = None) -> None:
        if self._bar is None:
            return
        now = time.perf_counter()
        if logs and now - self._last > 0.2:
            self._bar.set_postfix_str(format_logs(logs), refresh=False)
            self._last = now
        self._bar.update(1)

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        elapsed = time.perf_counter() - self._start
        text = f"{elapsed:.2f}s - {format_logs(logs or {})}"
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=True)
            self._bar.close()
            self._bar = None
        elif self.verbose == 2:
            print(f"{self._epoch_label} - {text}", file=self._out(), flush=True)
        elif self.verbose == 1:
            steps = self.params.get("steps")
            done = f"{steps}/{steps}" if steps else "done"
            print(f"{self._epoch_label} - {done} - {text}", file=self._out(), flush=True)

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


def format_value(value: Any) -> str:
    """One log value as Keras's progress bar prints it: ``0.1234``, or ``1.2345e-05`` at or below 1e-3.

    A loss of ``3e-5`` would read ``0.0000`` with four decimals, as if it were zero.
    Integers print as they are.
    """
    if isinstance(value, (bool, np.bool_, int, np.integer)):
        return str(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{number:.4f}" if abs(number) > 1e-3 else f"{number:.4e}"


def format_logs(logs: Logs) -> str:
    """``loss: 0.1234 - accuracy: 0.5000``; an array value (``confusion_matrix``) is left out of the line."""
    return " - ".join(f"{k}: {format_value(v)}" for k, v in logs.items() if is_scalar(v))
