"""A functional graph's calls reordered: a max pool before the monotone activation that feeds it.

For an element-wise, non-decreasing ``f`` whose derivative is 0 wherever it
is flat (ReLU) and a layer whose every output is the maximum of a window of
its input (the max pools), ``maxpool(f(x)) == f(maxpool(x))``, and the
gradient reaches the same inputs (see the pooling maths). ``Sequential``
already runs such a pair pool first (``Sequential._order``), so that ``f``
touches a quarter of the data for a 2x2 pool; :func:`pool_first` does it for
the calls of a functional graph, where the activation's output feeds only
the pool and is not a model output. :func:`one_in_one_out` and
:func:`readers` read such a plan (also for :func:`framework.models.layouts.graph_plan`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from framework.base.traits import declares

__all__ = ["one_in_one_out", "pool_first", "readers"]

Entry = tuple[Any, ...]


def one_in_one_out(entry: Entry) -> bool:
    """Whether a call of ``GraphExecutor``'s plan takes one array, gives one and has no extra arguments.

    ``entry`` is ``(layer, input slots, list input, output slots, list output, args, kwargs)``.
    """
    _, ins, list_in, outs, list_out, args, kwargs = entry
    return len(ins) == len(outs) == 1 and not (list_in or list_out or args or kwargs)


def readers(entries: Sequence[Entry]) -> dict[int, list[int]]:
    """For each value slot, the indices of the calls that read it, in order."""
    found: dict[int, list[int]] = {}
    for i, entry in enumerate(entries):
        for slot in entry[1]:
            found.setdefault(slot, []).append(i)
    return found


def pool_first(
    entries: list[tuple[Any, ...]], pinned: list[bool | None], output_slots: list[int]
) -> tuple[list[tuple[Any, ...]], list[bool | None]]:
    """``entries`` (``GraphExecutor``'s plan) and their ``pinned`` modes, each such pair swapped.

    The activation's call ``(f, [a], ..., [b], ...)`` and the pool's
    ``(pool, [b], ..., [c], ...)`` become ``(pool, [a], ..., [b], ...)`` and
    ``(f, [b], ..., [c], ...)``: the value ``b``, read by nobody else, now
    holds the pooled input. Only calls of one array in and out, without extra
    arguments, in the same mode.
    """
    entries, pinned = list(entries), list(pinned)
    read_by = readers(entries)
    outputs = set(output_slots)
    for i, entry in enumerate(entries):
        if not one_in_one_out(entry) or not declares(entry[0], "monotone_elementwise"):
            continue
        middle = entry[3][0]
        users = read_by.get(middle, [])
        if middle in outputs or len(users) != 1:
            continue
        j = users[0]
        pool = entries[j]
        if not one_in_one_out(pool) or not declares(pool[0], "window_max") or pinned[i] != pinned[j]:
            continue
        entries[i] = (pool[0], entry[1], False, [middle], False, (), {})
        entries[j] = (entry[0], [middle], False, pool[3], False, (), {})
    return entries, pinned
