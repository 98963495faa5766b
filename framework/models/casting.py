"""Casting a model's inputs: arrays to the model's dtype, integer indices kept where every consumer
takes them (``Embedding``), a bool or integer ``Input`` to its own dtype (a mask)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from framework.base.inputs import check_real

if TYPE_CHECKING:
    from framework.models.model import Model

__all__ = ["cast_model_inputs"]


def cast_model_inputs(model: Model, x: Any) -> Any:
    """``x`` with every array cast to the model's dtype (integers kept where a layer wants them).

    A dict is read by the model's ``Input`` names, as ``predict`` reads it.
    """
    if isinstance(x, dict):
        from framework.training.named import from_dict, input_names

        x = from_dict(x, input_names(model), "x", "Input")
    dtype = model.dtype
    hand = model._graph is None and "_stack" not in vars(model)  # a subclass: a list of arrays stays one
    if not hand and (model.num_inputs or 1) == 1 and isinstance(x, (list, tuple)) and len(x) == 1:
        if isinstance(x[0], np.ndarray):  # [x] for a model of one input is x, as fit and predict read it
            x = x[0]
    listed = model._graph is not None and model._graph.multi_in  # Model([a], ...): a list is per input
    many = isinstance(x, (list, tuple)) and (hand or listed) and all(isinstance(a, np.ndarray) for a in x)
    if many or (isinstance(x, (list, tuple)) and (model.num_inputs or 1) > 1):
        flags = model._integer_inputs()
        return [
            _cast(model, a, _input_dtype(model, i, dtype), i < len(flags) and flags[i])
            for i, a in enumerate(x)
        ]
    keep_int = model._integer_inputs()[0] if model.num_inputs == 1 else False
    return _cast(model, x, _input_dtype(model, 0, dtype), keep_int)


def _input_dtype(model: Model, i: int, dtype: np.dtype) -> np.dtype:
    """The dtype input ``i`` is cast to: its Input's own if declared bool or integer, else ``dtype``."""
    declared = model._graph.declared if model._graph is not None else []
    own = declared[i] if i < len(declared) else None
    return own if own is not None else dtype


def _cast(model: Model, a: Any, dtype: np.dtype, keep_int: bool) -> Any:
    """``a`` as ``dtype`` (the model's, or a bool or integer Input's), integers kept with ``keep_int``."""
    if not isinstance(a, np.ndarray):
        a = np.asarray(a)
    check_real(model, a)  # a complex, object or string array is refused, never cast
    if a.dtype == dtype or (keep_int and dtype.kind == "f" and np.issubdtype(a.dtype, np.integer)):
        return a
    return a.astype(dtype)
