"""Atomic, durable replacement of a file: checkpoints, weights files, exported models.

Every writer of the framework (HDF5 checkpoints, ``.safetensors`` and ``.npz``
weights, ONNX files, the NumPy-only predictor) writes through
:func:`atomic_path`: a temporary file beside the target (a unique name
``.<target name>.<random>.tmp``), flushed and fsynced, moved over the target
with ``os.replace``, then the folder fsynced. So:

- a process killed at any moment leaves the previous file or the new one;
- a write that fails (disk full, file-size limit, any ``OSError``) removes the
  temporary file, leaves the previous file untouched and raises the caller's
  :class:`~framework.FrameworkError` subclass (:class:`~framework.CheckpointError`
  by default) naming the path and the cause;
- two processes saving to one path at once each write their own temporary
  file, and ``os.replace`` is atomic, so the target ends as one complete file
  of one of them, never a mix.

The new file gets the permissions of the file it replaces, or those a plain
``open(path, "w")`` would give (``0o666`` less the umask).
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from framework.errors import CheckpointError, FrameworkError
from framework.saving.hdf5 import h5py_module

if TYPE_CHECKING:
    import h5py

__all__ = ["atomic_h5", "atomic_path", "refuse_unbuilt"]


def _describe_failure(exc: BaseException) -> str:
    """A short cause for a failed write: "the disk is full (ENOSPC)", or the exception's type and text."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return "the disk is full (ENOSPC)"
    if isinstance(exc, OSError) and exc.errno == errno.EFBIG:
        return "the file-size limit was reached (EFBIG)"
    return f"{type(exc).__name__}: {exc}"


def refuse_unbuilt(model: Any, what: str = "weights of") -> None:
    """Raise :class:`~framework.CheckpointError` when ``model`` is not built (it has no arrays to save).

    Every weights writer (``.h5``, ``.safetensors``, ``.npz``) refuses an
    unbuilt model rather than write a file without arrays.
    """
    if not getattr(model, "built", False):
        raise CheckpointError(
            f"cannot save {what + ' ' if what else ''}{model.describe()}: it is not built yet "
            "(call it on data or build it)"
        )


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _create_temporary(target: Path, folder: Path) -> str:
    """Create an empty, unique temporary file beside ``target``; returns its name."""
    mode = 0o666  # less the umask, as open() gives
    with contextlib.suppress(OSError):
        info = os.stat(target)
        if stat.S_ISREG(info.st_mode):
            mode = stat.S_IMODE(info.st_mode)
    for _ in range(100):
        name = str(folder / f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), mode)
        except FileExistsError:
            continue
        os.close(fd)
        if mode != 0o666:
            with contextlib.suppress(OSError):
                os.chmod(name, mode)
        return name
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(folder))


def _check_target(target: Path, folder: Path, error: type[FrameworkError], verb: str) -> None:
    if target.is_dir():
        raise error(f"cannot {verb} {str(target)!r}: it is a directory; give the path of a file")
    if not folder.exists():
        raise error(f"cannot {verb} {str(target)!r}: folder {str(folder)!r} does not exist")
    if not folder.is_dir():
        raise error(f"cannot {verb} {str(target)!r}: {str(folder)!r} is a file, not a folder")


@contextlib.contextmanager
def atomic_path(
    path: str | os.PathLike[str],
    *,
    error: type[FrameworkError] = CheckpointError,
    catch: tuple[type[BaseException], ...] = (OSError,),
    verb: str = "save to",
) -> Iterator[str]:
    """Yield the name of a temporary file beside ``path``; on success move it over ``path``.

    The block writes the whole file under the yielded name (it exists, empty).

    Args:
        path: the file to write.
        error: the error raised for a failed write (default :class:`~framework.CheckpointError`).
        catch: what a failed write raises inside the block besides ``OSError``
            (a library's own error type), turned into ``error`` too.
        verb: how the message describes the write ("save to", "write", "export to").

    Raises:
        FrameworkError: (of type ``error``) when ``path`` is a directory, its
            folder does not exist or is a file, or when writing, syncing or
            renaming fails with an exception of ``catch`` (the message names
            ``path`` and says "disk full" for ``ENOSPC``). Other exceptions
            raised inside the block propagate unchanged; in every case the
            temporary file is removed and ``path`` is as it was.
    """
    target = Path(os.fspath(path))
    folder = target.parent if str(target.parent) else Path(".")
    _check_target(target, folder, error, verb)
    try:
        tmp_name = _create_temporary(target, folder)
    except OSError as exc:
        raise error(f"cannot {verb} {str(target)!r}: {_describe_failure(exc)}") from exc
    catch = (OSError, *catch)
    try:
        yield tmp_name
        with open(tmp_name, "rb+") as raw:
            os.fsync(raw.fileno())
        os.replace(tmp_name, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        if isinstance(exc, catch) and not isinstance(exc, FrameworkError):
            raise error(
                f"cannot {verb} {str(target)!r}: {_describe_failure(exc)}; "
                "the previous file (if any) is unchanged"
            ) from exc
        raise
    _fsync_folder(folder)


@contextlib.contextmanager
def atomic_h5(path: str | os.PathLike[str]) -> Iterator[h5py.File]:
    """Open a temporary HDF5 file beside ``path``; on success move it over ``path``.

    Raises:
        CheckpointError: as :func:`atomic_path` (a missing folder, a failed
            write, flush, sync or rename; "disk full" for ``ENOSPC``). Other
            exceptions raised inside the block propagate unchanged; in every
            case the temporary file is removed and ``path`` is as it was.
    """
    h5py = h5py_module()
    with atomic_path(path) as tmp_name:
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
