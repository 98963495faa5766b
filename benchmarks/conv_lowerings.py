"""The direct convolution against the lowering a layer takes without it, shape by shape.

``python -m benchmarks.conv_lowerings [--threads 2] [--groups 40]`` times
``Conv2d`` forward + backward (float32) on the shapes of :data:`SHAPES`,
each lowering in a process of its own (``direct``: the direct lowering
forced on, :mod:`plugins.conv_direct`; ``previous``: forced off, so the
layer runs the batch-last or per-sample lowering it would otherwise), twice
each, alternating, and prints the medians of ``--groups`` groups of 5 steps
(after 5 groups of warm-up) with each shape's grid waste
(:func:`plugins.conv_direct.waste`). The compiled kernels must be on and
served by numba: set ``FRAMEWORK_KERNEL_CACHE`` to an empty folder where an
ahead-of-time build exists (which keeps the direct lowering off).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time

#: (title, input shape, Conv2d arguments)
SHAPES = [
    (
        "16->32 3x3 p1",
        (64, 16, 14, 14),
        {"in_channels": 16, "out_channels": 32, "kernel_size": 3, "padding": 1},
    ),
    (
        "32->64 3x3 p1",
        (128, 32, 14, 14),
        {"in_channels": 32, "out_channels": 64, "kernel_size": 3, "padding": 1},
    ),
    (
        "16->32 3x3 p1",
        (32, 16, 32, 32),
        {"in_channels": 16, "out_channels": 32, "kernel_size": 3, "padding": 1},
    ),
    ("1->32 3x3 p1", (64, 1, 28, 28), {"in_channels": 1, "out_channels": 32, "kernel_size": 3, "padding": 1}),
    ("1->6 5x5 p2", (64, 1, 28, 28), {"in_channels": 1, "out_channels": 6, "kernel_size": 5, "padding": 2}),
    ("3->16 3x3 p1", (32, 3, 32, 32), {"in_channels": 3, "out_channels": 16, "kernel_size": 3, "padding": 1}),
    ("64->32 1x1", (64, 64, 14, 14), {"in_channels": 64, "out_channels": 32, "kernel_size": 1}),
    ("16->32 3x3", (64, 16, 10, 10), {"in_channels": 16, "out_channels": 32, "kernel_size": 3}),
    (
        "64->64 3x3 p1",
        (64, 64, 8, 8),
        {"in_channels": 64, "out_channels": 64, "kernel_size": 3, "padding": 1},
    ),
    ("6->16 5x5", (64, 6, 14, 14), {"in_channels": 6, "out_channels": 16, "kernel_size": 5}),
    ("16->16 5x5", (64, 16, 10, 10), {"in_channels": 16, "out_channels": 16, "kernel_size": 5}),
    ("32->32 3x3", (64, 32, 6, 6), {"in_channels": 32, "out_channels": 32, "kernel_size": 3}),
]


def _worker(lowering: str, threads: int, groups: int) -> None:
    """Time every shape under ``lowering`` in this process; one JSON line per shape on stdout."""
    import numpy as np  # loaded before the limit, which only sees the BLAS libraries already loaded
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads, user_api="blas")

    import plugins.conv_direct as conv_direct
    from framework.layers import Conv2d
    from framework.runtime import jit
    from framework.training.loop import keep_freed_memory

    keep_freed_memory()
    jit.set_enabled(True)
    limit = math.inf if lowering == "direct" else 0.0
    conv_direct.DIRECT_MAX_WASTE = conv_direct.DIRECT_MAX_WASTE_ONE_THREAD = limit
    rng = np.random.default_rng(0)
    for index, (_, shape, args) in enumerate(SHAPES):
        x = rng.standard_normal(shape, dtype=np.float32)
        layer = Conv2d(**args)
        g = rng.standard_normal(layer.forward(x).shape, dtype=np.float32)
        layer.backward(g)
        times = []
        for _ in range(groups + 5):
            start = time.perf_counter()
            for _ in range(5):
                layer.zero_grad()
                layer.forward(x)
                layer.backward(g)
            times.append((time.perf_counter() - start) / 5 * 1e3)
        print(json.dumps({"shape": index, "ms": float(np.median(times[5:]))}), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.conv_lowerings", description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--groups", type=int, default=40)
    parser.add_argument("--worker", choices=("direct", "previous"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args.worker, args.threads, args.groups)
        return
    from plugins.conv_direct import waste

    results: dict[str, list[list[float]]] = {"direct": [[] for _ in SHAPES], "previous": [[] for _ in SHAPES]}
    for _ in range(2):
        for lowering in ("direct", "previous"):
            command = [sys.executable, "-m", "benchmarks.conv_lowerings", "--worker", lowering]
            command += ["--threads", str(args.threads), "--groups", str(args.groups)]
            out = subprocess.run(
                command, check=True, capture_output=True, text=True, env=dict(os.environ)
            ).stdout
            for line in out.splitlines():
                row = json.loads(line)
                results[lowering][row["shape"]].append(row["ms"])
    print(f"{args.threads} thread(s), ms per forward + backward (the two processes of each lowering)")
    for index, (title, shape, conv) in enumerate(SHAPES):
        (kh, kw) = (conv["kernel_size"],) * 2
        pad = conv.get("padding", 0)
        oh, wp = shape[2] + 2 * pad - kh + 1, shape[3] + 2 * pad
        runs = {k: " / ".join(f"{t:.2f}" for t in v[index]) for k, v in results.items()}
        print(
            f"{title:14s} {'x'.join(map(str, shape)):13s} waste {waste(oh, wp, wp - kw + 1):4.2f}  "
            f"direct {runs['direct']:13s}  previous {runs['previous']}"
        )


if __name__ == "__main__":
    main()
