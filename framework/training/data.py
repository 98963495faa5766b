"""The data the loops read: arrays, dicts, h5py datasets and batch iterables, checked once.

Data a loop accepts (``x`` and ``y`` alike):

- a NumPy array (one input / output) or a list of arrays (several);
- a dict keyed by ``Input`` name (``x``) or output layer name (``y``), for a
  model built from named ``Input``\\ s (a dict with an unknown or a missing
  key is refused, naming the expected keys);
- an h5py dataset (or any object with ``shape``, ``len`` and NumPy-style
  indexing): read batch by batch with sorted index arrays, never whole;
- for ``x`` alone (``y=None``, no ``sample_weight``): an iterable of
  ``(x, y)`` or ``(x, y, sample_weight)`` batches -- a list, a re-iterable
  object or a generator; see :mod:`framework.training.iterables` for its
  epochs (``steps_per_epoch``) and checks.

``sample_weight`` is an array of one weight per sample, or, for a model of
several outputs, a list (one per output) or a dict keyed by output name
(outputs left out are unweighted).

Inputs of dtype object, string or complex are refused. With
``check_finite`` (the default) a NaN or an infinity in ``x``, ``y`` or the
weights is refused with the array's name and the first bad index: once per
in-memory array before the first epoch, per batch for datasets and iterables.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from framework.errors import ConfigError, DataError
from framework.training.checks import check_dtype, check_finite_array
from framework.training.iterables import BatchData
from framework.training.named import listed_inputs, model_arity, resolve_dicts

if TYPE_CHECKING:
    from framework.models.model import Model

__all__ = ["ArrayData", "BatchData", "is_batch_iterable", "make_data", "model_arity", "resolve_dicts"]


def _is_array_like(a: Any) -> bool:
    return isinstance(a, np.ndarray) or (
        hasattr(a, "shape")
        and hasattr(a, "__getitem__")
        and hasattr(a, "__len__")
        and not isinstance(a, (list, tuple, dict))
    )


def _as_arrays(data: Any, n_expected: int | None, label: str, listed: bool = False) -> tuple[list[Any], bool]:
    """``data`` as a list of array-likes and whether it was given as a list.

    ``listed``: the model was built on a list of inputs (``Model([a], ...)``), so a list of
    arrays is one per input, never samples to stack.
    """
    if _is_array_like(data):
        return [data], False
    if isinstance(data, (list, tuple)):
        many = n_expected is None or n_expected > 1 or (listed and len(data) > 1)
        if data and all(_is_array_like(a) for a in data) and many:
            return list(data), True
        if len(data) == 1 and _is_array_like(data[0]):  # [x] for a model of one input is x, as in Keras
            return [data[0]], False
        try:
            array = np.asarray(data)
        except ValueError as exc:
            raise DataError(f"{label}: cannot convert a {type(data).__name__} to an array: {exc}") from exc
        return [array], False
    if isinstance(data, (int, float)):
        raise DataError(f"{label}: expected an array, got the scalar {data!r}")
    raise DataError(
        f"{label}: expected a NumPy array, a list of arrays, a dict or an h5py dataset, "
        f"got {type(data).__name__}"
    )


class ArrayData:
    """Arrays (or h5py datasets) of equal length, served in batches of ``(x, y, sample_weight)``.

    Args:
        x: an array-like or a list of them (one per model input).
        y: the same for targets, or ``None`` (prediction).
        n_inputs, n_outputs: how many the model expects (``None``: unknown).
        sample_weight: one weight per sample, or a list per output.
        check_finite: refuse NaN/Inf (in-memory arrays now, datasets per batch).

    Raises:
        DataError: when lengths differ (naming both), the data is empty, of a
            non-numeric dtype or (with ``check_finite``) not finite.
    """

    def __init__(
        self,
        x: Any,
        y: Any = None,
        n_inputs: int | None = None,
        n_outputs: int | None = None,
        sample_weight: Any = None,
        check_finite: bool = True,
        owner: str = "the model",
        listed_inputs: bool = False,
    ) -> None:
        self.xs, self.multi_x = _as_arrays(x, n_inputs, "x", listed_inputs)
        if y is None:
            self.ys, self.multi_y = None, False
        else:
            self.ys, self.multi_y = _as_arrays(y, n_outputs, "y")
        if n_inputs is not None and len(self.xs) != n_inputs:
            plural = "s" if n_inputs != 1 else ""
            raise DataError(f"x: {owner} takes {n_inputs} input{plural}, got {len(self.xs)} arrays")
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
        self.ws = self._weights(sample_weight, n_outputs if n_outputs is not None else len(self.ys or [0]))
        self.lazy = any(not isinstance(a, np.ndarray) for a in self.xs + (self.ys or []))
        self.check_batches = check_finite and self.lazy
        self._validate(check_finite)

    def _labels(self) -> list[tuple[str, Any]]:
        named = [(f"x[{i}]" if self.multi_x else "x", a) for i, a in enumerate(self.xs)]
        named += [(f"y[{i}]" if self.multi_y else "y", a) for i, a in enumerate(self.ys or [])]
        if self.ws is not None:
            named += [
                (f"sample_weight[{i}]" if len(self.ws) > 1 else "sample_weight", w)
                for i, w in enumerate(self.ws)
                if w is not None
            ]
        return named

    def _validate(self, check_finite: bool) -> None:
        for label, a in self._labels():
            check_dtype(a, label)
            if check_finite and isinstance(a, np.ndarray):
                check_finite_array(a, label)

    def _weights(self, sample_weight: Any, n_out: int) -> list[Any] | None:
        """One ``(N,)`` float array (or ``None``) per output; ``None`` when no weights are given."""
        if sample_weight is None:
            return None
        if isinstance(sample_weight, (list, tuple)) and all(
            isinstance(v, (int, float, np.number)) for v in sample_weight
        ):
            sample_weight = np.asarray(sample_weight)
        if _is_array_like(sample_weight):
            per_output: list[Any] = [sample_weight] * n_out
        elif not isinstance(sample_weight, (list, tuple)):
            raise DataError(
                "sample_weight: expected an array of one weight per sample (or, for several outputs, a "
                f"list or a dict of them), got {type(sample_weight).__name__} {sample_weight!r:.60}"
            )
        else:
            per_output = list(sample_weight)
            if len(per_output) != n_out:
                raise DataError(
                    f"sample_weight: the model has {n_out} outputs, "
                    f"got a list of {len(per_output)} weight arrays"
                )
        out: list[Any] = []
        for k, w in enumerate(per_output):
            if w is None:
                out.append(None)
                continue
            w = np.asarray(w)
            check_dtype(w, "sample_weight")
            if w.ndim == 2 and w.shape[1] == 1:
                w = w[:, 0]
            if w.shape != (self.n,):
                raise DataError(
                    f"sample_weight{f'[{k}]' if n_out > 1 else ''}: expected one weight per sample, "
                    f"shape ({self.n},), got {w.shape}"
                )
            out.append(w.astype(np.float64, copy=False))
        return out

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
        """The first ``1 - fraction`` and the last ``fraction`` of the samples (Keras' validation_split).

        As Keras, the training part is ``floor(n * (1 - fraction))`` samples
        (21 samples at 0.3: 14 and 7).
        """
        n_val = self.n - math.floor(self.n * (1.0 - fraction))
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
        if self.ws is not None:
            first.ws = [None if w is None else w[:cut] for w in self.ws]
            last.ws = [None if w is None else w[cut:] for w in self.ws]
        first.n, last.n = cut, n_val
        return first, last

    def steps(self, batch_size: int) -> int:
        return -(-self.n // batch_size)

    def batches(
        self, batch_size: int, shuffle: bool = False, rng: Any = None
    ) -> Iterator[tuple[Any, Any, Any]]:
        """``(x_batch, y_batch, weight_batch)`` triples (lists where several), in order or shuffled."""
        n = self.n
        perm = rng.permutation(n) if shuffle else None
        for start in range(0, n, batch_size):
            if perm is None:
                yield self.take(slice(start, min(n, start + batch_size)))
            else:
                yield self.take(perm[start : start + batch_size])

    def take(self, index: Any) -> tuple[Any, Any, Any]:
        """The ``(x, y, weight)`` batch of the samples ``index`` (a slice or an integer array)."""
        lazy, ws, dtype = self.lazy, self.ws, self._dtype
        if lazy and isinstance(index, np.ndarray):
            index = np.sort(index)
        xb = [_take(a, index, lazy) for a in self.xs]
        if lazy and dtype is not None:
            xb = [
                b if b.dtype == dtype or np.issubdtype(b.dtype, np.integer) else b.astype(dtype) for b in xb
            ]
        yb = None if self.ys is None else [_take(a, index, lazy) for a in self.ys]
        wb = None if ws is None else [None if w is None else w[index] for w in ws]
        if self.check_batches:
            self._check_finite(index, xb, yb, wb)
        return (
            xb if self.multi_x else xb[0],
            None if yb is None else (yb if self.multi_y else yb[0]),
            None if wb is None else (wb if len(wb) > 1 else wb[0]),
        )

    def _check_finite(self, index: Any, xb: list[Any], yb: Any, wb: Any) -> None:
        """Refuse NaN/Inf in a batch read from a dataset, naming the array and the sample's own index."""
        rows = np.arange(index.start, index.stop) if isinstance(index, slice) else index
        named = [(f"x[{i}]" if self.multi_x else "x", a) for i, a in enumerate(xb)]
        named += [(f"y[{i}]" if self.multi_y else "y", a) for i, a in enumerate(yb or [])]
        named += [
            (f"sample_weight[{i}]" if len(wb) > 1 else "sample_weight", w) for i, w in enumerate(wb or [])
        ]
        for label, a in named:
            if a is None or a.dtype.kind != "f" or np.isfinite(a).all():
                continue
            at = np.argwhere(~np.isfinite(a))[0]
            where = (int(rows[at[0]]), *map(int, at[1:]))
            raise DataError(
                f"{label} contains {a[tuple(at)]} at index {where if len(where) > 1 else where[0]} "
                f"(read in the batch of {_describe(index)}); the loss and every weight would turn NaN. "
                "Clean the data, or pass check_finite=False to train on it anyway"
            )

    _dtype: Any = None


def _describe(index: Any) -> str:
    """How an error names a batch: its range of sample indices."""
    if isinstance(index, slice):
        return f"the samples {index.start}..{index.stop - 1}"
    return f"the samples {int(index.min())}..{int(index.max())} (shuffled)" if len(index) else "no samples"


def _take(a: Any, index: Any, lazy: bool) -> np.ndarray:
    if not lazy:
        return a[index]
    return np.asarray(a[index])


def copyless(data: ArrayData) -> ArrayData:
    new = ArrayData.__new__(ArrayData)
    new.__dict__.update(data.__dict__)
    return new


def is_batch_iterable(x: Any) -> bool:
    """Whether ``x`` yields batches: a non-list iterable (generator, custom object) or a list of tuples."""
    if isinstance(x, (dict, str, bytes, tuple)) or _is_array_like(x):
        return False
    if isinstance(x, list):  # a list of (x, y) batches, not a list of rows given as tuples of numbers
        return bool(x) and isinstance(x[0], tuple) and bool(x[0]) and not np.isscalar(x[0][0])
    return isinstance(x, Iterable)


def make_data(
    model: Model,
    x: Any,
    y: Any = None,
    steps: int | None = None,
    sample_weight: Any = None,
    check_finite: bool = True,
    steps_name: str = "steps_per_epoch",
    label: str = "the iterable",
) -> ArrayData | BatchData:
    """Wrap ``x`` (and ``y``, ``sample_weight``) in the right adapter for ``model``.

    Raises:
        DataError: ``y`` or ``sample_weight`` given beside an iterable of
            batches (they belong in its batches), or malformed arrays.
        ConfigError: ``steps`` given with arrays.
    """
    if x is None:
        raise DataError("x is None; pass the training data")
    if is_batch_iterable(x) and (y is None or not isinstance(x, list)):
        for name, value in (("y", y), ("sample_weight", sample_weight)):
            if value is not None:
                raise DataError(
                    f"{name}: x is an iterable of batches ({type(x).__name__}), so {name} must be None; "
                    f"yield it in each batch instead, as (x, y) or (x, y, sample_weight)"
                )
        return BatchData(x, steps, check_finite, model, label, steps_name)
    if steps is not None:  # refused rather than silently ignored: an epoch of arrays is the arrays
        raise ConfigError(
            f"{steps_name}={steps!r} applies to an iterable of batches; with arrays an epoch is "
            "every sample once: slice the arrays, or pass a generator of batches"
        )
    x, y, sample_weight = resolve_dicts(model, x, y, sample_weight)
    n_in, n_out = model_arity(model)
    data = ArrayData(x, y, n_in, n_out, sample_weight, check_finite, model.describe(), listed_inputs(model))
    data._dtype = model.dtype
    return data
