"""Inference-mode loops and single-batch steps: ``evaluate``, ``predict``,
``train_on_batch``, ``test_on_batch``, ``predict_on_batch``.

They read the same data as ``fit`` (:mod:`framework.training.data`), run
the model with an inference context (layers' flags are never changed) and
fire the callbacks' ``on_test_*`` / ``on_predict_*`` hooks.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import numpy as np

from framework.base.context import Context
from framework.base.validation import check_bool
from framework.errors import ConfigError, DataError
from framework.training.batching import batching, check_positive_int
from framework.training.callbacks import CallbackList, as_callback_list, resolve_verbose
from framework.training.callbacks.progress import format_logs
from framework.training.data import (
    ArrayData,
    BatchData,
    is_batch_iterable,
    make_data,
    model_arity,
    resolve_dicts,
)
from framework.training.named import listed_inputs
from framework.training.replicas import make_replicas
from framework.training.trainer import Trainer, keep_freed_memory, layers_in_mode

if TYPE_CHECKING:
    from framework.models.model import Model

__all__ = ["evaluate", "evaluate_data", "predict", "predict_on_batch", "test_on_batch", "train_on_batch"]


def evaluate_data(
    model: Model, trainer: Trainer, data: Any, batch_size: int, cb: CallbackList | None = None
) -> dict[str, Any]:
    """Sample-weighted mean loss (and per-output losses) and metrics, in inference mode."""
    trainer.reset_metrics()
    total, n = 0.0, 0
    per_output = [0.0] * len(trainer.losses)
    is_batches = isinstance(data, BatchData)
    batch_hooks = cb is not None and cb.has_test_batch_hooks
    if cb is not None:
        cb.on_test_begin()
    with layers_in_mode(model, False):
        for step, (xb, yb, wb) in enumerate(data.batches(batch_size)):
            if batch_hooks:
                cb.on_test_batch_begin(step)  # type: ignore[union-attr]
            try:
                value, outs, size = trainer.test_step(xb, yb, wb)
            except Exception as exc:
                if is_batches:
                    data.blame(exc)
                raise
            if outs:
                per_output = [a + v * size for a, v in zip(per_output, outs)]
            total += value * size
            n += size
            if batch_hooks:
                # running means over the batches so far, as fit's batch logs (Keras's convention)
                batch_logs = {"loss": (total / n) if n else float("nan"), **trainer.metric_logs()}
                cb.on_test_batch_end(step, batch_logs)  # type: ignore[union-attr]
    logs: dict[str, Any] = {"loss": total / n}
    if trainer.multi:
        for name, v in zip(model.output_names, per_output):
            logs[f"{name}_loss"] = v / n
    logs.update(trainer.metric_logs())
    if cb is not None:
        cb.on_test_end(logs)
    return logs


def evaluate(
    model: Model,
    x: Any = None,
    y: Any = None,
    batch_size: int | None = None,
    verbose: int | str = 0,
    sample_weight: Any = None,
    callbacks: Any = None,
    check_finite: bool = True,
    threads: int | None = None,
    steps: int | None = None,
    return_dict: bool = True,
) -> dict[str, Any] | float | list[Any]:
    """The loss (sample-weighted mean) and metrics over ``(x, y)`` in inference mode.

    Args:
        x, y, sample_weight: as for :func:`fit` (batches may carry weights).
        batch_size: default 32 (all samples for a full-batch model).
        verbose: 0 (default) prints nothing; 1, 2 or ``"auto"`` print the results.
        callbacks: a ``Callback`` or a list; their ``on_test_*`` hooks fire.
        check_finite: refuse NaN/Inf in the data.
        threads: run each batch as this many shards on as many threads (see ``fit``).
        steps: the number of batches read from an iterable of batches (default:
            all of it; needed for an endless generator); refused with arrays.
        return_dict: ``True`` (default) returns the dict below; ``False``
            returns Keras's default form: its values as a list in the dict's
            order, or the loss alone when there is nothing else.

    Returns:
        ``{"loss": ..., "<metric>": ...}`` as Python floats (plus
        ``"<output>_loss"`` for several outputs).
    """
    model._require_compiled("evaluate")
    return_dict = check_bool("evaluate", "return_dict", return_dict)
    verbose = resolve_verbose(verbose, "evaluate", auto=1)
    if steps is not None:
        steps = check_positive_int("evaluate: steps", steps)
    data = make_data(model, x, y, steps, sample_weight, check_finite, "steps")
    if isinstance(data, ArrayData):
        if data.ys is None:
            raise DataError("evaluate: y is None; pass targets, or an iterable of (x, y) batches as x")
        data.cast(model)
    batch_size, _ = batching("evaluate", model, data, batch_size, False)
    cb = CallbackList(as_callback_list(callbacks), model=model)
    cb.set_params({"steps": data.steps(batch_size), "verbose": verbose, "batch_size": batch_size})
    keep_freed_memory()
    trainer = Trainer(model, own_metrics=True)
    replicas = make_replicas("evaluate", model, threads)
    with replicas or contextlib.nullcontext():
        if replicas is not None:
            trainer.runner = replicas
        logs = evaluate_data(model, trainer, data, batch_size, cb)
    if verbose:
        print(format_logs(logs))
    if not return_dict:
        values = list(logs.values())
        return values[0] if len(values) == 1 else values
    return logs


def predict(
    model: Model,
    x: Any,
    batch_size: int | None = None,
    verbose: int | str = 0,
    callbacks: Any = None,
    threads: int | None = None,
    steps: int | None = None,
) -> Any:
    """The model's outputs for ``x`` in inference mode, computed in batches and concatenated.

    ``x`` is an array, a list of arrays (several inputs), a dict keyed by
    ``Input`` name, an h5py dataset or an iterable of batches: ``x``, ``(x,)``
    or ``(x, y)`` (see :mod:`framework.training.iterables`), of which
    ``steps`` (default: all) are read. Returns an array, or a list of arrays
    for a model of several outputs. ``callbacks``' ``on_predict_*`` hooks fire
    (batch ends with ``{"outputs": ...}``). ``batch_size`` defaults to 32 (all
    samples for a full-batch model; refused for an iterable). ``threads``
    runs each batch as that many shards on as many threads (see ``fit``).
    """
    resolve_verbose(verbose, "predict")
    if steps is not None:
        steps = check_positive_int("predict: steps", steps)
    if isinstance(x, dict):
        x = resolve_dicts(model, x, None, None)[0]
    data: Any
    if is_batch_iterable(x):
        data = BatchData(x, steps, False, model, steps_name="steps", targets=False)
    elif steps is not None:
        raise ConfigError(
            f"predict: steps={steps!r} applies to an iterable of batches; with arrays every sample "
            "is predicted: slice the arrays"
        )
    else:
        data = ArrayData(
            x, None, model_arity(model)[0], owner=model.describe(), listed_inputs=listed_inputs(model)
        )
        data._dtype = model.dtype
        data.cast(model)
    batch_size, _ = batching("predict", model, data, batch_size, False)
    source = (xb for xb, _, _ in data.batches(batch_size))
    cb = CallbackList(as_callback_list(callbacks), model=model)
    cb.set_params({"verbose": verbose, "batch_size": batch_size})
    keep_freed_memory()
    chunks: list[Any] = []
    sizes: list[int] = []
    cb.on_predict_begin()
    hooks = cb.has_predict_batch_hooks
    replicas = make_replicas("predict", model, threads)
    runner: Any = replicas if replicas is not None else model
    with replicas or contextlib.nullcontext(), layers_in_mode(model, False):
        for step, xb in enumerate(source):
            if hooks:
                cb.on_predict_batch_begin(step)
            if isinstance(data, ArrayData):
                xb = model.cast_inputs(xb)
            try:
                out = runner.forward(Context(False, record=False), xb)
            except Exception as exc:
                if isinstance(data, BatchData):
                    data.blame(exc)
                raise
            chunks.append(out)
            sizes.append(len(xb[0] if isinstance(xb, (list, tuple)) else xb))
            if hooks:
                cb.on_predict_batch_end(step, {"outputs": out})
    cb.on_predict_end()
    if not chunks:
        raise DataError("predict: the input yielded no batches")
    return join_batches(chunks, sizes)


def join_batches(chunks: list[Any], sizes: list[int]) -> Any:
    """The per-batch outputs joined along their batch axis, nested as each batch's output.

    The batch axis of an array is 0, or for an array whose first axis is not the
    batch (a recurrent layer's final states, ``(layers, N, H)``) the first axis
    whose size is each batch's size.
    """
    if isinstance(chunks[0], (list, tuple)):
        joined = [join_batches([c[k] for c in chunks], sizes) for k in range(len(chunks[0]))]
        return joined if isinstance(chunks[0], list) else tuple(joined)
    if len(chunks) == 1:
        return chunks[0]
    first = chunks[0]
    for axis in range(first.ndim):
        if all(c.ndim == first.ndim and c.shape[axis] == n for c, n in zip(chunks, sizes)):
            return np.concatenate(chunks, axis=axis)
    raise DataError(
        f"predict: an output of shape {first.shape} has no axis of the batch size {sizes[0]}; "
        "pass a batch_size covering all the samples to get it whole"
    )


def _one_batch(model: Model, owner: str, x: Any, y: Any, sample_weight: Any) -> tuple[Any, Any, Any]:
    data = make_data(model, x, y, None, sample_weight)
    if not isinstance(data, ArrayData) or data.ys is None:
        raise DataError(f"{owner}: pass one batch of arrays x and y (got {type(x).__name__} and y={y!r})")
    data.cast(model)
    return next(data.batches(data.n))


def _results(trainer: Trainer, loss: float, return_dict: bool) -> float | dict[str, Any]:
    if not return_dict:
        return loss
    return {"loss": loss, **trainer.metric_logs()}


def train_on_batch(
    model: Model, x: Any, y: Any, sample_weight: Any = None, return_dict: bool = False
) -> float | dict[str, Any]:
    """One optimisation step on one batch (``x``, ``y``, ``sample_weight`` as for :func:`fit`).

    Returns the batch loss, or ``{"loss": ..., "<metric>": ...}`` of this
    batch with ``return_dict=True``. Every layer runs in training mode and
    has its own ``training`` flag back afterwards.
    """
    model._require_compiled("train_on_batch")
    return_dict = check_bool("train_on_batch", "return_dict", return_dict)
    xb, yb, wb = _one_batch(model, "train_on_batch", x, y, sample_weight)
    trainer = Trainer(model)
    trainer.reset_metrics()
    with layers_in_mode(model, True):
        value = trainer.train_step(xb, yb, wb)
    return _results(trainer, value, return_dict)


def test_on_batch(
    model: Model, x: Any, y: Any, sample_weight: Any = None, return_dict: bool = False
) -> float | dict[str, Any]:
    """The loss (and metrics) on one batch in inference mode, without a step.

    Returns the loss, or ``{"loss": ..., "<metric>": ...}`` with ``return_dict=True``.
    """
    model._require_compiled("test_on_batch")
    return_dict = check_bool("test_on_batch", "return_dict", return_dict)
    xb, yb, wb = _one_batch(model, "test_on_batch", x, y, sample_weight)
    trainer = Trainer(model, own_metrics=True)
    trainer.reset_metrics()
    with layers_in_mode(model, False):
        value, _, _ = trainer.test_step(xb, yb, wb)
    return _results(trainer, float(value), return_dict)


test_on_batch.__test__ = False  # type: ignore[attr-defined]  # not a pytest test when imported


def predict_on_batch(model: Model, x: Any) -> Any:
    """The outputs for one batch ``x`` (array, list or dict of arrays) in inference mode."""
    if isinstance(x, dict):
        x = resolve_dicts(model, x, None, None)[0]
    with layers_in_mode(model, False):
        return model.forward(Context(False, record=False), model.cast_inputs(x))
