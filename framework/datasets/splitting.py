"""Splitting a data set into a training and a test part: :func:`train_test_split`."""

from __future__ import annotations

from typing import Any

import numpy as np

from framework.datasets._common import Seed, _common_length, _generator
from framework.errors import ConfigError, DataError

__all__ = ["train_test_split"]


def train_test_split(
    x: Any,
    y: Any,
    test_size: float | int = 0.25,
    seed: Seed = None,
    stratify: bool | Any = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split ``(x, y)`` at random into a training and a test part.

    The test part holds ``ceil(test_size * N)`` samples for a fraction, or
    ``test_size`` samples for an int. With ``stratify`` each class keeps its
    share in both parts (the per-class test counts are the largest-remainder
    rounding of ``count_k * n_test / N``, so they add up to ``n_test``).

    Args:
        x: array of shape ``(N, ...)``.
        y: array of shape ``(N, ...)``.
        test_size: fraction in ``(0, 1)`` or a count in ``1..N-1`` (default
            0.25).
        seed: int, Generator or ``None`` (the framework's global generator).
        stratify: ``True`` to stratify by ``y`` (1-D class labels), an array
            of ``N`` labels to stratify by, or ``False`` (default).

    Returns:
        ``(x_train, x_test, y_train, y_test)``, in random order.

    Raises:
        DataError: if ``x`` and ``y`` differ in length or the stratification
            labels are not 1-D of length ``N``.
        ConfigError: for a ``test_size`` that leaves either part empty.
    """
    try:
        x, y = np.asarray(x), np.asarray(y)
    except ValueError as exc:  # ragged nesting, e.g. a list of two inputs of different widths
        raise DataError(
            "train_test_split: x and y must each be one array (for a model of several inputs, split "
            f"each input with the same seed), got a ragged sequence: {exc}"
        ) from exc
    n = _common_length([("x", x), ("y", y)], "train_test_split")
    if isinstance(test_size, bool) or not isinstance(test_size, (int, float, np.number)):
        raise ConfigError(f"train_test_split: test_size: expected a fraction or a count, got {test_size!r}")
    if isinstance(test_size, (int, np.integer)):
        n_test = int(test_size)
    elif 0.0 < test_size < 1.0:
        n_test = int(np.ceil(test_size * n))
    else:
        raise ConfigError(f"train_test_split: test_size: a fraction must be in (0, 1), got {test_size!r}")
    if not 1 <= n_test <= n - 1:
        raise ConfigError(
            f"train_test_split: test_size={test_size!r} gives {n_test} test samples out of {n}; "
            f"both parts need at least one sample (1..{n - 1})"
        )
    rng = _generator(seed)
    order = rng.permutation(n)

    if stratify is False or stratify is None:
        test_idx, train_idx = order[:n_test], order[n_test:]
    else:
        strata = y if stratify is True else np.asarray(stratify)
        if strata.ndim != 1 or len(strata) != n:
            raise DataError(
                f"train_test_split: stratify needs 1-D labels of length {n}, got shape {strata.shape}"
            )
        _, codes, counts = np.unique(strata, return_inverse=True, return_counts=True)
        codes = codes.reshape(-1)
        exact = counts * (n_test / n)
        alloc = np.floor(exact).astype(np.int64)
        short = n_test - int(alloc.sum())
        if short:
            alloc[np.argsort(-(exact - alloc), kind="stable")[:short]] += 1
        # Rank of each shuffled sample among the shuffled samples of its class.
        shuffled_codes = codes[order]
        by_class = np.argsort(shuffled_codes, kind="stable")
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        rank = np.empty(n, dtype=np.int64)
        rank[by_class] = np.arange(n) - starts[shuffled_codes[by_class]]
        in_test = rank < alloc[shuffled_codes]
        test_idx, train_idx = order[in_test], order[~in_test]
    return x[train_idx], x[test_idx], y[train_idx], y[test_idx]
