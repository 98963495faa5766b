"""What ``fit`` does differently on several MPI ranks (see :mod:`framework.distributed`).

``fit`` trains data-parallel when the model's optimizer is a
:class:`~framework.distributed.DistributedOptimizer` and the world has more
than one rank; otherwise none of this runs (a world of size 1 takes the plain
loop, with no per-batch work added). Then, in order:

- at the start, rank 0's parameters and buffers are broadcast (packed in one
  message per dtype), so every rank starts from the same model;
- each epoch, rank 0 draws the permutation (from ``seed``, or the global
  generator) and broadcasts it; each rank trains on its blocks of it
  (:mod:`framework.distributed.sharding`): ``batch_size`` is per rank, every
  rank runs ``ceil(n / (size * batch_size))`` steps;
- each step, the optimizer averages the gradients (fused buckets), then one
  two-number allreduce gives every rank the window's loss (each rank's mean
  weighted by its share of the window's samples) and whether any rank asked to
  stop (``model.stop_training`` or Ctrl-C), so all stop after the same batch;
- each epoch's end, the metrics' states are gathered from every rank and
  merged (:meth:`~framework.base.metric.Metric.merge_state`, in rank order on
  every rank), so each metric is its value over all the epoch's samples,
  exactly, sample weights and ratios of counts (precision, AUC) included; the
  per-output losses (means over samples) are averaged weighted by each rank's
  sample count. The validation results (each rank evaluates its contiguous
  block of the validation arrays) are combined the same way; validation
  arrays of fewer samples than ranks are evaluated whole on every rank, and
  each keeps its own, equal, results. The logs, ``History`` and every
  callback's decision (``EarlyStopping``) are thus the same on every rank; a
  last allreduce agrees on stopping. A metric that keeps its own counts and
  cannot merge them (no ``get_state`` / ``set_state`` / ``merge_state``) is
  averaged by sample counts instead, with a warning once per ``fit`` (on
  rank 0).

Batch-level logs (``on_train_batch_end``) carry the global running loss and
this rank's own running metrics. Batch iterables (``x`` yielding batches) are
not sharded: each rank reads its own and must yield the same number of
batches (checked at each step, a ``DistributedError`` on every rank
otherwise); each rank's gradient is weighted by its batch's share of the
step's samples, so the step equals one process on the concatenated batches.
Callbacks with ``main_process_only = True`` (``ModelCheckpoint``,
``CSVLogger``, ``TensorBoard``) and the progress bar run on rank 0 alone.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from framework.base.context import Context
from framework.base.metric import Metric, result_value
from framework.distributed import world
from framework.distributed.errors import DistributedError
from framework.distributed.optimizer import DistributedOptimizer
from framework.distributed.sharding import block, shard_steps, shard_windows
from framework.errors import ConfigError
from framework.training.data import ArrayData, copyless

if TYPE_CHECKING:
    from framework.models.model import Model
    from framework.training.trainer import Interrupt, Trainer

__all__ = ["DataParallel", "broadcast_state", "data_parallel"]

_WARNED = [False]


def data_parallel(model: Model) -> DataParallel | None:
    """The data-parallel helper for ``fit``, or ``None`` for plain single-process training."""
    optimizer = model.optimizer
    if not isinstance(optimizer, DistributedOptimizer):
        if not _WARNED[0] and world.launched_by_mpi() and world.size() > 1 and world.is_main():
            _WARNED[0] = True
            warnings.warn(
                f"fit runs under MPI on {world.size()} ranks with a plain {type(optimizer).__name__}: "
                "each rank trains alone on all the data. Compile with "
                "framework.distributed.DistributedOptimizer(optimizer) to train data-parallel",
                RuntimeWarning,
                stacklevel=3,
            )
        return None
    if world.size() == 1:
        return None
    return DataParallel(model, optimizer)


def _walk(model: Model) -> Iterator[Any]:
    stack: list[Any] = [model]
    while stack:
        layer = stack.pop()
        yield layer
        stack.extend(layer.children())


def _all_built(model: Model) -> bool:
    return all(layer.built for layer in _walk(model))


def broadcast_state(model: Model, root: int = 0) -> None:
    """Overwrite every parameter and buffer with rank ``root``'s (one ``Bcast`` per dtype).

    Raises:
        DistributedError: on every rank, when the ranks' models do not hold
            the same arrays (shapes and dtypes, in order): each rank would
            otherwise train its own model.
    """
    arrays: dict[int, np.ndarray] = {}
    for held in [*model.parameters(), *model.buffers()]:
        arrays.setdefault(id(held.data), held.data)
    mine = [(a.shape, str(a.dtype)) for a in arrays.values()]
    theirs = world.broadcast(mine, root)
    unlike = np.zeros(world.size())
    unlike[world.rank()] = float(theirs != mine)
    unlike = world.allreduce(unlike, op="max")
    if unlike.any():
        ranks = ", ".join(str(r) for r in np.flatnonzero(unlike))
        if theirs == mine:  # this rank matches the root: name the ranks that do not
            raise DistributedError(
                f"the ranks' models differ: rank(s) {ranks} hold arrays unlike rank {root}'s "
                f"({len(mine)} arrays here, as on rank {root}); build the same model on every rank"
            )
        first = next((i for i, (a, b) in enumerate(zip(mine, theirs)) if a != b), min(len(mine), len(theirs)))
        raise DistributedError(
            f"the ranks' models differ: rank {world.rank()} holds {len(mine)} arrays, rank {root} "
            f"{len(theirs)}; the first difference is array {first} "
            f"({mine[first] if first < len(mine) else 'none'} here, "
            f"{theirs[first] if first < len(theirs) else 'none'} on rank {root}); build the same model on "
            "every rank"
        )
    by_dtype: dict[np.dtype, list[np.ndarray]] = {}
    for a in arrays.values():
        by_dtype.setdefault(a.dtype, []).append(a)
    for dtype in sorted(by_dtype, key=str):
        group = by_dtype[dtype]
        flat = np.concatenate([a.ravel() for a in group]) if group else np.empty(0, dtype)
        world.broadcast(flat, root)
        offset = 0
        for a in group:
            a[...] = flat[offset : offset + a.size].reshape(a.shape)
            offset += a.size


def merged(metric: Metric, states: list[dict[str, Any]]) -> Metric:
    """A new metric like ``metric`` holding ``states`` (one per rank, merged in their order)."""
    empty = copy.deepcopy(metric)
    empty.reset_state()
    parts = []
    for state in states:
        part = copy.deepcopy(empty)
        part.set_state(state)
        parts.append(part)
    empty.merge_state(parts)
    return empty


class DataParallel:
    """The collectives ``fit`` adds on several ranks (one instance per ``fit``)."""

    def __init__(self, model: Model, optimizer: DistributedOptimizer) -> None:
        self._warned_metrics = False
        self.model = model
        self.optimizer = optimizer
        self.rank, self.size = world.rank(), world.size()
        self.samples = 0  # this rank's training samples in the current epoch
        self.batch_samples = 0  # this rank's samples in the current window
        self.window_samples = 0  # every rank's samples in the current window (after_batch)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def start(self, data: Any, batch_size: int, full_batch: bool) -> None:
        """Refuse what cannot be sharded, build the model if needed, broadcast rank 0's state."""
        if full_batch:
            raise ConfigError(
                "fit: a model with a full-batch layer (needs_full_batch) cannot be trained "
                "data-parallel: its batch is the whole, ordered data set. Train it in one process"
            )
        if isinstance(data, ArrayData) and any(
            getattr(layer, "collective", False) for layer in _walk(self.model)
        ):
            short = data.n % (batch_size * self.size)
            if 0 < short < self.size:
                raise ConfigError(
                    f"fit: the last window of {short} sample(s) leaves a rank without samples, but "
                    f"{type(self.model).__name__} has a layer that communicates in forward "
                    "(SyncBatchNorm) and needs every rank in every step; drop or add "
                    f"{short} sample(s), or change batch_size"
                )
        if not _all_built(self.model):
            if not isinstance(data, ArrayData):
                raise ConfigError(
                    "fit: on several ranks the model must be built before training from a batch "
                    "iterable (call model.build(input_shape)), so rank 0's weights can be broadcast"
                )
            first = [a[:2] for a in data.xs]
            x = self.model.cast_inputs(first if data.multi_x else first[0])
            self.model.forward(Context(False, record=False), x)
        broadcast_state(self.model)

    def steps(self, data: Any, batch_size: int) -> int | None:
        if isinstance(data, ArrayData):
            return shard_steps(data.n, batch_size, self.size)
        return data.steps(batch_size)

    def batches(self, data: Any, batch_size: int, shuffle: bool, rng: Any) -> Iterator[Any]:
        """This rank's ``(x, y, weight)`` batches; ``(None, None, None)`` for an empty share."""
        self.samples = 0
        if not isinstance(data, ArrayData):
            yield from self._own_batches(data, batch_size, shuffle, rng)
            return
        order = None
        if shuffle:
            order = rng.permutation(data.n) if self.is_main else np.empty(data.n, dtype=np.int64)
            order = world.broadcast(order.astype(np.int64, copy=False))
        for index, weight in shard_windows(data.n, batch_size, self.rank, self.size, order):
            self.optimizer.grad_scale = weight
            world.set_step_weight(weight)
            count = len(index) if isinstance(index, np.ndarray) else index.stop - index.start
            self.samples += count
            self.batch_samples = count
            yield data.take(index) if count else (None, None, None)
        self.optimizer.grad_scale = 1.0
        world.set_step_weight(1.0)

    def _own_batches(self, data: Any, batch_size: int, shuffle: bool, rng: Any) -> Iterator[Any]:
        """This rank's own batches of an iterable, each step agreed over the ranks (one small allreduce).

        Every rank must serve a batch at every step (else one rank's gradients would be summed with
        another's logs); the window's size weighs each rank's gradient by its samples, as for arrays.

        Raises:
            DistributedError: on every rank, when the ranks' iterables yield different numbers of batches.
        """
        step = 0
        try:
            for item in data.batches(batch_size, shuffle, rng):
                count = len(item[0][0] if isinstance(item[0], list) else item[0])
                buf = np.array([1.0, count])
                world.allreduce_inplace(buf, "allreduce of the batch counts (fit)")
                if buf[0] != self.size:
                    self._mismatch(step, True, int(buf[0]))
                self.optimizer.grad_scale = count * self.size / buf[1]
                world.set_step_weight(self.optimizer.grad_scale)
                self.batch_samples = count
                self.samples += count
                step += 1
                yield item
            buf = np.array([0.0, 0.0])
            world.allreduce_inplace(buf, "allreduce of the batch counts (fit)")
            if buf[0]:
                self._mismatch(step, False, int(buf[0]))
        finally:
            self.optimizer.grad_scale = 1.0
            world.set_step_weight(1.0)

    def _mismatch(self, step: int, mine: bool, others: int) -> None:
        raise DistributedError(
            f"fit: the ranks' batch iterables differ in length: at step {step} of the epoch rank "
            f"{self.rank} {'has' if mine else 'has no'} batch, {others} of {self.size} ranks have one. "
            "Each rank reads its own iterable (they are not sharded), so each must yield the same "
            "number of batches per epoch (pass the same steps_per_epoch on every rank)"
        )

    def empty_step(self, trainer: Trainer) -> float:
        """A step of a rank without samples: it still joins the gradient allreduce (weight 0)."""
        trainer._bind()
        scaler = getattr(self.optimizer, "loss_scaler", None)
        if scaler is not None:  # float16: the other ranks' gradients arrive loss-scaled
            scaler.pending = True
        self.optimizer.step()
        return 0.0

    def after_batch(self, value: float, interrupt: Interrupt) -> float:
        """The window's loss on every rank; ``stop_training`` and Ctrl-C agreed over the ranks.

        Also sums the window's samples over the ranks (:attr:`window_samples`), by
        which ``fit`` weighs the window in the epoch's loss, as one process weighs a batch.
        """
        flags = [self.model.stop_training, interrupt.flag, self.batch_samples]
        buf = np.array([value * self.optimizer.grad_scale, *flags], float)
        world.allreduce_inplace(buf, "allreduce of the batch loss (fit)")
        if buf[1]:
            self.model.stop_training = True
        if buf[2]:
            interrupt.flag = True
        self.window_samples = int(buf[3])
        return float(buf[0]) / self.size

    def validation_part(self, data: Any) -> tuple[Any, bool]:
        """This rank's validation data, and whether the ranks' parts differ (their logs to combine).

        Arrays: this rank's contiguous block, or all of them, the same on every
        rank, when they are fewer than the ranks. Batch iterables: each rank's own.
        """
        if not isinstance(data, ArrayData):
            return data, True
        if data.n < self.size:
            return data, False
        start, stop = block(data.n, self.rank, self.size)
        return part_of(data, start, stop), True

    def combine_logs(
        self, logs: dict[str, Any], trainer: Trainer, weight: float, skip: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        """``logs`` over every rank: each metric of ``trainer`` merged from the ranks' states (one
        gather), the other values averaged weighted by ``weight`` (:meth:`mean_logs`)."""
        exact = [(key, metric) for key, metric in trainer.metric_items() if type(metric).merges()]
        approximate = [key for key, metric in trainer.metric_items() if not type(metric).merges()]
        if approximate and not self._warned_metrics and self.is_main:
            self._warned_metrics = True
            warnings.warn(
                f"metric(s) {approximate} keep their own counts and implement no get_state/set_state/"
                "merge_state: on several ranks each is averaged by the ranks' sample counts, which is not "
                "exact for ratios of sums or sample-weighted means",
                RuntimeWarning,
                stacklevel=3,
            )
        states = world.allgather_object([metric.get_state() for _, metric in exact])
        out = self.mean_logs(logs, weight, skip=(*skip, *(key for key, _ in exact)))
        for i, (key, metric) in enumerate(exact):
            out[key] = result_value(merged(metric, [rank_states[i] for rank_states in states]))
        return out

    def mean_logs(self, logs: dict[str, Any], weight: float, skip: tuple[str, ...] = ()) -> dict[str, Any]:
        """``logs`` averaged over the ranks, each rank's values weighted by ``weight`` (one allreduce)."""
        keys = [k for k in logs if k not in skip]
        values = [np.asarray(logs[k], dtype=np.float64) for k in keys]
        buf = np.concatenate([[weight], *[weight * v.ravel() for v in values]])
        world.allreduce_inplace(buf, "allreduce of the epoch logs (fit)")
        total = buf[0] if buf[0] else 1.0
        out = dict(logs)
        offset = 1
        for k, v in zip(keys, values):
            part = buf[offset : offset + v.size] / total
            out[k] = float(part[0]) if v.ndim == 0 else part.reshape(v.shape)
            offset += v.size
        return out

    def agree_stop(self, interrupt: Interrupt) -> None:
        """After the epoch's callbacks: stop on every rank if any rank stops."""
        buf = np.array([self.model.stop_training, interrupt.flag], dtype=np.float64)
        world.allreduce_inplace(buf, "allreduce of the stop flags (fit)")
        self.model.stop_training = bool(buf[0])
        interrupt.flag = bool(buf[1])


def part_of(data: ArrayData, start: int, stop: int) -> ArrayData:
    """Samples ``start..stop - 1`` of ``data`` (views, no copy)."""
    new = copyless(data)
    new.xs = [a[start:stop] for a in data.xs]
    new.ys = None if data.ys is None else [a[start:stop] for a in data.ys]
    new.ws = None if data.ws is None else [None if w is None else w[start:stop] for w in data.ws]
    new.n = stop - start
    return new
