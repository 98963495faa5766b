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

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # tiny matrices: one BLAS thread is fastest

from common import run_digits

from framework import Input, Model
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


def build_model(d_model: int = 32, heads: int = 4, layers: int = 2) -> Model:
    rows = Input((8, 8), name="rows")  # (N, L=8 rows, 8 pixels)
    h = Linear(8, d_model, name="embed")(rows)
    h = PositionalEncoding(d_model, max_len=8, dropout=0.0)(h)
    block = TransformerEncoderLayer(d_model, heads, 2 * d_model, dropout=0.1, norm_first=True)
    h = TransformerEncoder(block, layers, norm=LayerNorm(d_model))(h)
    h = Flatten()(AdaptiveAvgPool1d(1)(Permute((2, 1))(h)))  # the mean over the rows: (N, d_model)
    return Model(rows, Linear(d_model, 10, name="classes")(h), name="transformer_digits")


def main(argv: list[str] | None = None) -> int:
    return run_digits(build_model, "transformer_digits", __doc__, argv, as_rows=True)


if __name__ == "__main__":
    raise SystemExit(main())
