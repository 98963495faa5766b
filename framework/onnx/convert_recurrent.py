"""Converters of the recurrent layers: ``RNN``, ``LSTM`` and ``GRU`` as ONNX ``RNN``, ``LSTM``, ``GRU``.

One ONNX node per stacked layer (both directions in one node,
``direction="bidirectional"``). The weights are restacked from PyTorch's gate
order to ONNX's:

- LSTM: PyTorch ``i, f, g, o`` -> ONNX ``i, o, f, c``;
- GRU: PyTorch ``r, z, n`` -> ONNX ``z, r, h``, with ``linear_before_reset=1``
  (PyTorch applies the reset gate after ``W_hn h + b_hn``);
- RNN: one gate, ``activations=["Tanh"]`` or ``["Relu"]``.

ONNX ``W`` is ``(D, G*H, in)``, ``R`` ``(D, G*H, H)`` and ``B`` ``(D, 2*G*H)``
(``[b_ih, b_hh]``), ``X`` time-major ``(L, N, in)``, ``Y`` ``(L, D, N, H)``
and ``Y_h`` ``(D, N, H)``. The initial states are zeros, as the layers'
default.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from framework.onnx.exporter import ExportContext

__all__ = ["recurrent"]

#: ONNX op and the PyTorch gate blocks in ONNX's order, per layer class name.
_SPECS = {
    "RNN": ("RNN", [0]),
    "LSTM": ("LSTM", [0, 3, 1, 2]),
    "GRU": ("GRU", [1, 0, 2]),
}


def _restack(array: np.ndarray, order: list[int]) -> np.ndarray:
    """Reorder the gate blocks stacked along axis 0."""
    blocks = np.split(array, len(order), axis=0)
    return np.concatenate([blocks[i] for i in order], axis=0)


def _spec(layer: Any) -> tuple[str, list[int]]:
    for cls in type(layer).__mro__:
        if cls.__name__ in _SPECS:
            return _SPECS[cls.__name__]
    raise KeyError(type(layer).__name__)


def recurrent(ctx: ExportContext, layer: Any, inputs: list[str]) -> Any:
    """The layer's stacked recurrence; the output follows ``layer.output`` and ``batch_first``."""
    op, order = _spec(layer)
    h, nd = layer.hidden_size, layer.num_directions
    x = inputs[0]
    if layer.batch_first:
        x = ctx.node("Transpose", [x], perm=[1, 0, 2])
    finals: list[list[str]] = [[], []]
    for k in range(layer.num_layers):
        ws, rs, bs = [], [], []
        for d in range(nd):
            w_ih, w_hh, b_ih, b_hh = layer._weights(k, d)
            ws.append(_restack(w_ih.data, order))
            rs.append(_restack(w_hh.data, order))
            if b_ih is not None and b_hh is not None:
                bs.append(np.concatenate([_restack(b_ih.data, order), _restack(b_hh.data, order)]))
        args = [x, ctx.initializer(np.stack(ws), f"W_l{k}"), ctx.initializer(np.stack(rs), f"R_l{k}")]
        args.append(ctx.initializer(np.stack(bs), f"B_l{k}") if bs else "")
        attrs: dict[str, Any] = {"hidden_size": h, "direction": "bidirectional" if nd == 2 else "forward"}
        if op == "RNN":
            attrs["activations"] = ["Relu" if layer.nonlinearity == "relu" else "Tanh"] * nd
        if op == "GRU":
            attrs["linear_before_reset"] = 1
        outs = ctx.node(op, args, outputs=3 if op == "LSTM" else 2, **attrs)
        y, finals[0] = outs[0], [*finals[0], outs[1]]
        if op == "LSTM":
            finals[1].append(outs[2])
        # (L, D, N, H) -> (L, N, D, H) -> (L, N, D*H): directions concatenated [forward, reverse].
        x = ctx.node("Reshape", [ctx.node("Transpose", [y], perm=[0, 2, 1, 3]), ctx.ints([0, 0, -1])])
    if layer.output == "last":
        # The last layer's Y_h (D, N, H) -> (N, D, H) -> (N, D*H).
        last = ctx.node("Transpose", [finals[0][-1]], perm=[1, 0, 2])
        return str(ctx.node("Reshape", [last, ctx.ints([0, -1])]))
    seq = ctx.node("Transpose", [x], perm=[1, 0, 2]) if layer.batch_first else x
    if layer.output == "sequence":
        return str(seq)
    states = [s[0] if len(s) == 1 else str(ctx.node("Concat", s, axis=0)) for s in finals if s]
    batch = _batch_size(ctx.shape(inputs[0]), layer.batch_first)
    for state in states:  # (D*num_layers, N, H): the batch is axis 1 here
        ctx.shapes[state] = (nd * layer.num_layers, batch, h)
    return [seq, *states]


def _batch_size(shape: Any, batch_first: bool) -> int | None:
    """The states' batch size as :attr:`ExportContext.shapes` writes it, from the input's shape.

    ``-1`` (the model's batch axis) when the input's batch is its axis 0
    (``batch_first``, or a shape unknown); the size of axis 1 of a time-major
    input otherwise (``-1`` if that is the model's batch axis, ``None`` if
    unknown: a symbolic dimension of its own), since there the model's axis 0
    is the time axis, which the states do not have.
    """
    if batch_first or shape is None or len(shape) != 3:
        return -1
    size = shape[1]
    return size if size is None or size == -1 else int(size)
