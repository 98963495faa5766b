"""The Fashion-MNIST CNN of ``examples/fashion_mnist_cnn.py``, trained in PyTorch for comparison.

Same data (read with ``framework.datasets.load_fashion_mnist``, so the same
arrays), same network (Conv 1->16 - BN - ReLU - MaxPool, Conv 16->32 - BN -
ReLU - MaxPool, Dropout 0.25, Linear 1568->128 - ReLU - Dropout 0.4 - Linear
128->10), same hyperparameters (Adam 1e-3 with PyTorch's betas and eps,
batch 128, a fresh shuffle per epoch, 12 epochs, cross-entropy on the
logits, BatchNorm momentum 0.1 and eps 1e-5). Initialisation and random
streams are PyTorch's own, so single runs differ by the usual seed noise.

Prints the test accuracy after each epoch, and per seed the final accuracy and
the training time; with several ``--seeds``, their mean.

Run: ``python benchmarks/torch_fashion_mnist.py [--epochs 12] [--seeds 0 1] [--threads 2]``.
Needs ``pip install torch`` (CPU build); not part of the test suite.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def build_model(torch):
    """The ``torch.nn`` twin of the example's CNN (also the benchmark harness's ``fashion_cnn``)."""
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Dropout(0.25),
        nn.Flatten(),
        nn.Linear(32 * 7 * 7, 128),
        nn.ReLU(),
        nn.Dropout(0.4),
        nn.Linear(128, 10),
    )


def accuracy(torch, model, x, y) -> float:
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(x[i : i + 1000]).argmax(dim=1) for i in range(0, len(x), 1000)])
    return float((pred == y).float().mean())


def train_one(torch, seed: int, args, data) -> tuple[float, float]:
    (x_train, y_train), (x_test, y_test) = data
    torch.manual_seed(seed)
    generator = np.random.default_rng(seed)
    model = build_model(torch)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    start = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        order = torch.from_numpy(generator.permutation(len(x_train)))
        total = 0.0
        for i in range(0, len(order), args.batch_size):
            idx = order[i : i + args.batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(x_train[idx]), y_train[idx])
            loss.backward()
            optimizer.step()
            total += float(loss) * len(idx)
        acc = accuracy(torch, model, x_test, y_test)
        print(
            f"seed {seed} epoch {epoch + 1}/{args.epochs}: loss {total / len(order):.4f}  "
            f"test accuracy {acc:.4f}  ({time.perf_counter() - start:.1f} s)",
            flush=True,
        )
    seconds = time.perf_counter() - start
    return accuracy(torch, model, x_test, y_test), seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", default=None, help="folder with the Fashion-MNIST IDX files")
    parser.add_argument("--quick", action="store_true", help="1 epoch on 2000 images (smoke test)")
    args = parser.parse_args(argv)

    try:
        import torch
    except ImportError:
        parser.exit(1, "this benchmark needs PyTorch: pip install torch\n")
    torch.set_num_threads(args.threads)

    # Imported here: the benchmark harness imports build_model in its PyTorch worker,
    # whose memory should not include this framework.
    from framework.datasets import load_fashion_mnist

    (x_train, y_train), (x_test, y_test) = load_fashion_mnist(args.data)
    if args.quick:
        args.epochs = 1
        x_train, y_train, x_test, y_test = x_train[:2000], y_train[:2000], x_test[:500], y_test[:500]
    data = tuple(
        (torch.from_numpy(x), torch.from_numpy(y)) for x, y in ((x_train, y_train), (x_test, y_test))
    )
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {len(x_train)} training images")

    results = [train_one(torch, seed, args, data) for seed in args.seeds]
    for seed, (acc, seconds) in zip(args.seeds, results):
        print(f"seed {seed}: test accuracy {acc:.4f}, training time {seconds:.1f} s ({args.epochs} epochs)")
    accs = [acc for acc, _ in results]
    times = [seconds for _, seconds in results]
    print(
        f"mean over {len(accs)} seed(s): test accuracy {statistics.mean(accs):.4f}, "
        f"training time {statistics.mean(times):.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
