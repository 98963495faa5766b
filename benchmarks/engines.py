"""Would a fused or compiled element-wise engine beat NumPy on BatchNorm? numexpr and numba, timed.

``python -m benchmarks.engines [--calls 60] [--threads 2]`` times BatchNorm
forward + backward (training mode) on two shapes: the ``batchnorm_layer``
case (64x32x14x14) and the example CNN's first BatchNorm (128x16x28x28).
Three implementations of the same maths, each in this process:

- ``framework``: the :class:`~framework.layers.BatchNorm` layer itself on its
  NumPy path; ``fw-jit``: the same layer on its compiled kernels
  (:mod:`plugins.bn_kernels`, the ``[jit]`` extra);
- ``numexpr``: the same passes, each fused expression one ``numexpr.evaluate``
  (its own thread pool, ``--threads`` threads);
- ``numba-1`` / ``numba-N``: two hand-fused kernels (forward: mean, centred
  squares, output; backward: the two sums, then ``dx`` in one pass), one
  thread and ``--threads`` threads (``prange`` over channels).

Each is timed idle and right after a 512x512 product (OpenBLAS's worker then
spins on the second core for about 0.1 s, as after every convolution in a
CNN step). Prints the 25th percentile of ``--calls`` calls in milliseconds.
An engine that is not installed is reported as missing: neither is a
dependency of this project (the measurement is why, see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

from framework.errors import ConfigError

SHAPES = ((64, 32, 14, 14), (128, 16, 28, 28))


def _framework(x: Any, g: Any, compiled: bool = False) -> Callable[[], Any]:
    from framework.layers import BatchNorm
    from framework.runtime import jit

    layer = BatchNorm(x.shape[1])

    def run() -> Any:
        with jit.using(compiled):
            layer.forward(x)
            return layer.backward(g)

    return run


def _numexpr(x: Any, g: Any, threads: int) -> Callable[[], Any]:
    import numexpr  # type: ignore[import-not-found]
    import numpy as np

    numexpr.set_num_threads(threads)
    n, c = x.shape[:2]
    rows, grows, m = x.reshape(n, c, -1), g.reshape(n, c, -1), x.size // c

    def run() -> Any:
        mean = (np.einsum("ncs->c", rows) / m)[:, None].astype(np.float32)
        xc = numexpr.evaluate("rows - mean", local_dict={"rows": rows, "mean": mean})
        inv = (1 / np.sqrt(np.einsum("ncs,ncs->c", xc, xc) / m + 1e-5)).astype(np.float32)
        scale = inv[:, None]
        numexpr.evaluate("xc * scale", local_dict={"xc": xc, "scale": scale})
        dbeta, sgx = np.einsum("ncs->c", grows), np.einsum("ncs,ncs->c", grows, xc)
        k = (-(inv * inv) * sgx / m).astype(np.float32)[:, None]
        d = (dbeta / m).astype(np.float32)[:, None]
        names = {"scale": scale, "g": grows, "xc": xc, "k": k, "d": d}
        return numexpr.evaluate("scale * (g + xc * k - d)", local_dict=names)

    return run


def _numba_kernels() -> tuple[Any, Any]:
    import numba  # type: ignore[import-not-found]
    import numpy as np

    @numba.njit(parallel=True, fastmath={"reassoc", "contract", "nsz", "arcp"}, nogil=True)
    def forward(x: Any, eps: float, y: Any, mean: Any, inv: Any) -> None:
        n, c, s = x.shape
        for ch in numba.prange(c):
            total = 0.0
            for i in range(n):
                row_sum = np.float32(0.0)
                for k in range(s):
                    row_sum += x[i, ch, k]
                total += row_sum
            mu = np.float32(total / (n * s))
            squares = 0.0
            for i in range(n):
                row_sq = np.float32(0.0)
                for k in range(s):
                    d = x[i, ch, k] - mu
                    row_sq += d * d
                squares += row_sq
            r = np.float32(1.0 / np.sqrt(squares / (n * s) + eps))
            for i in range(n):
                for k in range(s):
                    y[i, ch, k] = (x[i, ch, k] - mu) * r
            mean[ch], inv[ch] = mu, r

    @numba.njit(parallel=True, fastmath={"reassoc", "contract", "nsz", "arcp"}, nogil=True)
    def backward(x: Any, g: Any, mean: Any, inv: Any, dx: Any) -> None:
        n, c, s = x.shape
        for ch in numba.prange(c):
            mu, r = mean[ch], inv[ch]
            sum_g, sum_gxc = 0.0, 0.0
            for i in range(n):
                a, b = np.float32(0.0), np.float32(0.0)
                for k in range(s):
                    a += g[i, ch, k]
                    b += g[i, ch, k] * (x[i, ch, k] - mu)
                sum_g += a
                sum_gxc += b
            kx = np.float32(-r * r * r * sum_gxc / (n * s))
            k0 = np.float32(-r * sum_g / (n * s) - kx * mu)
            for i in range(n):
                for k in range(s):
                    dx[i, ch, k] = r * g[i, ch, k] + kx * x[i, ch, k] + k0

    return forward, backward


def _numba(x: Any, g: Any, threads: int) -> Callable[[], Any]:
    import numba
    import numpy as np

    forward, backward = _numba_kernels()
    n, c = x.shape[:2]
    rows, grows = x.reshape(n, c, -1), g.reshape(n, c, -1)

    def run() -> Any:
        numba.set_num_threads(threads)
        y, dx = np.empty_like(rows), np.empty_like(rows)
        mean, inv = np.empty(c, np.float32), np.empty(c, np.float32)
        forward(rows, 1e-5, y, mean, inv)
        backward(rows, grows, mean, inv, dx)
        return dx

    run()  # compiles
    return run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import numpy as np

    from framework.training.loop import keep_freed_memory

    keep_freed_memory()
    rng = np.random.default_rng(0)
    product = rng.standard_normal((512, 512), dtype=np.float32)
    for shape in SHAPES:
        x = rng.standard_normal(shape, dtype=np.float32) * 2 + 1
        g = rng.standard_normal(shape, dtype=np.float32)
        reference = _framework(x, g)().reshape(shape)
        makers: dict[str, Callable[[], Callable[[], Any]]] = {
            "framework": lambda x=x, g=g: _framework(x, g),
            "fw-jit": lambda x=x, g=g: _framework(x, g, compiled=True),
            "numexpr": lambda x=x, g=g: _numexpr(x, g, args.threads),
            "numba-1": lambda x=x, g=g: _numba(x, g, 1),
            f"numba-{args.threads}": lambda x=x, g=g: _numba(x, g, args.threads),
        }
        print(f"BatchNorm forward + backward on {'x'.join(map(str, shape))}, ms (25th percentile)")
        for name, make in makers.items():
            try:
                run = make()
            except (ImportError, ConfigError) as error:
                print(f"  {name:<10} missing: {error}")
                continue
            error = float(np.abs(run().reshape(shape) - reference).max())
            times = []
            for after_product in (False, True):
                spent = []
                for _ in range(args.calls):
                    if after_product:
                        product @ product
                    start = time.perf_counter()
                    run()
                    spent.append(time.perf_counter() - start)
                times.append(float(np.percentile(spent, 25)) * 1e3)
            print(f"  {name:<10} idle {times[0]:6.3f}   after a product {times[1]:6.3f}   ", end="")
            print(f"max |dx - ours| {error:.1e}")


if __name__ == "__main__":
    main()
