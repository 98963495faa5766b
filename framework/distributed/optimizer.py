"""``DistributedOptimizer``: averages the gradients over the ranks, in fused buckets, then steps.

Horovod's shape: wrap any optimizer, and ``step`` first averages every
trainable parameter's gradient over the ranks, then lets the wrapped
optimizer update. The gradients are copied into a few large contiguous
buffers (fusion buckets, one dtype each, about ``bucket_mb`` MiB), each summed
in place by one ``Allreduce`` (``MPI.IN_PLACE``), and copied back scaled by
``1 / size``: a step sends one message per bucket, never one per parameter.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from framework.base.optimizer import Optimizer
from framework.base.parameter import Parameter
from framework.distributed import world
from framework.errors import ConfigError

__all__ = ["Bucket", "DistributedOptimizer", "make_buckets"]

_COMPRESSIONS = (None, "none", "fp16")


class Bucket:
    """One contiguous buffer holding the gradients of consecutive parameters of one dtype.

    Attributes:
        params: the parameters, in buffer order.
        buffer: the flat buffer (the wire dtype: float16 under compression).
        views: each parameter's slice of ``buffer``, shaped like it.
    """

    def __init__(self, params: list[Parameter], wire_dtype: Any) -> None:
        self.params = params
        total = sum(p.data.size for p in params)
        self.buffer = np.empty(total, dtype=wire_dtype)
        self.views: list[np.ndarray] = []
        offset = 0
        for p in params:
            self.views.append(self.buffer[offset : offset + p.data.size].reshape(p.shape))
            offset += p.data.size

    @property
    def nbytes(self) -> int:
        return int(self.buffer.nbytes)


def make_buckets(params: list[Parameter], bucket_bytes: int, compression: str | None = None) -> list[Bucket]:
    """Parameters grouped by dtype, in order, into buckets of at most ``bucket_bytes`` (one at least)."""
    by_dtype: dict[np.dtype, list[Parameter]] = {}
    for p in params:
        by_dtype.setdefault(p.data.dtype, []).append(p)
    buckets: list[Bucket] = []
    for dtype, group in by_dtype.items():
        wire = np.dtype(np.float16) if compression == "fp16" and dtype.kind == "f" else dtype
        current: list[Parameter] = []
        used = 0
        for p in group:
            nbytes = p.data.size * wire.itemsize
            if current and used + nbytes > bucket_bytes:
                buckets.append(Bucket(current, wire))
                current, used = [], 0
            current.append(p)
            used += nbytes
        if current:
            buckets.append(Bucket(current, wire))
    return buckets


class DistributedOptimizer(Optimizer):
    """Wraps an optimizer so that ``step`` averages the gradients over the ranks first.

    Everything else (``params``, ``state``, ``learning_rate``, ``state_dict``,
    ``get_config``, ...) is the wrapped optimizer's, and a model saved with a
    ``DistributedOptimizer`` stores the wrapped one: its checkpoint loads in a
    single process. In a world of size 1 ``step`` is the wrapped step.

    ``fit`` trains data-parallel when the model's optimizer is a
    ``DistributedOptimizer`` and the world has several ranks (see
    :mod:`framework.distributed`).

    Args:
        optimizer: the optimizer to wrap (an instance, a registered name or a config).
        compression: ``None`` (default) or ``"fp16"``: floating gradients cross
            the wire as float16 (pre-divided by the world size, so the sum
            cannot overflow where the mean does not), halving the bytes sent at
            the cost of about three decimal digits.
        bucket_mb: the size of a fusion bucket in MiB (default 32): gradients
            are sent in ``ceil(total / bucket_mb)`` messages per dtype.
        timeout: seconds each bucket's allreduce may wait for the other ranks
            (default: :func:`framework.distributed.init`'s timeout).

    Attributes:
        grad_scale: the weight of this rank's gradient in the average, set by
            ``fit`` for a short last window (``n_r * size / L``, see
            :mod:`framework.distributed.sharding`); 1 otherwise, 0 for a rank
            with no sample in that window.
        comm_seconds: the time spent packing, reducing and unpacking
            gradients since construction (what the benchmark reports).

    Raises:
        ConfigError: an unknown ``compression`` or a ``bucket_mb`` not > 0.

    Example:
        >>> from framework.distributed import DistributedOptimizer
        >>> from framework.optimizers import SGD
        >>> DistributedOptimizer(SGD(0.1)).lr
        0.1
    """

    def __init__(
        self,
        optimizer: Any,
        *,
        compression: str | None = None,
        bucket_mb: float = 32.0,
        timeout: float | None = None,
    ) -> None:
        from framework import optimizers

        inner: Any = optimizers.get(optimizer)
        if isinstance(inner, DistributedOptimizer):
            inner = inner.optimizer
        if not isinstance(inner, Optimizer):
            raise ConfigError(f"DistributedOptimizer: expected an Optimizer, got {type(inner).__name__}")
        if compression not in _COMPRESSIONS:
            raise ConfigError(
                f"DistributedOptimizer: compression must be None or 'fp16', got {compression!r}"
            )
        if isinstance(bucket_mb, bool) or not isinstance(bucket_mb, (int, float)) or not bucket_mb > 0:
            raise ConfigError(f"DistributedOptimizer: bucket_mb must be a number > 0, got {bucket_mb!r}")
        self.optimizer: Optimizer = inner
        self.compression = None if compression == "none" else compression
        self.bucket_bytes = int(bucket_mb * 1024 * 1024)
        self.timeout = timeout
        self.grad_scale = 1.0
        self.comm_seconds = 0.0
        self._weighted_in_loss = False
        self._buckets: list[Bucket] = []
        self._bucketed: list[Parameter] | None = None

    # -- the wrapped optimizer's state ------------------------------------------------
    @property
    def params(self) -> list[Parameter]:
        return self.optimizer.params

    @params.setter
    def params(self, value: list[Parameter]) -> None:
        self.optimizer.params = value

    @property
    def state(self) -> list[dict[str, np.ndarray]]:
        return self.optimizer.state

    @state.setter
    def state(self, value: list[dict[str, np.ndarray]]) -> None:
        self.optimizer.state = value

    @property
    def iterations(self) -> int:
        return self.optimizer.iterations

    @iterations.setter
    def iterations(self, value: int) -> None:
        self.optimizer.iterations = value

    @property
    def learning_rate(self) -> float | Callable[[int], float]:
        return self.optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, value: Any) -> None:
        self.optimizer.learning_rate = value

    @property
    def lr(self) -> float:
        return self.optimizer.lr

    @lr.setter
    def lr(self, value: float | Callable[[int], float]) -> None:
        self.optimizer.learning_rate = value

    @property
    def loss_scaler(self) -> Any:
        """The wrapped optimizer's loss scale (float16): the training step scales by it."""
        return self.optimizer.loss_scaler

    @loss_scaler.setter
    def loss_scaler(self, value: Any) -> None:
        self.optimizer.loss_scaler = value

    @property
    def serialized_name(self) -> str:
        """The wrapped optimizer's registered name: a checkpoint stores the wrapped optimizer."""
        from framework.registry import REGISTRY

        return REGISTRY.name_of("optimizers", self.optimizer) or type(self.optimizer).__name__

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes not found normally: the wrapped optimizer's own.
        if name == "optimizer":
            raise AttributeError(name)
        return getattr(self.optimizer, name)

    def bind(self, params: Any) -> DistributedOptimizer:
        self.optimizer.bind(params)
        self._bucketed = None
        return self

    def refresh(self) -> None:
        self.optimizer.refresh()

    # the float16 master copies live on the wrapped optimizer (the base methods would read this one's)
    def master(self, param: Parameter) -> Parameter:
        return self.optimizer.master(param)

    def slot_dtype(self, param: Parameter) -> np.dtype:
        return self.optimizer.slot_dtype(param)

    def sync_master_weights(self) -> None:
        self.optimizer.sync_master_weights()

    def scratch(self, param: Parameter, name: str = "work") -> np.ndarray:
        return self.optimizer.scratch(param, name)

    def slot_names(self) -> frozenset[str] | None:
        return self.optimizer.slot_names()

    def get_config(self) -> dict[str, Any]:
        return self.optimizer.get_config()

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state)

    def update(self, param: Parameter, grad: np.ndarray, state: dict[str, np.ndarray], lr: float) -> None:
        self.optimizer.update(param, grad, state, lr)

    # -- the distributed step ---------------------------------------------------------
    @property
    def buckets(self) -> list[Bucket]:
        """The fusion buckets of the bound parameters (built on first use, rebuilt when they change)."""
        self.optimizer.refresh()
        params = self.optimizer.params
        if self._bucketed is not params:
            self._buckets = make_buckets(params, self.bucket_bytes, self.compression)
            self._bucketed = params
        return self._buckets

    def loss_gradient_factor(self) -> float:
        """This rank's weight in the average, ``grad_scale / size``, for the loss gradient to carry.

        Under float16 loss scaling ``fit`` multiplies the loss gradient by it (in
        float32, with the loss scale) instead of leaving it to :meth:`synchronize`:
        each rank's backward then sees the magnitudes of one process's on the
        ranks' batches together, so it overflows float16 at the same loss scale.
        The next :meth:`synchronize` only sums.
        """
        self._weighted_in_loss = True
        return self.grad_scale / world.size()

    def synchronize(self) -> None:
        """Replace every bound parameter's gradient by its (``grad_scale``-weighted) mean over the ranks."""
        n = world.size()
        weighted, self._weighted_in_loss = self._weighted_in_loss, False
        if n == 1 and (self.grad_scale == 1.0 or weighted):
            return
        start = time.perf_counter()
        factor = 1.0 if weighted else self.grad_scale / n
        for bucket in self.buckets:
            wire = bucket.buffer
            # each rank weighs its own gradient before the sum: the ranks' weights differ in a last,
            # uneven window (and in float16 the division first keeps the sum from overflowing)
            for p, view in zip(bucket.params, bucket.views):
                if self.grad_scale == 0.0:
                    view.fill(0)
                else:
                    np.multiply(p.grad, factor, out=view, casting="unsafe")
            world.allreduce_inplace(wire, "allreduce of the gradients (DistributedOptimizer)", self.timeout)
            for p, view in zip(bucket.params, bucket.views):
                np.copyto(p.grad, view, casting="unsafe")
        self.comm_seconds += time.perf_counter() - start

    def step(self) -> None:
        """Average the gradients over the ranks (:meth:`synchronize`), then the wrapped optimizer's step."""
        self.synchronize()
        self.optimizer.step()

    def __repr__(self) -> str:
        extra = f", compression={self.compression!r}" if self.compression else ""
        return f"DistributedOptimizer({self.optimizer!r}{extra})"
