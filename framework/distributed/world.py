"""The MPI world: who this process is, and the collectives the framework uses.

mpi4py is imported only when the process was started by an MPI launcher
(``mpiexec``, ``srun``: detected from the environment variables the launchers
set, ``PMI_RANK``, ``PMI_SIZE``, ``OMPI_COMM_WORLD_SIZE``, ``PMIX_RANK``) or
when the program imported ``mpi4py`` itself. Otherwise the world has size 1,
every collective returns its input, and MPI is never initialised.

On a world of several ranks :func:`init` installs a ``sys.excepthook`` that
prints an uncaught exception's traceback prefixed with the rank and aborts
the whole job (``MPI.COMM_WORLD.Abort(1)``), so one failing rank never
leaves the others blocked in a collective.
"""

from __future__ import annotations

import os
import pickle
import sys
import time
import traceback
from typing import Any

import numpy as np

from framework.distributed.errors import DistributedError

__all__ = [
    "allgather_object",
    "allreduce",
    "barrier",
    "broadcast",
    "comm",
    "get_timeout",
    "init",
    "is_main",
    "launched_by_mpi",
    "local_rank",
    "mpi",
    "rank",
    "set_step_weight",
    "size",
    "step_weight",
]

#: Environment variables an MPI launcher sets in each process it starts.
LAUNCHER_VARIABLES = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MPI_LOCALRANKID")

_OPS = ("sum", "mean", "max", "min")


class _World:
    """The state :func:`init` fills in once."""

    initialised = False
    mpi: Any = None
    comm: Any = None
    rank = 0
    size = 1
    local_rank = 0
    timeout: float | None = None
    step_weight = 1.0


_WORLD = _World()


def launched_by_mpi() -> bool:
    """Whether an MPI launcher started this process (or the program already imported mpi4py)."""
    return "mpi4py.MPI" in sys.modules or any(os.environ.get(v) for v in LAUNCHER_VARIABLES)


def _import_mpi() -> Any:
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise DistributedError(
            "this process was started by an MPI launcher but mpi4py is not installed; install the "
            'distributed extra: pip install "framework[distributed]" (mpi4py and mpich)'
        ) from exc
    return MPI


def init(timeout: float | None = None, abort_on_error: bool = True) -> None:
    """Join the MPI world (once; later calls only change ``timeout``).

    Called by every function of :mod:`framework.distributed` on first use, so
    calling it yourself is needed only to set its options.

    Args:
        timeout: seconds a collective of the framework may wait for the other
            ranks before raising :class:`DistributedError` naming it; ``None``
            (the default) waits forever, as MPI does.
        abort_on_error: on several ranks, install the ``sys.excepthook`` that
            prints an uncaught exception with the rank and aborts the job.

    Raises:
        DistributedError: launched by ``mpiexec`` without mpi4py installed
            (names the ``distributed`` extra); a ``timeout`` that is not > 0.
    """
    if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
        raise DistributedError(f"init: timeout must be a number of seconds > 0 or None, got {timeout!r}")
    _WORLD.timeout = None if timeout is None else float(timeout)
    if _WORLD.initialised:
        return
    if launched_by_mpi():
        mpi = _import_mpi()
        world = mpi.COMM_WORLD
        _WORLD.mpi, _WORLD.comm = mpi, world
        _WORLD.rank, _WORLD.size = world.Get_rank(), world.Get_size()
        if _WORLD.size > 1:
            node = world.Split_type(mpi.COMM_TYPE_SHARED)
            _WORLD.local_rank = node.Get_rank()
            node.Free()
            if abort_on_error:
                sys.excepthook = _abort_hook
    _WORLD.initialised = True


def _abort_hook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
    """Print the traceback, each line prefixed with the rank, then abort every rank."""
    prefix = f"[rank {_WORLD.rank}/{_WORLD.size}] "
    lines = "".join(traceback.format_exception(kind, value, tb)).splitlines()
    text = f"{prefix}uncaught {kind.__name__}; aborting the MPI job\n"
    text += "".join(f"{prefix}{line}\n" for line in lines)
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    finally:
        _WORLD.comm.Abort(1)


def _world() -> _World:
    if not _WORLD.initialised:
        init()
    return _WORLD


def rank() -> int:
    """This process's rank in the world, ``0 .. size() - 1`` (0 without ``mpiexec``)."""
    return _world().rank


def size() -> int:
    """The number of ranks (1 without ``mpiexec``)."""
    return _world().size


def local_rank() -> int:
    """This process's rank among the ranks of its node (0 without ``mpiexec``)."""
    return _world().local_rank


def is_main() -> bool:
    """Whether this is rank 0, the rank that prints, logs and saves."""
    return _world().rank == 0


def comm() -> Any:
    """``MPI.COMM_WORLD`` (``None`` in a world of size 1 started without ``mpiexec``)."""
    return _world().comm


def mpi() -> Any:
    """The ``mpi4py.MPI`` module (``None`` when MPI was not initialised)."""
    return _world().mpi


def step_weight() -> float:
    """This rank's weight in the current step's gradient average (1 but in a short last window).

    ``fit`` sets it (see :mod:`framework.distributed.sharding`); layers that
    reduce gradient sums themselves (``SyncBatchNorm``) read it.
    """
    return _WORLD.step_weight


def set_step_weight(weight: float) -> None:
    """Set :func:`step_weight` (``fit`` does, before each step)."""
    _WORLD.step_weight = float(weight)


def get_timeout() -> float | None:
    """The collectives' timeout in seconds set by :func:`init` (``None``: wait forever)."""
    return _world().timeout


def wait(request: Any, name: str, timeout: float | None) -> None:
    """Wait for a nonblocking collective, polling, up to ``timeout`` seconds.

    Raises:
        DistributedError: the deadline passed (names the collective and the rank).
    """
    deadline = time.monotonic() + timeout if timeout is not None else None
    pause = 1e-5
    while not request.Test():
        if deadline is not None and time.monotonic() > deadline:
            raise DistributedError(
                f"{name} on rank {_WORLD.rank} timed out after {timeout:g} s waiting for the other "
                f"{_WORLD.size - 1} rank(s); one of them is slow, stopped or failed (see its "
                "traceback), or the ranks call collectives in different orders"
            )
        time.sleep(pause)
        pause = min(pause * 2, 1e-3)


def allreduce_inplace(buffer: np.ndarray, name: str = "allreduce", timeout: float | None = None) -> None:
    """Sum a contiguous array over the ranks, in place (one ``Allreduce`` with ``MPI.IN_PLACE``)."""
    world = _world()
    if world.size == 1:
        return
    timeout = world.timeout if timeout is None else timeout
    mpi = world.mpi
    if timeout is None:
        world.comm.Allreduce(mpi.IN_PLACE, buffer, op=mpi.SUM)
    else:
        wait(world.comm.Iallreduce(mpi.IN_PLACE, buffer, op=mpi.SUM), name, timeout)


def allreduce(array: Any, op: str = "mean", timeout: float | None = None) -> Any:
    """Reduce ``array`` (an array or a number) over the ranks; every rank gets the result.

    Args:
        array: a NumPy array or a Python / NumPy number (returned as a float
            or an array, never modified).
        op: ``"mean"`` (default), ``"sum"``, ``"max"`` or ``"min"``.
        timeout: seconds to wait for the other ranks (default :func:`init`'s).

    Raises:
        DistributedError: an unknown ``op``, or the timeout passed.

    Example:
        >>> import numpy as np
        >>> from framework import distributed
        >>> distributed.allreduce(np.array([1.0, 2.0]))  # a world of size 1
        array([1., 2.])
    """
    if op not in _OPS:
        raise DistributedError(f"allreduce: op must be one of {list(_OPS)}, got {op!r}")
    scalar = np.ndim(array) == 0
    buffer = np.array(array, dtype=np.float64 if scalar else None, copy=True, order="C")
    if op == "mean" and buffer.dtype.kind in "iub":
        buffer = buffer.astype(np.float64)
    world = _world()
    if world.size > 1:
        timeout = world.timeout if timeout is None else timeout
        mpi = world.mpi
        mpi_op = {"sum": mpi.SUM, "mean": mpi.SUM, "max": mpi.MAX, "min": mpi.MIN}[op]
        if timeout is None:
            world.comm.Allreduce(mpi.IN_PLACE, buffer, op=mpi_op)
        else:
            wait(world.comm.Iallreduce(mpi.IN_PLACE, buffer, op=mpi_op), "allreduce", timeout)
        if op == "mean":
            buffer /= world.size
    return float(buffer) if scalar else buffer


def broadcast(obj_or_array: Any, root: int = 0, timeout: float | None = None) -> Any:
    """Rank ``root``'s value on every rank.

    An array of the same shape and dtype on every rank is overwritten in place
    (one ``Bcast``) and returned; any other array is received into a new one;
    any other object is pickled (``bcast``).

    Args:
        obj_or_array: the value (only ``root``'s is used).
        root: the rank whose value every rank gets.
        timeout: seconds to wait for the other ranks (default :func:`init`'s).

    Raises:
        DistributedError: a ``root`` outside the world, or the timeout passed.
    """
    world = _world()
    if not 0 <= root < world.size:
        raise DistributedError(f"broadcast: root must be a rank in 0..{world.size - 1}, got {root!r}")
    if world.size == 1:
        return obj_or_array
    timeout = world.timeout if timeout is None else timeout
    is_array = isinstance(obj_or_array, np.ndarray)
    header = pickle.dumps((obj_or_array.shape, obj_or_array.dtype.str) if is_array else None)
    meta = pickle.loads(_bcast_bytes(header, root, timeout))
    if meta is None:
        return pickle.loads(_bcast_bytes(pickle.dumps(obj_or_array), root, timeout))
    shape, dtype = tuple(meta[0]), np.dtype(meta[1])
    out = obj_or_array
    if not (
        is_array
        and out.shape == shape
        and out.dtype == dtype
        and out.flags.c_contiguous
        and out.flags.writeable
    ):
        out = np.ascontiguousarray(out) if world.rank == root else np.empty(shape, dtype)
    _bcast_buffer(out, root, timeout)
    return out


def _bcast_buffer(buffer: np.ndarray, root: int, timeout: float | None) -> None:
    c = _WORLD.comm
    if timeout is None:
        c.Bcast(buffer, root=root)
    else:
        wait(c.Ibcast(buffer, root=root), "broadcast", timeout)


def _bcast_bytes(data: bytes, root: int, timeout: float | None) -> bytes:
    """Root's ``data`` on every rank: its length, then the bytes (two ``Bcast``)."""
    length = np.array([len(data)], dtype=np.int64)
    _bcast_buffer(length, root, timeout)
    buffer = np.frombuffer(data, dtype=np.uint8).copy() if _WORLD.rank == root else None
    if buffer is None:
        buffer = np.empty(int(length[0]), dtype=np.uint8)
    _bcast_buffer(buffer, root, timeout)
    return buffer.tobytes()


def allgather_object(obj: Any, timeout: float | None = None) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (pickled: two ``Allgather``, lengths then bytes).

    For small Python values such as the metrics' states at an epoch's end; the
    ranks of one job trust each other's pickles as they do :func:`broadcast`'s.

    Raises:
        DistributedError: the timeout (default :func:`init`'s) passed.

    Example:
        >>> from framework import distributed
        >>> distributed.allgather_object({"count": 3})  # a world of size 1
        [{'count': 3}]
    """
    world = _world()
    if world.size == 1:
        return [obj]
    timeout = world.timeout if timeout is None else timeout
    data = np.frombuffer(pickle.dumps(obj), dtype=np.uint8)
    lengths = np.empty(world.size, dtype=np.int64)
    _gather(np.array([data.size], dtype=np.int64), lengths, None, timeout)
    received = np.empty(int(lengths.sum()), dtype=np.uint8)
    _gather(data, received, lengths, timeout)
    ends = np.cumsum(lengths)
    return [pickle.loads(received[end - n : end].tobytes()) for n, end in zip(lengths, ends)]


def _gather(send: np.ndarray, receive: np.ndarray, counts: np.ndarray | None, timeout: float | None) -> None:
    """``Allgather`` (equal parts) or, with ``counts``, ``Allgatherv``; nonblocking under a timeout."""
    c = _WORLD.comm
    target: Any = receive if counts is None else [receive, counts]
    if timeout is None:
        (c.Allgather if counts is None else c.Allgatherv)(send, target)
    else:
        start = c.Iallgather if counts is None else c.Iallgatherv
        wait(start(send, target), "allgather_object", timeout)


def barrier(timeout: float | None = None) -> None:
    """Wait until every rank reaches this call.

    Raises:
        DistributedError: the timeout (default :func:`init`'s) passed.
    """
    world = _world()
    if world.size == 1:
        return
    timeout = world.timeout if timeout is None else timeout
    if timeout is None:
        world.comm.Barrier()
    else:
        wait(world.comm.Ibarrier(), "barrier", timeout)
