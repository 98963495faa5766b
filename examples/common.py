"""Pieces the example scripts share: the digits and Fashion-MNIST runs, and the save-reload check.

The examples import it as ``common`` (Python puts a script's own folder first
on ``sys.path``).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import framework
from framework import Model
from framework.datasets import load_digits, load_fashion_mnist, train_test_split

OUTPUT = Path(__file__).resolve().parent / "output"


def save_and_reload(model: Model, x: Any, path: Path, batch_size: int = 32) -> np.ndarray:
    """Save ``model`` to ``path``, load it back and assert its predictions on ``x`` are bit-identical.

    Returns the predictions, so a script need not compute them twice.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    before = model.predict(x, batch_size=batch_size)
    model.save(path)
    after = framework.load_model(path).predict(x, batch_size=batch_size)
    assert np.array_equal(before, after), "the reloaded model's predictions differ"
    print(f"saved {path}; reloaded with framework.load_model: predictions identical (bit for bit)")
    return before


def fashion_parser(doc: str, epochs: int) -> argparse.ArgumentParser:
    """The options every Fashion-MNIST example takes."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=None, help="folder with the Fashion-MNIST IDX files")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="folder for the checkpoint (and PNGs)")
    parser.add_argument("--quick", action="store_true", help="1 epoch on 512 test-file images (smoke test)")
    return parser


def fashion_data(
    args: argparse.Namespace,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``(x_train, y_train), (x_test, y_test)``.

    With ``--quick`` (which also sets one epoch): 512 and 128 images of the small test file
    (four training batches of the default 128).
    """
    if args.quick:
        args.epochs = 1
        x, y = load_fashion_mnist(args.data, kind="test")
        return (x[:512], y[:512]), (x[-128:], y[-128:])
    return load_fashion_mnist(args.data)


def run_fashion(
    build: Callable[[], Model], name: str, doc: str, epochs: int, argv: list[str] | None = None
) -> int:
    """Train ``build()`` on Fashion-MNIST with Adam, report the test metrics, save and check the checkpoint.

    The model is built after ``--seed`` seeds the global generator, so its
    initial weights, and with them the whole run, repeat.
    """
    args = fashion_parser(doc, epochs).parse_args(argv)
    framework.set_seed(args.seed)
    model = build()
    (x_train, y_train), (x_test, y_test) = fashion_data(args)
    model.compile(optimizer="adam", loss="cross_entropy", metrics=["accuracy"])
    model.build((None, *x_train.shape[1:]))
    model.summary()

    start = time.perf_counter()
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed)
    seconds = time.perf_counter() - start
    result = model.evaluate(x_test, y_test, batch_size=500)
    print(
        f"test loss {result['loss']:.4f}  test accuracy {result['accuracy']:.4f}  "
        f"training time {seconds:.1f} s ({args.epochs} epochs)"
    )
    save_and_reload(model, x_test, args.output / f"{name}.h5", batch_size=500)
    return 0


def run_digits(
    build: Callable[[], Model], name: str, doc: str, argv: list[str] | None = None, as_rows: bool = False
) -> int:
    """Train ``build()`` on the 8x8 digits with Adam, report the test metrics, save and check the checkpoint.

    The model is built after ``--seed`` seeds the global generator, so its
    initial weights, and with them the whole run, repeat.

    A stratified, seeded quarter is held out. The images are ``(N, 1, 8, 8)``,
    or ``(N, 8, 8)`` sequences of rows with ``as_rows``. ``--quick`` trains one
    epoch on 300 images (for tests).
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=OUTPUT, help="folder for the checkpoint")
    parser.add_argument("--quick", action="store_true", help="1 epoch on 300 images (smoke test)")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    framework.set_seed(args.seed)
    model = build()
    x, y = load_digits()  # (1797, 1, 8, 8) float32 in [0, 1], int64 labels
    if as_rows:
        x = x[:, 0]  # (N, 8 rows, 8 pixels)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, stratify=True, seed=args.seed)
    if args.quick:
        args.epochs = 1
        x_train, y_train = x_train[:300], y_train[:300]
    kind = "digits as sequences" if as_rows else "digits"
    print(f"{kind}: {len(x_train)} training and {len(x_test)} test images of shape {x.shape[1:]}")

    model.compile(
        optimizer=framework.optimizers.get("adam", lr=args.lr), loss="cross_entropy", metrics=["accuracy"]
    )
    model.build((None, *x.shape[1:]))
    model.summary()
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed)
    result = model.evaluate(x_test, y_test)
    print(
        f"test loss {result['loss']:.4f}  test accuracy {result['accuracy']:.4f} "
        f"({round(result['accuracy'] * len(y_test))}/{len(y_test)})"
    )
    save_and_reload(model, x_test, args.output / f"{name}.h5")
    print(f"total time {time.perf_counter() - start:.1f} s")
    return 0
