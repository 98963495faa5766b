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
  last output does too;
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

import functools
import inspect
import threading
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import numpy as np

from framework.base.config import Configurable
from framework.base.context import Context
from framework.base.parameter import Buffer, Parameter
from framework.errors import ConfigError, DataError, NotBuiltError, ShapeError

__all__ = ["Context", "Layer", "Shape", "format_shape", "takes_context"]

Shape = tuple[int | None, ...]

_ANY = object()
_BUILD_LOCK = threading.RLock()
_CALL_STATE = ("_legacy_lock", "_legacy_token", "_manual_ctx")


def format_shape(shape: Any) -> str:
    """``(None, 3, 28, 28)`` for display; lists of shapes joined by commas."""
    if isinstance(shape, list):
        return "[" + ", ".join(format_shape(s) for s in shape) + "]"
    if shape is None:
        return "?"
    return (
        "("
        + ", ".join("None" if d is None else str(d) for d in shape)
        + ("," if len(shape) == 1 else "")
        + ")"
    )


def _shape_of(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return (None, *x.shape[1:])
    if isinstance(x, (list, tuple)) and x and all(isinstance(v, np.ndarray) for v in x):
        return [(None, *v.shape[1:]) for v in x]
    shape = getattr(x, "shape", None)
    if shape is not None:
        return (None, *tuple(shape)[1:])
    raise DataError(f"expected a NumPy array (or a list of arrays), got {type(x).__name__}")


def _matches(spec: Any, shape: tuple[int, ...]) -> bool:
    return len(spec) == len(shape) and all(s is None or s == d for s, d in zip(spec, shape))


def _takes_ctx(fn: Callable[..., Any]) -> bool:
    """Whether ``fn(self, ctx, ...)`` is written in the context form."""
    try:
        names = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return False
    return len(names) >= 2 and names[1] == "ctx"


def _out_shape(out: Any) -> Any:
    return out.shape if isinstance(out, np.ndarray) else _ANY


def _check_grad(layer: Layer, expected: Any, grad_out: Any) -> None:
    if expected is None:
        raise NotBuiltError(f"{layer.describe()}: backward() called before forward()")
    if expected is not _ANY and getattr(grad_out, "shape", None) != expected:
        raise ShapeError(
            f"{layer.describe()}: backward() expected a gradient of shape "
            f"{format_shape(expected)} (the shape of the last output), got "
            f"{format_shape(getattr(grad_out, 'shape', None))}"
        )


def _prepare(layer: Layer, x: Any) -> None:
    if not layer.built:
        with _BUILD_LOCK:
            if not layer.built:
                layer.build(_shape_of(x))
                layer.built = True
    elif layer.input_spec is not None:
        layer._check_input(x)


def _wrap_forward(fn: Callable[..., Any]) -> Callable[..., Any]:
    if _takes_ctx(fn):

        @functools.wraps(fn)
        def forward(self: Layer, *args: Any, **kwargs: Any) -> Any:
            if args and isinstance(args[0], Context):
                ctx, x, rest = args[0], args[1], args[2:]
            else:  # the manual form ``layer.forward(x)``: one call at a time
                ctx = Context(self.training, needs_input_grad=self.needs_input_grad)
                x, rest = args[0], args[1:]
                self._manual_ctx = ctx
            _prepare(self, x)
            out = fn(self, ctx, x, *rest, **kwargs)
            ctx.out_shape = _out_shape(out)
            return out

    else:

        @functools.wraps(fn)
        def forward(self: Layer, *args: Any, **kwargs: Any) -> Any:
            if args and isinstance(args[0], Context):
                return _adapted_forward(self, fn, args[0], args[1], args[2:], kwargs)
            x = args[0]
            _prepare(self, x)
            out = fn(self, x, *args[1:], **kwargs)
            self._out_shape = _out_shape(out)
            return out

    forward._framework_checked = True  # type: ignore[attr-defined]
    return forward


def _wrap_backward(fn: Callable[..., Any]) -> Callable[..., Any]:
    if _takes_ctx(fn):

        @functools.wraps(fn)
        def backward(self: Layer, *args: Any, **kwargs: Any) -> Any:
            ctx: Context
            if args and isinstance(args[0], Context):
                ctx, grad_out, rest = args[0], args[1], args[2:]
                if not type(self)._ctx_style:  # under a subclass's older-form forward (manual form)
                    ctx = self.__dict__.get("_manual_ctx", ctx)
            else:
                manual = self.__dict__.get("_manual_ctx")
                if manual is None:
                    raise NotBuiltError(f"{self.describe()}: backward() called before forward()")
                ctx = manual
                ctx.grad_out_writable = self.grad_out_writable
                grad_out, rest = args[0], args[1:]
            _check_grad(self, ctx.out_shape, grad_out)
            return fn(self, ctx, grad_out, *rest, **kwargs)

    else:

        @functools.wraps(fn)
        def backward(self: Layer, *args: Any, **kwargs: Any) -> Any:
            if args and isinstance(args[0], Context):
                if type(self)._ctx_style:  # an older-form backward over a context-form forward
                    ctx = args[0]
                    _check_grad(self, ctx.out_shape, args[1])
                    self._manual_ctx = ctx
                    return fn(self, *args[1:], **kwargs)
                return _adapted_backward(self, fn, args[0], args[1], args[2:], kwargs)
            expected = self._out_shape
            if expected is None and "_manual_ctx" in self.__dict__:
                expected = self._manual_ctx.out_shape
            _check_grad(self, expected, args[0])
            return fn(self, *args, **kwargs)

    backward._framework_checked = True  # type: ignore[attr-defined]
    return backward


# -- the adapter for layers written in the older form -------------------------
# ``forward(x)`` / ``backward(grad_out)`` keep one call's state on the layer, so
# the adapter serves them one call at a time: it refuses a second thread, and a
# backward whose forward was not the layer's last one.


def _legacy_error(layer: Layer, what: str) -> ConfigError:
    return ConfigError(
        f"{layer.describe()} ({type(layer).__module__}.{type(layer).__qualname__}) keeps its forward state "
        f"on the layer (forward(x) / backward(grad_out)), so it {what}. Write it in the context form, "
        "forward(self, ctx, x) / backward(self, ctx, grad_out), storing on ctx what backward needs "
        "(see docs/plugins.md)"
    )


def _adapted_forward(
    layer: Layer, fn: Callable[..., Any], ctx: Context, x: Any, rest: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    lock = layer.__dict__.get("_legacy_lock")
    if lock is None:
        with _BUILD_LOCK:
            lock = layer.__dict__.get("_legacy_lock")
            if lock is None:
                lock = threading.Lock()
                object.__setattr__(layer, "_legacy_lock", lock)
    if not lock.acquire(blocking=False):
        raise _legacy_error(layer, "cannot be called from two threads at once")
    training = layer.training
    needs = layer.needs_input_grad
    try:
        layer.training = ctx.training
        layer.needs_input_grad = ctx.needs_input_grad
        _prepare(layer, x)
        out = fn(layer, x, *rest, **kwargs)
        layer._out_shape = ctx.out_shape = _out_shape(out)
        token = object()
        layer._legacy_token = token
        ctx._legacy_token = token
        return out
    finally:
        layer.training = training
        layer.needs_input_grad = needs
        lock.release()


def _adapted_backward(
    layer: Layer,
    fn: Callable[..., Any],
    ctx: Context,
    grad_out: Any,
    rest: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    token = ctx.__dict__.get("_legacy_token")
    if token is None or layer.__dict__.get("_legacy_token") is not token:
        raise _legacy_error(
            layer, "cannot serve a backward after another call of the same layer (a shared layer)"
        )
    _check_grad(layer, ctx.out_shape, grad_out)
    needs = layer.needs_input_grad
    try:
        layer.grad_out_writable = ctx.grad_out_writable
        layer.needs_input_grad = ctx.needs_input_grad
        return fn(layer, grad_out, *rest, **kwargs)
    finally:
        layer.grad_out_writable = False
        layer.needs_input_grad = needs


def takes_context(layer: Layer) -> bool:
    """Whether ``layer``'s ``forward`` is written in the context form (``forward(ctx, x)``)."""
    return bool(getattr(type(layer), "_ctx_style", True))


class Layer(Configurable):
    """Base class of every layer, activation and model.

    Args:
        name: a name unique within a model; a model gives unnamed layers one
            (``linear``, ``linear_1``...).

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
    #: ``True`` for an element-wise, non-decreasing map whose derivative is 0
    #: wherever it is flat (ReLU), and for a layer whose every output
    #: is the maximum of a window of its input (the max pools):
    #: ``Sequential`` runs such an activation after a max pool that follows
    #: it, on the smaller pooled array, with the same outputs and gradients.
    #: A subclass that overrides ``forward`` must declare them again.
    monotone_elementwise: bool = False
    window_max: bool = False
    #: ``True`` for a layer whose ``backward`` returns a new array that it does
    #: not keep (or ``grad_out`` itself): ``Sequential`` then lets the layer
    #: below overwrite that array in place (``ctx.grad_out_writable``). A layer
    #: that does not declare it (every third-party layer by default) may return
    #: any array, a read-only broadcast view or one it keeps, and nothing
    #: downstream writes into it. A subclass overriding ``backward`` must
    #: declare it again.
    returns_fresh_grad: bool = False
    _out_shape: Any = None
    _ctx_style: ClassVar[bool] = True

    #: Extra keyword arguments ``get_config`` never writes (override in subclasses).
    _config_exclude: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for method, wrap in (("forward", _wrap_forward), ("backward", _wrap_backward)):
            fn = cls.__dict__.get(method)
            if fn is not None and not getattr(fn, "_framework_checked", False):
                if method == "forward":
                    cls._ctx_style = _takes_ctx(fn)
                setattr(cls, method, wrap(fn))

    def __init__(self, *, name: str | None = None) -> None:
        if name is not None and (not isinstance(name, str) or not name):
            raise ConfigError(f"{type(self).__name__}: name must be a non-empty string, got {name!r}")
        self.name = name
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
        """Return ``dL/dx`` given ``dL/d output``; add ``dL/dparam`` with ``Parameter.add_grad``."""
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
                ``training`` flag. The flag itself is not changed.
        """
        first = x[0] if isinstance(x, (list, tuple)) and x else x
        if getattr(first, "_framework_symbolic", False):
            return type(first)._framework_call(self, x, *args, **kwargs)
        if training is None:
            return self.forward(x, *args, **kwargs)
        ctx = Context(training)
        out = self.forward(ctx, x, *args, **kwargs)
        self._manual_ctx = ctx
        return out

    def __getstate__(self) -> dict[str, Any]:
        # A pickle carries the layer, not the record of its last call.
        state = dict(self.__dict__)
        for key in _CALL_STATE:
            state.pop(key, None)
        return state

    def __setattr__(self, key: str, value: Any) -> None:
        if isinstance(value, np.ndarray) and isinstance(self.__dict__.get(key), Parameter):
            raise ConfigError(
                f"{self.describe()}: {key} is a Parameter; assigning a plain array to it would detach it "
                f"from the optimizer and checkpoints. Write the values into it with "
                f"layer.{key}.data[...] = array, or assign a Parameter(array)"
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
                if shape is None or not _matches(s, shape):
                    raise ShapeError(
                        f"{self.describe()} expected input {i} of shape {format_shape(s)}, "
                        f"got {format_shape(shape)}"
                    )
            return
        shape = getattr(x, "shape", None)
        if shape is None:
            raise DataError(f"{self.describe()} expected a NumPy array, got {type(x).__name__}")
        if not _matches(spec, shape):
            raise ShapeError(
                f"{self.describe()} expected input of shape {format_shape(spec)}, got {format_shape(shape)}"
            )

    # -- children, parameters and state ------------------------------------

    def named_children(self) -> Iterator[tuple[str, Layer]]:
        """Child layers assigned as attributes (or in lists of layers)."""
        for key, value in list(vars(self).items()):
            if isinstance(value, Layer):
                yield key, value
            elif isinstance(value, (list, tuple)):
                for i, item in enumerate(value):
                    if isinstance(item, Layer):
                        yield f"{key}.{i}", item

    def children(self) -> list[Layer]:
        return [child for _, child in self.named_children()]

    def _named_state(self, kind: type, prefix: str, seen: set[int]) -> Iterator[tuple[str, Any]]:
        for key, value in list(vars(self).items()):
            if isinstance(value, kind):
                if id(value) not in seen:
                    seen.add(id(value))
                    yield prefix + key, value
            elif isinstance(value, (list, tuple)):
                for i, item in enumerate(value):
                    if isinstance(item, kind) and id(item) not in seen:
                        seen.add(id(item))
                        yield f"{prefix}{key}.{i}", item
        for name, child in self.named_children():
            yield from child._named_state(kind, f"{prefix}{name}.", seen)

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """``(dotted name, Parameter)`` pairs, own first, each parameter once."""
        return self._named_state(Parameter, prefix, set())

    def parameters(self) -> list[Parameter]:
        """Every parameter of this layer and its children (trainable or frozen)."""
        return [p for _, p in self.named_parameters()]

    def trainable_parameters(self) -> list[Parameter]:
        return [p for p in self.parameters() if p.trainable]

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, Buffer]]:
        return self._named_state(Buffer, prefix, set())

    def buffers(self) -> list[Buffer]:
        return [b for _, b in self.named_buffers()]

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

    def count_params(self, trainable: bool | None = None) -> int:
        """Number of scalars: all, trainable only (``True``) or non-trainable (``False``).

        Buffers count as non-trainable.
        """
        params = self.parameters()
        n_train = sum(p.size for p in params if p.trainable)
        n_frozen = sum(p.size for p in params if not p.trainable) + sum(b.size for b in self.buffers())
        if trainable is None:
            return n_train + n_frozen
        return n_train if trainable else n_frozen

    def state_dict(self) -> dict[str, np.ndarray]:
        """Parameters and buffers by dotted name (the arrays themselves, not copies)."""
        state = {name: p.data for name, p in self.named_parameters()}
        state.update({name: b.data for name, b in self.named_buffers()})
        return state

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
        """Copy arrays into the parameters and buffers of the same names.

        Raises:
            ConfigError: with ``strict``, when names are missing or unexpected.
            ShapeError: when an array's shape differs from the parameter's.
        """
        targets: dict[str, Parameter | Buffer] = dict(self.named_parameters())
        targets.update(dict(self.named_buffers()))
        if strict:
            missing = sorted(set(targets) - set(state))
            unexpected = sorted(set(state) - set(targets))
            if missing or unexpected:
                raise ConfigError(
                    f"{self.describe()}: state does not match; missing {missing}, unexpected {unexpected}"
                )
        for name, target in targets.items():
            if name not in state:
                continue
            value = np.asarray(state[name])
            if value.shape != target.shape:
                raise ShapeError(
                    f"{self.describe()}: {name} expected shape {format_shape(target.shape)}, "
                    f"got {format_shape(value.shape)}"
                )
            np.copyto(target.data, value, casting="unsafe")

    # -- Keras's weight lists --------------------------------------------------

    @property
    def weights(self) -> list[Parameter | Buffer]:
        """Parameters, then buffers (Keras's order: ``kernel, bias`` then running statistics)."""
        return [*self.parameters(), *self.buffers()]

    @property
    def trainable_weights(self) -> list[Parameter]:
        return [p for p in self.parameters() if p.trainable]

    @property
    def non_trainable_weights(self) -> list[Parameter | Buffer]:
        return [*(p for p in self.parameters() if not p.trainable), *self.buffers()]

    def get_weights(self) -> list[np.ndarray]:
        """Copies of :attr:`weights`' arrays, in that order."""
        return [w.data.copy() for w in self.weights]

    def set_weights(self, arrays: Any) -> None:
        """Copy ``arrays`` (in :attr:`weights`' order) into the parameters and buffers.

        Raises:
            ShapeError: a wrong number of arrays, or an array of the wrong shape
                (naming the weight, the expected and the given shape).
        """
        targets = self.weights
        names = [name for name, _ in self.named_parameters()] + [name for name, _ in self.named_buffers()]
        arrays = list(arrays)
        if len(arrays) != len(targets):
            raise ShapeError(
                f"{self.describe()}.set_weights: expected {len(targets)} arrays ({', '.join(names)}), "
                f"got {len(arrays)}"
            )
        values = [np.asarray(a) for a in arrays]
        for name, target, value in zip(names, targets, values):
            if value.shape != target.shape:
                raise ShapeError(
                    f"{self.describe()}.set_weights: {name} expected shape {format_shape(target.shape)}, "
                    f"got {format_shape(value.shape)}"
                )
        for target, value in zip(targets, values):
            np.copyto(target.data, value, casting="unsafe")

    def astype(self, dtype: Any) -> Layer:
        """Convert every parameter and buffer to ``dtype``; returns ``self``."""
        for p in self.parameters():
            p.astype(dtype)
        for b in self.buffers():
            if np.issubdtype(b.data.dtype, np.floating):
                b.data = b.data.astype(dtype)
        return self

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
