"""ONNX ``RNN``/``LSTM``/``GRU`` nodes read back as the built-in recurrent layers.

An ONNX recurrent node gives ``Y`` ``(L, D, N, H)`` and ``Y_h`` ``(D, N, H)``;
the layers give either the sequence or the last hidden state. So the node
becomes a :class:`Recurrent` record, and the layer is placed (once per kind of
output) when a consumer reads it:

- ``Y`` squeezed (``D = 1``) or transposed and reshaped to ``(L, N, D*H)``:
  the ``"sequence"`` output (time-major, or :class:`TimeMajor` of a
  batch-first layer's output);
- ``Y_h`` squeezed or indexed at ``-1`` (``D = 1``), or the sequence's last
  step (``Gather(axis=1, index=-1)``): the ``"last"`` output.

Gate blocks go back from ONNX's order to PyTorch's (LSTM ``i, o, f, c`` ->
``i, f, g, o``; GRU ``z, r, h`` -> ``r, z, n``, which needs
``linear_before_reset=1``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from framework.errors import ExportError
from framework.onnx.importer import DYNAMIC, ZEROS, Importer, TimeMajor, is_tensor

__all__ = ["Recurrent", "RecurrentOut", "last", "last_step_of", "recurrent_node", "sequence"]

#: ONNX op -> (layer name, ONNX block i -> PyTorch position).
_SPECS = {"RNN": ("RNN", [0]), "LSTM": ("LSTM", [0, 3, 1, 2]), "GRU": ("GRU", [1, 0, 2])}


@dataclass
class Recurrent:
    """One ONNX recurrent node, with the layers placed for it so far (by output kind)."""

    kind: str
    params: dict[str, Any]
    weights: list[tuple[np.ndarray, ...]]
    source: Any  # the input placeholder (batch first when ``batch_first``)
    batch_first: bool
    placed: dict[str, Any] = field(default_factory=dict)

    @property
    def directions(self) -> int:
        return 2 if self.params.get("bidirectional") else 1

    def place(self, output: str) -> Any:
        """The placeholder of this node's layer with ``output`` (``"sequence"`` / ``"last"``)."""
        from framework import layers

        if output not in self.placed:
            cls = getattr(layers, self.kind)
            layer = cls(**self.params, batch_first=self.batch_first, output=output)
            for d, arrays in enumerate(self.weights):
                for param, array in zip(layer._weights(0, d), arrays):
                    if param is not None:
                        param.data[...] = array
            self.placed[output] = layer(self.source)
        return self.placed[output]


@dataclass(frozen=True)
class RecurrentOut:
    """An output of a :class:`Recurrent` node: ``"Y"`` (4-D), ``"Y_t"`` (transposed 4-D) or ``"Y_h"``."""

    node: Recurrent
    view: str


def _unstack(array: np.ndarray, order: list[int]) -> np.ndarray:
    blocks = np.split(array, len(order), axis=0)
    out: list[np.ndarray] = [blocks[0]] * len(order)
    for onnx_pos, torch_pos in enumerate(order):
        out[torch_pos] = blocks[onnx_pos]
    return np.concatenate(out, axis=0)


def recurrent_node(imp: Importer, node: Any) -> list[Any]:
    """An ONNX ``RNN``/``LSTM``/``GRU`` node -> ``[RecurrentOut Y, RecurrentOut Y_h, (Y_c)]``."""
    kind, order = _SPECS[node.op_type]
    attrs = imp.attrs(node)
    where = f"{node.op_type} node {node.name!r}"
    direction = attrs.get("direction", b"forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    if direction not in ("forward", "bidirectional") or attrs.get("layout", 0) != 0:
        raise ExportError(f"ONNX import: {where} has direction={direction!r} / layout; unsupported")
    if node.op_type == "GRU" and attrs.get("linear_before_reset", 0) != 1:
        raise ExportError(f"ONNX import: {where} needs linear_before_reset=1 (PyTorch's GRU)")
    if attrs.get("clip") is not None or attrs.get("input_forget", 0):
        raise ExportError(f"ONNX import: {where} uses clip / input_forget, which the layers lack")
    params: dict[str, Any] = {"bidirectional": direction == "bidirectional"}
    if node.op_type == "RNN":
        acts = [a.decode() if isinstance(a, bytes) else a for a in attrs.get("activations", ["Tanh"])]
        if len(set(acts)) != 1 or acts[0] not in ("Tanh", "Relu"):
            raise ExportError(f"ONNX import: {where} has activations {acts}; only Tanh or Relu map")
        params["nonlinearity"] = acts[0].lower()
    for extra in list(node.input)[4:]:
        value = imp.values.get(extra) if extra else None
        zeros = value is None or value is ZEROS or (isinstance(value, np.ndarray) and not value.any())
        if not zeros and value is not DYNAMIC:
            raise ExportError(
                f"ONNX import: {where} has sequence lengths or non-zero initial states ({extra!r})"
            )
    w = imp.const(node.input[1], node, "W")
    r = imp.const(node.input[2], node, "R")
    b = imp.values.get(node.input[3]) if len(node.input) > 3 and node.input[3] else None
    hidden = int(attrs["hidden_size"])
    params.update(input_size=int(w.shape[2]), hidden_size=hidden, bias=b is not None)
    weights = []
    for d in range(w.shape[0]):
        arrays: tuple[Any, ...] = (_unstack(w[d], order), _unstack(r[d], order))
        if isinstance(b, np.ndarray):
            half = b.shape[1] // 2
            arrays += (_unstack(b[d, :half], order), _unstack(b[d, half:], order))
        weights.append(arrays)
    x = imp.values.get(node.input[0])
    if isinstance(x, TimeMajor):
        source, batch_first = x.tensor, True
    elif is_tensor(x):
        source, batch_first = x, False
    else:
        raise ExportError(f"ONNX import: {where} reads {node.input[0]!r}, which is not a tensor here")
    record = Recurrent(kind, params, weights, source, batch_first)
    imp.records.append(record)
    outs = [RecurrentOut(record, "Y"), RecurrentOut(record, "Y_h")]
    return outs + ([RecurrentOut(record, "Y_c")] if node.op_type == "LSTM" else [])


def sequence(record: Recurrent) -> Any:
    """The ``(L, N, D*H)`` time-major sequence value of ``record``."""
    seq = record.place("sequence")
    return TimeMajor(seq) if record.batch_first else seq


def last(record: Recurrent, node: Any) -> Any:
    """The ``(N, H)`` last hidden state (unidirectional only)."""
    if record.directions != 1:
        raise ExportError(
            f"ONNX import: {node.op_type} node {node.name!r} selects one direction of a bidirectional "
            "recurrent layer; this pattern has no built-in layer"
        )
    return record.place("last")


def last_step_of(imp: Importer, tensor: Any) -> Any:
    """The record whose unidirectional ``"sequence"`` placeholder is ``tensor``, or ``None``."""
    for record in imp.records:
        if record.placed.get("sequence") is tensor:
            return record if record.directions == 1 else None
    return None
