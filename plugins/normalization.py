"""Built-in plugin: BatchNorm and LayerNorm, with their hand-derived backward passes.

This module is the plugin's entry point: it holds :class:`BatchNorm` and
registers both; :class:`~plugins.layer_norm.LayerNorm` lives in
:mod:`plugins.layer_norm` (importable from here).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from framework.base.context import Context
from framework.base.initializer import ones
from framework.base.layer import Layer, format_shape
from framework.base.parameter import Buffer, Parameter
from framework.base.validation import check_bool, positive_int, positive_number
from framework.errors import ConfigError, ShapeError
from framework.registry.hookspecs import hookimpl
from framework.runtime import jit
from framework.runtime.dtype import HALF, compute_dtype, get_default_dtype
from framework.runtime.threads import ThreadGroup, current_member
from plugins import bn_kernels
from plugins.conv_ops import channel_sums, per_channel
from plugins.layer_norm import LayerNorm

__all__ = ["BatchNorm", "LayerNorm", "momentum_or_none"]


def momentum_or_none(owner: str, value: Any) -> float | None:
    """``value`` as a ``float`` in ``[0, 1]``, or ``None`` (PyTorch's cumulative average).

    Raises:
        ConfigError: anything else (a bool, a string, NaN, a number outside ``[0, 1]``),
            naming ``owner``, ``momentum`` and the value.
    """
    if value is None:
        return None
    number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not number or not 0.0 <= value <= 1.0:
        raise ConfigError(
            f"{owner}: momentum must be a number in [0, 1], or None for a cumulative average, got {value!r}"
        )
    return float(value)


def _dot_per_channel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``sum(a * b)`` over every axis but 1 of two ``(N, C, S)`` arrays: ``(C,)``, no temporary."""
    return np.einsum("ncs,ncs->c", a, b)


def _shared_moments(
    rows: np.ndarray, member: tuple[ThreadGroup, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """``(mean, rows - mean, var, m)`` of the whole batch, from one shard's ``(N_k, C, S)`` rows.

    The same two passes as one thread takes, each shard's sums added over the
    group in float64: first the sums and the value count, then the centred squares.
    """
    group, rank = member
    c = rows.shape[1]
    local = np.empty(c + 1)
    local[:c] = channel_sums(rows)
    local[c] = rows.size // c
    total = group.allreduce(rank, local)
    m = int(total[c])
    mean = (total[:c] / max(m, 1)).astype(rows.dtype)
    xc = per_channel(np.subtract, rows, mean)
    var = (group.allreduce(rank, _dot_per_channel(xc, xc)) / max(m, 1)).astype(rows.dtype)
    return mean, xc, var, m


class BatchNorm(Layer):
    """Batch normalization over every axis but the channel axis 1.

    ``y = (x - E[x]) / sqrt(Var[x] + eps) * weight + bias``, with the mean and
    (biased) variance taken per channel over the batch and any spatial axes, so
    one class serves ``(N, C)``, ``(N, C, L)``, ``(N, C, H, W)`` and
    ``(N, C, D, H, W)`` inputs (PyTorch's ``BatchNorm1d``, ``BatchNorm2d`` and
    ``BatchNorm3d``, which are registered as aliases).

    In training mode the batch statistics normalise the input and update the
    running estimates with PyTorch's rule
    ``running = (1 - momentum) * running + momentum * batch_stat``, where the
    running variance takes the *unbiased* batch variance (``m / (m - 1)``
    times the biased one, ``m`` values per channel). With ``momentum=None``
    the factor is ``1 / num_batches_tracked``, counted after the increment
    (PyTorch's cumulative moving average): the first batch replaces the
    initial estimates and the running estimates are the average of every
    batch's statistics. In eval mode the running estimates normalise instead.
    With ``track_running_stats=False`` there are no running estimates and
    batch statistics are used in both modes. As PyTorch's, a channel of
    finite values whose squares overflow (``|x|`` past ``~1.8e19`` in
    float32) has an infinite variance and normalises to 0; the layer norms
    rescale there, BatchNorm keeps its per-channel passes free of that check.
    float16 inputs are normalised in float32 (a float16 sum passes 65504, a
    square does past ``|x| = 256``), the output and ``dL/dx`` rounded to float16.
    With the ``[jit]`` extra, float32 and float64 inputs with 8 or more values
    per sample and channel run compiled kernels (:mod:`plugins.bn_kernels`:
    two passes each way instead of three to five).

    The mode is the call's (``ctx.training``), except that a frozen layer
    (``layer.trainable = False``) always runs in inference mode, Keras's rule
    for fine-tuning: its running estimates then neither normalise with batch
    statistics nor change. Under ``fit(threads=K)`` each thread's shard is
    normalised with the statistics of the whole batch (the shards' sums are
    added across the threads), so the result is the one-thread result. What
    backward needs (the centred input ``x - mean`` and ``1/std``) is kept on
    the call's context.

    Args:
        num_features: the number of channels ``C`` (size of axis 1).
        eps: added to the variance for numerical stability (default ``1e-5``).
        momentum: weight of the new batch statistic in the running estimates,
            in ``[0, 1]`` (default ``0.1``), or ``None`` for the cumulative
            average over all batches (weight ``1 / num_batches_tracked``).
        affine: whether to learn a per-channel scale and shift (default ``True``).
        track_running_stats: whether to keep running estimates for eval mode
            (default ``True``).
        name: layer name.

    Shape:
        - Input: ``(N, C)``, ``(N, C, L)`` or ``(N, C, H, W)`` (any ``(N, C, *)``).
        - Output: the same as the input.

    Raises:
        ShapeError: in training mode, for fewer than 2 values per channel: one
            sample of ``(N, C)`` (as PyTorch) or an empty batch (PyTorch returns
            an empty output there; this layer refuses, as there are no statistics
            to normalise with). In eval mode an empty batch gives an empty output.

    Attributes:
        weight: ``Parameter`` ``gamma`` of shape ``(C,)``, initialised to ones
            (``None`` when ``affine=False``).
        bias: ``Parameter`` ``beta`` of shape ``(C,)``, initialised to zeros
            (``None`` when ``affine=False``).
        running_mean: ``Buffer`` of shape ``(C,)``, initialised to zeros.
        running_var: ``Buffer`` of shape ``(C,)``, initialised to ones.
        num_batches_tracked: how many training batches updated the running
            estimates (an ``int``, starting at 0). It is state, as in PyTorch:
            checkpoints keep it (an attribute of the ``running_mean`` dataset),
            the PyTorch naming of ``state_dict`` has it, and loading either
            sets it, so training with ``momentum=None`` resumes exactly.

    Gradient:
        Per channel, over its ``m`` values, with ``xhat = (x - mu) * r``,
        ``r = 1 / sqrt(var + eps)`` and ``g = dL/dy``:
        ``dL/dgamma = sum(g * xhat)``, ``dL/dbeta = sum(g)``; in training mode
        (``mu`` and ``var`` depend on ``x``), with ``dxhat = g * gamma``,
        ``dL/dx = (r / m) * (m * dxhat - sum(dxhat) - xhat * sum(dxhat * xhat))
        = gamma * r * (g - dL/dbeta / m - xhat * dL/dgamma / m)``.
        In eval mode the layer is affine in ``x``: ``dL/dx = g * gamma * r``
        with ``r`` from the running variance.

    Example:
        >>> import numpy as np
        >>> from framework.layers import BatchNorm
        >>> layer = BatchNorm(3)
        >>> y = layer(np.random.default_rng(0).normal(2.0, 3.0, (8, 3, 4, 4)).astype(np.float32))
        >>> y.shape, y.dtype
        ((8, 3, 4, 4), dtype('float32'))
        >>> bool(np.allclose(y.mean(axis=(0, 2, 3)), 0.0, atol=1e-5))
        True
    """

    #: backward returns a new array it does not keep (the layer below may write into it)
    returns_fresh_grad = True
    float_input = True  # an integer or boolean input is cast to the default float dtype
    #: statistics per channel over every other axis: it runs on batch-last activations too
    channelwise = True

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        owner = type(self).__name__  # SyncBatchNorm's messages name it
        self.num_features = positive_int(owner, "num_features", num_features)
        self.eps = positive_number(owner, "eps", eps)
        self.momentum = momentum_or_none(owner, momentum)
        self.affine = check_bool(owner, "affine", affine)
        self.track_running_stats = check_bool(owner, "track_running_stats", track_running_stats)
        self.num_batches_tracked = 0
        dtype = get_default_dtype()
        c = self.num_features
        self.weight = Parameter(ones(c, dtype=dtype)) if self.affine else None
        self.bias = Parameter(np.zeros(c, dtype=dtype)) if self.affine else None
        self.running_mean = Buffer(np.zeros(c, dtype=dtype)) if self.track_running_stats else None
        self.running_var = Buffer(ones(c, dtype=dtype)) if self.track_running_stats else None

    def build(self, input_shape: Any) -> None:
        self._validate_shape(input_shape)
        super().build(input_shape)
        # Any batch and spatial size, any rank >= 2: only the channel axis is fixed.
        self.input_spec = (None, self.num_features)

    def _validate_shape(self, shape: Any) -> None:
        if shape is None or len(shape) < 2 or shape[1] != self.num_features:
            raise ShapeError(
                f"{self.describe()} expected input of shape (N, {self.num_features}, *) "
                f"(channels on axis 1), got {format_shape(shape)}"
            )

    def _check_input(self, x: Any) -> None:
        self._validate_shape(getattr(x, "shape", None))

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        c = self.num_features
        m = x.size // c
        # Keras's fine-tuning rule: a frozen BatchNorm (trainable False) runs in inference mode.
        training = ctx.training and getattr(self, "trainable", True)
        use_batch = training or not self.track_running_stats
        # (N, C, S): per-channel work runs over whole rows of C*S (see per_channel); S explicit: N may be 0.
        # float16 runs in float32: its sums pass 65504 past 65504 values of 1, its squares past |x| = 256
        rows = np.ascontiguousarray(x, dtype=compute_dtype(x.dtype))
        rows = rows.reshape(x.shape[0], c, math.prod(x.shape[2:]))
        member = current_member() if use_batch else None
        kernels = self._kernels_apply(rows)
        if use_batch:
            if kernels:  # compiled: two passes (the whole batch's sums under threads), x and the mean kept
                mean, var, m = bn_kernels.moments(rows, member)
                xc = None
            elif member is not None:  # one shard of a batch split over threads: the whole batch's moments
                mean, xc, var, m = _shared_moments(rows, member)
            if m < 2:
                raise ShapeError(
                    f"{self.describe()}: expected more than 1 value per channel when training, "
                    f"got input of shape {format_shape(x.shape)}; use a larger batch or eval()"
                )
            if member is None and not kernels:  # two passes, for a variance that does not cancel
                mean = channel_sums(rows) / m
                xc = per_channel(np.subtract, rows, mean)
                var = _dot_per_channel(xc, xc) / m
            # the running estimates move once per batch: in the first shard's thread only
            if training and self.track_running_stats and (member is None or member[1] == 0):
                self._update_running(mean, var, m)
        else:
            mean, var = self.running_mean.data, self.running_var.data
        inv_std = (1.0 / np.sqrt(var + self.eps)).astype(rows.dtype, copy=False)
        scale = inv_std if self.weight is None else inv_std * self.weight.data
        if kernels:  # y = (x - mean) (gamma r) + beta, one pass; the backward recentres x
            xc = None
            shift = np.zeros_like(scale) if self.bias is None else self.bias.data
            y = bn_kernels.centred_affine(rows, mean, scale, shift)
        elif use_batch:  # y = xc * (gamma r) + beta: two passes, xc kept for the backward
            y = per_channel(np.multiply, xc, scale)
            if self.bias is not None:
                per_channel(np.add, y, self.bias.data, out=y)
        else:  # affine in x: y = x * (gamma r) + (beta - mean gamma r)
            xc = None
            shift = -mean * scale if self.bias is None else self.bias.data - mean * scale
            y = per_channel(np.multiply, rows, scale)
            per_channel(np.add, y, shift, out=y)
        if ctx.record:
            ctx.inv_std, ctx.scale, ctx.use_batch, ctx.m, ctx.member = inv_std, scale, use_batch, m, member
            # training keeps x - mean; inference keeps x itself, only for dL/dgamma, and a copy of the
            # running mean: a later training call of this layer (in one graph) moves the buffer first
            ctx.xc, ctx.rows, ctx.mean = (xc, None, None) if xc is not None else (None, rows, mean.copy())
        return y.reshape(x.shape) if x.dtype != HALF else y.astype(HALF).reshape(x.shape)

    def _kernels_apply(self, rows: np.ndarray) -> bool:
        """Whether this call runs :mod:`plugins.bn_kernels`: enabled, rows of 8 or more, one dtype."""
        arrays = (self.weight, self.bias, self.running_mean, self.running_var)
        return rows.shape[2] >= 8 and jit.takes(rows, *(None if a is None else a.data for a in arrays))

    def _update_running(self, mean: np.ndarray, var: np.ndarray, m: int) -> None:
        """Move the running estimates towards this batch's ``mean`` and unbiased variance; count it.

        The count goes up first, so with ``momentum=None`` the first batch has
        weight ``1 / 1`` (it replaces the initial estimates), the k-th ``1 / k``.
        """
        self.num_batches_tracked += 1
        mom = 1.0 / self.num_batches_tracked if self.momentum is None else self.momentum
        rm, rv = self.running_mean.data, self.running_var.data
        rm *= 1.0 - mom
        rm += (mom * mean.reshape(-1)).astype(rm.dtype, copy=False)
        rv *= 1.0 - mom
        rv += (mom * m / (m - 1) * var.reshape(-1)).astype(rv.dtype, copy=False)

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        xc, inv_std, scale, use_batch, m = ctx.xc, ctx.inv_std, ctx.scale, ctx.use_batch, ctx.m
        shape, half = grad_out.shape, grad_out.dtype == HALF  # float16: computed in float32, as forward
        contiguous = np.ascontiguousarray(grad_out, dtype=compute_dtype(grad_out.dtype))  # or our own copy
        g = contiguous.reshape(shape[0], self.num_features, math.prod(shape[2:]))
        if not use_batch:  # affine in x: dx = g * gamma * r; xhat only for dL/dgamma
            if self.weight is not None:
                centred = per_channel(np.subtract, ctx.rows, ctx.mean)
                self.weight.add_grad(_dot_per_channel(g, centred) * inv_std)
                self.bias.add_grad(channel_sums(g))
            # in place into our copy, or into grad_out when the caller allows it (a read-only one never)
            writable = (contiguous is not grad_out or ctx.grad_out_writable) and g.flags.writeable
            out = g if writable and np.result_type(g, scale) == g.dtype else None
            dx = per_channel(np.multiply, g, scale, out=out)
            return (dx.astype(HALF) if half else dx).reshape(shape)
        if xc is None:  # the compiled forward kept x: the same maths in two passes
            dx, dbeta, sum_gxc = bn_kernels.train_backward(
                ctx.rows, g, ctx.mean, inv_std, scale, m, ctx.member
            )
            if self.weight is not None:
                self.weight.add_grad((sum_gxc * inv_std).astype(g.dtype))
                self.bias.add_grad(dbeta.astype(g.dtype))
            return (dx.astype(HALF) if half else dx).reshape(shape)
        # dL/dbeta = sum g, dL/dgamma = sum g xhat = r sum(g xc); then
        # dx = gamma r (g - dL/dbeta / m - xhat dL/dgamma / m) = gamma r (g + xc * b + c)
        dbeta = channel_sums(g)
        sum_gxc = _dot_per_channel(g, xc)
        if self.weight is not None:  # this shard's part; the shards' parameter gradients are summed
            self.weight.add_grad(sum_gxc * inv_std)
            self.bias.add_grad(dbeta)
        if ctx.member is not None:  # dx needs the sums over the whole batch
            group, rank = ctx.member
            sums = group.allreduce(rank, np.concatenate([dbeta, sum_gxc]))
            dbeta, sum_gxc = (s.astype(g.dtype) for s in np.split(sums, 2))
        dx = per_channel(np.multiply, xc, -(inv_std * inv_std) * sum_gxc / m)
        np.add(dx, g, out=dx)
        per_channel(np.subtract, dx, dbeta / m, out=dx)
        per_channel(np.multiply, dx, scale, out=dx)
        return (dx.astype(HALF) if half else dx).reshape(shape)

    def output_shape(self, input_shape: Any) -> Any:
        self._validate_shape(input_shape)
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "num_features": self.num_features,
            "eps": self.eps,
            "momentum": self.momentum,
            "affine": self.affine,
            "track_running_stats": self.track_running_stats,
        }

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"track_running_stats={self.track_running_stats}"
        )


@hookimpl
def register_layers(register: Any) -> None:
    register(BatchNorm, aliases=("BatchNorm1d", "BatchNorm2d", "BatchNorm3d"))
    register(LayerNorm)
