"""Parity hunt of the spatial layers against PyTorch: convolutions, pools and norms on random configurations.

Every case draws its configuration, data, weights and upstream gradient from a fixed seed, runs forward
and backward with an explicit ``Context`` and compares the output, ``dL/dx`` and every parameter gradient
with PyTorch's in float64 (rtol 1e-10) and float32 (rtol 1e-4, atol scaled to the largest value; the
first half of each kind of case, :func:`for_dtype`).

The convolutions run each configuration under every lowering (one product per sample ``im2col``, the row
``grid``, ``batch_last``, and the compiled ``direct`` one of :mod:`plugins.conv_direct`, which needs
numba), forced by patching the thresholds of :mod:`plugins.conv_base` and :mod:`plugins.conv_direct`, and
under the natural choice at one and two BLAS threads (``threadpoolctl``); a spy checks which one ran. A
mode that runs a case through the lowering, on the thread count, of an earlier mode of its test (mostly
the natural choice; a grouped convolution, which falls back to im2col under every forcing) checks only
which one ran, by a forward of one sample: the thresholds only choose, the computation is the same. Each
case also varies what the callers may hand over: non-contiguous, reversed or read-only inputs and
gradients, ``needs_input_grad=False`` (the first layer under ``fit``), ``grad_out_writable`` and a lazily
zeroed gradient. Inputs and gradients must come back unmodified (unless ``grad_out_writable`` allows it).
"""

from __future__ import annotations

import copy
import math
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
from support import requires_torch, torch_on_one_thread  # noqa: F401  (an autouse fixture)

import plugins.conv_base as conv_base
import plugins.conv_direct as conv_direct
from framework.base.context import Context
from framework.errors import ConfigError, ShapeError
from framework.runtime import blas, jit
from framework.runtime.dtype import default_dtype
from plugins.adaptive_pooling import AdaptiveAvgPool1d, AdaptiveAvgPool2d, AdaptiveMaxPool2d
from plugins.conv import Conv1d, Conv2d, ConvTranspose2d
from plugins.group_norms import GroupNorm, InstanceNorm1d, InstanceNorm2d, RMSNorm
from plugins.normalization import BatchNorm, LayerNorm
from plugins.pooling import AvgPool1d, AvgPool2d, GlobalAvgPool2d, MaxPool1d, MaxPool2d

try:
    import torch

    F = torch.nn.functional
except ImportError:
    torch = F = None
try:
    import threadpoolctl
except ImportError:
    threadpoolctl = None

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning")

F64, F32 = np.dtype(np.float64), np.dtype(np.float32)
TOL = {F64: (1e-10, 1e-11), F32: (1e-4, 2e-5)}  # (rtol, atol relative to the largest reference value)
ACTIVATIONS = {None: lambda t: t, "relu": lambda t: torch.relu(t), "tanh": lambda t: torch.tanh(t)}
BIG = 10**9


# -- helpers ----------------------------------------------------------------------------------------------


def close(ours: Any, ref: Any, dtype: np.dtype, what: str, slack: float = 0.0) -> None:
    """``ours`` (of ``dtype``) against the float64 reference.

    The absolute tolerance is relative to the reference's largest value (at least one: the data and
    gradients are of order one, so an exact zero reached by cancellation is compared at that scale),
    plus ``slack``: three times PyTorch's own largest float32 error on the same data
    (:func:`torch_run`), for the ill-conditioned cases where float32 cannot do better (a mean far
    from zero, a spread of a few float32 steps).
    """
    ref = np.asarray(ref, dtype=np.float64)
    assert ours is not None, f"{what}: got None"
    ours = np.asarray(ours)
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != {ref.shape}"
    assert ours.dtype == dtype, f"{what}: dtype {ours.dtype} != {dtype}"
    rtol, atol = TOL[dtype]
    size = np.abs(ref)
    scale = max(float(np.fmax.reduce(size, axis=None, initial=0.0)), 1.0)  # NaN ignored
    limit = np.multiply(size, rtol, out=size)  # atol * scale + rtol * size + 3 * slack, in place
    limit += atol * scale
    if slack:
        limit += 3 * slack
    with np.errstate(invalid="ignore"):
        error = ours - ref
        within = np.abs(error, out=error) <= limit
    if not within.all():
        bad = ~within & ~(np.isnan(ours) & np.isnan(ref))
        if bad.any():
            np.testing.assert_allclose(ours[bad], ref[bad], rtol=rtol, atol=atol * scale, err_msg=what)


def layout(a: np.ndarray, kind: str) -> np.ndarray:
    """The values of ``a`` in another memory layout (same shape): what a caller may hand over."""
    if kind == "c":
        return a
    if kind == "fortran":
        return np.asfortranarray(a)
    if kind == "transposed":  # a swapaxes view of a contiguous array
        return np.ascontiguousarray(np.swapaxes(a, -1, -2)).swapaxes(-1, -2)
    if kind == "sliced":  # every other element of the last axis, the batch axis offset
        big = np.full((a.shape[0] + 1, *a.shape[1:-1], 2 * a.shape[-1] + 1), np.nan, dtype=a.dtype)
        big[1:, ..., 1::2] = a
        return big[1:, ..., 1::2]
    if kind == "reversed":  # negative strides
        index = (
            (slice(None), slice(None, None, -1)) + (slice(None),) * (a.ndim - 3) + (slice(None, None, -1),)
        )
        index = index[-a.ndim :]
        return np.ascontiguousarray(a[index])[index]
    if kind == "readonly":
        b = a.copy()
        b.flags.writeable = False
        return b
    raise ValueError(kind)


LAYOUTS = ("c", "c", "c", "fortran", "transposed", "sliced", "reversed", "readonly")


def tensor(a: Any, grad: bool = False) -> Any:
    return None if a is None else torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


def running_state(t: Any, xt: Any) -> Any:
    """A running-statistics tensor for ``fn``: itself in the float64 run, a throwaway copy in float32."""
    return t if t is None or xt.dtype == torch.float64 else t.detach().to(xt.dtype).clone()


def torch_run(fn: Any, x: np.ndarray, params: list[Any], g_of: Any) -> tuple[Any, ...]:
    """``fn(x, *params)`` in float64 torch, backward of ``g_of(y.shape)``: ``(y, g, dx, param grads, slack)``.

    For float32 data ``fn`` also runs in float32 torch: ``slack`` holds its errors against the float64
    run (output, dx, then the parameter gradients), which :func:`close` allows on top of its tolerance.
    """
    xt = tensor(x, grad=True)
    pts = [tensor(p, grad=True) for p in params]
    y = fn(xt, *pts)
    g = g_of(tuple(y.shape))
    y.backward(tensor(g))
    ref = [y.detach().numpy(), xt.grad.numpy(), *(None if p is None else p.grad.numpy() for p in pts)]
    slack = [0.0] * len(ref)
    if x.dtype == F32:
        x32 = torch.tensor(x, requires_grad=True)
        p32 = [None if p is None else torch.tensor(np.asarray(p, F32), requires_grad=True) for p in params]
        y32 = fn(x32, *p32)
        y32.backward(torch.tensor(g))
        got = [y32.detach().numpy(), x32.grad.numpy(), *(None if p is None else p.grad.numpy() for p in p32)]
        slack = [
            0.0 if r is None else float(np.abs(a.astype(np.float64) - r).max(initial=0.0))
            for a, r in zip(got, ref)
        ]
    return ref[0], g, ref[1], ref[2:], slack


def unchanged(now: np.ndarray, before: np.ndarray, what: str) -> None:
    """``now`` holds ``before``'s values (NaN where it had NaN): ``assert_array_equal``, run only to
    report a difference (its checks cost more than the layers' calls on these small arrays)."""
    if not (np.array_equal(now, before) or np.array_equal(now, before, equal_nan=True)):  # NaN-free first
        np.testing.assert_array_equal(now, before, err_msg=what)


def run_ours(layer: Any, x: np.ndarray, g: np.ndarray, opts: dict[str, Any]) -> tuple:
    """Forward and backward with an explicit context: ``(y, dx, {name: grad})``; inputs checked untouched."""
    params = dict(layer.named_parameters())
    for p in params.values():
        p.zero_grad(lazy=opts.get("lazy", False))
    x_in, g_in = layout(x, opts.get("x_layout", "c")), layout(g, opts.get("g_layout", "c"))
    x_before, g_before = x_in.copy(), g_in.copy()
    ctx = Context(opts.get("training", True), needs_input_grad=opts.get("needs_input_grad", True))
    y = layer.forward(ctx, x_in)
    y_copy = np.array(y, copy=True)
    writable = opts.get("writable", False) and g_in.flags.writeable
    ctx.grad_out_writable = writable
    dx = layer.backward(ctx, g_in)
    unchanged(x_in, x_before, "forward/backward modified the input")
    if not writable:
        unchanged(g_in, g_before, "backward modified grad_out")
    return y_copy, dx, {name: p.grad.copy() for name, p in params.items()}


def compare(ours: tuple, ref: tuple, dtype: np.dtype, names: list[str], opts: dict[str, Any]) -> None:
    """Output, dL/dx (unless skipped under needs_input_grad=False) and the gradients of ``names``."""
    y, dx, grads = ours
    ry, _, rdx, rgrads, slack = ref
    close(y, ry, dtype, "output", slack[0])
    if opts.get("needs_input_grad", True) or dx is not None:
        close(dx, rdx, dtype, "dL/dx", slack[1])
    present = [n for n, r in zip(names, rgrads) if r is not None]
    assert sorted(grads) == sorted(present), (sorted(grads), present)
    for name, ref_g, s in zip(names, rgrads, slack[2:]):
        if ref_g is not None:
            close(grads[name], ref_g, dtype, f"dL/d{name}", s)


def call_opts(rng: np.random.Generator) -> dict[str, Any]:
    """What a caller may hand over: layouts of x and grad_out, needs_input_grad, writable, lazy zero."""
    return {
        "x_layout": str(rng.choice(LAYOUTS)),
        "g_layout": str(rng.choice(LAYOUTS)),
        "needs_input_grad": bool(rng.random() > 0.2),
        "writable": bool(rng.random() < 0.3),
        "lazy": bool(rng.random() < 0.3),
    }


def pack(values: Any, rng: np.random.Generator) -> Any:
    """Per-axis values as an int when they are all equal (half the time), a tuple otherwise."""
    values = tuple(int(v) for v in values)
    return values[0] if len(set(values)) == 1 and rng.random() < 0.5 else values


def failures_report(failures: list[str], total: int) -> str:
    return f"{len(failures)} of {total} cases failed:\n" + "\n".join(failures[:12])


def for_dtype(cases: list[dict[str, Any]], dtype: np.dtype) -> list[dict[str, Any]]:
    """All the cases in float64; in float32 the first half of each kind (as Conv1d's first 40): float32
    changes the tolerance and the arithmetic, not the code paths (measured with coverage, the half
    reaches every branch of framework/ and plugins/ that all of them reach in float32)."""
    if dtype == F64:
        return cases
    count = max(c["seed"][-1] for c in cases) + 1
    return [c for c in cases if c["seed"][-1] < (count + 1) // 2]


# -- convolution lowerings ---------------------------------------------------------------------------------

FORCED = {
    "im2col": {"GRID_MIN_DEPTH": BIG, "BATCH_LAST_MIN_DEPTH": BIG},
    "grid": {
        "GRID_MIN_DEPTH": 1,
        "GRID_MAX_WASTE": math.inf,
        "BATCH_LAST_MIN_DEPTH": BIG,
        "BATCH_LAST_COMPILED": False,
    },
    "batch_last": {"GRID_MIN_DEPTH": BIG, "BATCH_LAST_MIN_DEPTH": 1, "BATCH_LAST_MAX_POSITIONS": BIG},
    "natural": {},
    "direct": {},  # where it cannot run (stride, groups): the natural choice
}
#: The direct lowering's limits per mode (:mod:`plugins.conv_direct`): off unless natural or forced.
DIRECT_OFF = {"DIRECT_MAX_WASTE": 0, "DIRECT_MAX_WASTE_ONE_THREAD": 0}
FORCED_DIRECT = {
    "im2col": DIRECT_OFF,
    "grid": DIRECT_OFF,
    "batch_last": DIRECT_OFF,
    "natural": {},
    "direct": {"DIRECT_MAX_WASTE": math.inf, "DIRECT_MAX_WASTE_ONE_THREAD": math.inf},
}


@contextmanager
def blas_threads(n: int):
    """NumPy's BLAS on ``n`` threads in the block: one ctypes call each way (``threadpoolctl``'s
    library scan, 0.5 ms, took a fifth of these tests' time), threadpoolctl where it is not OpenBLAS."""
    previous = blas.set_num_threads(n)
    if previous is None:
        if threadpoolctl is None:  # known only here: NumPy's BLAS is not OpenBLAS
            pytest.skip("needs threadpoolctl (scikit-learn brings it): pip install -e '.[data]'")
        with threadpoolctl.threadpool_limits(n, user_api="blas"):
            yield
        return
    try:
        yield
    finally:
        blas.set_num_threads(previous)


@contextmanager
def lowering(name: str, threads: int):
    """Thresholds forcing ``name`` where it applies, BLAS on ``threads`` threads; yields what ran."""
    taken: list[str] = []
    grid, batch_last = conv_base._ConvNd._forward_grid, conv_base.forward_batch_last
    direct = conv_direct.forward_direct
    if name == "direct" and not jit.available():
        pytest.skip("the direct lowering runs on the compiled kernels: pip install -e '.[jit]'")

    def spy_grid(self, ctx, x):
        taken.append("grid")
        return grid(self, ctx, x)

    def spy_batch_last(layer, ctx, x):
        taken.append("batch_last")
        return batch_last(layer, ctx, x)

    def spy_direct(layer, ctx, x):
        taken.append("direct")
        return direct(layer, ctx, x)

    with (
        pytest.MonkeyPatch.context() as mp,
        blas_threads(threads),
        jit.using(True if name == "direct" else jit._choice),
    ):
        for key, value in FORCED[name].items():
            mp.setattr(conv_base, key, value)
        for key, value in FORCED_DIRECT[name].items():
            mp.setattr(conv_direct, key, value)
        if name == "direct":  # even where numba would not import (then jit.available() skips above)
            mp.setattr(jit, "first_use_kernels", lambda: True)
        mp.setattr(conv_direct, "forward_direct", spy_direct)
        if blas.num_threads() != threads:  # a one-core machine: the grid is still chosen as at two threads
            mp.setattr(conv_base.blas, "num_threads", lambda: threads)
        mp.setattr(conv_base._ConvNd, "_forward_grid", spy_grid)
        mp.setattr(conv_base, "forward_batch_last", spy_batch_last)
        yield taken


FLOATS = (np.float32, np.float64)
THRESHOLDS = (
    "GRID_MIN_DEPTH",
    "GRID_MAX_WASTE",
    "BATCH_LAST_MIN_DEPTH",
    "BATCH_LAST_MAX_POSITIONS",
    "BATCH_LAST_COMPILED",
)
DIRECT_THRESHOLDS = ("DIRECT_MAX_WASTE", "DIRECT_MAX_WASTE_ONE_THREAD")
NATURAL = {key: getattr(conv_base, key) for key in THRESHOLDS}  # as shipped (read before any patch)
NATURAL.update({key: getattr(conv_direct, key) for key in DIRECT_THRESHOLDS})


def limits_of(mode: str) -> dict[str, Any]:
    """The thresholds ``mode`` runs with, and whether the direct lowering may run in it (``DIRECT_ON``:
    compiled kernels served by numba; forced on by the ``direct`` mode)."""
    direct_on = mode == "direct" or (jit.enabled() and jit.first_use_kernels())
    return {**NATURAL, **FORCED[mode], **FORCED_DIRECT[mode], "DIRECT_ON": direct_on}


def expected_lowering(
    layer: Any,
    x_shape: tuple[int, ...],
    threads: int,
    limits: dict[str, Any] | None = None,
    dtype: Any = np.float32,
) -> str:
    """The lowering the layer's rules pick at the current thresholds of :mod:`plugins.conv_base`
    (or at ``limits``, e.g. ``{**NATURAL, **FORCED[mode]}``); the batch size plays no part."""
    if limits is None:
        limit = {key: getattr(conv_base, key) for key in THRESHOLDS}
        limit.update({key: getattr(conv_direct, key) for key in DIRECT_THRESHOLDS})
        limit["DIRECT_ON"] = jit.enabled() and jit.first_use_kernels()
    else:
        limit = limits
    (kh, kw), (sh, sw), pads, (dh, dw) = layer._geometry2d
    h, w = (1, x_shape[-1]) if len(x_shape) == 3 else x_shape[2:]
    depth = layer.in_channels * kh * kw
    wp = w + sum(pads[1])
    ow = (wp - dw * (kw - 1) - 1) // sw + 1
    oh = (h + sum(pads[0]) - dh * (kh - 1) - 1) // sh + 1
    if (
        limit["DIRECT_ON"]
        and dtype in FLOATS
        and layer.groups == 1
        and (sh, sw) == (1, 1)
        and conv_direct.waste(oh, wp, ow)
        <= limit["DIRECT_MAX_WASTE" if threads >= 2 else "DIRECT_MAX_WASTE_ONE_THREAD"]
    ):
        return "direct"
    # with the compiled kernels on (float32 and float64 inputs), batch-last replaces the grid at 2+ threads
    compiled = limit["BATCH_LAST_COMPILED"] and jit.enabled() and threads >= 2 and dtype in FLOATS
    grid_ok = layer.groups == 1 and sw == 1 and depth >= limit["GRID_MIN_DEPTH"] and not compiled
    if grid_ok and wp <= limit["GRID_MAX_WASTE"] * ow and threads >= 2:
        return "grid"
    if (
        layer.groups == 1
        and depth >= limit["BATCH_LAST_MIN_DEPTH"]
        and (compiled or oh * ow <= limit["BATCH_LAST_MAX_POSITIONS"])
    ):
        return "batch_last"
    return "im2col"


# -- Conv2d / Conv1d cases ---------------------------------------------------------------------------------


def _out(size: int, k: int, s: int, p0: int, p1: int, d: int) -> int:
    return (size + p0 + p1 - d * (k - 1) - 1) // s + 1


def conv_case(seed: Any, ndim: int = 2) -> dict[str, Any]:
    """A random Conv2d (``ndim=2``) or Conv1d (``ndim=1``) configuration that fits its input."""
    rng = np.random.default_rng(seed)
    while True:
        groups = int(rng.choice([1, 1, 1, 1, 2, 3, 4, 5]))
        cin = groups * int(rng.integers(1, 20 // groups + 1))
        cout = groups * int(rng.integers(1, 20 // groups + 1))
        if rng.random() < 0.1:  # depthwise
            cin = int(rng.integers(1, 13))
            groups, cout = cin, cin * int(rng.integers(1, 3))
        kernel = [int(v) for v in rng.integers(1, 6, size=ndim)]
        stride = [int(v) for v in rng.integers(1, 4, size=ndim)] if rng.random() < 0.6 else [1] * ndim
        dilation = [int(v) for v in rng.integers(1, 4, size=ndim)] if rng.random() < 0.35 else [1] * ndim
        size = [int(v) for v in rng.integers(1, 18, size=ndim)]
        r = rng.random()
        if r < 0.15:
            padding: Any = "valid"
        elif r < 0.35:
            padding, stride = "same", [1] * ndim
        elif r < 0.7 or ndim == 1:
            padding = int(rng.integers(0, 4))
        else:
            padding = [int(v) for v in rng.integers(0, 4, size=ndim)]
        if isinstance(padding, int):
            pads = [(padding, padding)] * ndim
        elif padding == "valid":
            pads = [(0, 0)] * ndim
        elif padding == "same":
            pads = [(d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2) for k, d in zip(kernel, dilation)]
        else:
            pads = [(p, p) for p in padding]
        if rng.random() < 0.12 and padding != "same":  # the kernel as large as the padded input
            dilation = [1] * ndim
            kernel = [s + p0 + p1 for s, (p0, p1) in zip(size, pads)]
        outs = [
            _out(s, k, st, p0, p1, d) for s, k, st, (p0, p1), d in zip(size, kernel, stride, pads, dilation)
        ]
        if min(outs) <= 0:
            continue
        return {
            "seed": seed,
            "n": int(rng.integers(1, 10)),
            "cin": cin,
            "cout": cout,
            "kernel": pack(kernel, rng) if ndim == 2 else kernel[0],
            "stride": pack(stride, rng) if ndim == 2 else stride[0],
            "padding": pack(padding, rng) if isinstance(padding, list) else padding,
            "dilation": pack(dilation, rng) if ndim == 2 else dilation[0],
            "groups": groups,
            "bias": bool(rng.random() < 0.7),
            "activation": [None, None, "relu", "tanh"][int(rng.integers(0, 4))],
            "size": tuple(size),
            "opts": call_opts(rng),
        }


def conv_describe(case: dict[str, Any]) -> str:
    keys = (
        "n",
        "cin",
        "cout",
        "kernel",
        "stride",
        "padding",
        "dilation",
        "groups",
        "bias",
        "activation",
        "size",
    )
    return ", ".join(f"{k}={case[k]!r}" for k in keys) + f", opts={case['opts']}"


_LAYERS: dict[Any, Any] = {}
_DATA: dict[Any, np.ndarray] = {}


def conv_layer(case: dict[str, Any], dtype: np.dtype, ndim: int = 2) -> Any:
    """A new layer of the case, never called: a copy of the one built at the case's first use (a copy
    costs half a construction, and each case is run under up to seven lowerings)."""
    key = (case["seed"], np.dtype(dtype).str, ndim)
    if key not in _LAYERS:
        rng = np.random.default_rng((*np.atleast_1d(case["seed"]), 99))
        cls = Conv2d if ndim == 2 else Conv1d
        with default_dtype(dtype):
            layer = cls(
                case["cin"],
                case["cout"],
                case["kernel"],
                stride=case["stride"],
                padding=case["padding"],
                dilation=case["dilation"],
                groups=case["groups"],
                bias=case["bias"],
                activation=case["activation"],
            )
        fan_in = math.prod(layer.weight.shape[1:])  # outputs of order one: tanh not saturated in float32
        layer.weight.data[...] = rng.standard_normal(layer.weight.shape) / math.sqrt(fan_in)
        if layer.bias is not None:
            layer.bias.data[...] = rng.standard_normal(layer.bias.shape)
        _LAYERS[key] = layer
    return copy.deepcopy(_LAYERS[key])


def conv_data(case: dict[str, Any], dtype: np.dtype) -> np.ndarray:
    """The case's input, drawn once (every run checks that it comes back unmodified)."""
    key = (case["seed"], np.dtype(dtype).str)
    if key not in _DATA:
        rng = np.random.default_rng((*np.atleast_1d(case["seed"]), 7))
        _DATA[key] = rng.standard_normal((case["n"], case["cin"], *case["size"])).astype(dtype)
    return _DATA[key]


def grad_for(case: dict[str, Any], dtype: np.dtype) -> Any:
    rng = np.random.default_rng((*np.atleast_1d(case["seed"]), 13))
    return lambda shape: rng.standard_normal(shape).astype(dtype)


_REFERENCES: dict[Any, Any] = {}


def conv_reference(case: dict[str, Any], layer: Any, x: np.ndarray, ndim: int) -> tuple:
    key = ("conv", ndim, case["seed"], x.dtype.str)
    if key not in _REFERENCES:
        conv = F.conv2d if ndim == 2 else F.conv1d
        act = ACTIVATIONS[case["activation"]]

        def fn(xt, wt, bt):
            return act(conv(xt, wt, bt, case["stride"], case["padding"], case["dilation"], case["groups"]))

        bias = None if layer.bias is None else layer.bias.data
        _REFERENCES[key] = torch_run(fn, x, [layer.weight.data, bias], grad_for(case, x.dtype))
    return _REFERENCES[key]


def check_conv_case(
    case: dict[str, Any], dtype: np.dtype, ndim: int, mode: str, threads: int, full: bool = True
) -> str:
    """Run one case under one lowering; returns the lowering taken (raises on a mismatch).

    ``full=False``: an earlier mode of the test ran this case through the same lowering on as many
    threads (the same computation: the thresholds only choose), so only the choice is checked here,
    by a forward of one sample (the choice does not depend on the batch size).
    """
    layer = conv_layer(case, dtype, ndim)
    x = conv_data(case, dtype)
    if not full:
        with lowering(mode, threads) as taken:
            want = expected_lowering(layer, x.shape, threads, dtype=x.dtype)
            layer.forward(Context(False, record=False), x[:1])
    else:
        ref = conv_reference(case, layer, x, ndim)
        with lowering(mode, threads) as taken:
            want = expected_lowering(layer, x.shape, threads, dtype=x.dtype)
            ours = run_ours(layer, x, ref[1], case["opts"])
    assert taken == ([] if want == "im2col" else [want]), f"lowering {taken} taken, {want} expected"
    if mode in ("grid", "batch_last") and layer.groups == 1:
        assert want == mode or (mode == "grid" and layer._geometry2d[1][1] != 1), (want, mode)
    if mode == "direct" and layer.groups == 1 and layer._geometry2d[1] == (1, 1):
        assert want == "direct", want
    if not full:
        return want
    assert layer.output_shape((None, *x.shape[1:])) == (None, *ref[0].shape[1:]), "output_shape"
    if not case["opts"]["needs_input_grad"]:
        assert ours[1] is None, "needs_input_grad=False: a convolution returns None"
    compare(ours, ref, dtype, ["weight", "bias"], case["opts"])
    return want


#: The case counts here and below were cut (from 150, 100, 125, 100, 50, 100 and 40 per kind) by
#: per-case branch coverage of framework/ and plugins/: the lists kept still reach every line and
#: branch the longer ones did, in float64 and float32, with every lowering (their shortest covering
#: prefixes were 43, 50, 30, 8, 1, 9 and 5 cases), and every value of each call option (layouts,
#: needs_input_grad, ...) of each kind.
CONV2D_CASES = [conv_case((2, i)) for i in range(100)]
CONV1D_CASES = [conv_case((1, i), ndim=1) for i in range(70)]
CONV_MODES = [
    ("im2col", 1),
    ("im2col", 2),
    ("grid", 2),
    ("batch_last", 1),
    ("batch_last", 2),
    ("direct", 1),
    ("direct", 2),
    ("natural", 1),
    ("natural", 2),
]
FORCED_MODES = [(m, t) for m, t in CONV_MODES if m != "natural"]


_REPEATS: dict[Any, list[bool]] = {}


def repeats(case: dict[str, Any], ndim: int, modes: list) -> list[bool]:
    """Per mode of ``modes``: whether an earlier mode runs ``case`` through the same lowering on as
    many threads (the same computation)."""
    key = (case["seed"], ndim, tuple(modes))
    if key not in _REPEATS:
        layer = conv_layer(case, F64, ndim)
        shape = (case["n"], case["cin"], *case["size"])
        runs = [(expected_lowering(layer, shape, t, limits_of(m)), t) for m, t in modes]
        _REPEATS[key] = [run in runs[:i] for i, run in enumerate(runs)]
    return _REPEATS[key]


def run_conv_cases(
    cases: list[dict[str, Any]], dtype: np.dtype, ndim: int, mode: str, threads: int, modes: list
) -> dict:
    """Every case under ``(mode, threads)``, one of the test's ``modes``: compared with PyTorch unless
    an earlier mode of ``modes`` ran the case through the same computation (then the choice only)."""
    failures, taken = [], {}
    index = modes.index((mode, threads))
    for case in cases:
        try:
            full = not repeats(case, ndim, modes)[index]
            want = check_conv_case(case, dtype, ndim, mode, threads, full)
            taken[want] = taken.get(want, 0) + 1
        except AssertionError as error:
            failures.append(f"[{conv_describe(case)}] {str(error).strip().splitlines()[0:6]}")
    assert not failures, failures_report(failures, len(cases))
    return taken


@requires_torch
@pytest.mark.parametrize("mode, threads", CONV_MODES, ids=[f"{m}-{t}thr" for m, t in CONV_MODES])
def test_conv2d_float64_every_lowering_matches_torch(mode, threads):
    taken = run_conv_cases(CONV2D_CASES, F64, 2, mode, threads, CONV_MODES)
    if mode in ("grid", "batch_last", "direct"):
        assert taken.get(mode, 0) > len(CONV2D_CASES) // 5  # the forced lowering really ran on many cases


CONV32_MODES = [("im2col", 1), ("grid", 2), ("batch_last", 2), ("direct", 2), ("natural", 2)]


@requires_torch
@pytest.mark.parametrize("mode, threads", CONV32_MODES)
def test_conv2d_float32_every_lowering_matches_torch(mode, threads):
    run_conv_cases(for_dtype(CONV2D_CASES, F32), F32, 2, mode, threads, CONV32_MODES)


@requires_torch
@pytest.mark.parametrize("mode, threads", CONV_MODES, ids=[f"{m}-{t}thr" for m, t in CONV_MODES])
def test_conv1d_every_lowering_matches_torch(mode, threads):
    run_conv_cases(CONV1D_CASES, F64, 1, mode, threads, CONV_MODES)
    if mode in ("im2col", "grid", "batch_last", "direct"):
        run_conv_cases(CONV1D_CASES[:40], F32, 1, mode, threads, FORCED_MODES)


# -- ConvTranspose2d ---------------------------------------------------------------------------------------


def transpose_case(seed: Any) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    while True:
        groups = int(rng.choice([1, 1, 1, 2, 3, 4]))
        cin = groups * int(rng.integers(1, 20 // groups + 1))
        cout = groups * int(rng.integers(1, 20 // groups + 1))
        kernel = tuple(int(v) for v in rng.integers(1, 6, size=2))
        stride = tuple(int(v) for v in rng.integers(1, 4, size=2))
        dilation = tuple(int(v) for v in rng.integers(1, 4, size=2)) if rng.random() < 0.35 else (1, 1)
        padding = tuple(int(v) for v in rng.integers(0, 4, size=2))
        output_padding = tuple(int(rng.integers(0, max(s, d))) for s, d in zip(stride, dilation))
        size = tuple(int(v) for v in rng.integers(1, 13, size=2))
        outs = [
            (h - 1) * s - 2 * p + d * (k - 1) + op + 1
            for h, s, p, d, k, op in zip(size, stride, padding, dilation, kernel, output_padding)
        ]
        if min(outs) <= 0:
            continue
        return {
            "seed": seed,
            "n": int(rng.integers(1, 10)),
            "cin": cin,
            "cout": cout,
            "kernel": pack(kernel, rng),
            "stride": pack(stride, rng),
            "padding": pack(padding, rng),
            "output_padding": pack(output_padding, rng),
            "dilation": pack(dilation, rng),
            "groups": groups,
            "bias": bool(rng.random() < 0.7),
            "activation": [None, None, "relu", "tanh"][int(rng.integers(0, 4))],
            "size": size,
            "opts": call_opts(rng),
        }


def check_transpose_case(case: dict[str, Any], dtype: np.dtype) -> None:
    rng = np.random.default_rng((*case["seed"], 99))
    with default_dtype(dtype):
        layer = ConvTranspose2d(
            case["cin"],
            case["cout"],
            case["kernel"],
            stride=case["stride"],
            padding=case["padding"],
            output_padding=case["output_padding"],
            groups=case["groups"],
            bias=case["bias"],
            dilation=case["dilation"],
            activation=case["activation"],
        )
    layer.weight.data[...] = rng.standard_normal(layer.weight.shape) / math.sqrt(
        math.prod(layer.weight.shape[1:])
    )
    if layer.bias is not None:
        layer.bias.data[...] = rng.standard_normal(layer.bias.shape)
    x = rng.standard_normal((case["n"], case["cin"], *case["size"])).astype(dtype)
    act = ACTIVATIONS[case["activation"]]

    def fn(xt, wt, bt):
        kw = {k: case[k] for k in ("stride", "padding", "output_padding", "groups", "dilation")}
        return act(F.conv_transpose2d(xt, wt, bt, **kw))

    bias = None if layer.bias is None else layer.bias.data
    key = ("transpose", case["seed"], x.dtype.str)  # one reference for both thread counts
    if key not in _REFERENCES:
        _REFERENCES[key] = torch_run(
            fn, x, [layer.weight.data, bias], lambda shape: rng.standard_normal(shape).astype(dtype)
        )
    ref = _REFERENCES[key]
    assert layer.output_shape((None, case["cin"], *case["size"]))[1:] == ref[0].shape[1:]
    ours = run_ours(layer, x, ref[1], case["opts"])
    if not case["opts"]["needs_input_grad"]:
        assert ours[1] is None, "needs_input_grad=False: a convolution returns None"
    compare(ours, ref, dtype, ["weight", "bias"], case["opts"])


TRANSPOSE_CASES = [transpose_case((3, i)) for i in range(60)]


@requires_torch
@pytest.mark.parametrize("dtype", [F64, F32], ids=["float64", "float32"])
@pytest.mark.parametrize("threads", [1, 2])
def test_conv_transpose2d_matches_torch(dtype, threads):
    failures, cases = [], for_dtype(TRANSPOSE_CASES, dtype)
    with blas_threads(threads):
        for case in cases:
            try:
                check_transpose_case(case, dtype)
            except AssertionError as error:
                failures.append(f"[{conv_describe(case)}, op={case['output_padding']}] {str(error)[:400]}")
    assert not failures, failures_report(failures, len(cases))


# -- pools -------------------------------------------------------------------------------------------------


def pool_case(seed: Any, kind: str) -> dict[str, Any]:
    """``kind``: max2d, avg2d, max1d, avg1d."""
    rng = np.random.default_rng(seed)
    ndim = 2 if kind.endswith("2d") else 1
    while True:
        kernel = [int(v) for v in rng.integers(1, 6, size=ndim)]
        stride = None if rng.random() < 0.3 else [int(v) for v in rng.integers(1, 4, size=ndim)]
        padding = [int(rng.integers(0, k // 2 + 1)) for k in kernel]
        ceil_mode = bool(rng.random() < 0.4)
        size = [int(v) for v in rng.integers(1, 18, size=ndim)]
        if rng.random() < 0.15:  # the kernel as large as the padded input
            kernel = [s + 2 * p for s, p in zip(size, padding)]
        if any(s + 2 * p - k < 0 for s, p, k in zip(size, padding, kernel)):
            continue
        return {
            "seed": seed,
            "kind": kind,
            "n": int(rng.integers(1, 10)),
            "c": int(rng.integers(1, 9)),
            "kernel": pack(kernel, rng) if ndim == 2 else kernel[0],
            "stride": None if stride is None else (pack(stride, rng) if ndim == 2 else stride[0]),
            "padding": pack(padding, rng) if ndim == 2 else padding[0],
            "ceil_mode": ceil_mode,
            "count_include_pad": bool(rng.random() < 0.5),
            "size": tuple(size),
            "ties": bool(rng.random() < 0.25),  # small integers: many equal maxima
            "opts": {**call_opts(rng), "training": bool(rng.random() < 0.7)},
        }


def pool_describe(case: dict[str, Any]) -> str:
    keys = ("kind", "n", "c", "kernel", "stride", "padding", "ceil_mode", "count_include_pad", "size", "ties")
    return ", ".join(f"{k}={case[k]!r}" for k in keys) + f", opts={case['opts']}"


def check_pool_case(case: dict[str, Any], dtype: np.dtype) -> None:
    rng = np.random.default_rng((*case["seed"], 5))
    kind = case["kind"]
    common = {"kernel_size": case["kernel"], "stride": case["stride"], "padding": case["padding"]}
    common["ceil_mode"] = case["ceil_mode"]
    cls = {"max2d": MaxPool2d, "avg2d": AvgPool2d, "max1d": MaxPool1d, "avg1d": AvgPool1d}[kind]
    extra = {} if kind.startswith("max") else {"count_include_pad": case["count_include_pad"]}
    layer = cls(**common, **extra)
    shape = (case["n"], case["c"], *case["size"])
    if case["ties"]:
        x = rng.integers(-2, 2, size=shape).astype(dtype)
    else:
        x = rng.standard_normal(shape).astype(dtype)
    tfn = {"max2d": F.max_pool2d, "avg2d": F.avg_pool2d, "max1d": F.max_pool1d, "avg1d": F.avg_pool1d}[kind]
    ref = torch_run(
        lambda xt: tfn(xt, **common, **extra), x, [], lambda s: rng.standard_normal(s).astype(dtype)
    )
    assert layer.output_shape((None, *shape[1:]))[1:] == ref[0].shape[1:]
    ours = run_ours(layer, x, ref[1], case["opts"])
    compare(ours, ref, dtype, [], case["opts"])


POOL_CASES = [
    pool_case((4, k, i), kind)
    for k, kind in enumerate(("max2d", "avg2d", "max1d", "avg1d"))
    for i in range(36)
]


@requires_torch
@pytest.mark.parametrize("dtype", [F64, F32], ids=["float64", "float32"])
def test_pools_match_torch(dtype):
    failures, cases = [], for_dtype(POOL_CASES, dtype)
    for case in cases:
        try:
            check_pool_case(case, dtype)
        except AssertionError as error:
            failures.append(f"[{pool_describe(case)}] {str(error)[:400]}")
    assert not failures, failures_report(failures, len(cases))


def adaptive_case(seed: Any, kind: str) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    ndim = 1 if kind == "avg1d" else 2
    size = tuple(int(v) for v in rng.integers(1, 18, size=ndim))
    out = [int(rng.integers(1, s + 4)) for s in size]  # larger than the input too
    if ndim == 1:
        output_size: Any = out[0]
    elif rng.random() < 0.2:
        output_size = (None, out[1]) if rng.random() < 0.5 else (out[0], None)
    else:
        output_size = tuple(out) if rng.random() < 0.7 else out[0]
    return {
        "seed": seed,
        "kind": kind,
        "shape": (int(rng.integers(1, 10)), int(rng.integers(1, 9)), *size),
        "output_size": output_size,
        "ties": bool(rng.random() < 0.25),
        "opts": call_opts(rng),
    }


def check_adaptive_case(case: dict[str, Any], dtype: np.dtype) -> None:
    rng = np.random.default_rng((*case["seed"], 5))
    kind, shape = case["kind"], case["shape"]
    cls = {
        "avg2d": AdaptiveAvgPool2d,
        "max2d": AdaptiveMaxPool2d,
        "avg1d": AdaptiveAvgPool1d,
        "global": GlobalAvgPool2d,
    }
    layer = cls[kind]() if kind == "global" else cls[kind](case["output_size"])
    if case["ties"]:
        x = rng.integers(-2, 2, size=shape).astype(dtype)
    else:
        x = rng.standard_normal(shape).astype(dtype)
    tfn = {
        "avg2d": lambda t: F.adaptive_avg_pool2d(t, case["output_size"]),
        "max2d": lambda t: F.adaptive_max_pool2d(t, case["output_size"]),
        "avg1d": lambda t: F.adaptive_avg_pool1d(t, case["output_size"]),
        "global": lambda t: t.mean(dim=(2, 3)),
    }[kind]
    ref = torch_run(tfn, x, [], lambda s: rng.standard_normal(s).astype(dtype))
    ours = run_ours(layer, x, ref[1], case["opts"])
    compare(ours, ref, dtype, [], case["opts"])


ADAPTIVE_CASES = [
    adaptive_case((5, k, i), kind)
    for k, kind in enumerate(("avg2d", "max2d", "avg1d", "global"))
    for i in range(30)
]


@requires_torch
@pytest.mark.parametrize("dtype", [F64, F32], ids=["float64", "float32"])
def test_adaptive_and_global_pools_match_torch(dtype):
    failures = []
    for case in ADAPTIVE_CASES:
        try:
            check_adaptive_case(case, dtype)
        except AssertionError as error:
            failures.append(f"[{case}] {str(error)[:400]}")
    assert not failures, failures_report(failures, len(ADAPTIVE_CASES))


# -- BatchNorm: training and eval, running statistics over several calls -----------------------------------


def batchnorm_case(seed: Any) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    rank = int(rng.choice([2, 3, 4, 4, 5]))
    while True:
        shape = (
            int(rng.integers(1, 10)),
            int(rng.integers(1, 21)),
            *(int(v) for v in rng.integers(1, 9, rank - 2)),
        )
        if math.prod(shape) // shape[1] >= 2:  # training needs two values per channel
            break
    return {
        "seed": seed,
        "shape": shape,
        "affine": bool(rng.random() < 0.7),
        "track": bool(rng.random() < 0.7),
        "momentum": float(rng.choice([0.1, 0.0, 1.0, float(rng.random())])),
        "eps": float(rng.choice([1e-5, 1e-3, 0.5])),
        "offset": float(rng.choice([0.0, 3.0, -50.0])),  # a mean far from zero: no cancelling variance
        "frozen": bool(rng.random() < 0.15),  # trainable=False: inference mode even when training (Keras)
        "calls": [call_opts(rng) for _ in range(5)],
    }


def check_batchnorm_case(case: dict[str, Any], dtype: np.dtype) -> None:
    """Three training calls, then two eval calls: outputs, gradients and running statistics as PyTorch's.

    A frozen layer (``trainable=False``) runs as PyTorch's eval mode in all five.
    """
    rng = np.random.default_rng((*case["seed"], 3))
    c = case["shape"][1]
    with default_dtype(dtype):
        layer = BatchNorm(
            c,
            eps=case["eps"],
            momentum=case["momentum"],
            affine=case["affine"],
            track_running_stats=case["track"],
        )
    if layer.weight is not None:
        layer.weight.data[...] = 1 + 0.5 * rng.standard_normal(c)
        layer.bias.data[...] = rng.standard_normal(c)
    if case["track"]:
        layer.running_mean.data[...] = rng.standard_normal(c)
        layer.running_var.data[...] = rng.uniform(0.5, 2.0, c)
    layer.trainable = not case["frozen"]
    weight = None if layer.weight is None else layer.weight.data.copy()
    bias = None if layer.bias is None else layer.bias.data.copy()
    running = (
        [tensor(layer.running_mean.data), tensor(layer.running_var.data)] if case["track"] else [None, None]
    )
    for step, opts in enumerate(case["calls"]):
        training = step < 3
        updates = 0 if case["frozen"] else min(step + 1, 3)
        opts = {**opts, "training": training}
        scale = rng.uniform(0.1, 3.0, size=(1, c) + (1,) * (len(case["shape"]) - 2))
        # float32 carries a mean of -50 over two values only to ~1e-3 of their spread (as PyTorch's float32)
        offset = case["offset"] if dtype == F64 else float(np.clip(case["offset"], -3.0, 3.0))
        x = (offset + scale * rng.standard_normal(case["shape"])).astype(dtype)
        use_batch = (training and not case["frozen"]) or not case["track"]

        def fn(xt, wt, bt, use_batch=use_batch):
            rm, rv = (running_state(t, xt) for t in running)
            return F.batch_norm(xt, rm, rv, wt, bt, use_batch, case["momentum"], case["eps"])

        ref = torch_run(fn, x, [weight, bias], lambda s: rng.standard_normal(s).astype(dtype))
        ours = run_ours(layer, x, ref[1], opts)
        compare(ours, ref, dtype, ["weight", "bias"], opts)
        if case["track"]:
            close(
                layer.running_mean.data, running[0].detach().numpy(), dtype, f"running_mean after call {step}"
            )
            close(
                layer.running_var.data, running[1].detach().numpy(), dtype, f"running_var after call {step}"
            )
            assert layer.num_batches_tracked == updates
        else:
            assert layer.running_mean is None and layer.running_var is None


BATCHNORM_CASES = [batchnorm_case((6, i)) for i in range(30)]


@requires_torch
@pytest.mark.parametrize("dtype", [F64, F32], ids=["float64", "float32"])
def test_batchnorm_train_eval_and_running_stats_match_torch(dtype):
    failures, cases = [], for_dtype(BATCHNORM_CASES, dtype)
    for case in cases:
        try:
            check_batchnorm_case(case, dtype)
        except AssertionError as error:
            failures.append(f"[{case}] {str(error)[:500]}")
    assert not failures, failures_report(failures, len(cases))


# -- GroupNorm, InstanceNorm, LayerNorm, RMSNorm -----------------------------------------------------------


def norm_case(seed: Any, kind: str) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    n, c = int(rng.integers(1, 10)), int(rng.integers(1, 21))
    if kind == "group":
        rank = int(rng.choice([2, 3, 4, 5]))
    elif kind == "instance1d":
        rank = 3
    elif kind == "instance2d":
        rank = 4
    else:
        rank = int(rng.choice([2, 3, 4]))
    spatial = [int(v) for v in rng.integers(1, 10, rank - 2)]
    if kind.startswith("instance") and math.prod(spatial) < 2:
        spatial[-1] = 2  # PyTorch refuses one value per instance in training (see the test below)
    shape = (n, c, *spatial)
    divisors = [d for d in range(1, c + 1) if c % d == 0]
    return {
        "seed": seed,
        "kind": kind,
        "shape": shape,
        "groups": int(rng.choice(divisors)),
        "normalized": int(rng.integers(1, rank)),  # how many trailing axes LayerNorm/RMSNorm normalise
        "affine": bool(rng.random() < 0.6),
        "bias": bool(rng.random() < 0.7),
        "track": bool(rng.random() < 0.5),
        "eps": [1e-5, 1e-3, 0.5, None][int(rng.integers(0, 4 if kind == "rms" else 3))],
        "momentum": float(rng.choice([0.1, 0.5, 1.0])),
        "offset": float(rng.choice([0.0, 3.0, -20.0])),
        "calls": [call_opts(rng) for _ in range(3)],
    }


def check_norm_case(case: dict[str, Any], dtype: np.dtype) -> None:
    rng = np.random.default_rng((*case["seed"], 3))
    kind, shape, eps = case["kind"], case["shape"], case["eps"]
    c = shape[1]
    trailing = shape[len(shape) - case["normalized"] :]
    with default_dtype(dtype):
        if kind == "group":
            layer = GroupNorm(case["groups"], c, eps=eps, affine=case["affine"])
        elif kind.startswith("instance"):
            cls = InstanceNorm1d if kind == "instance1d" else InstanceNorm2d
            layer = cls(
                c,
                eps=eps,
                momentum=case["momentum"],
                affine=case["affine"],
                track_running_stats=case["track"],
            )
        elif kind == "layer":
            layer = LayerNorm(trailing, eps=eps, elementwise_affine=case["affine"], bias=case["bias"])
        else:
            layer = RMSNorm(trailing, eps=eps, elementwise_affine=case["affine"])
    for p in layer.parameters():
        p.data[...] = (1.0 if p is getattr(layer, "weight", None) else 0.0) + 0.5 * rng.standard_normal(
            p.shape
        )
    names = [n for n in ("weight", "bias") if getattr(layer, n, None) is not None]
    params = {n: getattr(layer, n).data.copy() for n in names}
    running = (
        [tensor(np.zeros(c)), tensor(np.ones(c))] if case["track"] and kind.startswith("instance") else None
    )
    for step, opts in enumerate(case["calls"]):
        training = step < 2
        opts = {**opts, "training": training}
        x = (case["offset"] + rng.uniform(0.1, 3.0) * rng.standard_normal(shape)).astype(dtype)
        w, b = params.get("weight"), params.get("bias")

        if kind == "group":
            # the ATen op: F.group_norm refuses N*C/G == 1 without spatial axes (one value per group is fine)
            fn = lambda xt, wt, bt: torch.group_norm(xt, case["groups"], wt, bt, eps)  # noqa: E731
        elif kind.startswith("instance"):
            use_input = training or not case["track"]
            rm, rv = running if running is not None else (None, None)
            fn = lambda xt, wt, bt, u=use_input, rm=rm, rv=rv: F.instance_norm(  # noqa: E731
                xt, running_state(rm, xt), running_state(rv, xt), wt, bt, u, case["momentum"], eps
            )
        elif kind == "layer":
            fn = lambda xt, wt, bt: F.layer_norm(xt, trailing, wt, bt, eps)  # noqa: E731
        else:
            fn = lambda xt, wt, bt: F.rms_norm(xt, trailing, wt, eps)  # noqa: E731

        ref = torch_run(fn, x, [w, b], lambda s: rng.standard_normal(s).astype(dtype))
        ours = run_ours(layer, x, ref[1], opts)
        compare(ours, ref, dtype, ["weight", "bias"], opts)
        if running is not None:
            close(
                layer.running_mean.data, running[0].detach().numpy(), dtype, f"running_mean after call {step}"
            )
            close(
                layer.running_var.data, running[1].detach().numpy(), dtype, f"running_var after call {step}"
            )
            assert layer.num_batches_tracked == min(step + 1, 2)


NORM_CASES = [
    norm_case((7, k, i), kind)
    for k, kind in enumerate(("group", "instance1d", "instance2d", "layer", "rms"))
    for i in range(16)
]


@requires_torch
@pytest.mark.parametrize("dtype", [F64, F32], ids=["float64", "float32"])
def test_group_instance_layer_rms_norms_match_torch(dtype):
    failures, cases = [], for_dtype(NORM_CASES, dtype)
    for case in cases:
        try:
            check_norm_case(case, dtype)
        except AssertionError as error:
            failures.append(f"[{case}] {str(error)[:500]}")
    assert not failures, failures_report(failures, len(cases))


# -- several calls at once: pending contexts, shared graph nodes, threads ----------------------------------

STATE_MODES = [("im2col", 1), ("grid", 2), ("batch_last", 1), ("batch_last", 2), ("natural", 2)]
STATE_IDS = [f"{m}-{t}thr" for m, t in STATE_MODES]
# groups 1 and a column stride of 1: every lowering applies to these
FOLDABLE = [
    c for c in CONV2D_CASES if c["groups"] == 1 and np.atleast_1d(c["stride"])[-1] == 1 and c["n"] > 1
][:12]
# (case, ndim): the foldable Conv2d cases, some grouped ones (im2col whatever the thresholds) and Conv1d
PENDING = (
    [(c, 2) for c in FOLDABLE]
    + [(c, 2) for c in CONV2D_CASES if c["groups"] > 1][:4]
    + [(c, 1) for c in CONV1D_CASES if c["groups"] == 1 and c["stride"] == 1][:4]
)


def torch_conv_grads(case: dict[str, Any], layer: Any, x: np.ndarray, g: np.ndarray, ndim: int = 2) -> tuple:
    """PyTorch's ``(y, dx, dW, db)`` of one call of the case's convolution (float64)."""
    conv = F.conv2d if ndim == 2 else F.conv1d
    act = ACTIVATIONS[case["activation"]]

    def fn(xt, wt, bt):
        return act(conv(xt, wt, bt, case["stride"], case["padding"], case["dilation"], case["groups"]))

    bias = None if layer.bias is None else layer.bias.data
    y, _, dx, (dw, db), _ = torch_run(fn, x, [layer.weight.data, bias], lambda shape: g)
    return y, dx, dw, db


@requires_torch
@pytest.mark.parametrize("mode, threads", STATE_MODES, ids=STATE_IDS)
def test_pending_calls_hold_their_own_workspace(mode, threads):
    """Forwards of one shape before their backwards, interleaved with record=False calls, in any order.

    A case an earlier mode of ``STATE_MODES`` runs through the same lowering on as many threads (a
    grouped one under ``grid`` and ``batch_last``, which fall back to im2col) is left to that mode.
    """
    index = STATE_MODES.index((mode, threads))
    for case, ndim in PENDING:
        if repeats(case, ndim, STATE_MODES)[index]:
            continue
        layer = conv_layer(case, F64, ndim)
        rng = np.random.default_rng((*case["seed"], 21))
        xs = [rng.standard_normal((case["n"], case["cin"], *case["size"])) for _ in range(3)]
        with lowering(mode, threads):
            shape = layer.forward(Context(False, record=False), xs[0]).shape
            gs = [rng.standard_normal(shape) for _ in range(3)]
            key = ("pending", case["seed"], ndim)  # the same calls under every mode
            if key not in _REFERENCES:
                _REFERENCES[key] = [torch_conv_grads(case, layer, x, g, ndim) for x, g in zip(xs, gs)]
            ref = _REFERENCES[key]
            layer.zero_grad()
            order = [0, 1, 2, 0]  # four calls of one shape, the first input twice
            ctxs, ys = [], []
            for k in order[:3]:
                ctxs.append(Context(True))
                ys.append(layer.forward(ctxs[-1], xs[k]).copy())
                layer.forward(Context(False, record=False), xs[(k + 1) % 3])  # takes and gives back a buffer
            dxs = {1: layer.backward(ctxs[1], gs[1])}  # gives its buffer back...
            ctxs.append(Context(True))
            ys.append(layer.forward(ctxs[3], xs[0]).copy())  # ...which this call takes
            for i in (0, 3, 2):
                dxs[i] = layer.backward(ctxs[i], gs[order[i]])
        what = f"{mode}: {conv_describe(case)}"
        for i, k in enumerate(order):
            close(ys[i], ref[k][0], F64, f"output of call {i}, {what}")
            close(dxs[i], ref[k][1], F64, f"dx of call {i}, {what}")
        close(layer.weight.grad, 2 * ref[0][2] + ref[1][2] + ref[2][2], F64, f"dW, {what}")
        if layer.bias is not None:
            close(layer.bias.grad, 2 * ref[0][3] + ref[1][3] + ref[2][3], F64, f"db, {what}")


def _graph(conv: Any, shape: tuple[int, ...]) -> Any:
    """``conv(conv(x)) + conv(x)``: one layer at three nodes, two of them pending on one input shape."""
    from framework import Input, Model
    from framework.layers import Add

    x = Input(shape[1:])
    h = conv(x)
    return Model(x, Add()([conv(h), conv(x)]))


def _graph_reference(conv: Any, dilation: Any, x: np.ndarray, g: np.ndarray) -> tuple[Any, ...]:
    """PyTorch's ``(y, dx, dW, db)`` of :func:`_graph`'s ``conv(conv(x)) + conv(x)``, backward of ``g``."""
    xt, wt = tensor(x, grad=True), tensor(conv.weight.data, grad=True)
    bt = tensor(None if conv.bias is None else conv.bias.data, grad=True)

    def tconv(t):
        return torch.tanh(F.conv2d(t, wt, bt, padding="same", dilation=dilation))

    yt = tconv(tconv(xt)) + tconv(xt)
    yt.backward(tensor(g))
    return yt.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), None if bt is None else bt.grad.numpy()


@requires_torch
@pytest.mark.parametrize("mode, threads", STATE_MODES, ids=STATE_IDS)
def test_layer_shared_by_three_graph_nodes_matches_torch(mode, threads):
    rng = np.random.default_rng(31)
    for i, (c, k, dilation, bias) in enumerate(
        [
            (8, 3, 1, True),
            (16, (5, 3), (2, 1), False),
            (3, 1, 1, True),
            (12, 4, 2, True),
        ]
    ):
        with default_dtype(F64):
            conv = Conv2d(c, c, k, padding="same", dilation=dilation, bias=bias, activation="tanh")
            conv.weight.data[...] = rng.standard_normal(conv.weight.shape) / math.sqrt(c * 9)
            model = _graph(conv, (4, c, 9, 7))
        x = rng.standard_normal((4, c, 9, 7))
        g = rng.standard_normal(x.shape)
        key = ("graph", i)  # the same draws under every mode
        if key not in _REFERENCES:
            _REFERENCES[key] = _graph_reference(conv, dilation, x, g)
        ry, rdx, rdw, rdb = _REFERENCES[key]
        model.zero_grad()
        with lowering(mode, threads):
            ctx = Context(True)
            y = model.forward(ctx, x)
            dx = model.backward(ctx, g)
        close(y, ry, F64, "output")
        close(dx, rdx, F64, "dx")
        close(conv.weight.grad, rdw, F64, "dW")
        if bias:
            close(conv.bias.grad, rdb, F64, "db")


def _cnn(rng: np.random.Generator) -> tuple[Any, Any]:
    """A Sequential CNN over every layer family and its PyTorch twin (same parameters)."""
    from framework import Sequential
    from framework.layers import Flatten, Linear, ReLU

    with default_dtype(F64):
        ours = Sequential(
            [
                Conv2d(3, 16, 3, padding=1, bias=False),  # 27 rows: the first layer, no dx under fit
                BatchNorm(16),
                ReLU(),
                MaxPool2d(2, ceil_mode=True),  # the ReLU runs after it (Sequential's swap)
                Conv2d(16, 12, (3, 2), stride=(1, 1), padding=(1, 0), dilation=(1, 2)),  # 96 rows
                GroupNorm(3, 12),
                ReLU(),
                Conv2d(12, 12, 3, padding=1, groups=3),
                AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
                InstanceNorm2d(12, affine=True, track_running_stats=True),
                Conv2d(12, 8, 1),
                Flatten(),
                Linear(8 * 4 * 2, 5),
            ]
        )
    for p in ours.parameters():
        p.data[...] = (
            rng.standard_normal(p.shape) / math.sqrt(max(p.data[0].size, 1)) + (p.data.ndim == 1) * 0.5
        )
    t = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1, bias=False),
        torch.nn.BatchNorm2d(16),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2, ceil_mode=True),
        torch.nn.Conv2d(16, 12, (3, 2), padding=(1, 0), dilation=(1, 2)),
        torch.nn.GroupNorm(3, 12),
        torch.nn.ReLU(),
        torch.nn.Conv2d(12, 12, 3, padding=1, groups=3),
        torch.nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
        torch.nn.InstanceNorm2d(12, affine=True, track_running_stats=True),
        torch.nn.Conv2d(12, 8, 1),
        torch.nn.Flatten(),
        torch.nn.Linear(64, 5),
    ).double()
    pairs = list(zip(ours.layers, t))
    with torch.no_grad():
        for mine, theirs in pairs:
            for name, value in theirs.state_dict().items():
                if not name.endswith("num_batches_tracked"):
                    value.copy_(torch.from_numpy(getattr(mine, name).data))
    return pairs, ours, t


def _named_state(pairs: list[tuple[Any, Any]], kind: str) -> list[tuple[str, Any, Any]]:
    """``(name, ours, theirs)`` of every parameter (``kind="parameters"``) or buffer of the twin models."""
    found = []
    for i, (mine, theirs) in enumerate(pairs):
        for name, value in getattr(theirs, f"named_{kind}")():
            if not name.endswith("num_batches_tracked"):
                found.append((f"{i}.{name}", getattr(mine, name), value))
    return found


CNN_STEPS = [(True, False), (True, True), (False, True), (True, False)]  # (training, needs_input_grad)


def _cnn_torch_steps(pairs: list[tuple[Any, Any]], t: Any, data: list[tuple[np.ndarray, np.ndarray]]) -> list:
    """The twin's ``(y, dx, {name: gradient}, {name: buffer})`` after each of ``CNN_STEPS`` on ``data``."""
    steps = []
    for (training, _), (x, g) in zip(CNN_STEPS, data):
        t.train(training)
        xt = tensor(x, grad=True)
        t.zero_grad()
        yt = t(xt)
        yt.backward(tensor(g))
        grads = {name: theirs.grad.numpy().copy() for name, _, theirs in _named_state(pairs, "parameters")}
        buffers = {name: theirs.numpy().copy() for name, _, theirs in _named_state(pairs, "buffers")}
        steps.append((yt.detach().numpy(), xt.grad.numpy(), grads, buffers))
    return steps


@requires_torch
@pytest.mark.parametrize("mode, threads", STATE_MODES, ids=STATE_IDS)
def test_sequential_cnn_with_fit_flags_matches_torch(mode, threads):
    """Sequential passes grad_out_writable along the chain and needs_input_grad=False to the first layer."""
    rng = np.random.default_rng(41)
    pairs, ours, t = _cnn(rng)
    data = [(rng.standard_normal((6, 3, 13, 11)), rng.standard_normal((6, 5))) for _ in CNN_STEPS]
    if "cnn-steps" not in _REFERENCES:  # the same draws under every mode
        _REFERENCES["cnn-steps"] = _cnn_torch_steps(pairs, t, data)
    for step, ((training, needs_input_grad), (x, g), (ry, rdx, rgrads, rbuffers)) in enumerate(
        zip(CNN_STEPS, data, _REFERENCES["cnn-steps"])
    ):
        for p in ours.parameters():
            p.zero_grad(lazy=True)
        with lowering(mode, threads):
            ctx = Context(training, needs_input_grad=needs_input_grad)
            y = ours.forward(ctx, x)
            dx = ours.backward(ctx, g.copy())
        what = f"step {step} (training={training}, needs_input_grad={needs_input_grad})"
        close(y, ry, F64, f"output, {what}")
        if needs_input_grad:
            close(dx, rdx, F64, f"dx, {what}")
        else:
            assert dx is None
        for name, mine, _ in _named_state(pairs, "parameters"):
            close(mine.grad, rgrads[name], F64, f"d{name}, {what}")
        for name, mine, _ in _named_state(pairs, "buffers"):
            close(mine.data, rbuffers[name], F64, f"{name}, {what}")


def _cnn_torch_sgd(pairs: list[tuple[Any, Any]], t: Any, x: np.ndarray, target: np.ndarray) -> dict:
    """The twin's ``{name: value}`` of parameters and buffers after two epochs of SGD in batches of 4."""
    opt = torch.optim.SGD(t.parameters(), lr=0.01, momentum=0.9)
    t.train()
    for _ in range(2):
        for batch in (slice(0, 4), slice(4, 8)):
            opt.zero_grad()
            F.mse_loss(t(tensor(x[batch])), tensor(target[batch])).backward()
            opt.step()
    state = _named_state(pairs, "parameters") + _named_state(pairs, "buffers")
    return {name: theirs.detach().numpy() for name, _, theirs in state}


FIT_RUNS = [
    ("im2col", 1, 1),
    ("grid", 2, 1),
    ("batch_last", 2, 1),
    ("natural", 1, 1),
    ("grid", 2, 2),
    ("batch_last", 1, 3),
]


@requires_torch
@pytest.mark.parametrize("mode, threads, fit_threads", FIT_RUNS)
def test_fit_steps_of_the_cnn_match_torch_sgd(mode, threads, fit_threads):
    """``fit``'s path: needs_input_grad=False, lazily zeroed gradients, running statistics, batch shards.

    ``fit(threads=K)`` splits each batch over K threads (BatchNorm adds the shards' sums; each thread
    has its own workspace pool).
    """
    import framework.optimizers

    rng = np.random.default_rng(43)
    pairs, ours, t = _cnn(rng)
    x = rng.standard_normal((8, 3, 13, 11))
    target = rng.standard_normal((8, 5))
    if "cnn-sgd" not in _REFERENCES:  # the same draws for every run
        _REFERENCES["cnn-sgd"] = _cnn_torch_sgd(pairs, t, x, target)
    ours.compile(optimizer=framework.optimizers.get("sgd", learning_rate=0.01, momentum=0.9), loss="mse")
    with lowering(mode, threads):
        ours.fit(x, target, batch_size=4, epochs=2, shuffle=False, verbose=0, threads=fit_threads)
    for name, mine, _ in _named_state(pairs, "parameters") + _named_state(pairs, "buffers"):
        close(mine.data, _REFERENCES["cnn-sgd"][name], F64, name)


@requires_torch
@pytest.mark.parametrize("mode, threads", [("im2col", 1), ("grid", 2), ("batch_last", 2)])
def test_threads_running_one_layer_get_torch_results(mode, threads):
    """Two threads, each with its own contexts and workspace pool, forward and backward one layer at once."""
    import threading

    case = FOLDABLE[0]
    layer = conv_layer(case, F64)
    rng = np.random.default_rng(51)
    xs = [rng.standard_normal((case["n"], case["cin"], *case["size"])) for _ in range(4)]
    shape = layer.forward(Context(False, record=False), xs[0]).shape
    gs = [rng.standard_normal(shape) for _ in range(4)]
    if "threads" not in _REFERENCES:  # the same draws under every mode
        _REFERENCES["threads"] = [torch_conv_grads(case, layer, x, g) for x, g in zip(xs, gs)]
    ref = _REFERENCES["threads"]
    results: dict[int, list[Any]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def run(worker):
        try:
            start.wait()
            out = []
            for _ in range(15):
                ctxs = [Context(True) for _ in (0, 1)]
                ys = [layer.forward(c, xs[2 * worker + i]) for i, c in enumerate(ctxs)]
                dxs = [layer.backward(c, gs[2 * worker + i]) for i, c in reversed(list(enumerate(ctxs)))]
                out.append((ys, dxs[::-1]))
            results[worker] = out
        except BaseException as error:  # reported below
            errors.append(error)

    with lowering(mode, threads):
        workers = [threading.Thread(target=run, args=(w,)) for w in (0, 1)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    assert errors == []
    for worker, out in results.items():
        for ys, dxs in out:
            for i in (0, 1):
                close(ys[i], ref[2 * worker + i][0], F64, "output")
                close(dxs[i], ref[2 * worker + i][1], F64, "dx")


# -- the lowerings' thresholds: shapes at and around them --------------------------------------------------

# (in_channels, kernel): C*kh*kw of 63, 64 and 65, about GRID_MIN_DEPTH = BATCH_LAST_MIN_DEPTH = 64
DEPTHS = [(7, (3, 3)), (16, (2, 2)), (13, (1, 5)), (8, (2, 4)), (21, (3, 1)), (64, (1, 1)), (65, (1, 1))]
# (OH, OW): OH*OW about BATCH_LAST_MAX_POSITIONS = 128, and OW about Wp / GRID_MAX_WASTE for each kw
TARGETS = [
    (16, 8),
    (16, 7),
    (18, 7),
    (19, 7),
    (8, 16),
    (8, 17),
    (7, 17),
    (15, 9),
    (14, 9),
    (1, 127),
    (1, 129),
    (4, 12),
]


def threshold_cases() -> list[dict[str, Any]]:
    cases = []
    for i, ((cin, (kh, kw)), (oh, ow)) in enumerate((d, t) for d in DEPTHS for t in TARGETS):
        rng = np.random.default_rng((8, i))
        sh = int(rng.choice([1, 1, 2]))
        ph, pw = int(rng.integers(0, 2)), int(rng.integers(0, 2))
        h, w = (oh - 1) * sh + kh - 2 * ph, ow + kw - 1 - 2 * pw
        if h < 1 or w < 1:
            ph, pw = 0, 0
            h, w = (oh - 1) * sh + kh, ow + kw - 1
        cases.append(
            {
                "seed": (8, i),
                "n": int(rng.integers(1, 5)),
                "cin": cin,
                "cout": int(rng.integers(1, 9)),
                "kernel": (kh, kw),
                "stride": (sh, 1),
                "padding": (ph, pw),
                "dilation": 1,
                "groups": 1,
                "bias": bool(rng.random() < 0.7),
                "activation": None,
                "size": (h, w),
                "opts": call_opts(rng),
            }
        )
    return cases


THRESHOLD_CASES = threshold_cases()


@requires_torch
@pytest.mark.parametrize("mode, threads", CONV_MODES, ids=[f"{m}-{t}thr" for m, t in CONV_MODES])
def test_conv2d_at_the_lowering_thresholds_matches_torch(mode, threads):
    taken = run_conv_cases(THRESHOLD_CASES, F64, 2, mode, threads, CONV_MODES)
    if mode == "natural":  # both sides of every threshold are met (compiled, batch-last replaces the grid)
        grid = threads == 2 and not (jit.enabled() and conv_base.BATCH_LAST_COMPILED)
        expected = {"im2col", "batch_last", "grid"} if grid else {"im2col", "batch_last"}
        if jit.enabled() and jit.first_use_kernels():  # the direct lowering takes the stride-1 ones it may
            expected.add("direct")
        assert set(taken) == expected, taken
        assert min(n for lowering, n in taken.items() if lowering != "direct") >= 8, taken


# -- returns_fresh_grad: the returned dL/dx is the caller's to overwrite -----------------------------------


def _fresh_grad_layers() -> list[tuple[str, Any, tuple[int, ...], bool]]:
    """``(id, layer, input shape, training)`` of every spatial layer that declares ``returns_fresh_grad``."""
    rng = np.random.default_rng(61)
    with default_dtype(F64):
        made = [
            ("conv2d", Conv2d(8, 6, 3, padding=1), (3, 8, 6, 5), True),
            ("conv2d-1x1-n1", Conv2d(8, 6, 1), (1, 8, 4, 4), True),
            ("conv2d-groups", Conv2d(8, 6, 3, groups=2, stride=(1, 2)), (3, 8, 6, 7), True),
            ("conv1d", Conv1d(5, 4, 3, padding="same"), (2, 5, 9), True),
            (
                "conv-transpose2d",
                ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1),
                (2, 4, 3, 4),
                True,
            ),
            ("maxpool2d", MaxPool2d(2), (2, 3, 6, 6), True),
            ("maxpool2d-eval", MaxPool2d(3, stride=2, padding=1, ceil_mode=True), (2, 3, 7, 6), False),
            ("maxpool1d", MaxPool1d(1), (2, 3, 5), True),
            ("avgpool2d", AvgPool2d(2, stride=1), (2, 3, 5, 4), True),
            ("avgpool1d", AvgPool1d(3, stride=3), (2, 3, 9), True),
            ("global-avg", GlobalAvgPool2d(), (2, 3, 4, 5), True),
            ("batchnorm-train", BatchNorm(3), (4, 3, 2, 2), True),
            ("batchnorm-eval", BatchNorm(3), (4, 3, 2, 2), False),
            ("batchnorm-2d-eval", BatchNorm(3), (4, 3), False),
            ("layernorm", LayerNorm((4, 5)), (2, 3, 4, 5), True),
        ]
    for _, layer, _, _ in made:
        assert layer.returns_fresh_grad
        for p in layer.parameters():
            p.data[...] = rng.standard_normal(p.shape)
    return made


FRESH = _fresh_grad_layers()


FRESH_RUNS = [
    (*entry, mode, threads)
    for entry in FRESH
    for mode, threads in (
        [("im2col", 1), ("grid", 2), ("batch_last", 1), ("direct", 2)]
        if isinstance(entry[1], (Conv1d, Conv2d))
        else [("natural", 1)]
    )
]


@pytest.mark.parametrize(
    "name, layer, shape, training, mode, threads", FRESH_RUNS, ids=[f"{r[0]}-{r[4]}" for r in FRESH_RUNS]
)
def test_returned_gradient_is_fresh_and_may_be_overwritten(name, layer, shape, training, mode, threads):
    """dL/dx shares no memory with what the layer or the caller keeps; scribbling on it changes nothing."""
    rng = np.random.default_rng(62)
    x1, x2 = rng.standard_normal(shape), rng.standard_normal(shape)
    params = layer.parameters()
    with lowering(mode, threads):
        single = []
        for x in (x1, x2):  # each call alone: the reference
            layer.zero_grad()
            ctx = Context(training)
            y = layer.forward(ctx, x)
            g = rng.standard_normal(y.shape)
            single.append((g, layer.backward(ctx, g.copy()), [p.grad.copy() for p in params]))
        (g1, _, grads1), (g2, dx2_alone, grads2) = single
        layer.zero_grad()
        c1, c2 = Context(training), Context(training)
        y1, y2 = layer.forward(c1, x1), layer.forward(c2, x2)
        c1.grad_out_writable = True  # Sequential's flag: the layer may overwrite g1 too
        dx1 = layer.backward(c1, g1.copy())
        for array in [x1, x2, y1, y2, g2] + [p.data for p in params] + [p.grad for p in params]:
            assert not np.shares_memory(dx1, array), name
        dx1[...] = np.nan  # the layer below writes into it
        dx2 = layer.backward(c2, g2)
    np.testing.assert_allclose(dx2, dx2_alone, rtol=1e-12, atol=1e-12)
    for p, a, b in zip(params, grads1, grads2):
        np.testing.assert_allclose(p.grad, a + b, rtol=1e-12, atol=1e-12)


# -- edge cases: non-finite inputs, degenerate statistics, empty batches, refused arguments -----------------


def _pool_grads(layer: Any, tfn: Any, x: np.ndarray, training: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(ours, PyTorch's)`` dL/dx of the sum of the pooled output."""
    ctx = Context(training)
    y = layer.forward(ctx, x)
    ours = layer.backward(ctx, np.ones_like(y))
    xt = tensor(x, grad=True)
    tfn(xt).sum().backward()
    return ours, xt.grad.numpy()


@requires_torch
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_max_pool_routes_the_gradient_of_a_nan_window_to_the_nan(training):
    x = np.array([[[1.0, np.nan, 0.5]]])
    ours, theirs = _pool_grads(MaxPool1d(3), lambda t: F.max_pool1d(t, 3), x, training)
    np.testing.assert_array_equal(ours, theirs)  # PyTorch [[[0, 1, 0]]]; ours [[[0, 0, 1]]]


@requires_torch
def test_max_pool_routes_an_all_minus_inf_window_to_an_input():
    x = np.array([[[-np.inf, 0.0]]])
    ours, theirs = _pool_grads(MaxPool1d(2, padding=1), lambda t: F.max_pool1d(t, 2, padding=1), x)
    np.testing.assert_array_equal(ours, theirs)  # PyTorch [[[1, 1]]]; ours [[[0, 1]]]


@requires_torch
def test_max_pools_propagate_nan_and_ties_go_to_the_first_maximum_as_in_torch():
    x = np.array([[[[1.0, np.nan], [3.0, 3.0]], [[2.0, 2.0], [2.0, 2.0]]]])
    for layer, tfn in [
        (MaxPool2d(2), lambda t: F.max_pool2d(t, 2)),
        (AdaptiveMaxPool2d(1), lambda t: F.adaptive_max_pool2d(t, 1)),
    ]:
        y = layer(x)
        np.testing.assert_array_equal(y, tfn(tensor(x)).numpy())  # NaN propagates
    ours, theirs = _pool_grads(AdaptiveMaxPool2d(1), lambda t: F.adaptive_max_pool2d(t, 1), x)
    np.testing.assert_array_equal(ours, theirs)
    ours, theirs = _pool_grads(MaxPool2d(2), lambda t: F.max_pool2d(t, 2), x[:, 1:])  # ties only
    np.testing.assert_array_equal(ours, theirs)


@requires_torch
def test_batchnorm_refuses_one_value_per_channel_in_training_as_torch():
    x = np.ones((1, 3, 1, 1))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        F.batch_norm(tensor(x), None, None, training=True)
    with pytest.raises(ShapeError, match="more than 1 value per channel"):
        BatchNorm(3).forward(Context(True), x)
    BatchNorm(3).forward(Context(False), x)  # eval normalises with the running estimates


@requires_torch
@pytest.mark.parametrize("cls, shape", [(InstanceNorm1d, (2, 3, 1)), (InstanceNorm2d, (2, 3, 1, 1))])
def test_instance_norm_refuses_one_value_per_instance_in_training(cls, shape):
    x = np.random.default_rng(0).standard_normal(shape)
    with pytest.raises(ValueError, match="more than 1 spatial element"):
        F.instance_norm(tensor(x))
    expected = rf"{cls.__name__} layer: expected more than 1 value per channel and sample when training"
    for layer, training in [  # PyTorch refuses each: they normalise with the input's own statistics
        (cls(3), True),
        (cls(3), False),
        (cls(3, affine=True, track_running_stats=True), True),
    ]:
        with pytest.raises(ShapeError, match=rf"{expected}.*got input of shape \({shape[0]}, 3, 1"):
            layer.forward(Context(training), x)
    # eval with running statistics normalises one value per instance, as PyTorch
    rng = np.random.default_rng(1)
    with default_dtype(F64):
        layer = cls(3, affine=True, track_running_stats=True)
    for t in (layer.weight, layer.bias, layer.running_mean, layer.running_var):
        t.data[...] = rng.uniform(0.5, 1.5, 3)
    ref = torch_run(
        lambda t, w, b: F.instance_norm(
            t, tensor(layer.running_mean.data), tensor(layer.running_var.data), w, b, use_input_stats=False
        ),
        x,
        [layer.weight.data, layer.bias.data],
        lambda s: rng.standard_normal(s),
    )
    ours = run_ours(layer, x, ref[1], {"training": False})
    compare(ours, ref, F64, ["weight", "bias"], {})


@requires_torch
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_instance_norm_normalises_two_values_per_instance_as_torch(training):
    """Two values per instance are statistics (no refusal), in either mode, as PyTorch."""
    x = np.random.default_rng(2).standard_normal((2, 3, 2))
    with default_dtype(F64):
        y = InstanceNorm1d(3).forward(Context(training), x)
    close(y, F.instance_norm(tensor(x)).numpy(), F64, "output")


EMPTY_BATCH = {  # name: (the layer, PyTorch's function of an input tensor and the layer)
    "conv2d": (
        lambda: Conv2d(8, 4, 3, padding=1),
        lambda t, m: F.conv2d(t, tensor(m.weight.data), padding=1),
    ),
    "conv2d-groups": (
        lambda: Conv2d(8, 4, 3, stride=(1, 2), groups=2, activation="relu"),
        lambda t, m: F.conv2d(t, tensor(m.weight.data), stride=(1, 2), groups=2),
    ),
    "conv1d": (
        lambda: Conv1d(8, 4, 3, padding=1),
        lambda t, m: F.conv1d(t, tensor(m.weight.data), padding=1),
    ),
    "batchnorm-eval": (
        lambda: BatchNorm(8),
        lambda t, m: F.batch_norm(t, tensor(np.zeros(8)), tensor(np.ones(8))),
    ),
    "groupnorm": (lambda: GroupNorm(2, 8), lambda t, m: F.group_norm(t, 2)),
    "instancenorm": (lambda: InstanceNorm2d(8), lambda t, m: F.instance_norm(t)),
    # PyTorch writes NaN into the running statistics here (and fails with affine=True): ours stay put
    "instancenorm-running": (
        lambda: InstanceNorm2d(8, affine=True, track_running_stats=True),
        lambda t, m: F.instance_norm(t),
    ),
    "instancenorm-running-eval": (
        lambda: InstanceNorm2d(8, affine=True, track_running_stats=True),
        lambda t, m: F.instance_norm(t),
    ),
    "adaptive-max": (lambda: AdaptiveMaxPool2d(2), lambda t, m: F.adaptive_max_pool2d(t, 2)),
    "conv-transpose2d": (
        lambda: ConvTranspose2d(8, 3, 2, bias=False),
        lambda t, m: F.conv_transpose2d(t, tensor(m.weight.data)),
    ),
    "conv-transpose2d-groups": (
        lambda: ConvTranspose2d(8, 4, 3, stride=2, groups=2),
        lambda t, m: F.conv_transpose2d(t, tensor(m.weight.data), stride=2, groups=2),
    ),
    "maxpool2d": (lambda: MaxPool2d(2), lambda t, m: F.max_pool2d(t, 2)),
    "avgpool2d": (lambda: AvgPool2d(2), lambda t, m: F.avg_pool2d(t, 2)),
    "layernorm": (lambda: LayerNorm((5, 5)), lambda t, m: F.layer_norm(t, (5, 5))),
    "adaptive-avg": (lambda: AdaptiveAvgPool2d(2), lambda t, m: F.adaptive_avg_pool2d(t, 2)),
    "global-avg": (GlobalAvgPool2d, lambda t, m: t.mean(dim=(2, 3))),
}


def check_empty_batch(name: str, mode: str, threads: int, needs_input_grad: bool = True) -> list[str]:
    """An (0, 8, 5, 5) batch ((0, 8, 5) for Conv1d): empty outputs and input gradients of PyTorch's shapes.

    Every parameter receives a zero gradient (PyTorch's: zeros, not ``None``), whichever lowering
    runs; buffers (running statistics) do not move. Returns the convolution lowerings that ran.
    """
    make, tfn = EMPTY_BATCH[name]
    with default_dtype(F64):
        layer = make()
    params = layer.parameters()
    for p in params:
        p.zero_grad(lazy=True)
    buffers = [b.data.copy() for b in layer.buffers()]
    x = np.zeros((0, 8, 5) if name.startswith("conv1d") else (0, 8, 5, 5))
    expected = tuple(tfn(tensor(x), layer).shape)
    with lowering(mode, threads) as taken:
        ctx = Context(not name.endswith("-eval"), needs_input_grad=needs_input_grad)
        y = layer.forward(ctx, x)
        dx = layer.backward(ctx, np.zeros(y.shape))
    assert y.shape == expected and y.dtype == F64, (y.shape, y.dtype)
    if needs_input_grad or dx is not None:
        assert dx.shape == x.shape and dx.dtype == F64, (dx.shape, dx.dtype)
    for p in params:
        assert p.pending_grad() is not None, "no gradient written"
        np.testing.assert_array_equal(p.grad, np.zeros(p.shape))
    for b, before in zip(layer.buffers(), buffers):
        np.testing.assert_array_equal(b.data, before)
    return taken


CONV_EMPTY_MODES = [("im2col", 1), ("grid", 2), ("batch_last", 1), ("natural", 1), ("natural", 2)]
EMPTY_RUNS = [("conv2d", mode, threads) for mode, threads in CONV_EMPTY_MODES] + [
    (n, "natural", 1)
    for n in EMPTY_BATCH
    if n not in ("conv2d", "conv1d", "maxpool2d")  # the max pool: pool_ops.py, tested below
]


@requires_torch
@pytest.mark.parametrize("name, mode, threads", EMPTY_RUNS, ids=[f"{n}-{m}-{t}thr" for n, m, t in EMPTY_RUNS])
def test_an_empty_batch_gives_empty_outputs_and_zero_gradients_as_torch(name, mode, threads):
    taken = check_empty_batch(name, mode, threads)
    if name == "conv2d" and mode != "natural":  # the forced lowering is the one that ran
        assert taken == ([] if mode == "im2col" else [mode]), taken


@requires_torch
def test_an_empty_batch_through_a_max_pool_gives_empty_outputs_as_torch():
    check_empty_batch("maxpool2d", "natural", 1)


@requires_torch
@pytest.mark.parametrize("mode, threads", CONV_EMPTY_MODES[:3], ids=[m for m, _ in CONV_EMPTY_MODES[:3]])
def test_an_empty_batch_as_the_first_layer_under_fit_gives_no_input_gradient(mode, threads):
    check_empty_batch("conv2d", mode, threads, needs_input_grad=False)


@requires_torch
@pytest.mark.parametrize("mode, threads", CONV_EMPTY_MODES, ids=[f"{m}-{t}thr" for m, t in CONV_EMPTY_MODES])
def test_an_empty_batch_through_conv1d_gives_empty_outputs_as_torch(mode, threads):
    check_empty_batch("conv1d", mode, threads)


def test_batchnorm_still_refuses_an_empty_batch_in_training():
    """PyTorch returns an empty output here; ours keeps refusing: no statistics to train on."""
    with pytest.raises(ShapeError, match=r"BatchNorm layer: expected more than 1 value per channel"):
        BatchNorm(8).forward(Context(True), np.zeros((0, 8, 5, 5)))


@requires_torch
@pytest.mark.parametrize("shape", [(4, 3, 2, 5), (4, 3)], ids=["nchw", "nc"])
def test_batchnorm_eval_backward_writes_into_a_writable_grad_out(shape):
    """Under ``grad_out_writable`` eval-mode dL/dx is computed into ``grad_out`` itself, equal to PyTorch's.

    A read-only, an unflagged or a non-contiguous ``grad_out`` (then copied once) is left untouched.
    """
    rng = np.random.default_rng(63)
    with default_dtype(F64):
        layer = BatchNorm(3)
    for t in (layer.weight, layer.bias, layer.running_mean, layer.running_var):
        t.data[...] = rng.uniform(0.5, 1.5, 3)
    x = rng.standard_normal(shape)
    running = tensor(layer.running_mean.data), tensor(layer.running_var.data)
    ref = torch_run(
        lambda t, w, b: F.batch_norm(t, *running, w, b),
        x,
        [layer.weight.data, layer.bias.data],
        lambda s: rng.standard_normal(s),
    )
    for g_layout, writable, in_place in [
        ("c", True, True),
        ("c", False, False),
        ("readonly", True, False),
        ("fortran", True, False),
        ("reversed", True, False),
    ]:
        layer.zero_grad()
        g_in = layout(ref[1].copy(), g_layout)
        ctx = Context(False)
        y = layer.forward(ctx, x)
        ctx.grad_out_writable = writable
        dx = layer.backward(ctx, g_in)
        assert np.shares_memory(dx, g_in) == in_place, (g_layout, writable)
        if not in_place:
            np.testing.assert_array_equal(g_in, ref[1])
        compare((y, dx, {n: p.grad for n, p in layer.named_parameters()}), ref, F64, ["weight", "bias"], {})


@requires_torch
@pytest.mark.parametrize(
    "make, torch_make",
    [
        (
            lambda: Conv2d(2, 2, 3, padding_mode="reflect"),
            lambda: torch.nn.Conv2d(2, 2, 3, padding_mode="reflect"),
        ),
        (
            lambda: Conv1d(2, 2, 3, padding_mode="circular"),
            lambda: torch.nn.Conv1d(2, 2, 3, padding_mode="circular"),
        ),
        (lambda: MaxPool2d(2, dilation=2), lambda: torch.nn.MaxPool2d(2, dilation=2)),
        (lambda: MaxPool2d(2, return_indices=True), lambda: torch.nn.MaxPool2d(2, return_indices=True)),
        (lambda: AvgPool2d(2, divisor_override=3), lambda: torch.nn.AvgPool2d(2, divisor_override=3)),
        (lambda: AvgPool1d(2, divisor_override=3), lambda: torch.nn.AvgPool2d(2, divisor_override=3)),
    ],
    ids=[
        "conv2d-padding_mode",
        "conv1d-padding_mode",
        "maxpool-dilation",
        "maxpool-return_indices",
        "avgpool2d-divisor_override",
        "avgpool1d-divisor_override",
    ],
)
def test_unsupported_torch_arguments_are_refused_not_ignored(make, torch_make):
    torch_make()  # a real PyTorch argument...
    with pytest.raises(TypeError, match="unexpected keyword argument"):  # ...that is refused, not ignored
        make()


@requires_torch
@pytest.mark.parametrize(
    "make, torch_call, error",
    [
        (
            lambda: Conv2d(2, 2, 3, stride=2, padding="same"),
            lambda: F.conv2d(torch.zeros(1, 2, 5, 5), torch.zeros(2, 2, 3, 3), stride=2, padding="same"),
            ConfigError,
        ),
        (
            lambda: ConvTranspose2d(2, 2, 3, stride=2, output_padding=2),
            lambda: F.conv_transpose2d(
                torch.zeros(1, 2, 5, 5), torch.zeros(2, 2, 3, 3), stride=2, output_padding=2
            ),
            ConfigError,
        ),
        (
            lambda: MaxPool2d(2, padding=2),
            lambda: F.max_pool2d(torch.zeros(1, 1, 5, 5), 2, padding=2),
            ConfigError,
        ),
        (
            lambda: AvgPool1d(3, padding=2),
            lambda: F.avg_pool1d(torch.zeros(1, 1, 5), 3, padding=2),
            ConfigError,
        ),
        (
            lambda: Conv2d(4, 6, 3, groups=4),
            lambda: F.conv2d(torch.zeros(1, 4, 5, 5), torch.zeros(6, 1, 3, 3), groups=4),
            ConfigError,
        ),
    ],
    ids=[
        "same-stride-2",
        "output-padding",
        "maxpool-padding",
        "avgpool-padding",
        "groups",
    ],
)
def test_configurations_torch_refuses_are_config_errors(make, torch_call, error):
    if torch_call is not None:
        with pytest.raises(RuntimeError):
            torch_call()
    with pytest.raises(error):
        make()


@requires_torch
def test_batchnorm_momentum_none_is_torch_s_cumulative_average():
    """Once refused with a ConfigError; now PyTorch's cumulative moving average (weight 1/count)."""
    with default_dtype("float64"):
        ours, ref = BatchNorm(3, momentum=None), torch.nn.BatchNorm2d(3, momentum=None).double()
    rng = np.random.default_rng(4)
    for _ in range(3):
        x = rng.normal(1.0, 2.0, (2, 3, 2, 2))
        ours.forward(Context(True), x)
        ref(torch.tensor(x))
    assert ours.momentum is None and ours.num_batches_tracked == int(ref.num_batches_tracked) == 3
    np.testing.assert_allclose(ours.running_mean.data, ref.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours.running_var.data, ref.running_var.numpy(), rtol=1e-12)


@pytest.mark.parametrize(
    "cls, kwargs, shape",
    [
        (Conv2d, {"in_channels": 2, "out_channels": 2, "kernel_size": (3, 6)}, (1, 2, 4, 5)),
        (Conv2d, {"in_channels": 2, "out_channels": 2, "kernel_size": 3, "dilation": 3}, (1, 2, 6, 9)),
        (Conv1d, {"in_channels": 2, "out_channels": 2, "kernel_size": 4, "padding": 1}, (1, 2, 1)),
        (MaxPool2d, {"kernel_size": (2, 4), "padding": (1, 0)}, (1, 2, 3, 3)),
        (AvgPool1d, {"kernel_size": 5, "padding": 2, "ceil_mode": True}, (1, 2, 0)),
    ],
)
def test_kernels_larger_than_the_padded_input_are_shape_errors(cls, kwargs, shape):
    with pytest.raises(ShapeError):
        cls(**kwargs).forward(Context(False), np.zeros(shape))


@requires_torch
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_max_pool2d_nan_and_minus_inf_windows_route_like_torch(training):
    """Several NaNs in a window (PyTorch takes the last), all -inf windows beside the padding, 2-D."""
    nan, inf = np.nan, np.inf
    x = np.array(
        [[[[1.0, nan, 2.0, nan], [nan, 0.5, -inf, -inf], [-inf, -inf, 3.0, 3.0], [-inf, -inf, 1.0, nan]]]]
    )
    for make, tfn in [
        (lambda: MaxPool2d(2), lambda t: F.max_pool2d(t, 2)),
        (lambda: MaxPool2d(3, 1, 1), lambda t: F.max_pool2d(t, 3, 1, 1)),
        (lambda: MaxPool2d(2, 2, 1), lambda t: F.max_pool2d(t, 2, 2, 1)),
    ]:
        ours, theirs = _pool_grads(make(), tfn, x, training)
        np.testing.assert_array_equal(ours, theirs)
