"""A regression MLP that fits ``y = sin(x)`` on ``[-pi, pi]`` from noisy samples.

    Linear(1 -> 32) - tanh - Linear(32 -> 32) - tanh - Linear(32 -> 1)

Trained with Adam on mean squared error; prints the test MSE (the noise alone
gives ``0.1**2 = 0.01``) and the error against the noise-free ``sin`` on a grid,
then saves the model to HDF5, reloads it with ``framework.load_model`` and
checks it predicts exactly the same.

Run: ``python examples/regression_mlp.py [--epochs 100] [--batch-size 32] [--output DIR]``;
``--quick`` trains 3 epochs (for tests).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

# Tiny matrices: one BLAS thread is fastest (see examples/digits_cnn.py).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
from common import save_and_reload

import framework
from framework import Sequential
from framework.datasets import make_sine
from framework.layers import Linear

OUTPUT = Path(__file__).resolve().parent / "output"
NOISE = 0.1


def build_model() -> Sequential:
    return Sequential([Linear(1, 32, activation="tanh"), Linear(32, 32, activation="tanh"), Linear(32, 1)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=OUTPUT, help="folder for the checkpoint")
    parser.add_argument("--quick", action="store_true", help="3 epochs (smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs = 3

    framework.set_seed(args.seed)
    x_train, y_train = make_sine(800, noise=NOISE, seed=args.seed)
    x_test, y_test = make_sine(200, noise=NOISE, seed=args.seed + 1)

    model = build_model()
    model.compile(optimizer=framework.optimizers.get("adam", lr=1e-2), loss="mse", metrics=["mae"])
    model.build((None, 1))
    model.summary()

    start = time.perf_counter()
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed)
    result = model.evaluate(x_test, y_test)
    grid = np.linspace(-np.pi, np.pi, 1001, dtype=np.float32)[:, None]
    clean_mse = float(np.mean((model.predict(grid) - np.sin(grid)) ** 2))
    print(
        f"test MSE {result['loss']:.5f} (noise variance {NOISE**2:.5f})  test MAE {result['mae']:.5f}  "
        f"MSE against sin(x) on a grid {clean_mse:.5f}  training time {time.perf_counter() - start:.1f} s"
    )

    save_and_reload(model, grid, args.output / "regression_mlp.h5")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
