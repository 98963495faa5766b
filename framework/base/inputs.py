"""What a layer's ``forward`` and ``backward`` accept: the checks the base class runs on every call.

:func:`check_inputs` refuses what no layer can compute on (complex, object and
string arrays, ``None``, Python numbers and lists of numbers) with a
:class:`~framework.errors.DataError` naming the layer, what it takes and what it
got, and casts an integer or boolean array for a layer declaring ``float_input``;
:func:`check_grad_values` refuses a ``grad_out`` of such a dtype (which a cast to
the output's dtype would silently make real, or parse from strings).
Each check is O(1) per array (its type and dtype), never a pass over the data:
it runs on every call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from framework.errors import DataError
from framework.runtime.dtype import get_default_dtype

if TYPE_CHECKING:
    from framework.base.layer import Layer

__all__ = ["check_grad_values", "check_inputs", "check_real", "shape_of", "takes_uncast"]

#: dtype kinds a layer never takes: complex, object, strings, void, datetimes (``np.dtype.kind``)
_REFUSED_KINDS = {"c": "complex", "O": "object", "U": "string", "S": "bytes", "V": "void", "M": "datetime"}
_REFUSED_KINDS["m"] = "timedelta"


def _refuse_dtype(layer: Layer, a: Any, where: str) -> DataError:
    kind = _REFUSED_KINDS.get(a.dtype.kind, a.dtype.kind)
    if layer.accepts_integer_input:  # indices (an embedding)
        return DataError(
            f"{layer.describe()}: expected {where}an integer array (indices), got dtype {a.dtype} ({kind}); "
            "convert it first, e.g. x.astype(np.int64)"
        )
    return DataError(
        f"{layer.describe()}: expected {where}a real numeric array (floating point, integer or bool), "
        f"got dtype {a.dtype} ({kind}); convert it first, e.g. x.astype(np.float32)"
    )


def check_real(layer: Layer, a: np.ndarray) -> None:
    """Refuse an array ``layer`` cannot take (complex, object, strings, ...): a DataError naming it."""
    if a.dtype.kind in _REFUSED_KINDS:
        raise _refuse_dtype(layer, a, "")


def _checked_array(layer: Layer, a: Any, where: str = "") -> Any:
    """``a`` itself, or cast to the default float dtype for a ``float_input`` layer; refused dtypes raise."""
    kind = a.dtype.kind
    if kind in "biu":
        if layer.float_input:
            return a.astype(get_default_dtype())
        return a
    if kind in _REFUSED_KINDS:
        raise _refuse_dtype(layer, a, where)
    return a


def _python_value(v: Any) -> bool:
    """Whether ``v`` is a Python number or string, or a list or tuple starting with one (O(depth))."""
    while isinstance(v, (list, tuple)) and v:
        v = v[0]
    return isinstance(v, (bool, int, float, complex, str, bytes))


def check_inputs(layer: Layer, x: Any) -> Any:
    """``x`` checked for ``layer``'s forward: O(1) per array (its type and dtype), never a pass over the data.

    A float array passes as it is. An array of complex, object, string, bytes or
    datetime dtype is refused; an integer or boolean one is cast to the default
    float dtype for a layer declaring ``float_input`` (else left as it is). Each
    array of a list or tuple (several inputs, a state tuple) is checked alike.
    ``None``, a Python number or string, and a Python list of numbers are refused:
    a layer takes NumPy arrays (``model(x)`` converts lists at the model's edge,
    and a model, which has ``cast_inputs``, takes them in ``forward`` too).

    Raises:
        DataError: naming the layer, what it takes and what it got.
    """
    if type(x) is np.ndarray:  # the hot path: one dtype test
        return x if x.dtype.kind == "f" else _checked_array(layer, x)
    if isinstance(x, (list, tuple)):
        for v in x:  # the hot path of several inputs: float arrays
            if type(v) is not np.ndarray or v.dtype.kind != "f":
                return _check_sequence(layer, x)
        return x
    if x is None or isinstance(x, (bool, int, float, complex, str, bytes)):
        raise DataError(f"{layer.describe()}: expected a NumPy array, got {type(x).__name__} {x!r:.40}")
    dtype = getattr(x, "dtype", None)
    if isinstance(dtype, np.dtype) and dtype.kind in _REFUSED_KINDS:  # a NumPy scalar, an array-like
        raise _refuse_dtype(layer, x, "")
    return x


def _check_sequence(layer: Layer, x: list[Any] | tuple[Any, ...]) -> Any:
    """:func:`check_inputs` of a list or tuple: each array checked, nested tuples (states) too."""
    if _python_value(x) and not hasattr(layer, "cast_inputs"):
        raise DataError(
            f"{layer.describe()}: expected a NumPy array (or a list of arrays), got a Python "
            f"{type(x).__name__} of values; convert it first, e.g. np.asarray(x, dtype=np.float32)"
        )
    items = [
        _checked_array(layer, v, f"input {i} to be ")
        if isinstance(v, np.ndarray)
        else (_check_sequence(layer, v) if isinstance(v, (list, tuple)) and v else v)
        for i, v in enumerate(x)
    ]
    return type(x)(items) if any(u is not v for u, v in zip(items, x)) else x


def shape_of(layer: Layer, x: Any) -> Any:
    """The shape ``build`` receives for input ``x``: its shape with the batch axis ``None``
    (a list of them for a list of arrays); a DataError naming ``layer`` for anything else."""
    if isinstance(x, np.ndarray):
        return (None, *x.shape[1:])
    if isinstance(x, (list, tuple)) and x and all(isinstance(v, np.ndarray) for v in x):
        return [(None, *v.shape[1:]) for v in x]
    shape = getattr(x, "shape", None)
    if shape is not None:
        return (None, *tuple(shape)[1:])
    raise DataError(
        f"{layer.describe()}: expected a NumPy array (or a list of arrays), got {type(x).__name__}"
    )


def check_grad_values(layer: Layer, grad_out: Any) -> None:
    """Refuse a ``grad_out`` array (each array of a tuple of them) of a non-real dtype.

    ``None`` in a tuple is no gradient for that output, as PyTorch's autograd reads it.

    Raises:
        DataError: naming the layer, what backward takes and what it got.
    """
    if isinstance(grad_out, (list, tuple)):  # the gradients of several outputs: the layer checks shapes
        for g in grad_out:
            if not _python_value(g):  # (a list of numbers is the layer's to refuse or convert)
                check_grad_values(layer, g)
        return
    dtype = getattr(grad_out, "dtype", None)
    if isinstance(dtype, np.dtype) and dtype.kind in _REFUSED_KINDS:
        raise DataError(
            f"{layer.describe()}: backward() expected a real gradient (floating point), got dtype {dtype} "
            f"({_REFUSED_KINDS[dtype.kind]}); the gradient of a real output is real"
        )


def takes_uncast(model: Any, ctx: Any, x: Any) -> bool:
    """Whether ``model``, called nested in another model (``ctx.nested``), takes floating ``x`` uncast.

    A model without parameters has no dtype of its own: its inputs were cast by the enclosing
    model, and casting them again to the default dtype of the moment would round a float64 model's
    activations to float32 half-way through.
    """
    if not ctx.nested or next(model.named_parameters(), None) is not None:
        return False
    leaves = x if isinstance(x, (list, tuple)) else [x]
    return all(isinstance(a, np.ndarray) and a.dtype.kind == "f" for a in leaves)
