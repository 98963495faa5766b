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
    "DirectionState",
    "Recurrent",
    "RecurrentOut",
    "StackedStates",
    "last",
    "last_of_states",
    "last_step_of",
    "recurrent_node",
    "sequence",
    "state_at",
]

#: ONNX op -> (layer name, ONNX block i -> PyTorch position).
_SPECS = {"RNN": ("RNN", [0]), "LSTM": ("LSTM", [0, 3, 1, 2]), "GRU": ("GRU", [1, 0, 2])}
#: The gate activations of each direction the layers compute (ONNX's defaults), by op.
_ACTIVATIONS = {"LSTM": ["sigmoid", "tanh", "tanh"], "GRU": ["sigmoid", "tanh"]}
#: The optional inputs from index 4, by position (for messages).
_EXTRA_INPUTS = {4: "sequence_lens", 5: "initial_h", 6: "initial_c", 7: "P (peepholes)"}


@dataclass
class Recurrent:
    """One ONNX recurrent node, with the layers placed for it so far (by output kind).

    A node read both as a sequence and as its last state becomes two layers
    that share their weights (tied ``Parameter`` objects), so training the
    imported model updates one set, as the ONNX graph has.
    """

    kind: str
    params: dict[str, Any]
    weights: list[tuple[np.ndarray, ...]]
    source: Any  # the input placeholder (batch first when ``batch_first``)
    batch_first: bool
    placed: dict[str, Any] = field(default_factory=dict)
    layers: list[Any] = field(default_factory=list)  # the layers placed, sharing the first's weights

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
            if self.layers:  # one node read as both outputs: two layers sharing one set of weights
                for names in layer._param_names[0]:
                    for name in names:
                        setattr(layer, name, getattr(self.layers[0], name))
            self.layers.append(layer)
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


@dataclass(frozen=True)
class StackedStates:
    """States of several recurrent nodes concatenated on axis 0 (PyTorch's ``h_n`` of stacked layers)."""

    parts: tuple[RecurrentOut, ...]


@dataclass(frozen=True)
class DirectionState:
    """The final hidden state of direction ``direction`` of the bidirectional ``node``."""

    node: Recurrent
    direction: int


def state_at(parts: tuple[RecurrentOut, ...], index: int, node: Any) -> Any:
    """Entry ``index`` of the states ``parts`` stacked (``h_n[index]``).

    A node's ``Y_h`` holds one entry per direction; the entry of a
    unidirectional node is its layer's last hidden state (``"last"`` output),
    one of a bidirectional node a :class:`DirectionState` (both concatenated
    in order, ``cat([h_n[-2], h_n[-1]], 1)``, are the ``"last"`` output).
    """
    sizes = [part.node.directions for part in parts]
    where = f"ONNX import: {node.op_type} node {node.name!r}"
    if not -sum(sizes) <= index < sum(sizes):
        raise ExportError(f"{where} selects state {index} of {sum(sizes)}")
    index %= sum(sizes)
    for part, size in zip(parts, sizes):
        if index >= size:
            index -= size
            continue
        if part.view != "Y_h":
            raise ExportError(f"{where} selects a cell state; this pattern has no built-in layer")
        return part.node.place("last") if size == 1 else DirectionState(part.node, index)
    raise AssertionError("unreachable")


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
    if value is None:
        return  # absent
    if index != 4 and (value is ZEROS or (isinstance(value, np.ndarray) and not value.any())):
        return  # zeros (constant, or of the input's shape, as exporters build them): what the layers do
    shown = "computed at run time" if value is DYNAMIC or not isinstance(value, np.ndarray) else "not zeros"
    raise ExportError(
        f"ONNX import: {node.op_type} node {node.name!r} has the input {_EXTRA_INPUTS.get(index, index)} "
        f"({name!r}, {shown}); the layers run whole sequences from zero initial states without peepholes"
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
    """The record whose unidirectional batch-first ``"sequence"`` placeholder is ``tensor``, or ``None``.

    (Axis 1 of a time-major sequence is the batch: its ``-1`` is the last sample, not the last step.)
    """
    for record in imp.records:
        if record.placed.get("sequence") is tensor:
            return record if record.directions == 1 and record.batch_first else None
    return None
