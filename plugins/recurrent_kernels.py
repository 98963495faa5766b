"""Per-direction recurrence kernels and helpers shared by the recurrent cells and layers.

A kernel runs one direction of one recurrent layer over a whole sequence, each
step whole-array over the batch. ``xp`` is the precomputed input projection
``x W_ih^T + b_ih`` of shape ``(L, N, G*H)``, owned by the kernel (it is
overwritten with gate activations). States live in an array ``hs`` of shape
``(L+1, N, H)``: the forward direction keeps ``h_{t-1}`` in slot ``t`` and
``h_t`` in slot ``t+1``; the reverse direction runs ``t = L-1..0`` and keeps
``h_t`` in slot ``t`` and its predecessor in slot ``t+1``, so outputs and
predecessors are always contiguous slices ``hs[1-r : L+1-r]`` and
``hs[r : L+r]`` (``r = 1`` if reverse).

``forward(xp, w_hh, b_hh, state0, reverse)`` returns ``(outputs, final states,
cache)``; the cache is the caller's to keep (on the call's context) and hand to
``backward(cache, dout, dstate_n, w_hh)``, which returns ``(dxp, dhp, hprev,
dstate0)``: ``dL/dxp`` ``(L, N, G*H)``, ``dL/d(h W_hh^T + b_hh)`` ``(L, N, G*H)``,
the predecessor states ``(L, N, H)`` for ``dW_hh = dhp^T hprev``, and the
gradients of the initial states. Kernels hold no per-call state: one kernel
serves every call of its layer.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from framework.base.layer import Layer
from framework.errors import ShapeError
from framework.runtime.random import get_rng

__all__ = ["GRUKernel", "LSTMKernel", "RNNKernel", "manual_grad", "sigmoid_", "state_pair", "uniform"]


def state_pair(layer: Layer, state: Any) -> tuple[Any, Any]:
    """``(h0, c0)`` from an LSTM's ``state`` argument (``None`` for zeros); ShapeError unless a pair."""
    state = (None, None) if state is None else state
    if not isinstance(state, (tuple, list)) or len(state) != 2:
        raise ShapeError(f"{layer.describe()} expected state as a pair (h0, c0), got {type(state).__name__}")
    return tuple(state)  # type: ignore[return-value]


def uniform(shape: tuple[int, ...], bound: float, dtype: np.dtype) -> np.ndarray:
    return get_rng().uniform(-bound, bound, size=shape).astype(dtype)


def sigmoid_(a: np.ndarray) -> None:
    """In-place logistic sigmoid, as ``(1 + tanh(a / 2)) / 2`` (no overflow)."""
    a *= 0.5
    np.tanh(a, out=a)
    a *= 0.5
    a += 0.5


def _steps(length: int, reverse: bool) -> range:
    return range(length - 1, -1, -1) if reverse else range(length)


class RNNKernel:
    """The Elman recurrence ``h_t = act(xp_t + h_{t-1} W_hh^T + b_hh)``, ``act`` tanh or relu."""

    gates = 1

    def __init__(self, nonlinearity: str = "tanh") -> None:
        self.relu = nonlinearity == "relu"

    def forward(
        self, xp: np.ndarray, w_hh: np.ndarray, b_hh: np.ndarray | None, state0: tuple, reverse: bool
    ) -> tuple[np.ndarray, tuple, tuple]:
        length, n, h = xp.shape
        r = int(reverse)
        if b_hh is not None:
            xp += b_hh
        hs = np.empty((length + 1, n, h), dtype=xp.dtype)
        hs[length * r] = state0[0]
        w_t = w_hh.T
        for t in _steps(length, reverse):
            cur = hs[t + 1 - r]
            np.matmul(hs[t + r], w_t, out=cur)
            cur += xp[t]
            if self.relu:
                np.maximum(cur, 0, out=cur)
            else:
                np.tanh(cur, out=cur)
        return hs[1 - r : length + 1 - r], (hs[length * (1 - r)],), (hs, r)

    def backward(
        self, cache: tuple, dout: np.ndarray | None, dstate_n: tuple, w_hh: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple]:
        hs, r = cache
        length, n, h = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
        out = hs[1 - r : length + 1 - r]
        deriv = (out > 0).astype(out.dtype) if self.relu else 1 - out * out
        da = np.empty_like(out)
        dh_next = np.zeros((n, h), out.dtype) if dstate_n[0] is None else dstate_n[0]
        for t in _steps(length, not r):
            dh = dh_next if dout is None else dout[t] + dh_next
            np.multiply(dh, deriv[t], out=da[t])
            dh_next = da[t] @ w_hh
        return da, da, hs[r : length + r], (dh_next,)


class LSTMKernel:
    """The LSTM recurrence, gates ``i, f, g, o``; the cache keeps the gate activations and ``c_t``."""

    gates = 4

    def forward(
        self, xp: np.ndarray, w_hh: np.ndarray, b_hh: np.ndarray | None, state0: tuple, reverse: bool
    ) -> tuple[np.ndarray, tuple, tuple]:
        length, n, g4 = xp.shape
        h = g4 // 4
        r = int(reverse)
        if b_hh is not None:
            xp += b_hh
        hs = np.empty((length + 1, n, h), dtype=xp.dtype)
        cs = np.empty_like(hs)
        tcs = np.empty((length, n, h), dtype=xp.dtype)
        hs[length * r] = state0[0]
        cs[length * r] = state0[1]
        w_t = w_hh.T
        for t in _steps(length, reverse):
            a = xp[t]
            a += hs[t + r] @ w_t
            sigmoid_(a[:, : 2 * h])
            np.tanh(a[:, 2 * h : 3 * h], out=a[:, 2 * h : 3 * h])
            sigmoid_(a[:, 3 * h :])
            c = cs[t + 1 - r]
            np.multiply(a[:, h : 2 * h], cs[t + r], out=c)
            c += a[:, :h] * a[:, 2 * h : 3 * h]
            np.tanh(c, out=tcs[t])
            np.multiply(a[:, 3 * h :], tcs[t], out=hs[t + 1 - r])
        final = (hs[length * (1 - r)], cs[length * (1 - r)])
        return hs[1 - r : length + 1 - r], final, (xp, hs, cs, tcs, r)

    def backward(
        self, cache: tuple, dout: np.ndarray | None, dstate_n: tuple, w_hh: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple]:
        gates, hs, cs, tcs, r = cache
        length, n, g4 = gates.shape
        h = g4 // 4
        i, f, g, o = (gates[..., k * h : (k + 1) * h] for k in range(4))
        c_prev = cs[r : length + r]
        # dL/dc_t gains dh_t * ko_t; the pre-activation gradients are dc * coef (i, f, g) and dh * coef (o).
        ko = o * (1 - tcs * tcs)
        coef = np.empty((length, n, 4, h), dtype=gates.dtype)
        coef[:, :, 0] = g * i * (1 - i)
        coef[:, :, 1] = c_prev * f * (1 - f)
        coef[:, :, 2] = i * (1 - g * g)
        coef[:, :, 3] = tcs * o * (1 - o)
        da = np.empty((length, n, 4, h), dtype=gates.dtype)
        dh_next = np.zeros((n, h), gates.dtype) if dstate_n[0] is None else dstate_n[0]
        dc_next = np.zeros((n, h), gates.dtype) if dstate_n[1] is None else dstate_n[1]
        for t in _steps(length, not r):
            dh = dh_next if dout is None else dout[t] + dh_next
            dc = dc_next + dh * ko[t]
            np.multiply(coef[t, :, :3], dc[:, None, :], out=da[t, :, :3])
            np.multiply(coef[t, :, 3], dh, out=da[t, :, 3])
            dc_next = dc * f[t]
            dh_next = da[t].reshape(n, g4) @ w_hh
        da = da.reshape(length, n, g4)
        return da, da, hs[r : length + r], (dh_next, dc_next)


class GRUKernel:
    """The GRU recurrence, gates ``r, z, n``; the cache keeps the gates and ``h_{t-1} W_hn^T + b_hn``."""

    gates = 3

    def forward(
        self, xp: np.ndarray, w_hh: np.ndarray, b_hh: np.ndarray | None, state0: tuple, reverse: bool
    ) -> tuple[np.ndarray, tuple, tuple]:
        length, n, g3 = xp.shape
        h = g3 // 3
        r = int(reverse)
        hs = np.empty((length + 1, n, h), dtype=xp.dtype)
        hpn = np.empty((length, n, h), dtype=xp.dtype)
        hs[length * r] = state0[0]
        w_t = w_hh.T
        for t in _steps(length, reverse):
            hprev = hs[t + r]
            hp = hprev @ w_t
            if b_hh is not None:
                hp += b_hh
            a = xp[t]
            a[:, : 2 * h] += hp[:, : 2 * h]
            sigmoid_(a[:, : 2 * h])
            hpn[t] = hp[:, 2 * h :]
            nn = a[:, 2 * h :]
            nn += a[:, :h] * hp[:, 2 * h :]
            np.tanh(nn, out=nn)
            cur = hs[t + 1 - r]
            np.subtract(hprev, nn, out=cur)
            cur *= a[:, h : 2 * h]
            cur += nn
        return hs[1 - r : length + 1 - r], (hs[length * (1 - r)],), (xp, hs, hpn, r)

    def backward(
        self, cache: tuple, dout: np.ndarray | None, dstate_n: tuple, w_hh: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple]:
        gates, hs, hpn, r = cache
        length, n, g3 = gates.shape
        h = g3 // 3
        rr, z, nn = (gates[..., k * h : (k + 1) * h] for k in range(3))
        hprev = hs[r : length + r]
        cn = (1 - z) * (1 - nn * nn)
        # d(h W_hh^T + b_hh) per gate, as dh times these coefficients: r, z, and n (which passes through r).
        coef = np.empty((length, n, 3, h), dtype=gates.dtype)
        coef[:, :, 0] = cn * hpn * rr * (1 - rr)
        coef[:, :, 1] = (hprev - nn) * z * (1 - z)
        coef[:, :, 2] = cn * rr
        dhp = np.empty((length, n, 3, h), dtype=gates.dtype)
        dhs = np.empty((length, n, h), dtype=gates.dtype)
        dh_next = np.zeros((n, h), gates.dtype) if dstate_n[0] is None else dstate_n[0]
        for t in _steps(length, not r):
            dh = dhs[t]
            if dout is None:
                dh[...] = dh_next
            else:
                np.add(dout[t], dh_next, out=dh)
            np.multiply(coef[t], dh[:, None, :], out=dhp[t])
            dh_next = dh * z[t] + dhp[t].reshape(n, g3) @ w_hh
        dxp = dhp.copy()
        np.multiply(dhs, cn, out=dxp[:, :, 2])
        return dxp.reshape(length, n, g3), dhp.reshape(length, n, g3), hprev, (dh_next,)


def manual_grad(layer: Layer, name: str) -> np.ndarray | None:
    """``name`` (``grad_h0``, ``grad_c0``) from the context of ``layer``'s last manual-form call.

    The manual form ``layer.forward(x)`` / ``layer.backward(g)`` keeps its
    context on the layer (``_manual_ctx``); a call with an explicit context
    finds the gradient on that context instead (``ctx.grad_h0``).
    """
    ctx = layer.__dict__.get("_manual_ctx")
    return None if ctx is None else ctx.__dict__.get(name)
