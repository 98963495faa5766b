"""Reading an ONNX graph back as a functional ``Model`` of built-in layers.

:func:`load` walks the graph's nodes in order with a small abstract
interpreter. Every ONNX value becomes one of:

- a placeholder (a :class:`~framework.models.graph.SymbolicTensor`), batch axis first;
- a constant (``numpy`` array): initializers, ``Constant`` nodes and what folds from them;
- a value computed from a runtime shape (``Shape`` -> ``Gather`` -> ``Concat``
  ...): sizes of placeholders (:class:`~framework.onnx.import_shapes.Dims`),
  :data:`ZEROS` (zeros of such a shape, the initial states exporters build)
  or :data:`DYNAMIC` (anything else, which no layer reads);
- :class:`TimeMajor`: a placeholder seen with its first two axes swapped (the
  ``Transpose`` a batch-first recurrent layer is wrapped in);
- a :class:`~framework.onnx.import_recurrent.Recurrent` result not placed in
  the model yet (ONNX's ``Y`` / ``Y_h``), placed once a consumer shows which
  output the layer must give (``"sequence"`` or ``"last"``).

The operators and the layers they become are in
:mod:`framework.onnx.import_ops` (dense, element-wise, normalisation),
:mod:`framework.onnx.import_shapes` (folding, runtime shapes, reshaping),
:mod:`framework.onnx.import_spatial` (convolution, pooling, padding, resizing)
and :mod:`framework.onnx.import_recurrent`; the multi-node patterns exporters
write for activations ONNX lacks (GELU below opset 20, Softplus with a
threshold) are found before the walk by :mod:`framework.onnx.import_patterns`
and become one layer each. An operator, an attribute (:data:`ATTRIBUTES` lists
those read) or an attribute value with no built-in equivalent raises
:class:`~framework.errors.ExportError` naming it, as does a node of another
domain than ONNX's; so does a malformed or empty file. The layers are built in
the element type of the file's floating values (a file of doubles gives a
float64 model).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from framework.errors import ExportError, FrameworkError
from framework.onnx._deps import require_onnx
from framework.runtime.dtype import default_dtype, get_default_dtype

__all__ = [
    "ATTRIBUTES",
    "DYNAMIC",
    "ZEROS",
    "Importer",
    "TimeMajor",
    "assign",
    "file_dtype",
    "load",
    "make_layer",
]


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


def make_layer(name: str, *args: Any, **kwargs: Any) -> Any:
    """A new built-in layer, by its registered class name (``"Linear"``)."""
    from framework import layers

    return getattr(layers, name)(*args, **kwargs)


def assign(param: Any, value: Any) -> None:
    """Copy ``value`` into ``param`` (a ``Parameter`` or buffer), reshaped and cast to it."""
    param.data[...] = np.asarray(value).reshape(param.data.shape)


_POOL = {"auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads", "strides"}
_RECURRENT = {
    "activation_alpha",
    "activation_beta",
    "activations",
    "clip",
    "direction",
    "hidden_size",
    "layout",
}
#: Every attribute each operator the importer reads may carry (those of older opsets too), honoured or
#: refused by its handler; any other is refused rather than ignored. ``consumed_inputs`` (opset < 6)
#: has no meaning at inference.
ATTRIBUTES: dict[str, set[str]] = {
    **{
        op: set() for op in ("Identity", "MatMul", "Relu", "Sigmoid", "Tanh", "Softplus", "GlobalAveragePool")
    },
    **{op: set() for op in ("Max", "Min", "Sum", "Mean")},
    **{op: {"broadcast", "axis"} for op in ("Add", "Sub", "Mul", "Div")},
    "Dropout": {"ratio", "seed", "is_test"},
    "Shape": {"start", "end"},
    "Gemm": {"alpha", "beta", "transA", "transB", "broadcast"},
    "Concat": {"axis"},
    "LeakyRelu": {"alpha"},
    "Elu": {"alpha"},
    "Gelu": {"approximate"},
    "Softmax": {"axis"},
    "LogSoftmax": {"axis"},
    "Conv": {"auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"},
    "ConvTranspose": {"auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"}
    | {"output_padding", "output_shape"},
    "MaxPool": _POOL | {"storage_order"},
    "AveragePool": _POOL | {"count_include_pad"},
    "BatchNormalization": {"epsilon", "momentum", "training_mode", "spatial", "is_test"},
    "LayerNormalization": {"axis", "epsilon", "stash_type"},
    "InstanceNormalization": {"epsilon"},
    "Flatten": {"axis"},
    "Reshape": {"allowzero"},
    "Transpose": {"perm"},
    "Squeeze": {"axes"},
    "Unsqueeze": {"axes"},
    "Gather": {"axis"},
    "Pad": {"mode", "pads", "paddings", "value"},
    "Resize": {"mode", "coordinate_transformation_mode", "nearest_mode", "axes", "antialias", "cubic_coeff_a"}
    | {"exclude_outside", "extrapolation_value", "keep_aspect_ratio_policy"},
    "RNN": _RECURRENT,
    "LSTM": _RECURRENT | {"input_forget"},
    "GRU": _RECURRENT | {"linear_before_reset"},
    "Cast": {"to", "saturate"},
    "Slice": {"starts", "ends", "axes"},
    "ConstantOfShape": {"value"},
    "Expand": set(),
}


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
        #: the version of the default ONNX domain the file imports (operators' semantics depend on it)
        self.opset = next(
            (int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx")),
            int(self.onnx.defs.onnx_opset_version()),
        )
        #: the dtype the layers are built in: the element type of the file's floating values
        self.dtype = file_dtype(proto.graph)
        self.current: Any = None  # the node being read (or a phase, as text), for error messages
        #: the batch size every graph input fixes (a file exported without a dynamic batch axis), else None
        self.batch: int | None = None

    def where(self) -> str:
        """What is being read (``"Conv node 'conv1'"``, ``"the graph's inputs"``), for messages."""
        node = self.current
        if node is None or isinstance(node, str):
            return node or "the graph's inputs"
        return f"{node.op_type} node {node.name!r}"

    def check_node(self, node: Any) -> None:
        """Refuse a node of another domain than ONNX's, or with an attribute no handler reads."""
        op = node.op_type
        if node.domain not in ("", "ai.onnx"):
            raise ExportError(
                f"ONNX import: node {node.name!r} is operator {op!r} of the domain {node.domain!r}; only "
                "the default ONNX domain's operators have built-in layers"
            )
        unknown = sorted({a.name for a in node.attribute} - ATTRIBUTES.get(op, set()) - {"consumed_inputs"})
        if op in ATTRIBUTES and unknown:
            raise ExportError(
                f"ONNX import: {op} node {node.name!r} has the attribute(s) {', '.join(unknown)}, which "
                f"the importer does not read; it reads {', '.join(sorted(ATTRIBUTES[op])) or 'none'}"
            )

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
        """The functional ``Model`` of the graph, its layers built in :attr:`dtype`."""
        with default_dtype(self.dtype):
            return self._run()

    def _run(self) -> Any:
        from framework.models.graph import Input
        from framework.models.model import Model
        from framework.onnx.import_ops import evaluate
        from framework.onnx.import_patterns import find_fusions

        graph = self.proto.graph
        numpy_helper = self.onnx.numpy_helper
        for init in graph.initializer:
            self.values[init.name] = numpy_helper.to_array(init)
        inputs, batches = [], set()
        for value_info in graph.input:
            if value_info.name in self.values:
                continue
            dims = value_info.type.tensor_type.shape.dim
            if not value_info.type.tensor_type.HasField("shape") or not dims:
                raise ExportError(
                    f"ONNX import: graph input {value_info.name!r} has no axes (no shape, or a scalar); a "
                    "model input needs its rank and a batch axis first"
                )
            shape = [d.dim_value if d.HasField("dim_value") else None for d in dims]
            placeholder = Input(tuple(shape[1:]), name=value_info.name)
            self.values[value_info.name] = placeholder
            inputs.append(placeholder)
            batches.add(shape[0])
        self.batch = batches.pop() if len(batches) == 1 else None
        if not inputs or not graph.output:
            raise ExportError(
                f"ONNX import: the graph has {len(inputs)} input(s) and {len(graph.output)} output(s) "
                "besides its weights; a model needs at least one of each"
            )
        fusions = find_fusions(self)
        for index, node in enumerate(graph.node):
            self.current = node
            fusion = fusions.get(index)
            if fusion is not None:  # one layer for several nodes, placed at the first of them
                if fusion.output not in self.values:
                    self.values[fusion.output] = fusion.place(self, node)
                continue
            if node.output and node.output[0] in self.fused:
                for out in node.output:
                    self.values[out] = self.fused.get(out)
                continue
            outs = evaluate(self, node)
            for name, value in zip(node.output, outs):
                self.values[name] = value
        self.current = "the graph's outputs"
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
            # "." joins state_dict keys, "/" nests HDF5 groups: neither may be in a layer name
            name=re.sub(r"[./\x00]", "_", graph.name) or None,
        )


#: ONNX floating element types -> the dtype the layers are built in.
_FLOAT_TYPES = {1: np.float32, 10: np.float16, 11: np.float64}  # FLOAT, FLOAT16, DOUBLE


def file_dtype(graph: Any) -> np.dtype:
    """The dtype of ``graph``'s floating values: its first floating input, output or initializer.

    float32, float64 and float16 are kept; a graph without any of them (or of
    bfloat16) gives the default dtype.
    """
    for value_info in (*graph.input, *graph.output):
        found = _FLOAT_TYPES.get(value_info.type.tensor_type.elem_type)
        if found is not None:
            return np.dtype(found)
    for init in graph.initializer:
        found = _FLOAT_TYPES.get(init.data_type)
        if found is not None:
            return np.dtype(found)
    return get_default_dtype()


def load(path: str | os.PathLike[str]) -> Any:
    """Rebuild a functional ``Model`` of built-in layers from the ONNX file ``path``.

    Handles what exporters write for dense, convolutional and recurrent
    networks: ``Gemm``/``MatMul``+``Add`` (Linear), ``Conv`` (``auto_pad``
    resolved), ``ConvTranspose``, pools, ``Resize`` (UpSampling2d),
    ``BatchNormalization``, ``LayerNormalization``, ``InstanceNormalization``,
    ``Gather`` (Embedding), activations, ``Flatten``/``Reshape``/``Transpose``
    (``x.view(x.size(0), -1)`` included), merges and ``RNN``/``LSTM``/``GRU``
    (gate order converted back to PyTorch's; ``h_n[k]`` of stacked layers and
    both directions of a bidirectional one), with shape computations that
    only build zero initial states folded away, and the node patterns
    exporters write for GELU below opset 20 and for Softplus's linear region
    (one layer each). Operators follow the file's opset (``Softmax`` below 13
    normalises all the axes from ``axis`` on). A file of a fixed batch size
    (no dynamic axis) gives a model of any batch size. A recurrent node read
    both as a sequence and as its last state gives two layers sharing one set
    of weights. The model runs in inference mode; its weights are copies of
    the file's, in the file's floating dtype (float64 for a file of doubles);
    the caller's default dtype is left as it was.

    Raises:
        ExportError: an operator or attribute value without a built-in layer
            (naming it and the node), a file that is not ONNX, is empty or
            holds a malformed graph (naming the file).

    Example:
        >>> import framework.onnx  # doctest: +SKIP
        >>> model = framework.onnx.load("lenet.onnx")  # doctest: +SKIP
        >>> model.predict(x)  # doctest: +SKIP
    """
    onnx = require_onnx()
    where = os.fspath(path)
    try:
        proto = onnx.load(where)
    except Exception as exc:  # DecodeError, OSError...
        raise ExportError(f"cannot read {where!r} as an ONNX model: {exc}") from exc
    if not proto.HasField("graph") or not (proto.graph.node or proto.graph.output):
        raise ExportError(
            f"{where!r} holds no ONNX graph (an empty file, or a protobuf that is not an ONNX model): "
            "there is no model to import"
        )
    importer = Importer(proto)
    try:
        model = importer.run()
    except ExportError as exc:
        exc.args = (f"{exc} (importing {where!r})", *exc.args[1:])
        raise
    except (FrameworkError, ArithmeticError, LookupError, TypeError, ValueError) as exc:
        raise ExportError(
            f"cannot import {where!r}: reading {importer.where()} raised {type(exc).__name__}: {exc}; the "
            "graph is malformed, or uses a form of the operator the importer does not read"
        ) from exc
    model.eval()
    return model
