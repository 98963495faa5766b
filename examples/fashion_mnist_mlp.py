"""A multi-layer perceptron on Fashion-MNIST: the baseline the CNNs are measured against.

    Flatten - Linear(784 -> 256) - ReLU - Dropout(0.2) - Linear(256 -> 128) - ReLU - Linear(128 -> 10)

Adam (1e-3), batch 128, 10 epochs. The CNNs do better: the MLP sees
pixels, not shapes. Reads the local IDX files like the
other Fashion-MNIST examples (``--data`` folder, ``$FRAMEWORK_FASHION_MNIST``
or ``/usr/share/datasets/fashion-mnist``), then saves an HDF5 checkpoint,
reloads it with ``framework.load_model`` and checks the predictions match.

Run: ``python examples/fashion_mnist_mlp.py [--epochs 10] [--batch-size 128] [--output DIR]``;
``--quick`` trains one epoch on 512 images of the test file (a smoke test).
"""

from __future__ import annotations

from common import run_fashion

from framework import Sequential
from framework.layers import Dropout, Flatten, Linear


def build_model() -> Sequential:
    return Sequential(
        [
            Flatten(),
            Linear(28 * 28, 256, activation="relu"),
            Dropout(0.2),
            Linear(256, 128, activation="relu"),
            Linear(128, 10),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    return run_fashion(build_model, "fashion_mnist_mlp", __doc__, epochs=10, argv=argv)


if __name__ == "__main__":
    raise SystemExit(main())
