"""How a layer is called: the wrappers ``Layer`` puts around ``forward`` and ``backward``.

Every subclass's ``forward`` / ``backward`` is wrapped once, at class
creation, by :func:`wrap_forward` / :func:`wrap_backward`, which

- check each input's type and dtype (:func:`framework.base.inputs.check_inputs`:
  arrays only, never complex, object or strings; integers cast for a
  ``float_input`` layer), and ``grad_out``'s dtype;
- build the layer on its first input and check later inputs' shapes, and
  check ``grad_out`` against the shape of the call's output;
- cast a floating ``grad_out`` of another dtype to the dtype of that output
  (a float32 layer given a float64 gradient computes its backward in float32
  and returns a float32 ``dL/dx``, as its forward ran; see :func:`as_out_dtype`);
- serve both calling forms of a layer written in the context form:
  ``forward(ctx, x)`` from an executor, and ``forward(x)`` by hand (a context
  is made and kept on the layer for the next hand-made ``backward``);
- adapt a layer written in the older form (``forward(x)`` keeping its state on
  the layer) to the executors: it gets the call's mode, and a second thread, a
  call from its own forward or a second place in one graph is refused with a
  clear error.

The form is told by the name of ``forward``'s first argument, ``ctx``.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from framework.base.context import Context
from framework.base.inputs import check_grad_values, check_inputs, shape_of
from framework.errors import ConfigError, NotBuiltError, ShapeError

if TYPE_CHECKING:
    from framework.base.layer import Layer

__all__ = [
    "CALL_STATE",
    "Shape",
    "as_out_dtype",
    "check_name",
    "check_training",
    "format_shape",
    "matches",
    "takes_context",
    "wrap_backward",
    "wrap_forward",
]

Shape = tuple[int | None, ...]

_ANY = object()
_BUILD_LOCK = threading.RLock()
CALL_STATE = ("_legacy_lock", "_legacy_owner", "_legacy_token", "_manual_ctx")


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


def check_name(layer: Layer, name: Any) -> str | None:
    """``name`` if it can name ``layer`` in a model: ``None`` or a non-empty string without ``"."``,
    ``"/"`` or NUL.

    ``state_dict()`` keys join the names of nested layers with ``"."``, so a
    layer ``"a.b"`` would share its keys with layer ``"b"`` of a model ``"a"``
    (one of them silently lost on save and load); PyTorch refuses ``"."`` in
    module names for the same reason.

    Raises:
        ConfigError: naming the layer's class, what a name must be and the name given.
    """
    kind = type(layer).__name__
    if name is not None and (not isinstance(name, str) or not name):
        raise ConfigError(f"{kind}: name must be a non-empty string, got {name!r}")
    if name is not None and "." in name:
        raise ConfigError(
            f"{kind} layer {name!r}: a layer name must not contain '.', got {name!r}; '.' joins the "
            f"names in state_dict() keys, so {name!r} would collide with a layer of a nested model. "
            f"Use another separator, e.g. {name.replace('.', '_')!r}"
        )
    if name is not None and ("/" in name or "\x00" in name):
        raise ConfigError(
            f"{kind} layer {name!r}: a layer name must not contain '/' or a NUL character, got {name!r}; "
            "checkpoints store each layer's weights in an HDF5 group of its name, where '/' nests groups "
            "and NUL ends the name, so the file would not load back"
        )
    return name


def check_training(layer: Layer, training: Any) -> bool | None:
    """A ``training=`` call argument as ``True``, ``False`` or ``None``; a ConfigError for anything else."""
    if training is not None and not isinstance(training, (bool, np.bool_)):
        raise ConfigError(
            f"{layer.describe()}: training must be True, False or None (the layer's own mode), "
            f"got {training!r}"
        )
    return None if training is None else bool(training)


def matches(spec: Any, shape: tuple[int, ...]) -> bool:
    return len(spec) == len(shape) and all(s is None or s == d for s, d in zip(spec, shape))


def takes_ctx(fn: Callable[..., Any]) -> bool:
    """Whether ``fn(self, ctx, ...)`` is written in the context form."""
    try:
        names = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return False
    return len(names) >= 2 and names[1] == "ctx"


def _out_shape(out: Any) -> Any:
    return out.shape if isinstance(out, np.ndarray) else _ANY


def _out_dtype(out: Any) -> np.dtype | None:
    """The dtype of ``out`` if it is an array (else ``None``): see :func:`as_out_dtype`."""
    return out.dtype if isinstance(out, np.ndarray) else None


def as_out_dtype(grad_out: Any, dtype: np.dtype | None) -> Any:
    """``grad_out`` in ``dtype``, the dtype of the output it is the gradient of.

    A float64 gradient of a float32 output is cast once, here, so the backward
    runs in the layer's dtype (as the model casts inputs at its edge). The
    gradient of an integer output, of a list of outputs (``dtype`` ``None``)
    or one that is not an array is left as it is.
    """
    if (
        dtype is None
        or not isinstance(grad_out, np.ndarray)
        or grad_out.dtype == dtype
        or dtype.kind not in "fc"
    ):
        return grad_out
    return grad_out.astype(dtype)


def _check_grad(layer: Layer, expected: Any, grad_out: Any) -> None:
    if expected is None:
        raise NotBuiltError(f"{layer.describe()}: backward() called before forward()")
    if expected is _ANY:  # several outputs (a tuple): their arrays' dtypes; the layer checks shapes
        check_grad_values(layer, grad_out)
    elif getattr(grad_out, "shape", None) != expected:
        raise ShapeError(
            f"{layer.describe()}: backward() expected a gradient of shape "
            f"{format_shape(expected)} (the shape of the last output), got "
            f"{format_shape(getattr(grad_out, 'shape', None))}"
        )
    elif type(grad_out) is not np.ndarray or grad_out.dtype.kind != "f":
        check_grad_values(layer, grad_out)  # complex, object, strings: refused, never cast


def _prepare(layer: Layer, x: Any) -> Any:
    """``x`` checked (:func:`check_inputs`); builds the layer on its first input, then checks shapes."""
    if type(x) is not np.ndarray or x.dtype.kind != "f":  # (inline: a float array is the hot path)
        x = check_inputs(layer, x)
    if not layer.built:
        with _BUILD_LOCK:
            if not layer.built:
                shape = shape_of(layer, x)
                try:
                    layer.build(shape)
                except ShapeError as exc:
                    # the build saw the batch axis as None: name the arrays' shapes as called
                    many = isinstance(x, (list, tuple))
                    given = [getattr(v, "shape", None) for v in x] if many else getattr(x, "shape", None)
                    if given is None or given == shape:
                        raise
                    text = ", ".join(format_shape(g) for g in given) if many else format_shape(given)
                    raise ShapeError(f"{exc} (called on an input of shape {text})") from exc
                layer.built = True
    elif layer.input_spec is not None:
        layer._check_input(x)
    return x


def wrap_forward(fn: Callable[..., Any]) -> Callable[..., Any]:
    if takes_ctx(fn):

        @functools.wraps(fn)
        def forward(self: Layer, *args: Any, **kwargs: Any) -> Any:
            if args and isinstance(args[0], Context):
                ctx, x, rest = args[0], args[1], args[2:]
            else:  # the manual form ``layer.forward(x)``: one call at a time
                ctx = Context(self.training, needs_input_grad=self.needs_input_grad)
                x, rest = args[0], args[1:]
                self._manual_ctx = ctx
                self.__dict__["_hand_calls"] = self.__dict__.get("_hand_calls", 0) + 1
            x = _prepare(self, x)
            out = fn(self, ctx, x, *rest, **kwargs)
            if isinstance(out, np.ndarray):  # (inline: it runs at every call)
                ctx.out_shape, ctx.out_dtype = out.shape, out.dtype
            else:
                ctx.out_shape = _ANY
            return out

    else:

        @functools.wraps(fn)
        def forward(self: Layer, *args: Any, **kwargs: Any) -> Any:
            if args and isinstance(args[0], Context):
                return _adapted_forward(self, fn, args[0], args[1], args[2:], kwargs)
            x = _prepare(self, args[0])
            out = fn(self, x, *args[1:], **kwargs)
            self._out_shape = _out_shape(out)
            self._out_dtype = _out_dtype(out)
            return out

    forward._framework_checked = True  # type: ignore[attr-defined]
    return forward


def _check_hand_backward(layer: Layer, ctx: Context) -> None:
    """Refuse a hand-made backward that would differentiate a call whose record is gone.

    A layer called by hand (``layer(x)``, ``layer.forward(x)``) keeps its last
    call's context only. Its first ``backward`` after several calls is the last
    call's; a second one, with no call in between, can only be meant for an
    earlier call (a child used twice in an older-form ``forward``), whose inputs
    were overwritten: it would give a wrong gradient without a word.
    """
    calls = layer.__dict__.pop("_hand_calls", 0)
    if calls:
        ctx.__dict__["_after_other_calls"] = calls > 1
    elif ctx.__dict__.get("_after_other_calls"):
        raise ConfigError(
            f"{layer.describe()}: backward() called by hand twice after several calls made by hand: the "
            "layer keeps only its last call's record, so this backward cannot be the one of an earlier "
            "call (a layer used twice in an older-form forward(x), a cell unrolled by hand). Give each "
            "call its own Context (layer.forward(ctx_t, x)), call the layer in a functional Model, or "
            "write the calling forward in the context form, forward(self, ctx, x), with ctx.child(...) "
            "per use"
        )


def wrap_backward(fn: Callable[..., Any]) -> Callable[..., Any]:
    if takes_ctx(fn):

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
                _check_hand_backward(self, manual)
                ctx = manual
                ctx.grad_out_writable = self.grad_out_writable
                grad_out, rest = args[0], args[1:]
            _check_grad(self, ctx.out_shape, grad_out)
            return fn(self, ctx, as_out_dtype(grad_out, ctx.out_dtype), *rest, **kwargs)

    else:

        @functools.wraps(fn)
        def backward(self: Layer, *args: Any, **kwargs: Any) -> Any:
            if args and isinstance(args[0], Context):
                if type(self)._ctx_style:  # an older-form backward over a context-form forward
                    ctx = args[0]
                    _check_grad(self, ctx.out_shape, args[1])
                    self._manual_ctx = ctx
                    return fn(self, as_out_dtype(args[1], ctx.out_dtype), *args[2:], **kwargs)
                return _adapted_backward(self, fn, args[0], args[1], args[2:], kwargs)
            expected, dtype = self._out_shape, self._out_dtype
            if expected is None and "_manual_ctx" in self.__dict__:
                expected, dtype = self._manual_ctx.out_shape, self._manual_ctx.out_dtype
            _check_grad(self, expected, args[0])
            return fn(self, as_out_dtype(args[0], dtype), *args[1:], **kwargs)

    backward._framework_checked = True  # type: ignore[attr-defined]
    return backward


# -- the adapter for layers written in the older form -------------------------
# ``forward(x)`` / ``backward(grad_out)`` keep one call's state on the layer, so
# the adapter serves them one call at a time: it refuses a second call while one
# runs (from another thread, or from the forward itself), and a backward whose
# forward was not the layer's last one. Building comes first, before the call
# takes the layer: a hand-written ``Model`` builds by running its own forward
# once on a zero batch (``Model.build``), a complete call of its own that ends
# before this one begins.


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
    x = _prepare(layer, x)  # before taking the layer: a Model's build calls this forward (see above)
    if not lock.acquire(blocking=False):
        if layer.__dict__.get("_legacy_owner") == threading.get_ident():
            raise _legacy_error(
                layer,
                "cannot be called again from its own forward (the inner call would overwrite the state "
                "of the call in progress)",
            )
        raise _legacy_error(layer, "cannot be called from two threads at once")
    object.__setattr__(layer, "_legacy_owner", threading.get_ident())
    training = layer.training
    needs = layer.needs_input_grad
    try:
        layer.training = ctx.training
        layer.needs_input_grad = ctx.needs_input_grad
        out = fn(layer, x, *rest, **kwargs)
        layer._out_shape = ctx.out_shape = _out_shape(out)
        layer._out_dtype = ctx.out_dtype = _out_dtype(out)
        token = object()
        layer._legacy_token = token
        ctx._legacy_token = token
        return out
    finally:
        layer.training = training
        layer.needs_input_grad = needs
        object.__setattr__(layer, "_legacy_owner", None)
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
        return fn(layer, as_out_dtype(grad_out, ctx.out_dtype), *rest, **kwargs)
    finally:
        layer.grad_out_writable = False
        layer.needs_input_grad = needs


def takes_context(layer: Layer) -> bool:
    """Whether ``layer``'s ``forward`` is written in the context form (``forward(ctx, x)``)."""
    return bool(getattr(type(layer), "_ctx_style", True))


#: Whether a layer class with an older-form ``forward(x)`` has been defined in this process.
_older_form_defined = False


def note_older_form() -> None:
    """Record that a layer class with an older-form ``forward(x)`` exists (``Layer.__init_subclass__``)."""
    global _older_form_defined
    _older_form_defined = True


def older_form_defined() -> bool:
    """Whether any layer class of this process has an older-form ``forward(x)``; until one does, every
    layer takes its call's context, so no call needs to walk its layers to find one."""
    return _older_form_defined
