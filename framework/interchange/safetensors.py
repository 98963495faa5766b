"""``.safetensors`` files through the ``safetensors`` package's NumPy API (the ``[safetensors]`` extra).

A safetensors file is a JSON header (names, dtypes, shapes, offsets) followed
by raw little-endian bytes: reading it runs no code and unpickles nothing.
The package is imported only when a file is read or written, so the
framework works without it; a missing package raises a
:class:`~framework.CheckpointError` naming the extra. Writing is atomic
(:func:`~framework.saving.atomic.atomic_path`): a failed write leaves the
previous file as it was.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from framework.errors import CheckpointError
from framework.saving.atomic import atomic_path

__all__ = ["read_safetensors", "read_safetensors_metadata", "safetensors_numpy", "write_safetensors"]


def safetensors_numpy() -> Any:
    """The ``safetensors.numpy`` module, or a CheckpointError saying how to install it."""
    try:
        import safetensors.numpy as st_numpy
    except ImportError as exc:
        raise CheckpointError(
            "reading or writing .safetensors files needs the 'safetensors' package: "
            "pip install 'framework[safetensors]' (or pip install safetensors)"
        ) from exc
    return st_numpy


def write_safetensors(
    arrays: dict[str, np.ndarray], path: str | os.PathLike[str], metadata: dict[str, str] | None = None
) -> None:
    """Write ``arrays`` (name -> array) to ``path``; arrays are made contiguous first.

    The file is written under a temporary name and moved over ``path`` when
    complete, so a failed write leaves the previous file as it was.

    Raises:
        CheckpointError: the package is missing, the folder does not exist, or
            the file cannot be written (safetensors' own ``SafetensorError``
            included).
    """
    st_numpy = safetensors_numpy()
    import safetensors

    # np.ascontiguousarray makes a 0-d array (num_batches_tracked) 1-d; np.require keeps its shape
    dense = {key: np.require(value, requirements="C") for key, value in arrays.items()}
    failures = (ValueError, TypeError, getattr(safetensors, "SafetensorError", OSError))
    with atomic_path(path, catch=failures, verb="write safetensors file") as tmp_name:
        st_numpy.save_file(dense, tmp_name, metadata=metadata)


def read_safetensors(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Every array of the safetensors file ``path``, by name (copies, not memory maps).

    Raises:
        CheckpointError: the package is missing, the file does not exist, or
            it is not a valid safetensors file (or holds a dtype NumPy lacks,
            such as bfloat16).
    """
    st_numpy = safetensors_numpy()
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise CheckpointError(f"no safetensors file at {name!r}")
    try:
        arrays = st_numpy.load_file(name)
    except Exception as exc:  # the Rust reader raises its own SafetensorError, not an OSError
        raise CheckpointError(f"{name!r} is not a readable safetensors file: {exc}") from exc
    return {key: np.array(value, copy=True) for key, value in arrays.items()}


def read_safetensors_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``__metadata__`` of the safetensors file ``path`` (``{}`` when it has none).

    :func:`write_safetensors` records ``{"format": "pt"}`` for PyTorch's names
    (as PyTorch's own writers do) and ``{"format": "np"}`` for the layer names.

    Raises:
        CheckpointError: the package is missing or the file is not readable.
    """
    safetensors_numpy()
    from safetensors import safe_open

    name = os.fspath(path)
    try:
        with safe_open(name, framework="np") as handle:
            metadata = handle.metadata()
    except Exception as exc:  # the Rust reader raises its own SafetensorError, not an OSError
        raise CheckpointError(f"{name!r} is not a readable safetensors file: {exc}") from exc
    return dict(metadata or {})
