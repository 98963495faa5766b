"""Where a Conv2d forward + backward spends its time: each phase of the three lowerings, timed alone.

``python -m benchmarks.conv_phases [--threads 2] [--calls 50] [--layer fashion|lenet]``
times, on the shapes of one layer (``fashion``: the ``conv2d_layer`` case,
64x16x14x14, 32 filters of 3x3, padding 1; ``lenet``: LeNet-5's second
layer, 64x6x14x14, 16 filters of 5x5, no padding), the NumPy calls each
lowering makes: the per-sample one (:func:`~plugins.im2col.im2col`, batched
products, ``col2im_batch_last``), the row-grid one
(:func:`~plugins.im2col.im2col_grid`, one product per step,
:func:`~plugins.im2col.col2im_grid`) and the batch-last one
(:func:`~plugins.im2col.im2col_batch_last`, one product per step,
``col2im_batch_last``), and, where numba imports, the direct lowering's
kernels on the calling thread (:mod:`plugins.direct_kernels`: the padded
copies and the taps; no products, no col2im). Prints the 20th percentile of ``--calls``
interleaved calls per phase, in milliseconds, and the sums (products,
im2col/col2im, layout and element-wise).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np

#: (N, C, H, W, O, K, P) per ``--layer``
LAYERS = {"fashion": (64, 16, 14, 14, 32, 3, 1), "lenet": (64, 6, 14, 14, 16, 5, 0)}
GROUPS = {
    "products": ("fwd product", "dW product", "dcols product"),
    "im2col/col2im": ("im2col", "col2im"),
    "taps (direct)": ("fwd taps + bias", "dW taps", "dx taps"),
}


def phases(layer: str = "fashion") -> dict[str, dict[str, Callable[[], Any]]]:
    from framework.runtime.blas import sum_rows
    from plugins.conv_ops import (
        channel_sums,
        col2im_batch_last,
        col2im_grid,
        grid_shape,
        im2col,
        im2col_batch_last,
        im2col_grid,
        per_channel,
    )

    N, C, H, W, O, K, P = LAYERS[layer]

    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, C, H, W), dtype=np.float32)
    w = rng.standard_normal((O, C * K * K), dtype=np.float32)
    b = np.zeros(O, np.float32)
    geometry = ((K, K), (1, 1), ((P, P), (P, P)), (1, 1))
    _, wp, oh, ow, _ = grid_shape(x.shape, *geometry)
    g = rng.standard_normal((N, O, oh, ow), dtype=np.float32)
    cols = np.empty((N, C * K * K, oh * ow), np.float32)
    gcols = np.empty((C * K * K, oh * N * wp), np.float32)
    grid = np.empty((O, oh, N, wp), np.float32)
    product = np.empty((O, oh, N, wp), np.float32)
    g_last = np.ascontiguousarray(g.transpose(1, 2, 3, 0)).reshape(O, -1)
    dcols = np.matmul(w.T, g_last)
    y = np.matmul(w, im2col(x, *geometry))

    def grid_g() -> None:
        grid[..., ow:] = 0
        grid[..., :ow] = g.transpose(1, 2, 0, 3)

    def grid_out() -> None:
        np.add(
            product[..., :ow].transpose(2, 0, 1, 3),
            b.reshape(1, -1, 1, 1),
            out=np.empty((N, O, oh, ow), np.float32),
        )

    gm = grid.reshape(O, -1)
    last = im2col_batch_last(x, *geometry)
    last_product = w @ last
    g_batch_last = np.ascontiguousarray(g.transpose(1, 2, 3, 0)).reshape(O, -1)
    y_last = np.empty((N, O, oh, ow), np.float32)

    def last_out() -> None:
        np.add(last_product.reshape(O, oh, ow, N).transpose(3, 0, 1, 2), b.reshape(1, -1, 1, 1), out=y_last)

    table = {
        "per-sample": {
            "im2col": lambda: im2col(x, *geometry, out=cols),
            "fwd product": lambda: np.matmul(w, cols),
            "bias": lambda: per_channel(np.add, y, b, out=y),
            "bias gradient": lambda: channel_sums(g),
            "dW product": lambda: np.matmul(cols, g.reshape(N, O, -1).transpose(0, 2, 1)).sum(0),
            "G transposed": lambda: np.ascontiguousarray(g.transpose(1, 2, 3, 0)),
            "dcols product": lambda: np.matmul(w.T, g_last),
            "col2im": lambda: col2im_batch_last(dcols, x.shape, *geometry),
        },
        "row grid": {
            "im2col": lambda: im2col_grid(x, *geometry, out=gcols),
            "fwd product": lambda: np.matmul(w, gcols, out=product.reshape(O, -1)),
            "output copy + bias": grid_out,
            "bias gradient": lambda: channel_sums(g),
            "G on the grid": grid_g,
            "dW product": lambda: np.matmul(gcols, gm.T),
            "dcols product": lambda: np.matmul(w.T, gm),
            "col2im": lambda: col2im_grid(gcols, x.shape, *geometry),
        },
        "batch last": {
            "im2col": lambda: im2col_batch_last(x, *geometry, out=last),
            "fwd product": lambda: np.matmul(w, last, out=last_product),
            "output copy + bias": last_out,
            "G transposed": lambda: np.ascontiguousarray(g.transpose(1, 2, 3, 0)),
            "bias gradient": lambda: sum_rows(g_batch_last.T),
            "dW product": lambda: np.matmul(last, g_batch_last.T),
            "dcols product": lambda: np.matmul(w.T, g_batch_last),
            "col2im": lambda: col2im_batch_last(last, x.shape, *geometry),
        },
    }
    direct = _direct_phases(x, w.reshape(O, C, K, K), b, g, geometry)
    if direct:
        table["direct, each kernel on one thread, BLAS on"] = direct
    return table


def _direct_phases(x: Any, w: Any, b: Any, g: Any, geometry: Any) -> dict[str, Callable[[], Any]]:
    """The direct lowering's kernels (:mod:`plugins.direct_kernels`) on the calling thread; empty
    without numba."""
    from framework.runtime import jit

    if not jit.available() or not jit.first_use_kernels():
        return {}
    from plugins import conv_direct, direct_kernels

    direct_kernels._kernels()  # builds the family: its kernels become the module's globals
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    (top, _), (left, _) = geometry[2]
    plan = conv_direct._plan(geometry, x.shape[1:], o)
    src = np.empty((n, plan.src_len), np.float32)
    wt = conv_direct._padded_rows(w.reshape(o, -1), conv_direct._up(o, direct_kernels.OB))
    y = np.empty((n, o, plan.oh, plan.ow), np.float32)
    op = conv_direct._up(o, direct_kernels.WB)
    padded = np.empty((n, op * plan.gplane), np.float32)
    sums, nothing = np.zeros(o), np.zeros(0)
    dw = np.zeros((op, plan.wtaps.size), np.float32)
    wx = conv_direct._padded_rows(
        w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3).reshape(c, -1),
        conv_direct._up(c, direct_kernels.OB),
    )
    dx, zeros = np.empty_like(x), np.zeros(c, np.float32)
    pad, conv, grad = direct_kernels._pad_planes, direct_kernels._grid_conv, direct_kernels._grid_weight_grad
    pad(x, top, left, plan.wp, plan.plane, src, nothing, 0, n)
    pad(g, kh - 1, kw - 1, plan.wp, plan.gplane, padded, sums, 0, n)
    grads = padded.reshape(n, op, plan.gplane)
    return {
        "pad x": lambda: pad(x, top, left, plan.wp, plan.plane, src, nothing, 0, n),
        "fwd taps + bias": lambda: conv(src, wt, plan.taps, b, plan.wp, 0, plan.oh, plan.ow, y, 0, n),
        "pad G + bias gradient": lambda: pad(g, kh - 1, kw - 1, plan.wp, plan.gplane, padded, sums, 0, n),
        "dW taps": lambda: grad(src, grads, plan.wtaps, plan.gbase, plan.qlen, dw, 0, n),
        "dx taps": lambda: conv(padded, wx, plan.xtaps, zeros, plan.wp, plan.xbase, h, wd, dx, 0, n),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--layer", choices=sorted(LAYERS), default="fashion")
    args = parser.parse_args(argv)
    from benchmarks.harness import limit_threads

    pinned = limit_threads("ours", args.threads)
    if isinstance(pinned["threadpools"], str):  # without threadpoolctl the BLAS keeps its own count
        print(f"note: {pinned['threadpools']}")
    table = phases(args.layer)
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.calls):
        for lowering, steps in table.items():
            for name, step in steps.items():
                start = time.perf_counter()
                step()
                times.setdefault((lowering, name), []).append(time.perf_counter() - start)
    for lowering, steps in table.items():
        print(f"{lowering} ({args.threads} threads)")
        total = grouped = 0.0
        sums = dict.fromkeys(GROUPS, 0.0)
        for name in steps:
            ms = float(np.percentile(times[(lowering, name)], 20)) * 1e3
            print(f"  {name:<20} {ms:7.3f} ms")
            total += ms
            for group, names in GROUPS.items():
                if name in names:
                    sums[group] += ms
                    grouped += ms
        for group, ms in sums.items():
            print(f"  = {group:<18} {ms:7.3f} ms")
        print(f"  = {'layout, element-wise':<18} {total - grouped:7.3f} ms")
        print(f"  = {'total':<18} {total:7.3f} ms")


if __name__ == "__main__":
    main()
