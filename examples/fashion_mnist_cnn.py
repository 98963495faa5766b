"""A small CNN with BatchNorm and Dropout on Fashion-MNIST (>= 91% test accuracy).

    Conv(1->16, 3x3, pad 1) - BatchNorm - ReLU - MaxPool 2     28x28 -> 14x14
    Conv(16->32, 3x3, pad 1) - BatchNorm - ReLU - MaxPool 2    14x14 -> 7x7
    Dropout(0.25) - Flatten - Linear(32*7*7 -> 128) - ReLU - Dropout(0.4) - Linear(128 -> 10)

Adam (learning rate 1e-3), batch 128, 12 epochs, cross-entropy on the logits.
The data are read from the local IDX files (``framework.datasets.load_fashion_mnist``:
a ``--data`` folder, ``$FRAMEWORK_FASHION_MNIST`` or ``/usr/share/datasets/fashion-mnist``).

The script prints the summary, trains with a progress bar, prints the test
metrics and the training time, saves the loss/accuracy curves and a grid of
test images with predicted and true labels (if matplotlib is installed), saves
an HDF5 checkpoint and reloads it with ``framework.load_model``, checking that
the reloaded model's predictions are bit-identical.

Run: ``python examples/fashion_mnist_cnn.py [--epochs 12] [--batch-size 128] [--output DIR]``;
``--quick`` trains one epoch on 512 images of the test file (a smoke test).

Data-parallel on 2 processes: ``mpiexec -n 2 python examples/fashion_mnist_cnn.py``
(``pip install -e ".[distributed]"``; see docs/guide/distributed.md). Each rank
trains on its half of every epoch with ``--batch-size`` per rank; rank 0 prints
and saves.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from common import fashion_data, fashion_parser, save_and_reload

import framework
from framework import Sequential, distributed
from framework.datasets import FASHION_MNIST_CLASSES
from framework.layers import BatchNorm, Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU

OUTPUT = Path(__file__).resolve().parent / "output"


def build_model() -> Sequential:
    """The network above (PyTorch's twin is in ``benchmarks/torch_fashion_mnist.py``)."""
    return Sequential(
        [
            Conv2d(1, 16, 3, padding=1),
            BatchNorm(16),
            ReLU(),
            MaxPool2d(2),
            Conv2d(16, 32, 3, padding=1),
            BatchNorm(32),
            ReLU(),
            MaxPool2d(2),
            Dropout(0.25),
            Flatten(),
            Linear(32 * 7 * 7, 128),
            ReLU(),
            Dropout(0.4),
            Linear(128, 10),
        ]
    )


def save_prediction_grid(
    path: Path, images: np.ndarray, true: np.ndarray, pred: np.ndarray, rows: int = 4, cols: int = 8
) -> bool:
    """A ``rows`` x ``cols`` grid of test images titled "predicted (true)", wrong ones in red; False
    without matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return False
    figure = Figure(figsize=(cols * 1.6, rows * 1.9), layout="constrained")
    for ax, image, t, p in zip(figure.subplots(rows, cols).ravel(), images, true, pred):
        ax.imshow(image[0], cmap="gray_r")
        ax.set_title(
            f"{FASHION_MNIST_CLASSES[p]}\n({FASHION_MNIST_CLASSES[t]})",
            fontsize=8,
            color="black" if p == t else "red",
        )
        ax.axis("off")
    figure.suptitle("predicted (true) on Fashion-MNIST test images; mistakes in red")
    figure.savefig(path, dpi=90)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = fashion_parser(__doc__, epochs=12)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument(
        "--threads", type=int, default=None, help="shards of each batch, one thread each (fit(threads=...))"
    )
    args = parser.parse_args(argv)

    framework.set_seed(args.seed)
    main_rank = distributed.is_main()  # True in a single process
    (x_train, y_train), (x_test, y_test) = fashion_data(args)
    if main_rank:
        print(f"train {x_train.shape}, test {x_test.shape}, {distributed.size()} rank(s)")

    model = build_model()
    optimizer = framework.optimizers.get("adam", lr=args.lr)
    if distributed.size() > 1:  # under mpiexec: average the gradients over the ranks
        optimizer = distributed.DistributedOptimizer(optimizer)
    model.compile(optimizer=optimizer, loss="cross_entropy", metrics=["accuracy"])
    model.build((None, *x_train.shape[1:]))
    if main_rank:
        model.summary()

    start = time.perf_counter()
    history = model.fit(
        x_train,
        y_train,
        epochs=args.epochs,
        batch_size=args.batch_size,
        validation_data=(x_test, y_test),
        seed=args.seed,
        threads=args.threads,
    )
    seconds = time.perf_counter() - start
    result = model.evaluate(x_test, y_test, batch_size=500)
    if not main_rank:
        return 0
    print(
        f"test loss {result['loss']:.4f}  test accuracy {result['accuracy']:.4f}  "
        f"training time {seconds:.1f} s ({seconds / args.epochs:.1f} s/epoch, {args.epochs} epochs)"
    )

    args.output.mkdir(parents=True, exist_ok=True)
    logits = model.predict(x_test, batch_size=500)
    try:
        history.plot(args.output / "fashion_mnist_cnn_curves.png")
        rows, cols = (2, 2) if args.quick else (4, 8)  # the smoke test draws 4 images, not 32
        shown = rows * cols
        save_prediction_grid(
            args.output / "fashion_mnist_cnn_predictions.png",
            x_test[:shown],
            y_test[:shown],
            logits[:shown].argmax(axis=1),
            rows,
            cols,
        )
        print(f"saved {args.output / 'fashion_mnist_cnn_curves.png'} and fashion_mnist_cnn_predictions.png")
    except ImportError as exc:
        print(f"no plots: {exc}")

    save_and_reload(model, x_test, args.output / "fashion_mnist_cnn.h5", batch_size=500)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
