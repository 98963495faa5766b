"""What a benchmark case is: the ``Case`` record and the implementations' names and order.

The case modules (``benchmarks.cases_*``) build their ``Case`` lists from it,
the harness runs them and the report lays them out; it imports nothing from the
package and only the standard library, so any of them (and a worker
subprocess) can import it.
"""

from __future__ import annotations

import dataclasses

#: Implementations in the order they run within a round and appear in the table.
IMPL_ORDER = ("ours", "torch", "floor", "naive")


@dataclasses.dataclass(frozen=True)
class Case:
    """One benchmark: what it measures and the function building each implementation.

    Args:
        name: the identifier given to ``--cases``.
        title: one line for the table.
        unit: ``"ms/step"``, ``"ms/sample"``, ``"MB"`` or ``"s"``.
        impls: implementation name -> ``"module:function"``. For a ``time``
            case the function takes ``quick`` and returns a callable that runs
            one round and returns its value in ``unit``; for a ``fresh`` case
            it takes ``quick`` and returns the value (or a dict with
            ``"value"`` and extra fields) itself.
        kind: ``"time"`` or ``"fresh"``.
        max_rounds: a cap on the rounds (peak memory barely varies and a
            200-step run in a fresh process is slow), ``None`` for none.
    """

    name: str
    title: str
    unit: str
    impls: dict[str, str]
    kind: str = "time"
    max_rounds: int | None = None
