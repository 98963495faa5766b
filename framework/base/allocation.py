"""A bound on what building a model may allocate, for models rebuilt from an untrusted config.

``load_model(path, max_bytes=...)`` checks every array the file declares
before reading it; the model it reads into is first rebuilt from the file's
config, whose sizes (``BatchNorm(50_000_000)``) the file chooses too.
:func:`budget` bounds the bytes of the parameters and buffers created
inside it (per thread: a :class:`contextvars.ContextVar`), and :func:`charge`,
called as each is created, refuses the one that goes over. The arrays made
while loading are lazily mapped zeros (:func:`framework.base.initializer.ones`),
so a refused one has cost address space, not memory.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

from framework.errors import CheckpointError

__all__ = ["budget", "charge"]

_LEFT: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("allocation_budget", default=None)


@contextlib.contextmanager
def budget(max_bytes: int) -> Iterator[None]:
    """Inside this block, parameters and buffers together may hold at most ``max_bytes``."""
    token = _LEFT.set([int(max_bytes), int(max_bytes)])
    try:
        yield
    finally:
        _LEFT.reset(token)


def charge(nbytes: int, shape: tuple[int, ...]) -> None:
    """Count an array of ``nbytes`` (``shape``) against the current :func:`budget`, if any.

    Raises:
        CheckpointError: the arrays created so far exceed the budget.
    """
    left = _LEFT.get()
    if left is None:
        return
    left[1] -= int(nbytes)
    if left[1] < 0:
        raise CheckpointError(
            f"the model config declares more parameters and buffers than max_bytes={left[0]} allows "
            f"(an array of shape {shape} went over); pass a larger max_bytes to load_model if the "
            "file is trusted"
        )
