"""ONNX convolution, pooling, padding and resizing operators -> built-in layers.

Handlers for :data:`framework.onnx.import_ops.HANDLERS`: ``handler(imp, node)``
returns the values of the node's outputs. ONNX's ``pads`` list all the "begin"
paddings of the spatial axes, then all the "end" ones (or ``auto_pad`` asks
for ``SAME_UPPER`` / ``SAME_LOWER`` / ``VALID``, resolved here); the layers pad
both sides of an axis equally, so uneven padding maps when its windows are
those of an even one, as PyTorch's ``padding="same"`` (stride 1), or, for a
2-D convolution, through a ``ZeroPadding2d`` in front. ``ConvTranspose2d``'s
``output_padding`` keeps extra rows/columns at the end, so a transposed
convolution whose end padding is smaller than its begin padding (what
``output_shape`` often implies) maps too.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from framework.errors import ExportError
from framework.onnx.importer import Importer, assign, make_layer

__all__ = ["conv", "global_pool", "pad", "pool", "resize"]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pads(
    node: Any, attrs: dict[str, Any], kernel: Any, sizes: Any, strides: list[int], dilations: list[int]
) -> tuple[list[int], list[int]]:
    """The ``(begin, end)`` padding of each spatial axis: ``pads``, or ``auto_pad`` resolved.

    ``SAME_UPPER`` / ``SAME_LOWER`` pad ``total = max((ceil(in/s) - 1)*s + (k - 1)*d + 1 - in, 0)``
    (``(k - 1)*d`` at stride 1, whatever the size), its odd unit at the end
    (``UPPER``) or at the start (``LOWER``); with a stride above 1 the input's
    size must be known.
    """
    rank = len(kernel)
    auto = _text(attrs.get("auto_pad", "NOTSET"))
    where = f"ONNX import: {node.op_type} node {node.name!r}"
    if auto == "NOTSET":
        pads = [int(p) for p in attrs.get("pads", [0] * 2 * rank)]
        if len(pads) != 2 * rank or any(p < 0 for p in pads):
            raise ExportError(f"{where} has pads={pads}; {2 * rank} paddings of at least 0 are needed")
        return pads[:rank], pads[rank:]
    if auto == "VALID":
        return [0] * rank, [0] * rank
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        raise ExportError(f"{where} has auto_pad={auto!r}; NOTSET, VALID, SAME_UPPER or SAME_LOWER are read")
    begin, end = [], []
    for size, k, s, d in zip(sizes, kernel, strides, dilations):
        span = (int(k) - 1) * d + 1
        if s != 1 and size is None:
            raise ExportError(
                f"{where} has auto_pad={auto!r} and stride {s}: its padding depends on the input's "
                f"spatial sizes, unknown here ({list(sizes)})"
            )
        total = span - 1 if s == 1 else max((-(-int(size) // s) - 1) * s + span - int(size), 0)
        first = total // 2 if auto == "SAME_UPPER" else total - total // 2
        begin.append(first)
        end.append(total - first)
    return begin, end


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
    with ``auto_pad="SAME_UPPER"``, ``total - total//2`` otherwise. ``SAME_*``
    without ``output_shape`` means ``output_shape = in * stride``.
    """
    rank = len(kernel)
    where = f"ONNX import: ConvTranspose node {node.name!r}"
    strides = [int(s) for s in attrs.get("strides", [1] * rank)]
    dilations = [int(d) for d in attrs.get("dilations", [1] * rank)]
    extra = [int(p) for p in attrs.get("output_padding", [0] * rank)]
    auto = _text(attrs.get("auto_pad", "NOTSET"))
    target = attrs.get("output_shape")
    if target is None and auto in ("SAME_UPPER", "SAME_LOWER") and None not in sizes:
        target = [int(size or 0) * s for size, s in zip(sizes, strides)]  # the spec's output for SAME
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
            f"{where} has auto_pad={auto!r} without output_shape and input spatial sizes {list(sizes)}: "
            "the output size is unknown; give explicit pads or output_shape"
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


def _even_padding(
    begin: list[int], end: list[int], sizes: Any, spans: list[int], strides: list[int]
) -> tuple[int, ...] | None:
    """The padding ``begin`` on both sides, when it gives the node's windows exactly; else ``None``.

    With ``end < begin`` and the same window count (the extra end padding is
    read by no window: what the exporter writes for a ceil-mode pool), the
    windows are the same; a window of ``span`` elements moved by ``stride``.
    """
    for b, e, size, span, s in zip(begin, end, sizes, spans, strides):
        if b == e:
            continue
        if e > b or size is None or (int(size) + 2 * b - span) // s != (int(size) + b + e - span) // s:
            return None
    return tuple(begin)


def _conv_padding(
    node: Any, begin: list[int], end: list[int], sizes: Any, attrs: dict[str, Any]
) -> tuple[Any, Any]:
    """``(padding, ZeroPadding2d padding or None)`` of the layers equal to the node's padding.

    Even padding (or padding read as even, see :func:`_even_padding`) gives
    ``padding``; PyTorch's ``"same"`` (stride 1, the odd unit at the end) gives
    ``"same"``; any other uneven 2-D padding becomes a ``ZeroPadding2d`` in
    front (zeros are what ``Conv`` pads with).
    """
    kernel, strides, dilations = attrs["kernel"], attrs["strides"], attrs["dilations"]
    spans = [(int(k) - 1) * d + 1 for k, d in zip(kernel, dilations)]
    even = _even_padding(begin, end, sizes, spans, strides)
    if even is not None:
        return even, None
    if all(s == 1 for s in strides) and all(
        b + e == t - 1 and b == (t - 1) // 2 for b, e, t in zip(begin, end, spans)
    ):
        return "same", None
    if len(kernel) == 2:
        return (0, 0), (begin[1], end[1], begin[0], end[0])
    raise ExportError(
        f"ONNX import: {node.op_type} node {node.name!r} pads {begin} at the start and {end} at the end; "
        "Conv1d pads both sides equally (or as padding='same' at stride 1)"
    )


def conv(imp: Importer, node: Any) -> list[Any]:
    """``Conv`` -> ``Conv1d``/``Conv2d`` (``ZeroPadding2d`` first for uneven padding);
    ``ConvTranspose`` (2-D) -> ``ConvTranspose2d``."""
    attrs = imp.attrs(node)
    x = imp.tensor(node.input[0], node)
    w = imp.const(node.input[1], node, "weight")
    rank = w.ndim - 2
    transpose = node.op_type == "ConvTranspose"
    if rank not in (1, 2) or (transpose and rank != 2):
        raise ExportError(f"ONNX import: {node.op_type} node {node.name!r} is {rank}-D; unsupported")
    kernel = tuple(int(k) for k in w.shape[2:])
    if "kernel_shape" in attrs and tuple(int(k) for k in attrs["kernel_shape"]) != kernel:
        raise ExportError(
            f"ONNX import: {node.op_type} node {node.name!r} has kernel_shape={list(attrs['kernel_shape'])} "
            f"but a weight of shape {w.shape}"
        )
    groups = int(attrs.get("group", 1))
    has_bias = len(node.input) > 2 and bool(node.input[2])
    strides = [int(s) for s in attrs.get("strides", [1] * rank)]
    dilations = [int(d) for d in attrs.get("dilations", [1] * rank)]
    kwargs: dict[str, Any] = {"stride": tuple(strides), "dilation": tuple(dilations), "groups": groups}
    kwargs["bias"] = has_bias
    if transpose:
        kwargs["padding"], kwargs["output_padding"] = _transpose_padding(node, attrs, x.shape[2:], kernel)
        layer = make_layer("ConvTranspose2d", w.shape[0], w.shape[1] * groups, kernel, **kwargs)
    else:
        begin, end = _pads(node, attrs, kernel, x.shape[2:], strides, dilations)
        geometry = {"kernel": kernel, "strides": strides, "dilations": dilations}
        kwargs["padding"], zero_padding = _conv_padding(node, begin, end, x.shape[2:], geometry)
        if zero_padding is not None:
            x = make_layer("ZeroPadding2d", zero_padding)(x)
        name = "Conv2d" if rank == 2 else "Conv1d"
        layer = make_layer(name, w.shape[1] * groups, w.shape[0], kernel, **kwargs)
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
    x = imp.tensor(node.input[0], node)
    strides = [int(s) for s in attrs.get("strides", [1] * rank)]
    begin, end = _pads(node, attrs, kernel, x.shape[2:], strides, [1] * rank)
    ceil_mode = bool(attrs.get("ceil_mode", 0))
    padding = _even_padding(begin, end, x.shape[2:], list(kernel), strides) if not ceil_mode else None
    if padding is None and begin != end:
        raise ExportError(
            f"ONNX import: {node.op_type} node {node.name!r} pads {begin} at the start and {end} at the "
            f"end (ceil_mode={int(ceil_mode)}, input {x.shape}); the pooling layers pad both sides of an "
            "axis equally"
        )
    kind = ("MaxPool" if node.op_type == "MaxPool" else "AvgPool") + f"{rank}d"
    kwargs: dict[str, Any] = {"stride": tuple(strides), "padding": tuple(begin), "ceil_mode": ceil_mode}
    if node.op_type == "AveragePool":
        kwargs["count_include_pad"] = bool(attrs.get("count_include_pad", 0))
    return [make_layer(kind, kernel, **kwargs)(x), None]


def global_pool(imp: Importer, node: Any) -> list[Any]:
    """``GlobalAveragePool`` of ``(N, C, H, W)`` -> ``GlobalAvgPool2d`` then ``(N, C, 1, 1)``."""
    x = imp.tensor(node.input[0], node)
    if len(x.shape) != 4:
        raise ExportError(f"ONNX import: GlobalAveragePool node {node.name!r} on a rank-{len(x.shape)} input")
    pooled = make_layer("GlobalAvgPool2d")(x)
    return [make_layer("Reshape", x.shape[1], 1, 1)(pooled)]


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


#: Resize's (coordinate_transformation_mode, nearest_mode) pairs that repeat each pixel
#: ``scale`` times for an integer scale (``out[i] = in[i // scale]``).
_REPEATING = {
    ("asymmetric", "floor"),
    *(
        (mode, rounding)
        for mode in ("half_pixel", "pytorch_half_pixel")
        for rounding in ("round_prefer_floor", "round_prefer_ceil")
    ),
}


def resize(imp: Importer, node: Any) -> list[Any]:
    """``Resize`` (nearest, integer scales of the two spatial axes of a 4-D input) -> ``UpSampling2d``."""
    attrs = imp.attrs(node)
    x = imp.tensor(node.input[0], node)
    where = f"ONNX import: Resize node {node.name!r}"
    mode = _text(attrs.get("mode", "nearest"))
    transform = _text(attrs.get("coordinate_transformation_mode", "half_pixel"))
    rounding = _text(attrs.get("nearest_mode", "round_prefer_floor"))
    if mode != "nearest" or (transform, rounding) not in _REPEATING:
        raise ExportError(
            f"{where} has mode={mode!r}, coordinate_transformation_mode={transform!r}, "
            f"nearest_mode={rounding!r}; only a nearest resize repeating each pixel (UpSampling2d) has a "
            "built-in layer"
        )
    names = [*node.input, "", "", ""]
    scales_name = names[1] if imp.opset < 11 else names[2]
    if not scales_name or (imp.opset >= 11 and names[3]):
        raise ExportError(f"{where} gives output sizes, not scales; only constant scales are read")
    scales = [float(v) for v in imp.const(scales_name, node, "scales")]
    if "axes" in attrs:  # opset 18: the scales of these axes only
        full = [1.0] * len(x.shape)
        for axis, scale in zip(attrs["axes"], scales):
            full[int(axis) % len(x.shape)] = scale
        scales = full
    if len(x.shape) != 4 or scales[:2] != [1.0, 1.0] or any(v < 1 or v != int(v) for v in scales[2:]):
        raise ExportError(
            f"{where} scales an input {x.shape} by {scales}; UpSampling2d repeats the last two axes of a "
            "4-D input a whole number of times"
        )
    return [make_layer("UpSampling2d", (int(scales[2]), int(scales[3])))(x)]
