"""Placeholders passed to a layer as call arguments in a functional graph (``key_padding_mask=mask``).

:func:`framework.models.graph.call_placeholders` finds them when the graph is
traced; here the executor's plan holds a :class:`Slot` in their place, and
each run fills in that run's array (:func:`filled`). They are boolean or
integer masks: no gradient flows into them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from framework.errors import ConfigError
from framework.models.graph import Node, SymbolicTensor

__all__ = ["Slot", "accepts_integers", "declared", "extras", "filled", "input_kinds", "slotted"]


class Slot:
    """Stands in the plan for a placeholder passed as a call argument: the run's value at ``slot``."""

    __slots__ = ("slot",)

    def __init__(self, slot: int) -> None:
        self.slot = slot

    def __repr__(self) -> str:
        return f"<the run's value {self.slot}>"


def slotted(node: Node, slot: dict[int, int]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``node``'s extra call arguments, each placeholder replaced by its :class:`Slot`."""
    if not node.side:
        return node.args, node.kwargs
    args, kwargs = list(node.args), dict(node.kwargs)
    for key, t in node.side:
        if isinstance(key, int):
            args[key] = Slot(slot[id(t)])
        else:
            kwargs[key] = Slot(slot[id(t)])
    return tuple(args), kwargs


def extras(entry: tuple[Any, ...]) -> list[Any]:
    """A plan entry's extra call arguments, positional and keyword."""
    return [*entry[5], *entry[6].values()]


def filled(args: tuple[Any, ...], kwargs: dict[str, Any], values: list[Any]) -> tuple[Any, Any]:
    """The call arguments with each :class:`Slot` replaced by the run's array."""
    return (
        tuple(values[a.slot] if isinstance(a, Slot) else a for a in args),
        {k: values[v.slot] if isinstance(v, Slot) else v for k, v in kwargs.items()},
    )


def declared(t: SymbolicTensor) -> np.dtype | None:
    """The bool or integer dtype input ``t`` is declared with, else ``None`` (cast to the model's)."""
    dtype = getattr(t.node.layer, "dtype", None)
    return dtype if dtype is not None and dtype.kind in "biu" else None


def accepts_integers(layer: Any) -> bool:
    """Whether ``layer`` takes integer input as it is (``Embedding``'s indices)."""
    return bool(getattr(layer, "accepts_integer_input", False))


def input_kinds(inputs: list[SymbolicTensor], order: list[Node], owner: str) -> tuple[list[bool], list[Any]]:
    """Per model input: whether its integers are kept (every consumer takes them), and the bool or
    integer dtype it is declared with (``None``: cast to the model's dtype).

    Raises:
        ConfigError: a bool or integer Input feeding a layer that computes in floating point.
    """
    consumers: dict[int, list[Any]] = {}
    # per tensor: (consumer, the dtype a nested model's matching Input declares, or None)
    uses: dict[int, list[tuple[Any, Any]]] = {}
    for node in order:
        # a nested functional model: what its Inputs declare (a layer's own ``_graph`` may be other data)
        inner = getattr(getattr(node.layer, "_graph", None), "declared", None)
        inner = inner if isinstance(inner, list) else []
        for position, t in enumerate(node.inputs):
            consumers.setdefault(id(t), []).append(node.layer)
            kind = inner[position] if position < len(inner) else None
            uses.setdefault(id(t), []).append((node.layer, kind))
    integer_inputs = [
        bool(consumers.get(id(t))) and all(accepts_integers(c) for c in consumers[id(t)]) for t in inputs
    ]
    kinds: list[np.dtype | None] = [declared(t) for t in inputs]
    for t, kind in zip(inputs, kinds):
        # a floating taker: not a layer that takes integers, nor a nested model whose Input here
        # is declared the same kind (a mask handed on)
        takers = [
            c
            for c, inner_kind in uses.get(id(t), [])
            if not accepts_integers(c)
            and (inner_kind is None or kind is None or inner_kind.kind != kind.kind)
        ]
        if kind is not None and takers:
            raise ConfigError(
                f"Model {owner!r}: Input {t.node.layer.name or '(unnamed)'!r} is declared {kind.name}, "
                f"but is the input of {takers[0].describe()}, which computes in floating point; a "
                "bool or integer Input is a call argument (a mask) or feeds a layer that takes "
                "integers (Embedding)"
            )
    return integer_inputs, kinds
