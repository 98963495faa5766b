"""The 8x8 handwritten digits, read from the copy scikit-learn ships: :func:`load_digits`."""

from __future__ import annotations

import importlib.util
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from framework.base.validation import check_bool
from framework.errors import DataError
from framework.runtime.dtype import resolve_dtype

__all__ = ["load_digits"]

_DATA_HINT = 'pip install "framework[data]"  (or: pip install scikit-learn)'


def _digits_file() -> Path | None:
    """Where scikit-learn keeps ``digits.csv.gz``, found without importing scikit-learn.

    Raises:
        DataError: if scikit-learn is not installed.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "load_digits: the digits data set is read from the copy scikit-learn ships, "
            f"but scikit-learn is not installed; install it with: {_DATA_HINT}"
        )
    for root in spec.submodule_search_locations:
        candidate = Path(root) / "datasets" / "data" / "digits.csv.gz"
        if candidate.is_file():
            return candidate
    return None


def load_digits(return_images: bool = True, dtype: Any = "float32") -> tuple[np.ndarray, np.ndarray]:
    """The 8x8 handwritten digits (1797 samples, 10 classes) from scikit-learn's wheel.

    The pixel counts (0..16) are scaled to ``[0, 1]`` by dividing by 16. The
    packaged ``sklearn/datasets/data/digits.csv.gz`` is read directly with NumPy
    (scikit-learn itself is not imported); only if a future scikit-learn moves
    that file is ``sklearn.datasets.load_digits`` called instead.

    Args:
        return_images: ``True`` (default) returns NCHW images, ``False`` flat
            64-feature rows.
        dtype: floating dtype of the pixels (default ``"float32"``).

    Returns:
        ``(x, y)``: ``x`` of shape ``(1797, 1, 8, 8)`` (or ``(1797, 64)``) and
        the given dtype with values in ``[0, 1]``; ``y`` int64 of shape
        ``(1797,)`` with values ``0..9``.

    Raises:
        DataError: if scikit-learn is not installed (with the install hint) or
            its copy of the data is unreadable.
        ConfigError: if ``dtype`` is not a floating dtype, or ``return_images`` not True/False.

    Example:
        >>> x, y = load_digits()  # doctest: +SKIP
        >>> x.shape, y.shape  # doctest: +SKIP
        ((1797, 1, 8, 8), (1797,))
    """
    return_images = check_bool("load_digits", "return_images", return_images)
    dtype = resolve_dtype(dtype)
    path = _digits_file()
    if path is not None:
        try:
            table = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
        except (OSError, ValueError, EOFError, zlib.error) as exc:
            raise DataError(
                f"load_digits: cannot read scikit-learn's copy of the digits {path}: {exc}"
            ) from exc
        if table.shape[1] != 65:
            raise DataError(
                f"load_digits: {path}: expected 65 columns (64 pixels + label), got {table.shape[1]}"
            )
        pixels, labels = table[:, :64], table[:, 64]
    else:  # pragma: no cover - only if scikit-learn reorganises its package data
        # scikit-learn ships no type information (no py.typed), so mypy cannot follow this import.
        from sklearn.datasets import load_digits as _sk_load_digits

        bunch = _sk_load_digits()
        pixels, labels = np.asarray(bunch.data, np.float64), np.asarray(bunch.target)
    x = (pixels / 16.0).astype(dtype)
    if return_images:
        x = x.reshape(-1, 1, 8, 8)
    return x, labels.astype(np.int64)
