"""A layer tree's temporary mode (``Layer.mode``), shared by blocks that overlap.

``with layer.mode(False):`` sets every layer under ``layer`` to inference mode
and gives each its flag back after. Two such blocks may overlap: nested in one
thread, or in two threads calling ``predict`` on one model that calls its
children by hand. Each block saving the flags it found and restoring them
would let the block that ends first put back the other's temporary ``False``
for good. Here the flags are saved by the first block to enter and restored
by the last to leave; in between, the mode of the innermost block still open
is the one set.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from framework.base.layer import Layer

__all__ = ["temporary_mode"]

_LOCK = threading.Lock()
#: per root layer (by id): the flags found by the first block, and the open blocks as (token, mode)
_OPEN: dict[int, tuple[list[tuple[Layer, bool]], list[tuple[object, bool]]]] = {}


@contextlib.contextmanager
def temporary_mode(root: Layer, training: bool) -> Iterator[None]:
    """``root`` and every layer under it in ``training`` mode for the block (see the module docstring)."""
    token = object()
    with _LOCK:
        entry = _OPEN.get(id(root))
        if entry is None:
            entry = _OPEN[id(root)] = ([(layer, layer.training) for layer in root.modules()], [])
        entry[1].append((token, training))
        root.train(training)
    try:
        yield
    finally:
        with _LOCK:
            saved, blocks = entry
            blocks[:] = [block for block in blocks if block[0] is not token]
            if blocks:
                root.train(blocks[-1][1])
            else:
                del _OPEN[id(root)]
                for layer, flag in saved:
                    layer.training = flag
