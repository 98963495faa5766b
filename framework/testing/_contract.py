"""The layer kit's checks of the usage contract (docs/plugins.md), found by running the layer.

- :func:`arrays_problems`: forward leaves its input alone, backward leaves
  ``grad_out`` (not writable when called by hand) and the input alone, and a
  layer declaring ``returns_fresh_grad`` returns an array it does not keep;
- :func:`context_problem`: per-call state lives on ``ctx``, so two calls in
  flight (a shared layer, two threads) each get their own gradients, and
  ``ctx.training``, not the layer's flag, decides the mode of a call;
- :func:`undiscovered`: every ``Parameter`` and ``Buffer`` the layer holds is
  found by ``parameters()`` / ``buffers()`` (the optimizer and checkpoints
  see nothing else);
- :func:`call_differences`: what a layer rebuilt from its config does
  differently from the original in training mode;
- :func:`precision_problems`: a float32 layer computes what the same layer in
  float64 computes, to float32 precision.
"""

from __future__ import annotations

import copy
import types
from collections.abc import Iterator
from typing import Any

import numpy as np

from framework.base.calling import CALL_STATE, takes_context
from framework.base.context import Context
from framework.base.layer import Layer
from framework.base.parameter import Buffer, Parameter
from framework.errors import ConfigError
from framework.testing import _structure as st
from framework.testing._common import backward_by_hand, forward_by_hand, named_modules
from framework.testing.gradients import relative_error

__all__ = [
    "Call",
    "run_call",
    "arrays_problems",
    "context_problem",
    "undiscovered",
    "call_differences",
    "precision_problems",
]


class Call:
    """One forward and backward: the output, the input gradient(s), parameter gradients and state after."""

    def __init__(self, out: Any, grad_in: Any, grads: dict[str, np.ndarray], state: dict[str, np.ndarray]):
        self.out, self.grad_in, self.grads, self.state = out, grad_in, grads, state

    def arrays(self) -> dict[str, Any]:
        """Every array of the call by a readable name."""
        found = {f"output {i}": o for i, o in enumerate(st.leaves(self.out))}
        if self.grad_in is not None:
            found.update({f"input gradient {i}": g for i, g in enumerate(st.leaves(self.grad_in))})
        found.update({f"gradient of {k}": v for k, v in self.grads.items()})
        found.update({f"state {k} after the call": v for k, v in self.state.items()})
        return found


def run_call(layer: Layer, x: Any, grad_out: Any, ctx: Context | None = None) -> Call:
    """``forward`` then ``backward`` on copies of ``x`` and ``grad_out`` (by hand when ``ctx`` is None)."""
    xin, gin = st.map_leaves(np.copy, x), st.map_leaves(np.copy, grad_out)
    out = forward_by_hand(layer, xin) if ctx is None else layer.forward(ctx, xin)
    layer.zero_grad()
    grad_in = backward_by_hand(layer, gin) if ctx is None else layer.backward(ctx, gin)
    grads = {name: p.grad.copy() for name, p in layer.named_parameters()}
    state = {name: np.array(v, copy=True) for name, v in layer.state_dict().items()}
    return Call(
        st.map_leaves(np.copy, out),
        None if grad_in is None else st.map_leaves(np.copy, grad_in),
        grads,
        state,
    )


def _differs(a: Any, b: Any) -> float:
    """Largest absolute difference between two arrays of one structure (inf on a shape mismatch)."""
    if st.is_nested(a) or st.is_nested(b):
        if not (st.is_nested(a) and st.is_nested(b) and len(st.leaves(a)) == len(st.leaves(b))):
            return float("inf")
    elif np.shape(a) != np.shape(b):
        return float("inf")
    if any(np.shape(u) != np.shape(v) for u, v in zip(st.leaves(a), st.leaves(b))):
        return float("inf")
    return st.max_diff(a, b)


def _compare_calls(a: Call, b: Call, atol: float = 1e-10) -> list[str]:
    """The arrays of two calls that differ by more than ``atol`` (relative to their scale)."""
    left, right = a.arrays(), b.arrays()
    problems = []
    for key in sorted(set(left) | set(right)):
        if key not in left or key not in right:
            problems.append(f"{key} only on one side")
            continue
        scale = max(1.0, float(np.max(np.abs(np.asarray(left[key], dtype=np.float64)), initial=0.0)))
        diff = _differs(left[key], right[key])
        if not diff <= atol * scale:
            problems.append(f"{key} (max |diff| {diff:.3e})")
    return problems


def _changed(before: Any, after: Any) -> list[str]:
    """Which leaves of ``after`` differ from the saved copies ``before``."""
    several = st.is_nested(before)
    out = []
    for i, (u, v) in enumerate(zip(st.leaves(before), st.leaves(after))):
        if not np.array_equal(u, v, equal_nan=True):
            diff = _differs(u, v) if np.issubdtype(np.asarray(u).dtype, np.number) else float("nan")
            out.append(f"{'input' if not several else f'input {i}'} (max |change| {diff:.3e})")
    return out


def _held_arrays(obj: Any, label: str, depth: int = 0) -> Iterator[tuple[str, np.ndarray]]:
    """Arrays reachable from ``obj`` (a context, layer state, containers), with where they are."""
    if depth > 4:
        return
    if isinstance(obj, np.ndarray):
        yield label, obj
    elif isinstance(obj, (Parameter,)):
        yield f"{label}.data", obj.data
        yield f"{label}.grad", obj.grad
    elif isinstance(obj, Buffer):
        yield f"{label}.data", obj.data
    elif isinstance(obj, Context):
        for key, value in vars(obj).items():
            if key == "_children":
                for child_key, child in (value or {}).items():
                    yield from _held_arrays(child, f"{label}.child({child_key!r})", depth + 1)
            else:
                yield from _held_arrays(value, f"{label}.{key}", depth + 1)
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _held_arrays(value, f"{label}[{key!r}]", depth + 1)
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _held_arrays(value, f"{label}[{i}]", depth + 1)


def arrays_problems(layer: Layer, x: Any, rng: np.random.Generator) -> list[str]:
    """What ``layer`` (built, float64) does to arrays it may only read, or keeps that it promised not to."""
    xin = st.map_leaves(np.copy, x)
    saved_x = st.map_leaves(np.copy, xin)
    out = forward_by_hand(layer, xin, copy_input=False)
    problems = [
        f"forward wrote into its {what} in place; forward's input is read-only (docs/plugins.md, "
        "'Which arrays a layer may modify, keep and return')"
        for what in _changed(saved_x, xin)
    ]
    grad_out = st.map_leaves(lambda o: rng.standard_normal(np.shape(o)).astype(np.asarray(o).dtype), out)
    saved_g = st.map_leaves(np.copy, grad_out)
    layer.zero_grad()
    grad_in = backward_by_hand(layer, grad_out)
    for i, (u, v) in enumerate(zip(st.leaves(saved_g), st.leaves(grad_out))):
        if not np.array_equal(u, v, equal_nan=True):
            which = "grad_out" if not st.is_nested(out) else f"grad_out {i}"
            problems.append(
                f"backward wrote into {which} in place (max |change| {_differs(u, v):.3e}) although "
                "ctx.grad_out_writable was False; it may do so only when that flag is True"
            )
    problems += [f"backward wrote into the {what} kept from forward" for what in _changed(saved_x, xin)]
    if type(layer).returns_fresh_grad and grad_in is not None:
        held = [("the input", a) for a in st.leaves(xin)] + [("the output", a) for a in st.leaves(out)]
        held += list(_held_arrays(layer.__dict__.get("_manual_ctx"), "ctx"))
        for key, value in vars(layer).items():
            if key not in CALL_STATE:
                held += list(_held_arrays(value, f"self.{key}"))
        for name, p in layer.named_parameters():
            held += [(f"parameter {name}", p.data), (f"the gradient of {name}", p.grad)]
        for g in st.leaves(grad_in):
            if not isinstance(g, np.ndarray) or any(np.shares_memory(g, o) for o in st.leaves(grad_out)):
                continue  # grad_out itself (or a view of it) may be returned
            kept = sorted({where for where, a in held if np.shares_memory(g, a)})
            if kept:
                problems.append(
                    "the class declares returns_fresh_grad = True (the layer below may overwrite the "
                    f"returned gradient in place), but the array backward returned is kept as "
                    f"{', '.join(kept)}"
                )
    return problems


def context_problem(layer: Layer, xa: Any, stochastic: bool, rng: np.random.Generator) -> str | None:
    """Whether per-call state lives on ``ctx``: ``layer`` is built, float64, in training mode.

    Two calls in flight (forward A on ``xa``, forward B on ``xa``'s values
    rolled by one, backward A, as a layer shared by two graph nodes or two
    threads runs) must give call A what it gets alone; and a call's mode must
    come from ``ctx.training``, not from the layer's flag (``predict`` passes
    ``training=False`` without changing it). A layer stochastic in training
    is compared in inference mode.
    """
    mode = not stochastic  # a stochastic layer's two runs can only agree in inference mode
    xb = st.map_leaves(lambda a: np.roll(np.asarray(a).ravel(), 1).reshape(np.shape(a)), xa)
    probe = forward_by_hand(copy.deepcopy(layer), xa)
    grad_out = st.map_leaves(lambda o: rng.standard_normal(np.shape(o)), probe)
    alone = run_call(copy.deepcopy(layer), xa, grad_out, Context(mode))
    shared = copy.deepcopy(layer)
    ctx_a, ctx_b = Context(mode), Context(mode)
    out_a = shared.forward(ctx_a, st.map_leaves(np.copy, xa))
    shared.forward(ctx_b, st.map_leaves(np.copy, xb))
    shared.zero_grad()
    try:
        grad_a = shared.backward(ctx_a, st.map_leaves(np.copy, grad_out))
    except ConfigError:
        if takes_context(layer):
            raise
        grad_a = None  # the older form's adapter refuses the second call in flight: safe
    grads = {name: p.grad.copy() for name, p in shared.named_parameters()}
    interleaved = Call(out_a, grad_a, grads, {})
    refused = grad_a is None and not takes_context(layer)
    wrong = [] if refused else _compare_calls(Call(alone.out, alone.grad_in, alone.grads, {}), interleaved)
    if wrong:
        return (
            "two calls in flight (forward A, forward B, then backward A, as a layer shared by two graph "
            "nodes or called from two threads runs) give call A wrong results: "
            + "; ".join(wrong)
            + ". Keep what backward needs on ctx (ctx.x = x), not on self"
        )
    for flag, call_mode in ((True, False), (False, True)):
        if stochastic and call_mode:
            continue
        agreeing, disagreeing = copy.deepcopy(layer), copy.deepcopy(layer)
        agreeing.train(call_mode)
        disagreeing.train(flag)
        wrong = _compare_calls(
            run_call(agreeing, xa, grad_out, Context(call_mode)),
            run_call(disagreeing, xa, grad_out, Context(call_mode)),
        )
        if wrong:
            return (
                f"a call with ctx.training={call_mode} computes differently when the layer's own flag is "
                f"training={flag}: " + "; ".join(wrong) + ". Read the mode from ctx.training, not "
                "self.training (predict and evaluate pass training=False without changing the flag)"
            )
    return None


def _plain_object(value: Any) -> bool:
    """An instance of a Python class of the user's (not a layer, context, module, type or NumPy object)."""
    kind = type(value)
    return (
        hasattr(value, "__dict__")
        and not isinstance(
            value, (Layer, Context, type, types.ModuleType, types.FunctionType, types.MethodType)
        )
        and kind.__module__.split(".")[0] not in ("builtins", "numpy", "framework", "functools", "threading")
    )


def undiscovered(layer: Layer) -> list[str]:
    """Parameters and buffers held by ``layer`` that discovery misses (sets, deep nesting, helper objects)."""
    found = {id(p) for p in layer.parameters()} | {id(b) for b in layer.buffers()}
    modules = {id(m) for m in layer.modules()}
    problems: list[str] = []
    seen: set[int] = set()

    def walk(value: Any, where: str, depth: int) -> None:
        if depth > 4 or id(value) in seen:
            return
        seen.add(id(value))
        if isinstance(value, (Parameter, Buffer)):
            if id(value) not in found:
                kind = "Parameter" if isinstance(value, Parameter) else "Buffer"
                problems.append(f"{where} holds a {kind} {value.shape} that is not discovered")
        elif isinstance(value, Layer):
            if id(value) not in modules:
                for name, p in [*value.named_parameters(), *value.named_buffers()]:
                    if id(p) not in found:
                        problems.append(f"{where}.{name} (in a child layer that is not discovered)")
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{where}[{key!r}]", depth + 1)
        elif isinstance(value, (list, tuple, set, frozenset)):
            for i, item in enumerate(value):
                walk(item, f"{where}[{i}]", depth + 1)
        elif _plain_object(value):
            for key, item in vars(value).items():
                walk(item, f"{where}.{key}", depth + 1)

    for prefix, module in named_modules(layer):
        for key, value in vars(module).items():
            if key not in CALL_STATE:
                walk(value, f"{prefix}{key}", 0)
    return problems


def call_differences(original: Layer, rebuilt: Layer, x: Any, rng: np.random.Generator) -> list[str]:
    """How a training-mode call of ``rebuilt`` differs from one of ``original``.

    Both get the same weights (the caller loads them), input and ``grad_out``.

    Returns ``[]`` when the layer is stochastic in training (two calls of
    ``original`` itself differ), where no comparison is possible.
    """
    probe = forward_by_hand(copy.deepcopy(original).train(), st.map_leaves(np.copy, x))
    grad_out = st.map_leaves(lambda o: rng.standard_normal(np.shape(o)), probe)
    first = run_call(copy.deepcopy(original).train(), x, grad_out)
    if _compare_calls(first, run_call(copy.deepcopy(original).train(), x, grad_out)):
        return []
    return _compare_calls(first, run_call(copy.deepcopy(rebuilt).train(), x, grad_out))


def precision_problems(layer: Layer, x: Any, dtype: np.dtype, rng: np.random.Generator) -> list[str]:
    """Arrays of a call of ``layer`` (built in ``dtype``) far from the same call of its float64 twin.

    The twin is a copy cast to float64 (the same weights), given the same input
    and ``grad_out`` (values representable in ``dtype``); each output, input
    gradient and parameter gradient must agree to ``1000 * eps(dtype)``
    relative (norm-wise). A layer stochastic in training is compared in
    inference mode.
    """
    tolerance = 1000 * float(np.finfo(dtype).eps)
    xin = st.cast(x, dtype)
    x64 = st.cast(xin, np.float64)
    probe = forward_by_hand(copy.deepcopy(layer), st.map_leaves(np.copy, xin))
    stochastic = not st.equal(probe, forward_by_hand(copy.deepcopy(layer), st.map_leaves(np.copy, xin)))
    grad_out = st.map_leaves(lambda o: rng.standard_normal(np.shape(o)).astype(dtype), probe)
    low, high = copy.deepcopy(layer), copy.deepcopy(layer).astype(np.float64)
    for lay in (low, high):
        lay.train(not stochastic)
    a = run_call(low, xin, grad_out).arrays()
    b = run_call(high, x64, st.cast(grad_out, np.float64)).arrays()
    problems = []
    for key in a:
        if key.startswith("state") or key not in b:
            continue
        try:
            err = relative_error(a[key], b[key], floor=1e-30)
        except ValueError:
            continue  # a shape mismatch is the other checks' business
        if not err < tolerance:
            problems.append(f"{key} (relative error {err:.2e})")
    return problems
