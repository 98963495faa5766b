"""One seedable source of randomness for initialisation, dropout and shuffling."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

__all__ = ["set_seed", "get_rng", "get_seed", "thread_rng"]

# A generator that replaces the global one in one thread (a shard of fit(threads=K)).
_local = threading.local()

_seed: int | None = None
# Created on first use: importing numpy.random costs about 10-15 ms, which
# ``import framework`` and plugin discovery should not pay.
_rng: np.random.Generator | None = None


def set_seed(seed: int | None) -> None:
    """Reseed the framework's global generator; ``None`` draws fresh entropy.

    Two runs that call ``set_seed(s)`` with the same ``s`` before building and
    training a model produce bit-identical weights.
    """
    global _rng, _seed
    _seed = seed
    _rng = np.random.default_rng(seed)


def get_seed() -> int | None:
    """The seed last given to :func:`set_seed`, or ``None``."""
    return _seed


def get_rng() -> np.random.Generator:
    """The framework's global ``numpy.random.Generator`` (or the calling thread's, see :func:`thread_rng`)."""
    override = getattr(_local, "rng", None)
    if override is not None:
        return override
    global _rng
    if _rng is None:
        _rng = np.random.default_rng()
    return _rng


@contextmanager
def thread_rng(generator: np.random.Generator | None) -> Iterator[None]:
    """In the ``with`` block, :func:`get_rng` returns ``generator`` in the calling thread.

    ``fit(threads=K)`` gives each shard's thread its own generator, drawn from
    the global one, so dropout masks differ between shards and a seeded run
    repeats. ``None`` leaves the global generator in place.
    """
    previous = getattr(_local, "rng", None)
    _local.rng = generator
    try:
        yield
    finally:
        _local.rng = previous
