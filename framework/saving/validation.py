"""What a checkpoint's contents may say: value ranges, call arguments, counters.

The HDF5 structure is checked in :mod:`framework.saving.hdf5`; this module
checks what the values mean:

- arrays: non-finite weights warn (:class:`CheckpointWarning`) or, with
  ``strict=True``, are refused; BatchNorm running variances and optimizer
  second moments must be finite and non-negative, always;
- counters: epochs and optimizer step counts are integers in a sane range;
- functional configs: the extra arguments of each recorded layer call
  (``extra_args``, ``kwargs``) must be parameters the layer's ``forward``
  declares, JSON scalars of the annotated type; nothing else reaches code.
"""

from __future__ import annotations

import inspect
import types
import typing
import warnings
from typing import Any

import numpy as np

from framework.errors import CheckpointError, UnknownNameError
from framework.registry.manager import REGISTRY

__all__ = [
    "CheckpointWarning",
    "MAX_EPOCH",
    "MAX_ITERATIONS",
    "NON_NEGATIVE_BUFFERS",
    "NON_NEGATIVE_SLOTS",
    "check_values",
    "check_epoch",
    "check_call_arguments",
]

#: Largest epoch count a checkpoint may record.
MAX_EPOCH = 10**9
#: Largest optimizer step count a checkpoint may record.
MAX_ITERATIONS = 10**12
#: Buffers (by last name component) that are variances: finite and >= 0.
NON_NEGATIVE_BUFFERS = frozenset({"running_var"})
#: Optimizer slots that are second moments or accumulators of squares: finite and >= 0.
NON_NEGATIVE_SLOTS = frozenset({"exp_avg_sq", "max_exp_avg_sq", "square_avg", "sum"})

_JSON_SCALARS = (type(None), bool, int, float, str)
_CALL_KEYS = frozenset({"args", "list_input", "extra_args", "kwargs", "training", "order", "placeholders"})


class CheckpointWarning(UserWarning):
    """A checkpoint loaded, but holds something suspicious (non-finite weights)."""


def check_values(array: np.ndarray, where: str, *, non_negative: bool, strict: bool) -> None:
    """Check the values of one array just read from ``where``.

    Args:
        array: the values.
        where: the dataset's path, for messages.
        non_negative: the values are variances or second moments: refuse
            NaN, infinities and negative values whatever ``strict`` says.
        strict: refuse (instead of warning about) NaN and infinities.

    Raises:
        CheckpointError: naming ``where``, the count and the first bad value.
    """
    if array.size == 0 or not np.issubdtype(array.dtype, np.floating):
        return
    if non_negative:
        bad = ~(array >= 0) | np.isinf(array)
        if bad.any():
            first = array[bad].flat[0]
            raise CheckpointError(
                f"dataset {where} must be finite and >= 0 (a variance or second moment), but "
                f"{int(bad.sum())} of {array.size} values are not (first: {first!r})"
            )
        return
    finite = np.isfinite(array)
    if finite.all():
        return
    count = int(array.size - finite.sum())
    message = f"dataset {where} holds {count} non-finite values (NaN or inf) of {array.size}"
    if strict:
        raise CheckpointError(message + "; refused (strict=True)")
    warnings.warn(
        message + "; training from it will produce NaN (load with strict=True to refuse)",
        CheckpointWarning,
        stacklevel=4,
    )


def check_epoch(value: Any, where: str) -> int:
    """``value`` as an epoch count: an integer (not a bool) in ``[0, MAX_EPOCH]``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_EPOCH:
        raise CheckpointError(f"{where}: epoch must be an integer in [0, {MAX_EPOCH}], got {value!r}")
    return value


def _forward_parameters(cls: type) -> tuple[list[inspect.Parameter], dict[str, Any]]:
    """The parameters of ``cls.forward`` after ``self``, ``ctx`` and the input, and their hints."""
    forward = inspect.unwrap(getattr(cls, "forward", None) or (lambda self, x: None))
    try:
        params = list(inspect.signature(forward).parameters.values())
    except (TypeError, ValueError):
        return [], {}
    if params and params[0].name == "self":
        params = params[1:]
    if params and params[0].name == "ctx":
        params = params[1:]
    params = params[1:]
    try:
        hints = typing.get_type_hints(forward)
    except Exception:
        hints = {}
    return params, hints


def _scalar_only(hint: Any) -> bool:
    """Whether the annotation ``hint`` admits only plain scalars (``bool``, ``int``, ``float``,
    ``str``, a ``Literal``, or unions of them): no array can be such an argument."""
    if hint in (bool, int, float, str):
        return True
    if typing.get_origin(hint) is typing.Literal:
        return True
    if typing.get_origin(hint) is typing.Union or isinstance(hint, types.UnionType):
        return all(arg is type(None) or _scalar_only(arg) for arg in typing.get_args(hint))
    return False


def _allows(value: Any, hint: Any) -> bool:
    """Whether the JSON scalar ``value`` fits the annotation ``hint`` (unknown hints: yes)."""
    if hint is inspect.Parameter.empty or hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin is typing.Union or isinstance(hint, types.UnionType):
        return any(_allows(value, arg) for arg in typing.get_args(hint))
    if hint is None or hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if typing.get_origin(hint) is typing.Literal:
        return value in typing.get_args(hint)
    return False  # arrays, tuples, objects: a config cannot carry them


def _check_call(layer_name: str, class_name: str, call: Any, where: str) -> None:
    if not isinstance(call, dict) or not set(call) <= _CALL_KEYS:
        raise CheckpointError(
            f"{where}: a call of layer {layer_name!r} must be a dict with keys among {sorted(_CALL_KEYS)}"
        )
    if call.get("training") not in (True, False, None):
        raise CheckpointError(
            f"{where}: layer {layer_name!r}: a call's training must be true, false or null, "
            f"got {call.get('training')!r}"
        )
    extra = call.get("extra_args", [])
    kwargs = call.get("kwargs", {})
    side = call.get("placeholders", {})
    if not isinstance(extra, list) or not isinstance(kwargs, dict) or not isinstance(side, dict):
        raise CheckpointError(
            f"{where}: layer {layer_name!r}: extra_args must be a list, kwargs and placeholders dicts"
        )
    for key, ref in side.items():
        if not (isinstance(ref, list) and len(ref) == 3 and isinstance(ref[0], str)) or not all(
            isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ref[1:]
        ):
            raise CheckpointError(
                f"{where}: layer {layer_name!r}: placeholder {key!r} must be [layer name, call, output], "
                f"got {ref!r}"
            )
    # a placeholder stands in its argument's place (a position holds null): declared, not typed
    kwargs = {**kwargs, **{k: None for k in side if not k.isdigit()}}
    if not isinstance(call.get("list_input", False), bool):
        raise CheckpointError(f"{where}: layer {layer_name!r}: list_input must be true or false")
    order = call.get("order", 0)
    if isinstance(order, bool) or not isinstance(order, int) or order < 0:
        raise CheckpointError(
            f"{where}: layer {layer_name!r}: a call's order must be an integer >= 0, got {order!r}"
        )
    if any(k.isdigit() and int(k) >= len(extra) for k in side):
        raise CheckpointError(
            f"{where}: layer {layer_name!r}: a placeholder's position is past the arguments"
        )
    if not extra and not kwargs:
        return
    try:
        cls = REGISTRY.get("layers", class_name)
    except UnknownNameError:
        return  # rebuilding fails on the unknown class first, with the install hint
    params, hints = _forward_parameters(cls)
    positional = [
        p
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    named = {p.name: p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    if len(extra) > len(positional):
        raise CheckpointError(
            f"{where}: layer {layer_name!r} ({class_name}) is called with {len(extra)} extra positional "
            f"arguments; its forward declares {[p.name for p in positional]}"
        )
    checks = [(p.name, v) for i, (p, v) in enumerate(zip(positional, extra)) if str(i) not in side]
    for key in side:  # an array can only stand for an argument whose declared type takes one
        param = positional[int(key)] if key.isdigit() else named.get(key)
        hint = hints.get(param.name, inspect.Parameter.empty) if param is not None else None
        if hint is not None and _scalar_only(hint):
            raise CheckpointError(
                f"{where}: layer {layer_name!r} ({class_name}): argument {key!r} is declared "
                f"{getattr(hint, '__name__', hint)}, which a placeholder (an array) cannot stand for"
            )
    for key, value in kwargs.items():
        if key not in named:
            raise CheckpointError(
                f"{where}: layer {layer_name!r} ({class_name}) is called with argument {key!r}, which its "
                f"forward does not declare (it takes {sorted(named)})"
            )
        if key not in side:
            checks.append((key, value))
    for key, value in checks:
        hint = hints.get(key, inspect.Parameter.empty)
        if not isinstance(value, _JSON_SCALARS) or not _allows(value, hint):
            raise CheckpointError(
                f"{where}: layer {layer_name!r} ({class_name}): argument {key!r} = {value!r} is not a "
                f"value of its declared type {getattr(hint, '__name__', hint)}"
            )


def check_call_arguments(config: Any, where: str = "/model config") -> None:
    """Check every recorded layer call in a (possibly nested) model config.

    Raises:
        CheckpointError: for a call argument the layer's ``forward`` does not
            declare, or of another type than declared.
    """
    stack = [config]
    seen = 0
    while stack:
        node = stack.pop()
        seen += 1
        if seen > 1_000_000:
            raise CheckpointError(f"{where} is too large (more than a million JSON nodes)")
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        calls = node.get("inbound_nodes")
        if calls is not None:
            if not isinstance(calls, list):
                raise CheckpointError(f"{where}: inbound_nodes of {node.get('name')!r} must be a list")
            for call in calls:
                _check_call(str(node.get("name")), str(node.get("class_name")), call, where)
        stack.extend(value for value in node.values() if isinstance(value, (dict, list)))
