"""The error a collective raises when the job cannot go on together."""

from __future__ import annotations

from framework.errors import FrameworkError

__all__ = ["DistributedError"]


class DistributedError(FrameworkError, RuntimeError):
    """A collective timed out, MPI is missing, or the ranks disagree.

    The message names the collective (``allreduce``, ``broadcast``...), the
    rank that raised and the way out. Raised outside an ``except`` clause it
    reaches the hook :func:`framework.distributed.init` installs, which prints
    the traceback with the rank and aborts every rank of the job.
    """
