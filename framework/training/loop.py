"""The training, evaluation and prediction loops and the data they read.

Data a loop accepts (``x`` and ``y`` alike):

- a NumPy array (one input / output) or a list of arrays (several);
- an h5py dataset (or any object with ``shape``, ``len`` and NumPy-style
  indexing): read batch by batch with sorted index arrays, never whole;
- for ``x`` alone (``y=None``): an iterable of ``(x, y)`` batches -- a list,
  a re-iterable object or a generator (a generator is read once unless
  ``steps_per_epoch`` takes a fixed number of batches from it each epoch).

In-memory arrays are cast to the model's dtype once, before the first epoch;
each epoch draws one permutation and slices it batch by batch, so the per
batch Python work is one fancy index, one forward, one backward and one step.

``fit`` stops after the current batch when it receives SIGINT (Ctrl-C) and
returns the ``History`` of the epochs completed, with the model intact.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from framework.base.context import Context
from framework.base.optimizer import Optimizer
from framework.errors import ConfigError, DataError
from framework.runtime.random import get_rng
from framework.training.callbacks import CallbackList, History, ProgbarLogger

if TYPE_CHECKING:
    from framework.models.model import Model

__all__ = ["ArrayData", "BatchData", "Trainer", "fit", "evaluate", "predict", "make_data"]


def _is_array_like(a: Any) -> bool:
    return isinstance(a, np.ndarray) or (
        hasattr(a, "shape")
        and hasattr(a, "__getitem__")
        and hasattr(a, "__len__")
        and not isinstance(a, (list, tuple))
    )


def _as_arrays(data: Any, n_expected: int | None, label: str) -> tuple[list[Any], bool]:
    """``data`` as a list of array-likes and whether it was given as a list."""
    if _is_array_like(data):
        return [data], False
    if isinstance(data, (list, tuple)):
        if data and all(_is_array_like(a) for a in data) and (n_expected is None or n_expected > 1):
            return list(data), True
        try:
            array = np.asarray(data)
        except ValueError as exc:
            raise DataError(f"{label}: cannot convert a {type(data).__name__} to an array: {exc}") from exc
        return [array], False
    if isinstance(data, (int, float)):
        raise DataError(f"{label}: expected an array, got the scalar {data!r}")
    raise DataError(
        f"{label}: expected a NumPy array, a list of arrays or an h5py dataset, got {type(data).__name__}"
    )


def _take(a: Any, index: Any, lazy: bool) -> np.ndarray:
    if not lazy:
        return a[index]
    return np.asarray(a[index])


class ArrayData:
    """Arrays (or h5py datasets) of equal length, served in batches.

    Args:
        x: an array-like or a list of them (one per model input).
        y: the same for targets, or ``None`` (prediction).
        n_inputs, n_outputs: how many the model expects (``None``: unknown).

    Raises:
        DataError: when lengths differ (naming both) or the data is empty.
    """

    def __init__(
        self, x: Any, y: Any = None, n_inputs: int | None = None, n_outputs: int | None = None
    ) -> None:
        self.xs, self.multi_x = _as_arrays(x, n_inputs, "x")
        if y is None:
            self.ys, self.multi_y = None, False
        else:
            self.ys, self.multi_y = _as_arrays(y, n_outputs, "y")
        if n_inputs is not None and len(self.xs) != n_inputs:
            raise DataError(f"x: the model takes {n_inputs} inputs, got {len(self.xs)} arrays")
        if n_outputs is not None and self.ys is not None and len(self.ys) != n_outputs:
            raise DataError(f"y: the model has {n_outputs} outputs, got {len(self.ys)} target arrays")
        lengths = [len(a) for a in self.xs]
        y_lengths = [len(a) for a in self.ys] if self.ys is not None else []
        if len(set(lengths)) > 1:
            raise DataError(f"x: the input arrays have different lengths {lengths}")
        if len(set(y_lengths)) > 1:
            raise DataError(f"y: the target arrays have different lengths {y_lengths}")
        if y_lengths and y_lengths[0] != lengths[0]:
            raise DataError(
                f"x and y have different lengths: x has {lengths[0]} samples, y has {y_lengths[0]}"
            )
        for a in self.xs + (self.ys or []):
            if len(getattr(a, "shape", ())) == 0:
                raise DataError(f"expected arrays with a batch axis, got a 0-d array {a!r}")
        self.n = lengths[0]
        if self.n == 0:
            raise DataError("x is empty (0 samples); there is nothing to train on or predict")
        self.lazy = any(not isinstance(a, np.ndarray) for a in self.xs + (self.ys or []))

    def cast(self, model: Model) -> ArrayData:
        """Cast in-memory inputs (and float targets) to the model's dtype, once."""
        if self.lazy:
            return self
        x = model.cast_inputs(self.xs if self.multi_x else self.xs[0])
        self.xs = list(x) if self.multi_x else [x]
        if self.ys is not None:
            dtype = model.dtype
            self.ys = [
                y.astype(dtype) if np.issubdtype(y.dtype, np.floating) and y.dtype != dtype else y
                for y in self.ys
            ]
        return self

    def split(self, fraction: float) -> tuple[ArrayData, ArrayData]:
        """The first ``1 - fraction`` and the last ``fraction`` of the samples (Keras' validation_split)."""
        n_val = math.floor(self.n * fraction)
        if n_val < 1 or n_val >= self.n:
            raise DataError(
                f"validation_split={fraction} of {self.n} samples leaves {n_val} validation and "
                f"{self.n - n_val} training samples; both must be at least 1"
            )
        cut = self.n - n_val
        first, last = copyless(self), copyless(self)
        first.xs = [a[:cut] for a in self.xs]
        last.xs = [a[cut:] for a in self.xs]
        if self.ys is not None:
            first.ys = [a[:cut] for a in self.ys]
            last.ys = [a[cut:] for a in self.ys]
        first.n, last.n = cut, n_val
        return first, last

    def steps(self, batch_size: int) -> int:
        return -(-self.n // batch_size)

    def batches(self, batch_size: int, shuffle: bool = False, rng: Any = None) -> Iterator[tuple[Any, Any]]:
        """``(x_batch, y_batch)`` pairs (lists where several), in order or shuffled."""
        n, lazy = self.n, self.lazy
        perm = rng.permutation(n) if shuffle else None
        dtype = self._dtype
        for start in range(0, n, batch_size):
            if perm is None:
                index: Any = slice(start, start + batch_size)
            else:
                index = perm[start : start + batch_size]
                if lazy:
                    index.sort()
            xb = [_take(a, index, lazy) for a in self.xs]
            if lazy and dtype is not None:
                xb = [
                    b if b.dtype == dtype or np.issubdtype(b.dtype, np.integer) else b.astype(dtype)
                    for b in xb
                ]
            yb = None if self.ys is None else [_take(a, index, lazy) for a in self.ys]
            yield (
                xb if self.multi_x else xb[0],
                None if yb is None else (yb if self.multi_y else yb[0]),
            )

    _dtype: Any = None


def copyless(data: ArrayData) -> ArrayData:
    new = ArrayData.__new__(ArrayData)
    new.__dict__.update(data.__dict__)
    return new


class BatchData:
    """An iterable of ``(x, y)`` batches (a list, a re-iterable or a generator)."""

    def __init__(self, source: Iterable[Any], steps: int | None = None) -> None:
        self.source = source
        self.steps_per_epoch = steps
        self.one_shot = iter(source) is source
        self._iterator: Iterator[Any] | None = None
        self.n = None

    def steps(self, batch_size: int) -> int | None:
        if self.steps_per_epoch is not None:
            return self.steps_per_epoch
        return len(self.source) if hasattr(self.source, "__len__") else None  # type: ignore[arg-type]

    def batches(
        self, batch_size: int = 0, shuffle: bool = False, rng: Any = None
    ) -> Iterator[tuple[Any, Any]]:
        if self.one_shot:
            it = self.source if self._iterator is None else self._iterator
            self._iterator = iter(it)  # type: ignore[arg-type]
            it = self._iterator
        else:
            it = iter(self.source)
        count = 0
        for item in it:
            if not isinstance(item, (tuple, list)) or len(item) not in (1, 2):
                raise DataError(
                    f"a batch iterable must yield (x, y) pairs, got {type(item).__name__}"
                    + (f" of length {len(item)}" if isinstance(item, (tuple, list)) else "")
                )
            xb = item[0]
            yb = item[1] if len(item) == 2 else None
            if len(xb if not isinstance(xb, list) else xb[0]) == 0:
                raise DataError("a batch from the iterable is empty (0 samples)")
            yield xb, yb
            count += 1
            if self.steps_per_epoch is not None and count >= self.steps_per_epoch:
                return
        if count == 0:
            raise DataError(
                "the batch iterable yielded no batches"
                + (
                    "; a generator is exhausted after one pass: pass steps_per_epoch (and an endless "
                    "generator) or a re-iterable such as a list"
                    if self.one_shot
                    else ""
                )
            )


def _arity(model: Model) -> tuple[int | None, int | None]:
    """How many inputs and outputs ``model`` takes (``None`` for a hand-built subclass)."""
    from framework.models.model import Sequential

    if model._graph is not None:
        return len(model._graph.inputs), len(model._graph.outputs)
    if isinstance(model, Sequential):
        return 1, 1
    return None, None


def make_data(model: Model, x: Any, y: Any = None, steps: int | None = None) -> ArrayData | BatchData:
    """Wrap ``x`` (and ``y``) in the right adapter for ``model``."""
    if x is None:
        raise DataError("x is None; pass the training data")
    if y is None and not _is_array_like(x) and not isinstance(x, (list, tuple)) and isinstance(x, Iterable):
        return BatchData(x, steps)
    if y is None and isinstance(x, list) and x and all(isinstance(b, tuple) for b in x):
        return BatchData(x, steps)
    n_in, n_out = _arity(model)
    data = ArrayData(x, y, n_in, n_out)
    data._dtype = model.dtype
    return data


class _Interrupt:
    """Turns the first SIGINT during ``fit`` into a flag checked after each batch."""

    def __init__(self) -> None:
        self.flag = False
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> _Interrupt:
        if threading.current_thread() is threading.main_thread():
            try:
                self._previous = signal.signal(signal.SIGINT, self._handle)
                self._installed = True
            except ValueError:
                self._installed = False
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.flag:
            raise KeyboardInterrupt
        self.flag = True

    def __exit__(self, *exc: Any) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)


class Trainer:
    """One model's compiled state, unpacked for a fast training step."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.losses = model._losses
        self.weights = model._loss_weights
        self.slots = model._metric_slots
        self.multi = model.multi_output
        self.optimizer = model.optimizer
        self.output_totals = [0.0] * len(self.losses)

    def _bind(self) -> None:
        if not self.optimizer.params:
            self.optimizer.bind(self.model)

    def _losses_and_grad(self, out: Any, y: Any, sample_weight: Any) -> tuple[float, Any]:
        if not self.multi:
            loss = self.losses[0]
            value = loss.forward(out, y) if sample_weight is None else loss.forward(out, y, sample_weight)
            grad = loss.backward()
            w = self.weights[0]
            if w != 1.0:
                value, grad = value * w, grad * w
            return float(value), grad
        if not isinstance(y, (list, tuple)) or len(y) != len(out):
            raise DataError(f"the model has {len(out)} outputs; y must be a list of {len(out)} target arrays")
        total, grads = 0.0, []
        for k, (loss, w, o, t) in enumerate(zip(self.losses, self.weights, out, y)):
            value = float(loss.forward(o, t) if sample_weight is None else loss.forward(o, t, sample_weight))
            grads.append(loss.backward() * w if w != 1.0 else loss.backward())
            total += w * value
            self.output_totals[k] += value
        return total, grads

    def train_step(self, x: Any, y: Any, sample_weight: Any = None) -> float:
        """Forward, loss, backward, optimizer step; metrics updated. Returns the batch loss."""
        model = self.model
        # Nothing upstream of the model needs dL/dx: a Sequential stops its backward early.
        ctx = Context(True, needs_input_grad=False)
        out = model.forward(ctx, x)
        value, grad = self._losses_and_grad(out, y, sample_weight)
        self._bind()
        if type(self.optimizer).zero_grad is Optimizer.zero_grad:
            # Lazily: nothing outside this step holds the gradients, so the first
            # contribution to each may overwrite it (Parameter.grad_target).
            for p in self.optimizer.params:
                p.zero_grad(lazy=True)
        else:
            self.optimizer.zero_grad()
        model.backward(ctx, grad)
        self.optimizer.step()
        self.update_metrics(out, y)
        return value

    def update_metrics(self, out: Any, y: Any) -> None:
        if not self.slots:
            return
        if self.multi:
            for k, metric, _ in self.slots:
                metric.update(out[k], y[k])
        else:
            for _, metric, _ in self.slots:
                metric.update(out, y)

    def reset_metrics(self) -> None:
        self.output_totals = [0.0] * len(self.losses)
        for _, metric, _ in self.slots:
            metric.reset()

    def metric_logs(self) -> dict[str, float]:
        return {key: float(metric.result()) for _, metric, key in self.slots}

    def output_losses(self, out: Any, y: Any) -> list[float]:
        return [float(loss.forward(o, t)) for loss, o, t in zip(self.losses, out, y)]


def _class_weights(class_weight: dict[int, float] | None) -> np.ndarray | None:
    if class_weight is None:
        return None
    if not isinstance(class_weight, dict) or not class_weight:
        raise ConfigError(
            f"fit: class_weight must be a non-empty dict {{class: weight}}, got {class_weight!r}"
        )
    size = max(int(k) for k in class_weight) + 1
    table = np.ones(size, dtype=np.float64)
    for k, w in class_weight.items():
        if int(k) < 0:
            raise ConfigError(f"fit: class_weight keys must be class indices >= 0, got {k!r}")
        table[int(k)] = float(w)
    return table


def _sample_weights(table: np.ndarray, y: Any) -> np.ndarray:
    labels = (
        y if y.ndim == 1 else (y.argmax(axis=-1) if y.shape[-1] > 1 else (y[:, 0] > 0.5).astype(np.int64))
    )
    labels = labels.astype(np.int64, copy=False)
    if labels.min() < 0 or labels.max() >= len(table):
        weights = np.ones(len(labels), dtype=np.float64)
        inside = (labels >= 0) & (labels < len(table))
        weights[inside] = table[labels[inside]]
        return weights
    return table[labels]


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
        if not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"):
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


def _check_positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def fit(
    model: Model,
    x: Any = None,
    y: Any = None,
    epochs: int = 1,
    batch_size: int = 32,
    validation_data: Any = None,
    validation_split: float = 0.0,
    shuffle: bool = True,
    class_weight: dict[int, float] | None = None,
    callbacks: list[Any] | None = None,
    verbose: int = 1,
    initial_epoch: int = 0,
    seed: int | None = None,
    steps_per_epoch: int | None = None,
) -> History:
    """Train ``model`` for ``epochs - initial_epoch`` epochs; returns a ``History``.

    Args:
        x, y: the data (see the module docs); ``y=None`` when ``x`` yields batches.
        epochs: the index of the last epoch (Keras semantics with ``initial_epoch``).
        batch_size: samples per batch for array data.
        validation_data: ``(x_val, y_val)`` or an iterable of batches,
            evaluated after each epoch (keys ``val_loss``, ``val_<metric>``).
        validation_split: the fraction of the array data (taken from the end,
            before shuffling) held out for validation.
        shuffle: draw a new permutation each epoch.
        class_weight: ``{class index: weight}``; each sample's loss is weighted
            by its class's weight (integer or one-hot targets).
        callbacks: ``Callback`` instances.
        verbose: 0 silent, 1 a progress bar per epoch, 2 one line per epoch.
        initial_epoch: the epoch to start from (resume with ``model.epoch``).
        seed: seeds the shuffling; ``None`` uses the global generator
            (``framework.set_seed``).
        steps_per_epoch: batches per epoch taken from a batch iterable.

    Raises:
        NotCompiledError: before ``compile``.
        DataError: mismatched lengths, empty data, malformed batches.
    """
    model._require_compiled("fit")
    epochs = _check_positive_int("fit: epochs", epochs, 0)
    batch_size = _check_positive_int("fit: batch_size", batch_size)
    initial_epoch = _check_positive_int("fit: initial_epoch", initial_epoch, 0)
    if verbose not in (0, 1, 2):
        raise ConfigError(f"fit: verbose must be 0, 1 or 2, got {verbose!r}")
    if not 0.0 <= validation_split < 1.0:
        raise ConfigError(f"fit: validation_split must be in [0, 1), got {validation_split!r}")

    data = make_data(model, x, y, steps_per_epoch)
    if isinstance(data, ArrayData) and data.ys is None:
        raise DataError("fit: y is None; pass targets, or an iterable of (x, y) batches as x")
    val_data: Any = None
    if validation_split:
        if not isinstance(data, ArrayData):
            raise ConfigError(
                "fit: validation_split needs array data; pass validation_data for batch iterables"
            )
        data, val_data = data.split(validation_split)
    elif validation_data is not None:
        if isinstance(validation_data, tuple) and len(validation_data) == 3:
            raise ConfigError("fit: validation_data must be (x_val, y_val); sample weights are not supported")
        if isinstance(validation_data, tuple) and len(validation_data) == 2:
            val_data = make_data(model, validation_data[0], validation_data[1])
        else:
            val_data = make_data(model, validation_data)
    if isinstance(data, ArrayData):
        data.cast(model)
    if isinstance(val_data, ArrayData):
        val_data.cast(model)
    weight_table = _class_weights(class_weight)
    rng = np.random.default_rng(seed) if seed is not None else get_rng()

    history = History()
    # As in Keras, the progress bar and History come after the user's callbacks,
    # so they see keys those add to the epoch logs (``lr``).
    cbs = list(callbacks or [])
    if verbose:
        cbs.append(ProgbarLogger(verbose=verbose))
    cbs.append(history)
    cb = CallbackList(cbs, model=model)
    steps = data.steps(batch_size)
    cb.set_params({"epochs": epochs, "steps": steps, "verbose": verbose, "batch_size": batch_size})
    trainer = Trainer(model)
    model.stop_training = False
    model.history = history
    keep_freed_memory()
    interrupted = False
    logs: dict[str, float] = {}
    with _Interrupt() as interrupt:
        try:
            cb.on_train_begin()
            for epoch in range(initial_epoch, epochs):
                trainer.reset_metrics()
                cb.on_epoch_begin(epoch)
                total, count = 0.0, 0
                for step, (xb, yb) in enumerate(data.batches(batch_size, shuffle, rng)):
                    cb.on_train_batch_begin(step)
                    if isinstance(data, BatchData):
                        xb = model.cast_inputs(xb)
                    sw = None if weight_table is None else _sample_weights(weight_table, yb)
                    value = trainer.train_step(xb, yb, sw)
                    total += value
                    count += 1
                    if cb.has_batch_hooks:
                        # Running means over the epoch so far, as the metrics are (Keras's convention).
                        batch_logs = {"loss": total / count}
                        batch_logs.update(trainer.metric_logs())
                        cb.on_train_batch_end(step, batch_logs)
                    if interrupt.flag or model.stop_training:
                        break
                if interrupt.flag:
                    interrupted = True
                    break
                logs = {"loss": total / count if count else float("nan")}
                if trainer.multi:
                    for name, value in zip(model.output_names, trainer.output_totals):
                        logs[f"{name}_loss"] = value / count if count else float("nan")
                logs.update(trainer.metric_logs())
                if val_data is not None:
                    val_logs = _evaluate_data(model, trainer, val_data, batch_size)
                    logs.update({"val_" + k: v for k, v in val_logs.items()})
                cb.on_epoch_end(epoch, logs)
                model.epoch = epoch + 1
                if interrupt.flag:
                    interrupted = True
                    break
                if model.stop_training:
                    break
        except KeyboardInterrupt:
            interrupted = True
        finally:
            # Keras's contract: the model comes back in inference mode, however fit ends.
            model.eval()
    if interrupted:
        history.interrupted = True
        model.stop_training = True
        print(
            f"\nTraining interrupted (Ctrl-C) after {len(history.epoch)} complete epoch(s); "
            "the model keeps its weights and the returned History covers the completed epochs.",
            file=sys.stderr,
            flush=True,
        )
    cb.on_train_end(logs)
    return history


def _evaluate_data(model: Model, trainer: Trainer, data: Any, batch_size: int) -> dict[str, float]:
    """Sample-weighted mean loss (and per-output losses) and metrics, in inference mode."""
    trainer.reset_metrics()
    total, n = 0.0, 0
    per_output = [0.0] * len(trainer.losses)
    for xb, yb in data.batches(batch_size):
        if isinstance(data, BatchData):
            xb = model.cast_inputs(xb)
        out = model.forward(Context(False, record=False), xb)
        size = len(out[0] if trainer.multi else out)
        if not trainer.multi:
            value = trainer.weights[0] * float(trainer.losses[0].forward(out, yb))
        else:
            outs = trainer.output_losses(out, yb)
            value = sum(w * v for w, v in zip(trainer.weights, outs))
            per_output = [a + v * size for a, v in zip(per_output, outs)]
        total += value * size
        n += size
        trainer.update_metrics(out, yb)
    logs = {"loss": total / n}
    if trainer.multi:
        for name, v in zip(model.output_names, per_output):
            logs[f"{name}_loss"] = v / n
    logs.update(trainer.metric_logs())
    return logs


def evaluate(
    model: Model, x: Any = None, y: Any = None, batch_size: int = 32, verbose: int = 0
) -> dict[str, float]:
    """The loss (sample-weighted mean) and metrics over ``(x, y)`` in eval mode.

    Returns:
        ``{"loss": ..., "<metric>": ...}`` as Python floats (plus
        ``"<output>_loss"`` for several outputs).
    """
    model._require_compiled("evaluate")
    batch_size = _check_positive_int("evaluate: batch_size", batch_size)
    data = make_data(model, x, y)
    if isinstance(data, ArrayData):
        if data.ys is None:
            raise DataError("evaluate: y is None; pass targets, or an iterable of (x, y) batches as x")
        data.cast(model)
    keep_freed_memory()
    logs = _evaluate_data(model, Trainer(model), data, batch_size)
    if verbose:
        print(" - ".join(f"{k}: {v:.4f}" for k, v in logs.items()))
    return logs


def predict(model: Model, x: Any, batch_size: int = 32, verbose: int = 0) -> Any:
    """The model's outputs for ``x`` in eval mode, computed in batches and concatenated.

    ``x`` is an array, a list of arrays (several inputs), an h5py dataset or an
    iterable of ``x`` batches (or ``(x, y)`` pairs). Returns an array, or a
    list of arrays for a model of several outputs.
    """
    batch_size = _check_positive_int("predict: batch_size", batch_size)
    if not _is_array_like(x) and not isinstance(x, (list, tuple)) and isinstance(x, Iterable):
        source: Iterable[Any] = (b[0] if isinstance(b, tuple) else b for b in x)
    else:
        data = ArrayData(x, None, _arity(model)[0])
        data._dtype = model.dtype
        data.cast(model)
        source = (xb for xb, _ in data.batches(batch_size))
    keep_freed_memory()
    chunks: list[Any] = []
    for xb in source:
        chunks.append(model.forward(Context(False, record=False), model.cast_inputs(xb)))
    if not chunks:
        raise DataError("predict: the input yielded no batches")
    if isinstance(chunks[0], list):
        return [np.concatenate([c[k] for c in chunks]) for k in range(len(chunks[0]))]
    return np.concatenate(chunks)
