"""Batch-last runs: consecutive layers of a model that pass ``(C, H, W, N)`` activations.

A convolution lowered to one matrix product for the whole batch computes
``W (O, C*kh*kw) @ cols (C*kh*kw, OH*OW*N)``: its output comes out
batch-last, ``(O, OH, OW, N)``, and its input gradient is accumulated
batch-last too. Between two such layers, converting to the public
``(N, C, H, W)`` layout and back costs four copies of each activation per
step (the output, the input's columns, the gradient and the input gradient).
Inside a run of consecutive layers that all serve batch-last activations,
a ``Sequential`` (:func:`plan`) or a functional graph (:func:`graph_plan`,
along chains of calls) passes them batch-last instead; the run's first layer takes
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
``(True, False)``. A run applies to the 4-D float32 or float64 array that
reaches its first layer (so a model that reshapes flat images before its
first convolution runs it too) when the model's parameters share its dtype,
and by default (:func:`using`) only where the compiled kernels run
(:func:`framework.runtime.jit.takes`): NumPy's own lowerings are tuned for
the public layout. :meth:`Plan.role` decides, per model call and per run.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np

from framework.base.context import Context
from framework.base.layer import Layer
from framework.base.traits import declares
from framework.errors import ConfigError
from framework.models.reorder import one_in_one_out, readers
from framework.runtime import jit

__all__ = [
    "MODES",
    "OPEN",
    "INSIDE",
    "CLOSE",
    "Plan",
    "mode",
    "using",
    "plan",
    "graph_plan",
    "forward",
    "backward",
]

#: ``"auto"`` (with the compiled kernels), ``"always"``, ``"never"``
MODES = ("auto", "always", "never")
OPEN, INSIDE, CLOSE = "open", "inside", "close"
_BOTH = frozenset({(True, True)})


def _from_environment() -> str:
    """``FRAMEWORK_LAYOUTS`` (``auto``, ``always`` or ``never``) as the default mode; ``auto`` if unset."""
    value = os.environ.get("FRAMEWORK_LAYOUTS", "auto").strip().lower() or "auto"
    if value not in MODES:
        raise ConfigError(f"FRAMEWORK_LAYOUTS must be one of {', '.join(map(repr, MODES))}, got {value!r}")
    return value


_mode = [_from_environment()]


def mode() -> str:
    """The mode in force: :func:`using`'s, else ``FRAMEWORK_LAYOUTS``'s, else ``"auto"``."""
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


@functools.lru_cache(maxsize=1024)
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
    kind: Any = type(layer)  # classes hash by id (mypy sees Layer's __hash__ = None)
    if _owns(kind, "forward_batch_last", "forward") and _owns(kind, "backward_batch_last", "backward"):
        return frozenset(layer.batch_last_modes())  # type: ignore[attr-defined]
    if declares(layer, "channelwise") and declares(layer, "channelwise", "backward") and _takes_rows(layer):
        return _BOTH
    return frozenset()


class _Rows:
    """A stand-in with only a ``shape``, for a layer's input check."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape


def _takes_rows(layer: Layer) -> bool:
    """Whether a built ``layer``'s input check lets a ``(1, C, M)`` view through (the default check
    pins every axis of the first input's shape: such a layer runs in the public layout)."""
    spec = layer.input_spec
    if spec is None:
        return True
    if isinstance(spec, list) or len(spec) < 2:
        return False
    try:
        layer._check_input(_Rows((1, spec[1] if spec[1] is not None else 1, 2)))
    except Exception:
        return False
    return True


@dataclass(frozen=True)
class Plan:
    """A model's runs: each call's part in one, the run it belongs to, and the runs' parameters.

    ``roles[i]`` is :data:`OPEN`, :data:`INSIDE`, :data:`CLOSE` or ``None``
    for the ``i``-th layer call, ``runs[i]`` the index of its run. An object
    rather than a tuple, so that a model holding it does not count those
    parameters as its own (containers are searched for them).
    """

    roles: list[str | None] | None
    runs: list[int | None]
    parameters: list[Any]
    members: list[tuple[Layer, frozenset[tuple[bool, bool]]]]

    def current(self) -> bool:
        """Whether every layer of the runs still serves what it served when planned.

        A layer reconfigured since (a convolution given a softmax activation,
        a pool given padding) makes the model plan again rather than run it
        in a layout it no longer serves.
        """
        return all(modes(layer) == served for layer, served in self.members)

    def role(self, i: int, x: Any, running: set[int | None]) -> str | None:
        """Call ``i``'s part in a run this model call runs batch-last, else ``None``.

        Each run decides at its opening call, on the array ``x`` that call is
        given (:meth:`applies`), and is added to ``running``, the set of this
        model call's batch-last runs.
        """
        role = self.roles[i] if self.roles else None
        if role == OPEN and self.applies(x):
            running.add(self.runs[i])
        return role if role is not None and self.runs[i] in running else None

    def applies(self, x: Any) -> bool:
        """Whether a run opening on the batch ``x`` runs batch-last now (see the module's doc)."""
        if self.roles is None:
            return False
        chosen = _mode[0]
        if chosen == "never" or not isinstance(x, np.ndarray) or x.ndim != 4 or x.shape[0] == 0:
            return False
        if x.dtype not in (np.float32, np.float64) or (chosen == "auto" and not jit.takes(x)):
            return False
        return all(p.data.dtype == x.dtype for p in self.parameters)


def _plan(layers: Sequence[Layer | None], successor: Callable[[int], int | None]) -> Plan:
    """The runs along ``successor`` chains of the calls ``layers`` (``None``: a call that takes no part).

    ``successor(i)`` is the call that alone consumes call ``i``'s output, or
    ``None`` (several consumers, a model output, the end). Each run is as
    long as it can be, the calls taken in order.
    """
    served = [frozenset() if layer is None else modes(layer) for layer in layers]
    roles: list[str | None] = [None] * len(layers)
    runs: list[int | None] = [None] * len(layers)
    held: list[Any] = []
    members: list[tuple[Layer, frozenset[tuple[bool, bool]]]] = []
    count = 0
    for i in range(len(layers)):
        if runs[i] is not None or (False, True) not in served[i]:
            continue
        chain, end, j = [i], 0, successor(i)
        while j is not None:
            chain.append(j)
            if (True, False) in served[j]:
                end = len(chain) - 1
            if (True, True) not in served[j]:
                break
            j = successor(j)
        if end == 0:
            continue
        for k in chain[: end + 1]:
            roles[k], runs[k] = INSIDE, count
            held += layers[k].parameters()  # type: ignore[union-attr]
            members.append((layers[k], served[k]))  # type: ignore[arg-type]
        roles[chain[0]], roles[chain[end]] = OPEN, CLOSE
        count += 1
    return Plan(roles if count else None, runs, held, members)


def plan(order: Sequence[Layer]) -> Plan:
    """The runs of a ``Sequential`` whose layers run in ``order``."""
    last = len(order) - 1
    return _plan(order, lambda i: i + 1 if i < last else None)


def graph_plan(entries: Sequence[tuple[Any, ...]], output_slots: Sequence[int]) -> Plan:
    """The runs of a functional graph's calls (:class:`~framework.models.executor.GraphExecutor`'s plan).

    ``entries[i]`` is ``(layer, input slots, list input, output slots, list
    output, args, kwargs)``. A run follows a chain of calls of one array in,
    one array out and no extra arguments, where each value inside it feeds
    only the next call and is not a model output.
    """
    read_by = readers(entries)
    outputs = set(output_slots)

    def successor(i: int) -> int | None:
        slot = entries[i][3][0]
        users = read_by.get(slot, [])
        single = slot not in outputs and len(users) == 1
        return users[0] if single and one_in_one_out(entries[users[0]]) else None

    return _plan([entry[0] if one_in_one_out(entry) else None for entry in entries], successor)


def forward(layer: Layer, ctx: Context, x: np.ndarray, role: str) -> np.ndarray:
    """``layer``'s forward in its ``role`` of a run (the context remembers it for :func:`backward`).

    Raises:
        ShapeError: ``x`` does not fit the layer, as its public ``forward`` would say.
    """
    ctx.layout_role = role
    kind: Any = type(layer)
    if _owns(kind, "forward_batch_last", "forward"):
        in_last = role != OPEN
        _check_public(layer, (x.shape[3], *x.shape[:3]) if in_last else x.shape)
        return layer.forward_batch_last(ctx, x, in_last, role != CLOSE)  # type: ignore[attr-defined]
    return layer.forward(ctx, x.reshape(1, x.shape[0], -1)).reshape(x.shape)


def _check_public(layer: Layer, shape: tuple[int, ...]) -> None:
    """The checks the layer's public ``forward`` runs on an ``(N, C, H, W)`` input of ``shape``: its
    input spec (the channels), then its geometry (``output_shape``: a window larger than the input)."""
    layer._check_input(SimpleNamespace(shape=shape))
    if type(layer).output_shape is not Layer.output_shape:
        layer.output_shape(shape)


def backward(layer: Layer, ctx: Context, grad_out: Any) -> Any:
    """``layer``'s backward for the call recorded in ``ctx``: in the layout :func:`forward` ran it in,
    or, for a call outside every run, the layer's own ``backward``."""
    if ctx.__dict__.get("layout_role") is None:
        return layer.backward(ctx, grad_out)
    kind: Any = type(layer)
    if _owns(kind, "backward_batch_last", "backward"):
        return layer.backward_batch_last(ctx, grad_out)  # type: ignore[attr-defined]
    grad_in = layer.backward(ctx, grad_out.reshape(1, grad_out.shape[0], -1))
    return grad_in.reshape(grad_out.shape)
