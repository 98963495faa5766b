"""Symbolic tensors and graph nodes: how the functional ``Model`` is traced.

``Input(shape)`` returns a :class:`SymbolicTensor`, a placeholder that carries
only a shape (batch axis ``None``) and a dtype. Calling a layer on one
(``Layer.__call__`` sees ``_framework_symbolic``) runs :func:`call_layer`, which

1. builds the layer for the incoming shape if it is not built yet, or checks
   the shape against the built layer's input spec;
2. computes the output shape with ``layer.output_shape`` (a layer that does
   not override it is run once on a batch of zeros, in eval mode, to learn it);
3. records a :class:`Node` (the layer, its inbound tensors, its outputs and
   the mode pinned by ``training=``, if any) and returns the output placeholder(s).

A shape that does not fit raises :class:`~framework.ShapeError` naming the
producing layer, the consuming layer and both shapes. ``Model(inputs,
outputs)`` then walks the nodes back from the outputs (see
:mod:`framework.models.model`).
"""

from __future__ import annotations

import itertools
import math
import numbers
from typing import Any

import numpy as np

from framework.base.context import Context
from framework.base.layer import Layer, format_shape
from framework.errors import ConfigError, ShapeError
from framework.runtime.dtype import get_default_dtype, resolve_dtype

__all__ = [
    "Input",
    "InputLayer",
    "Node",
    "SymbolicTensor",
    "call_layer",
    "call_placeholders",
    "connect",
    "infer_output_shape",
    "input_dtype",
]


class SymbolicTensor:
    """A placeholder for an array flowing through a functional graph.

    Attributes:
        shape: the shape, batch axis ``None``: ``(None, 784)``.
        dtype: the NumPy dtype the array will have.
        node: the :class:`Node` that produces it.
        index: which output of that node it is (0 unless the layer returns a list).
    """

    _framework_symbolic = True

    def __init__(self, shape: tuple[int | None, ...], dtype: Any, node: Node, index: int = 0) -> None:
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.node = node
        self.index = index

    @property
    def layer(self) -> Layer:
        """The layer whose call produced this tensor."""
        return self.node.layer

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __repr__(self) -> str:
        owner = self.node.layer.name or type(self.node.layer).__name__ if self.node else "?"
        return f"<SymbolicTensor shape={format_shape(self.shape)} dtype={self.dtype.name} from {owner!r}>"


_SERIALS = itertools.count()


class Node:
    """One call of a layer in a graph: ``outputs = layer(inputs, *args, **kwargs)``.

    Attributes:
        layer: the layer called.
        inputs: the inbound :class:`SymbolicTensor` objects, in call order.
        list_input: whether the layer was called with a list (merge layers).
        outputs: the produced tensors.
        list_output: whether the layer returns a list of arrays.
        args, kwargs: extra call arguments, passed to ``forward`` at run time.
        side: the placeholders among them (a boolean mask from an ``Input``),
            as ``(position or keyword, tensor)``: read from the run's values.
        training: the mode pinned by ``layer(x, training=...)``: ``True`` or
            ``False`` runs this call in that mode whatever the model's
            (``predict``, ``fit``), forward and backward; ``None`` follows the model.
        serial: when the call was made, counted over the process; a model runs
            its nodes in this order.
    """

    def __init__(
        self,
        layer: Layer,
        inputs: list[SymbolicTensor],
        list_input: bool,
        output_shapes: list[tuple[int | None, ...]],
        list_output: bool,
        dtype: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        training: bool | None = None,
    ) -> None:
        self.layer = layer
        self.serial = next(_SERIALS)  # creation order: a topological order, the order of the user's code
        self.training = None if training is None else bool(training)
        self.inputs = inputs
        self.list_input = list_input
        self.list_output = list_output
        self.args = args
        self.kwargs = kwargs or {}
        #: ``(position or keyword, tensor)`` for each placeholder among args / kwargs
        self.side: list[tuple[Any, SymbolicTensor]] = []
        self.outputs = [SymbolicTensor(s, dtype, self, i) for i, s in enumerate(output_shapes)]


class InputLayer(Layer):
    """The source of an ``Input`` placeholder: the identity, with a fixed shape.

    Args:
        shape: the shape of one sample (without the batch axis).
        dtype: the dtype of the input (default: the default dtype).
        name: the input's name. Unlike a layer's it may contain ``"."`` (ONNX
            inputs are often ``"input.1"``): an input holds no state, so its
            name is never part of a ``state_dict()`` key.
    """

    def __init__(self, shape: Any, dtype: Any = None, *, name: str | None = None) -> None:
        super().__init__()
        if name is not None and (not isinstance(name, str) or not name):
            raise ConfigError(f"Input: name must be a non-empty string, got {name!r}")
        self.name = name
        given = shape
        if isinstance(shape, numbers.Integral) and not isinstance(shape, bool):
            shape = (shape,)
        try:
            # no int() over the entries: it would read "23" as (2, 3), 2.5 as 2 and True as 1
            sizes = None if isinstance(shape, (str, bytes)) else tuple(shape)
        except TypeError:
            sizes = None
        if sizes is None or any(
            d is not None and (isinstance(d, bool) or not isinstance(d, numbers.Integral)) for d in sizes
        ):
            raise ConfigError(
                f"Input: shape must be one sample's shape, an int or a tuple of positive ints (None for an "
                f"unknown size) such as (784,) or (3, 32, 32), got {given!r}"
            )
        if any(d is not None and d <= 0 for d in sizes):
            raise ConfigError(f"Input: shape sizes must be positive, got {given!r}")
        self.shape = tuple(None if d is None else int(d) for d in sizes)
        self.dtype = input_dtype(dtype)
        self.build((None, *self.shape))
        self.input_spec = None

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        return x

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        return grad_out

    def check(self, x: Any) -> None:
        """Raise ``ShapeError`` unless ``x``'s non-batch sizes match the placeholder."""
        shape = getattr(x, "shape", None)
        if (
            shape is None
            or len(shape) != len(self.shape) + 1
            or any(d is not None and d != s for d, s in zip(self.shape, shape[1:]))
        ):
            raise ShapeError(
                f"Input {self.name!r} expected a batch of shape {format_shape((None, *self.shape))}, "
                f"got {format_shape(shape)}"
            )

    def get_config(self) -> dict[str, Any]:
        config = {**super().get_config(), "shape": list(self.shape)}
        if self.dtype is not None:
            config["dtype"] = self.dtype.name
        return config


def input_dtype(dtype: Any) -> np.dtype | None:
    """An ``Input``'s declared dtype: a floating one the layers compute in, or ``bool`` / an integer
    dtype for an input that is a mask or indices (``None``: the default dtype)."""
    if dtype is None:
        return None
    try:
        given = np.dtype(dtype)
    except TypeError:
        given = None
    if given is not None and given.kind in "biu":
        return given
    return resolve_dtype(dtype)


def Input(shape: Any, dtype: Any = None, name: str | None = None) -> SymbolicTensor:
    """A placeholder for a model input of one sample's ``shape`` (no batch axis).

    ``dtype`` is a floating dtype (default: the default dtype), or ``"bool"`` or
    an integer dtype for a mask or indices: such an input is cast to it, and
    may be passed to a layer as a call argument (``mha(x, key_padding_mask=mask)``)
    or feed a layer that takes integers (``Embedding``).

    Example:
        >>> from framework import Input
        >>> Input((3, 28, 28)).shape
        (None, 3, 28, 28)
    """
    layer = InputLayer(shape, dtype, name=name)
    node = Node(layer, [], False, [(None, *layer.shape)], False, layer.dtype or get_default_dtype())
    return node.outputs[0]


class _ShapeOnly:
    """Stands in for an array in a layer's ``_check_input``: only ``.shape``."""

    def __init__(self, shape: tuple[int | None, ...]) -> None:
        self.shape = shape


def _overrides_output_shape(layer: Layer) -> bool:
    return type(layer).output_shape is not Layer.output_shape


def infer_output_shape(layer: Layer, input_shape: Any) -> Any:
    """The output shape of ``layer`` for ``input_shape`` (batch axis ``None``).

    Uses ``layer.output_shape``; a layer that does not override it is run once
    in inference mode on a batch of one zero sample (when every non-batch size is
    known) and its actual output shape is taken.
    """
    if _overrides_output_shape(layer):
        return layer.output_shape(input_shape)
    shapes = input_shape if isinstance(input_shape, list) else [input_shape]
    if any(d is None for s in shapes for d in s[1:]):
        return layer.output_shape(input_shape)
    dtype = get_default_dtype()
    params = layer.parameters()
    if params:
        dtype = params[0].dtype
    dummies = [np.zeros((1, *s[1:]), dtype=dtype) for s in shapes]
    out = layer.forward(
        Context(False, record=False), dummies if isinstance(input_shape, list) else dummies[0]
    )
    if isinstance(out, (list, tuple)):
        return [(None, *o.shape[1:]) for o in _leaves(out)]
    return (None, *out.shape[1:])


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in _leaves(item)]
    return [value]


def _describe(layer: Layer | None) -> str:
    return layer.describe() if layer is not None else "the input"


def connect(layer: Layer, input_shape: Any, source: Layer | list[Layer] | None = None) -> Any:
    """Build or check ``layer`` for ``input_shape`` and return its output shape.

    Raises:
        ShapeError: naming ``source`` (the layer producing the input), ``layer``,
            the incoming shape and what ``layer`` expected.
    """
    try:
        if not layer.built:
            layer.build(input_shape)
            layer.built = True
        elif layer.input_spec is not None:
            if isinstance(input_shape, list):
                layer._check_input([_ShapeOnly(s) for s in input_shape])
            else:
                layer._check_input(_ShapeOnly(input_shape))
        elif (graph := getattr(layer, "_graph", None)) is not None:  # a functional model: its Inputs
            graph.check_input_shape(input_shape, layer.describe())
        out = infer_output_shape(layer, input_shape)
    except ShapeError as exc:
        sources = source if isinstance(source, list) else [source]
        names = " and ".join(_describe(s) for s in sources)
        raise ShapeError(
            f"cannot connect {names} (output shape {format_shape(input_shape)}) to {layer.describe()}: {exc}"
        ) from exc
    if isinstance(out, list):
        return [tuple(o) for o in out]
    return tuple(out)


def call_layer(layer: Layer, x: Any, *args: Any, training: bool | None = None, **kwargs: Any) -> Any:
    """Add a node calling ``layer`` on placeholder(s) ``x``; return the output placeholder(s).

    ``training`` (``True``/``False``) pins the mode of this node (see :class:`Node`).
    """
    list_input = isinstance(x, (list, tuple))
    inputs = list(x) if list_input else [x]
    for i, t in enumerate(inputs):
        if not getattr(t, "_framework_symbolic", False):
            raise ConfigError(
                f"{layer.describe()} was called on a mix of placeholders and {type(t).__name__} "
                f"(argument {i}); in a functional model every input must come from Input() or a layer"
            )
    check_kwargs = getattr(layer, "check_graph_kwargs", None)
    if check_kwargs is not None:  # a layer may refuse call options a graph node cannot carry
        check_kwargs(kwargs)
    side = call_placeholders(layer, args, kwargs)
    shape = [t.shape for t in inputs] if list_input else inputs[0].shape
    out = connect(layer, shape, [t.node.layer for t in inputs] if list_input else inputs[0].node.layer)
    list_output = isinstance(out, list)
    dtype = inputs[0].dtype if np.issubdtype(inputs[0].dtype, np.floating) else get_default_dtype()
    outs = out if list_output else [out]
    node = Node(layer, inputs, list_input, outs, list_output, dtype, args, kwargs, training)
    node.side = side
    return list(node.outputs) if list_output else node.outputs[0]


def call_placeholders(layer: Layer, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[tuple[Any, Any]]:
    """The placeholders among a call's extra arguments: ``[(position or keyword, tensor)]``.

    Such an argument (a mask from an ``Input``) is read at run time from the
    model's inputs; no gradient flows into it, so it must be boolean or integer.

    Raises:
        ConfigError: a floating-point placeholder as a call argument, or one
            inside a list, tuple or dict.
    """
    found: list[tuple[Any, Any]] = [
        *((i, a) for i, a in enumerate(args) if _is_symbolic(a)),
        *((k, v) for k, v in kwargs.items() if _is_symbolic(v)),
    ]
    for key, value in [*enumerate(args), *kwargs.items()]:
        if isinstance(value, (list, tuple, dict)):
            leaves = value.values() if isinstance(value, dict) else value
            if any(_is_symbolic(leaf) for leaf in leaves):
                raise ConfigError(
                    f"{layer.describe()}: call argument {key!r} holds placeholders inside a "
                    f"{type(value).__name__}; a functional model passes a placeholder as a call "
                    "argument only on its own (key_padding_mask=mask)"
                )
    for key, tensor in found:
        if tensor.dtype.kind not in "biu":
            raise ConfigError(
                f"{layer.describe()}: call argument {key!r} is a {tensor.dtype.name} placeholder; a "
                "placeholder passed as a call argument gets no gradient, so it must be a boolean or "
                "integer mask: declare it Input(shape, dtype='bool'), or pass the array as an input"
            )
    return found


def _is_symbolic(value: Any) -> bool:
    return bool(getattr(value, "_framework_symbolic", False))


SymbolicTensor._framework_call = staticmethod(call_layer)  # type: ignore[attr-defined]


def shape_size(shape: tuple[int | None, ...]) -> int | None:
    """Number of values in one sample of ``shape`` (``None`` if unknown)."""
    rest = shape[1:]
    sizes = [d for d in rest if d is not None]
    return None if len(sizes) != len(rest) else math.prod(sizes)
