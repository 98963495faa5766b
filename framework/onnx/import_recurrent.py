"""ONNX ``RNN``/``LSTM``/``GRU`` nodes read back as the built-in recurrent layers.

An ONNX recurrent node gives ``Y`` ``(L, D, N, H)`` and ``Y_h`` ``(D, N, H)``;
the layers give either the sequence or the last hidden state. So the node
becomes a :class:`Recurrent` record, and the layer is placed (once per kind of
output) when a consumer reads it:

- ``Y`` squeezed (``D = 1``) or transposed and reshaped to ``(L, N, D*H)``:
  the ``"sequence"`` output (time-major, or :class:`TimeMajor` of a
  batch-first layer's output);
- ``Y_h`` squeezed or indexed at ``-1`` (``D = 1``), ``Y_h`` transposed to
  ``(N, D, H)`` and reshaped to ``(N, D*H)`` (what this framework's exporter
  writes for ``output="last"``), or the sequence's last step
  (``Gather(axis=1, index=-1)``): the ``"last"`` output.

The layers compute PyTorch's cells only: the default ``activations``
(``Sigmoid``, ``Tanh``, ``Tanh`` for LSTM, ``Sigmoid``, ``Tanh`` for GRU;
``Tanh`` or ``Relu`` for RNN, which become ``nonlinearity``), no ``clip``, no
``input_forget``, ``layout=0``, a ``forward`` or ``bidirectional``
``direction``, no sequence lengths, zero initial states and zero peepholes;
anything else is refused naming the node and the attribute or input.

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

__all__ = [
    "Recurrent",
    "RecurrentOut",
    "last",
    "last_of_states",
    "last_step_of",
    "recurrent_node",
    "sequence",
]

#: ONNX op -> (layer name, ONNX block i -> PyTorch position).
_SPECS = {"RNN": ("RNN", [0]), "LSTM": ("LSTM", [0, 3, 1, 2]), "GRU": ("GRU", [1, 0, 2])}
#: The gate activations of each direction the layers compute (ONNX's defaults), by op.
_ACTIVATIONS = {"LSTM": ["sigmoid", "tanh", "tanh"], "GRU": ["sigmoid", "tanh"]}
#: The optional inputs from index 4, by position (for messages).
_EXTRA_INPUTS = {4: "sequence_lens", 5: "initial_h", 6: "initial_c", 7: "P (peepholes)"}


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
    """An output of a :class:`Recurrent` node.

    ``view`` is ``"Y"`` (4-D), ``"Y_t"`` (transposed 4-D), ``"Y_h"`` ``(D, N, H)``,
    ``"Y_h_t"`` (``Y_h`` transposed to ``(N, D, H)``) or ``"Y_c"``.
    """

    node: Recurrent
    view: str


def _unstack(array: np.ndarray, order: list[int]) -> np.ndarray:
    blocks = np.split(array, len(order), axis=0)
    out: list[np.ndarray] = [blocks[0]] * len(order)
    for onnx_pos, torch_pos in enumerate(order):
        out[torch_pos] = blocks[onnx_pos]
    return np.concatenate(out, axis=0)


def _names(values: Any) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _check_attributes(node: Any, attrs: dict[str, Any]) -> str:
    """The node's ``direction``, after refusing every attribute value the layers cannot compute."""
    where = f"ONNX import: {node.op_type} node {node.name!r}"
    direction = _names([attrs.get("direction", "forward")])[0]
    if direction not in ("forward", "bidirectional"):
        raise ExportError(
            f"{where} has direction={direction!r}; the layers run 'forward' or 'bidirectional' only"
        )
    if attrs.get("layout", 0) != 0:
        raise ExportError(
            f"{where} has layout={attrs['layout']} (batch-first X, Y and states); only layout=0 "
            "(time-major, with Transpose nodes around for batch-first data) is read"
        )
    if attrs.get("clip") is not None:
        raise ExportError(f"{where} has clip={attrs['clip']}; the layers do not clip their gate inputs")
    if attrs.get("input_forget", 0):
        raise ExportError(f"{where} has input_forget=1 (coupled input and forget gates); the LSTM has none")
    if node.op_type == "GRU" and attrs.get("linear_before_reset", 0) != 1:
        raise ExportError(f"{where} needs linear_before_reset=1 (PyTorch's GRU)")
    default = _ACTIVATIONS.get(node.op_type)
    if default is not None and "activations" in attrs:
        acts = _names(attrs["activations"])
        directions = 2 if direction == "bidirectional" else 1
        if [a.lower() for a in acts] not in (default, default * directions):
            raise ExportError(
                f"{where} has activations={acts}; the built-in {node.op_type} computes "
                f"{[a.capitalize() for a in default] * directions} (PyTorch's cell) only"
            )
    # activation_alpha / activation_beta are read only by the activations that take parameters
    # (LeakyRelu, HardSigmoid, ...): with the activations accepted here they have no effect.
    return direction


def _rnn_nonlinearity(node: Any, attrs: dict[str, Any]) -> str:
    acts = _names(attrs.get("activations", ["Tanh"]))
    if len(set(acts)) != 1 or acts[0] not in ("Tanh", "Relu"):
        raise ExportError(
            f"ONNX import: RNN node {node.name!r} has activations={acts}; only Tanh or Relu, the same "
            "for both directions, map (RNN's nonlinearity)"
        )
    return acts[0].lower()


def _check_optional_input(imp: Importer, node: Any, index: int, name: str) -> None:
    """Refuse sequence lengths, non-zero initial states and non-zero peepholes."""
    value = imp.values.get(name) if name else None
    if value is None or value is DYNAMIC:
        return  # absent, or computed from the input's shape (the zero states exporters build)
    if index != 4 and (value is ZEROS or (isinstance(value, np.ndarray) and not value.any())):
        return  # zero states or peepholes: what the layers do
    raise ExportError(
        f"ONNX import: {node.op_type} node {node.name!r} has the input {_EXTRA_INPUTS.get(index, index)} "
        f"({name!r}); the layers run whole sequences from zero initial states without peepholes"
    )


def recurrent_node(imp: Importer, node: Any) -> list[Any]:
    """An ONNX ``RNN``/``LSTM``/``GRU`` node -> ``[RecurrentOut Y, RecurrentOut Y_h, (Y_c)]``."""
    kind, order = _SPECS[node.op_type]
    attrs = imp.attrs(node)
    params: dict[str, Any] = {"bidirectional": _check_attributes(node, attrs) == "bidirectional"}
    if node.op_type == "RNN":
        params["nonlinearity"] = _rnn_nonlinearity(node, attrs)
    for index, extra in enumerate(list(node.input)[4:], start=4):
        _check_optional_input(imp, node, index, extra)
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
    where = f"{node.op_type} node {node.name!r}"
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


def last_of_states(record: Recurrent, node: Any, target: list[int]) -> Any:
    """``Y_h`` transposed to ``(N, D, H)`` then reshaped to ``(N, D*H)``: the ``"last"`` output.

    That is the layer's last hidden state of each direction, concatenated
    ``[forward, reverse]``, as ``output="last"`` gives.
    """
    width = record.directions * int(record.params["hidden_size"])
    if target not in ([0, -1], [0, width], [-1, width]):
        raise ExportError(
            f"ONNX import: Reshape node {node.name!r} reshapes a recurrent node's transposed Y_h to "
            f"{target}; only (N, D*H) = [0, -1] (the last hidden states concatenated) has a built-in layer"
        )
    return record.place("last")


def last_step_of(imp: Importer, tensor: Any) -> Any:
    """The record whose unidirectional ``"sequence"`` placeholder is ``tensor``, or ``None``."""
    for record in imp.records:
        if record.placed.get("sequence") is tensor:
            return record if record.directions == 1 else None
    return None
