"""ONNX operators -> built-in layers, for :func:`framework.onnx.load`.

``HANDLERS[op_type](imp, node)`` returns the values of the node's outputs (see
:mod:`framework.onnx.importer` for the kinds of value). :func:`evaluate` first
folds nodes whose inputs are all constants (NumPy) and marks those fed by
runtime shapes as dynamic; what remains must map to a layer. The dense,
element-wise and shape handlers are here; convolution, pooling, normalisation
and padding are in :mod:`framework.onnx.import_spatial`, the recurrent nodes in
:mod:`framework.onnx.import_recurrent`. Operators follow the file's opset
(:attr:`~framework.onnx.importer.Importer.opset`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from framework.errors import ExportError
from framework.onnx import import_recurrent as rec
from framework.onnx import import_spatial as spatial
from framework.onnx.importer import DYNAMIC, ZEROS, Importer, TimeMajor, assign, is_tensor, make_layer

__all__ = ["HANDLERS", "evaluate"]


def _axes(imp: Importer, node: Any, attrs: dict[str, Any]) -> list[int] | None:
    if "axes" in attrs:
        return [int(a) for a in attrs["axes"]]
    if len(node.input) > 1 and node.input[1]:
        return [int(a) for a in np.atleast_1d(imp.const(node.input[1], node, "axes"))]
    return None


def _fold(imp: Importer, node: Any, args: list[Any]) -> list[Any]:
    """Run ``node`` in NumPy on constant ``args``."""
    op, a, attrs = node.op_type, args, imp.attrs(node)
    if op in ("Identity", "Cast"):
        out = a[0] if op == "Identity" else a[0].astype(imp.onnx.helper.tensor_dtype_to_np_dtype(attrs["to"]))
    elif op == "Unsqueeze":
        out = np.expand_dims(a[0], tuple(_axes(imp, node, attrs) or ()))
    elif op == "Squeeze":
        axes = _axes(imp, node, attrs)
        out = np.squeeze(a[0], tuple(axes) if axes is not None else None)
    elif op == "Concat":
        out = np.concatenate([np.atleast_1d(x) for x in a], axis=attrs.get("axis", 0))
    elif op == "Gather":
        out = np.take(a[0], a[1], axis=attrs.get("axis", 0))
    elif op == "Reshape":
        out = a[0].reshape([d if d != 0 else a[0].shape[i] for i, d in enumerate(a[1])])
    elif op == "Transpose":
        out = np.transpose(a[0], attrs.get("perm"))
    elif op == "Shape":
        out = np.asarray(a[0].shape, dtype=np.int64)
    elif op in ("Add", "Sub", "Mul", "Div"):
        out = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[op](a[0], a[1])
    elif op == "ConstantOfShape":
        value = attrs.get("value")
        fill = imp.onnx.numpy_helper.to_array(value) if value is not None else np.zeros(1, np.float32)
        out = np.full(tuple(int(d) for d in a[0]), fill.reshape(-1)[0], dtype=fill.dtype)
    else:
        raise ExportError(f"ONNX import: cannot fold the constant {op} node {node.name!r}")
    return [np.asarray(out)]


_SHAPE_OPS = {
    "Shape",
    "Gather",
    "Unsqueeze",
    "Squeeze",
    "Concat",
    "Cast",
    "Slice",
    "Add",
    "Sub",
    "Mul",
    "Div",
}


def evaluate(imp: Importer, node: Any) -> list[Any]:
    """The values of ``node``'s outputs."""
    op = node.op_type
    if op == "Constant":
        attrs = imp.attrs(node)
        if "value" not in attrs:
            raise ExportError(f"ONNX import: Constant node {node.name!r} without a tensor value")
        return [imp.onnx.numpy_helper.to_array(attrs["value"])]
    args = [imp.values.get(name) if name else None for name in node.input]
    present = [a for a in args if a is not None]
    if present and all(isinstance(a, np.ndarray) for a in present):
        return _fold(imp, node, args)
    if present and all(isinstance(a, np.ndarray) or a is DYNAMIC or a is ZEROS for a in present):
        if op == "ConstantOfShape":
            value = imp.attrs(node).get("value")
            zero = value is None or not imp.onnx.numpy_helper.to_array(value).any()
            return [ZEROS if zero else DYNAMIC]
        if op in _SHAPE_OPS:
            return [DYNAMIC]
    handler = HANDLERS.get(op)
    if handler is None:
        raise ExportError(
            f"ONNX import: operator {op!r} (node {node.name!r}) has no built-in layer; "
            f"supported operators: {', '.join(sorted(HANDLERS))}"
        )
    return list(handler(imp, node))


# -- pass-through, dense and element-wise ------------------------------------


def _identity(imp: Importer, node: Any) -> list[Any]:
    return [imp.values.get(node.input[0]), None]


def _shape(imp: Importer, node: Any) -> list[Any]:
    imp.tensor(node.input[0], node)
    return [DYNAMIC]


def _gemm_bias(imp: Importer, node: Any, out: int, beta: float) -> np.ndarray:
    """Gemm's ``C`` as Linear's ``(out,)`` bias (``C`` broadcasting the same to every row)."""
    c = imp.const(node.input[2], node, "bias")
    if c.ndim > 2 or (c.ndim == 2 and c.shape[0] != 1) or c.size not in (1, out):
        raise ExportError(
            f"ONNX import: Gemm node {node.name!r} has a bias C of shape {c.shape}; Linear's bias needs C "
            f"broadcasting the same to every row of the (N, {out}) output: (), (1,), ({out},) or (1, {out})"
        )
    return np.broadcast_to(c.reshape(-1) * beta, (out,))


def _gemm(imp: Importer, node: Any) -> list[Any]:
    attrs = imp.attrs(node)
    if attrs.get("transA", 0):
        raise ExportError(f"ONNX import: Gemm node {node.name!r} with transA=1 has no built-in layer")
    x = imp.tensor(node.input[0], node)
    w = imp.const(node.input[1], node, "weight") * attrs.get("alpha", 1.0)
    w = w if attrs.get("transB", 0) else w.T
    has_bias = len(node.input) > 2 and bool(node.input[2])
    layer = make_layer("Linear", w.shape[1], w.shape[0], bias=has_bias)
    assign(layer.weight, w)
    if has_bias:
        assign(layer.bias, _gemm_bias(imp, node, w.shape[0], attrs.get("beta", 1.0)))
    return [layer(x)]


def _matmul(imp: Importer, node: Any) -> list[Any]:
    x = imp.tensor(node.input[0], node)
    w = imp.const(node.input[1], node, "weight")
    if w.ndim != 2:
        raise ExportError(
            f"ONNX import: MatMul node {node.name!r} with a rank-{w.ndim} weight is unsupported"
        )
    add = imp.sole_consumer(node.output[0])
    bias = None
    if add is not None and add.op_type == "Add":
        other = [n for n in add.input if n != node.output[0]]
        value = imp.values.get(other[0]) if len(other) == 1 else None
        if isinstance(value, np.ndarray) and value.size == w.shape[1]:
            bias = value.reshape(-1)
    layer = make_layer("Linear", w.shape[0], w.shape[1], bias=bias is not None)
    assign(layer.weight, w.T)
    y = layer(x)
    if bias is not None:
        assign(layer.bias, bias)
        imp.fused[add.output[0]] = y
    return [y]


_MERGES = {"Add": "Add", "Sub": "Subtract", "Mul": "Multiply", "Max": "Maximum", "Min": "Minimum"}
_MERGES.update({"Sum": "Add", "Mean": "Average"})


def _merge(imp: Importer, node: Any) -> list[Any]:
    tensors = [imp.tensor(name, node) for name in node.input]
    if len(tensors) == 1:
        return [tensors[0]]
    return [make_layer(_MERGES[node.op_type])(tensors)]


def _concat(imp: Importer, node: Any) -> list[Any]:
    tensors = [imp.tensor(name, node) for name in node.input]
    return [make_layer("Concatenate", axis=int(imp.attrs(node)["axis"]))(tensors)]


def _activation(name: str, **fixed: Any) -> Any:
    def handler(imp: Importer, node: Any) -> list[Any]:
        attrs = imp.attrs(node)
        kwargs = {k: attrs[a] for k, a in fixed.items() if a in attrs}
        if node.op_type == "Gelu":
            approximate = attrs.get("approximate", b"none")
            kwargs["approximate"] = approximate.decode() if isinstance(approximate, bytes) else approximate
        return [make_layer(name, **kwargs)(imp.tensor(node.input[0], node))]

    return handler


def _softmax(imp: Importer, node: Any) -> list[Any]:
    """``Softmax`` / ``LogSoftmax``: over one axis from opset 13; before, over all axes from ``axis`` on.

    Below opset 13 the input is seen as 2-D, ``(prod(shape[:axis]), prod(shape[axis:]))``
    (``axis`` defaults to 1), normalised along its second axis and reshaped
    back: a ``Reshape`` to ``(N, *shape[1:axis], -1)``, the layer along the last
    axis, and a ``Reshape`` back. ``axis = 0`` (the batch normalised as one) is refused.
    """
    name = node.op_type
    attrs = imp.attrs(node)
    x = imp.tensor(node.input[0], node)
    if imp.opset >= 13:
        return [make_layer(name, axis=int(attrs.get("axis", -1)))(x)]
    rank = len(x.shape)
    axis = int(attrs.get("axis", 1))
    axis = axis + rank if axis < 0 else axis
    where = f"ONNX import: {name} node {node.name!r} (opset {imp.opset}, axis {attrs.get('axis', 1)})"
    if not 0 < axis < rank:
        raise ExportError(
            f"{where} normalises the input of shape {x.shape} flattened to 2-D at axis {axis}; only "
            f"axes 1 to {rank - 1} keep the batch axis apart"
        )
    if axis == rank - 1:
        return [make_layer(name, axis=-1)(x)]
    if any(d is None for d in x.shape[1:]):
        raise ExportError(
            f"{where} normalises the axes {axis}.. of its input together; their sizes must be known, got "
            f"{x.shape}"
        )
    merged = make_layer("Reshape", *x.shape[1:axis], -1)(x)
    return [make_layer("Reshape", *x.shape[1:])(make_layer(name, axis=-1)(merged))]


# -- shapes ------------------------------------------------------------------


def _flatten(imp: Importer, node: Any) -> list[Any]:
    if int(imp.attrs(node).get("axis", 1)) != 1:
        raise ExportError(f"ONNX import: Flatten node {node.name!r} with axis != 1 merges the batch axis")
    return [make_layer("Flatten")(imp.tensor(node.input[0], node))]


def _reshape(imp: Importer, node: Any) -> list[Any]:
    value = imp.values.get(node.input[0])
    target = [int(d) for d in imp.const(node.input[1], node, "shape")]
    if isinstance(value, rec.RecurrentOut) and value.view == "Y_t" and target == [0, 0, -1]:
        return [rec.sequence(value.node)]
    if isinstance(value, rec.RecurrentOut) and value.view == "Y_h_t":
        return [rec.last_of_states(value.node, node, target)]
    x = imp.tensor(node.input[0], node)
    rest = target[1:]
    if target[0] not in (0, -1) or (target[0] == -1 and -1 in rest) or 0 in rest:
        raise ExportError(f"ONNX import: Reshape node {node.name!r} to {target} changes the batch axis")
    return [make_layer("Reshape", *rest)(x)]


def _transpose(imp: Importer, node: Any) -> list[Any]:
    value = imp.values.get(node.input[0])
    attrs = imp.attrs(node)
    if "perm" not in attrs:  # the default: reverse the axes
        x = imp.tensor(node.input[0], node)
        attrs["perm"] = list(range(len(x.shape)))[::-1]
    perm = [int(p) for p in attrs["perm"]]
    if isinstance(value, rec.RecurrentOut) and value.view == "Y" and perm == [0, 2, 1, 3]:
        return [rec.RecurrentOut(value.node, "Y_t")]
    if isinstance(value, rec.RecurrentOut) and value.view == "Y_h" and perm == [1, 0, 2]:
        return [rec.RecurrentOut(value.node, "Y_h_t")]
    if isinstance(value, TimeMajor) and perm == [1, 0, 2]:
        return [value.tensor]
    x = imp.tensor(node.input[0], node)
    if perm == list(range(len(x.shape))):
        return [x]
    if perm == [1, 0, 2]:
        return [TimeMajor(x)]
    if perm[0] != 0:
        raise ExportError(f"ONNX import: Transpose node {node.name!r} with perm {perm} moves the batch axis")
    return [make_layer("Permute", tuple(perm[1:]))(x)]


def _squeeze(imp: Importer, node: Any) -> list[Any]:
    value = imp.values.get(node.input[0])
    axes = _axes(imp, node, imp.attrs(node))
    if isinstance(value, rec.RecurrentOut) and value.view == "Y" and axes == [1]:
        if value.node.directions == 1:
            return [rec.sequence(value.node)]
    if isinstance(value, rec.RecurrentOut) and value.view == "Y_h" and axes == [0]:
        return [rec.last(value.node, node)]
    raise ExportError(f"ONNX import: Squeeze node {node.name!r} (axes {axes}) has no built-in layer here")


def _gather(imp: Importer, node: Any) -> list[Any]:
    axis = int(imp.attrs(node).get("axis", 0))
    data, indices = imp.values.get(node.input[0]), imp.values.get(node.input[1])
    if isinstance(data, np.ndarray) and is_tensor(indices) and axis == 0:
        layer = make_layer("Embedding", data.shape[0], data.shape[1])
        assign(layer.weight, data)
        return [layer(indices)]
    if isinstance(indices, np.ndarray) and indices.ndim == 0 and int(indices) == -1:
        if isinstance(data, rec.RecurrentOut) and data.view == "Y_h" and axis == 0:
            return [rec.last(data.node, node)]
        record = rec.last_step_of(imp, data) if is_tensor(data) and axis == 1 else None
        if record is not None:
            return [record.place("last")]
    raise ExportError(f"ONNX import: Gather node {node.name!r} has no built-in layer in this position")


HANDLERS: dict[str, Any] = {
    "Identity": _identity,
    "Dropout": _identity,
    "Shape": _shape,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "Concat": _concat,
    "Relu": _activation("ReLU"),
    "LeakyRelu": _activation("LeakyReLU", negative_slope="alpha"),
    "Elu": _activation("ELU", alpha="alpha"),
    "Sigmoid": _activation("Sigmoid"),
    "Tanh": _activation("Tanh"),
    "Softmax": _softmax,
    "LogSoftmax": _softmax,
    "Softplus": _activation("Softplus"),
    "Gelu": _activation("GELU"),
    "Conv": spatial.conv,
    "ConvTranspose": spatial.conv,
    "MaxPool": spatial.pool,
    "AveragePool": spatial.pool,
    "GlobalAveragePool": spatial.global_pool,
    "BatchNormalization": spatial.batch_norm,
    "LayerNormalization": spatial.layer_norm,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Transpose": _transpose,
    "Squeeze": _squeeze,
    "Gather": _gather,
    "Pad": spatial.pad,
    "RNN": rec.recurrent_node,
    "LSTM": rec.recurrent_node,
    "GRU": rec.recurrent_node,
    **{op: _merge for op in _MERGES},
}
