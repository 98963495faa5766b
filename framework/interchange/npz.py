"""NumPy ``.npz`` archives of named arrays, read with ``allow_pickle=False``.

An ``.npz`` is a zip of ``.npy`` files, one per array; PyTorch users write one
with ``np.savez(path, **{k: v.numpy() for k, v in sd.items()})``. Loading
refuses object arrays (which would need unpickling) and any file that is not
a zip of ``.npy`` members (an ``.npy`` file, a ``torch.save`` zip, an empty
file). Writing is atomic (:func:`~framework.saving.atomic.atomic_path`).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from framework.errors import CheckpointError
from framework.saving.atomic import atomic_path

__all__ = ["read_npz", "write_npz"]

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first member; an empty zip
_NPY_MAGIC = b"\x93NUMPY"


def write_npz(arrays: dict[str, np.ndarray], path: str | os.PathLike[str], compress: bool = False) -> None:
    """Write ``arrays`` (name -> array) to the archive ``path`` (exactly that name, no suffix added).

    The archive is written under a temporary name and moved over ``path``
    when complete, so a failed write leaves the previous file as it was.

    Raises:
        CheckpointError: the folder does not exist or the file cannot be written.
    """
    save = np.savez_compressed if compress else np.savez
    dense = {key: np.asarray(value) for key, value in arrays.items()}
    with atomic_path(path, verb="write") as tmp_name, open(tmp_name, "wb") as handle:
        save(handle, **dense)  # type: ignore[arg-type]


def _not_an_archive(name: str, why: str) -> CheckpointError:
    return CheckpointError(
        f"{name!r} is not an .npz archive of arrays ({why}); write one with "
        "np.savez(path, **{name: array}) or model.save_weights(path)"
    )


def _check_members(name: str, archive: Any) -> None:
    """Refuse a zip that holds anything but ``.npy`` members (a ``torch.save`` file is a zip too)."""
    others = [member for member in archive.zip.namelist() if not member.endswith(".npy")]
    if not others:
        return
    shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
    hint = ""
    if any(member.endswith("data.pkl") for member in others):
        hint = (
            "; it looks like a torch.save file, which is never unpickled here: load it in PyTorch "
            "(torch.load(path, weights_only=True)) and pass the state dict to model.load_state_dict, "
            "or save it with safetensors"
        )
    raise _not_an_archive(name, f"it is a zip holding other files than .npy arrays: {shown}{hint}")


def read_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Every array of the archive ``path``, by name.

    Raises:
        CheckpointError: no such file, not an ``.npz`` archive (an empty file,
            an ``.npy`` file, a zip of other files such as a ``torch.save``
            checkpoint), or an array that needs unpickling.
    """
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise CheckpointError(f"no .npz file at {name!r}")
    try:
        with open(name, "rb") as handle:
            head = handle.read(len(_NPY_MAGIC))
    except OSError as exc:
        raise CheckpointError(f"cannot read {name!r}: {exc}") from exc
    if not head:
        raise _not_an_archive(name, "the file is empty")
    if head.startswith(_NPY_MAGIC):
        raise _not_an_archive(name, "it is a single .npy array; read it with np.load")
    if head.startswith(b"\x80"):  # the protocol opcode a pickle (protocol 2 and later) starts with
        raise _not_an_archive(name, "it looks like a Python pickle, which would need unpickling; refused")
    if not head.startswith(_ZIP_MAGIC):
        raise _not_an_archive(name, f"it does not start as a zip file does, but with {head[:4]!r}")
    try:
        with np.load(name, allow_pickle=False) as archive:
            _check_members(name, archive)
            arrays = {key: archive[key] for key in archive.files}
    except CheckpointError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc):  # object arrays
            raise CheckpointError(f"{name!r} holds an array that needs unpickling; refused: {exc}") from exc
        raise CheckpointError(f"{name!r} is not a readable .npz archive: {exc}") from exc
    except Exception as exc:  # zipfile, zlib and the .npy header parser raise their own types
        raise CheckpointError(
            f"{name!r} is not a readable .npz archive: {type(exc).__name__}: {exc}"
        ) from exc
    for key, value in arrays.items():
        if not isinstance(value, np.ndarray):  # np.load hands back a member without an .npy header as bytes
            raise CheckpointError(
                f"{name!r}: the member {key!r} is not an array (no .npy header), got {type(value).__name__}"
            )
    return arrays
