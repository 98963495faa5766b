"""A two-layer MLP that separates three interleaved spirals, with its decision boundary.

    Linear(2 -> 64) - tanh - Linear(64 -> 64) - tanh - Linear(64 -> 3)

No straight line separates the arms; two hidden layers bend the boundary
around them. Trained with Adam on 600 points, tested on 300 fresh ones from
the same spirals (another seed). The decision regions are drawn on a grid
with the test points on top (``examples/output/spirals_boundary.png``, if
matplotlib is installed), then the model is saved to HDF5, reloaded with
``framework.load_model`` and checked to predict exactly the same.

Run: ``python examples/spirals.py [--epochs 80] [--batch-size 32] [--output DIR]``;
``--quick`` trains 5 epochs and draws a 100x100 boundary grid (for tests).
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
from framework.datasets import make_spirals
from framework.layers import Linear

OUTPUT = Path(__file__).resolve().parent / "output"
CLASSES = 3


def build_model() -> Sequential:
    return Sequential(
        [Linear(2, 64, activation="tanh"), Linear(64, 64, activation="tanh"), Linear(64, CLASSES)]
    )


def save_boundary(path: Path, model: Sequential, x: np.ndarray, y: np.ndarray, resolution: int = 300) -> bool:
    """Colour a ``resolution`` x ``resolution`` grid by predicted class and scatter ``(x, y)`` on it;
    False without matplotlib."""
    try:
        from matplotlib.colors import ListedColormap
        from matplotlib.figure import Figure
    except ImportError:
        return False
    lo, hi = x.min(axis=0) - 0.2, x.max(axis=0) + 0.2
    g0, g1 = np.meshgrid(np.linspace(lo[0], hi[0], resolution), np.linspace(lo[1], hi[1], resolution))
    grid = np.stack([g0.ravel(), g1.ravel()], axis=1).astype(np.float32)
    regions = model.predict(grid, batch_size=4096).argmax(axis=1).reshape(g0.shape)
    colours = ["#1f77b4", "#ff7f0e", "#2ca02c"]
    figure = Figure(figsize=(5.5, 5), layout="constrained")
    ax = figure.subplots()
    ax.contourf(g0, g1, regions, levels=np.arange(CLASSES + 1) - 0.5, cmap=ListedColormap(colours), alpha=0.3)
    ax.scatter(x[:, 0], x[:, 1], c=[colours[k] for k in y], s=12, edgecolors="k", linewidths=0.3)
    ax.set_title("spirals: decision regions and test points")
    ax.set_aspect("equal")
    figure.savefig(path, dpi=100)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=80)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=OUTPUT, help="folder for the checkpoint and PNG")
    parser.add_argument("--quick", action="store_true", help="5 epochs, a coarser boundary (smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs = 5

    framework.set_seed(args.seed)
    x_train, y_train = make_spirals(600, n_classes=CLASSES, noise=0.03, seed=args.seed)
    x_test, y_test = make_spirals(300, n_classes=CLASSES, noise=0.03, seed=args.seed + 1)

    model = build_model()
    model.compile(
        optimizer=framework.optimizers.get("adam", lr=1e-2), loss="cross_entropy", metrics=["accuracy"]
    )
    model.build((None, 2))
    model.summary()

    start = time.perf_counter()
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed)
    result = model.evaluate(x_test, y_test)
    print(
        f"test loss {result['loss']:.4f}  test accuracy {result['accuracy']:.4f}  "
        f"training time {time.perf_counter() - start:.1f} s"
    )

    args.output.mkdir(parents=True, exist_ok=True)
    resolution = 100 if args.quick else 300  # the smoke test: 10,000 grid points (3 batches), not 90,000
    if save_boundary(args.output / "spirals_boundary.png", model, x_test, y_test, resolution):
        print(f"saved {args.output / 'spirals_boundary.png'}")

    save_and_reload(model, x_test, args.output / "spirals.h5")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
