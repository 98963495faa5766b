"""Arrays given by name: a dict keyed by a model's ``Input`` or output names, put in the model's order.

``fit``, ``evaluate``, ``predict`` (:mod:`framework.training.data`,
:mod:`framework.training.iterables`) and a direct call
``model({"a": ..., "b": ...})`` (``Model.cast_inputs``, which imports this
module when given a dict) share these functions; :func:`model_arity` says how
many inputs and outputs the arrays are for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from framework.errors import DataError

if TYPE_CHECKING:
    from framework.models.model import Model

__all__ = ["from_dict", "input_names", "model_arity", "resolve_dicts"]


def input_names(model: Model) -> list[str] | None:
    """The names of the model's ``Input``\\ s, in order (``None`` for a model without named inputs)."""
    if model._graph is None:
        return None
    return [str(t.node.layer.name) for t in model._graph.inputs]


def from_dict(data: dict[Any, Any], names: list[str] | None, label: str, what: str) -> Any:
    """The values of ``data`` in the order of ``names`` (a single value for one name).

    Raises:
        DataError: the model has no named inputs (or outputs), or the keys are
            not exactly ``names`` (the unknown and missing ones are listed).
    """
    if names is None:
        raise DataError(
            f"{label}: got a dict with keys {sorted(map(str, data))}; this model has no named {what}s "
            "(a Sequential or a Model subclass): pass an array, or a list of arrays"
        )
    unknown = [k for k in data if k not in names]
    missing = [k for k in names if k not in data]
    if unknown or missing:
        raise DataError(
            f"{label}: the dict's keys must be the model's {what} names {names}; "
            + (f"unknown: {unknown}" if unknown else "")
            + ("; " if unknown and missing else "")
            + (f"missing: {missing}" if missing else "")
        )
    values = [data[k] for k in names]
    return values[0] if len(values) == 1 else values


def model_arity(model: Model) -> tuple[int | None, int | None]:
    """How many inputs and outputs ``model`` takes (``None`` for a hand-built subclass)."""
    if model._graph is not None:
        return len(model._graph.inputs), len(model._graph.outputs)
    if hasattr(model, "_stack"):  # a Sequential (duck-typed: training does not import models)
        return 1, 1
    return None, None


def resolve_dicts(model: Model, x: Any, y: Any, sample_weight: Any) -> tuple[Any, Any, Any]:
    """``x``, ``y`` and ``sample_weight`` with dicts replaced by the arrays in the model's order.

    Raises:
        DataError: a dict whose keys are not the model's ``Input`` (``x``) or
            output (``y``) names; a ``sample_weight`` dict with an unknown
            output name (outputs left out are unweighted).
    """
    if isinstance(x, dict):
        x = from_dict(x, input_names(model), "x", "Input")
    outputs = model.output_names
    if isinstance(y, dict):
        y = from_dict(y, outputs, "y", "output")
    if isinstance(sample_weight, dict):
        unknown = [k for k in sample_weight if k not in outputs]
        if unknown:
            raise DataError(f"sample_weight: unknown output names {unknown}; the outputs are {outputs}")
        values = [sample_weight.get(k) for k in outputs]
        sample_weight = values if len(values) > 1 else values[0]
    return x, y, sample_weight
