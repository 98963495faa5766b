"""How an epoch's samples are split over the ranks: one shared permutation, cut in windows.

Step ``k`` of an epoch takes the window ``order[k * W : (k + 1) * W]`` of the
epoch's order (``W = size * batch_size``); rank ``r`` trains on the ``r``-th
block of ``batch_size`` samples of it. The last window (``L < W`` samples) is
cut into ``size`` blocks whose sizes differ by at most one. So every sample is
seen once per epoch on exactly one rank, every rank runs the same number of
steps, and the concatenation of the ranks' batches of step ``k`` is the batch
``k`` of one process training with ``batch_size * size``.

Each rank's gradient is weighted by ``n_r * size / L`` (1 except in a short
last window), so the average over the ranks is the gradient of the mean loss
over the whole window, exactly as one process would compute it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = ["block", "shard_steps", "shard_windows"]


def shard_steps(n: int, batch_size: int, size: int) -> int:
    """Steps per epoch on every rank: ``ceil(n / (batch_size * size))``."""
    return -(-n // (batch_size * size))


def block(length: int, rank: int, size: int) -> tuple[int, int]:
    """``(start, stop)`` of rank ``rank``'s part when ``length`` items are cut into ``size`` near-equal parts.

    The first ``length % size`` parts hold one item more (``numpy.array_split``'s rule).
    """
    base, extra = divmod(length, size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def shard_windows(
    n: int, batch_size: int, rank: int, size: int, order: np.ndarray | None = None
) -> Iterator[tuple[Any, float]]:
    """This rank's ``(index, gradient weight)`` for each step of an epoch.

    Args:
        n: the number of samples.
        batch_size: the samples per rank per step.
        rank, size: this rank and the world size.
        order: the epoch's permutation (shared by every rank); ``None`` keeps
            the samples in order (the index is then a ``slice``).

    Yields:
        ``(index, weight)``: the index of this rank's batch (an integer array
        or a slice, possibly empty in a last window shorter than ``size``) and
        ``n_r * size / L``, the weight of its mean-loss gradient in the
        average over the ranks.

    Example:
        >>> [(idx, w) for idx, w in shard_windows(10, 2, 1, 2)]
        [(slice(2, 4, None), 1.0), (slice(6, 8, None), 1.0), (slice(9, 10, None), 1.0)]
    """
    window = batch_size * size
    for start in range(0, n, window):
        length = min(window, n - start)
        if length == window:
            lo, hi, weight = start + rank * batch_size, start + (rank + 1) * batch_size, 1.0
        else:
            a, b = block(length, rank, size)
            lo, hi, weight = start + a, start + b, (b - a) * size / length
        yield (slice(lo, hi) if order is None else order[lo:hi]), weight
