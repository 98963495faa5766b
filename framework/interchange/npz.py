"""NumPy ``.npz`` archives of named arrays, read with ``allow_pickle=False``.

An ``.npz`` is a zip of ``.npy`` files, one per array; PyTorch users write one
with ``np.savez(path, **{k: v.numpy() for k, v in sd.items()})``. Loading
refuses object arrays (which would need unpickling).
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from framework.errors import CheckpointError

__all__ = ["read_npz", "write_npz"]


def write_npz(arrays: dict[str, np.ndarray], path: str | os.PathLike[str], compress: bool = False) -> None:
    """Write ``arrays`` (name -> array) to the archive ``path`` (exactly that name, no suffix added).

    Raises:
        CheckpointError: the file cannot be written.
    """
    save = np.savez_compressed if compress else np.savez
    try:
        with open(os.fspath(path), "wb") as handle:
            save(handle, **{key: np.asarray(value) for key, value in arrays.items()})  # type: ignore[arg-type]
    except OSError as exc:
        raise CheckpointError(f"cannot write {os.fspath(path)!r}: {exc}") from exc


def read_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Every array of the archive ``path``, by name.

    Raises:
        CheckpointError: no such file, not an ``.npz`` archive, or an array
            that needs unpickling.
    """
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise CheckpointError(f"no .npz file at {name!r}")
    try:
        with np.load(name, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except ValueError as exc:  # object arrays
        raise CheckpointError(f"{name!r} holds an array that needs unpickling; refused: {exc}") from exc
    except (OSError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{name!r} is not a readable .npz archive: {exc}") from exc
