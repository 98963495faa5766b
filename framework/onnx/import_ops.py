"""ONNX operators -> built-in layers, for :func:`framework.onnx.load`.

``HANDLERS[op_type](imp, node)`` returns the values of the node's outputs (see
:mod:`framework.onnx.importer` for the kinds of value). :func:`evaluate` first
folds nodes whose inputs are all constants (NumPy) and marks those fed by
runtime shapes as dynamic; what remains must map to a layer.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from framework.errors import ExportError
from framework.onnx import import_recurrent as rec
from framework.onnx.importer import DYNAMIC, ZEROS, Importer, TimeMajor, is_tensor

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


def _layer(name: str, *args: Any, **kwargs: Any) -> Any:
    from framework import layers

    return getattr(layers, name)(*args, **kwargs)


def _set(param: Any, value: Any) -> None:
    param.data[...] = np.asarray(value).reshape(param.data.shape)


# -- pass-through, dense and element-wise ------------------------------------


def _identity(imp: Importer, node: Any) -> list[Any]:
    return [imp.values.get(node.input[0]), None]


def _shape(imp: Importer, node: Any) -> list[Any]:
    imp.tensor(node.input[0], node)
    return [DYNAMIC]


def _gemm(imp: Importer, node: Any) -> list[Any]:
    attrs = imp.attrs(node)
    if attrs.get("transA", 0):
        raise ExportError(f"ONNX import: Gemm node {node.name!r} with transA=1 has no built-in layer")
    x = imp.tensor(node.input[0], node)
    w = imp.const(node.input[1], node, "weight") * attrs.get("alpha", 1.0)
    w = w if attrs.get("transB", 0) else w.T
    b = imp.values.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    layer = _layer("Linear", w.shape[1], w.shape[0], bias=b is not None)
    _set(layer.weight, w)
    if b is not None:
        bias = np.broadcast_to(imp.const(node.input[2], node, "bias") * attrs.get("beta", 1.0), w.shape[:1])
        _set(layer.bias, bias)
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
    layer = _layer("Linear", w.shape[0], w.shape[1], bias=bias is not None)
    _set(layer.weight, w.T)
    y = layer(x)
    if bias is not None:
        _set(layer.bias, bias)
        imp.fused[add.output[0]] = y
    return [y]


_MERGES = {"Add": "Add", "Sub": "Subtract", "Mul": "Multiply", "Max": "Maximum", "Min": "Minimum"}
_MERGES.update({"Sum": "Add", "Mean": "Average"})


def _merge(imp: Importer, node: Any) -> list[Any]:
    tensors = [imp.tensor(name, node) for name in node.input]
    if len(tensors) == 1:
        return [tensors[0]]
    return [_layer(_MERGES[node.op_type])(tensors)]


def _concat(imp: Importer, node: Any) -> list[Any]:
    tensors = [imp.tensor(name, node) for name in node.input]
    return [_layer("Concatenate", axis=int(imp.attrs(node)["axis"]))(tensors)]


def _activation(name: str, **fixed: Any) -> Any:
    def handler(imp: Importer, node: Any) -> list[Any]:
        attrs = imp.attrs(node)
        kwargs = {k: attrs[a] for k, a in fixed.items() if a in attrs}
        if node.op_type == "Gelu":
            approximate = attrs.get("approximate", b"none")
            kwargs["approximate"] = approximate.decode() if isinstance(approximate, bytes) else approximate
        if node.op_type in ("Softmax", "LogSoftmax"):
            kwargs["axis"] = int(attrs.get("axis", -1))
        return [_layer(name, **kwargs)(imp.tensor(node.input[0], node))]

    return handler


# -- convolution, pooling, normalisation -------------------------------------


def _symmetric_pads(node: Any, attrs: dict[str, Any], rank: int) -> tuple[int, ...]:
    pads = list(attrs.get("pads", [0] * 2 * rank))
    auto = attrs.get("auto_pad", b"NOTSET")
    if auto not in (b"NOTSET", b"VALID", "NOTSET", "VALID") or pads[:rank] != pads[rank:]:
        raise ExportError(
            f"ONNX import: {node.op_type} node {node.name!r} has asymmetric padding {pads} / auto_pad "
            f"{auto!r}; the layers pad both sides of an axis equally"
        )
    return tuple(int(p) for p in pads[:rank])


def _conv(imp: Importer, node: Any) -> list[Any]:
    attrs = imp.attrs(node)
    x = imp.tensor(node.input[0], node)
    w = imp.const(node.input[1], node, "weight")
    rank = w.ndim - 2
    transpose = node.op_type == "ConvTranspose"
    if rank not in (1, 2) or (transpose and rank != 2):
        raise ExportError(f"ONNX import: {node.op_type} node {node.name!r} is {rank}-D; unsupported")
    groups = int(attrs.get("group", 1))
    has_bias = len(node.input) > 2 and bool(node.input[2])
    kwargs: dict[str, Any] = {
        "stride": tuple(attrs.get("strides", [1] * rank)),
        "padding": _symmetric_pads(node, attrs, rank),
        "dilation": tuple(attrs.get("dilations", [1] * rank)),
        "groups": groups,
        "bias": has_bias,
    }
    if transpose:
        kwargs["output_padding"] = tuple(attrs.get("output_padding", [0] * rank))
        layer = _layer("ConvTranspose2d", w.shape[0], w.shape[1] * groups, tuple(w.shape[2:]), **kwargs)
    else:
        name = "Conv2d" if rank == 2 else "Conv1d"
        layer = _layer(name, w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), **kwargs)
    _set(layer.weight, w)
    if has_bias:
        _set(layer.bias, imp.const(node.input[2], node, "bias"))
    return [layer(x)]


def _pool(imp: Importer, node: Any) -> list[Any]:
    attrs = imp.attrs(node)
    kernel = tuple(int(k) for k in attrs["kernel_shape"])
    rank = len(kernel)
    if any(d != 1 for d in attrs.get("dilations", [1] * rank)) or rank not in (1, 2):
        raise ExportError(f"ONNX import: {node.op_type} node {node.name!r} (dilated or 3-D) is unsupported")
    kind = ("MaxPool" if node.op_type == "MaxPool" else "AvgPool") + f"{rank}d"
    kwargs: dict[str, Any] = {
        "stride": tuple(attrs.get("strides", [1] * rank)),
        "padding": _symmetric_pads(node, attrs, rank),
        "ceil_mode": bool(attrs.get("ceil_mode", 0)),
    }
    if node.op_type == "AveragePool":
        kwargs["count_include_pad"] = bool(attrs.get("count_include_pad", 0))
    return [_layer(kind, kernel, **kwargs)(imp.tensor(node.input[0], node)), None]


def _global_pool(imp: Importer, node: Any) -> list[Any]:
    x = imp.tensor(node.input[0], node)
    if len(x.shape) != 4:
        raise ExportError(f"ONNX import: GlobalAveragePool node {node.name!r} on a rank-{len(x.shape)} input")
    pooled = _layer("GlobalAvgPool2d")(x)
    return [_layer("Reshape", x.shape[1], 1, 1)(pooled)]


def _batch_norm(imp: Importer, node: Any) -> list[Any]:
    attrs = imp.attrs(node)
    scale, bias, mean, var = (imp.const(n, node, "statistic") for n in node.input[1:5])
    layer = _layer("BatchNorm", scale.shape[0], eps=float(attrs.get("epsilon", 1e-5)))
    for param, value in zip(
        (layer.weight, layer.bias, layer.running_mean, layer.running_var), (scale, bias, mean, var)
    ):
        _set(param, value)
    return [layer(imp.tensor(node.input[0], node))]


def _layer_norm(imp: Importer, node: Any) -> list[Any]:
    attrs = imp.attrs(node)
    scale = imp.const(node.input[1], node, "scale")
    bias = imp.values.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if int(attrs.get("axis", -1)) != -scale.ndim:
        raise ExportError(f"ONNX import: LayerNormalization node {node.name!r}: axis must be -scale.ndim")
    layer = _layer(
        "LayerNorm", tuple(scale.shape), eps=float(attrs.get("epsilon", 1e-5)), bias=bias is not None
    )
    _set(layer.weight, scale)
    if bias is not None:
        _set(layer.bias, bias)
    return [layer(imp.tensor(node.input[0], node))]


# -- shapes ------------------------------------------------------------------


def _flatten(imp: Importer, node: Any) -> list[Any]:
    if int(imp.attrs(node).get("axis", 1)) != 1:
        raise ExportError(f"ONNX import: Flatten node {node.name!r} with axis != 1 merges the batch axis")
    return [_layer("Flatten")(imp.tensor(node.input[0], node))]


def _reshape(imp: Importer, node: Any) -> list[Any]:
    value = imp.values.get(node.input[0])
    target = [int(d) for d in imp.const(node.input[1], node, "shape")]
    if isinstance(value, rec.RecurrentOut) and value.view == "Y_t" and target == [0, 0, -1]:
        return [rec.sequence(value.node)]
    x = imp.tensor(node.input[0], node)
    rest = target[1:]
    if target[0] not in (0, -1) or (target[0] == -1 and -1 in rest) or 0 in rest:
        raise ExportError(f"ONNX import: Reshape node {node.name!r} to {target} changes the batch axis")
    return [_layer("Reshape", *rest)(x)]


def _transpose(imp: Importer, node: Any) -> list[Any]:
    value = imp.values.get(node.input[0])
    perm = [int(p) for p in imp.attrs(node)["perm"]]
    if isinstance(value, rec.RecurrentOut) and value.view == "Y" and perm == [0, 2, 1, 3]:
        return [rec.RecurrentOut(value.node, "Y_t")]
    if isinstance(value, TimeMajor) and perm == [1, 0, 2]:
        return [value.tensor]
    x = imp.tensor(node.input[0], node)
    if perm == [1, 0, 2]:
        return [TimeMajor(x)]
    if perm[0] != 0:
        raise ExportError(f"ONNX import: Transpose node {node.name!r} with perm {perm} moves the batch axis")
    return [_layer("Permute", tuple(perm[1:]))(x)]


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
        layer = _layer("Embedding", data.shape[0], data.shape[1])
        _set(layer.weight, data)
        return [layer(indices)]
    if isinstance(indices, np.ndarray) and indices.ndim == 0 and int(indices) == -1:
        if isinstance(data, rec.RecurrentOut) and data.view == "Y_h" and axis == 0:
            return [rec.last(data.node, node)]
        record = rec.last_step_of(imp, data) if is_tensor(data) and axis == 1 else None
        if record is not None:
            return [record.place("last")]
    raise ExportError(f"ONNX import: Gather node {node.name!r} has no built-in layer in this position")


def _pad(imp: Importer, node: Any) -> list[Any]:
    x = imp.tensor(node.input[0], node)
    pads = [int(p) for p in imp.const(node.input[1], node, "pads")]
    value = imp.values.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    mode = imp.attrs(node).get("mode", b"constant")
    if (
        len(pads) != 8
        or any(pads[i] for i in (0, 1, 4, 5))
        or mode not in (b"constant", "constant")
        or (isinstance(value, np.ndarray) and value.any())
    ):
        raise ExportError(f"ONNX import: Pad node {node.name!r} ({pads}, {mode!r}) is not a zero 2-D padding")
    top, left, bottom, right = pads[2], pads[3], pads[6], pads[7]
    return [_layer("ZeroPadding2d", (left, right, top, bottom))(x)]


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
    "Softmax": _activation("Softmax"),
    "LogSoftmax": _activation("LogSoftmax"),
    "Softplus": _activation("Softplus"),
    "Gelu": _activation("GELU"),
    "Conv": _conv,
    "ConvTranspose": _conv,
    "MaxPool": _pool,
    "AveragePool": _pool,
    "GlobalAveragePool": _global_pool,
    "BatchNormalization": _batch_norm,
    "LayerNormalization": _layer_norm,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Transpose": _transpose,
    "Squeeze": _squeeze,
    "Gather": _gather,
    "Pad": _pad,
    "RNN": rec.recurrent_node,
    "LSTM": rec.recurrent_node,
    "GRU": rec.recurrent_node,
    **{op: _merge for op in _MERGES},
}
