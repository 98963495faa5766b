"""Batch-last runs: consecutive layers of a ``Sequential`` that pass ``(C, H, W, N)`` activations.

A convolution lowered to one matrix product for the whole batch computes
``W (O, C*kh*kw) @ cols (C*kh*kw, OH*OW*N)``: its output comes out
batch-last, ``(O, OH, OW, N)``, and its input gradient is accumulated
batch-last too. Between two such layers, converting to the public
``(N, C, H, W)`` layout and back costs four copies of each activation per
step (the output, the input's columns, the gradient and the input gradient).
Inside a run of consecutive layers that all serve batch-last activations,
``Sequential`` passes them batch-last instead; the run's first layer takes
NCHW and its last gives NCHW back, so what enters and leaves the model, and
every layer's own ``forward`` / ``backward``, keep the public layout.

A layer takes part through one of two protocols:

- ``channelwise`` (a class flag, :mod:`framework.base.traits`): an element-wise
  map or per-channel statistics (ReLU, BatchNorm). It runs its own
  ``forward`` / ``backward`` on a ``(1, C, H*W*N)`` view of the activations.
- ``batch_last_modes()``, returning the ``(input batch-last, output batch-last)``
  pairs that its ``forward_batch_last(ctx, x, in_last, out_last)`` serves,
  with ``backward_batch_last(ctx, grad_out)`` taking the gradient laid out as
  that output and returning ``dL/dx`` laid out as that input (Conv2d,
  MaxPool2d). A class only uses the methods it defines at or below the class
  that defines its ``forward`` and ``backward``: a subclass overriding
  ``forward`` runs in the public layout.

A run opens at a layer serving ``(False, True)``, continues through layers
serving ``(True, True)`` and closes at the last of them serving
``(True, False)``. The runs apply to a 4-D float32 or float64 batch whose
model parameters share its dtype, and by default (:func:`using`) only where
the compiled kernels run (:func:`framework.runtime.jit.takes`): NumPy's own
lowerings are tuned for the public layout.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from framework.base.context import Context
from framework.base.layer import Layer
from framework.base.traits import declares
from framework.errors import ConfigError
from framework.runtime import jit

__all__ = ["MODES", "OPEN", "INSIDE", "CLOSE", "Plan", "mode", "using", "plan", "forward", "backward"]

#: ``"auto"`` (with the compiled kernels), ``"always"``, ``"never"``
MODES = ("auto", "always", "never")
OPEN, INSIDE, CLOSE = "open", "inside", "close"
_BOTH = frozenset({(True, True)})
_mode = ["auto"]


def mode() -> str:
    """The mode in force: :func:`using`'s, else ``"auto"``."""
    return _mode[0]


@contextmanager
def using(value: str) -> Iterator[None]:
    """Within the block, batch-last runs ``"always"``, ``"never"`` or ``"auto"`` (process-wide).

    ``"always"`` applies them without the compiled kernels too (NumPy's
    batch-last code); tests compare ``"always"`` with ``"never"``.
    """
    if value not in MODES:
        raise ConfigError(f"layouts.using: mode must be one of {', '.join(map(repr, MODES))}, got {value!r}")
    previous, _mode[0] = _mode[0], value
    try:
        yield
    finally:
        _mode[0] = previous


def _owns(kind: type, method: str, public: str) -> bool:
    """Whether ``kind``'s ``method`` is defined at or below the class defining ``public``."""
    for cls in kind.__mro__:
        if method in cls.__dict__:
            return True
        if public in cls.__dict__:
            return False
    return False


def modes(layer: Layer) -> frozenset[tuple[bool, bool]]:
    """The ``(input batch-last, output batch-last)`` pairs ``layer`` serves (none for most layers)."""
    kind = type(layer)
    if _owns(kind, "forward_batch_last", "forward") and _owns(kind, "backward_batch_last", "backward"):
        return frozenset(layer.batch_last_modes())  # type: ignore[attr-defined]
    if declares(layer, "channelwise") and declares(layer, "channelwise", "backward"):
        return _BOTH
    return frozenset()


@dataclass(frozen=True)
class Plan:
    """A model's runs: each layer's part (``roles``, ``None`` without runs) and the runs' parameters.

    An object rather than a tuple, so that a model holding it does not count
    those parameters as its own (containers are searched for them).
    """

    roles: list[str | None] | None
    parameters: list[Any]

    def applies(self, x: Any) -> bool:
        """Whether the runs serve the batch ``x`` now (see the module's doc)."""
        if self.roles is None:
            return False
        chosen = _mode[0]
        if chosen == "never" or not isinstance(x, np.ndarray) or x.ndim != 4 or x.shape[0] == 0:
            return False
        if x.dtype not in (np.float32, np.float64) or (chosen == "auto" and not jit.takes(x)):
            return False
        return all(p.data.dtype == x.dtype for p in self.parameters)


def plan(order: Sequence[Layer]) -> Plan:
    """The runs of the layers ``order``, longest first from the left, as a :class:`Plan`."""
    runs = []
    served = [modes(layer) for layer in order]
    i = 0
    while i < len(order):
        if (False, True) in served[i]:
            end = None
            for j in range(i + 1, len(order)):
                if (True, False) in served[j]:
                    end = j
                if (True, True) not in served[j]:
                    break
            if end is not None:
                runs.append((i, end))
                i = end + 1
                continue
        i += 1
    if not runs:
        return Plan(None, [])
    roles: list[str | None] = [None] * len(order)
    for first, last in runs:
        roles[first], roles[last] = OPEN, CLOSE
        for k in range(first + 1, last):
            roles[k] = INSIDE
    held = [p for first, last in runs for k in range(first, last + 1) for p in order[k].parameters()]
    return Plan(roles, held)


def forward(layer: Layer, ctx: Context, x: np.ndarray, role: str) -> np.ndarray:
    """``layer``'s forward in its ``role`` of a run (the context remembers it for :func:`backward`)."""
    ctx.layout_role = role
    if _owns(type(layer), "forward_batch_last", "forward"):
        return layer.forward_batch_last(ctx, x, role != OPEN, role != CLOSE)  # type: ignore[attr-defined]
    return layer.forward(ctx, x.reshape(1, x.shape[0], -1)).reshape(x.shape)


def backward(layer: Layer, ctx: Context, grad_out: np.ndarray) -> Any:
    """``layer``'s backward for a call :func:`forward` made."""
    if _owns(type(layer), "backward_batch_last", "backward"):
        return layer.backward_batch_last(ctx, grad_out)  # type: ignore[attr-defined]
    grad_in = layer.backward(ctx, grad_out.reshape(1, grad_out.shape[0], -1))
    return grad_in.reshape(grad_out.shape)
