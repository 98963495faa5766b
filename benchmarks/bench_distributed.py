"""``python -m benchmarks.bench_distributed``: data-parallel samples/s of the Fashion-MNIST CNN.

Launches ``mpiexec -n K`` (the one next to this Python) for each ``K``, one
BLAS thread per rank (``OMP_NUM_THREADS=1``, ``OPENBLAS_NUM_THREADS=1``).
Each rank trains the CNN of ``examples/fashion_mnist_cnn.py`` (Adam, per-rank
batch ``--batch``) with a ``DistributedOptimizer``: one warm-up epoch, then
``--epochs`` timed epochs on ``--samples`` images of the Fashion-MNIST
training set (the digits of scikit-learn, upscaled, if Fashion-MNIST is not
installed). It prints, per ``K``: samples/s over all ranks, the speed-up over
one rank, and the communication share of a step (the time rank 0 spends
packing, all-reducing and unpacking the gradient buckets, over the step time).

Examples::

    python -m benchmarks.bench_distributed
    python -m benchmarks.bench_distributed --ranks 1 2 --samples 8192 --batch 64
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def _data(samples: int) -> tuple[np.ndarray, np.ndarray, str]:
    from framework.errors import DataError

    try:
        from framework.datasets import load_fashion_mnist

        (x, y), _ = load_fashion_mnist()
        return x[:samples].astype(np.float32), y[:samples], "Fashion-MNIST"
    except (DataError, OSError):
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = np.kron(digits.images, np.ones((4, 4)))[:, 2:30, 2:30] / 16.0  # 8x8 -> 28x28
        reps = -(-samples // len(images))
        x = np.tile(images[:, None].astype(np.float32), (reps, 1, 1, 1))[:samples]
        return x, np.tile(digits.target, reps)[:samples], "digits (upscaled)"


def worker(args: argparse.Namespace) -> None:
    """One rank: train, time, print one JSON line on rank 0."""
    from benchmarks.cases_models import build_ours
    from framework import distributed
    from framework.distributed import DistributedOptimizer
    from framework.optimizers import Adam

    x, y, name = _data(args.samples)
    model = build_ours("fashion_cnn")
    optimizer = DistributedOptimizer(Adam(1e-3))
    model.compile(optimizer, loss="cross_entropy", metrics=["accuracy"])
    model.fit(
        x[: args.batch * distributed.size() * 4],
        y[: args.batch * distributed.size() * 4],
        batch_size=args.batch,
        verbose=0,
        seed=0,
    )  # warm-up
    distributed.barrier()
    optimizer.comm_seconds = 0.0
    start = time.perf_counter()
    model.fit(x, y, epochs=args.epochs, batch_size=args.batch, verbose=0, seed=1)
    distributed.barrier()
    seconds = time.perf_counter() - start
    if distributed.is_main():
        result = {
            "ranks": distributed.size(),
            "data": name,
            "samples_per_s": args.samples * args.epochs / seconds,
            "comm_share": optimizer.comm_seconds / seconds,
            "seconds": seconds,
        }
        print(json.dumps(result), flush=True)


def launch(ranks: int, args: argparse.Namespace) -> dict[str, Any]:
    mpiexec = Path(sys.executable).parent / "mpiexec"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "PMIX_"))}
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    command = [
        str(mpiexec),
        "-n",
        str(ranks),
        sys.executable,
        "-m",
        "benchmarks.bench_distributed",
        "--worker",
    ]
    command += ["--samples", str(args.samples), "--batch", str(args.batch), "--epochs", str(args.epochs)]
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=root, check=False)
    if done.returncode != 0:
        raise SystemExit(f"mpiexec -n {ranks} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--samples", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=64, help="per-rank batch")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    base = None
    print(f"Fashion-MNIST CNN, per-rank batch {args.batch}, {args.samples} samples x {args.epochs} epoch(s)")
    print(f"{'ranks':>5}  {'samples/s':>10}  {'speed-up':>8}  {'comm share':>10}  data")
    for ranks in args.ranks:
        r = launch(ranks, args)
        base = base or r["samples_per_s"]
        print(
            f"{ranks:>5}  {r['samples_per_s']:>10.0f}  {r['samples_per_s'] / base:>7.2f}x  "
            f"{100 * r['comm_share']:>9.1f}%  {r['data']}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
