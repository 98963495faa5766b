"""A layer tree's temporary mode (``Layer.mode``), shared by blocks that overlap.

``with layer.mode(False):`` sets every layer under ``layer`` to inference mode
and gives each its flag back after. Two such blocks may overlap: nested in one
thread, or in two threads calling ``predict`` on one model that calls its
children by hand. Each block saving the flags it found and restoring them
would let the block that ends first put back the other's temporary ``False``
for good. Here each layer's flag is saved by the first block over it to enter
and restored by the last to leave (a block on a model and one on a model
nested in it share the nested layers); in between, the mode of the latest
block still open is the one set.
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
#: per layer (by id): the layer, the flag found by the first block over it, and the open blocks
#: over it as (token, mode); per layer rather than per root, so a block on a model and one on a
#: model nested in it share the nested layers' saved flags
_OPEN: dict[int, tuple[Layer, bool, list[tuple[object, bool]]]] = {}


@contextlib.contextmanager
def temporary_mode(root: Layer, training: bool) -> Iterator[None]:
    """``root`` and every layer under it in ``training`` mode for the block (see the module docstring)."""
    token = object()
    layers = list(root.modules())
    with _LOCK:
        for layer in layers:
            entry = _OPEN.setdefault(id(layer), (layer, layer.training, []))
            entry[2].append((token, training))
        root.train(training)
    try:
        yield
    finally:
        with _LOCK:
            for layer in layers:
                _, saved, blocks = _OPEN[id(layer)]
                blocks[:] = [block for block in blocks if block[0] is not token]
                if blocks:
                    layer.training = blocks[-1][1]
                else:
                    del _OPEN[id(layer)]
                    layer.training = saved
