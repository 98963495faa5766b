"""A functional graph's calls reordered: a max pool before the monotone activation that feeds it.

For an element-wise, non-decreasing ``f`` whose derivative is 0 wherever it
is flat (ReLU) and a layer whose every output is the maximum of a window of
its input (the max pools), ``maxpool(f(x)) == f(maxpool(x))``, and the
gradient reaches the same inputs (see the pooling maths). ``Sequential``
already runs such a pair pool first (``Sequential._order``), so that ``f``
touches a quarter of the data for a 2x2 pool; :func:`pool_first` does it for
the calls of a functional graph, where the activation's output feeds only
the pool and is not a model output.
"""

from __future__ import annotations

from typing import Any

from framework.base.traits import declares

__all__ = ["pool_first"]


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
    readers: dict[int, list[int]] = {}
    for i, entry in enumerate(entries):
        for s in entry[1]:
            readers.setdefault(s, []).append(i)
    outputs = set(output_slots)

    def simple(entry: tuple[Any, ...]) -> bool:
        _, ins, list_in, outs, list_out, args, kwargs = entry
        return len(ins) == len(outs) == 1 and not (list_in or list_out or args or kwargs)

    for i, entry in enumerate(entries):
        if not simple(entry) or not declares(entry[0], "monotone_elementwise"):
            continue
        middle = entry[3][0]
        users = readers.get(middle, [])
        if middle in outputs or len(users) != 1:
            continue
        j = users[0]
        pool = entries[j]
        if not simple(pool) or not declares(pool[0], "window_max") or pinned[i] != pinned[j]:
            continue
        entries[i] = (pool[0], entry[1], False, [middle], False, (), {})
        entries[j] = (entry[0], [middle], False, pool[3], False, (), {})
    return entries, pinned
