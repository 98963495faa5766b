"""Reading an ONNX graph back as a functional ``Model`` of built-in layers.

:func:`load` walks the graph's nodes in order with a small abstract
interpreter. Every ONNX value becomes one of:

- a placeholder (a :class:`~framework.models.graph.SymbolicTensor`), batch axis first;
- a constant (``numpy`` array): initializers, ``Constant`` nodes and what folds from them;
- :data:`DYNAMIC`: a value computed from a runtime shape (``Shape`` -> ``Gather``
  -> ``Concat`` ...), which exporters use to build zero initial states; a
  ``ConstantOfShape`` of it is :data:`ZEROS`;
- :class:`TimeMajor`: a placeholder seen with its first two axes swapped (the
  ``Transpose`` a batch-first recurrent layer is wrapped in);
- a :class:`~framework.onnx.import_recurrent.Recurrent` result not placed in
  the model yet (ONNX's ``Y`` / ``Y_h``), placed once a consumer shows which
  output the layer must give (``"sequence"`` or ``"last"``).

The operators and the layers they become are in
:mod:`framework.onnx.import_ops`; an operator (or an attribute value) with no
built-in equivalent raises :class:`~framework.errors.ExportError` naming it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from framework.errors import ExportError
from framework.onnx._deps import require_onnx

__all__ = ["DYNAMIC", "ZEROS", "Importer", "TimeMajor", "load"]


class _Marker:
    def __init__(self, label: str) -> None:
        self.label = label

    def __repr__(self) -> str:
        return self.label


#: A value computed from a runtime shape.
DYNAMIC = _Marker("DYNAMIC")
#: Zeros of a runtime shape (``ConstantOfShape`` of a dynamic shape, value 0).
ZEROS = _Marker("ZEROS")


@dataclass(frozen=True)
class TimeMajor:
    """The placeholder ``tensor`` (batch first) seen as ``(L, N, ...)``."""

    tensor: Any


def is_tensor(value: Any) -> bool:
    """Whether ``value`` is a placeholder of the model being built."""
    return bool(getattr(value, "_framework_symbolic", False))


class Importer:
    """The state of one :func:`load`: values by name, consumers, and node attributes."""

    def __init__(self, proto: Any) -> None:
        self.onnx = require_onnx()
        self.proto = proto
        self.values: dict[str, Any] = {"": None}
        self.consumers: dict[str, list[Any]] = {}
        for node in proto.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.records: list[Any] = []  # the recurrent nodes read so far
        self.fused: dict[str, Any] = {}  # output name -> value, for nodes folded into an earlier one

    def attrs(self, node: Any) -> dict[str, Any]:
        return {a.name: self.onnx.helper.get_attribute_value(a) for a in node.attribute}

    def const(self, name: str, node: Any, what: str) -> np.ndarray:
        """The constant value ``name``; ExportError naming the node otherwise."""
        value = self.values.get(name)
        if not isinstance(value, np.ndarray):
            raise ExportError(
                f"ONNX import: {node.op_type} node {node.name!r} needs a constant {what} ({name!r}); "
                "only graphs whose weights and shapes are constants can be rebuilt"
            )
        return value

    def tensor(self, name: str, node: Any) -> Any:
        """The placeholder ``name``; ExportError naming the node otherwise."""
        value = self.values.get(name)
        if not is_tensor(value):
            raise ExportError(
                f"ONNX import: {node.op_type} node {node.name!r} reads {name!r}, which is not a tensor "
                f"of the model here ({type(value).__name__}); this pattern has no built-in layer"
            )
        return value

    def sole_consumer(self, name: str) -> Any:
        users = self.consumers.get(name, [])
        outputs = {o.name for o in self.proto.graph.output}
        return users[0] if len(users) == 1 and name not in outputs else None

    def run(self) -> Any:
        from framework.models.graph import Input
        from framework.models.model import Model
        from framework.onnx.import_ops import evaluate

        graph = self.proto.graph
        numpy_helper = self.onnx.numpy_helper
        for init in graph.initializer:
            self.values[init.name] = numpy_helper.to_array(init)
        inputs = []
        for value_info in graph.input:
            if value_info.name in self.values:
                continue
            dims = value_info.type.tensor_type.shape.dim
            shape = [d.dim_value if d.HasField("dim_value") else None for d in dims][1:]
            placeholder = Input(tuple(shape), name=value_info.name)
            self.values[value_info.name] = placeholder
            inputs.append(placeholder)
        for node in graph.node:
            if node.output and node.output[0] in self.fused:
                for out in node.output:
                    self.values[out] = self.fused.get(out)
                continue
            outs = evaluate(self, node)
            for name, value in zip(node.output, outs):
                self.values[name] = value
        outputs = []
        for value_info in graph.output:
            value = self.values.get(value_info.name)
            if not is_tensor(value):
                raise ExportError(
                    f"ONNX import: graph output {value_info.name!r} is not computed from the inputs "
                    "by supported operators"
                )
            outputs.append(value)
        return Model(
            inputs if len(inputs) > 1 else inputs[0],
            outputs if len(outputs) > 1 else outputs[0],
            name=graph.name or None,
        )


def load(path: str | os.PathLike[str]) -> Any:
    """Rebuild a functional ``Model`` of built-in layers from the ONNX file ``path``.

    Handles what exporters write for dense, convolutional and recurrent
    networks: ``Gemm``/``MatMul``+``Add`` (Linear), ``Conv``, ``ConvTranspose``,
    pools, ``BatchNormalization``, ``LayerNormalization``, ``Gather``
    (Embedding), activations, ``Flatten``/``Reshape``/``Transpose``, merges and
    ``RNN``/``LSTM``/``GRU`` (gate order converted back to PyTorch's), with
    shape computations that only build zero initial states folded away. The
    model runs in inference mode; its weights are copies of the file's.

    Raises:
        ExportError: an operator or attribute value without a built-in layer
            (naming it), or a file that is not ONNX.

    Example:
        >>> import framework.onnx  # doctest: +SKIP
        >>> model = framework.onnx.load("lenet.onnx")  # doctest: +SKIP
        >>> model.predict(x)  # doctest: +SKIP
    """
    onnx = require_onnx()
    try:
        proto = onnx.load(os.fspath(path))
    except Exception as exc:  # DecodeError, OSError...
        raise ExportError(f"cannot read {os.fspath(path)!r} as an ONNX model: {exc}") from exc
    model = Importer(proto).run()
    model.eval()
    return model
