"""ONNX operators -> built-in layers, for :func:`framework.onnx.load`.

``HANDLERS[op_type](imp, node)`` returns the values of the node's outputs (see
:mod:`framework.onnx.importer` for the kinds of value). :func:`evaluate` first
folds nodes whose inputs are all constants and follows values computed from
runtime shapes (:mod:`framework.onnx.import_shapes`); what remains must map to
a layer. The dense, element-wise, activation and normalisation handlers are
here; the shape operators' in :mod:`framework.onnx.import_shapes`,
convolution, pooling, padding and resizing in
:mod:`framework.onnx.import_spatial`, the recurrent nodes in
:mod:`framework.onnx.import_recurrent`. Operators follow the file's opset
(:attr:`~framework.onnx.importer.Importer.opset`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from framework.errors import ExportError
from framework.onnx import import_recurrent as rec
from framework.onnx import import_shapes as shapes
from framework.onnx import import_spatial as spatial
from framework.onnx.importer import DYNAMIC, ZEROS, Importer, assign, make_layer

__all__ = ["HANDLERS", "batch_norm", "evaluate", "instance_norm", "layer_norm", "torch_momentum"]


def evaluate(imp: Importer, node: Any) -> list[Any]:
    """The values of ``node``'s outputs."""
    op = node.op_type
    imp.check_node(node)
    if op == "Constant":
        return [shapes.constant(imp, node)]
    args = [imp.values.get(name) if name else None for name in node.input]
    present = [a for a in args if a is not None]
    if present and all(isinstance(a, np.ndarray) for a in present):
        return shapes.fold(imp, node, args)
    if present and all(
        isinstance(a, (np.ndarray, shapes.Dims)) or a is DYNAMIC or a is ZEROS for a in present
    ):
        value = shapes.runtime_value(imp, node, args)
        if value is not None:
            return [value]
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


def _dropout(imp: Importer, node: Any) -> list[Any]:
    """``Dropout`` in inference (``training_mode`` false, or ``is_test=1`` before opset 7): the identity."""
    attrs = imp.attrs(node)
    where = f"ONNX import: Dropout node {node.name!r}"
    if imp.opset < 7 and not attrs.get("is_test", 0):
        raise ExportError(
            f"{where} (opset {imp.opset}) has is_test={attrs.get('is_test', 0)}: it drops entries at "
            "inference; only inference-mode dropout (the identity) maps"
        )
    if len(node.input) > 2 and node.input[2]:
        mode = imp.values.get(node.input[2])
        if not isinstance(mode, np.ndarray) or mode.any():
            shown = mode.tolist() if isinstance(mode, np.ndarray) else "computed at run time"
            raise ExportError(
                f"{where} has training_mode={shown}: it drops entries at inference; only "
                "training_mode=False (the identity) maps"
            )
    return _identity(imp, node)


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


def _row_bias(value: np.ndarray, out: int, rank: int) -> bool:
    """Whether adding ``value`` to a rank-``rank`` ``(..., out)`` product adds one bias to every row.

    That is a constant of rank at most ``rank`` whose axes are all 1 but the
    last, of size ``out`` or 1: any other shape broadcasts the product to
    another shape.
    """
    if value.ndim > rank or not np.issubdtype(value.dtype, np.floating):
        return False
    return all(d == 1 for d in value.shape[:-1]) and (value.ndim == 0 or value.shape[-1] in (1, out))


def _matmul(imp: Importer, node: Any) -> list[Any]:
    x = imp.tensor(node.input[0], node)
    w = imp.const(node.input[1], node, "weight")
    if w.ndim != 2:
        raise ExportError(
            f"ONNX import: MatMul node {node.name!r} with a rank-{w.ndim} weight is unsupported"
        )
    add = imp.sole_consumer(node.output[0])
    bias = None
    if add is not None and add.op_type == "Add" and not add.attribute:  # no opset-6 broadcast/axis
        other = [n for n in add.input if n != node.output[0]]
        value = imp.values.get(other[0]) if len(other) == 1 else None
        if isinstance(value, np.ndarray) and _row_bias(value, w.shape[1], len(x.shape)):
            bias = np.broadcast_to(value.reshape(-1), (w.shape[1],))
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
    """``Concat`` of placeholders; of recurrent nodes' final states (``h_n`` of stacked layers); or of
    both directions of a bidirectional node's final state (its ``"last"`` output)."""
    axis = int(imp.attrs(node)["axis"])
    values = [imp.values.get(name) for name in node.input]
    parts: list[Any] = []
    for v in values:
        parts.extend(v.parts if isinstance(v, rec.StackedStates) else [v])
    if axis == 0 and all(isinstance(p, rec.RecurrentOut) and p.view in ("Y_h", "Y_c") for p in parts):
        return [rec.StackedStates(tuple(parts))]
    states = [v for v in values if isinstance(v, rec.DirectionState)]
    if axis in (1, -1) and len(states) == len(values) == 2 and states[0].node is states[1].node:
        if [s.direction for s in states] == [0, 1]:  # [forward, reverse]: the bidirectional "last" output
            return [states[0].node.place("last")]
    tensors = [imp.tensor(name, node) for name in node.input]
    return [make_layer("Concatenate", axis=axis)(tensors)]


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


# -- normalisation -------------------------------------------------------------


def torch_momentum(momentum: float | None) -> float:
    """PyTorch's ``momentum`` for ONNX's (``running = running * m + batch * (1 - m)``): ``1 - m``.

    The attribute is a float32, so ``1 - m`` is rounded to the shortest
    decimal whose ``1 - x`` is that float32 (0.7 stored gives 0.3, not
    0.30000001); no attribute is ONNX's default 0.9, PyTorch's 0.1.
    """
    if momentum is None:
        return 0.1
    stored = np.float32(momentum)
    for digits in range(1, 10):
        candidate = float(f"{1.0 - float(momentum):.{digits}g}")
        if np.float32(1.0 - candidate) == stored:
            return candidate
    return 1.0 - float(momentum)


def batch_norm(imp: Importer, node: Any) -> list[Any]:
    """``BatchNormalization`` (inference form) -> ``BatchNorm`` with its statistics, eps and momentum."""
    attrs = imp.attrs(node)
    where = f"ONNX import: BatchNormalization node {node.name!r}"
    if imp.opset < 7 and not attrs.get("is_test", 0):
        raise ExportError(
            f"{where} (opset {imp.opset}) has is_test={attrs.get('is_test', 0)}: it normalises with the "
            "batch's statistics; only the inference form (is_test=1) maps to BatchNorm"
        )
    if attrs.get("training_mode", 0) or attrs.get("spatial", 1) != 1:
        mode, spatial = attrs.get("training_mode", 0), attrs.get("spatial", 1)
        raise ExportError(
            f"{where} has training_mode={mode} / spatial={spatial}; only the inference form with "
            "per-channel statistics (training_mode=0, spatial=1) maps to BatchNorm"
        )
    momentum = attrs.get("momentum")
    if momentum is not None and not 0.0 <= float(momentum) <= 1.0:
        raise ExportError(f"{where} has momentum={momentum}; it must be in [0, 1]")
    scale, bias, mean, var = (imp.const(n, node, "statistic") for n in node.input[1:5])
    layer = make_layer(
        "BatchNorm", scale.shape[0], eps=float(attrs.get("epsilon", 1e-5)), momentum=torch_momentum(momentum)
    )
    for param, value in zip(
        (layer.weight, layer.bias, layer.running_mean, layer.running_var), (scale, bias, mean, var)
    ):
        assign(param, value)
    return [layer(imp.tensor(node.input[0], node))]


def layer_norm(imp: Importer, node: Any) -> list[Any]:
    """``LayerNormalization`` over the axes from ``axis`` on -> ``LayerNorm`` of those axes' shape."""
    attrs = imp.attrs(node)
    x = imp.tensor(node.input[0], node)
    scale = imp.const(node.input[1], node, "scale")
    bias = imp.const(node.input[2], node, "bias") if len(node.input) > 2 and node.input[2] else None
    rank, axis = len(x.shape), int(attrs.get("axis", -1))
    axis = axis + rank if axis < 0 else axis
    normalized = tuple(x.shape[axis:])
    if not 0 < axis < rank or None in normalized:
        raise ExportError(
            f"ONNX import: LayerNormalization node {node.name!r} normalises the axes from axis="
            f"{attrs.get('axis', -1)} on of an input {x.shape}; they must exclude the batch axis and have "
            "known sizes"
        )
    layer = make_layer("LayerNorm", normalized, eps=float(attrs.get("epsilon", 1e-5)), bias=bias is not None)
    assign(layer.weight, np.broadcast_to(scale, normalized))
    if bias is not None:
        assign(layer.bias, np.broadcast_to(bias, normalized))
    return [layer(x)]


def instance_norm(imp: Importer, node: Any) -> list[Any]:
    """``InstanceNormalization`` of ``(N, C, L)`` / ``(N, C, H, W)`` -> affine ``InstanceNorm1d`` / ``2d``."""
    x = imp.tensor(node.input[0], node)
    scale, bias = (imp.const(n, node, "scale and bias") for n in node.input[1:3])
    if len(x.shape) not in (3, 4):
        raise ExportError(
            f"ONNX import: InstanceNormalization node {node.name!r} on a rank-{len(x.shape)} input; "
            "InstanceNorm1d / InstanceNorm2d read rank 3 / 4"
        )
    name = "InstanceNorm1d" if len(x.shape) == 3 else "InstanceNorm2d"
    eps = float(imp.attrs(node).get("epsilon", 1e-5))
    layer = make_layer(name, scale.shape[0], eps=eps, affine=True)
    assign(layer.weight, scale)
    assign(layer.bias, bias)
    return [layer(x)]


HANDLERS: dict[str, Any] = {
    "Identity": _identity,
    "Dropout": _dropout,
    "Shape": shapes.shape,
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
    "BatchNormalization": batch_norm,
    "InstanceNormalization": instance_norm,
    "LayerNormalization": layer_norm,
    "Flatten": shapes.flatten,
    "Reshape": shapes.reshape,
    "Transpose": shapes.transpose,
    "Squeeze": shapes.squeeze,
    "Gather": shapes.gather,
    "Pad": spatial.pad,
    "Resize": spatial.resize,
    "RNN": rec.recurrent_node,
    "LSTM": rec.recurrent_node,
    "GRU": rec.recurrent_node,
    **{op: _merge for op in _MERGES},
}
