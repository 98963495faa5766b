"""The ``Layer`` base class: forward, hand-written backward, shapes and state.

A layer is a differentiable function with a hand-derived gradient:

- ``forward(x)`` computes the output and caches what ``backward`` needs;
- ``backward(grad_out)`` receives ``dL/d output`` and returns ``dL/d input``,
  adding ``dL/d parameter`` into each parameter's ``.grad`` (``+=``, so
  gradients of a shared parameter accumulate).

The base class handles, for every subclass:

- building on first use: ``forward`` calls ``build(input_shape)`` with the
  shape of the first input (batch axis as ``None``), where the subclass creates
  its parameters;
- shape checks: after building, an input whose rank or non-batch sizes differ
  from ``input_spec`` raises :class:`~framework.ShapeError` naming the layer,
  the expected and the actual shape; a ``grad_out`` of another shape than the
  last output does too, and one of another dtype is cast to the output's
  (a float32 layer's backward runs in float32 and returns float32);
- discovery of the :class:`~framework.Parameter` and :class:`~framework.Buffer`
  objects and child layers assigned as attributes (``parameters()``,
  ``state_dict()``, ``train()`` / ``eval()`` reach them all);
- ``get_config`` / ``from_config`` for rebuilding by registered name.

Subclasses override ``__init__`` (validate and store hyperparameters), and
``build``, ``forward``, ``backward``, ``output_shape``, ``get_config`` as
needed, in that order.

Shapes given to ``build`` and ``output_shape`` are whole shapes including the
batch axis, which may be ``None``: ``(None, 3, 28, 28)``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np

from framework.base.calling import (
    CALL_STATE,
    Shape,
    check_name,
    check_training,
    format_shape,
    matches,
    note_older_form,
    older_form_defined,
    takes_context,
    takes_ctx,
    wrap_backward,
    wrap_forward,
)
from framework.base.config import Configurable
from framework.base.context import Context
from framework.base.modes import temporary_mode
from framework.base.parameter import Parameter
from framework.base.state import LayerState, tracked_attributes
from framework.errors import ConfigError, DataError, ShapeError

__all__ = ["Context", "Layer", "Shape", "format_shape", "takes_context"]


class Layer(LayerState, Configurable):
    """Base class of every layer, activation and model.

    Args:
        name: a name unique within a model; a model gives unnamed layers one
            (``linear``, ``linear_1``...). It may not contain ``"."``, which
            joins the names of ``state_dict()`` keys (as PyTorch refuses it in
            module names): ``"a.b"`` would collide with layer ``b`` of a model ``a``.

    Attributes:
        training: ``True`` in training mode (``train()``), ``False`` in
            inference mode (``eval()``). Dropout and BatchNorm read it.
        built: whether ``build`` has created the parameters.
        input_shape: the shape ``build`` was given, batch axis ``None``.
        input_spec: the shape inputs must match once built (``None`` entries
            match any size); ``build`` sets it to ``input_shape``, a layer that
            accepts other sizes loosens it.
        needs_input_grad: ``True`` by default. ``fit`` sets it to ``False`` on
            a ``Sequential`` model's first layer with trainable parameters, as
            nothing upstream needs ``dL/dx``; a layer may then skip that
            product and return ``None`` from ``backward`` (``Linear`` does),
            still accumulating its parameter gradients.
        grad_out_writable: ``False`` by default. A container sets it to
            ``True`` for the duration of one ``backward`` call when the
            gradient it passes is an intermediate array nobody else reads
            (``Sequential`` does, for every layer but the last); the layer may
            then overwrite ``grad_out`` in place instead of allocating
            (``ReLU`` and ``Dropout`` do).
    """

    name: str | None = None
    training: bool = True
    built: bool = False
    input_shape: Any = None
    input_spec: Any = None
    needs_input_grad: bool = True
    grad_out_writable: bool = False
    #: ``True`` for a layer that takes integer inputs (indices); a model then
    #: does not cast them to its float dtype at its edge.
    accepts_integer_input: bool = False
    #: ``True`` for a layer that computes in floating point (an average, a
    #: normalisation): the base class casts an integer or boolean input array
    #: to the default float dtype before ``forward`` (so an average of integers
    #: is not truncated, nor ``True + True`` ``True``). Otherwise such an input
    #: reaches ``forward`` as it is; complex, object and string arrays never do.
    float_input: bool = False
    #: ``True`` for an element-wise, non-decreasing map whose derivative is 0
    #: wherever it is flat (ReLU), and for a layer whose every output
    #: is the maximum of a window of its input (the max pools):
    #: ``Sequential`` runs such an activation after a max pool that follows
    #: it, on the smaller pooled array, with the same outputs and gradients.
    #: A subclass that overrides ``forward`` must declare them again.
    monotone_elementwise: bool = False
    window_max: bool = False
    #: ``True`` for a layer whose ``forward`` and ``backward`` treat every axis
    #: but the channel axis 1 alike (an element-wise map; statistics per channel
    #: over all other axes, as BatchNorm): ``Sequential`` may then run it on a
    #: ``(1, C, H*W*N)`` view of batch-last activations (:mod:`framework.models.layouts`).
    #: A subclass overriding ``forward`` or ``backward`` must declare it again.
    channelwise: bool = False
    #: ``True`` for a layer whose ``backward`` returns a new array that it does
    #: not keep (or ``grad_out`` itself): ``Sequential`` then lets the layer
    #: below overwrite that array in place (``ctx.grad_out_writable``). A layer
    #: that does not declare it (every third-party layer by default) may return
    #: any array, a read-only broadcast view or one it keeps, and nothing
    #: downstream writes into it. A subclass overriding ``backward`` must
    #: declare it again.
    returns_fresh_grad: bool = False
    _out_shape: Any = None
    _out_dtype: Any = None
    _ctx_style: ClassVar[bool] = True

    #: Extra keyword arguments ``get_config`` never writes (override in subclasses).
    _config_exclude: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for method, wrap in (("forward", wrap_forward), ("backward", wrap_backward)):
            fn = cls.__dict__.get(method)
            if fn is not None and not getattr(fn, "_framework_checked", False):
                if method == "forward":
                    cls._ctx_style = takes_ctx(fn)
                    if not cls._ctx_style:
                        note_older_form()
                setattr(cls, method, wrap(fn))

    def __init__(self, *, name: str | None = None) -> None:
        self.name = check_name(self, name)
        self.training = True
        self.built = False

    # -- the four methods subclasses write ---------------------------------

    def build(self, input_shape: Any) -> None:
        """Create parameters for inputs of ``input_shape`` (batch axis ``None``).

        Subclasses create their parameters, then call ``super().build(input_shape)``.
        """
        if isinstance(input_shape, list):
            self.input_shape = [tuple(s) for s in input_shape]
            self.input_spec = [(None, *s[1:]) for s in self.input_shape]
        else:
            self.input_shape = (None, *tuple(input_shape)[1:])
            self.input_spec = self.input_shape
        self.built = True
        if not self.trainable:  # frozen before its parameters existed
            for p in self.parameters():
                p.trainable = False

    def forward(self, ctx: Context, x: Any) -> Any:
        """Compute the output for input ``x``; store on ``ctx`` what ``backward`` needs.

        Called as ``layer.forward(ctx, x)`` by a model's executor, or as
        ``layer.forward(x)`` by hand (the base class then makes the context and
        keeps it for the next ``layer.backward(grad_out)``).
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement forward()")

    def backward(self, ctx: Context, grad_out: Any) -> Any:
        """Return ``dL/dx`` given ``dL/d output``; add ``dL/dparam`` with ``Parameter.add_grad``.

        ``grad_out`` arrives with the shape and dtype of the call's output: the
        base class checks the shape and casts another floating dtype once.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement backward()")

    def output_shape(self, input_shape: Any) -> Any:
        """The output shape for ``input_shape`` (the identity by default)."""
        return input_shape

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this layer, as JSON data."""
        return {"name": self.name} if self.name is not None else {}

    # -- calling -----------------------------------------------------------

    def __call__(self, x: Any, *args: Any, training: bool | None = None, **kwargs: Any) -> Any:
        """Run ``forward`` on arrays; on ``Input`` placeholders, add a graph node.

        Args:
            training: the mode of this one call (``True``: Dropout drops,
                BatchNorm uses batch statistics); ``None`` uses the layer's
                ``training`` flag. The flag itself is not changed. On a
                placeholder it pins the node: the model runs this call in that
                mode whatever its own (Keras's ``Dropout()(x, training=True)``
                for Monte Carlo dropout, ``training=False`` to keep a BatchNorm
                on its running statistics during ``fit``).
        """
        training = check_training(self, training)
        first = x[0] if isinstance(x, (list, tuple)) and x else x
        if getattr(first, "_framework_symbolic", False):
            return type(first)._framework_call(self, x, *args, training=training, **kwargs)
        if training is None:
            return self.forward(x, *args, **kwargs)
        ctx = Context(training)
        with self._hand_mode(training):
            out = self.forward(ctx, x, *args, **kwargs)
        self._manual_ctx = ctx
        return out

    def _hand_mode(self, training: bool | None) -> contextlib.AbstractContextManager[None]:
        """:meth:`mode` for one call when a layer in this one is in the older form, else nothing.

        An older-form ``forward(x)`` calls its children by hand, and they run in
        their own flags, so ``layer(x, training=False)`` sets every flag for the
        call (and back after); a context-form call carries its mode on ``ctx``.
        """
        if training is None or not older_form_defined():
            return contextlib.nullcontext()
        if all(takes_context(layer) for layer in self.modules()):  # 20-110 us a call: only when needed
            return contextlib.nullcontext()
        return self.mode(training)

    def __getstate__(self) -> dict[str, Any]:
        # A pickle carries the layer, not the record of its last call.
        state = dict(self.__dict__)
        for key in CALL_STATE:
            state.pop(key, None)
        return state

    def __setattr__(self, key: str, value: Any) -> None:
        if isinstance(value, np.ndarray) and isinstance(self.__dict__.get(key), Parameter):
            raise ConfigError(
                f"{self.describe()}: {key} is a Parameter; assigning a plain array to it would detach it "
                f"from the optimizer and checkpoints. Write the values into it with "
                f"layer.{key}.data[...] = array, or assign a Parameter(array)"
            )
        found = getattr(type(self), key, None)
        if isinstance(found, property) and found.fset is None:  # ``self.layers = [...]`` in a Model
            raise ConfigError(
                f"{self.describe()}: {key!r} is a read-only property of {type(self).__name__}, so it cannot "
                f"be assigned; use another attribute name (layers in a list or dict are found under any name)"
            )
        object.__setattr__(self, key, value)

    def _check_input(self, x: Any) -> None:
        spec = self.input_spec
        if isinstance(spec, list):
            if not isinstance(x, (list, tuple)) or len(x) != len(spec):
                got = len(x) if isinstance(x, (list, tuple)) else type(x).__name__
                raise ShapeError(f"{self.describe()} expected a list of {len(spec)} inputs, got {got}")
            for i, (s, xi) in enumerate(zip(spec, x)):
                shape = getattr(xi, "shape", None)
                if shape is None or not matches(s, shape):
                    raise ShapeError(
                        f"{self.describe()} expected input {i} of shape {format_shape(s)}, "
                        f"got {format_shape(shape)}"
                    )
            return
        shape = getattr(x, "shape", None)
        if shape is None:
            raise DataError(f"{self.describe()} expected a NumPy array, got {type(x).__name__}")
        if not matches(spec, shape):
            raise ShapeError(
                f"{self.describe()} expected input of shape {format_shape(spec)}, got {format_shape(shape)}"
            )

    # -- children, parameters and state ------------------------------------

    def named_children(self) -> Iterator[tuple[str, Layer]]:
        """Child layers assigned as attributes, or held in list, tuple or dict attributes (``blocks.0``)."""
        for key, value in tracked_attributes(self):
            if isinstance(value, Layer):
                yield key, value

    def children(self) -> list[Layer]:
        return [child for _, child in self.named_children()]

    def modules(self) -> list[Layer]:
        """This layer and every layer under it, depth first in ``children()`` order (as PyTorch's)."""
        found: list[Layer] = [self]
        for child in self.children():
            found += child.modules()
        return found

    @staticmethod
    def activation_forward(ctx: Context, activation: Layer | None, x: Any) -> Any:
        """``activation`` applied to this layer's output ``x`` in the sub-context ``"activation"``."""
        if activation is None:
            return x
        return activation.forward(ctx.child("activation"), x)

    def activation_backward(self, *args: Any) -> Any:
        """The backward of the activation this layer applies to its output.

        ``activation_backward(ctx, activation, grad_out)`` in the context form
        (the call :meth:`activation_forward` made), or
        ``activation_backward(activation, grad_out)`` for a layer in the older
        form. The activation may overwrite ``grad_out`` in place exactly when
        this layer may (``grad_out_writable``), which saves it an output-sized
        array; ``None`` (no activation) returns ``grad_out``.
        """
        if isinstance(args[0], Context):
            ctx, activation, grad_out = args
            if activation is None:
                return grad_out
            sub = ctx.child("activation")
            sub.grad_out_writable = ctx.grad_out_writable
            return activation.backward(sub, grad_out)
        activation, grad_out = args
        if activation is None:
            return grad_out
        activation.grad_out_writable = self.grad_out_writable
        try:
            return activation.backward(grad_out)
        finally:
            activation.grad_out_writable = False

    def zero_grad(self) -> None:
        """Reset every parameter's gradient to zero."""
        for p in self.parameters():
            p.zero_grad()

    # -- freezing ----------------------------------------------------------

    @property
    def trainable(self) -> bool:
        """Whether this layer's parameters train (Keras's ``layer.trainable``).

        Setting it freezes (``False``) or unfreezes every parameter of the
        layer and of its children, from the next optimizer step on, whether
        or not the model is compiled again; ``summary()`` then counts them as
        non-trainable, and checkpoints keep the flag. A frozen normalisation
        layer runs in inference mode (Keras's fine-tuning rule).
        """
        return self.__dict__.get("_trainable", True)

    @trainable.setter
    def trainable(self, value: bool) -> None:
        if not isinstance(value, (bool, np.bool_)):
            raise ConfigError(f"{self.describe()}: trainable must be True or False, got {value!r}")
        value = bool(value)
        object.__setattr__(self, "_trainable", value)
        for p in self.parameters():
            p.trainable = value
        for child in self.children():
            child.trainable = value

    # -- modes -------------------------------------------------------------

    def train(self, mode: bool = True) -> Layer:
        """Switch this layer and every child to training mode (or not); returns ``self``."""
        self.training = bool(mode)
        for child in self.children():
            child.train(mode)
        return self

    def eval(self) -> Layer:
        """Switch to inference mode (Dropout off, BatchNorm running statistics)."""
        return self.train(False)

    @contextlib.contextmanager
    def mode(self, training: bool) -> Iterator[None]:
        """This layer and every layer under it in ``training`` mode for the block; each flag back after
        (after the last of several overlapping blocks: :mod:`framework.base.modes`)."""
        with temporary_mode(self, training):
            yield

    # -- display -----------------------------------------------------------

    def describe(self) -> str:
        """``Linear layer 'dense_1'``: how error messages name this layer."""
        kind = type(self).__name__
        return f"{kind} layer {self.name!r}" if self.name else f"{kind} layer"

    def extra_repr(self) -> str:
        config = {k: v for k, v in self.get_config().items() if k != "name"}
        return ", ".join(f"{k}={v!r}" for k, v in config.items())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"
