"""Speed of Conv2d and MaxPool2d against the bare matrix products they are built on.

For each convolution, one round times the layer's forward + backward and then
the same three ``np.matmul`` calls the layer makes (forward ``Wm @ cols``,
weight gradient ``cols @ G^T`` summed over the batch, column gradient
``Wm^T @ G`` with ``G`` batch-last) on arrays built beforehand. Rounds alternate, so drifting load
on a shared machine hits both alike. Everything is float32.

Run: ``python benchmarks/bench_conv.py [--rounds 15] [--reps 10]``. On a
machine shared with other work, multi-threaded OpenBLAS spin-waits and the
numbers scatter by 10x; ``OPENBLAS_NUM_THREADS=1`` gives stable ones.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable

import numpy as np

from plugins.conv import Conv2d
from plugins.conv_ops import im2col
from plugins.pooling import MaxPool2d


def per_call(fn: Callable[[], object], reps: int) -> float:
    """Mean seconds per call of ``fn`` over ``reps`` calls."""
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps


def summary(times: list[float]) -> str:
    ms = sorted(t * 1e3 for t in times)
    q = statistics.quantiles(ms, n=4)
    spread = f"IQR {q[0]:.3f}-{q[2]:.3f}, min {ms[0]:.3f}, max {ms[-1]:.3f}"
    return f"median {statistics.median(ms):7.3f} ms  ({spread})"


def bench_conv(in_ch: int, out_ch: int, k: int, x_shape: tuple[int, ...], rounds: int, reps: int) -> None:
    rng = np.random.default_rng(0)
    layer = Conv2d(in_ch, out_ch, k)
    x = rng.standard_normal(x_shape, dtype=np.float32)
    y = layer(x)
    grad = rng.standard_normal(y.shape, dtype=np.float32)

    wm = layer.weight.data.reshape(out_ch, -1)
    cols = im2col(x, k)
    g = grad.reshape(grad.shape[0], out_ch, -1)
    g_last = np.ascontiguousarray(g.transpose(1, 2, 0)).reshape(out_ch, -1)
    dcols = np.empty((wm.shape[1], g_last.shape[1]), dtype=np.float32)

    def layer_step() -> None:
        layer(x)
        layer.backward(grad)

    def matmuls_only() -> None:
        np.matmul(wm, cols)
        np.matmul(cols, g.transpose(0, 2, 1)).sum(axis=0)
        np.matmul(wm.T, g_last, out=dcols)

    layer_step(), matmuls_only()  # warm up
    t_layer, t_mm = [], []
    for _ in range(rounds):
        t_layer.append(per_call(layer_step, reps))
        t_mm.append(per_call(matmuls_only, reps))
    ratio = statistics.median(t_layer) / statistics.median(t_mm)
    ratios = sorted(a / b for a, b in zip(t_layer, t_mm))
    print(f"Conv2d({in_ch}, {out_ch}, {k}) on {x_shape}, cols {cols.shape} ({cols.nbytes / 2**20:.1f} MiB)")
    print(f"  forward+backward  {summary(t_layer)}")
    print(f"  matmuls alone     {summary(t_mm)}")
    print(f"  ratio of medians  {ratio:.2f}x  (per-round ratios {ratios[0]:.2f}-{ratios[-1]:.2f})")


def bench_pool(x_shape: tuple[int, ...], rounds: int, reps: int) -> None:
    rng = np.random.default_rng(0)
    pool = MaxPool2d(2)
    x = rng.standard_normal(x_shape, dtype=np.float32)
    grad = rng.standard_normal(pool(x).shape, dtype=np.float32)

    def step() -> None:
        pool(x)
        pool.backward(grad)

    step()
    times = [per_call(step, reps) for _ in range(rounds)]
    print(f"MaxPool2d(2) on {x_shape}")
    print(f"  forward+backward  {summary(times)}")


def main() -> None:
    warnings.filterwarnings("ignore", category=RuntimeWarning)  # plugins not written yet
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args()
    print(f"numpy {np.__version__}, float32, {args.rounds} rounds x {args.reps} calls, interleaved\n")
    bench_conv(1, 6, 5, (64, 1, 28, 28), args.rounds, args.reps)
    bench_conv(6, 16, 5, (64, 6, 14, 14), args.rounds, args.reps)
    bench_pool((64, 6, 28, 28), args.rounds, args.reps)


if __name__ == "__main__":
    main()
