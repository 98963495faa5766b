"""Converters of the convolution, pooling, normalisation and reshaping layers.

Each function is a converter, ``fn(ctx, layer, inputs) -> output name`` (see
:mod:`framework.onnx.registry`); :mod:`framework.onnx.builtin` maps the
built-in layer classes to them. ONNX's ``pads`` list all the "begin" paddings
of the spatial axes, then all the "end" ones.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from framework.errors import ExportError
from framework.onnx.exporter import ExportContext

__all__ = [
    "conv",
    "conv_transpose",
    "max_pool",
    "avg_pool",
    "global_avg_pool",
    "batch_norm",
    "layer_norm",
    "flatten",
    "reshape",
    "permute",
    "zero_padding2d",
    "upsampling2d",
]


def _onnx_pads(pads: Any) -> list[int]:
    """``((top, bottom), (left, right))`` -> ``[top, left, bottom, right]``."""
    return [int(p[0]) for p in pads] + [int(p[1]) for p in pads]


def _conv_node(ctx: ExportContext, layer: Any, inputs: list[str], op: str, **attrs: Any) -> str:
    """``op`` (``Conv`` or ``ConvTranspose``) on the layer's weight and bias, then its fused activation."""
    args = [inputs[0], ctx.initializer(layer.weight.data, "weight")]
    if layer.bias is not None:
        args.append(ctx.initializer(layer.bias.data, "bias"))
    y = ctx.node(
        op,
        args,
        kernel_shape=list(layer.kernel_size),
        strides=list(layer.stride),
        pads=_onnx_pads(layer.pads),
        dilations=list(layer.dilation),
        group=int(layer.groups),
        **attrs,
    )
    return ctx.activation(layer.activation, y)


def conv(ctx: ExportContext, layer: Any, inputs: list[str]) -> str:
    """``Conv`` with ``strides``, explicit ``pads`` (``"same"`` resolved), ``dilations`` and ``group``."""
    return _conv_node(ctx, layer, inputs, "Conv")


def conv_transpose(ctx: ExportContext, layer: Any, inputs: list[str]) -> str:
    """``ConvTranspose``; the weight ``(in, out/groups, kh, kw)`` is ONNX's layout already."""
    return _conv_node(ctx, layer, inputs, "ConvTranspose", output_padding=list(layer.output_padding))


def _pool_attrs(ctx: ExportContext, layer: Any, x: str) -> dict[str, Any]:
    """The pool's ONNX attributes; a ceil-mode window PyTorch drops is dropped by the pads instead.

    PyTorch (and onnxruntime) drop a last ceil-mode window that would start in
    the end padding, ONNX's shape inference keeps it, so ``onnx.checker``
    refuses a graph whose declared shape is PyTorch's. Where the input's size
    is known and a window is dropped, the same output is written in floor
    mode with the end pads that give exactly PyTorch's windows,
    ``end = (out - 1) s + k - size - pad``.
    """
    kernel, stride = [int(k) for k in layer.kernel_size], [int(s) for s in layer.stride]
    pads = [int(p) for p in layer.padding]
    attrs = {"kernel_shape": kernel, "strides": stride, "pads": pads * 2, "ceil_mode": int(layer.ceil_mode)}
    shape = ctx.shape(x)
    if not layer.ceil_mode or shape is None or len(shape) != 2 + len(kernel):
        return attrs
    sizes = [int(d) for d in shape[2:] if d is not None]
    if len(sizes) != len(kernel):
        return attrs
    outs, dropped = [], False
    for size, k, s, p in zip(sizes, kernel, stride, pads):
        out = -(-(size + 2 * p - k) // s) + 1
        if (out - 1) * s >= size + p:  # the last window would start in the end padding
            out, dropped = out - 1, True
        outs.append(out)
    if not dropped:
        return attrs
    ends = [max(0, (o - 1) * s + k - size - p) for o, size, k, s, p in zip(outs, sizes, kernel, stride, pads)]
    floor_outs = [(size + p + e - k) // s + 1 for size, p, e, k, s in zip(sizes, pads, ends, kernel, stride)]
    counts_pads = bool(getattr(layer, "count_include_pad", False))
    if floor_outs != outs or (counts_pads and any(e > p for e, p in zip(ends, pads))):
        raise ExportError(
            f"{layer.describe()}: ceil_mode=True on an input of size {tuple(sizes)} drops a window PyTorch's "
            "way that ONNX's pool cannot express with its padding counted in the average; "
            "use count_include_pad=False or ceil_mode=False"
        )
    return {**attrs, "pads": pads + ends, "ceil_mode": 0}


def max_pool(ctx: ExportContext, layer: Any, inputs: list[str]) -> str:
    """``MaxPool`` (1-D or 2-D; padding is ``-inf``, as PyTorch)."""
    return str(ctx.node("MaxPool", [inputs[0]], **_pool_attrs(ctx, layer, inputs[0])))


def avg_pool(ctx: ExportContext, layer: Any, inputs: list[str]) -> str:
    """``AveragePool`` with ``count_include_pad``."""
    attrs = _pool_attrs(ctx, layer, inputs[0])
    return str(ctx.node("AveragePool", [inputs[0]], count_include_pad=int(layer.count_include_pad), **attrs))


def global_avg_pool(ctx: ExportContext, layer: Any, inputs: list[str]) -> str:
    """``GlobalAveragePool`` then ``Flatten``: ``(N, C, H, W) -> (N, C)``."""
    return str(ctx.node("Flatten", [ctx.node("GlobalAveragePool", [inputs[0]])], axis=1))


def batch_norm(ctx: ExportContext, layer: Any, inputs: list[str]) -> str:
    """``BatchNormalization`` in inference form, with the running statistics."""
    if layer.running_mean is None or layer.running_var is None:
        raise ExportError(
            f"{layer.describe()} has track_running_stats=False: it normalises with the statistics of "
            "each batch even in inference, which ONNX's BatchNormalization cannot express"
        )
    c = layer.num_features
    scale = layer.weight.data if layer.weight is not None else np.ones(c)
    bias = layer.bias.data if layer.bias is not None else np.zeros(c)
    args = [
        inputs[0],
        ctx.initializer(scale, "weight"),
        ctx.initializer(bias, "bias"),
        ctx.initializer(layer.running_mean.data, "running_mean"),
        ctx.initializer(layer.running_var.data, "running_var"),
    ]
    # ONNX's momentum weighs the old estimate (running * m + batch * (1 - m)), PyTorch's the new one;
    # a cumulative average (momentum=None) has no ONNX form: the attribute, unused in inference, is left out
    extra: dict[str, Any] = {} if layer.momentum is None else {"momentum": 1.0 - float(layer.momentum)}
    return str(ctx.node("BatchNormalization", args, epsilon=float(layer.eps), **extra))


def layer_norm(ctx: ExportContext, layer: Any, inputs: list[str]) -> str:
    """``LayerNormalization`` over the last ``len(normalized_shape)`` axes."""
    shape = layer.normalized_shape
    scale = layer.weight.data if layer.weight is not None else np.ones(shape)
    args = [inputs[0], ctx.initializer(scale, "weight")]
    if layer.bias is not None:
        args.append(ctx.initializer(layer.bias.data, "bias"))
    return str(ctx.node("LayerNormalization", args, axis=-len(shape), epsilon=float(layer.eps)))


def flatten(ctx: ExportContext, layer: Any, inputs: list[str]) -> str:
    """``Flatten(axis=1)`` for the default axes; a ``Reshape`` keeping the outer axes otherwise."""
    x = inputs[0]
    shape = ctx.shape(x)
    if shape is None:
        raise ExportError(f"{layer.describe()}: the input shape is unknown; build the model first")
    start, end = layer._axes(len(shape))
    if start == 1 and end == len(shape) - 1:
        return str(ctx.node("Flatten", [x], axis=1))
    tail = shape[end + 1 :]
    if any(d is None for d in tail):
        raise ExportError(f"{layer.describe()}: the axes after end_dim must have known sizes, got {shape}")
    target = [0] * start + [-1] + [int(d or 0) for d in tail]  # 0 copies the input's size
    return str(ctx.node("Reshape", [x, ctx.ints(target)]))


def reshape(ctx: ExportContext, layer: Any, inputs: list[str]) -> str:
    """``Reshape`` to ``(batch, *target_shape)``; the batch size is copied (a 0 in ONNX's shape)."""
    return str(ctx.node("Reshape", [inputs[0], ctx.ints([0, *layer.target_shape])]))


def permute(ctx: ExportContext, layer: Any, inputs: list[str]) -> str:
    """``Transpose(perm=(0, *dims))``: the batch axis stays first."""
    return str(ctx.node("Transpose", [inputs[0]], perm=[0, *(int(d) for d in layer.dims)]))


def zero_padding2d(ctx: ExportContext, layer: Any, inputs: list[str]) -> str:
    """``Pad`` (constant 0) with ONNX's ``[0, 0, top, left, 0, 0, bottom, right]``."""
    left, right, top, bottom = layer.padding
    return str(ctx.node("Pad", [inputs[0], ctx.ints([0, 0, top, left, 0, 0, bottom, right], "pads")]))


def upsampling2d(ctx: ExportContext, layer: Any, inputs: list[str]) -> str:
    """``Resize`` (nearest, asymmetric, floor): each pixel repeated ``scale_factor`` times."""
    sh, sw = layer.scale_factor
    # Resize's scales are float32 whatever the model's dtype (ctx.initializer would cast them)
    scales = ctx.fresh(f"{ctx.scope}.scales" if ctx.scope else "scales")
    ctx.initializers.append(ctx.onnx.numpy_helper.from_array(np.asarray([1, 1, sh, sw], np.float32), scales))
    return str(
        ctx.node(
            "Resize",
            [inputs[0], "", scales],
            mode="nearest",
            coordinate_transformation_mode="asymmetric",
            nearest_mode="floor",
        )
    )
