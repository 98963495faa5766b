"""Atomic, durable replacement of a checkpoint file.

A save writes a temporary file beside the target (a unique name from
``tempfile.mkstemp``), flushes and fsyncs it, moves it over the target with
``os.replace`` and fsyncs the folder. So:

- a process killed at any moment leaves the previous file or the new one;
- a write that fails (disk full, file-size limit, any ``OSError``) removes the
  temporary file, leaves the previous checkpoint untouched and raises a
  :class:`~framework.CheckpointError` naming the path and the cause;
- two processes saving to one path at once each write their own temporary
  file, and ``os.replace`` is atomic, so the target ends as one complete
  checkpoint of one of them, never a mix.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from framework.errors import CheckpointError
from framework.saving.hdf5 import h5py_module

if TYPE_CHECKING:
    import h5py

__all__ = ["atomic_h5"]


def _describe(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "the disk is full (ENOSPC)"
    if exc.errno == errno.EFBIG:
        return "the file-size limit was reached (EFBIG)"
    return f"{type(exc).__name__}: {exc}"


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@contextlib.contextmanager
def atomic_h5(path: str | os.PathLike[str]) -> Iterator[h5py.File]:
    """Open a temporary HDF5 file beside ``path``; on success move it over ``path``.

    Raises:
        CheckpointError: when the folder does not exist, or when writing,
            flushing, syncing or renaming fails with an ``OSError`` (the
            message names ``path`` and says "disk full" for ``ENOSPC``).
            Other exceptions raised inside the block propagate unchanged;
            in every case the temporary file is removed and ``path`` is as it
            was.
    """
    h5py = h5py_module()
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise CheckpointError(f"cannot save to {str(target)!r}: folder {str(folder)!r} does not exist")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise CheckpointError(f"cannot save to {str(target)!r}: {_describe(exc)}") from exc
    os.close(fd)
    try:
        handle = h5py.File(tmp_name, "w")
        try:
            yield handle
            handle.flush()
        except BaseException:
            with contextlib.suppress(Exception):
                handle.close()
            raise
        try:
            handle.close()
        except Exception as exc:  # h5py reports a failed final write as RuntimeError too
            raise OSError(errno.EIO, f"writing the file failed when closing it: {exc}") from exc
        with open(tmp_name, "rb+") as raw:
            os.fsync(raw.fileno())
        os.replace(tmp_name, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise CheckpointError(
            f"cannot save to {str(target)!r}: {_describe(exc)}; the previous file (if any) is unchanged"
        ) from exc
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    _fsync_folder(folder)
