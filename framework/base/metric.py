"""Base class of metrics: Keras's stateful protocol, the running mean, and plain functions as metrics.

A metric is updated batch by batch and read once per epoch:

- Keras's names: ``update_state(y_true, y_pred, sample_weight=None)``,
  ``result()``, ``reset_state()`` (note Keras's argument order);
- the training loop's names: ``update(y_pred, y_true, sample_weight=None)``,
  ``result()``, ``reset()``. The base class maps each pair onto the other, so a
  subclass overrides either spelling.

Predictions of a floating dtype narrower than float32 (a float16 model's
outputs) are widened to float32 before a metric sees them (as losses are, see
:class:`~framework.base.loss.Loss`), and running means accumulate in float64,
so a float16 model's metrics neither overflow nor round away.

``bind_output(expects, link)`` tells a metric what the model outputs (the
compiled loss's ``expects`` / ``link``: logits or probabilities, softmax or
sigmoid); accuracy-like metrics threshold and arg-max accordingly.

``get_state()`` / ``set_state(state)`` / ``merge_state(metrics)`` (Keras's
name) move a metric's counts between instances: instances fed different
samples, merged, give the value over all the samples, exactly. Data-parallel
``fit`` merges each metric over the ranks this way.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from framework.base.config import Configurable
from framework.base.loss import check_sample_weight, widen
from framework.base.metric_state import peers_of, state_array
from framework.base.validation import numeric_array
from framework.errors import ConfigError, DataError, ShapeError
from framework.registry.namespace import FUNCTION_WRAPPERS

__all__ = ["FunctionMetric", "Metric", "result_value"]

_EXPECTS = (None, "logits", "probabilities")
_LINKS = (None, "softmax", "sigmoid")


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class Metric(Configurable):
    """A quantity reported during training, accumulated over the samples of an epoch.

    The default state is a (sample-weighted) running mean: subclasses
    implement ``values(y_pred, y_true)`` (a value per sample, shape ``(N,)``
    or ``(N, d...)``) or ``compute(y_pred, y_true) -> float`` (the batch
    mean). A metric that is not a mean of per-sample values (precision, AUC,
    a confusion matrix) overrides ``update_state`` / ``result`` /
    ``reset_state`` (or the loop's ``update`` / ``reset``) and keeps its own
    counts, so its epoch value is exact, not a mean of batch values. A batch
    of no samples changes no state. ``metric(y_pred, y_true)`` is the value
    of that one batch, whichever kind the metric is; the state is untouched.

    Args:
        name: the key in ``History.history`` and ``evaluate``'s dict; defaults
            to the registered name (``accuracy``), or, given to ``compile`` by a
            string, to that string (``"acc"``), as in Keras.

    Attributes:
        scalar: ``True`` when ``result()`` is a number. A metric whose result
            is an array (``ConfusionMatrix``, ``F1Score(average=None)``) sets
            it ``False``: ``fit``'s ``History`` then keeps that array per epoch
            (as Keras does) and ``evaluate`` returns it; see
            :func:`result_value`.
        output_expects, output_link: what :meth:`bind_output` stored
            (``None`` until a model binds the metric); ``output_bound``: whether it did.
    """

    scalar: bool = True

    def __init__(self, name: str | None = None) -> None:
        self._name = name
        self.output_expects: str | None = None
        self.output_link: str | None = None
        self.output_bound = False
        self._total = 0.0
        self._count = 0.0

    @property
    def name(self) -> str:
        if self._name:
            return self._name
        from framework.registry.manager import REGISTRY

        return REGISTRY.name_of("metrics", self) or _snake(type(self).__name__)

    def bind_output(self, expects: str | None, link: str | None) -> None:
        """Record what the model outputs; ``compile`` calls it with the loss's ``expects`` / ``link``.

        Args:
            expects: ``"logits"``, ``"probabilities"`` or ``None`` (unknown or
                regression).
            link: ``"softmax"``, ``"sigmoid"`` or ``None``.

        Raises:
            ConfigError: an unknown value.
        """
        if expects not in _EXPECTS:
            raise ConfigError(
                f"{type(self).__name__}.bind_output: expects must be one of {_EXPECTS}, got {expects!r}"
            )
        if link not in _LINKS:
            raise ConfigError(
                f"{type(self).__name__}.bind_output: link must be one of {_LINKS}, got {link!r}"
            )
        self.output_expects = expects
        self.output_link = link
        self.output_bound = True

    # -- the running mean -------------------------------------------------

    def values(self, y_pred: np.ndarray, y_true: np.ndarray) -> np.ndarray | None:
        """A value per sample (shape ``(N,)`` or ``(N, d...)``), or ``None`` if only a batch mean exists."""
        return None

    def compute(self, y_pred: np.ndarray, y_true: np.ndarray) -> float:
        """The batch mean; by default the mean of :meth:`values`."""
        values = self.values(y_pred, y_true)
        if values is None:
            raise NotImplementedError(f"{type(self).__name__} implements neither values() nor compute()")
        values = np.asarray(values)
        if not values.size:
            return float("nan")
        narrow = np.issubdtype(values.dtype, np.floating) and values.dtype.itemsize < 4
        return float(values.mean(dtype=np.float64) if narrow else values.mean())

    def __call__(self, y_pred: np.ndarray, y_true: np.ndarray) -> Any:
        """The value on one batch alone (the state is left untouched).

        A running-mean metric returns :meth:`compute` (a float). A metric that
        keeps its own counts (it overrides ``update_state`` / ``update`` and
        implements neither ``values`` nor ``compute``) is evaluated on a
        deep copy of itself, reset and updated with this batch: its
        ``result()`` (a float, or an array when not ``scalar``) is returned.
        """
        y_pred = widen(y_pred)
        if type(self).values is not Metric.values or type(self).compute is not Metric.compute:
            return float(self.compute(y_pred, y_true))
        batch = copy.deepcopy(self)
        batch.reset()
        batch.update(y_pred, y_true)
        return result_value(batch)

    def _accumulate(self, y_true: Any, y_pred: Any, sample_weight: Any) -> None:
        """Add a batch to the running mean; an empty batch (``N = 0``) is checked but changes nothing."""
        n = _batch_size(self, y_pred)
        y_pred = widen(y_pred)
        if sample_weight is None:
            mean = float(self.compute(y_pred, y_true))
            if n:
                self._total += mean * n
                self._count += n
            return
        weight = _sample_weight(self, sample_weight, n)
        values = self.values(y_pred, y_true)
        if values is None:
            raise ConfigError(
                f"{type(self).__name__} does not take sample_weight: it has no per-sample values()"
            )
        if not n:
            return
        per_sample = np.asarray(values, dtype=np.float64).reshape(n, -1).mean(axis=1)
        self._total += float((per_sample * weight).sum())
        self._count += float(weight.sum())

    # -- the two spellings, mapped onto each other ------------------------

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        """Keras's order: add a batch to the state (``sample_weight`` shape ``(N,)``)."""
        if type(self).update is not Metric.update:
            if sample_weight is None:
                self.update(y_pred, y_true)
            else:
                self.update(y_pred, y_true, sample_weight)
            return
        self._accumulate(y_true, y_pred, sample_weight)

    def update(self, y_pred: Any, y_true: Any, sample_weight: Any = None) -> None:
        """The training loop's order: add a batch to the state."""
        if type(self).update_state is not Metric.update_state:
            self.update_state(y_true, y_pred, sample_weight)
            return
        self._accumulate(y_true, y_pred, sample_weight)

    def result(self) -> Any:
        """The value over everything added since the last reset (``nan`` before any batch)."""
        return self._total / self._count if self._count else float("nan")

    def reset_state(self) -> None:
        """Keras's name: forget every batch."""
        if type(self).reset is not Metric.reset:
            self.reset()
            return
        self._total = 0.0
        self._count = 0.0

    def reset(self) -> None:
        """The training loop's name: forget every batch."""
        if type(self).reset_state is not Metric.reset_state:
            self.reset_state()
            return
        self._total = 0.0
        self._count = 0.0

    # -- the state: read, written, merged ----------------------------------

    @classmethod
    def merges(cls) -> bool:
        """Whether this kind of metric can merge states: it keeps the running mean, or it
        keeps its own counts and implements :meth:`get_state`, :meth:`set_state` and
        :meth:`merge_state` all three."""
        if cls._keeps_running_mean():
            return True
        names = ("get_state", "set_state", "merge_state")
        return all(getattr(cls, name) is not getattr(Metric, name) for name in names)

    @classmethod
    def _keeps_running_mean(cls) -> bool:
        """Whether the state is the base class's running mean: the updates are not overridden, or the
        class says so (``_running_mean = True``: it overrides them but still adds to the same sums)."""
        for name in ("update_state", "update"):
            owner = next(k for k in cls.__mro__ if name in k.__dict__)
            if owner is not Metric and not owner.__dict__.get("_running_mean", False):
                return False
        return True

    def _require_mean(self, method: str) -> None:
        if not type(self)._keeps_running_mean():
            raise ConfigError(
                f"{type(self).__name__}.{method}: this metric keeps its own counts (it overrides "
                "update_state or update), so it must implement get_state, set_state and merge_state itself"
            )

    def get_state(self) -> dict[str, Any]:
        """The counts since the last reset, as plain values (numbers, strings, ``None``, NumPy arrays).

        The running mean's state is ``{"total": sum of w * value, "count": sum of w}``.
        A metric that keeps its own counts overrides this, :meth:`set_state` and
        :meth:`merge_state`. The dict is new; changing it leaves the metric as it is.
        """
        self._require_mean("get_state")
        return {"total": self._total, "count": self._count}

    def set_state(self, state: dict[str, Any]) -> None:
        """Replace the counts with ``state``, a dict :meth:`get_state` of the same kind of metric returned."""
        self._require_mean("set_state")
        total, count = (state_array(self, state, key, np.float64) for key in ("total", "count"))
        if total.ndim or count.ndim:
            raise ConfigError(
                f"{type(self).__name__}.set_state: total and count must be numbers, got arrays of shapes "
                f"{total.shape} and {count.shape}"
            )
        self._total, self._count = float(total), float(count)

    def merge_state(self, metrics: Iterable[Metric]) -> None:
        """Keras's name: add the counts of ``metrics`` (the same class, fed other samples) to this one's.

        ``result()`` is then the value over the samples of this metric and all
        of ``metrics``, as if one metric had seen every batch: exact for means,
        sample-weighted means and ratios of counts alike. ``metrics`` are left
        as they are.

        Raises:
            ConfigError: a metric of another class, or one that cannot merge.
        """
        self._require_mean("merge_state")
        for other in peers_of(self, metrics):
            self._total += other._total
            self._count += other._count

    def get_config(self) -> dict[str, Any]:
        return {"name": self._name} if self._name else {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _batch_size(metric: Metric, y_pred: Any) -> int:
    """``len(y_pred)``, the batch size; else DataError (``None``) or ShapeError (no batch axis)
    naming the metric."""
    try:
        return len(y_pred)
    except TypeError:
        pass
    owner = type(metric).__name__
    if y_pred is None:
        raise DataError(f"{owner}: y_pred must be an array of predictions of shape (N, ...), got None")
    raise ShapeError(
        f"{owner}: y_pred must have a batch axis, shape (N, ...), got {type(y_pred).__name__} "
        f"of shape {np.shape(y_pred)}"
    )


def _sample_weight(metric: Metric, sample_weight: Any, n: int) -> np.ndarray:
    """``sample_weight`` as a float64 ``(N,)`` array, else DataError (not numbers) or ShapeError
    naming the metric."""
    owner = type(metric).__name__
    return check_sample_weight(owner, numeric_array(owner, "sample_weight", sample_weight), n, np.float64)


def result_value(metric: Metric) -> float | np.ndarray:
    """``metric.result()`` as the training loop reports it: a float, or an array copy if not ``scalar``."""
    value = metric.result()
    if getattr(metric, "scalar", True):
        return float(value)
    return np.array(value, copy=True)


class FunctionMetric(Metric):
    """A plain function ``fn(y_true, y_pred) -> array or float`` used as a metric (Keras's signature).

    ``metrics=[my_fn]`` in ``compile`` wraps ``my_fn`` in this class; its
    name (the history key) is ``my_fn.__name__``. If ``fn`` returns a value
    per sample (an array whose first axis is the batch, ``(N,)`` or
    ``(N, d...)``) the epoch value is the (sample-weighted) mean of those
    values; if it returns a number, the number is taken as the batch mean and
    weighted by the batch size (or the batch's total sample weight), so
    batches of different sizes average correctly.

    Args:
        fn: the function; note the argument order ``(y_true, y_pred)``.
        name: the history key, default ``fn.__name__``.

    Example:
        >>> import numpy as np
        >>> def mean_error(y_true, y_pred):
        ...     return y_pred - y_true
        >>> m = FunctionMetric(mean_error)
        >>> m.update_state(np.array([0.0, 0.0]), np.array([1.0, 3.0]))
        >>> m.name, m.result()
        ('mean_error', 2.0)
    """

    _running_mean = True  # its update_state adds to the base class's sums

    def __init__(self, fn: Callable[[Any, Any], Any], name: str | None = None) -> None:
        if not callable(fn):
            raise ConfigError(f"FunctionMetric: fn must be callable fn(y_true, y_pred), got {fn!r}")
        super().__init__(name=name or getattr(fn, "__name__", None) or type(fn).__name__)
        self.fn = fn

    @property
    def serialized_name(self) -> str:
        """What a saved compile config holds: the function's name (resolve it with ``custom_objects``)."""
        return getattr(self.fn, "__name__", None) or self.name

    def _batch(self, y_true: Any, y_pred: Any) -> np.ndarray:
        raw = self.fn(y_true, widen(y_pred))
        if raw is None:
            raise ConfigError(
                f"metric function {self.name!r} returned None; expected a number or a value per sample "
                "(does it miss a return statement?)"
            )
        out = np.asarray(
            numeric_array(f"metric function {self.name!r}", "its result", raw, ConfigError), dtype=np.float64
        )
        if out.ndim and out.shape[0] != _batch_size(self, y_pred):
            raise ShapeError(
                f"metric function {self.name!r} returned shape {out.shape}; expected a number or a value "
                f"per sample with first axis {len(y_pred)} (the batch)"
            )
        return out

    def compute(self, y_pred: np.ndarray, y_true: np.ndarray) -> float:
        out = self._batch(y_true, y_pred)
        return float(out.mean()) if out.size else float("nan")

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        n = _batch_size(self, y_pred)
        out = self._batch(y_true, y_pred)
        weight = np.ones(n) if sample_weight is None else _sample_weight(self, sample_weight, n)
        if not n:  # an empty batch changes nothing (its mean would be nan)
            return
        if out.ndim == 0:
            self._total += float(out) * float(weight.sum())
        else:
            self._total += float((out.reshape(n, -1).mean(axis=1) * weight).sum())
        self._count += float(weight.sum())

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name}

    def __repr__(self) -> str:
        return f"FunctionMetric({getattr(self.fn, '__qualname__', self.fn)!r}, name={self.name!r})"


FUNCTION_WRAPPERS["metrics"] = FunctionMetric
