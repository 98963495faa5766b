"""Semi-supervised node classification on Cora with a two-layer GCN (Kipf & Welling 2017).

The model and training recipe of the paper:

    Z = Â · ReLU(Â · dropout(X) · W0^T + b0) ...     (dropout before each layer)
    logits = Â · dropout(H) · W1^T + b1,   Â = D^-1/2 (A + I) D^-1/2

16 hidden units, dropout 0.5, row-normalised bag-of-words features, Adam with
learning rate 0.01, an L2 penalty of 5e-4 on the first layer's weight, at most
200 epochs with the paper's early stopping (stop once the validation loss
exceeds the mean of the previous 10), cross-entropy on the 140 labelled nodes
only ("masked_cross_entropy"), full-batch forward / backward over all 2708
nodes. The paper reports 81.5% test accuracy.

The data is read straight from the archive (it is not part of the project):
``cora/features.txt`` (2708 rows of 1433 comma-separated 0/1 values),
``cora/indices.txt`` (two rows: source and target node of each of the 10556
directed edges, each undirected edge listed both ways), ``cora/labels.txt``
(one class 0..6 per line) and ``cora/masks.txt`` (three 0/1 rows: train,
validation, test).

Usage (from the repository root)::

    python examples/gcn_cora.py                     # 10 seeds, ../shared/data/cora.tar.gz
    python examples/gcn_cora.py --seeds 3 --path /data/cora.tar.gz
    FRAMEWORK_CORA=/data/cora.tar.gz python examples/gcn_cora.py
"""

from __future__ import annotations

import argparse
import io
import os
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import framework
from framework import losses, optimizers
from framework.layers import Dropout, GCNConv

DEFAULT_PATH = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cora.tar.gz"


@dataclass
class Cora:
    """The Cora citation graph: 2708 papers, 7 classes, standard Planetoid split."""

    features: np.ndarray  # (2708, 1433) float32, rows normalised to sum 1
    edge_index: np.ndarray  # (2, 10556) int64
    labels: np.ndarray  # (2708,) int64
    train_mask: np.ndarray  # (2708,) bool, 140 nodes
    val_mask: np.ndarray  # 500 nodes
    test_mask: np.ndarray  # 1000 nodes

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1


def default_path() -> Path:
    """``$FRAMEWORK_CORA`` if set, else ``../shared/data/cora.tar.gz`` beside the repository."""
    return Path(os.environ.get("FRAMEWORK_CORA", DEFAULT_PATH))


def load_cora(path: str | Path) -> Cora:
    """Read the four text files from the ``.tar.gz`` archive, without extracting it."""

    def table(archive: tarfile.TarFile, name: str, dtype: Any) -> np.ndarray:
        member = next(m for m in archive.getmembers() if m.name.endswith(f"cora/{name}"))
        raw = archive.extractfile(member).read()
        return np.loadtxt(io.BytesIO(raw), delimiter=",", dtype=dtype, ndmin=2)

    with tarfile.open(path) as archive:
        features = table(archive, "features.txt", np.float32)
        edge_index = table(archive, "indices.txt", np.int64)
        labels = table(archive, "labels.txt", np.int64).reshape(-1)
        masks = table(archive, "masks.txt", np.int64).astype(bool)
    row_sums = features.sum(axis=1, keepdims=True)
    features /= np.where(row_sums == 0, 1.0, row_sums)
    return Cora(features, edge_index, labels, masks[0], masks[1], masks[2])


def build_model(
    in_features: int, num_classes: int, hidden: int = 16, dropout: float = 0.5, bias: bool = True
) -> list:
    """The paper's two-layer GCN as a list of layers (the graph is set on each GCNConv)."""
    return [
        Dropout(dropout),
        GCNConv(in_features, hidden, activation="relu", bias=bias),
        Dropout(dropout),
        GCNConv(hidden, num_classes, bias=bias),
    ]


def forward(layers: list, x: np.ndarray) -> np.ndarray:
    for layer in layers:
        x = layer(x)
    return x


def backward(layers: list, grad: np.ndarray) -> None:
    for layer in reversed(layers):
        grad = layer.backward(grad)


def accuracy(logits: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> float:
    return float(np.mean(logits[mask].argmax(axis=1) == labels[mask]))


def train(
    data: Cora,
    epochs: int = 200,
    seed: int = 0,
    lr: float = 0.01,
    weight_decay: float = 5e-4,
    hidden: int = 16,
    dropout: float = 0.5,
    patience: int | None = 10,
    bias: bool = True,
) -> dict[str, Any]:
    """Train one GCN from seed ``seed``; returns accuracies, losses and the time taken.

    Early stopping follows Kipf & Welling's code: after epoch ``patience``,
    stop as soon as the validation loss exceeds the mean of the ``patience``
    losses before it (``patience=None`` trains all ``epochs``). The test
    accuracy is that of the final weights.
    """
    start = time.perf_counter()
    framework.set_seed(seed)
    layers = build_model(data.features.shape[1], data.num_classes, hidden, dropout, bias)
    graph = (data.edge_index, None)
    for layer in layers:
        if isinstance(layer, GCNConv):
            layer.set_graph(graph)
    first = layers[1]
    params = [p for layer in layers for p in layer.parameters()]
    optimizer = optimizers.get("adam", lr=lr).bind(params)
    loss = losses.get("masked_cross_entropy")

    train_losses: list[float] = []
    val_losses: list[float] = []
    for epoch in range(epochs):
        for layer in layers:
            layer.train()
        logits = forward(layers, data.features)
        # Kipf & Welling's L2 term 5e-4 * ||W0||^2 / 2 on the first layer only: gradient 5e-4 * W0
        train_losses.append(
            loss(logits, data.labels, mask=data.train_mask)
            + 0.5 * weight_decay * float(np.sum(first.weight.data**2))
        )
        optimizer.zero_grad()
        backward(layers[1:], loss.backward())  # no gradient needed for the input dropout
        first.weight.grad += weight_decay * first.weight.data
        optimizer.step()

        for layer in layers:
            layer.eval()
        logits = forward(layers, data.features)
        val_losses.append(loss(logits, data.labels, mask=data.val_mask))
        if patience and epoch > patience and val_losses[-1] > np.mean(val_losses[-(patience + 1) : -1]):
            break

    for layer in layers:
        layer.eval()
    logits = forward(layers, data.features)
    return {
        "seed": seed,
        "epochs": len(train_losses),
        "train_loss": train_losses,
        "val_loss": val_losses,
        "train_accuracy": accuracy(logits, data.labels, data.train_mask),
        "val_accuracy": accuracy(logits, data.labels, data.val_mask),
        "test_accuracy": accuracy(logits, data.labels, data.test_mask),
        "seconds": time.perf_counter() - start,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", type=Path, default=default_path(), help="cora.tar.gz (or $FRAMEWORK_CORA)")
    parser.add_argument("--seeds", type=int, default=10, help="number of runs, seeds 0..n-1")
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--patience", type=int, default=10, help="early-stopping window; 0 disables it")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    data = load_cora(args.path)
    print(
        f"Cora: {data.features.shape[0]} nodes, {data.edge_index.shape[1]} directed edges, "
        f"{data.features.shape[1]} features, {data.num_classes} classes; "
        f"train/val/test {data.train_mask.sum()}/{data.val_mask.sum()}/{data.test_mask.sum()} "
        f"(loaded in {time.perf_counter() - start:.2f} s)"
    )
    results = []
    for seed in range(args.seeds):
        r = train(data, epochs=args.epochs, seed=seed, patience=args.patience or None)
        results.append(r)
        print(
            f"seed {seed}: {r['epochs']:3d} epochs, train loss {r['train_loss'][-1]:.4f}, "
            f"val acc {r['val_accuracy']:.4f}, test acc {r['test_accuracy']:.4f}, {r['seconds']:.2f} s"
        )
    test = np.array([r["test_accuracy"] for r in results])
    seconds = np.array([r["seconds"] for r in results])
    print(
        f"test accuracy over {len(results)} seeds: mean {100 * test.mean():.2f}% "
        f"+- {100 * test.std():.2f} (min {100 * test.min():.1f}%, max {100 * test.max():.1f}%); "
        f"{seconds.mean():.2f} s per run ({np.mean([r['epochs'] for r in results]):.0f} epochs on average)"
    )


if __name__ == "__main__":
    main()
