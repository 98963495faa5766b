"""Built-in plugin: :class:`SyncBatchNorm`, BatchNorm with its batch moments summed over the MPI ranks.

Registered as ``SyncBatchNorm``. Plain :class:`~plugins.normalization.BatchNorm`
keeps per-rank statistics under data-parallel training (as Horovod does):
each rank normalises its own batch. ``SyncBatchNorm`` normalises with the
statistics of the ranks' batches together, so training on ``K`` ranks with
``batch_size=B`` equals one process with ``batch_size=K * B``, running
statistics included.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from framework.base.context import Context
from framework.base.layer import format_shape
from framework.distributed import world
from framework.errors import ShapeError
from framework.registry.hookspecs import hookimpl
from framework.runtime.dtype import HALF, compute_dtype
from plugins.normalization import BatchNorm

__all__ = ["SyncBatchNorm"]


def _sum(a: np.ndarray) -> np.ndarray:
    """Per-channel sums over every axis but 1, as a float64 ``(C,)`` vector."""
    return a.sum(axis=(0, *range(2, a.ndim)), dtype=np.float64)


def _channels(v: np.ndarray, ndim: int, dtype: Any) -> np.ndarray:
    return v.astype(dtype, copy=False).reshape((1, v.size) + (1,) * (ndim - 2))


class SyncBatchNorm(BatchNorm):
    """Batch normalization whose batch statistics span every rank's batch (PyTorch's ``SyncBatchNorm``).

    In training mode the per-channel mean and variance are those of the
    ranks' batches concatenated (``M = sum_r m_r`` values per channel):
    ``mean = allreduce(sum x) / M``, then
    ``var = allreduce(sum (x - mean)^2) / M`` (two passes, as one process
    computes them), and the running estimates take them, with the unbiased
    factor ``M / (M - 1)``. Every rank moves its running estimates alike and
    counts the step in ``num_batches_tracked``, so ``momentum=None`` (weight
    ``1 / num_batches_tracked``) averages the synchronised batches' statistics
    on every rank. In eval mode, or frozen, or in a world of one rank, it is
    :class:`~plugins.normalization.BatchNorm`.

    Each forward in training mode makes two allreduces of ``C + 1`` and ``C``
    numbers, each backward one of ``2 C``; every rank must call it the same
    number of times (``fit`` sees to it: every rank runs the same steps).

    Args:
        num_features, eps, momentum, affine, track_running_stats, name: as
            :class:`~plugins.normalization.BatchNorm`.

    Shape:
        - Input: ``(N, C, *)``.
        - Output: the same as the input.

    Gradient:
        With ``g`` this rank's ``dL/dy``, ``S_b = allreduce(sum g)`` and
        ``S_g = allreduce(sum g * xhat)`` (each rank's sums weighted by its
        share of the step, see :mod:`framework.distributed.sharding`):
        ``dL/dx = gamma * r * (g - S_b / M - xhat * S_g / M)``;
        ``dL/dgamma`` and ``dL/dbeta`` are this rank's sums, averaged over the
        ranks by the ``DistributedOptimizer`` like every other gradient.

    Example:
        >>> import numpy as np
        >>> from plugins.distributed import SyncBatchNorm
        >>> layer = SyncBatchNorm(3)  # one rank: BatchNorm
        >>> layer(np.ones((4, 3), dtype=np.float32)).shape
        (4, 3)
    """

    #: It communicates in forward: under ``fit`` every rank must have samples in every step.
    collective = True

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        training = ctx.training and getattr(self, "trainable", True)
        if not training or world.size() == 1:
            ctx.synced = False
            return super().forward(ctx, x)
        half = x.dtype == HALF  # float16 runs in float32, as BatchNorm's (its squares pass 65504 at 256)
        x = x.astype(compute_dtype(x.dtype), copy=False)
        c = self.num_features
        local = np.empty(c + 1)
        local[:c] = _sum(x)
        local[c] = x.size // c
        world.allreduce_inplace(local, "allreduce of the batch sums (SyncBatchNorm)")
        m = int(local[c])
        if m < 2:
            raise ShapeError(
                f"{self.describe()}: expected more than 1 value per channel over the ranks when "
                f"training, got input of shape {format_shape(x.shape)}; use a larger batch or eval()"
            )
        mean = local[:c] / m
        xc = x - _channels(mean, x.ndim, x.dtype)
        squares = _sum(xc * xc)
        world.allreduce_inplace(squares, "allreduce of the squared deviations (SyncBatchNorm)")
        var = squares / m
        if self.track_running_stats:  # on every rank alike: the count is that of synchronised batches
            self._update_running(mean, var, m)
        inv_std = 1.0 / np.sqrt(var + self.eps)
        xhat = np.multiply(xc, _channels(inv_std, x.ndim, x.dtype), out=xc)
        if ctx.record:
            ctx.xhat, ctx.inv_std, ctx.m, ctx.synced = xhat, inv_std, m, True
        if self.weight is None:
            return xhat.astype(HALF) if half else xhat.copy()
        y = xhat * _channels(self.weight.data, x.ndim, x.dtype) + _channels(
            self.bias.data,  # type: ignore[union-attr]
            x.ndim,
            x.dtype,
        )
        return y.astype(HALF) if half else y

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        if not ctx.synced:
            return super().backward(ctx, grad_out)
        xhat, inv_std, m = ctx.xhat, ctx.inv_std, ctx.m
        g = grad_out.astype(xhat.dtype, copy=False)  # float16: in float32, as the forward
        c = self.num_features
        sums = np.empty(2 * c)
        sums[:c] = _sum(g)
        sums[c:] = _sum(g * xhat)
        if self.weight is not None:
            self.weight.add_grad(sums[c:].astype(self.weight.dtype))
            self.bias.add_grad(sums[:c].astype(self.bias.dtype))  # type: ignore[union-attr]
        # A rank's g carries 1 / n_r of its own mean loss: weighting its sums by its share of the
        # step (1 but in a short last window) makes the reduced sums the whole batch's.
        weight = world.step_weight()
        if weight != 1.0:
            sums *= weight
        world.allreduce_inplace(sums, "allreduce of the gradient sums (SyncBatchNorm)")
        if weight != 1.0:
            sums /= weight if weight else 1.0
        scale = inv_std if self.weight is None else inv_std * self.weight.data
        shift, slope = sums[:c] / m, sums[c:] / m
        dx = g - _channels(shift, g.ndim, g.dtype) - xhat * _channels(slope, g.ndim, g.dtype)
        np.multiply(dx, _channels(scale, g.ndim, g.dtype), out=dx)
        return dx.astype(grad_out.dtype, copy=False)


@hookimpl
def register_layers(register: Any) -> None:
    register(SyncBatchNorm)
