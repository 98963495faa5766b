"""Nested inputs and outputs: what the kit needs to treat one array and several alike.

A layer's input is one array or a list of arrays (merge layers); its output
is one array or a tuple/list of outputs, which may nest: ``LSTM`` with
``output="both"`` returns ``(output, (h_n, c_n))``. Its ``backward`` takes
gradients in the same structure. The helpers here flatten such a structure
to its arrays ("leaves") and rebuild it, keeping tuples as tuples and lists
as lists, so the kit hands a layer back exactly the form it returned.

Shapes nest the same way, except that a shape is itself a tuple: a tuple or
list whose items are all integers or ``None`` is one shape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

__all__ = [
    "is_nested",
    "leaves",
    "rebuild",
    "map_leaves",
    "shape_leaves",
    "shapes_of",
    "equal",
    "allclose",
    "max_diff",
    "cast",
    "random_input",
    "concrete",
    "with_none_batch",
    "fmt",
    "describe_outputs",
    "shape_claim_problem",
]


def is_nested(value: Any) -> bool:
    """Whether ``value`` holds several arrays (a list or tuple) rather than being one."""
    return isinstance(value, (list, tuple))


def leaves(tree: Any) -> list[Any]:
    """The arrays of ``tree`` in depth-first order (``[tree]`` for a single array)."""
    if is_nested(tree):
        return [leaf for item in tree for leaf in leaves(item)]
    return [tree]


def rebuild(tree: Any, values: Iterable[Any]) -> Any:
    """``tree``'s structure (tuples stay tuples, lists lists) holding ``values`` in leaf order."""
    it = iter(values)

    def build(node: Any, source: Iterator[Any]) -> Any:
        if is_nested(node):
            items = [build(item, source) for item in node]
            return tuple(items) if isinstance(node, tuple) else items
        return next(source)

    return build(tree, it)


def map_leaves(fn: Callable[[Any], Any], tree: Any) -> Any:
    """``fn`` applied to every array of ``tree``, in ``tree``'s structure."""
    return rebuild(tree, [fn(leaf) for leaf in leaves(tree)])


def _is_shape(value: Any) -> bool:
    return isinstance(value, (tuple, list)) and all(
        d is None or isinstance(d, (int, np.integer)) for d in value
    )


def shape_leaves(shapes: Any) -> list[tuple[Any, ...]]:
    """The shapes of a (possibly nested) shape structure, flat, as tuples of ints and ``None``."""
    if _is_shape(shapes):
        return [tuple(None if d is None else int(d) for d in shapes)]
    if isinstance(shapes, (tuple, list)):
        return [s for item in shapes for s in shape_leaves(item)]
    raise TypeError(f"expected a shape (a tuple of ints) or a list of shapes, got {shapes!r}")


def shapes_of(tree: Any) -> Any:
    """The shape of every array of ``tree``, nested as a list (one shape for a single array)."""
    if is_nested(tree):
        return [shapes_of(item) for item in tree]
    return tuple(np.shape(tree))


def equal(a: Any, b: Any) -> bool:
    """Same structure, and every pair of arrays has one shape and equal values."""
    if is_nested(a) or is_nested(b):
        return is_nested(a) and is_nested(b) and len(a) == len(b) and all(equal(u, v) for u, v in zip(a, b))
    return np.shape(a) == np.shape(b) and bool(np.array_equal(a, b))


def allclose(a: Any, b: Any) -> bool:
    """Like :func:`equal` to float64 precision (``rtol=1e-10``, ``atol=1e-12``)."""
    if is_nested(a) or is_nested(b):
        return (
            is_nested(a) and is_nested(b) and len(a) == len(b) and all(allclose(u, v) for u, v in zip(a, b))
        )
    return np.shape(a) == np.shape(b) and bool(np.allclose(a, b, rtol=1e-10, atol=1e-12))


def max_diff(a: Any, b: Any) -> float:
    """The largest absolute difference between matching arrays of ``a`` and ``b``."""
    return max(
        float(np.max(np.abs(np.asarray(u, dtype=np.float64) - np.asarray(v, dtype=np.float64)), initial=0.0))
        for u, v in zip(leaves(a), leaves(b))
    )


def cast(x: Any, dtype: Any) -> Any:
    """``x`` with every floating array cast to ``dtype`` (integer arrays, e.g. indices, kept)."""

    def one(v: Any) -> Any:
        v = np.asarray(v)
        return v.astype(dtype) if np.issubdtype(v.dtype, np.floating) else v

    return map_leaves(one, x)


def random_input(shape: Any, rng: np.random.Generator, dtype: Any) -> Any:
    """Standard normals of ``shape`` (a list of arrays for a list of shapes)."""
    if isinstance(shape, list):
        return [random_input(s, rng, dtype) for s in shape]
    return rng.standard_normal(shape).astype(dtype)


def concrete(shape: Any, batch: int = 2) -> Any:
    """``shape`` with a leading ``None`` replaced by ``batch`` (each shape of a list)."""
    if isinstance(shape, list):
        return [concrete(s, batch) for s in shape]
    shape = tuple(shape)
    return (batch if shape[0] is None else int(shape[0]), *shape[1:])


def with_none_batch(shape: Any) -> Any:
    """``shape`` with its first axis (the batch) ``None`` (each shape of a list)."""
    if isinstance(shape, list):
        return [with_none_batch(s) for s in shape]
    return (None, *tuple(shape)[1:])


def fmt(shape: Any) -> str:
    """A shape or a nested list of shapes, as the framework prints shapes."""
    from framework.base.layer import format_shape

    if shape is None:
        return format_shape(shape)
    if _is_shape(shape):
        return format_shape(tuple(shape))
    if isinstance(shape, (tuple, list)):
        return "[" + ", ".join(fmt(s) for s in shape) + "]"
    return repr(shape)


def describe_outputs(out: Any) -> str:
    """How a layer's output looks, for messages: one shape, or the count and nesting of several."""
    if not is_nested(out):
        return f"shape {fmt(tuple(np.shape(out)))}"
    return f"{len(leaves(out))} arrays nested as {fmt(shapes_of(out))}"


def shape_claim_problem(claimed: Any, out: Any, batch: int, symbolic: bool) -> str | None:
    """What is wrong with ``claimed`` as the shape(s) of ``out`` (``None`` when it is right).

    ``symbolic``: the claim was made for the input shape with a ``None``
    batch axis. A single output's first axis must then be ``None``; an output
    of a layer of several outputs may have ``None`` only where its real size
    is the batch size (a final state ``(layers, N, H)`` keeps its first axis).
    """
    real = shape_leaves(shapes_of(out))
    several = is_nested(out)
    try:
        flat = shape_leaves(claimed)
    except TypeError:
        return f"which is not a shape; the real output has {describe_outputs(out)}"
    if len(flat) != len(real):
        counted = "one shape" if len(flat) == 1 else f"{len(flat)} shapes"
        return (
            f"{counted}, but forward returns {describe_outputs(out)}; a layer of several outputs "
            "gives one shape per output (nested like its output, or as a flat list)"
        )
    if not symbolic:
        if flat != real:
            return f"the real output has {describe_outputs(out)}"
        return None
    if not several:
        expected = (None, *real[0][1:])
        if flat[0] != expected:
            return f"the real output has shape {fmt(real[0])} (expected {fmt(expected)})"
        return None
    for i, (c, r) in enumerate(zip(flat, real)):
        ok = len(c) == len(r) and all(a == b or (a is None and b == batch) for a, b in zip(c, r))
        if not ok:
            return (
                f"whose shape {i} {fmt(c)} does not match output {i} of shape {fmt(r)} "
                f"(forward returns {describe_outputs(out)}; None only where the size is the batch {batch})"
            )
    return None
