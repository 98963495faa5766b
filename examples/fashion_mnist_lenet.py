"""LeNet-5 (LeCun et al., 1998) on Fashion-MNIST, in its modern form (ReLU, max pooling).

    Conv(1->6, 5x5, pad 2) - ReLU - MaxPool 2       28x28 -> 14x14
    Conv(6->16, 5x5) - ReLU - MaxPool 2             14x14 -> 10x10 -> 5x5
    Flatten - Linear(16*5*5 -> 120) - ReLU - Linear(120 -> 84) - ReLU - Linear(84 -> 10)

Adam (1e-3), batch 128, 10 epochs. The stronger
network with BatchNorm and Dropout is ``examples/fashion_mnist_cnn.py``.
Reads the local IDX files (``--data`` folder, ``$FRAMEWORK_FASHION_MNIST`` or
``/usr/share/datasets/fashion-mnist``), then saves an HDF5 checkpoint, reloads
it with ``framework.load_model`` and checks the predictions match bit for bit.

Run: ``python examples/fashion_mnist_lenet.py [--epochs 10] [--batch-size 128] [--output DIR]``;
``--quick`` trains one epoch on 2000 images of the test file (a smoke test).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import framework
from framework import Sequential
from framework.datasets import load_fashion_mnist
from framework.layers import Conv2d, Flatten, Linear, MaxPool2d

OUTPUT = Path(__file__).resolve().parent / "output"


def build_model() -> Sequential:
    return Sequential(
        [
            Conv2d(1, 6, 5, padding=2, activation="relu"),
            MaxPool2d(2),
            Conv2d(6, 16, 5, activation="relu"),
            MaxPool2d(2),
            Flatten(),
            Linear(16 * 5 * 5, 120, activation="relu"),
            Linear(120, 84, activation="relu"),
            Linear(84, 10),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=None, help="folder with the Fashion-MNIST IDX files")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="folder for the checkpoint")
    parser.add_argument("--quick", action="store_true", help="1 epoch on 2000 test-file images (smoke test)")
    args = parser.parse_args(argv)

    framework.set_seed(args.seed)
    if args.quick:  # only the small test file: 2000 of its images to train on, 500 others to test
        args.epochs = 1
        x, y = load_fashion_mnist(args.data, kind="test")
        (x_train, y_train), (x_test, y_test) = (x[:2000], y[:2000]), (x[-500:], y[-500:])
    else:
        (x_train, y_train), (x_test, y_test) = load_fashion_mnist(args.data)

    model = build_model()
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

    args.output.mkdir(parents=True, exist_ok=True)
    checkpoint = args.output / "fashion_mnist_lenet.h5"
    model.save(checkpoint)
    reloaded = framework.load_model(checkpoint)
    before, after = model.predict(x_test, batch_size=500), reloaded.predict(x_test, batch_size=500)
    assert np.array_equal(before, after), "reloaded predictions differ"
    print(f"saved {checkpoint}; reloaded with framework.load_model: predictions identical (bit for bit)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
