"""Data-parallel training over MPI (mpi4py): the world, the collectives, ``DistributedOptimizer``.

Launch a script with ``mpiexec -n K python script.py`` (or ``srun``): each
of the ``K`` processes is a rank holding a full copy of the model. A model
compiled with ``DistributedOptimizer(optimizer)`` trains data-parallel in
``fit``: rank 0's parameters and buffers are broadcast at the start, each
epoch's permutation is cut into per-rank batches (``batch_size`` is per
rank), the gradients are averaged in fused buckets before every update, and
the loss and metrics are averaged so ``History`` is the same on every rank.
Training on ``K`` ranks with ``batch_size=B`` equals training one process
with ``batch_size=K * B`` on the same seed (see docs/guide/distributed.md).

Without an MPI launcher the world has size 1, mpi4py is not even imported,
and everything here behaves as plain single-process training. Under a
launcher without mpi4py installed, :func:`init` raises
:class:`DistributedError` naming the ``distributed`` extra.
"""

from framework.distributed.errors import DistributedError
from framework.distributed.optimizer import DistributedOptimizer
from framework.distributed.sharding import shard_steps, shard_windows
from framework.distributed.world import (
    allgather_object,
    allreduce,
    barrier,
    broadcast,
    init,
    is_main,
    launched_by_mpi,
    local_rank,
    rank,
    size,
)

__all__ = [
    "DistributedError",
    "DistributedOptimizer",
    "allgather_object",
    "allreduce",
    "barrier",
    "broadcast",
    "init",
    "is_main",
    "launched_by_mpi",
    "local_rank",
    "rank",
    "shard_steps",
    "shard_windows",
    "size",
]
