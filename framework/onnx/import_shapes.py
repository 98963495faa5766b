"""Shapes for :func:`framework.onnx.load`: constant folding, runtime shapes, and the shape operators.

Nodes whose inputs are all constants run in NumPy here (:func:`fold`). Nodes
fed by the input's shape (``Shape`` -> ``Gather`` -> ``Concat`` ...) give
(:func:`runtime_value`):

- :class:`Dims`: the shape of a placeholder, or entries of it, as an object
  array whose known sizes are ints and whose unknown ones (the batch axis)
  are :class:`Axis` (``x.view(x.size(0), -1)`` reshapes to ``(0, -1)``); entries
  all known fold back to a constant;
- :data:`~framework.onnx.importer.ZEROS`: zeros of a runtime shape
  (``ConstantOfShape`` of value 0, and what slicing, reshaping, casting or
  multiplying such zeros gives), the zero initial states exporters build;
- :data:`~framework.onnx.importer.DYNAMIC`: any other runtime value (zeros
  plus one, a ``ConstantOfShape`` of ones...), which no layer reads.

The handlers of ``Shape``, ``Flatten``, ``Reshape``, ``Transpose``, ``Squeeze``
and ``Gather`` on placeholders (``Flatten``, ``Reshape``, ``Permute``,
``Embedding``, and the views of a recurrent node's outputs) are here too; an
operator that would move or merge the batch axis is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from framework.errors import ExportError
from framework.onnx import import_recurrent as rec
from framework.onnx.importer import DYNAMIC, ZEROS, Importer, TimeMajor, assign, is_tensor, make_layer

__all__ = [
    "Axis",
    "Dims",
    "axes",
    "constant",
    "flatten",
    "fold",
    "gather",
    "reshape",
    "runtime_value",
    "shape",
    "shape_of",
    "squeeze",
    "transpose",
]


@dataclass(eq=False, frozen=True)
class Axis:
    """The runtime size of axis ``axis`` of the placeholder ``tensor``."""

    tensor: Any
    axis: int


@dataclass(frozen=True)
class Dims:
    """Entries of a runtime shape: an object array of ints and :class:`Axis`."""

    array: np.ndarray


def shape_of(tensor: Any, attrs: dict[str, Any]) -> Any:
    """``Shape(tensor)`` (``start`` / ``end`` honoured): constant where all sizes are known."""
    sizes = tuple(tensor.shape)
    rank = len(sizes)
    values = np.array([Axis(tensor, i) if s is None else int(s) for i, s in enumerate(sizes)], dtype=object)
    start, end = _clamp(attrs.get("start", 0), rank), _clamp(attrs.get("end", rank), rank)
    return _dims(values[start:end])


def _clamp(index: int, rank: int) -> int:
    index = int(index) + rank if int(index) < 0 else int(index)
    return min(max(index, 0), rank)


def _dims(array: np.ndarray) -> Any:
    """``Dims`` of ``array``, or the int64 constant when no entry is a runtime size."""
    if any(isinstance(v, Axis) for v in array.reshape(-1)):
        return Dims(array)
    return np.asarray(array.astype(np.int64))


def axes(imp: Importer, node: Any, attrs: dict[str, Any]) -> list[int] | None:
    """The ``axes`` of ``Squeeze`` / ``Unsqueeze`` / ``Pad``: an attribute before opset 13, else input 1."""
    if "axes" in attrs:
        return [int(a) for a in attrs["axes"]]
    if len(node.input) > 1 and node.input[1]:
        return [int(a) for a in np.atleast_1d(imp.const(node.input[1], node, "axes"))]
    return None


def constant(imp: Importer, node: Any) -> np.ndarray:
    """The value of a ``Constant`` node, from any of its ``value*`` attributes."""
    attrs = imp.attrs(node)
    if "value" in attrs:
        return np.asarray(imp.onnx.numpy_helper.to_array(attrs["value"]))
    scalars = {
        "value_float": np.float32,
        "value_floats": np.float32,
        "value_int": np.int64,
        "value_ints": np.int64,
    }
    for name, dtype in scalars.items():
        if name in attrs:
            return np.asarray(attrs[name], dtype=dtype)
    raise ExportError(
        f"ONNX import: Constant node {node.name!r} has {sorted(attrs) or 'no attribute'}; only a tensor "
        "(value, value_float(s), value_int(s)) can be read"
    )


def _slice(imp: Importer, node: Any, data: np.ndarray, attrs: dict[str, Any]) -> np.ndarray:
    """``Slice``: ``starts``, ``ends``, ``axes``, ``steps`` as attributes (opset < 10) or inputs."""
    bounds: list[Any]
    if "starts" in attrs:
        bounds = [attrs["starts"], attrs["ends"], attrs.get("axes"), None]
    else:
        names = [*list(node.input[1:5]), "", "", ""][:4]
        bounds = [imp.const(n, node, "slice bound") if n else None for n in names]
    starts, ends = [int(s) for s in bounds[0]], [int(e) for e in bounds[1]]
    axes_ = list(range(len(starts))) if bounds[2] is None else [int(a) % data.ndim for a in bounds[2]]
    steps = [1] * len(starts) if bounds[3] is None else [int(s) for s in bounds[3]]
    index = [slice(None)] * data.ndim
    for axis, start, end, step in zip(axes_, starts, ends, steps):
        # Python's slices clamp out-of-range bounds (INT64_MAX / MIN ends) as ONNX does.
        index[axis] = slice(start, end, step)
    return data[tuple(index)]


def _divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ONNX ``Div``: integer division truncates toward zero for integer types."""
    if np.issubdtype(a.dtype, np.integer) and np.issubdtype(b.dtype, np.integer):
        return np.asarray(np.trunc(a / b)).astype(np.result_type(a, b))
    return np.asarray(np.divide(a, b))


def fold(imp: Importer, node: Any, args: list[Any]) -> list[Any]:
    """Run ``node`` in NumPy on constant ``args`` (int64 or object arrays for :class:`Dims`)."""
    op, a, attrs = node.op_type, args, imp.attrs(node)
    if op in ("Identity", "Cast"):
        out = a[0]
        if op == "Cast" and a[0].dtype != object:
            out = a[0].astype(imp.onnx.helper.tensor_dtype_to_np_dtype(attrs["to"]))
    elif op == "Unsqueeze":
        out = np.expand_dims(a[0], tuple(axes(imp, node, attrs) or ()))
    elif op == "Squeeze":
        found = axes(imp, node, attrs)
        out = np.squeeze(a[0], tuple(found) if found is not None else None)
    elif op == "Concat":
        out = np.concatenate([np.atleast_1d(x) for x in a], axis=int(attrs.get("axis", 0)))
    elif op == "Gather":
        out = np.take(a[0], a[1], axis=int(attrs.get("axis", 0)))
    elif op == "Reshape":
        target = [int(d) for d in a[1]]
        if attrs.get("allowzero", 0) == 0:
            target = [d if d != 0 else a[0].shape[i] for i, d in enumerate(target)]
        out = a[0].reshape(target)
    elif op == "Transpose":
        out = np.transpose(a[0], attrs.get("perm"))
    elif op == "Slice":
        out = _slice(imp, node, a[0], attrs)
    elif op == "Shape":
        rank = a[0].ndim
        start, end = _clamp(attrs.get("start", 0), rank), _clamp(attrs.get("end", rank), rank)
        out = np.asarray(a[0].shape[start:end], dtype=np.int64)
    elif op in ("Add", "Sub", "Mul", "Div") and "axis" in attrs and a[0].shape != a[1].shape:
        raise ExportError(
            f"ONNX import: {op} node {node.name!r} broadcasts with the opset-6 axis={attrs['axis']} "
            f"({a[0].shape} and {a[1].shape}); only NumPy broadcasting is read"
        )
    elif op in ("Add", "Sub", "Mul"):
        out = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply}[op](a[0], a[1])
    elif op == "Div":
        out = _divide(a[0], a[1])
    elif op == "Expand":  # a two-way broadcast
        out = np.broadcast_to(a[0], np.broadcast_shapes(a[0].shape, tuple(int(d) for d in a[1])))
    elif op == "ConstantOfShape":
        value = attrs.get("value")
        fill = imp.onnx.numpy_helper.to_array(value) if value is not None else np.zeros(1, np.float32)
        out = np.full(tuple(int(d) for d in a[0]), fill.reshape(-1)[0], dtype=fill.dtype)
    else:
        raise ExportError(f"ONNX import: cannot fold the constant {op} node {node.name!r}")
    return [np.asarray(out)]


#: Ops that move, select or retype the entries of their first input: runtime shapes stay
#: :class:`Dims`, zeros stay zeros.
_MOVING = {
    "Identity",
    "Cast",
    "Unsqueeze",
    "Squeeze",
    "Concat",
    "Gather",
    "Slice",
    "Reshape",
    "Transpose",
    "Expand",
}
#: Further ops a runtime value may go through (their result is zeros or some runtime value).
_ARITHMETIC = {"Add", "Sub", "Mul", "Div", "Shape"}


def _is_zero(value: Any) -> bool:
    return value is ZEROS or (isinstance(value, np.ndarray) and value.dtype != object and not value.any())


def runtime_value(imp: Importer, node: Any, args: list[Any]) -> Any:
    """The value of ``node`` whose inputs are constants, :class:`Dims` and runtime markers.

    ``None`` when ``node`` is no shape computation (a layer must compute it).
    """
    op = node.op_type
    present = [a for a in args if a is not None]
    if op == "ConstantOfShape":
        value = imp.attrs(node).get("value")
        zero = value is None or not imp.onnx.numpy_helper.to_array(value).any()
        return ZEROS if zero else DYNAMIC
    if op not in _MOVING and op not in _ARITHMETIC:
        return None
    if op in ("Identity", "Cast", "Unsqueeze", "Squeeze", "Concat", "Gather", "Slice") and all(
        isinstance(a, (np.ndarray, Dims)) for a in present
    ):
        arrays = [a.array if isinstance(a, Dims) else a for a in args]
        if op != "Concat":  # only the data input may be runtime sizes
            if any(isinstance(a, Dims) for a in args[1:]):
                return DYNAMIC
        return _dims(
            fold(imp, node, [x.astype(object) if x is not None else x for x in arrays[:1]] + arrays[1:])[0]
        )
    if op == "Concat":
        return ZEROS if all(_is_zero(a) for a in present) else DYNAMIC
    if op in _MOVING or op == "Div":
        return ZEROS if _is_zero(args[0]) else DYNAMIC
    if op == "Mul":
        return ZEROS if any(_is_zero(a) for a in present) else DYNAMIC
    if op in ("Add", "Sub"):
        return ZEROS if all(_is_zero(a) for a in present) else DYNAMIC
    return DYNAMIC


# -- the shape operators' layers ------------------------------------------------------------------


def flatten(imp: Importer, node: Any) -> list[Any]:
    x = imp.tensor(node.input[0], node)
    axis = int(imp.attrs(node).get("axis", 1))
    if axis + (len(x.shape) if axis < 0 else 0) != 1:
        raise ExportError(
            f"ONNX import: Flatten node {node.name!r} with axis={axis} on a rank-{len(x.shape)} input "
            "merges the batch axis with others (only axis 1 keeps it)"
        )
    return [make_layer("Flatten")(x)]


def _reshape_target(imp: Importer, node: Any, x: Any) -> list[int]:
    """``Reshape``'s target: a constant, or runtime sizes of ``x`` copied in place (as 0).

    ``x.view(x.size(0), -1)`` gives ``[0, -1]``. A literal 0 with
    ``allowzero=1`` (an empty axis) is refused.
    """
    value = imp.values.get(node.input[1])
    entries = list(value.array.reshape(-1)) if isinstance(value, Dims) else None
    if entries is None:
        entries = [int(d) for d in imp.const(node.input[1], node, "shape")]
    if imp.attrs(node).get("allowzero", 0) and 0 in [d for d in entries if not isinstance(d, Axis)]:
        raise ExportError(
            f"ONNX import: Reshape node {node.name!r} to {entries} with allowzero=1 has an axis of size 0 "
            "(an empty tensor); no layer gives one"
        )
    target = []
    for i, d in enumerate(entries):
        batch = i == 0 and isinstance(d, Axis) and d.axis == 0  # every value's batch is the input's
        if isinstance(d, Axis) and not batch and (d.tensor is not x or d.axis != i):
            raise ExportError(
                f"ONNX import: Reshape node {node.name!r} sets axis {i} to the runtime size of axis {d.axis} "
                "of a value; only sizes copied in place (0) have a built-in layer"
            )
        target.append(0 if isinstance(d, Axis) else int(d))
    return target


def reshape(imp: Importer, node: Any) -> list[Any]:
    value = imp.values.get(node.input[0])
    if isinstance(value, rec.RecurrentOut):
        target = [int(d) for d in imp.const(node.input[1], node, "shape")]
        if value.view == "Y_t" and target == [0, 0, -1]:
            return [rec.sequence(value.node)]
        if value.view == "Y_h_t":
            return [rec.last_of_states(value.node, node, target)]
    x = imp.tensor(node.input[0], node)
    target = _reshape_target(imp, node, x)
    where = f"ONNX import: Reshape node {node.name!r} to {target}"
    if imp.batch is not None and target[0] == imp.batch:  # a file of a fixed batch size: that size is N
        target[0] = 0
    if target[0] not in (0, -1) or (target[0] == -1 and -1 in target[1:]):
        raise ExportError(f"{where} changes the batch axis (only 0 or -1 first keep it)")
    rest = list(target[1:])
    for i, d in enumerate(rest, start=1):
        if d == 0:  # this axis's size, copied
            if i >= len(x.shape) or x.shape[i] is None:
                raise ExportError(f"{where} copies axis {i} of the input {x.shape}, whose size is unknown")
            rest[i - 1] = int(x.shape[i])
    return [make_layer("Reshape", *rest)(x)]


def transpose(imp: Importer, node: Any) -> list[Any]:
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


def squeeze(imp: Importer, node: Any) -> list[Any]:
    value = imp.values.get(node.input[0])
    found = axes(imp, node, imp.attrs(node))
    if isinstance(value, rec.RecurrentOut) and value.view == "Y" and found == [1]:
        if value.node.directions == 1:
            return [rec.sequence(value.node)]
    if isinstance(value, rec.RecurrentOut) and value.view == "Y_h" and found == [0]:
        return [rec.last(value.node, node)]
    raise ExportError(f"ONNX import: Squeeze node {node.name!r} (axes {found}) has no built-in layer here")


def gather(imp: Importer, node: Any) -> list[Any]:
    axis = int(imp.attrs(node).get("axis", 0))
    data, indices = imp.values.get(node.input[0]), imp.values.get(node.input[1])
    if isinstance(data, np.ndarray) and is_tensor(indices) and axis == 0:
        layer = make_layer("Embedding", data.shape[0], data.shape[1])
        assign(layer.weight, data)
        return [layer(indices)]
    if isinstance(indices, np.ndarray) and indices.ndim == 0 and axis == 0:
        if isinstance(data, rec.RecurrentOut) and data.view in ("Y_h", "Y_c"):
            return [rec.state_at((data,), int(indices), node)]
        if isinstance(data, rec.StackedStates):  # h_n[k] of stacked layers
            return [rec.state_at(data.parts, int(indices), node)]
    if isinstance(indices, np.ndarray) and indices.ndim == 0 and int(indices) == -1:
        record = rec.last_step_of(imp, data) if is_tensor(data) and axis == 1 else None
        if record is not None:
            return [record.place("last")]
    raise ExportError(f"ONNX import: Gather node {node.name!r} has no built-in layer in this position")


def shape(imp: Importer, node: Any) -> list[Any]:
    """``Shape`` of a placeholder, or of one seen time-major (its first two sizes swapped)."""
    value = imp.values.get(node.input[0])
    if isinstance(value, TimeMajor):
        sizes = shape_of(value.tensor, {})
        array = sizes.array if isinstance(sizes, Dims) else sizes
        swapped = np.concatenate([array[1::-1], array[2:]])
        rank = len(swapped)
        attrs = imp.attrs(node)
        start, end = _clamp(attrs.get("start", 0), rank), _clamp(attrs.get("end", rank), rank)
        return [_dims(swapped.astype(object)[start:end])]
    return [shape_of(imp.tensor(node.input[0], node), imp.attrs(node))]
