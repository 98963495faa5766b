"""The checks data gets before training: a numeric dtype, and no NaN or infinity.

Each error names the array (``x``, ``y[1]``, ``sample_weight``) and, for a
non-finite value, the value and its first index.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from framework.errors import DataError

__all__ = ["check_batch", "check_dtype", "check_finite_array"]

_CHUNK = 1 << 20  # elements per isfinite pass: bounded temporary memory on large arrays


def check_dtype(a: Any, label: str) -> None:
    """Raise DataError naming ``label`` for a dtype object, string, bytes, structured or complex."""
    dtype = np.dtype(getattr(a, "dtype", np.float64))
    if dtype.kind in "OUSVc":
        kind = {"O": "object", "U": "string", "S": "bytes", "V": "structured", "c": "complex"}[dtype.kind]
        raise DataError(
            f"{label}: arrays of dtype {dtype} ({kind}) cannot be fed to a model; "
            "convert to a real numeric dtype (e.g. x.astype(np.float32)) first"
        )


def check_finite_array(a: np.ndarray, label: str, offset: int = 0) -> None:
    """Raise DataError naming ``label`` and the first NaN/Inf index of ``a`` (floating arrays only)."""
    if a.dtype.kind != "f" or a.size == 0:
        return
    rows = max(1, _CHUNK // max(1, a.size // max(1, len(a))))
    for start in range(0, len(a), rows):
        part = a[start : start + rows]
        if not np.isfinite(part).all():
            where = np.argwhere(~np.isfinite(part))[0]
            index = (int(where[0]) + start + offset, *map(int, where[1:]))
            value = part[tuple(where)]
            raise DataError(
                f"{label} contains {value} at index {index if len(index) > 1 else index[0]}; "
                "the loss and every weight would turn NaN. Clean the data, or pass "
                "check_finite=False to train on it anyway"
            )


def check_batch(xb: Any, yb: Any, wb: Any, label: str) -> None:
    """The dtype and finiteness checks on one batch of an iterable (names ``label``)."""
    for name, part in (("x", xb), ("y", yb), ("sample_weight", wb)):
        if part is None:
            continue
        for k, a in enumerate(part if isinstance(part, (list, tuple)) else [part]):
            if a is None:
                continue
            a = np.asarray(a)
            tag = f"{name}[{k}]" if isinstance(part, (list, tuple)) else name
            check_dtype(a, f"{tag} of {label}")
            check_finite_array(a, f"{tag} of {label}")
