"""Input fuzz over every built-in layer of the registry: unusual valid inputs, invalid inputs, bad grad_out.

Each built-in layer (enumerated through the registry, built from ``DEFAULTS`` of
``test_builtins_conformance.py``, so a newly registered layer is covered or fails here) gets:

1. valid but unusual inputs, compared forward and backward (outputs, ``dL/dx``, parameter
   gradients, buffers) with the same values as an ordinary C-contiguous array: Fortran order,
   axes swapped and back, a ``[::2]`` view of a bigger array, negative strides, a zero-stride
   broadcast, read-only arrays (neither forward nor backward may write into ``x`` or
   ``grad_out``); a batch of one against the first sample of a bigger batch; a batch of zero
   (PyTorch's empty output: the right empty shapes, zero parameter gradients, running
   statistics untouched, never NaN; or a documented refusal: BatchNorm in training); integer
   and boolean inputs (the result of the same values as floats, or a FrameworkError naming
   the layer); a float64 input to a float32 layer. The layouts and empty batches are also
   compared with PyTorch's module wherever one matches the layer (``TORCH_TWINS``), and
   BatchNorm's running statistics with PyTorch's over empty, one-sample and NaN batches.
2. invalid inputs: complex, object and string arrays, ``None``, Python scalars and lists,
   a wrong rank or size of any axis: a ``FrameworkError`` naming the layer and the actual
   value, never a bare NumPy/Python exception and never a silent cast (complex to real).
3. a ``grad_out`` of the wrong shape, rank or dtype, through ``layer.backward`` and
   ``model.backward``: a ``FrameworkError``, never a silently broadcast gradient.

Layers take NumPy arrays: a Python list of numbers is refused with a DataError naming the
layer (the conversion happens at the model's edge, ``model(x)``, as DESIGN.md says). Skips are
listed with their reasons (``NO_BATCH_CUT``, ``MIXES_SAMPLES_IN_TRAINING``); the one strict
xfail is a bug outside this area (``model(x)`` casting complex arrays).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import numpy as np
import pytest
from test_builtins_conformance import DEFAULTS

import framework
from framework import Sequential, layers
from framework.errors import DataError, FrameworkError
from framework.registry.manager import BUILTIN_DISTRIBUTION, REGISTRY

TOL = {"rtol": 1e-10, "atol": 1e-12}


def _builtin_layer_names() -> list[str]:
    return sorted(
        (e.name for e in REGISTRY.entries("layers") if e.plugin.distribution == BUILTIN_DISTRIBUTION),
        key=str.lower,
    )


NAMES = _builtin_layer_names()

#: layers whose batch axis cannot be cut (with the reason); every other layer is cut on its batch axis
NO_BATCH_CUT = {
    "GCNConv": "its batch axis is the graph's node axis, fixed to 5 nodes by the adjacency prepare sets",
}

#: layers that refuse an empty batch in training mode, as their docstrings say (PyTorch: empty output)
EMPTY_REFUSED_IN_TRAINING = {
    "BatchNorm": "documented (Raises:): no statistics to normalise an empty batch with",
    "SyncBatchNorm": "a BatchNorm: documented (Raises:), no statistics to normalise an empty batch with",
}


# -- building and running ----------------------------------------------------------------------


def _spec(name: str) -> Any:
    spec = DEFAULTS.get(name)
    if spec is None:
        pytest.fail(f"built-in layer {name!r} has no DEFAULTS entry in test_builtins_conformance.py")
    return spec


def _fresh(name: str, dtype: str = "float64") -> Any:
    spec = _spec(name)
    old = framework.get_default_dtype()
    framework.set_default_dtype(dtype)
    try:
        framework.set_seed(0)
        layer = layers.get(name, **spec.kwargs)
        if spec.prepare is not None:
            spec.prepare(layer)
    finally:
        framework.set_default_dtype(old)
    return layer


def _inputs(name: str, dtype: Any = np.float64) -> Any:
    spec = _spec(name)
    if spec.x is not None:
        return np.array(spec.x)
    rng = np.random.default_rng(7)
    if isinstance(spec.shape, list):
        return [rng.standard_normal(s).astype(dtype) for s in spec.shape]
    return rng.standard_normal(spec.shape).astype(dtype)


def _map(x: Any, f: Any) -> Any:
    """``f`` applied to every array of a (nested) list or tuple, the structure kept."""
    if isinstance(x, (list, tuple)):
        return type(x)(_map(v, f) for v in x)
    return f(x) if isinstance(x, np.ndarray) else x


def _leaves(x: Any) -> list[Any]:
    if isinstance(x, (list, tuple)):
        return [leaf for v in x for leaf in _leaves(v)]
    return [x]


def _grad_like(out: Any, seed: int = 3) -> Any:
    rng = np.random.default_rng(seed)
    return _map(out, lambda o: rng.standard_normal(o.shape).astype(o.dtype if o.dtype.kind == "f" else "f8"))


def _built(name: str, dtype: str = "float64") -> tuple[Any, Any]:
    """A layer built (and its weights drawn) by one forward on the ordinary input, and that input."""
    layer = _fresh(name, dtype)
    x = _inputs(name, np.dtype(dtype))
    old = framework.get_default_dtype()
    framework.set_default_dtype(dtype)  # a layer that infers its input size makes its weights now
    try:
        framework.set_seed(1)
        layer.forward(x)
    finally:
        framework.set_default_dtype(old)
    return layer, x


def _run(layer: Any, x: Any, g: Any = None, *, training: bool = True) -> dict[str, Any]:
    """Forward and backward of a copy of ``layer`` (its state as given): everything they produce."""
    lay = copy.deepcopy(layer)
    lay.train(training)
    framework.set_seed(11)
    out = lay.forward(x)
    if g is None:
        g = _grad_like(out)
    grad_in = lay.backward(g)
    return {
        "out": out,
        "grad_in": grad_in,
        "params": [p.grad.copy() if p.grad is not None else None for p in lay.parameters()],
        "state": {k: np.array(v) for k, v in lay.state_dict().items()},
        "g": g,
    }


def _forward(layer: Any, x: Any, *, training: bool = True) -> Any:
    """The output ``_run`` gives, without the backward pass (for a test that reads only the output)."""
    lay = copy.deepcopy(layer)
    lay.train(training)
    framework.set_seed(11)
    return lay.forward(x)


def _assert_close(a: Any, b: Any, what: str, **tol: Any) -> None:
    la, lb = _leaves(a), _leaves(b)
    assert len(la) == len(lb), f"{what}: {len(la)} arrays against {len(lb)}"
    for i, (u, v) in enumerate(zip(la, lb)):
        if u is None or v is None:
            assert u is None and v is None, f"{what}[{i}]: {u!r} against {v!r}"
            continue
        u, v = np.asarray(u), np.asarray(v)
        assert u.shape == v.shape, f"{what}[{i}]: shape {u.shape} against {v.shape}"
        np.testing.assert_allclose(u, v, err_msg=f"{what}[{i}]", **(tol or TOL))


def _assert_same_run(got: dict[str, Any], ref: dict[str, Any], tol: dict[str, Any] | None = None) -> None:
    tol = tol or TOL
    _assert_close(got["out"], ref["out"], "output", **tol)
    _assert_close(got["grad_in"], ref["grad_in"], "dL/dx", **tol)
    _assert_close(got["params"], ref["params"], "parameter gradients", **tol)
    assert sorted(got["state"]) == sorted(ref["state"])
    for key in ref["state"]:
        _assert_close(got["state"][key], ref["state"][key], f"state {key}", **tol)


def _stochastic(layer: Any, x: Any) -> bool:
    """Whether two training-mode forwards of ``layer`` on ``x`` under different seeds differ (dropout)."""
    outs = []
    for seed in (1, 2):
        framework.set_seed(seed)
        outs.append(_leaves(copy.deepcopy(layer).train().forward(x)))
    return any(not np.array_equal(a, b) for a, b in zip(*outs))


def _batch_axis(layer: Any) -> int:
    return 0 if getattr(layer, "batch_first", True) else 1


def _names_layer(layer: Any, message: str) -> bool:
    return type(layer).__name__ in message


@contextmanager
def _case(failures: list[str], label: str) -> Iterator[None]:
    """One case of a test that loops over several: a failure is recorded under ``label``, the loop goes on."""
    try:
        yield
    except (Exception, pytest.fail.Exception) as exc:
        failures.append(f"{label}: {type(exc).__name__}: {exc}")


def _report(failures: list[str], total: int) -> None:
    assert not failures, f"{len(failures)} of {total} cases failed:\n" + "\n".join(failures)


def _each_layer(check: Any, names: list[str], dtype: str) -> None:
    """``check(name)`` for each of ``names``, each from the state a test starts from (conftest's seed,
    ``dtype`` as the default); every failure is collected under the layer's name, then all reported."""
    failures: list[str] = []
    for name in names:
        framework.set_seed(20261126)
        framework.set_default_dtype(dtype)
        with _case(failures, name):
            check(name)
    framework.set_default_dtype(dtype)
    _report(failures, len(names))


# -- 1. valid but unusual inputs ---------------------------------------------------------------


def _strided_last(a: np.ndarray) -> np.ndarray:
    big = np.zeros((*a.shape[:-1], 2 * a.shape[-1]), a.dtype)
    big[..., ::2] = a
    return big[..., ::2]


def _strided_batch(a: np.ndarray) -> np.ndarray:
    big = np.zeros((2 * a.shape[0], *a.shape[1:]), a.dtype)
    big[::2] = a
    return big[::2]


def _swapped(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.swapaxes(a, -1, -2)).swapaxes(-1, -2) if a.ndim >= 2 else a


def _negative(a: np.ndarray) -> np.ndarray:
    flip = (slice(None, None, -1),) * a.ndim
    return a[flip].copy()[flip]


def _broadcast(a: np.ndarray) -> np.ndarray:
    return np.broadcast_to(a[:1], a.shape)  # zero stride on the batch axis, read-only


def _read_only(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.flags.writeable = False
    return a


LAYOUTS = {
    "fortran": np.asfortranarray,
    "swapped": _swapped,
    "strided_last": _strided_last,
    "strided_batch": _strided_batch,
    "negative": _negative,
    "broadcast": _broadcast,
    "read_only": _read_only,
}


def _check_unusual_layout_gives_the_contiguous_result_and_writes_nothing(name: str) -> None:
    """Forward and backward on a strided / Fortran / read-only view equal those on a C-contiguous copy,
    for every layout of ``LAYOUTS`` (each run on its own copy of the built layer).

    ``grad_out`` is read-only as well, and the bytes of ``x`` and ``grad_out`` are unchanged after.
    """
    layer, x = _built(name)
    plain = _run(layer, _map(x, np.copy))  # the reference of the layouts of x's values (not "broadcast")
    failures: list[str] = []
    for layout in sorted(LAYOUTS):
        with _case(failures, f"layout {layout}"):
            view = _map(x, LAYOUTS[layout])
            before = _map(view, np.array)
            same = all(np.array_equal(v, a) for v, a in zip(_leaves(view), _leaves(x)))
            ref = plain if same else _run(layer, _map(view, np.ascontiguousarray))
            g = _map(ref["g"], _read_only)
            got = _run(layer, view, g)
            _assert_same_run(got, ref)
            for v, b in zip(_leaves(view), _leaves(before)):
                np.testing.assert_array_equal(v, b, err_msg="the layer wrote into its input")
            for v, b in zip(_leaves(g), _leaves(ref["g"])):
                np.testing.assert_array_equal(v, b, err_msg="backward wrote into grad_out")
    _report(failures, len(LAYOUTS))


def test_unusual_layout_gives_the_contiguous_result_and_writes_nothing() -> None:
    """The check above for each layer, in one test (pytest cost more per layer than the check)."""
    _each_layer(_check_unusual_layout_gives_the_contiguous_result_and_writes_nothing, NAMES, "float32")


def _cut(layer: Any, x: Any, n: int) -> Any:
    axis = _batch_axis(layer)
    return _map(x, lambda a: np.take(a, np.arange(n), axis=axis))


def _batch_axis_of(one: np.ndarray, full: np.ndarray) -> int:
    """The axis of an output along which the batch runs: the one whose size differs."""
    axes = [i for i, (s, t) in enumerate(zip(one.shape, full.shape)) if s != t]
    assert one.ndim == full.ndim and len(axes) == 1, f"output {one.shape} against {full.shape}"
    return axes[0]


#: layers whose training-mode output for a sample depends on the other samples of the batch
MIXES_SAMPLES_IN_TRAINING = {
    "BatchNorm": "batch statistics (its batch of one is checked against PyTorch below)",
    "SyncBatchNorm": "batch statistics (its batch of one is checked against PyTorch below)",
}


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", NAMES)
def test_batch_of_one_is_the_first_sample_of_a_batch(name: str, training: bool) -> None:
    """A batch of one gives the first sample's output and gradient of a bigger batch (in training
    mode too, for a layer that does not mix samples and draws no dropout mask)."""
    if name in NO_BATCH_CUT:
        pytest.skip(NO_BATCH_CUT[name])
    layer, x = _built(name)
    if training and name in MIXES_SAMPLES_IN_TRAINING:
        pytest.skip(MIXES_SAMPLES_IN_TRAINING[name])
    if training and _stochastic(layer, x):
        pytest.skip("a dropout mask drawn for another shape is another mask")
    full = _run(layer, x, training=training)
    one_x = _cut(layer, x, 1)
    g = [
        np.take(gf, [0], axis=_batch_axis_of(o1, of))
        for o1, of, gf in zip(
            _leaves(copy.deepcopy(layer).eval().forward(one_x)), _leaves(full["out"]), _leaves(full["g"])
        )
    ]
    g_one = _rebuild(full["g"], g)
    one = _run(layer, one_x, g_one, training=training)
    for o1, of in zip(_leaves(one["out"]), _leaves(full["out"])):
        np.testing.assert_allclose(o1, np.take(of, [0], axis=_batch_axis_of(o1, of)), **TOL)
    for d1, df, xa in zip(_leaves(one["grad_in"]), _leaves(full["grad_in"]), _leaves(one_x)):
        if d1 is None:  # no gradient for indices (Embedding)
            continue
        assert d1.shape == xa.shape
        np.testing.assert_allclose(d1, np.take(df, [0], axis=_batch_axis(layer)), **TOL)


def _rebuild(structure: Any, flat: list[Any]) -> Any:
    """``flat`` arrays put back into the nesting of ``structure``."""
    it = iter(flat)
    return _map(structure, lambda _: next(it))


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", NAMES)
def test_batch_of_zero_gives_empty_outputs_and_zero_gradients(name: str, training: bool) -> None:
    """PyTorch's behaviour on an empty batch: empty outputs of the right shape, ``dL/dx`` empty,
    parameter gradients zero, running statistics unchanged (never NaN); or, where documented
    (``EMPTY_REFUSED_IN_TRAINING``), a FrameworkError naming the layer, the state untouched."""
    if name in NO_BATCH_CUT:
        pytest.skip(NO_BATCH_CUT[name])
    layer, x = _built(name)
    layer.train(training)
    full = _forward(layer, x, training=training)
    one = _forward(layer, _cut(layer, x, 1), training=False)
    empty_x = _cut(layer, x, 0)
    lay = copy.deepcopy(layer)
    state_before = {k: np.array(v) for k, v in lay.state_dict().items()}
    if training and name in EMPTY_REFUSED_IN_TRAINING:
        _refused(lambda: lay.forward(empty_x), lay, str(empty_x.shape))
        for key, value in lay.state_dict().items():
            np.testing.assert_array_equal(value, state_before[key], err_msg=f"state {key} changed")
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # "Mean of empty slice": a NaN in the making
        out = lay.forward(empty_x)
        expected = []
        for o1, of in zip(_leaves(one), _leaves(full)):
            shape = list(of.shape)
            shape[_batch_axis_of(o1, of)] = 0
            expected.append(tuple(shape))
        assert [o.shape for o in _leaves(out)] == expected
        grad_in = lay.backward(_grad_like(out))
    for d, xa in zip(_leaves(grad_in), _leaves(empty_x)):
        assert d is None or d.shape == xa.shape
    for p in lay.parameters():
        assert p.grad is None or not p.grad.any(), f"{p} has a non-zero gradient from an empty batch"
    for key, value in lay.state_dict().items():
        assert np.all(np.isfinite(value)), f"state {key} is {value} after an empty batch"
        np.testing.assert_array_equal(value, state_before[key], err_msg=f"state {key} changed")


def _as_kind(kind: str) -> Any:
    def cast(a: np.ndarray) -> np.ndarray:
        if a.dtype.kind in "iu":  # indices (Embedding): kept in range
            return a.astype(kind)
        if kind == "bool":
            return a > 0
        return np.round(np.abs(a) * 2 if kind == "uint8" else a * 2).astype(kind)

    return cast


INTEGER_KINDS = ["int64", "int32", "uint8", "bool"]


def _check_integer_kind(layer: Any, x: Any, kind: str) -> None:
    xi = _map(x, _as_kind(kind))
    ref = _run(layer, _map(xi, lambda a: a.astype(np.float64)))
    try:
        got = _run(layer, xi, ref["g"])
    except FrameworkError as exc:
        assert _names_layer(layer, str(exc)) and kind in str(exc), str(exc)
        return
    _assert_same_run(got, ref)
    for o in _leaves(got["out"]):
        assert o.dtype == np.float64 or o.dtype.kind in "biu", f"output dtype {o.dtype} for {kind} input"


def _check_integer_and_boolean_inputs_give_the_float_result_or_a_clear_error(name: str) -> None:
    """An integer (or boolean) input computes what the same values as floats compute, or is refused;
    each kind of ``INTEGER_KINDS`` on its own copy of the built layer.

    ``True + True`` must not be ``True`` (Add), an average of integers must not be truncated
    (AvgPool), ``bool - bool`` must not be NumPy's TypeError.
    """
    layer, x = _built(name)
    failures: list[str] = []
    for kind in INTEGER_KINDS:
        with _case(failures, f"{kind} input"):
            _check_integer_kind(layer, x, kind)
    _report(failures, len(INTEGER_KINDS))


def test_integer_and_boolean_inputs_give_the_float_result_or_a_clear_error(float64: None) -> None:
    """The check above for each layer, in one test (pytest cost more per layer than the check)."""
    _each_layer(_check_integer_and_boolean_inputs_give_the_float_result_or_a_clear_error, NAMES, "float64")


def _check_integer_input_to_a_float32_layer_computes_in_float32(name: str) -> None:
    """A float32 layer given int64 data computes in float32 (int64 with float32 is float64 in NumPy),
    or refuses it with a FrameworkError naming the layer."""
    layer, x = _built(name, "float32")
    xi = _map(x, _as_kind("int64"))
    ref = _run(layer, _map(xi, lambda a: a.astype(np.float32)))
    try:
        got = _run(layer, xi, ref["g"])
    except FrameworkError as exc:  # refused, as ScaledDotProductAttention does (PyTorch's sdpa too)
        assert _names_layer(layer, str(exc)) and "int64" in str(exc), str(exc)
        return
    _assert_same_run(got, ref, {"rtol": 1e-5, "atol": 1e-5})
    for o in _leaves(got["out"]) + [d for d in _leaves(got["grad_in"]) if d is not None]:
        assert o.dtype == np.float32 or o.dtype.kind in "iu", f"{o.dtype} from a float32 layer"
    for p in got["params"]:
        assert p is None or p.dtype == np.float32


def test_integer_input_to_a_float32_layer_computes_in_float32() -> None:
    """The check above for each layer, in one test (pytest cost more per layer than the check)."""
    _each_layer(_check_integer_input_to_a_float32_layer_computes_in_float32, NAMES, "float32")


def _check_float64_input_to_a_float32_layer_keeps_the_layer_float32(name: str) -> None:
    """A layer casts nothing but integers (the model casts at its edge, DESIGN.md): float64 data
    may give a float64 output (NumPy's promotion) but the same values as the float32 call, and
    the parameters, their gradients and the running statistics stay float32."""
    layer, x = _built(name, "float32")
    training = not _stochastic(layer, x)  # a dropout mask drawn in another dtype is another mask
    ref = _run(layer, x, training=training)
    x64 = _map(x, lambda a: a.astype(np.float64) if a.dtype.kind == "f" else a)
    got = _run(layer, x64, ref["g"], training=training)
    _assert_same_run(got, ref, {"rtol": 2e-4, "atol": 2e-5})
    assert all(p is None or p.dtype == np.float32 for p in got["params"])
    assert all(v.dtype == np.float32 for v in got["state"].values() if v.dtype.kind == "f")


def test_float64_input_to_a_float32_layer_keeps_the_layer_float32() -> None:
    """The check above for each layer, in one test (pytest cost more per layer than the check)."""
    _each_layer(_check_float64_input_to_a_float32_layer_keeps_the_layer_float32, NAMES, "float32")


# -- 2. invalid inputs -------------------------------------------------------------------------

BAD_DTYPES = {
    "complex": lambda a: a.astype(np.complex128) + 1j,
    "object": lambda a: a.astype(object),
    "string": lambda a: a.astype(str),
    "bytes": lambda a: a.astype("S8"),
    "datetime": lambda a: a.astype(np.int64).astype("datetime64[s]"),
}


def _refused(call: Any, layer: Any, *needles: str) -> FrameworkError:
    """``call()`` raises a FrameworkError naming the layer and every needle (never another exception)."""
    with pytest.raises(FrameworkError) as err:
        call()
    text = str(err.value)
    assert _names_layer(layer, text), f"the message does not name {type(layer).__name__}: {text}"
    for needle in needles:
        assert needle in text, f"{needle!r} not in: {text}"
    return err.value


def _check_complex_object_and_string_arrays_are_refused(name: str) -> None:
    """A DataError naming the layer and the dtype: never a silent cast (complex to real, '1.5' to 1.5);
    each dtype of ``BAD_DTYPES`` on a fresh layer and on a built one (a new copy for every call)."""
    failures: list[str] = []
    x = _inputs(name)
    for state in ("fresh", "built"):
        template = _built(name)[0] if state == "built" else None
        for bad in sorted(BAD_DTYPES):
            with _case(failures, f"{state}, {bad} array"):
                layer = _fresh(name) if template is None else copy.deepcopy(template)
                xb = _map(x, BAD_DTYPES[bad])
                with warnings.catch_warnings():
                    warnings.simplefilter("error")  # a ComplexWarning is a silent cast
                    err = _refused(partial(layer.forward, xb), layer, str(_leaves(xb)[0].dtype))
                assert isinstance(err, DataError)
    _report(failures, 2 * len(BAD_DTYPES))


def test_complex_object_and_string_arrays_are_refused() -> None:
    """The check above for each layer, in one test (pytest cost more per layer than the check)."""
    _each_layer(_check_complex_object_and_string_arrays_are_refused, NAMES, "float32")


NOT_ARRAYS = {
    "None": None,
    "float": 1.5,
    "int": 3,
    "str": "x",
    "list": [[0.5, 1.0, -2.0], [1.0, 2.0, 3.0]],
    "list_of_lists": [[[0.5, 1.0], [1.0, 2.0]], [[1.0, 2.0], [3.0, 4.0]]],
}


def _check_none_python_scalars_and_lists_are_refused(name: str) -> None:
    """A layer takes NumPy arrays; anything else is a FrameworkError naming the layer and the type;
    each value of ``NOT_ARRAYS`` on a fresh layer and on a built one (a new copy for every call)."""
    failures: list[str] = []
    for state in ("fresh", "built"):
        template = _built(name)[0] if state == "built" else None
        for value in sorted(NOT_ARRAYS):
            with _case(failures, f"{state}, {value}"):
                layer = _fresh(name) if template is None else copy.deepcopy(template)
                x = NOT_ARRAYS[value]
                _refused(partial(layer.forward, x), layer, type(x).__name__)
    _report(failures, 2 * len(NOT_ARRAYS))


def test_none_python_scalars_and_lists_are_refused() -> None:
    """The check above for each layer, in one test (pytest cost more per layer than the check)."""
    _each_layer(_check_none_python_scalars_and_lists_are_refused, NAMES, "float32")


def _grown(a: np.ndarray, axis: int) -> np.ndarray:
    pad = [(0, 0)] * a.ndim
    pad[axis] = (0, 1)
    return np.pad(a, pad)


def _misshapen(x: Any) -> dict[str, Any]:
    """Each array of ``x`` (one at a time) with an axis more, its first axis gone, or an axis longer."""
    arrays = _leaves(x)
    variants: dict[str, Any] = {}
    for k, a in enumerate(arrays):
        if a is None:
            continue
        changes = {"rank+1": a[None], "rank-1": a[0] if a.ndim else a}
        changes.update({f"axis{i}+1": _grown(a, i) for i in range(1, a.ndim)})
        for label, b in changes.items():
            flat = list(arrays)
            flat[k] = b
            variants[f"input{k}-{label}"] = _rebuild(x, flat)
    return variants


def _check_wrong_rank_or_size_is_a_clear_error_or_a_consistent_result(name: str) -> None:
    """Any axis longer, a rank more or less: a FrameworkError naming the layer, or (a size the layer
    takes: a longer sequence, a bigger image) ``dL/dx`` of x's shape; on a copy of the built layer and
    on a fresh layer's build."""
    layer, x = _built(name)
    bare = []
    for built in (True, False):
        for label, xb in _misshapen(x).items():
            label = f"{'built' if built else 'fresh'}, {label}"
            lay = copy.deepcopy(layer) if built else _fresh(name)
            try:
                out = lay.forward(xb)
                grad_in = lay.backward(_grad_like(out))
            except FrameworkError as exc:
                if not _names_layer(layer, str(exc)):
                    bare.append(f"{label}: {type(exc).__name__} not naming the layer: {exc}")
                continue
            except Exception as exc:
                bare.append(f"{label}: bare {type(exc).__name__}: {exc}")
                continue
            for d, a in zip(_leaves(grad_in), _leaves(xb)):
                if d is not None and d.shape != a.shape:
                    bare.append(f"{label}: dL/dx of shape {d.shape} for an input of shape {a.shape}")
    assert bare == [], "\n".join(bare)


def test_wrong_rank_or_size_is_a_clear_error_or_a_consistent_result() -> None:
    """The check above for each layer, in one test (pytest cost more per layer than the check)."""
    _each_layer(_check_wrong_rank_or_size_is_a_clear_error_or_a_consistent_result, NAMES, "float32")


# -- 3. grad_out of the wrong shape, rank or dtype ---------------------------------------------

BAD_GRADS = {
    "rank+1": lambda g: g[None],
    "rank-1": lambda g: g[0],
    "batch+1": lambda g: _grown(g, 0),
    "last+1": lambda g: _grown(g, g.ndim - 1),
    "broadcastable": lambda g: g[..., :1],
    "complex": lambda g: g.astype(np.complex128) + 1j,
    "object": lambda g: g.astype(object),
    "string": lambda g: g.astype(str),
    "list": lambda g: g.tolist(),
    "scalar": lambda g: 1.0,
    "None": lambda g: None,
}


def _bad_grads(out: Any) -> dict[str, Any]:
    """For each array of the output (one at a time), ``grad_out`` with that array replaced by a bad one."""
    flat = _leaves(_grad_like(out))
    variants = {}
    for k, g in enumerate(flat):
        for label, f in BAD_GRADS.items():
            if (label == "broadcastable" and g.shape[-1] == 1) or (
                label in ("None", "list") and len(flat) > 1
            ):
                continue  # of several outputs: None is no gradient (PyTorch's autograd), a list is converted
            bad = list(flat)
            bad[k] = f(g)
            variants[f"output{k}-{label}"] = _rebuild(out, bad)
    if isinstance(out, (list, tuple)):  # several outputs: one gradient too few, one too many
        g = _grad_like(out)
        variants["one-gradient-missing"] = type(g)(g[:-1])
        variants["one-gradient-extra"] = type(g)((*g, g[0]))
    return variants


def _check_bad_grad_out_is_refused_by_layer_backward(name: str) -> None:
    """``layer.backward(g)`` with a ``g`` of another shape, rank or a non-real dtype: a FrameworkError
    naming the layer, never a silently broadcast gradient nor a complex gradient cast to real."""
    layer, x = _built(name)
    out = copy.deepcopy(layer).forward(x)
    problems = []
    for label, g in _bad_grads(out).items():
        lay = copy.deepcopy(layer)
        lay.forward(x)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                lay.backward(g)
        except FrameworkError as exc:
            if not _names_layer(layer, str(exc)):
                problems.append(f"{label}: {type(exc).__name__} not naming the layer: {exc}")
            continue
        except Exception as exc:
            problems.append(f"{label}: bare {type(exc).__name__}: {exc}")
            continue
        problems.append(f"{label}: accepted")
    assert problems == [], "\n".join(problems)


def test_bad_grad_out_is_refused_by_layer_backward() -> None:
    """The check above for each layer, in one test (pytest cost more per layer than the check)."""
    _each_layer(_check_bad_grad_out_is_refused_by_layer_backward, NAMES, "float32")


def _single_array_io(name: str) -> bool:
    spec = _spec(name)
    return not isinstance(spec.shape, list) and name not in ("LSTM", "GRU", "RNN", "LSTMCell")


def _check_bad_grad_out_is_refused_by_model_backward(name: str) -> None:
    """The same through a model: ``Sequential([layer]).backward(g)`` after ``forward``."""
    layer, x = _built(name)
    problems = []
    for label, g in _bad_grads(copy.deepcopy(layer).forward(x)).items():
        model = Sequential([copy.deepcopy(layer)])
        model.forward(x)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                model.backward(g)
        except FrameworkError:
            continue
        except Exception as exc:
            problems.append(f"{label}: bare {type(exc).__name__}: {exc}")
            continue
        problems.append(f"{label}: accepted")
    assert problems == [], "\n".join(problems)


def test_bad_grad_out_is_refused_by_model_backward() -> None:
    """The check above for each layer, in one test (pytest cost more per layer than the check)."""
    _each_layer(
        _check_bad_grad_out_is_refused_by_model_backward, [n for n in NAMES if _single_array_io(n)], "float32"
    )


@pytest.mark.parametrize("bad", ["complex", "object", "string"])
@pytest.mark.parametrize("call", ["forward", "predict"])
def test_a_model_refuses_non_real_arrays(call: str, bad: str) -> None:
    """``model.forward(x)`` and ``predict`` refuse a complex, object or string array (never a silent cast)."""
    model = Sequential([layers.get("Linear", input_size=3, output_size=2)])
    x = BAD_DTYPES[bad](np.ones((4, 3)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError, match=str(x.dtype)):
            getattr(model, call)(x)


@pytest.mark.parametrize("bad", ["complex", "object", "string"])
def test_calling_a_model_refuses_non_real_arrays(bad: str) -> None:
    model = Sequential([layers.get("Linear", input_size=3, output_size=2)])
    x = BAD_DTYPES[bad](np.ones((4, 3)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError, match=str(x.dtype)):
            model(x)


# -- unusual layouts and empty batches against PyTorch ----------------------------------------

try:
    import torch
except ImportError:  # the [parity] extra; the tests below skip without it, the ones above still run
    torch = None
requires_torch = pytest.mark.skipif(torch is None, reason="the [parity] extra (torch) is not installed")
nn = torch.nn if torch is not None else None

#: a PyTorch module equal to each built-in layer built from DEFAULTS (weights loaded by state_dict names)
TORCH_TWINS = {
    "AdaptiveAvgPool1d": lambda: nn.AdaptiveAvgPool1d(3),
    "AdaptiveAvgPool2d": lambda: nn.AdaptiveAvgPool2d((3, 2)),
    "AdaptiveMaxPool2d": lambda: nn.AdaptiveMaxPool2d((3, 2)),
    "AvgPool1d": lambda: nn.AvgPool1d(2),
    "AvgPool2d": lambda: nn.AvgPool2d(2),
    "BatchNorm": lambda: nn.BatchNorm1d(3),
    "Conv1d": lambda: nn.Conv1d(2, 3, 3),
    "Conv2d": lambda: nn.Conv2d(2, 3, 3),
    "ConvTranspose2d": lambda: nn.ConvTranspose2d(2, 3, 3),
    "ELU": lambda: nn.ELU(),
    "Embedding": lambda: nn.Embedding(10, 4),
    "Flatten": lambda: nn.Flatten(),
    "GELU": lambda: nn.GELU(),
    "GroupNorm": lambda: nn.GroupNorm(2, 4),
    "Identity": lambda: nn.Identity(),
    "InstanceNorm1d": lambda: nn.InstanceNorm1d(3),
    "InstanceNorm2d": lambda: nn.InstanceNorm2d(3),
    "LayerNorm": lambda: nn.LayerNorm(5),
    "LeakyReLU": lambda: nn.LeakyReLU(),
    "Linear": lambda: nn.Linear(5, 4),
    "LogSoftmax": lambda: nn.LogSoftmax(dim=-1),
    "MaxPool1d": lambda: nn.MaxPool1d(2),
    "MaxPool2d": lambda: nn.MaxPool2d(2),
    "ReLU": lambda: nn.ReLU(),
    "RMSNorm": lambda: nn.RMSNorm(5),
    "Sigmoid": lambda: nn.Sigmoid(),
    "SiLU": lambda: nn.SiLU(),
    "Softmax": lambda: nn.Softmax(dim=-1),
    "Softplus": lambda: nn.Softplus(),
    "Tanh": lambda: nn.Tanh(),
    "UpSampling2d": lambda: nn.Upsample(scale_factor=2),
    "ZeroPadding2d": lambda: nn.ZeroPad2d(1),
}


def _torch_twin(name: str, layer: Any) -> Any:
    module = TORCH_TWINS[name]().double()
    state = {k: torch.from_numpy(np.array(v, dtype=np.float64)) for k, v in layer.state_dict().items()}
    missing, unexpected = module.load_state_dict(state, strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing), (missing, unexpected)
    return module


TORCH_LAYOUTS = ["fortran", "negative", "strided_last", "broadcast", "read_only", "empty"]


def _check_against_torch(name: str, layer: Any, x: np.ndarray, layout: str) -> None:
    view = x[:0] if layout == "empty" else LAYOUTS[layout](x)
    module = _torch_twin(name, layer)
    if layout == "empty" and name == "BatchNorm":
        module.eval(), layer.eval()  # training on an empty batch is refused, as documented
    got = _run(layer, view, training=module.training)
    t = torch.from_numpy(np.array(view)).requires_grad_(view.dtype.kind == "f")
    ref = module(t)
    np.testing.assert_allclose(got["out"], ref.detach().numpy(), **TOL)
    if view.dtype.kind != "f":
        return
    ref.backward(torch.from_numpy(got["g"]))
    np.testing.assert_allclose(got["grad_in"], t.grad.numpy(), **TOL)
    by_name = dict(module.named_parameters())
    for (key, _), grad in zip(layer.named_parameters(), got["params"]):
        expected = by_name[key].grad
        np.testing.assert_allclose(grad, np.zeros_like(grad) if expected is None else expected.numpy(), **TOL)


@requires_torch
@pytest.mark.parametrize("name", sorted(TORCH_TWINS))
def test_unusual_inputs_match_torch(name: str) -> None:
    """Forward, ``dL/dx`` and parameter gradients on each unusual input of ``TORCH_LAYOUTS`` against
    PyTorch's module (a copy of the built layer and a new twin for each)."""
    built, x = _built(name)
    failures: list[str] = []
    for layout in TORCH_LAYOUTS:
        with _case(failures, f"layout {layout}"):
            _check_against_torch(name, copy.deepcopy(built), x, layout)
    _report(failures, len(TORCH_LAYOUTS))


# -- BatchNorm's running statistics against PyTorch's ------------------------------------------


def _torch_bn(layer: Any) -> Any:
    bn = torch.nn.BatchNorm1d(layer.num_features, eps=layer.eps, momentum=layer.momentum).double()
    with torch.no_grad():
        bn.weight.copy_(torch.from_numpy(layer.weight.data))
        bn.bias.copy_(torch.from_numpy(layer.bias.data))
    return bn


def _same_stats(layer: Any, bn: Any) -> None:
    np.testing.assert_allclose(layer.running_mean.data, bn.running_mean.numpy(), **TOL)
    np.testing.assert_allclose(layer.running_var.data, bn.running_var.numpy(), **TOL)
    assert layer.num_batches_tracked == int(bn.num_batches_tracked)


@requires_torch
@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("name", ["BatchNorm", "SyncBatchNorm"])
def test_batchnorm_empty_batches_between_batches_follow_torch(name: str, momentum: Any, float64) -> None:
    """Batches and empty batches in turn: in training an empty batch is refused (documented; PyTorch
    returns an empty output) and changes no estimate nor count, so with momentum=None the next
    batch's weight is the one PyTorch gives after the same batches without the empty one; in eval
    mode an empty batch gives PyTorch's empty output and gradient."""
    layer = layers.get(name, num_features=3, momentum=momentum)
    bn = _torch_bn(layer)
    rng = np.random.default_rng(5)
    for x in (
        rng.standard_normal((4, 3)),
        np.zeros((0, 3)),
        rng.standard_normal((5, 3, 2)),
        np.zeros((0, 3, 2)),
    ):
        for training in (True, False):
            layer.train(training)
            bn.train(training)
            if training and x.shape[0] == 0:
                _refused(lambda x=x: layer.forward(x), layer, str(x.shape))
                _same_stats(layer, bn)
                continue
            out = layer.forward(x)
            t = torch.from_numpy(x).requires_grad_(True)
            ref = bn(t)
            np.testing.assert_allclose(out, ref.detach().numpy(), **TOL)
            g = rng.standard_normal(x.shape)
            grad = layer.backward(g)
            ref.backward(torch.from_numpy(g))
            np.testing.assert_allclose(grad, t.grad.numpy(), **TOL)
            _same_stats(layer, bn)
    np.testing.assert_allclose(layer.weight.grad, bn.weight.grad.numpy(), **TOL)


@requires_torch
@pytest.mark.parametrize("name", ["BatchNorm", "SyncBatchNorm"])
def test_batchnorm_batch_of_one_in_training_follows_torch(name: str, float64) -> None:
    """One value per channel: PyTorch raises, so do we (a FrameworkError naming the layer), and the
    running estimates are not touched; one sample with positions, (1, C, L), trains as PyTorch."""
    layer = layers.get(name, num_features=3)
    bn = _torch_bn(layer)
    x = np.random.default_rng(6).standard_normal((1, 3))
    with pytest.raises(ValueError):
        bn(torch.from_numpy(x))
    _refused(lambda: layer.forward(x), layer, "(1, 3)")
    assert layer.num_batches_tracked == 0  # (PyTorch counts the batch it refuses: a quirk not copied)
    bn.num_batches_tracked.zero_()
    _same_stats(layer, bn)
    x = np.random.default_rng(7).standard_normal((1, 3, 4))
    np.testing.assert_allclose(layer.forward(x), bn(torch.from_numpy(x)).detach().numpy(), **TOL)
    _same_stats(layer, bn)


@requires_torch
def test_batchnorm_nan_reaches_the_running_statistics_as_in_torch(float64) -> None:
    """A NaN in one channel's values makes that channel's running estimates NaN in PyTorch too:
    NumPy semantics, not a bug; the other channels stay exact."""
    layer = layers.get("BatchNorm", num_features=3)
    bn = _torch_bn(layer)
    x = np.random.default_rng(8).standard_normal((4, 3))
    x[1, 0] = np.nan
    np.testing.assert_allclose(layer.forward(x), bn(torch.from_numpy(x)).detach().numpy(), **TOL)
    assert np.isnan(layer.running_mean.data[0]) and np.isnan(bn.running_mean[0].item())
    _same_stats(layer, bn)
