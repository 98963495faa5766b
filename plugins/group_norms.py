"""Built-in plugin: ``GroupNorm``, ``InstanceNorm1d`` / ``InstanceNorm2d`` and ``RMSNorm``.

Each normalises groups of values of one sample, so it behaves the same for any
batch size. With ``xhat = (x - mu) r``, ``r = 1/sqrt(var + eps)`` over a group
of ``D`` values and ``dxhat = dL/dxhat``, the standard backward is
``dL/dx = r/D (D dxhat - sum dxhat - xhat sum(dxhat xhat))``
(:func:`_normalize_backward`); RMSNorm drops the mean terms.
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
from framework.runtime.dtype import accumulation_dtype, get_default_dtype
from framework.runtime.threads import current_member
from plugins.layer_norm import safe_inv_std
from plugins.normalization import momentum_or_none

__all__ = ["GroupNorm", "InstanceNorm1d", "InstanceNorm2d", "RMSNorm"]


def _rows(a: np.ndarray, k: int) -> np.ndarray:
    """``a`` of shape ``(N, C, *)`` as ``(N, k, C*S/k)``; sized explicitly, so an empty batch reshapes too."""
    return a.reshape(a.shape[0], k, math.prod(a.shape[1:]) // k)


def _normalize(x: np.ndarray, axis: int, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """``(xhat, r)``: ``x`` standardised along ``axis`` (biased variance) and ``r = 1/sqrt(var + eps)``."""
    xhat = x - x.mean(axis=axis, keepdims=True)
    with np.errstate(over="ignore"):  # squares past the float range: see safe_inv_std
        r = safe_inv_std(xhat, np.mean(xhat * xhat, axis=axis, keepdims=True), eps, axis)
    xhat *= r
    return xhat, r


def _normalize_backward(dxhat: np.ndarray, xhat: np.ndarray, r: np.ndarray, axis: int) -> np.ndarray:
    """``r (dxhat - mean(dxhat) - xhat mean(dxhat xhat))`` along ``axis``."""
    dx = dxhat - dxhat.mean(axis=axis, keepdims=True)
    dx -= xhat * np.mean(dxhat * xhat, axis=axis, keepdims=True)
    dx *= r
    return dx


def _channel_shape(x: np.ndarray) -> tuple[int, ...]:
    return (1, x.shape[1]) + (1,) * (x.ndim - 2)


def _channel_affine(layer: Any, xhat: np.ndarray) -> np.ndarray:
    """``xhat * weight + bias`` per channel (axis 1), or ``xhat`` itself without an affine step."""
    if layer.weight is None:
        return xhat
    cs = _channel_shape(xhat)
    return xhat * layer.weight.data.reshape(cs) + layer.bias.data.reshape(cs)


def _channel_affine_backward(layer: Any, xhat: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Add ``dL/dweight = sum(g xhat)`` and ``dL/dbias = sum(g)`` over all axes but 1; return ``g weight``."""
    if layer.weight is None:
        return g
    axes, acc = (0, *range(2, g.ndim)), accumulation_dtype(g.dtype)  # float16 sums in float32
    layer.weight.add_grad(np.sum(g * xhat, axis=axes, dtype=acc))
    layer.bias.add_grad(g.sum(axis=axes, dtype=acc))
    return g * layer.weight.data.reshape(_channel_shape(g))


class GroupNorm(Layer):
    """Group normalization (Wu & He 2018): each sample's channels split into groups, each standardised.

    ``y = (x - mu_g) / sqrt(var_g + eps) * weight_c + bias_c`` with the mean and
    biased variance over the ``C / G`` channels and all positions of a group.

    Args:
        num_groups: ``G``; must divide ``num_channels``.
        num_channels: ``C``.
        eps: added to the variance (default ``1e-5``).
        affine: learn per-channel ``weight`` (ones) and ``bias`` (zeros).

    Shape:
        - Input: ``(N, C, *)``; Output: the same.

    Gradient:
        ``dxhat = g * weight`` per channel, then the standard normalisation
        backward over each group; ``dweight = sum g xhat``, ``dbias = sum g``
        over every axis but ``C``.
    """

    float_input = True  # an integer input is cast to the default float dtype

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        self.num_groups = positive_int("GroupNorm", "num_groups", num_groups)
        self.num_channels = positive_int("GroupNorm", "num_channels", num_channels)
        if self.num_channels % self.num_groups:
            raise ConfigError(
                f"GroupNorm: num_channels must be divisible by num_groups, got num_channels={num_channels}, "
                f"num_groups={num_groups}"
            )
        self.eps = positive_number("GroupNorm", "eps", eps)
        self.affine = check_bool("GroupNorm", "affine", affine)
        dtype = get_default_dtype()
        self.weight = Parameter(ones(self.num_channels, dtype=dtype)) if self.affine else None
        self.bias = Parameter(np.zeros(self.num_channels, dtype=dtype)) if self.affine else None

    def build(self, input_shape: Any) -> None:
        self.output_shape(input_shape)
        super().build(input_shape)
        self.input_spec = (None, self.num_channels, *([None] * (len(input_shape) - 2)))

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        xhat, r = _normalize(_rows(x, self.num_groups), 2, self.eps)
        xhat = xhat.reshape(x.shape)
        ctx.xhat, ctx.r = xhat, r
        return _channel_affine(self, xhat)

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        xhat = ctx.xhat
        g = _channel_affine_backward(self, xhat, grad_out)
        groups = self.num_groups
        return _normalize_backward(_rows(g, groups), _rows(xhat, groups), ctx.r, 2).reshape(grad_out.shape)

    def output_shape(self, input_shape: Any) -> Any:
        if len(input_shape) < 2 or input_shape[1] != self.num_channels:
            raise ShapeError(
                f"{self.describe()} expected input of shape (N, {self.num_channels}, *), "
                f"got {format_shape(input_shape)}"
            )
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "num_groups": self.num_groups,
            "num_channels": self.num_channels,
            "eps": self.eps,
            "affine": self.affine,
        }


class _InstanceNorm(Layer):
    """Instance normalization (Ulyanov et al. 2016): each channel of each sample standardised over positions.

    With ``track_running_stats`` the running mean and unbiased variance
    (averaged over the batch) are updated in training, and eval mode uses
    them, as PyTorch.

    Args:
        num_features: ``C``.
        eps: added to the variance (default ``1e-5``).
        momentum: running-statistics update ``(1 - m) old + m new`` (default 0.1); ``None`` as
            PyTorch, which then passes 0 to ``instance_norm``: the estimates keep their initial values.
        affine: learn per-channel ``weight`` and ``bias`` (default ``False``).
        track_running_stats: keep ``running_mean`` / ``running_var`` buffers (default ``False``).

    Raises:
        ShapeError: in ``forward``, for one position per instance (``L = 1``, ``H*W = 1``) when
            normalising with the input's statistics (training, or no running statistics), as PyTorch.

    Gradient:
        Batch statistics: the standard normalisation backward over the
        positions of each ``(n, c)``. Running statistics (eval): ``dx = g r weight``.
    """

    _rank = 3
    float_input = True  # an integer input is cast to the default float dtype

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = False,
        track_running_stats: bool = False,
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        owner = type(self).__name__
        self.num_features = positive_int(owner, "num_features", num_features)
        self.eps = positive_number(owner, "eps", eps)
        self.momentum = momentum_or_none(owner, momentum)
        self.affine = check_bool(owner, "affine", affine)
        self.track_running_stats = check_bool(owner, "track_running_stats", track_running_stats)
        dtype = get_default_dtype()
        c = self.num_features
        self.weight = Parameter(ones(c, dtype=dtype)) if self.affine else None
        self.bias = Parameter(np.zeros(c, dtype=dtype)) if self.affine else None
        if self.track_running_stats:
            self.running_mean = Buffer(np.zeros(c, dtype=dtype))
            self.running_var = Buffer(ones(c, dtype=dtype))
        self.num_batches_tracked = 0  # a plain count, as BatchNorm's (checkpoints keep it)

    def build(self, input_shape: Any) -> None:
        self.output_shape(input_shape)
        super().build(input_shape)
        self.input_spec = (None, self.num_features, *([None] * (self._rank - 2)))

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        c = x.shape[1]
        flat = _rows(x, c)
        use_running = self.track_running_stats and not ctx.training
        if not use_running and flat.shape[2] == 1:  # as PyTorch: one value has no statistics to normalise by
            raise ShapeError(
                f"{self.describe()}: expected more than 1 value per channel and sample when training "
                f"(or without running statistics), got input of shape {format_shape(x.shape)}; "
                "use a larger input, or eval() with track_running_stats=True"
            )
        if use_running:
            r = 1.0 / np.sqrt(self.running_var.data.reshape(1, c, 1) + self.eps)
            xhat = (flat - self.running_mean.data.reshape(1, c, 1)) * r
        else:
            xhat, r = _normalize(flat, 2, self.eps)
            if self.track_running_stats and ctx.training:
                self._update_running(flat)
        xhat = xhat.reshape(x.shape)
        ctx.xhat, ctx.r, ctx.running = xhat, r, use_running
        return _channel_affine(self, xhat)

    def _update_running(self, flat: np.ndarray) -> None:
        """Move the running estimates towards the batch's average instance mean and unbiased variance.

        Under ``fit(threads=K)`` (a shard of the batch on each thread) the
        shards' sums are added first and the first shard's thread alone moves
        the estimates, once per batch, as one thread would.
        """
        c, count, acc = flat.shape[1], flat.shape[2], accumulation_dtype(flat.dtype)  # float16: in float32
        sums = np.empty(2 * c + 1)
        sums[:c] = flat.mean(axis=2).sum(0)
        sums[c : 2 * c] = (flat.var(axis=2, dtype=acc) * (count / max(count - 1, 1))).sum(0)
        sums[2 * c] = flat.shape[0]
        member = current_member()
        if member is not None:
            group, rank = member
            sums = group.allreduce(rank, sums)
            if rank != 0:
                return
        if not sums[2 * c]:  # an empty batch: no statistics to move towards (PyTorch writes NaN)
            return
        self.num_batches_tracked += 1
        m, n = (self.momentum or 0.0), sums[2 * c]  # None: PyTorch's factor 0, the estimates stay
        dtype = self.running_mean.data.dtype
        self.running_mean.data[...] = (1 - m) * self.running_mean.data + (m * sums[:c] / n).astype(dtype)
        self.running_var.data[...] = (1 - m) * self.running_var.data + (m * sums[c : 2 * c] / n).astype(dtype)

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        xhat = ctx.xhat
        g = _channel_affine_backward(self, xhat, grad_out)
        c = g.shape[1]
        if ctx.running:
            return (_rows(g, c) * ctx.r).reshape(grad_out.shape)
        return _normalize_backward(_rows(g, c), _rows(xhat, c), ctx.r, 2).reshape(grad_out.shape)

    def output_shape(self, input_shape: Any) -> Any:
        if len(input_shape) != self._rank or input_shape[1] != self.num_features:
            dims = ", ".join(["N", str(self.num_features), *("L" if self._rank == 3 else "HW")])
            raise ShapeError(
                f"{self.describe()} expected a rank-{self._rank} input ({dims}), "
                f"got {format_shape(input_shape)}"
            )
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


class InstanceNorm1d(_InstanceNorm):
    """Instance normalization of ``(N, C, L)`` inputs (``nn.InstanceNorm1d``); see ``_InstanceNorm``."""

    _rank = 3


class InstanceNorm2d(_InstanceNorm):
    """Instance normalization of ``(N, C, H, W)`` inputs (``nn.InstanceNorm2d``); see ``_InstanceNorm``."""

    _rank = 4


class RMSNorm(Layer):
    """Root-mean-square layer normalization (Zhang & Sennrich 2019), PyTorch's ``nn.RMSNorm``.

    ``y = x / sqrt(mean(x^2) + eps) * weight`` over the trailing ``normalized_shape`` axes.

    Args:
        normalized_shape: the trailing shape (an int means the last axis).
        eps: added to the mean square; ``None`` means ``finfo(dtype).eps`` of the input.
        elementwise_affine: learn ``weight`` (ones).

    Shape:
        - Input: ``(N, *, *normalized_shape)``; Output: the same.

    Gradient:
        ``xhat = x r``, ``r = 1/sqrt(mean(x^2) + eps)``, ``dxhat = g weight``:
        ``dx = r (dxhat - xhat mean(dxhat xhat))``; ``dweight = sum g xhat``.
    """

    float_input = True  # an integer input is cast to the default float dtype

    def __init__(
        self,
        normalized_shape: Any,
        eps: float | None = None,
        elementwise_affine: bool = True,
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        shape = (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) else normalized_shape
        if (
            not isinstance(shape, (tuple, list))
            or not shape
            or any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d <= 0 for d in shape)
        ):
            raise ConfigError(
                f"RMSNorm: normalized_shape must be a positive int or tuple of them, got {normalized_shape!r}"
            )
        self.normalized_shape = tuple(int(d) for d in shape)
        self.eps = None if eps is None else positive_number("RMSNorm", "eps", eps)
        self.elementwise_affine = check_bool("RMSNorm", "elementwise_affine", elementwise_affine)
        ones = np.ones(self.normalized_shape, dtype=get_default_dtype())
        self.weight = Parameter(ones) if self.elementwise_affine else None

    def build(self, input_shape: Any) -> None:
        self.output_shape(input_shape)
        super().build(input_shape)
        self.input_spec = None

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        self.output_shape(x.shape)
        k = len(self.normalized_shape)
        flat = x.reshape(*x.shape[: x.ndim - k], math.prod(self.normalized_shape))  # not -1: N may be 0
        eps = np.finfo(x.dtype).eps if self.eps is None else self.eps
        with np.errstate(over="ignore"):  # squares past the float range: see safe_inv_std
            r = safe_inv_std(flat, np.mean(flat * flat, axis=-1, keepdims=True), eps, -1)
        xhat = (flat * r).reshape(x.shape)
        ctx.xhat, ctx.r = xhat, r
        return xhat if self.weight is None else xhat * self.weight.data

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        xhat, g = ctx.xhat, grad_out
        k = len(self.normalized_shape)
        lead, acc = g.shape[: g.ndim - k], accumulation_dtype(g.dtype)  # float16 sums in float32
        if self.weight is not None:
            self.weight.add_grad(np.sum(g * xhat, axis=tuple(range(len(lead))), dtype=acc))
            g = g * self.weight.data
        d = math.prod(self.normalized_shape)
        g2, x2 = g.reshape(*lead, d), xhat.reshape(*lead, d)
        dx = g2 - x2 * np.mean(g2 * x2, axis=-1, keepdims=True)
        dx *= ctx.r
        return dx.reshape(grad_out.shape)

    def output_shape(self, input_shape: Any) -> Any:
        k = len(self.normalized_shape)
        if len(input_shape) < k + 1 or tuple(input_shape[-k:]) != self.normalized_shape:
            raise ShapeError(
                f"{self.describe()} expected input of shape "
                f"{format_shape(('N', '*', *self.normalized_shape))}, "
                f"got {format_shape(tuple(input_shape))}"
            )
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "normalized_shape": list(self.normalized_shape),
            "eps": self.eps,
            "elementwise_affine": self.elementwise_affine,
        }


@hookimpl
def register_layers(register: Any) -> None:
    """GroupNorm, InstanceNorm1d, InstanceNorm2d, RMSNorm."""
    register(GroupNorm)
    register(InstanceNorm1d)
    register(InstanceNorm2d)
    register(RMSNorm)
