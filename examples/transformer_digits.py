"""Sequence classification with a Transformer encoder: the 8x8 digits read row by row.

Each image is a sequence of 8 rows of 8 pixels:

    rows (N, 8, 8) - Linear(8 -> 32) - PositionalEncoding - TransformerEncoder(2 x
    TransformerEncoderLayer(32, 4 heads, 64, pre-norm)) - mean over the rows - Linear(32 -> 10)

The encoder path of the attention family (``docs/maths/attention.md``): no mask,
every row attends to every row. The digits ship inside scikit-learn's wheel
(``pip install -e ".[data]"``); a stratified, seeded quarter is held out. The
script prints the summary, trains, prints the test accuracy, saves a checkpoint,
reloads it and checks the predictions bit for bit.

Run: ``python examples/transformer_digits.py [--epochs 30]``; ``--quick`` trains
one epoch on 300 images (for tests).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # tiny matrices: one BLAS thread is fastest
from pathlib import Path

from common import save_and_reload

import framework
from framework import Input, Model
from framework.datasets import load_digits, train_test_split
from framework.layers import (
    AdaptiveAvgPool1d,
    Flatten,
    LayerNorm,
    Linear,
    Permute,
    PositionalEncoding,
    TransformerEncoder,
    TransformerEncoderLayer,
)

OUTPUT = Path(__file__).resolve().parent / "output"


def build_model(d_model: int = 32, heads: int = 4, layers: int = 2) -> Model:
    rows = Input((8, 8), name="rows")  # (N, L=8 rows, 8 pixels)
    h = Linear(8, d_model, name="embed")(rows)
    h = PositionalEncoding(d_model, max_len=8, dropout=0.0)(h)
    block = TransformerEncoderLayer(d_model, heads, 2 * d_model, dropout=0.1, norm_first=True)
    h = TransformerEncoder(block, layers, norm=LayerNorm(d_model))(h)
    h = Flatten()(AdaptiveAvgPool1d(1)(Permute((2, 1))(h)))  # the mean over the rows: (N, d_model)
    return Model(rows, Linear(d_model, 10, name="classes")(h), name="transformer_digits")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=OUTPUT, help="folder for the checkpoint")
    parser.add_argument("--quick", action="store_true", help="1 epoch on 300 images (smoke test)")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    framework.set_seed(args.seed)
    x, y = load_digits()  # (1797, 1, 8, 8)
    x = x[:, 0]  # (N, 8 rows, 8 pixels)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, stratify=True, seed=args.seed)
    if args.quick:
        args.epochs = 1
        x_train, y_train = x_train[:300], y_train[:300]
    print(f"digits as sequences: {len(x_train)} training and {len(x_test)} test images of 8 rows x 8")

    model = build_model()
    model.compile(
        optimizer=framework.optimizers.get("adam", lr=args.lr), loss="cross_entropy", metrics=["accuracy"]
    )
    model.summary()
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed)
    result = model.evaluate(x_test, y_test)
    print(
        f"test loss {result['loss']:.4f}  test accuracy {result['accuracy']:.4f} "
        f"({round(result['accuracy'] * len(y_test))}/{len(y_test)})"
    )
    save_and_reload(model, x_test, args.output / "transformer_digits.h5")
    print(f"total time {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
