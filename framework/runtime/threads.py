"""Threads that share one batch: the group a thread belongs to while it runs its shard.

``fit(threads=K)`` (:mod:`framework.training.replicas`) cuts each batch into
``K`` shards and runs them on ``K`` threads at once. Most layers treat every
sample on its own and need nothing from this module. A layer whose result
depends on the whole batch (BatchNorm's batch statistics) asks
:func:`current_member` and, inside a group, sums its per-shard statistics
with :meth:`ThreadGroup.allreduce`, so every shard sees the statistics of the
whole batch and the result equals one thread's on the whole batch.

Every member of a group must make the same collective calls in the same
order (the replicas of one model do). When one member fails, the runner
calls :meth:`ThreadGroup.abort`, and the others, waiting in a collective,
raise :class:`GroupAborted` instead of waiting forever.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

__all__ = ["GroupAborted", "ThreadGroup", "current_member", "member_of"]


class GroupAborted(RuntimeError):
    """Raised in a member waiting in a collective when another member of its group failed."""


class ThreadGroup:
    """``size`` threads that run shards of one batch and may sum values across them.

    Args:
        size: the number of members (threads), at least 1.
    """

    def __init__(self, size: int) -> None:
        self.size = int(size)
        self._barrier = threading.Barrier(self.size)
        self.reset_slots()

    def reset_slots(self) -> None:
        # Two sets of slots, used by turns: a member writes the next call's set while
        # others may still read this one's, and can only come back to this set after
        # every member has passed the next call's barrier, i.e. finished reading.
        self._slots = [[np.zeros(0)] * self.size, [np.zeros(0)] * self.size]
        self._calls = [0] * self.size

    def allreduce(self, rank: int, values: np.ndarray) -> np.ndarray:
        """The sum over the members of their ``values`` (same shape each), in float64.

        Every member gets the same array: the sum is taken in rank order by
        each member alike, so the result does not depend on which thread
        arrives first. One barrier per call.
        """
        slots = self._slots[self._calls[rank] % 2]
        self._calls[rank] += 1
        slots[rank] = np.asarray(values, dtype=np.float64)
        self._wait()
        total = np.array(slots[0], dtype=np.float64, copy=True)
        for other in slots[1:]:
            total += other
        return total

    def _wait(self) -> None:
        try:
            self._barrier.wait()
        except threading.BrokenBarrierError:
            raise GroupAborted("another thread of this batch failed (its error is raised instead)") from None

    def abort(self) -> None:
        """Release every member waiting in a collective, now and later, with :class:`GroupAborted`."""
        self._barrier.abort()

    def reset(self) -> None:
        """Make the group usable again after :meth:`abort` (call when no member is waiting)."""
        self._barrier.reset()
        self.reset_slots()


_local = threading.local()


def current_member() -> tuple[ThreadGroup, int] | None:
    """``(group, rank)`` of the calling thread while it runs a shard, else ``None``."""
    return getattr(_local, "member", None)


@contextmanager
def member_of(group: ThreadGroup, rank: int) -> Iterator[None]:
    """Make the calling thread member ``rank`` of ``group`` for the ``with`` block."""
    previous = getattr(_local, "member", None)
    _local.member = (group, rank)
    try:
        yield
    finally:
        _local.member = previous
