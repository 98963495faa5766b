"""Batch iterables as data: lists of batches, re-iterable objects and generators.

A batch is ``(x, y)`` or ``(x, y, sample_weight)`` (for ``predict``: ``x``,
``(x,)`` or ``(x, y)``); each part an array, a list of arrays (several inputs
or outputs) or a dict keyed by ``Input`` / output name. Each batch is made
ready as it arrives: dicts put in the model's order, parts converted to arrays,
``x`` and float ``y`` cast to the model's dtype. A batch is refused with a
:class:`~framework.errors.DataError` naming its index (``batch 3 of the
iterable``) when it is not such a tuple, is empty, mixes sample counts, has a
non-numeric dtype or (with ``check_finite``) a NaN or an infinity. An error the
model raises on a batch whose feature shapes differ from the first batch's
becomes a ``DataError`` naming both; any other error raised on a batch gets a
note naming it.

Epochs follow Keras:

- without ``steps`` an epoch is one pass. A list, or an object whose
  ``__iter__`` starts a new pass, is read again each epoch; a generator (any
  one-shot iterator) is read once, so ``fit`` refuses it for several epochs;
- with ``steps`` (``steps_per_epoch``, ``validation_steps``, or the ``steps``
  of ``evaluate`` / ``predict``) an epoch is that many batches, read on from
  where the previous epoch stopped: a re-iterable starts a new pass when one
  ends; a generator that runs out ends the epoch early with a ``UserWarning``,
  and ``fit`` stops training there (Keras's "Your input ran out of data").

``shuffle`` does not apply: the iterable yields its batches in its own order.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from framework.errors import DataError
from framework.training.checks import check_dtype, check_finite_array
from framework.training.named import resolve_dicts

if TYPE_CHECKING:
    from framework.models.model import Model

__all__ = ["BatchData"]


class BatchData:
    """An iterable of ``(x, y)`` or ``(x, y, sample_weight)`` batches, served ready for ``model``.

    Shapes: each batch's arrays share their first axis ``B`` (``B >= 1``, free
    to change from batch to batch): ``x`` ``(B, ...)`` (a list of them for
    several inputs), ``y`` ``(B, ...)`` (a list for several outputs),
    ``sample_weight`` ``(B,)`` or ``(B, 1)``, served as ``(B,)`` float64 (a
    list per output for several outputs).

    Args:
        source: a list of batches, a re-iterable object or a generator.
        steps: batches per epoch (``None``: one pass).
        check_finite: refuse NaN/Inf in each batch.
        model: the model the batches are for: dicts are resolved by its names
            and ``x`` cast to its dtype (``None``: batches are checked only).
        label: how messages name the iterable (``"the iterable"``, ``"validation_data"``).
        steps_name: the argument that sets ``steps``, for messages.
        targets: whether each batch must carry ``y`` (``False`` for ``predict``).
    """

    def __init__(
        self,
        source: Iterable[Any],
        steps: int | None = None,
        check_finite: bool = True,
        model: Model | None = None,
        label: str = "the iterable",
        steps_name: str = "steps_per_epoch",
        targets: bool = True,
    ) -> None:
        self.source = source
        self.steps_per_epoch = steps
        self.one_shot = iter(source) is source
        self.n = None
        self.check_finite = check_finite
        self.model = model
        self.label = label
        self.steps_name = steps_name
        self.targets = targets
        self.read = 0  # batches served so far
        self.ran_out = False  # a one-shot source ended before an epoch's ``steps`` batches
        self._iterator: Iterator[Any] | None = iter(source) if self.one_shot else None
        self._position = 0  # the index of the next item in the current pass
        self._ahead: list[Any] = []  # an item read ahead by :meth:`exhausted`
        self._first: tuple[Any, ...] | None = None  # the first batch's feature shapes
        self._current = ""  # how errors name the batch last served
        self._changed = ""  # how its feature shapes differ from the first batch's ("" if not)

    def steps(self, batch_size: int = 0) -> int | None:
        """Batches per epoch: ``steps``, else the source's ``len`` (``None`` when unknown)."""
        if self.steps_per_epoch is not None:
            return self.steps_per_epoch
        if self.one_shot or not hasattr(self.source, "__len__"):
            return None
        return len(self.source)  # type: ignore[arg-type]

    def refuse_epochs(self, owner: str, epochs: int) -> None:
        """Refuse a one-shot source without ``steps`` for more than one epoch (it is read once)."""
        if self.one_shot and self.steps_per_epoch is None and epochs > 1:
            raise DataError(
                f"{owner}: {self.label} is a generator (a one-shot iterator), read once, but {epochs} "
                f"epochs would read it {epochs} times; pass {self.steps_name} (batches per epoch, "
                "from an endless generator), or a re-iterable such as a list of batches or an object "
                "whose __iter__ starts a new pass"
            )

    def exhausted(self) -> bool:
        """Whether a one-shot source read in ``steps`` has run out (reads one batch ahead to know).

        Warns once when it ran out at the end of an epoch; an epoch cut short warned already.
        """
        if self.ran_out:
            return True
        if not (self.one_shot and self.steps_per_epoch is not None and self.read):
            return False
        if not self._ahead:
            item = next(self._iterator, _END)  # type: ignore[arg-type]
            if item is _END:
                self.ran_out = True
                self._warn(0)
                return True
            self._ahead.append(item)
            self._position += 1
        return False

    def batches(
        self, batch_size: int = 0, shuffle: bool = False, rng: Any = None
    ) -> Iterator[tuple[Any, Any, Any]]:
        """One epoch's ``(x, y, sample_weight)`` batches (``batch_size``, ``shuffle`` and ``rng`` unused).

        Raises:
            DataError: for a malformed batch, or when the epoch yields no batch.
        """
        limit = self.steps_per_epoch
        if limit is None and not self.one_shot:
            self._iterator = None  # each epoch is a new pass
        count = 0
        while limit is None or count < limit:
            item = self._next(wrap=limit is not None)
            if item is _END:
                break
            batch = self._prepare(item, self._position - 1)
            self.read += 1
            count += 1
            yield batch
        if count == 0:
            raise DataError(self._nothing())
        if limit is not None and count < limit:
            self.ran_out = True
            self._warn(count)

    def blame(self, exc: Exception) -> None:
        """Name the batch the model refused: a DataError when its shapes changed, else a note.

        Raises:
            DataError: when the batch's feature shapes differ from the first batch's.
        """
        if self._changed:
            raise DataError(f"{self._current}: {self._changed}; the model refused it: {exc}") from exc
        if self._current:
            exc.add_note(f"(raised on {self._current})")

    # -- reading --------------------------------------------------------------------------------

    def _next(self, wrap: bool) -> Any:
        if self._ahead:
            return self._ahead.pop()
        if self._iterator is None:
            self._iterator, self._position = iter(self.source), 0
        item = next(self._iterator, _END)
        if item is _END and wrap and not self.one_shot:  # a new pass over the re-iterable
            self._iterator, self._position = iter(self.source), 0
            item = next(self._iterator, _END)
        if item is not _END:
            self._position += 1
        return item

    def _nothing(self) -> str:
        if self.read:
            return (
                f"{self.label} yielded no more batches: it ran out after {self.read} batches "
                f"(a generator is read once); pass {self.steps_name} with an endless generator, "
                "or a re-iterable such as a list"
            )
        return f"{self.label} yielded no batches"

    def _warn(self, count: int) -> None:
        if count:
            what = f"after {count} of an epoch's {self.steps_per_epoch} batches: the epoch ends early, and"
        else:
            what = f"after {self.read} batches, before the next epoch:"
        warnings.warn(
            f"{self.label} ran out of data {what} fit stops training ({self.read} batches read in all). "
            f"Pass an endless generator, or one of {self.steps_name} * epochs batches",
            UserWarning,
            stacklevel=4,
        )

    # -- making a batch ready -------------------------------------------------------------------

    def _prepare(self, item: Any, index: int) -> tuple[Any, Any, Any]:
        self._current = where = f"batch {index} of {self.label}"
        try:
            xb, yb, wb = self._split(item)
            if self.model is not None and any(isinstance(p, dict) for p in (xb, yb, wb)):
                xb, yb, wb = resolve_dicts(self.model, xb, yb, wb)
            xs, multi_x = self._arrays(xb, "x", self._count("num_inputs"))
            ys: list[np.ndarray] | None = None
            multi_y = False
            if yb is not None:
                ys, multi_y = self._arrays(yb, "y", self._count("num_outputs"))
            size = self._size(xs, ys)
            ws = None if wb is None else self._weights(wb, size, len(ys) if ys else 1)
            if self.model is not None:
                xs = self._cast(xs, multi_x)
                dtype = self.model.dtype
                ys = ys and [y.astype(dtype) if y.dtype.kind == "f" and y.dtype != dtype else y for y in ys]
        except DataError as exc:
            raise DataError(f"{where}: {exc}") from None
        if self.check_finite:
            weights = ws or []
            named: list[tuple[str, Any]] = [(f"x[{k}]" if multi_x else "x", a) for k, a in enumerate(xs)]
            named += [(f"y[{k}]" if multi_y else "y", a) for k, a in enumerate(ys or [])]
            many = len(weights) > 1
            named += [(f"sample_weight[{k}]" if many else "sample_weight", w) for k, w in enumerate(weights)]
            for tag, a in named:
                if a is not None:
                    check_finite_array(a, f"{tag} of {where}")
        self._track(index, xs, ys)
        return (
            xs if multi_x else xs[0],
            None if ys is None else (ys if multi_y else ys[0]),
            None if ws is None else (ws if len(ws) > 1 else ws[0]),
        )

    def _split(self, item: Any) -> tuple[Any, Any, Any]:
        if not self.targets:  # predict: x, (x,), (x, y) or (x, y, sample_weight)
            if isinstance(item, tuple):
                if not 1 <= len(item) <= 3:
                    raise DataError(
                        f"expected x, (x,), (x, y) or (x, y, sample_weight), got a tuple of {len(item)}"
                    )
                return item[0], None, None
            return item, None, None
        if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
            got = type(item).__name__ + (f" of length {len(item)}" if isinstance(item, (tuple, list)) else "")
            missing = " (no targets y)" if isinstance(item, (tuple, list)) and len(item) == 1 else ""
            raise DataError(f"expected an (x, y) or (x, y, sample_weight) tuple, got a {got}{missing}")
        return item[0], item[1], item[2] if len(item) == 3 else None

    def _count(self, attribute: str) -> int | None:
        return None if self.model is None else getattr(self.model, attribute) or 1

    @staticmethod
    def _arrays(part: Any, name: str, expected: int | None) -> tuple[list[np.ndarray], bool]:
        """``part`` as a list of arrays, and whether it holds several (one per input or output)."""
        multi = isinstance(part, (list, tuple)) and (expected is None or expected > 1)
        if expected is not None and expected > 1 and (not multi or len(part) != expected):
            got = f"a list of {len(part)}" if multi else f"a {type(part).__name__}"
            what = "inputs" if name == "x" else "outputs"
            raise DataError(
                f"{name}: the model has {expected} {what}, expected a list of {expected} arrays, got {got}"
            )
        out = []
        for k, a in enumerate(part if multi else [part]):
            tag = f"{name}[{k}]" if multi else name
            try:
                a = np.asarray(a)
            except (ValueError, TypeError) as exc:
                raise DataError(f"{tag}: cannot convert a {type(a).__name__} to an array: {exc}") from None
            check_dtype(a, tag)
            if a.ndim == 0:
                raise DataError(f"{tag}: expected an array with a batch axis, got a 0-d array {a!r}")
            out.append(a)
        return out, multi

    @staticmethod
    def _size(xs: list[np.ndarray], ys: list[np.ndarray] | None) -> int:
        targets = ys or []
        lengths = {f"x[{k}]" if len(xs) > 1 else "x": len(a) for k, a in enumerate(xs)}
        lengths.update({f"y[{k}]" if len(targets) > 1 else "y": len(a) for k, a in enumerate(targets)})
        if len(set(lengths.values())) > 1:
            listing = ", ".join(f"{k} has {v}" for k, v in lengths.items())
            raise DataError(f"every array of a batch needs the same number of samples, but {listing}")
        size = next(iter(lengths.values()))
        if size == 0:
            raise DataError("the batch is empty (0 samples)")
        return size

    @staticmethod
    def _weights(wb: Any, size: int, n_out: int) -> list[Any]:
        """One ``(size,)`` float64 array (or ``None``) per output."""
        if isinstance(wb, (list, tuple)) and n_out > 1:
            if len(wb) != n_out:
                raise DataError(f"sample_weight: the model has {n_out} outputs, got a list of {len(wb)}")
            per_output = list(wb)
        else:
            per_output = [wb] * n_out
        out: list[Any] = []
        for k, w in enumerate(per_output):
            tag = f"sample_weight[{k}]" if n_out > 1 else "sample_weight"
            if w is None:
                out.append(None)
                continue
            try:
                w = np.asarray(w)
            except (ValueError, TypeError) as exc:
                raise DataError(f"{tag}: cannot convert a {type(w).__name__} to an array: {exc}") from None
            check_dtype(w, tag)
            if w.ndim == 2 and w.shape[1] == 1:
                w = w[:, 0]
            if w.shape != (size,):
                raise DataError(f"{tag}: expected one weight per sample, shape ({size},), got {w.shape}")
            out.append(w.astype(np.float64, copy=False))
        return out

    def _cast(self, xs: list[np.ndarray], multi: bool) -> list[np.ndarray]:
        cast = self.model.cast_inputs(xs if multi else xs[0])  # type: ignore[union-attr]
        return list(cast) if multi else [cast]

    def _track(self, index: int, xs: list[np.ndarray], ys: list[np.ndarray] | None) -> None:
        """Remember the first batch's feature shapes; describe how this batch's differ."""
        shapes = tuple(a.shape[1:] for a in xs), tuple(a.shape[1:] for a in ys or [])
        if self._first is None:
            self._first = shapes
        self._changed = ""
        if shapes != self._first:
            diffs = [
                f"{name}{f'[{k}]' if len(now) > 1 else ''} has feature shape {a}, the first batch had {b}"
                for name, now, then in (("x", shapes[0], self._first[0]), ("y", shapes[1], self._first[1]))
                for k, (a, b) in enumerate(zip(now, then))
                if a != b
            ]
            self._changed = (
                "; ".join(diffs) or f"its shapes {shapes} differ from the first batch's {self._first}"
            )


_END = object()
