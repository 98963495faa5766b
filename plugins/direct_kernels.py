"""The direct convolution's compiled kernels (the ``[jit]`` extra): no columns, the taps read in place.

Every input plane is copied once into a zero-padded buffer whose rows are
``wp`` values wide, laid end to end: plane ``c`` of sample ``n`` starts at
``src[n, c * plane]``. In that flat layout a kernel tap ``(c, i, j)`` is a
fixed offset ``taps[t] = c * plane + i * dh * wp + j * dw``, and the output
position ``(a, b)`` of a stride-1 convolution reads ``src[n, taps[t] + a *
wp + b]``: for consecutive output positions the reads are consecutive. So
the convolution is computed on the *row grid* ``q = a * wp + b`` (``b < wp``,
of which the last ``wp - OW`` columns are discarded) as

    ``grid[o, q] = sum_t w[o, t] * src[n, base + taps[t] + q]``

one tap at a time over blocks of ``QB`` grid positions, the block's sums
held in registers (:func:`block`: an array on the stack, which the compiler
keeps in vector registers because every index into it is a constant once
its loops are unrolled), then cropped to ``(OH, OW)`` with the bias added.
Derivation, and the input and weight gradients, in [the Conv2d
maths](../maths/conv2d.md#the-direct-lowering).

- ``pad_planes``: ``x`` ``(N, C, H, W)`` into the padded flat layout (with
  each plane's sum, for the bias gradient, when asked).
- ``grid_conv``: the formula above, written to ``(N, O, OH, OW)``. The
  input gradient is the same kernel run over the padded output gradient
  with the flipped, transposed weights.
- ``grid_weight_grad``: ``dw[o, t] += sum_n sum_q g[n, o, gbase + q] *
  src[n, taps[t] + q]``, in blocks of 4 filters by 4 taps, 16 positions
  at a time, over 8 samples before each block's sums are reduced.

:func:`forward` and :func:`backward` run them on parts of the batch, one
part per thread of numba's ``parallel=True`` (its OpenMP threads wait for
work spinning, as PyTorch's do: a pool of Python threads that sleep between
calls measured 3.7 against 2.5 ms for the ``conv2d_layer`` step when each
round of steps followed a 0.3 s pause, on this virtual machine), or in the
calling thread for one part. numba's ahead-of-time compiler cannot build
``parallel=True`` functions, so this family is compiled at first use only
(:func:`framework.runtime.jit.compiled_at_first_use`).

Indices into a slice are plain loop counters: an index the compiler cannot
prove non-negative (``taps[t] + q``) keeps NumPy's negative-index check, and
the loops with it neither vectorise nor keep their sums in registers (27 ms
against 1.2 ms for the ``conv2d_layer`` forward, measured). Each kernel works
on the samples ``[n0, n1)``, so that threads can share a batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from framework.runtime.jit import compiled_at_first_use

__all__ = ["OB", "QB", "WB", "TB", "LANES", "forward", "backward"]

#: filters and grid positions per block of :func:`grid_conv` (its 224 sums: 14 float32 vector registers)
OB, QB = 2, 112
#: filters and taps per block of :func:`grid_weight_grad`, and grid positions per step
WB, TB, LANES = 4, 4, 16
#: samples :func:`grid_weight_grad` sums over before reducing a block's lanes
SAMPLES = 8


# What the kernels call, as module globals (set by ``_kernels``): numba keys its cache by a kernel's
# closure, and an intrinsic or dispatcher made anew in every process would miss it every time.
_conv_block: Any = None
_grad_block: Any = None
_pad_planes: Any = None
_grid_conv: Any = None
_grid_weight_grad: Any = None
_forward_part: Any = None
_backward_part: Any = None


@compiled_at_first_use
def _kernels(numba: Any) -> dict[str, Callable[..., Any]]:
    global _conv_block, _grad_block, _pad_planes, _grid_conv, _grid_weight_grad, _forward_part, _backward_part
    from numba.core import cgutils, types
    from numba.extending import intrinsic

    def stack_block(size: int) -> Any:
        """An intrinsic ``block(like)``: a pointer to ``size`` values of ``like``'s dtype on the stack."""

        @intrinsic
        def block(typingctx: Any, like: Any) -> Any:
            def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
                item = context.get_value_type(like.dtype)
                return cgutils.alloca_once(builder, item, size=context.get_constant(types.intp, size))

            return types.CPointer(like.dtype)(like), codegen

        return block

    _conv_block = stack_block(OB * QB)
    _grad_block = stack_block(WB * TB * LANES)
    fast = numba.njit(nogil=True, cache=True, fastmath={"reassoc", "contract", "nsz", "arcp"})
    copy = numba.njit(nogil=True, cache=True)

    @copy
    def pad_planes(
        x: Any, top: int, left: int, wp: int, plane: int, out: Any, sums: Any, n0: int, n1: int
    ) -> None:
        _, c, h, w = x.shape
        zero = np.zeros(1, out.dtype)[0]
        with_sums = sums.shape[0] > 0
        for n in range(n0, n1):
            row = out[n]
            for k in range(row.shape[0]):
                row[k] = zero
            for ch in range(c):
                total = 0.0
                for r in range(h):
                    start = ch * plane + (r + top) * wp + left
                    dst, src = row[start : start + w], x[n, ch, r]
                    part = zero  # one row in the input's dtype, the rows added in float64
                    for k in range(w):
                        dst[k] = src[k]
                        part += src[k]
                    total += part
                if with_sums:
                    sums[ch] += total

    @fast
    def grid_conv(
        src: Any,
        wt: Any,
        taps: Any,
        bias: Any,
        wp: int,
        base: int,
        oh: int,
        ow: int,
        out: Any,
        n0: Any,
        n1: Any,
    ) -> None:
        op, k = wt.shape
        o_real = out.shape[1]
        nq = (oh * wp + QB - 1) // QB
        acc = numba.carray(_conv_block(src), (OB, QB))
        grid = np.empty((op, nq * QB), src.dtype)
        for n in range(n0, n1):
            s = src[n]
            for oi in range(op // OB):
                o0 = oi * OB
                for qi in range(nq):
                    qb = qi * QB
                    for i in range(OB):
                        for lane in range(QB):
                            acc[i, lane] = 0
                    for t in range(k):
                        start = base + taps[t] + qb
                        xs = s[start : start + QB]
                        for i in range(OB):
                            wv = wt[o0 + i, t]
                            for lane in range(QB):
                                acc[i, lane] += wv * xs[lane]
                    for i in range(OB):
                        dst = grid[o0 + i, qb : qb + QB]
                        for lane in range(QB):
                            dst[lane] = acc[i, lane]
            for o in range(o_real):
                b = bias[o]
                for a in range(oh):
                    row, values = out[n, o, a], grid[o, a * wp : a * wp + ow]
                    for col in range(ow):
                        row[col] = values[col] + b

    @fast
    def grid_weight_grad(
        src: Any, g: Any, taps: Any, gbase: int, qlen: int, dw: Any, n0: Any, n1: Any
    ) -> None:
        op, k = dw.shape
        acc = numba.carray(_grad_block(src), (WB * TB, LANES))
        gb = max(gbase, 0)
        for chunk in range((n1 - n0 + SAMPLES - 1) // SAMPLES):
            na = n0 + chunk * SAMPLES
            nb = min(na + SAMPLES, n1)
            for oi in range(op // WB):
                o0 = oi * WB
                for ti in range(k // TB):
                    t0 = ti * TB
                    for r in range(WB * TB):
                        for lane in range(LANES):
                            acc[r, lane] = 0
                    for n in range(na, nb):
                        s, gn = src[n], g[n]
                        g0 = gn[o0, gb : gb + qlen]
                        g1 = gn[o0 + 1, gb : gb + qlen]
                        g2 = gn[o0 + 2, gb : gb + qlen]
                        g3 = gn[o0 + 3, gb : gb + qlen]
                        x0 = s[taps[t0] : taps[t0] + qlen]
                        x1 = s[taps[t0 + 1] : taps[t0 + 1] + qlen]
                        x2 = s[taps[t0 + 2] : taps[t0 + 2] + qlen]
                        x3 = s[taps[t0 + 3] : taps[t0 + 3] + qlen]
                        for qi in range(qlen // LANES):
                            q = qi * LANES
                            for lane in range(LANES):
                                a0, a1, a2, a3 = g0[q + lane], g1[q + lane], g2[q + lane], g3[q + lane]
                                b0, b1, b2, b3 = x0[q + lane], x1[q + lane], x2[q + lane], x3[q + lane]
                                acc[0, lane] += a0 * b0
                                acc[1, lane] += a0 * b1
                                acc[2, lane] += a0 * b2
                                acc[3, lane] += a0 * b3
                                acc[4, lane] += a1 * b0
                                acc[5, lane] += a1 * b1
                                acc[6, lane] += a1 * b2
                                acc[7, lane] += a1 * b3
                                acc[8, lane] += a2 * b0
                                acc[9, lane] += a2 * b1
                                acc[10, lane] += a2 * b2
                                acc[11, lane] += a2 * b3
                                acc[12, lane] += a3 * b0
                                acc[13, lane] += a3 * b1
                                acc[14, lane] += a3 * b2
                                acc[15, lane] += a3 * b3
                    for i in range(WB):
                        for j in range(TB):
                            total = acc[i * TB + j, 0]
                            for lane in range(1, LANES):
                                total += acc[i * TB + j, lane]
                            dw[o0 + i, t0 + j] += total

    _pad_planes, _grid_conv, _grid_weight_grad = pad_planes, grid_conv, grid_weight_grad

    @copy
    def forward_part(
        x: Any,
        top: int,
        left: int,
        wp: int,
        plane: int,
        src: Any,
        wt: Any,
        taps: Any,
        bias: Any,
        y: Any,
        n0: Any,
        n1: Any,
    ) -> None:
        _pad_planes(x, top, left, wp, plane, src, np.zeros(0), n0, n1)
        _grid_conv(src, wt, taps, bias, wp, 0, y.shape[2], y.shape[3], y, n0, n1)

    @copy
    def backward_part(
        g: Any,
        src: Any,
        geometry: Any,
        padded: Any,
        wtaps: Any,
        dw: Any,
        db: Any,
        wx: Any,
        xtaps: Any,
        dx: Any,
        n0: Any,
        n1: Any,
    ) -> None:
        gtop, gleft, wp, gplane, gbase, qlen, xbase = geometry
        _pad_planes(g, gtop, gleft, wp, gplane, padded, db, n0, n1)
        grads = padded.reshape(padded.shape[0], dw.shape[0], gplane)
        _grid_weight_grad(src, grads, wtaps, gbase, qlen, dw, n0, n1)
        if dx.shape[0] > 0:
            zeros = np.zeros(dx.shape[1], dx.dtype)
            _grid_conv(padded, wx, xtaps, zeros, wp, xbase, dx.shape[2], dx.shape[3], dx, n0, n1)

    _forward_part, _backward_part = forward_part, backward_part

    # Two functions, not one compiled twice: numba's cache names an entry by the function, not its flags.
    parallel = numba.njit(nogil=True, cache=True, parallel=True)

    @parallel
    def forward_parallel(
        x: Any,
        top: int,
        left: int,
        wp: int,
        plane: int,
        src: Any,
        wt: Any,
        taps: Any,
        bias: Any,
        y: Any,
        bounds: Any,
    ) -> None:
        for p in numba.prange(bounds.shape[0] - 1):
            _forward_part(x, top, left, wp, plane, src, wt, taps, bias, y, bounds[p], bounds[p + 1])

    @copy
    def forward_serial(
        x: Any,
        top: int,
        left: int,
        wp: int,
        plane: int,
        src: Any,
        wt: Any,
        taps: Any,
        bias: Any,
        y: Any,
        bounds: Any,
    ) -> None:
        for p in range(bounds.shape[0] - 1):
            _forward_part(x, top, left, wp, plane, src, wt, taps, bias, y, bounds[p], bounds[p + 1])

    @parallel
    def backward_parallel(
        g: Any,
        src: Any,
        geometry: Any,
        padded: Any,
        wtaps: Any,
        dw: Any,
        db: Any,
        wx: Any,
        xtaps: Any,
        dx: Any,
        bounds: Any,
    ) -> None:
        for p in numba.prange(bounds.shape[0] - 1):
            _backward_part(
                g, src, geometry, padded, wtaps, dw[p], db[p], wx, xtaps, dx, bounds[p], bounds[p + 1]
            )

    @copy
    def backward_serial(
        g: Any,
        src: Any,
        geometry: Any,
        padded: Any,
        wtaps: Any,
        dw: Any,
        db: Any,
        wx: Any,
        xtaps: Any,
        dx: Any,
        bounds: Any,
    ) -> None:
        for p in range(bounds.shape[0] - 1):
            _backward_part(
                g, src, geometry, padded, wtaps, dw[p], db[p], wx, xtaps, dx, bounds[p], bounds[p + 1]
            )

    return {
        "forward_parallel": forward_parallel,
        "forward_serial": forward_serial,
        "backward_parallel": backward_parallel,
        "backward_serial": backward_serial,
    }


def forward(
    x: np.ndarray,
    pads: tuple[int, int],
    wp: int,
    plane: int,
    src: np.ndarray,
    wt: np.ndarray,
    taps: np.ndarray,
    bias: np.ndarray,
    y: np.ndarray,
    bounds: np.ndarray,
    parallel: bool,
) -> None:
    """Pad ``x`` ``(N, C, H, W)`` into ``src`` ``(N, L)`` (planes ``plane`` apart, rows ``wp`` wide, offset
    by ``pads = (top, left)``) and write ``y[n, o, a, b] = bias[o] + sum_t wt[o, t] * src[n, taps[t] + a*wp
    + b]``, on the parts ``bounds[p]:bounds[p + 1]`` of the batch.

    ``wt`` is ``(Op, K)`` with ``Op`` a multiple of :data:`OB` (rows past ``y``'s
    ``O`` zero); ``L`` must hold every read of a whole block,
    ``L >= max(taps) + ceil(OH*wp / QB) * QB``.
    """
    name = "forward_parallel" if parallel else "forward_serial"
    _kernels()[name](x, pads[0], pads[1], wp, plane, src, wt, taps, bias, y, bounds)


def backward(
    g: np.ndarray,
    src: np.ndarray,
    geometry: tuple[int, ...],
    padded: np.ndarray,
    wtaps: np.ndarray,
    dw: np.ndarray,
    db: np.ndarray,
    wx: np.ndarray,
    xtaps: np.ndarray,
    dx: np.ndarray,
    bounds: np.ndarray,
    parallel: bool,
) -> None:
    """The gradients of :func:`forward`, on the parts ``bounds[p]:bounds[p + 1]`` of the batch.

    ``g`` ``(N, O, OH, OW)`` is padded into ``padded`` ``(N, Op*gplane)`` and each
    part ``p`` adds its sums into ``dw[p]`` ``(Op, Kp)`` and ``db[p]`` ``(O,)``
    (float64); ``dx`` ``(N, C, H, W)`` gets the input gradient, unless it is
    empty. ``geometry`` is ``(gtop, gleft, wp, gplane, gbase, qlen, xbase)``.
    """
    name = "backward_parallel" if parallel else "backward_serial"
    _kernels()[name](g, src, geometry, padded, wtaps, dw, db, wx, xtaps, dx, bounds)
