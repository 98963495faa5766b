"""Per-thread scratch buffers: the im2col columns a convolution keeps from forward to backward.

A convolution's forward gathers its input into a columns array of
``(N, C*kh*kw, OH*OW)`` that its backward reads, then overwrites with the
column gradient. Allocating that array afresh on every call costs page faults
on large arrays; one buffer per layer is wrong as soon as the layer runs twice
before a backward (a shared layer) or in two threads at once. So a call
*takes* a buffer from its thread's pool (:func:`take`), keeps it on its
context, and *gives it back* (:func:`give_back`) once it is spent: at the end
of the backward, or right after the forward when no backward will follow.
A buffer is held by one call at a time, and every thread has its own pool
(``threading.local``): two threads never share a buffer.
"""

from __future__ import annotations

import threading

import numpy as np

__all__ = ["take", "give_back"]

#: Shapes (and dtypes) each thread keeps free buffers for; the oldest goes first.
MAX_SHAPES = 8
#: Free buffers kept per shape: as many as calls of one shape are pending at once.
MAX_PER_SHAPE = 4

_local = threading.local()


def take(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialised C-contiguous array of ``shape`` and ``dtype``, from this thread's pool if free."""
    pool = getattr(_local, "pool", None)
    if pool is not None:
        free = pool.get((shape, dtype))
        if free:
            return free.pop()
    return np.empty(shape, dtype=dtype)


def give_back(buffer: np.ndarray) -> None:
    """Return ``buffer`` (from :func:`take`, no longer read by anyone) to this thread's pool."""
    pool: dict[tuple[tuple[int, ...], np.dtype], list[np.ndarray]] | None = getattr(_local, "pool", None)
    if pool is None:
        pool = _local.pool = {}
    key = (buffer.shape, buffer.dtype)
    free = pool.get(key)
    if free is None:
        if len(pool) >= MAX_SHAPES:
            del pool[next(iter(pool))]
        free = pool[key] = []
    if len(free) < MAX_PER_SHAPE:
        free.append(buffer)
