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
``--quick`` trains one epoch on 512 images of the test file (a smoke test).
"""

from __future__ import annotations

from common import run_fashion

from framework import Sequential
from framework.layers import Conv2d, Flatten, Linear, MaxPool2d


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
    return run_fashion(build_model, "fashion_mnist_lenet", __doc__, epochs=10, argv=argv)


if __name__ == "__main__":
    raise SystemExit(main())
