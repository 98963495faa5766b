"""The :class:`TensorBoard` callback: event files for TensorBoard, written with ``tensorboardX``."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from framework.errors import ConfigError
from framework.training.callbacks.base import Callback, Logs, is_scalar

__all__ = ["TensorBoard"]


def _summary_writer() -> Any:
    """``tensorboardX.SummaryWriter``, imported on first use."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError as exc:
        raise ImportError(
            'TensorBoard needs tensorboardX: pip install "framework[tensorboard]" '
            "(or: pip install tensorboardX)"
        ) from exc
    return SummaryWriter


class TensorBoard(Callback):
    """Writes TensorBoard event files: scalars per epoch (and per batch) and weight histograms.

    As Keras does, training values go to ``<log_dir>/train`` and validation
    values (the ``val_`` keys, without the prefix) to ``<log_dir>/validation``,
    under the tags ``epoch_<key>`` (step: the epoch index) and
    ``batch_<key>`` (step: the batch count since the start of training, the
    running means of the epoch so far). A metric whose value is an array
    (``confusion_matrix``) has no scalar and is not written. View them with
    ``tensorboard --logdir <log_dir>``.

    Needs the ``tensorboard`` extra (``pip install "framework[tensorboard]"``,
    which installs ``tensorboardX``); it is imported when training starts.

    Args:
        log_dir: the directory of the event files (created if missing).
        histogram_freq: write a histogram of every parameter (tag: its dotted
            name, as in ``state_dict``) every ``histogram_freq`` epochs; ``0``
            writes none.
        update_freq: ``"epoch"`` (scalars once per epoch), ``"batch"`` (also
            after every batch) or an integer ``n`` (also every ``n`` batches).

    Raises:
        ConfigError: a negative ``histogram_freq`` or an unknown ``update_freq``.
        ImportError: at ``on_train_begin``, when tensorboardX is not installed
            (the message names the extra).
    """

    main_process_only = True  # data-parallel fit: rank 0 alone writes the files

    def __init__(
        self, log_dir: Any = "logs", histogram_freq: int = 0, update_freq: str | int = "epoch"
    ) -> None:
        super().__init__()
        if isinstance(histogram_freq, bool) or not isinstance(histogram_freq, int) or histogram_freq < 0:
            raise ConfigError(f"TensorBoard: histogram_freq must be an integer >= 0, got {histogram_freq!r}")
        if update_freq == "batch":
            update_freq = 1
        if update_freq != "epoch" and (
            isinstance(update_freq, bool) or not isinstance(update_freq, int) or update_freq < 1
        ):
            raise ConfigError(
                f"TensorBoard: update_freq must be 'epoch', 'batch' or an integer >= 1, got {update_freq!r}"
            )
        self.log_dir = os.fspath(log_dir)
        self.histogram_freq = histogram_freq
        self.update_freq: str | int = update_freq
        self.batch_hooks = update_freq != "epoch"
        self._writers: dict[str, Any] = {}
        self._step = 0

    def _writer(self, name: str) -> Any:
        writer = self._writers.get(name)
        if writer is None:
            writer = self._writers[name] = _summary_writer()(os.path.join(self.log_dir, name))
        return writer

    def on_train_begin(self, logs: Logs | None = None) -> None:
        _summary_writer()  # fail before the first epoch, not after it
        self._step = 0

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
        for writer in self._writers.values():
            writer.close()
        self._writers = {}
