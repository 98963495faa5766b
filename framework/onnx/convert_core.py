"""Converters of the dense, element-wise and merge layers: Linear, activations, Dropout, merges, Embedding.

Each function is a converter, ``fn(ctx, layer, inputs) -> output name`` (see
:mod:`framework.onnx.registry`); :mod:`framework.onnx.builtin` maps the
built-in layer classes to them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from framework.onnx.exporter import ExportContext

__all__ = [
    "linear",
    "passthrough",
    "activation_layer",
    "relu",
    "leaky_relu",
    "elu",
    "sigmoid",
    "tanh",
    "softmax",
    "log_softmax",
    "gelu",
    "silu",
    "softplus",
    "merge_add",
    "merge_subtract",
    "merge_multiply",
    "merge_average",
    "merge_maximum",
    "merge_minimum",
    "concatenate",
    "embedding",
]


def linear(ctx: ExportContext, layer: Any, inputs: list[str]) -> str:
    """``Gemm(x, W, b, transB=1)`` for ``(N, in)``; ``MatMul(x, W^T) + b`` for higher ranks."""
    x = inputs[0]
    shape = ctx.shape(x)
    if shape is not None and len(shape) == 2:
        args = [x, ctx.initializer(layer.weight.data, "weight")]
        if layer.bias is not None:
            args.append(ctx.initializer(layer.bias.data, "bias"))
        y = ctx.node("Gemm", args, transB=1)
    else:
        y = ctx.node("MatMul", [x, ctx.initializer(layer.weight.data.T, "weight_t")])
        if layer.bias is not None:
            y = ctx.node("Add", [y, ctx.initializer(layer.bias.data, "bias")])
    return ctx.activation(layer.activation, y)


def passthrough(ctx: ExportContext, layer: Any, inputs: list[str]) -> str:
    """Identity, Dropout (inference form) and the identity activation: no node at all."""
    return inputs[0]


def activation_layer(ctx: ExportContext, layer: Any, inputs: list[str]) -> str:
    """``Activation("relu")``: its activation's converter."""
    return ctx.activation(layer.activation, inputs[0])


def _unary(op: str) -> Any:
    def convert(ctx: ExportContext, layer: Any, inputs: list[str]) -> str:
        return str(ctx.node(op, [inputs[0]]))

    convert.__name__ = op.lower()
    convert.__doc__ = f"One ``{op}`` node."
    return convert


relu = _unary("Relu")
sigmoid = _unary("Sigmoid")
tanh = _unary("Tanh")


def leaky_relu(ctx: ExportContext, layer: Any, inputs: list[str]) -> str:
    """``LeakyRelu(alpha=negative_slope)``."""
    return str(ctx.node("LeakyRelu", [inputs[0]], alpha=float(layer.negative_slope)))


def elu(ctx: ExportContext, layer: Any, inputs: list[str]) -> str:
    """``Elu(alpha)``."""
    return str(ctx.node("Elu", [inputs[0]], alpha=float(layer.alpha)))


def softmax(ctx: ExportContext, layer: Any, inputs: list[str]) -> str:
    """``Softmax(axis)`` (opset 13+ semantics: one axis)."""
    return str(ctx.node("Softmax", [inputs[0]], axis=int(layer.axis)))


def log_softmax(ctx: ExportContext, layer: Any, inputs: list[str]) -> str:
    """``LogSoftmax(axis)``."""
    return str(ctx.node("LogSoftmax", [inputs[0]], axis=int(layer.axis)))


def gelu(ctx: ExportContext, layer: Any, inputs: list[str]) -> str:
    """``Gelu`` from opset 20; before, ``x/2 (1 + erf(x/sqrt 2))`` or the tanh form."""
    x = inputs[0]
    approximate = getattr(layer, "approximate", "none")
    if ctx.opset >= 20:
        return str(ctx.node("Gelu", [x], approximate=approximate))
    if approximate == "tanh":
        cube = ctx.node("Mul", [ctx.node("Mul", [x, x]), x])
        inner = ctx.node("Add", [x, ctx.node("Mul", [cube, ctx.scalar(0.044715, "gelu_c")])])
        u = ctx.node("Mul", [inner, ctx.scalar(math.sqrt(2.0 / math.pi), "gelu_k")])
        t = ctx.node("Tanh", [u])
    else:
        t = ctx.node("Erf", [ctx.node("Mul", [x, ctx.scalar(1.0 / math.sqrt(2.0), "gelu_k")])])
    one_plus = ctx.node("Add", [t, ctx.scalar(1.0, "one")])
    return str(ctx.node("Mul", [ctx.node("Mul", [x, ctx.scalar(0.5, "half")]), one_plus]))


def silu(ctx: ExportContext, layer: Any, inputs: list[str]) -> str:
    """``x * Sigmoid(x)``."""
    return str(ctx.node("Mul", [inputs[0], ctx.node("Sigmoid", [inputs[0]])]))


def softplus(ctx: ExportContext, layer: Any, inputs: list[str]) -> str:
    """``Softplus(beta x) / beta``, and ``x`` where ``beta x > threshold`` (PyTorch's form)."""
    x = inputs[0]
    beta = float(getattr(layer, "beta", 1.0))
    z = x if beta == 1.0 else ctx.node("Mul", [x, ctx.scalar(beta, "beta")])
    y = ctx.node("Softplus", [z])
    if beta != 1.0:
        y = ctx.node("Div", [y, ctx.scalar(beta, "beta")])
    threshold = getattr(layer, "threshold", None)
    if threshold is None:
        return str(y)
    linear_region = ctx.node("Greater", [z, ctx.scalar(float(threshold), "threshold")])
    return str(ctx.node("Where", [linear_region, x, y]))


def _chain(op: str) -> Any:
    def convert(ctx: ExportContext, layer: Any, inputs: list[str]) -> str:
        y = inputs[0]
        for other in inputs[1:]:
            y = ctx.node(op, [y, other])
        return str(y)

    return convert


def _variadic(op: str) -> Any:
    def convert(ctx: ExportContext, layer: Any, inputs: list[str]) -> str:
        return str(ctx.node(op, list(inputs)))

    return convert


merge_add = _variadic("Sum")
merge_subtract = _chain("Sub")
merge_multiply = _chain("Mul")
merge_average = _variadic("Mean")
merge_maximum = _variadic("Max")
merge_minimum = _variadic("Min")
merge_add.__doc__ = "``Sum`` of the inputs."
merge_subtract.__doc__ = "``Sub(x0, x1)``."
merge_multiply.__doc__ = "A chain of ``Mul``."
merge_average.__doc__ = "``Mean`` of the inputs."
merge_maximum.__doc__ = "``Max`` of the inputs."
merge_minimum.__doc__ = "``Min`` of the inputs."


def concatenate(ctx: ExportContext, layer: Any, inputs: list[str]) -> str:
    """``Concat(axis)``."""
    return str(ctx.node("Concat", list(inputs), axis=int(layer.axis)))


def embedding(ctx: ExportContext, layer: Any, inputs: list[str]) -> str:
    """``Gather(weight, indices, axis=0)``; the indices are cast to int64 unless they are already."""
    indices = inputs[0]
    table = ctx.initializer(layer.weight.data, "weight")
    if ctx.node_dtype(indices) != np.int64:
        indices = ctx.node("Cast", [indices], to=ctx.onnx.TensorProto.INT64)
    return str(ctx.node("Gather", [table, indices], axis=0))
