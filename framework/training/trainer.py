"""One compiled model unpacked for a fast training step, and what the step loops share.

:class:`Trainer` holds the losses, loss weights, metric slots and optimizer
of a compiled model; :func:`keep_freed_memory` tunes glibc for the loops;
:class:`Interrupt` turns Ctrl-C into a stop after the current batch.
``class_weight`` is turned into sample weights by :mod:`.class_weights`.
"""

from __future__ import annotations

import contextlib
import copy
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from framework.base.calling import takes_context
from framework.base.context import Context
from framework.base.layer import Layer
from framework.base.metric import result_value
from framework.base.optimizer import Optimizer
from framework.errors import DataError, ShapeError
from framework.training.named import log_keys

if TYPE_CHECKING:
    from framework.models.model import Model

__all__ = [
    "Interrupt",
    "Trainer",
    "calls_children_by_hand",
    "keep_freed_memory",
    "layers_in_mode",
]


class Interrupt:
    """Turns the first SIGINT during ``fit`` into a flag checked after each batch.

    A second SIGINT raises ``KeyboardInterrupt`` at once (for a step that
    hangs), except inside the optimizer's ``step``: there it waits for the
    step to end, so no parameter is left updated while the others are not
    (the flag already stops ``fit`` after that batch).
    """

    def __init__(self, optimizer: Any = None) -> None:
        self.flag = False
        self.optimizer = optimizer
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> Interrupt:
        if threading.current_thread() is threading.main_thread():
            try:
                self._previous = signal.signal(signal.SIGINT, self._handle)
                self._installed = True
            except ValueError:
                self._installed = False
        return self

    def _in_step(self, frame: Any) -> bool:
        while frame is not None:
            if frame.f_code.co_name == "step" and frame.f_locals.get("self") is self.optimizer:
                return True
            frame = frame.f_back
        return False

    def _handle(self, signum: int, frame: Any) -> None:
        if self.flag and not self._in_step(frame):
            raise KeyboardInterrupt
        self.flag = True

    def __exit__(self, *exc: Any) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)


def _own_copy(metric: Any) -> Any:
    """A copy of ``metric`` with state of its own; the metric itself if it cannot be copied (a user
    metric holding a lock), which then counts as before, shared by concurrent calls."""
    try:
        return copy.deepcopy(metric)
    except Exception:
        return metric


def _update_metric(metric: Any, out: Any, y: Any, weight: Any) -> None:
    if weight is None:
        metric.update(out, y)
    elif hasattr(metric, "update_state"):
        metric.update_state(y, out, sample_weight=weight)
    else:
        metric.update(out, y)


def _per_output(value: Any, n: int, label: str) -> list[Any]:
    """``value`` as one entry per output: a list of ``n``, or one value shared (one target for one output)."""
    if value is None:
        return [None] * n
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise DataError(
                f"the model has {n} outputs; {label} must be a list of {n}, got a list of {len(value)}"
            )
        return list(value)
    if label == "y" and n > 1:
        raise DataError(f"the model has {n} outputs; y must be a list of {n} target arrays")
    return [value] * n


class Trainer:
    """One model's compiled state, unpacked for a fast training step.

    For several outputs (a model built with a list of outputs) ``y`` and
    ``sample_weight`` are lists, one entry per output (one weight array is
    shared by every output). An output compiled with the loss ``None`` adds
    nothing to the loss and sends back a zero gradient; its loss logs as 0.
    Each output's unweighted loss is kept as a running mean over the batches
    since :meth:`reset_metrics`, logged as ``<output>_loss``
    (:func:`~framework.training.named.log_keys`, which reads the output names
    now, so a renamed layer renames its keys).
    """

    def __init__(self, model: Model, own_metrics: bool = False) -> None:
        """``own_metrics``: count on copies of the model's metrics, so that calls from several threads
        at once (``evaluate``, ``test_on_batch``) each report their own data's values."""
        self.model = model
        #: what runs forward and backward: the model, or its Replicas under fit(threads=K)
        self.runner: Any = model
        self.losses = model._losses
        self.weights = model._loss_weights
        slots = model._metric_slots
        self.slots = [(k, _own_copy(m), name) for k, m, name in slots] if own_metrics else slots
        self.multi = model.multi_output
        self.optimizer = model.optimizer
        self.names = model.output_names
        self.loss_keys, self.metric_keys = log_keys(model, self.slots)
        # the last training batch: its per-output losses and its number of samples
        self.output_values = [0.0] * len(self.losses)
        self.batch_samples = 0
        # the per-output losses summed over the batches since reset_metrics, weighted by their sizes
        self._output_sums = [0.0] * len(self.losses)
        self._output_count = 0
        # compile decided: a softmax/sigmoid output layer and its probabilities loss fuse.
        self.fused = bool(getattr(model, "_fused_output", False))
        if getattr(self.optimizer, "loss_scaler", None) is not None:
            # float16 weights set since the last step (load_weights, restored best weights) win
            self.optimizer.sync_master_weights()

    def _bind(self) -> None:
        if not self.optimizer.params:
            self.optimizer.bind(self.model)

    def _named(self, k: int, call: Any, *args: Any) -> Any:
        """``call(*args)`` for output ``k``; a shape or data error gets the output's name in front."""
        try:
            return call(*args)
        except (ShapeError, DataError) as exc:
            if not self.multi:
                raise
            raise type(exc)(f"output {self.names[k]!r} (y[{k}]): {exc}") from exc

    def _output_losses(self, out: Any, y: Any, sample_weight: Any) -> list[float]:
        """Each output's unweighted loss (0 for an output without a loss)."""
        n = len(out)
        ys, sws = _per_output(y, n, "y"), _per_output(sample_weight, n, "sample_weight")
        values = []
        for k, (loss, o, t, sw) in enumerate(zip(self.losses, out, ys, sws)):
            if loss is None:
                values.append(0.0)
            else:
                args = (o, t) if sw is None else (o, t, sw)
                values.append(float(self._named(k, loss.forward, *args)))
        return values

    def _record(self, values: list[float], size: int) -> None:
        self._output_sums = [a + v * size for a, v in zip(self._output_sums, values)]
        self._output_count += size

    def _losses_and_grad(self, out: Any, y: Any, sample_weight: Any, scale: float = 1.0) -> tuple[float, Any]:
        """The weighted loss and its gradient, times ``scale`` (the dynamic loss scale of float16 training).

        Loss weights and ``scale`` multiply the gradient inside the loss, in its
        float32 computation, before the cast to a float16 model's dtype: so a
        gradient below float16's range survives scaling, as under PyTorch's
        ``GradScaler``, which scales the float32 loss.
        """
        if not self.multi:
            loss = self.losses[0]
            value = loss.forward(out, y) if sample_weight is None else loss.forward(out, y, sample_weight)
            w = self.weights[0]
            grad = loss.backward_logits(scale=w * scale) if self.fused else loss.backward(scale=w * scale)
            return float(value * w if w != 1.0 else value), grad
        values = self._output_losses(out, y, sample_weight)
        grads = [
            np.zeros_like(o) if loss is None else loss.backward(scale=w * scale)
            for loss, w, o in zip(self.losses, self.weights, out)
        ]
        self.output_values = values
        return sum((w * v for w, v in zip(self.weights, values)), 0.0), grads

    def train_step(self, x: Any, y: Any, sample_weight: Any = None) -> float:
        """Forward, loss, backward, optimizer step; metrics updated. Returns the batch loss.

        With float16 trainable parameters the loss gradient is multiplied by
        the optimizer's dynamic loss scale (:attr:`Optimizer.loss_scaler`)
        before the backward pass; the optimizer divides it out again, or
        skips the step if a gradient overflowed.
        """
        # Nothing upstream of the model needs dL/dx: a Sequential stops its backward early.
        ctx = Context(True, needs_input_grad=False)
        out = self.runner.forward(ctx, x)
        self.batch_samples = len(out[0] if self.multi else out)
        self._bind()
        scaler = getattr(self.optimizer, "loss_scaler", None)
        scale = 1.0 if scaler is None else scaler.scale
        if scaler is not None and hasattr(self.optimizer, "loss_gradient_factor"):
            # float16 on several MPI ranks: the rank's weight goes in with the loss scale, so each
            # rank overflows float16 exactly where one process on all the ranks' samples would
            scale *= self.optimizer.loss_gradient_factor()
        with np.errstate(over="ignore", invalid="ignore"):
            value, grad = self._losses_and_grad(out, y, sample_weight, scale)
        # A layer unfrozen since the last step joins the optimizer now, before backward, so the
        # gradient it gathered while frozen is zeroed below and not applied with this step's.
        self.optimizer.refresh()
        if type(self.optimizer).zero_grad is Optimizer.zero_grad:
            # Lazily: nothing outside this step holds the gradients, so the first
            # contribution to each may overwrite it (Parameter.grad_target).
            for p in self.optimizer.params:
                p.zero_grad(lazy=True)
        else:
            self.optimizer.zero_grad()
        ctx.grad_at_logits = self.fused
        if scaler is None:
            self.runner.backward(ctx, grad)
        else:
            # float16 parameters: the loss gradient came scaled so small gradients do not flush
            # to zero; an overflow (inf/NaN) makes the optimizer skip the step and halve the scale.
            with np.errstate(over="ignore", invalid="ignore"):
                self.runner.backward(ctx, grad)
            scaler.pending = True
        self.optimizer.step()
        if self.multi:
            self._record(self.output_values, self.batch_samples)
        self.update_metrics(out, y, sample_weight)
        return value

    def test_step(self, x: Any, y: Any, sample_weight: Any = None) -> tuple[float, list[float], int]:
        """Inference-mode forward, loss and metrics: ``(weighted loss, per-output losses, batch size)``."""
        out = self.runner.forward(Context(False, record=False), x)
        size = len(out[0] if self.multi else out)
        if not self.multi:
            loss = self.losses[0]
            raw = loss.forward(out, y) if sample_weight is None else loss.forward(out, y, sample_weight)
            value, outs = self.weights[0] * float(raw), []
        else:
            outs = self._output_losses(out, y, sample_weight)
            value = sum((w * v for w, v in zip(self.weights, outs)), 0.0)
            self._record(outs, size)
        self.update_metrics(out, y, sample_weight)
        return value, outs, size

    def update_metrics(self, out: Any, y: Any, sample_weight: Any = None) -> None:
        """Add a batch to every metric; ``sample_weight`` (with class weights folded in) reaches the
        ``weighted_metrics`` only, as in Keras."""
        if not self.slots:
            return
        if self.multi:
            n = len(out)
            ys, sws = _per_output(y, n, "y"), _per_output(sample_weight, n, "sample_weight")
            for k, metric, _ in self.slots:
                weight = sws[k] if getattr(metric, "sample_weighted", False) else None
                self._named(k, _update_metric, metric, out[k], ys[k], weight)
        else:
            for _, metric, _ in self.slots:
                weight = sample_weight if getattr(metric, "sample_weighted", False) else None
                _update_metric(metric, out, y, weight)

    def reset_metrics(self) -> None:
        for _, metric, _ in self.slots:
            metric.reset()
        self._output_sums = [0.0] * len(self.losses)
        self._output_count = 0

    def metric_items(self) -> list[tuple[str, Any]]:
        """``(log key, metric)`` of every compiled metric, in the logs' order."""
        return [(key, metric) for (_, metric, _), key in zip(self.slots, self.metric_keys)]

    def metric_logs(self) -> dict[str, Any]:
        """``<output>_loss`` (running means, several outputs) and the metrics' results, by log key."""
        count = self._output_count
        logs: dict[str, Any] = {
            key: total / count if count else float("nan")
            for key, total in zip(self.loss_keys, self._output_sums)
        }
        logs.update({key: result_value(metric) for (_, metric, _), key in zip(self.slots, self.metric_keys)})
        return logs


def calls_children_by_hand(model: Layer) -> bool:
    """Whether ``model`` or a layer in it is written in the older form (``forward(x)``).

    Such a forward calls its children by hand, and they run in their own
    ``training`` flag; the executors hand every other layer each call's mode on
    its context, whatever its flag.
    """
    return any(not takes_context(layer) for layer in model.modules())


@contextlib.contextmanager
def layers_in_mode(model: Layer, training: bool) -> Iterator[None]:
    """For a model that calls children by hand, every layer in ``training`` mode for the block.

    Each layer gets its own flag back after. Other models are left alone: their
    modes travel on the calls' contexts, and their flags may be read by other
    threads calling them meanwhile (an older-form model refuses those).
    """
    if not calls_children_by_hand(model):
        yield
        return
    with model.mode(training):
        yield


_HEAP_TUNED = False


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse instead of handing it back to the kernel.

    A training step frees and re-allocates the same large temporaries every
    batch. With glibc's defaults the freed top of the heap is trimmed, so the
    next step faults every page in again (about 550 page faults and 1 ms of
    system time per LeNet-5 step at batch 64, 1,700 and 5 ms for the
    Fashion-MNIST CNN). Fixing the mmap threshold at 32 MiB and the trim
    threshold at 256 MiB makes the steady state fault-free; the peak resident
    memory does not grow, freed blocks are reused. Called once by ``fit``,
    ``evaluate`` and ``predict``; a no-op off glibc or with the environment
    variable ``FRAMEWORK_KEEP_HEAP=0``. Returns whether the setting applies.
    """
    global _HEAP_TUNED
    if _HEAP_TUNED:
        return True
    if os.environ.get("FRAMEWORK_KEEP_HEAP", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        if not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"):
            return False
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (ValueError, OSError, AttributeError, TypeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 32 * 1024 * 1024)
    mallopt(m_trim_threshold, 256 * 1024 * 1024)
    _HEAP_TUNED = True
    return True
