"""Placeholders passed to a layer as call arguments in a functional graph (``key_padding_mask=mask``).

:func:`framework.models.graph.call_placeholders` finds them when the graph is
traced; here the executor's plan holds a :class:`Slot` in their place, and
each run fills in that run's array (:func:`filled`). They are boolean or
integer masks: no gradient flows into them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from framework.models.graph import Node, SymbolicTensor

__all__ = ["Slot", "declared", "extras", "filled", "slotted"]


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
