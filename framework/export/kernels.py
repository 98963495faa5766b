"""The NumPy inference functions a generated ``predict.py`` is made of.

Every function here depends on NumPy (and :mod:`math`) alone, and on no
other function of this module unless it is listed in :data:`DEPENDS`: the
exporter copies the source of each function a model needs, verbatim, into the
generated script, so what the script runs is exactly what is tested here.
Layouts are PyTorch's (NCHW images, ``(out, in)`` weights).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["DEPENDS", "KERNEL_NAMES"]


def linear(x, weight, bias):
    """``y = x W^T + b``."""
    y = x @ weight.T
    return y if bias is None else y + bias


def relu(x):
    """``max(x, 0)``."""
    return np.maximum(x, 0)


def sigmoid(x):
    """``1 / (1 + exp(-x))``, without overflow for large ``|x|``."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype)


def tanh(x):
    """``tanh(x)``."""
    return np.tanh(x)


def softmax(x, axis=-1):
    """``exp(x) / sum(exp(x))`` along ``axis``."""
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax(x, axis=-1):
    """``x - logsumexp(x)`` along ``axis``."""
    z = x - x.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def leaky_relu(x, negative_slope):
    """``x`` where positive, ``negative_slope * x`` elsewhere."""
    return np.where(x >= 0, x, x * negative_slope).astype(x.dtype)


def elu(x, alpha):
    """``x`` where positive, ``alpha (exp(x) - 1)`` elsewhere."""
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0))).astype(x.dtype)


def gelu(x, approximate):
    """``x Phi(x)`` (``approximate="none"``, via ``math.erf``) or its tanh approximation."""
    if approximate == "tanh":
        u = math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)
        return (0.5 * x * (1 + np.tanh(u))).astype(x.dtype)
    erf = np.frompyfunc(math.erf, 1, 1)
    return (0.5 * x * (1 + erf(x.astype(np.float64) / math.sqrt(2)).astype(np.float64))).astype(x.dtype)


def silu(x):
    """``x sigmoid(x)``."""
    return x * sigmoid(x)


def softplus(x, beta, threshold):
    """``log(1 + exp(beta x)) / beta``, and ``x`` where ``beta x > threshold``."""
    z = beta * x
    y = (np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))) / beta
    return np.where(z > threshold, x, y).astype(x.dtype)


def conv2d(x, weight, bias, stride, pads, dilation, groups):
    """2-D cross-correlation (PyTorch's ``conv2d``); ``pads`` is ``((top, bottom), (left, right))``."""
    x = np.pad(x, ((0, 0), (0, 0), tuple(pads[0]), tuple(pads[1])))
    out_ch, group_in, kh, kw = weight.shape
    (sh, sw), (dh, dw) = stride, dilation
    oh = (x.shape[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (x.shape[3] - dw * (kw - 1) - 1) // sw + 1
    span = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    windows = np.lib.stride_tricks.sliding_window_view(x, span, axis=(2, 3))
    windows = windows[:, :, : (oh - 1) * sh + 1 : sh, : (ow - 1) * sw + 1 : sw, ::dh, ::dw]
    group_out = out_ch // groups
    parts = []
    for g in range(groups):
        xg = windows[:, g * group_in : (g + 1) * group_in]  # (n, c, oh, ow, kh, kw)
        wg = weight[g * group_out : (g + 1) * group_out]  # (o, c, kh, kw)
        parts.append(np.tensordot(xg, wg, axes=([1, 4, 5], [1, 2, 3])))  # (n, oh, ow, o)
    y = np.concatenate(parts, axis=3).transpose(0, 3, 1, 2)
    if bias is not None:
        y = y + bias.reshape(1, -1, 1, 1)
    return np.ascontiguousarray(y)


def conv1d(x, weight, bias, stride, pads, dilation, groups):
    """1-D cross-correlation over ``(N, C, L)``, as a 2-D one of height 1; ``pads`` is ``(before, after)``."""
    y = conv2d(
        x[:, :, None, :], weight[:, :, None, :], bias, (1, stride), ((0, 0), pads), (1, dilation), groups
    )
    return y[:, :, 0, :]


def conv_transpose2d(x, weight, bias, stride, padding, output_padding, dilation, groups):
    """PyTorch's ``conv_transpose2d``: each input pixel scatters ``weight`` into the output."""
    n, in_ch, h, w = x.shape
    _, group_out, kh, kw = weight.shape
    (sh, sw), (ph, pw), (oph, opw), (dh, dw) = stride, padding, output_padding, dilation
    full_h = (h - 1) * sh + dh * (kh - 1) + 1 + oph
    full_w = (w - 1) * sw + dw * (kw - 1) + 1 + opw
    canvas = np.zeros((n, group_out * groups, full_h, full_w), dtype=x.dtype)
    group_in = in_ch // groups
    for g in range(groups):
        xg = x[:, g * group_in : (g + 1) * group_in]
        wg = weight[g * group_in : (g + 1) * group_in]  # (c, o, kh, kw)
        cols = np.tensordot(xg, wg, axes=([1], [0]))  # (n, h, w, o, kh, kw)
        target = canvas[:, g * group_out : (g + 1) * group_out]
        for i in range(kh):
            for j in range(kw):
                rows = slice(i * dh, i * dh + (h - 1) * sh + 1, sh)
                cols_ = slice(j * dw, j * dw + (w - 1) * sw + 1, sw)
                target[:, :, rows, cols_] += cols[:, :, :, :, i, j].transpose(0, 3, 1, 2)
    y = canvas[:, :, ph : full_h - ph, pw : full_w - pw]
    if bias is not None:
        y = y + bias.reshape(1, -1, 1, 1)
    return np.ascontiguousarray(y)


def _pool_size(size, kernel, stride, pad, ceil_mode):
    """Number of pooling windows along one axis (PyTorch's rule, ``ceil_mode`` included)."""
    span = size + 2 * pad - kernel
    count = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (count - 1) * stride >= size + pad:
        count -= 1
    return count


def pool2d(x, kind, kernel, stride, padding, ceil_mode, count_include_pad):
    """Max (``kind="max"``) or average pooling over ``(N, C, H, W)``."""
    h, w = x.shape[2:]
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    oh = _pool_size(h, kh, sh, ph, ceil_mode)
    ow = _pool_size(w, kw, sw, pw, ceil_mode)
    eh = max(0, (oh - 1) * sh + kh - (h + 2 * ph))
    ew = max(0, (ow - 1) * sw + kw - (w + 2 * pw))
    fill = -np.inf if kind == "max" else 0
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph + eh), (pw, pw + ew)), constant_values=fill)
    windows = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))
    windows = windows[:, :, : (oh - 1) * sh + 1 : sh, : (ow - 1) * sw + 1 : sw]
    if kind == "max":
        return windows.max(axis=(4, 5))
    counted = np.zeros(xp.shape[2:], dtype=x.dtype)
    if count_include_pad:
        counted[: h + 2 * ph, : w + 2 * pw] = 1
    else:
        counted[ph : ph + h, pw : pw + w] = 1
    cells = np.lib.stride_tricks.sliding_window_view(counted, (kh, kw))
    divisor = cells[: (oh - 1) * sh + 1 : sh, : (ow - 1) * sw + 1 : sw].sum(axis=(2, 3))
    return windows.sum(axis=(4, 5)) / divisor


def pool1d(x, kind, kernel, stride, padding, ceil_mode, count_include_pad):
    """Max or average pooling over ``(N, C, L)``, as a 2-D pool of height 1."""
    y = pool2d(x[:, :, None, :], kind, (1, kernel), (1, stride), (0, padding), ceil_mode, count_include_pad)
    return y[:, :, 0, :]


def global_avg_pool2d(x):
    """The mean of each channel over all positions: ``(N, C, H, W) -> (N, C)``."""
    return x.mean(axis=(2, 3))


def batch_norm(x, mean, var, weight, bias, eps):
    """Batch normalisation over axis 1 with running statistics (batch ones if ``mean`` is None)."""
    axes = tuple(i for i in range(x.ndim) if i != 1)
    shape = [1] * x.ndim
    shape[1] = x.shape[1]
    if mean is None:
        mean, var = x.mean(axis=axes), x.var(axis=axes)
    y = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
    if weight is not None:
        y = y * weight.reshape(shape) + bias.reshape(shape)
    return y.astype(x.dtype)


def layer_norm(x, n_axes, weight, bias, eps):
    """Normalise over the last ``n_axes`` axes, then scale and shift."""
    axes = tuple(range(x.ndim - n_axes, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y.astype(x.dtype)


def embedding(indices, weight):
    """Row ``i`` of ``weight`` for each index ``i``."""
    return weight[np.asarray(indices).astype(np.int64)]


def flatten(x, start_dim, end_dim):
    """Merge axes ``start_dim .. end_dim`` into one."""
    start = start_dim % x.ndim
    end = end_dim % x.ndim
    return x.reshape(*x.shape[:start], -1, *x.shape[end + 1 :])


def merge(xs, kind, axis=1):
    """Combine a list of arrays: add, subtract, multiply, average, maximum, minimum or concatenate."""
    if kind == "concatenate":
        return np.concatenate(xs, axis=axis)
    if kind == "subtract":
        return xs[0] - xs[1]
    if kind == "maximum":
        return np.stack(xs).max(axis=0)
    if kind == "minimum":
        return np.stack(xs).min(axis=0)
    out = xs[0] * xs[1] if kind == "multiply" else xs[0] + xs[1]
    for a in xs[2:]:
        out = out * a if kind == "multiply" else out + a
    return out / len(xs) if kind == "average" else out


def recurrent(x, weights, mode, num_layers, bidirectional, batch_first, output, nonlinearity="tanh"):
    """A multi-layer RNN, LSTM or GRU (PyTorch's gate orders) from zero initial states.

    ``weights[layer * D + direction]`` is ``(w_ih, w_hh, b_ih, b_hh)``;
    ``output`` is ``"sequence"``, ``"last"`` or ``"both"`` (``(out, h_n)``, or
    ``(out, (h_n, c_n))`` for an LSTM).
    """
    xt = x.transpose(1, 0, 2) if batch_first else x
    steps, n, _ = xt.shape
    nd = 2 if bidirectional else 1
    hidden = weights[0][1].shape[1]
    h_n = np.zeros((num_layers * nd, n, hidden), dtype=x.dtype)
    c_n = np.zeros_like(h_n)
    act = np.tanh if nonlinearity == "tanh" else (lambda a: np.maximum(a, 0))
    inp = xt
    for k in range(num_layers):
        outs = []
        for d in range(nd):
            w_ih, w_hh, b_ih, b_hh = weights[k * nd + d]
            xp = inp @ w_ih.T if b_ih is None else inp @ w_ih.T + b_ih
            h = np.zeros((n, hidden), dtype=x.dtype)
            c = np.zeros_like(h)
            ys = [h] * steps
            for t in range(steps - 1, -1, -1) if d == 1 else range(steps):
                hp = h @ w_hh.T if b_hh is None else h @ w_hh.T + b_hh
                if mode == "lstm":
                    i, f, g, o = np.split(xp[t] + hp, 4, axis=1)
                    c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
                    h = sigmoid(o) * np.tanh(c)
                elif mode == "gru":
                    xr, xz, xn = np.split(xp[t], 3, axis=1)
                    hr, hz, hn = np.split(hp, 3, axis=1)
                    r, z = sigmoid(xr + hr), sigmoid(xz + hz)
                    h = (1 - z) * np.tanh(xn + r * hn) + z * h
                else:
                    h = act(xp[t] + hp)
                ys[t] = h
            h_n[k * nd + d], c_n[k * nd + d] = h, c
            outs.append(np.stack(ys))
        inp = np.concatenate(outs, axis=2)
    if output == "last":
        return np.concatenate(list(h_n[-nd:]), axis=1)
    out = np.ascontiguousarray(inp.transpose(1, 0, 2) if batch_first else inp)
    if output == "sequence":
        return out
    return out, ((h_n, c_n) if mode == "lstm" else h_n)


def leaves(value):
    """The arrays of a nested list/tuple output, in order: ``(y, (h, c))`` -> ``[y, h, c]``."""
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in leaves(item)]
    return [value]


DEPENDS = {
    "silu": ("sigmoid",),
    "conv1d": ("conv2d",),
    "pool2d": ("_pool_size",),
    "pool1d": ("pool2d",),
    "recurrent": ("sigmoid",),
}
"""The other kernels each kernel calls (copied into the script with it)."""

KERNEL_NAMES = tuple(
    name
    for name, value in list(globals().items())
    if callable(value) and getattr(value, "__module__", "") == __name__
)
"""Every kernel, in source order."""
