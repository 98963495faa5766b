"""Arrays given by name: a dict keyed by a model's ``Input`` or output names, put in the model's order;
and the keys an output's values are logged under.

``fit``, ``evaluate``, ``predict`` (:mod:`framework.training.data`,
:mod:`framework.training.iterables`) and a direct call
``model({"a": ..., "b": ...})`` (``Model.cast_inputs``, which imports this
module when given a dict) share these functions; :func:`model_arity` says how
many inputs and outputs the arrays are for.

Targets may leave out the outputs compiled with no loss (``loss=[..., None]``,
as in Keras): a dict without their keys, ``None`` in their place in a list, or
(Keras 3) a list of the other outputs' targets alone. Such an output's target
becomes a ``(N, 0)`` placeholder, which nothing reads; an output with metrics
needs its target.

Log keys (:func:`log_keys`) follow the output names as they are when training
starts: ``<output>_loss`` per output, ``<output>_<metric>`` per metric (the
metric's name alone for a model of one output). Two outputs of one name (a
layer's two outputs, or one tensor given twice) get ``name``, ``name_1``...
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any

import numpy as np

from framework.errors import ConfigError, DataError

if TYPE_CHECKING:
    from framework.models.model import Model

__all__ = [
    "fill_targets",
    "from_dict",
    "input_names",
    "listed_inputs",
    "log_keys",
    "model_arity",
    "resolve_dicts",
    "unique_names",
]


def input_names(model: Model) -> list[str] | None:
    """The names of the model's ``Input``\\ s, in order (``None`` for a model without named inputs)."""
    if model._graph is None:
        return None
    return [str(t.node.layer.name) for t in model._graph.inputs]


def repeated(names: list[str]) -> list[str]:
    """The names that occur more than once in ``names``, sorted."""
    return sorted({name for name in names if names.count(name) > 1})


def from_dict(
    data: dict[Any, Any], names: list[str] | None, label: str, what: str, optional: Collection[str] = ()
) -> Any:
    """The values of ``data`` in the order of ``names`` (a single value for one name).

    ``optional`` names may be missing from ``data``; their values are ``None``.

    Raises:
        DataError: the model has no named inputs (or outputs), two of them
            share a name (a dict cannot tell them apart), or the keys are not
            ``names`` (the unknown and missing ones are listed).
    """
    if names is None:
        raise DataError(
            f"{label}: got a dict with keys {sorted(map(str, data))}; this model has no named {what}s "
            "(a Sequential or a Model subclass): pass an array, or a list of arrays"
        )
    shared = repeated(names)
    if shared:
        raise DataError(
            f"{label}: the model's {what}s {names} share the names {shared}, so a dict cannot tell "
            f"them apart: pass a list in the {what}s' order"
        )
    unknown = [k for k in data if k not in names]
    missing = [k for k in names if k not in data and k not in optional]
    if unknown or missing:
        raise DataError(
            f"{label}: the dict's keys must be the model's {what} names {names}; "
            + (f"unknown: {unknown}" if unknown else "")
            + ("; " if unknown and missing else "")
            + (f"missing: {missing}" if missing else "")
        )
    values = [data.get(k) for k in names]
    return values[0] if len(values) == 1 else values


def listed_inputs(model: Model) -> bool:
    """Whether ``model`` was built on a list of inputs (``Model([a], ...)``): its data is a list too."""
    return model._graph is not None and bool(model._graph.multi_in)


def model_arity(model: Model) -> tuple[int | None, int | None]:
    """How many inputs and outputs ``model`` takes (``None`` for a hand-built subclass)."""
    if model._graph is not None:
        return len(model._graph.inputs), len(model._graph.outputs)
    if hasattr(model, "_stack"):  # a Sequential (duck-typed: training does not import models)
        return 1, 1
    return None, None


def _losses(model: Model) -> list[Any]:
    """The compiled loss of each output (``None``: no loss), or ``[]`` before ``compile``."""
    losses = list(getattr(model, "_losses", None) or [])
    return losses if len(losses) == len(model.output_names) else []


def _samples(model: Model, x: Any) -> int:
    """The number of samples in ``x`` (arrays, or a list of them for several inputs)."""
    n_in = model_arity(model)[0] or 1
    if isinstance(x, (list, tuple)) and x and (n_in > 1 or (len(x) == 1 and hasattr(x[0], "shape"))):
        x = x[0]
    return len(x)


def fill_targets(model: Model, x: Any, y: Any) -> Any:
    """``y`` with a ``(N, 0)`` placeholder for each output compiled without a loss and given no target.

    A list of the targets of the outputs with a loss alone (Keras 3) is spread
    over the outputs first.

    Raises:
        DataError: no target (``None``) for an output with a loss, or with metrics.
    """
    losses = _losses(model)
    if not model.multi_output or not isinstance(y, (list, tuple)) or not losses:
        return y
    lossy = [k for k, loss in enumerate(losses) if loss is not None]
    y = list(y)
    if len(lossy) < len(losses) and len(y) == len(lossy):
        spread: list[Any] = [None] * len(losses)
        for k, target in zip(lossy, y):
            spread[k] = target
        y = spread
    if len(y) != len(losses) or all(target is not None for target in y):
        return y
    names = model.output_names
    measured = {k for k, _, _ in getattr(model, "_metric_slots", [])}
    for k, target in enumerate(y):
        if target is not None:
            continue
        if losses[k] is not None:
            raise DataError(
                f"y[{k}]: no target for output {names[k]!r}, which has the loss {type(losses[k]).__name__}; "
                "pass its targets (only an output compiled with the loss None may go without)"
            )
        if k in measured:
            raise DataError(
                f"y[{k}]: no target for output {names[k]!r}, but the metrics compiled for that output "
                "need one; pass its targets"
            )
        y[k] = np.zeros((_samples(model, x), 0), dtype=np.float32)
    return y


def resolve_dicts(model: Model, x: Any, y: Any, sample_weight: Any) -> tuple[Any, Any, Any]:
    """``x``, ``y`` and ``sample_weight`` with dicts replaced by the arrays in the model's order.

    Targets left out for outputs without a loss are filled in (:func:`fill_targets`).

    Raises:
        DataError: a dict whose keys are not the model's ``Input`` (``x``) or
            output (``y``) names; a ``sample_weight`` dict with an unknown
            output name (outputs left out are unweighted); a dict for outputs
            that share a name; a missing target (:func:`fill_targets`).
    """
    if isinstance(x, dict):
        x = from_dict(x, input_names(model), "x", "Input")
    outputs = model.output_names
    if isinstance(y, dict):
        no_loss = [name for name, loss in zip(outputs, _losses(model)) if loss is None]
        y = from_dict(y, outputs, "y", "output", optional=no_loss)
    y = fill_targets(model, x, y)
    if isinstance(sample_weight, dict):
        unknown = [k for k in sample_weight if k not in outputs]
        if unknown:
            raise DataError(f"sample_weight: unknown output names {unknown}; the outputs are {outputs}")
        if repeated(outputs):
            raise DataError(
                f"sample_weight: the model's outputs {outputs} share the names {repeated(outputs)}, so a "
                "dict cannot tell them apart: pass a list in the outputs' order"
            )
        values = [sample_weight.get(k) for k in outputs]
        sample_weight = values if len(values) > 1 else values[0]
    return x, y, sample_weight


def unique_names(names: list[str]) -> list[str]:
    """``names`` with each repeat renamed ``name_1``, ``name_2``... (skipping names already taken)."""
    taken = set(names)
    out: list[str] = []
    for name in names:
        if name not in out:
            out.append(name)
            continue
        k = 1
        while f"{name}_{k}" in taken or f"{name}_{k}" in out:
            k += 1
        out.append(f"{name}_{k}")
    return out


def log_keys(model: Model, slots: list[tuple[int, Any, str]]) -> tuple[list[str], list[str]]:
    """The keys of the per-output losses (several outputs only) and of the metric ``slots``.

    Raises:
        ConfigError: two keys coincide (two metrics of one name on an output,
            or a metric named ``loss``), since one would hide the other.
    """
    names = unique_names(model.output_names)
    loss_keys = [f"{name}_loss" for name in names] if model.multi_output else []
    metric_keys = [metric.name if len(names) == 1 else f"{names[k]}_{metric.name}" for k, metric, _ in slots]
    keys = ["loss", *loss_keys, *metric_keys]
    if len(set(keys)) != len(keys):
        raise ConfigError(
            f"{model.describe()}: the log keys repeat {repeated(keys)} (of {keys}), so one value would "
            "hide another; give metrics distinct names, none of them 'loss'"
        )
    return loss_keys, metric_keys
