"""ONNX convolution, pooling, normalisation and padding operators -> built-in layers.

Handlers for :data:`framework.onnx.import_ops.HANDLERS`: ``handler(imp, node)``
returns the values of the node's outputs. ONNX's ``pads`` list all the "begin"
paddings of the spatial axes, then all the "end" ones; the layers pad both
sides of an axis equally, except ``ConvTranspose2d`` whose ``output_padding``
keeps extra rows/columns at the end, so a transposed convolution whose end
padding is smaller than its begin padding (what ``output_shape`` often
implies) maps too.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from framework.errors import ExportError
from framework.onnx.importer import Importer, assign, make_layer

__all__ = ["batch_norm", "conv", "global_pool", "layer_norm", "pad", "pool", "torch_momentum"]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _symmetric_pads(node: Any, attrs: dict[str, Any], rank: int) -> tuple[int, ...]:
    pads = list(attrs.get("pads", [0] * 2 * rank))
    auto = _text(attrs.get("auto_pad", "NOTSET"))
    if auto not in ("NOTSET", "VALID") or pads[:rank] != pads[rank:]:
        raise ExportError(
            f"ONNX import: {node.op_type} node {node.name!r} has asymmetric padding {pads} / auto_pad "
            f"{auto!r}; the layers pad both sides of an axis equally"
        )
    return tuple(int(p) for p in pads[:rank])


def _transpose_padding(
    node: Any, attrs: dict[str, Any], sizes: tuple[int | None, ...], kernel: tuple[int, ...]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(padding, output_padding)`` of the ``ConvTranspose2d`` equal to the ``ConvTranspose`` node.

    ONNX crops ``begin`` rows at the start and ``end`` at the end of the full
    output ``s*(in - 1) + d*(k - 1) + 1 + output_padding`` (a negative ``end``
    appends zeros); the layer crops ``padding`` at both ends, then keeps
    ``output_padding`` rows back at the end: ``padding = begin`` and
    ``output_padding = begin - end + output_padding``. With ``output_shape``
    the node's ``pads`` are ignored and ``total = full - output_shape`` is
    split as the ONNX spec says (and onnxruntime does): ``begin = total//2``
    with ``auto_pad="SAME_UPPER"``, ``total - total//2`` otherwise.
    """
    rank = len(kernel)
    where = f"ONNX import: ConvTranspose node {node.name!r}"
    strides = [int(s) for s in attrs.get("strides", [1] * rank)]
    dilations = [int(d) for d in attrs.get("dilations", [1] * rank)]
    extra = [int(p) for p in attrs.get("output_padding", [0] * rank)]
    auto = _text(attrs.get("auto_pad", "NOTSET"))
    target = attrs.get("output_shape")
    if target is not None:
        target = [int(t) for t in target]
        if any(size is None for size in sizes) or len(target) != rank:
            raise ExportError(
                f"{where} has output_shape={target}, which needs the input's {rank} spatial sizes "
                f"(and {rank} output sizes); the input's are {list(sizes)} here"
            )
        begin, end = [], []
        for size, s, d, k, op, out in zip(sizes, strides, dilations, kernel, extra, target):
            total = s * (int(size or 0) - 1) + op + (k - 1) * d + 1 - out
            first = total // 2 if auto == "SAME_UPPER" else total - total // 2
            begin.append(first)
            end.append(total - first)
        what = f"output_shape={target} (auto_pad={auto!r})"
    elif auto in ("NOTSET", "VALID"):
        pads = [int(p) for p in attrs.get("pads", [0] * 2 * rank)] if auto == "NOTSET" else [0] * 2 * rank
        begin, end = pads[:rank], pads[rank:]
        what = f"pads={pads}"
    else:
        raise ExportError(
            f"{where} has auto_pad={auto!r} without output_shape; give explicit pads or output_shape"
        )
    output_padding = [b - e + op for b, e, op in zip(begin, end, extra)]
    if any(b < 0 for b in begin) or any(
        not 0 <= op < max(s, d) for op, s, d in zip(output_padding, strides, dilations)
    ):
        raise ExportError(
            f"{where}: {what} crops {begin} at the start and {end} at the end of each spatial axis; "
            "ConvTranspose2d crops `padding` at both ends and keeps `output_padding` (smaller than the "
            "stride or the dilation) at the end, so this cropping has no built-in layer"
        )
    return tuple(begin), tuple(output_padding)


def conv(imp: Importer, node: Any) -> list[Any]:
    """``Conv`` -> ``Conv1d``/``Conv2d``; ``ConvTranspose`` (2-D) -> ``ConvTranspose2d``."""
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
        "dilation": tuple(attrs.get("dilations", [1] * rank)),
        "groups": groups,
        "bias": has_bias,
    }
    if transpose:
        kernel = tuple(int(k) for k in w.shape[2:])
        kwargs["padding"], kwargs["output_padding"] = _transpose_padding(node, attrs, x.shape[2:], kernel)
        layer = make_layer("ConvTranspose2d", w.shape[0], w.shape[1] * groups, kernel, **kwargs)
    else:
        kwargs["padding"] = _symmetric_pads(node, attrs, rank)
        name = "Conv2d" if rank == 2 else "Conv1d"
        layer = make_layer(name, w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), **kwargs)
    assign(layer.weight, w)
    if has_bias:
        assign(layer.bias, imp.const(node.input[2], node, "bias"))
    return [layer(x)]


def pool(imp: Importer, node: Any) -> list[Any]:
    """``MaxPool`` / ``AveragePool`` (1-D or 2-D) -> the pooling layers."""
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
    return [make_layer(kind, kernel, **kwargs)(imp.tensor(node.input[0], node)), None]


def global_pool(imp: Importer, node: Any) -> list[Any]:
    """``GlobalAveragePool`` of ``(N, C, H, W)`` -> ``GlobalAvgPool2d`` then ``(N, C, 1, 1)``."""
    x = imp.tensor(node.input[0], node)
    if len(x.shape) != 4:
        raise ExportError(f"ONNX import: GlobalAveragePool node {node.name!r} on a rank-{len(x.shape)} input")
    pooled = make_layer("GlobalAvgPool2d")(x)
    return [make_layer("Reshape", x.shape[1], 1, 1)(pooled)]


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
    """``LayerNormalization`` over the last ``scale.ndim`` axes -> ``LayerNorm``."""
    attrs = imp.attrs(node)
    scale = imp.const(node.input[1], node, "scale")
    bias = imp.values.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if int(attrs.get("axis", -1)) != -scale.ndim:
        raise ExportError(f"ONNX import: LayerNormalization node {node.name!r}: axis must be -scale.ndim")
    layer = make_layer(
        "LayerNorm", tuple(scale.shape), eps=float(attrs.get("epsilon", 1e-5)), bias=bias is not None
    )
    assign(layer.weight, scale)
    if bias is not None:
        assign(layer.bias, bias)
    return [layer(imp.tensor(node.input[0], node))]


def _pads_and_value(imp: Importer, node: Any, rank: int) -> tuple[list[int], Any]:
    """``Pad``'s pads over all ``rank`` axes and its fill value (attributes below opset 11, else inputs)."""
    attrs = imp.attrs(node)
    if "pads" in attrs or "paddings" in attrs:  # opset 1 ("paddings") to 10: attributes
        return [int(p) for p in attrs.get("pads", attrs.get("paddings", []))], attrs.get("value", 0.0)
    if len(node.input) < 2 or not node.input[1]:
        raise ExportError(f"ONNX import: Pad node {node.name!r} has no pads (attribute or input)")
    pads = [int(p) for p in imp.const(node.input[1], node, "pads")]
    value: Any = 0.0
    if len(node.input) > 2 and node.input[2]:
        value = imp.const(node.input[2], node, "padding value")
    if len(node.input) > 3 and node.input[3]:  # opset 18: pads of these axes only
        axes = [int(a) % rank for a in np.atleast_1d(imp.const(node.input[3], node, "axes"))]
        full = [0] * 2 * rank
        for i, axis in enumerate(axes):
            full[axis], full[rank + axis] = pads[i], pads[len(axes) + i]
        pads = full
    return pads, value


def pad(imp: Importer, node: Any) -> list[Any]:
    """``Pad`` (constant 0, the two spatial axes of a 4-D input) -> ``ZeroPadding2d``."""
    x = imp.tensor(node.input[0], node)
    pads, value = _pads_and_value(imp, node, len(x.shape))
    mode = _text(imp.attrs(node).get("mode", "constant"))
    if (
        len(pads) != 8
        or any(pads[i] for i in (0, 1, 4, 5))
        or any(p < 0 for p in pads)
        or mode != "constant"
        or np.any(np.asarray(value) != 0)
    ):
        fill = np.asarray(value).tolist()
        raise ExportError(
            f"ONNX import: Pad node {node.name!r} (pads {pads}, mode {mode!r}, value {fill}) is not a "
            "zero padding of the two spatial axes of a 4-D input (ZeroPadding2d)"
        )
    top, left, bottom, right = pads[2], pads[3], pads[6], pads[7]
    return [make_layer("ZeroPadding2d", (left, right, top, bottom))(x)]
