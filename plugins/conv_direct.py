"""The direct lowering of a stride-1 convolution (compiled kernels): no columns, no col2im, no transposes.

Where the compiled kernels run (:func:`framework.runtime.jit.takes`), a
``Conv2d`` of one group and stride 1 reads its taps straight from a padded
copy of its input (:mod:`plugins.direct_kernels`) instead of gathering
``C*kh*kw`` rows of columns for a matrix product:

- forward: ``x`` is padded once into rows ``wp`` wide, and every output row
  of the grid is a sum of shifted rows, written to NCHW with the bias;
- backward: ``G`` is padded once by ``(kh-1)dh`` rows above and ``(kw-1)dw``
  columns on the left. The weight gradient sums ``G``'s grid rows against the
  input's shifted rows; the input gradient is the forward's kernel over that
  padded ``G`` with the flipped, transposed weights (a full convolution), so
  nothing is scattered back.

The lowering serves a layer called on its own (not a step of a model,
``ctx.nested``). It cuts the batch into as many parts as NumPy's BLAS runs
threads now (:func:`framework.runtime.blas.num_threads`), runs them on
numba's threads, and adds each part's weight- and bias-gradient sums at the
end. Inside a model the other layers' matrix products leave OpenBLAS's
worker threads spinning on the other cores for about 0.1 s after each, and
two teams of threads fight for them; the lowerings built on those products
do better there. Measured on a ``Conv1d`` model's training step (two
``Conv1d(.., 5, padding=2)`` on 64x32x200, a pool and a ``Linear``): 49.5 ms
with the batch split over numba's threads, 33.9-34.2 ms on the calling
thread alone, 30.3-31.1 ms on the previous lowering (and a Sequential's
convolutions run batch-last anyway). The padded input is kept on the call's
context (a buffer of the thread's pool, :mod:`plugins.workspace`) until the
backward.

:func:`usable` says where this lowering runs; measured in
``docs/benchmarks.md`` (twelfth round), maths in [the Conv2d
maths](../maths/conv2d.md#the-direct-lowering).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from framework.base.context import Context
from framework.runtime import blas, jit
from plugins import direct_kernels, workspace
from plugins.direct_kernels import LANES, OB, QB, TB, WB

__all__ = [
    "usable",
    "waste",
    "forward_direct",
    "backward_direct",
    "DIRECT_MAX_WASTE",
    "DIRECT_MAX_WASTE_ONE_THREAD",
]

#: The most grid positions computed per output kept, ``ceil(OH*wp / QB) * QB / (OH*OW)``, at two or
#: more threads and at one. The grid computes ``wp`` positions per output row (``OW`` kept) in blocks of
#: ``QB`` (a small image's last block is mostly past its end). Measured forward + backward against the
#: lowering taken otherwise (``python -m benchmarks.conv_lowerings``, float32, batch 32-128): at 1.09-1.75
#: the direct lowering was 1.1-3.6x faster at two threads; at 2.24 (LeNet-5's second layer) 1.2x faster
#: at two threads and 1.1x slower at one; at 1.75 and one thread 1.2x faster or 1.07x slower; at 3.1 and
#: 7 (5x5 on 10x10, 3x3 on 6x6, unpadded) 1.2-3.3x slower. Few taps need no limit: first layers of 1-3
#: channels (9-27 taps) were 1.6-3.6x faster.
DIRECT_MAX_WASTE = 2.5
DIRECT_MAX_WASTE_ONE_THREAD = 1.6


def usable(layer: Any, ctx: Context, x: np.ndarray) -> bool:
    """Whether the direct lowering runs ``layer`` on ``x`` (NCHW, any memory layout: it is copied once
    when not C-contiguous): float32 or float64 as the weight, compiled kernels on, numba importing
    (:func:`framework.runtime.jit.first_use_kernels`: this family has no ahead-of-time build),
    a call on its own (not a step of a model: see the module's text), one group, stride 1, a non-empty
    batch and few wasted grid positions (:func:`waste`, at most ``DIRECT_MAX_WASTE``, or
    ``DIRECT_MAX_WASTE_ONE_THREAD`` when BLAS runs one thread)."""
    (kh, kw), stride, ((top, bottom), (left, right)), (dh, dw) = layer._geometry2d
    if ctx.nested or layer.groups != 1 or stride != (1, 1) or x.ndim != 4 or x.shape[0] == 0:
        return False
    oh = x.shape[2] + top + bottom - dh * (kh - 1)
    wp = x.shape[3] + left + right
    limit = DIRECT_MAX_WASTE if blas.num_threads() >= 2 else DIRECT_MAX_WASTE_ONE_THREAD
    if waste(oh, wp, wp - dw * (kw - 1)) > limit:
        return False
    weight = layer.weight.data
    if weight.dtype != x.dtype or not weight.flags.c_contiguous:
        return False
    return jit.takes(weight) and jit.first_use_kernels()


def waste(oh: int, wp: int, ow: int) -> float:
    """Grid positions computed per output kept: ``ceil(OH*wp / QB) * QB / (OH*OW)``."""
    return _up(oh * wp, QB) / (oh * ow)


def _up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


@dataclass(frozen=True)
class _Plan:
    """The flat layouts of one input shape: sizes, tap offsets, lengths (see the module's text)."""

    wp: int  # padded row width
    oh: int
    ow: int
    plane: int  # values per padded input plane
    src_len: int  # values per sample of the padded input
    taps: np.ndarray  # (C*kh*kw,) offsets of the forward's taps
    wtaps: np.ndarray  # (Kp,) the same, padded to a multiple of TB with offset 0
    qlen: int  # grid positions the weight gradient sums over (a multiple of LANES)
    gplane: int  # values per plane of the padded output gradient
    gbase: int  # where the output gradient's grid starts in its plane
    xtaps: np.ndarray  # (O*kh*kw,) offsets of the input gradient's taps
    xbase: int  # where the input gradient's grid starts


@lru_cache(maxsize=64)
def _plan(geometry: Any, sample: tuple[int, int, int], out_channels: int) -> _Plan:
    """The plan for one sample's shape ``(C, H, W)``: the batch size plays no part in it."""
    (kh, kw), _, ((top, bottom), (left, right)), (dh, dw) = geometry
    c, h, w = sample
    hp, wp = h + top + bottom, w + left + right
    oh, ow = hp - dh * (kh - 1), wp - dw * (kw - 1)
    plane = hp * wp
    reach = dh * (kh - 1) * wp + dw * (kw - 1)  # the farthest tap from its grid position
    taps = np.array(
        [ch * plane + i * dh * wp + j * dw for ch in range(c) for i in range(kh) for j in range(kw)], np.int64
    )
    qlen = _up(oh * wp, LANES)
    src_len = _up(max(c * plane, int(taps[-1]) + max(_up(oh * wp, QB), qlen)), LANES)
    wtaps = np.zeros(_up(taps.size, TB), np.int64)
    wtaps[: taps.size] = taps
    xbase = top * wp + left
    gplane = _up(max((oh + 2 * dh * (kh - 1) + 1) * wp, reach + qlen, xbase + reach + _up(h * wp, QB)), LANES)
    offsets = [i * dh * wp + j * dw for i in range(kh) for j in range(kw)]
    xtaps = np.array([o * gplane + offset for o in range(out_channels) for offset in offsets], np.int64)
    for table in (taps, wtaps, xtaps):
        table.flags.writeable = False
    return _Plan(wp, oh, ow, plane, src_len, taps, wtaps, qlen, gplane, reach, xtaps, xbase)


#: Parallel launches one at a time: numba's fallback threading layer (``workqueue``, where OpenMP is
#: missing) aborts the process on two at once; a call that finds the lock taken runs in its own thread.
_launch = threading.Lock()
#: The process that first launched the parallel kernels: OpenMP's threads do not survive a fork, so a
#: forked child runs every part in the calling thread.
_launched_in: int | None = None


def _bounds(n: int) -> np.ndarray:
    """The batch of ``n`` cut into one part per BLAS thread (at most ``n``), as even as can be:
    ``[0, ..., n]``."""
    parts = max(1, min(blas.num_threads(), n))
    return np.array([n * k // parts for k in range(parts + 1)], np.int64)


@contextmanager
def _parallel(parts: int) -> Iterator[bool]:
    """Whether the parts run on numba's threads (held for the block), or in this thread."""
    global _launched_in
    pid = os.getpid()
    if parts < 2 or (_launched_in is not None and _launched_in != pid) or not _launch.acquire(blocking=False):
        yield False
        return
    try:
        _launched_in = pid
        yield True
    finally:
        _launch.release()


def _padded_rows(matrix: np.ndarray, rows: int) -> np.ndarray:
    """``matrix`` ``(R, K)`` with zero rows added up to ``rows``, C-contiguous."""
    out = np.zeros((rows, matrix.shape[1]), matrix.dtype)
    out[: matrix.shape[0]] = matrix
    return out


def forward_direct(layer: Any, ctx: Context, x: np.ndarray) -> np.ndarray:
    """The convolution of ``x`` ``(N, C, H, W)`` by ``layer`` (see :func:`usable`), its padded input kept
    on ``ctx`` for the backward.

    Returns:
        ``(N, O, OH, OW)``, after the layer's fused activation.
    """
    geometry = layer._geometry2d
    o = layer.out_channels
    plan = _plan(geometry, x.shape[1:], o)
    n = x.shape[0]
    x = np.ascontiguousarray(x)
    (top, _), (left, _) = geometry[2]
    src = workspace.take((n, plan.src_len), x.dtype)
    wt = _padded_rows(layer.weight.data.reshape(o, -1), _up(o, OB))
    bias = np.zeros(o, x.dtype) if layer.bias is None else np.ascontiguousarray(layer.bias.data, x.dtype)
    y = np.empty((n, o, plan.oh, plan.ow), x.dtype)
    bounds = _bounds(n)
    with _parallel(bounds.size - 1) as parallel:
        direct_kernels.forward(
            x, (top, left), plan.wp, plan.plane, src, wt, plan.taps, bias, y, bounds, parallel
        )
    if ctx.record:
        ctx.cols, ctx.grid, ctx.direct, ctx.x_shape = src, False, True, x.shape
    else:  # no backward follows: the padded input is spent
        workspace.give_back(src)
    return layer.activation_forward(ctx, layer.activation, y)


def backward_direct(layer: Any, ctx: Context, g: np.ndarray, src: np.ndarray) -> np.ndarray | None:
    """Parameter gradients added; ``dL/dx`` ``(N, C, H, W)`` returned, or ``None`` when the input needs none.

    ``g`` is ``(N, O, OH, OW)``, after the activation's backward; ``src`` the
    forward's padded input.
    """
    geometry = layer._geometry2d
    (kh, kw), _, _, (dh, dw) = geometry
    o, c = layer.out_channels, layer.in_channels
    n = g.shape[0]
    plan = _plan(geometry, ctx.x_shape[1:], o)
    g = np.ascontiguousarray(g, dtype=src.dtype)
    op = _up(o, WB)
    padded_g = workspace.take((n, op * plan.gplane), src.dtype)
    bounds = _bounds(n)
    parts = bounds.size - 1
    dw_parts = np.zeros((parts, op, plan.wtaps.size), src.dtype)
    db_parts = np.zeros((parts, o))
    if ctx.needs_input_grad:
        w = layer.weight.data.reshape(o, c, kh, kw)[:, :, ::-1, ::-1]
        wx = _padded_rows(w.transpose(1, 0, 2, 3).reshape(c, -1), _up(c, OB))
        dx = np.empty(ctx.x_shape, src.dtype)
    else:
        wx, dx = np.zeros((OB, 1), src.dtype), np.empty((0, c, 1, 1), src.dtype)
    geometry_g = (dh * (kh - 1), dw * (kw - 1), plan.wp, plan.gplane, plan.gbase, plan.qlen, plan.xbase)
    with _parallel(parts) as parallel:
        direct_kernels.backward(
            g, src, geometry_g, padded_g, plan.wtaps, dw_parts, db_parts, wx, plan.xtaps, dx, bounds, parallel
        )
    dw_t = dw_parts.sum(axis=0) if parts > 1 else dw_parts[0]
    layer.weight.add_grad(dw_t[:o, : plan.taps.size].reshape(layer.weight.shape))
    if layer.bias is not None:
        layer.bias.add_grad(db_parts.sum(axis=0).astype(src.dtype))
    workspace.give_back(padded_g)
    workspace.give_back(src)
    return dx if ctx.needs_input_grad else None
