"""Built-in plugin: recurrent cells and layers (RNN, LSTM, GRU) with backpropagation through time.

Every class follows PyTorch's constructor arguments, parameter names, weight
layouts and gate order, so a ``state_dict`` copies between the two unchanged:

- ``RNNCell`` / ``RNN``: ``h' = act(W_ih x + b_ih + W_hh h + b_hh)``;
- ``LSTMCell`` / ``LSTM``: gates stacked ``i, f, g, o`` in ``weight_ih`` of
  shape ``(4*hidden, input)``;
- ``GRUCell`` / ``GRU``: gates stacked ``r, z, n`` in ``weight_ih`` of shape
  ``(3*hidden, input)``, with PyTorch's ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``.

Implementation: the input projections of all time steps are one matrix product
``(L*N, H_in) @ W_ih^T`` before the loop; only the recurrent part loops over
time steps, each step whole-array over the batch. Per-step activations are kept
in preallocated ``(L, N, ...)`` arrays, and backward forms ``dW_ih`` and
``dW_hh`` with one product each over all steps.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from framework.base.layer import Layer, format_shape
from framework.base.parameter import Parameter
from framework.base.validation import check_bool, check_choice, positive_int
from framework.errors import ConfigError, NotBuiltError, ShapeError
from framework.registry.hookspecs import hookimpl
from framework.runtime.dtype import get_default_dtype
from framework.runtime.random import get_rng

__all__ = ["RNNCell", "LSTMCell", "GRUCell", "RNN", "LSTM", "GRU"]

_NONLINEARITIES = ("tanh", "relu")
_OUTPUTS = ("both", "sequence", "last")


# -- helpers -----------------------------------------------------------------


def _state_pair(layer: Layer, state: Any) -> tuple[Any, Any]:
    """``(h0, c0)`` from an LSTM's ``state`` argument (``None`` for zeros); ShapeError unless a pair."""
    state = (None, None) if state is None else state
    if not isinstance(state, (tuple, list)) or len(state) != 2:
        raise ShapeError(f"{layer.describe()} expected state as a pair (h0, c0), got {type(state).__name__}")
    return tuple(state)  # type: ignore[return-value]


def _uniform(shape: tuple[int, ...], bound: float, dtype: np.dtype) -> np.ndarray:
    return get_rng().uniform(-bound, bound, size=shape).astype(dtype)


def _sigmoid_(a: np.ndarray) -> None:
    """In-place logistic sigmoid, as ``(1 + tanh(a / 2)) / 2`` (no overflow)."""
    a *= 0.5
    np.tanh(a, out=a)
    a *= 0.5
    a += 0.5


# -- per-direction kernels ---------------------------------------------------
#
# A kernel runs one direction of one layer over a whole sequence. ``xp`` is the
# precomputed input projection ``x W_ih^T + b_ih`` of shape (L, N, G*H), owned by
# the kernel (it is overwritten with gate activations). States live in an array
# ``hs`` of shape (L+1, N, H): the forward direction keeps h_{t-1} in slot t and
# h_t in slot t+1; the reverse direction runs t = L-1..0 and keeps h_t in slot t
# and its predecessor in slot t+1, so outputs and predecessors are always
# contiguous slices ``hs[1-r : L+1-r]`` and ``hs[r : L+r]`` (r = 1 if reverse).
#
# backward(cache, dout, dstate_n, w_hh) returns (dxp, dhp, hprev, dstate0):
# dL/dxp (L, N, G*H), dL/d(h W_hh^T + b_hh) (L, N, G*H), the predecessor states
# (L, N, H) for dW_hh = dhp^T hprev, and the gradients of the initial states.


def _steps(length: int, reverse: bool) -> range:
    return range(length - 1, -1, -1) if reverse else range(length)


class _RNNKernel:
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


class _LSTMKernel:
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
            _sigmoid_(a[:, : 2 * h])
            np.tanh(a[:, 2 * h : 3 * h], out=a[:, 2 * h : 3 * h])
            _sigmoid_(a[:, 3 * h :])
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


class _GRUKernel:
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
            _sigmoid_(a[:, : 2 * h])
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


# -- cells -------------------------------------------------------------------


class _CellBase(Layer):
    _kind: ClassVar[str] = ""
    _num_states: ClassVar[int] = 1

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, *, name: str | None = None
    ) -> None:
        super().__init__(name=name)
        kind = type(self).__name__
        self.input_size = positive_int(kind, "input_size", input_size)
        self.hidden_size = positive_int(kind, "hidden_size", hidden_size)
        self.use_bias = check_bool(kind, "bias", bias)
        self._kernel = self._make_kernel()
        dtype = get_default_dtype()
        gh, bound = self._kernel.gates * self.hidden_size, 1.0 / math.sqrt(self.hidden_size)
        self.weight_ih = Parameter(_uniform((gh, self.input_size), bound, dtype))
        self.weight_hh = Parameter(_uniform((gh, self.hidden_size), bound, dtype))
        self.bias_ih = Parameter(_uniform((gh,), bound, dtype)) if self.use_bias else None
        self.bias_hh = Parameter(_uniform((gh,), bound, dtype)) if self.use_bias else None
        # The weights do not depend on the input's shape: built from the start, like Linear(in, out).
        self.build((None, self.input_size))
        self._cache: Any = None
        self.grad_h0: np.ndarray | None = None
        self.grad_c0: np.ndarray | None = None

    def _make_kernel(self) -> Any:
        raise NotImplementedError

    def build(self, input_shape: Any) -> None:
        self._check_shape(input_shape)
        super().build(input_shape)

    # One hidden state (RNNCell, GRUCell); LSTMCell overrides both for (h, c).
    def forward(self, x: np.ndarray, h0: np.ndarray | None = None) -> np.ndarray:
        return self._step(x, (h0,))[0]

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        return self._step_backward((grad_out,))

    def _check_shape(self, shape: Any) -> None:
        if shape is None or len(shape) != 2 or shape[1] != self.input_size:
            raise ShapeError(
                f"{self.describe()} expected input of shape (N, {self.input_size}), got {format_shape(shape)}"
            )

    def _check_input(self, x: Any) -> None:
        self._check_shape(getattr(x, "shape", None))

    def _state(self, value: Any, n: int, dtype: np.dtype, label: str) -> np.ndarray:
        if value is None:
            return np.zeros((n, self.hidden_size), dtype=dtype)
        value = np.asarray(value, dtype=dtype)
        if value.shape != (n, self.hidden_size):
            raise ShapeError(
                f"{self.describe()} expected {label} of shape ({n}, {self.hidden_size}) (N, hidden_size), "
                f"got {format_shape(value.shape)}"
            )
        return value

    def _step(self, x: np.ndarray, state: tuple) -> tuple:
        dtype = self.weight_ih.data.dtype
        x = np.asarray(x, dtype=dtype)
        self._check_shape(x.shape)
        labels = ("h0", "c0")[: self._num_states]
        state0 = tuple(self._state(s, x.shape[0], dtype, lab) for s, lab in zip(state, labels))
        xp = x @ self.weight_ih.data.T
        if self.bias_ih is not None:
            xp += self.bias_ih.data
        b_hh = None if self.bias_hh is None else self.bias_hh.data
        _, final, cache = self._kernel.forward(xp[None], self.weight_hh.data, b_hh, state0, False)
        self._cache = (x, cache)
        return tuple(s.copy() for s in final)

    def _step_backward(self, grads: tuple) -> np.ndarray:
        x, cache = self._cache
        dxp, dhp, hprev, dstate0 = self._kernel.backward(cache, None, grads, self.weight_hh.data)
        dxp, dhp, hprev = dxp[0], dhp[0], hprev[0]
        self.weight_ih.add_grad(dxp.T @ x)
        self.weight_hh.add_grad(dhp.T @ hprev)
        if self.bias_ih is not None:
            self.bias_ih.add_grad(dxp.sum(axis=0))
            self.bias_hh.add_grad(dhp.sum(axis=0))
        self.grad_h0 = dstate0[0]
        if self._num_states == 2:
            self.grad_c0 = dstate0[1]
        return dxp @ self.weight_ih.data

    def output_shape(self, input_shape: Any) -> Any:
        self._check_shape(input_shape)
        return (input_shape[0], self.hidden_size)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "input_size": self.input_size,
            "hidden_size": self.hidden_size,
            "bias": self.use_bias,
        }

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}" + ("" if self.use_bias else ", bias=False")


class RNNCell(_CellBase):
    """One Elman RNN step: ``h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh)``.

    Args:
        input_size: features of ``x``.
        hidden_size: features of the hidden state ``h``.
        bias: whether to learn ``b_ih`` and ``b_hh`` (default ``True``).
        nonlinearity: ``"tanh"`` (default) or ``"relu"``.
        name: layer name.

    Shape:
        - Input: ``x`` ``(N, input_size)``; optional ``h0`` ``(N, hidden_size)``
          (zeros when omitted), given as ``cell(x, h0)``.
        - Output: ``h'`` ``(N, hidden_size)``.

    Attributes:
        weight_ih: ``(hidden_size, input_size)``; weight_hh: ``(hidden_size, hidden_size)``;
        bias_ih, bias_hh: ``(hidden_size,)``; all drawn from
        ``U(-1/sqrt(hidden_size), 1/sqrt(hidden_size))`` as in PyTorch.
        grad_h0: after ``backward``, ``dL/dh0`` ``(N, hidden_size)``.

    Gradient:
        With ``G = dL/dh'`` and ``dA = G * act'(a)`` (``1 - h'^2`` for tanh,
        ``[h' > 0]`` for relu): ``dW_ih = dA^T x``, ``dW_hh = dA^T h``,
        ``db_ih = db_hh = sum_N dA``, ``dx = dA W_ih``, ``dh0 = dA W_hh``.

    Example:
        >>> import numpy as np
        >>> from framework.layers import RNNCell
        >>> cell = RNNCell(4, 3)
        >>> cell(np.ones((2, 4), dtype=np.float32)).shape
        (2, 3)
    """

    _kind = "rnn"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        *,
        name: str | None = None,
    ) -> None:
        self.nonlinearity = check_choice("RNNCell", "nonlinearity", nonlinearity, _NONLINEARITIES)
        super().__init__(input_size, hidden_size, bias, name=name)

    def _make_kernel(self) -> Any:
        return _RNNKernel(self.nonlinearity)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "nonlinearity": self.nonlinearity}


class LSTMCell(_CellBase):
    """One LSTM step with PyTorch's gate order ``i, f, g, o``.

    ``[i, f, g, o] = x W_ih^T + b_ih + h W_hh^T + b_hh`` split in four, then
    ``i, f, o = sigmoid(.)``, ``g = tanh(.)``, ``c' = f * c + i * g``,
    ``h' = o * tanh(c')``.

    Args:
        input_size: features of ``x``.
        hidden_size: features of ``h`` and ``c``.
        bias: whether to learn ``b_ih`` and ``b_hh`` (default ``True``).
        name: layer name.

    Shape:
        - Input: ``x`` ``(N, input_size)``; optional ``state = (h0, c0)``, each
          ``(N, hidden_size)`` (zeros when omitted), as ``cell(x, (h0, c0))``.
        - Output: ``(h', c')``, each ``(N, hidden_size)``.

    Attributes:
        weight_ih: ``(4*hidden_size, input_size)``; weight_hh: ``(4*hidden_size, hidden_size)``;
        bias_ih, bias_hh: ``(4*hidden_size,)``; rows stacked ``i, f, g, o``; all
        from ``U(-1/sqrt(hidden_size), 1/sqrt(hidden_size))``.
        grad_h0, grad_c0: after ``backward``, ``dL/dh0`` and ``dL/dc0``.

    Gradient:
        ``backward(grad_h, grad_c=None)``. With ``dh = dL/dh'`` and
        ``dc = dL/dc' + dh * o * (1 - tanh(c')^2)``: ``da_i = dc * g * i(1-i)``,
        ``da_f = dc * c * f(1-f)``, ``da_g = dc * i * (1-g^2)``,
        ``da_o = dh * tanh(c') * o(1-o)``; then ``dx = dA W_ih``,
        ``dh0 = dA W_hh``, ``dc0 = dc * f``, ``dW_ih = dA^T x``, ``dW_hh = dA^T h``.

    Example:
        >>> import numpy as np
        >>> from framework.layers import LSTMCell
        >>> h, c = LSTMCell(4, 3)(np.ones((2, 4), dtype=np.float32))
        >>> h.shape, c.shape
        ((2, 3), (2, 3))
    """

    _kind = "lstm"
    _num_states = 2

    def _make_kernel(self) -> Any:
        return _LSTMKernel()

    def forward(self, x: np.ndarray, state: tuple | None = None) -> tuple[np.ndarray, np.ndarray]:
        h, c = self._step(x, _state_pair(self, state))
        return h, c

    def backward(self, grad_out: Any, grad_c: np.ndarray | None = None) -> np.ndarray:
        if isinstance(grad_out, (tuple, list)):
            grad_out, grad_c = grad_out
        return self._step_backward((grad_out, grad_c))

    def output_shape(self, input_shape: Any) -> Any:
        """``[h shape, c shape]``: the cell returns the pair ``(h, c)``."""
        h = super().output_shape(input_shape)
        return [h, h]


class GRUCell(_CellBase):
    """One GRU step with PyTorch's gate order ``r, z, n``.

    ``r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)``,
    ``z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)``,
    ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``, ``h' = (1 - z) * n + z * h``.

    Args:
        input_size: features of ``x``.
        hidden_size: features of ``h``.
        bias: whether to learn ``b_ih`` and ``b_hh`` (default ``True``).
        name: layer name.

    Shape:
        - Input: ``x`` ``(N, input_size)``; optional ``h0`` ``(N, hidden_size)``.
        - Output: ``h'`` ``(N, hidden_size)``.

    Attributes:
        weight_ih: ``(3*hidden_size, input_size)``; weight_hh: ``(3*hidden_size, hidden_size)``;
        bias_ih, bias_hh: ``(3*hidden_size,)``; rows stacked ``r, z, n``; all
        from ``U(-1/sqrt(hidden_size), 1/sqrt(hidden_size))``.
        grad_h0: after ``backward``, ``dL/dh0``.

    Gradient:
        With ``dh = dL/dh'``: ``da_n = dh (1-z)(1-n^2)``, ``da_z = dh (h-n) z(1-z)``,
        ``da_r = da_n (W_hn h + b_hn) r(1-r)``. The input side gets
        ``[da_r, da_z, da_n]``, the hidden side ``[da_r, da_z, da_n * r]``
        (``dW_hh = that^T h``), and ``dh0 = dh * z + [da_r, da_z, da_n r] W_hh``.

    Example:
        >>> import numpy as np
        >>> from framework.layers import GRUCell
        >>> GRUCell(4, 3)(np.ones((2, 4), dtype=np.float32)).shape
        (2, 3)
    """

    _kind = "gru"

    def _make_kernel(self) -> Any:
        return _GRUKernel()


# -- sequence layers ---------------------------------------------------------


class _RecurrentBase(Layer):
    _num_states: ClassVar[int] = 1

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        output: str = "both",
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        kind = type(self).__name__
        self.input_size = positive_int(kind, "input_size", input_size)
        self.hidden_size = positive_int(kind, "hidden_size", hidden_size)
        self.num_layers = positive_int(kind, "num_layers", num_layers)
        self.use_bias = check_bool(kind, "bias", bias)
        self.batch_first = check_bool(kind, "batch_first", batch_first)
        self.bidirectional = check_bool(kind, "bidirectional", bidirectional)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ConfigError(f"{kind}: dropout must be a probability in [0, 1), got {dropout!r}")
        self.dropout = float(dropout)
        self.output = check_choice(kind, "output", output, _OUTPUTS)
        self._kernel = kernel = self._make_kernel()
        self.num_directions = 2 if self.bidirectional else 1
        dtype = get_default_dtype()
        gh, h = kernel.gates * self.hidden_size, self.hidden_size
        bound = 1.0 / math.sqrt(h)
        self._param_names: list[list[tuple[str, str, str, str]]] = []
        for k in range(self.num_layers):
            n_in = self.input_size if k == 0 else h * self.num_directions
            names_k = []
            for d in range(self.num_directions):
                suffix = f"_l{k}" + ("_reverse" if d == 1 else "")
                names = tuple(f"{p}{suffix}" for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
                setattr(self, names[0], Parameter(_uniform((gh, n_in), bound, dtype)))
                setattr(self, names[1], Parameter(_uniform((gh, h), bound, dtype)))
                setattr(self, names[2], Parameter(_uniform((gh,), bound, dtype)) if self.use_bias else None)
                setattr(self, names[3], Parameter(_uniform((gh,), bound, dtype)) if self.use_bias else None)
                names_k.append(names)
            self._param_names.append(names_k)
        # The weights do not depend on L or N: built from the start, so every input is checked as it is.
        self.build((None, None, self.input_size))
        self._cache: Any = None
        self.grad_h0: np.ndarray | None = None
        if self._num_states == 2:
            self.grad_c0: np.ndarray | None = None

    def _make_kernel(self) -> Any:
        raise NotImplementedError

    def _weights(self, k: int, d: int) -> tuple[Parameter, Parameter, Parameter | None, Parameter | None]:
        return tuple(getattr(self, n) for n in self._param_names[k][d])  # type: ignore[return-value]

    # -- shapes --

    def _layout(self) -> str:
        return "(N, L, {})" if self.batch_first else "(L, N, {})"

    def _check_shape(self, shape: Any) -> None:
        if shape is None or len(shape) != 3 or shape[2] != self.input_size:
            expected = self._layout().format(self.input_size)
            raise ShapeError(
                f"{self.describe()} expected input of shape {expected} "
                f"(batch_first={self.batch_first}), got {format_shape(shape)}"
            )

    def build(self, input_shape: Any) -> None:
        self._check_shape(input_shape)
        super().build(input_shape)
        self.input_spec = (None, None, self.input_size)

    def _check_input(self, x: Any) -> None:
        self._check_shape(getattr(x, "shape", None))

    def output_shape(self, input_shape: Any) -> Any:
        """The sequence output's shape (also for ``output="both"``), or ``(N, D*H)`` for ``"last"``."""
        self._check_shape(input_shape)
        features = self.num_directions * self.hidden_size
        if self.output == "last":
            return (input_shape[0] if self.batch_first else input_shape[1], features)
        return (input_shape[0], input_shape[1], features)

    def _initial(self, value: Any, n: int, dtype: np.dtype, label: str) -> np.ndarray:
        shape = (self.num_directions * self.num_layers, n, self.hidden_size)
        if value is None:
            return np.zeros(shape, dtype=dtype)
        value = np.asarray(value, dtype=dtype)
        if value.shape != shape:
            raise ShapeError(
                f"{self.describe()} expected {label} of shape {format_shape(shape)} "
                f"(num_layers * num_directions, N, hidden_size), got {format_shape(value.shape)}"
            )
        return value

    # -- the recurrence over layers and directions --

    def _run(self, x: Any, state: tuple) -> Any:
        dtype = self.weight_ih_l0.data.dtype
        x = np.asarray(x, dtype=dtype)
        self._check_shape(x.shape)
        xt = np.ascontiguousarray(x.transpose(1, 0, 2)) if self.batch_first else x
        length, n, _ = xt.shape
        if length == 0:
            raise ShapeError(f"{self.describe()} got a sequence of length 0; expected at least one time step")
        labels = ("h0", "c0")[: self._num_states]
        states0 = [self._initial(s, n, dtype, lab) for s, lab in zip(state, labels)]
        nd = self.num_directions
        finals = [np.empty_like(s) for s in states0]
        caches = []
        inp = xt
        for k in range(self.num_layers):
            outs, dir_caches = [], []
            for d in range(nd):
                w_ih, w_hh, b_ih, b_hh = self._weights(k, d)
                xp = (inp.reshape(length * n, -1) @ w_ih.data.T).reshape(length, n, -1)
                if b_ih is not None:
                    xp += b_ih.data
                j = k * nd + d
                out, final, cache = self._kernel.forward(
                    xp, w_hh.data, None if b_hh is None else b_hh.data, tuple(s[j] for s in states0), d == 1
                )
                for dst, src in zip(finals, final):
                    dst[j] = src
                outs.append(out)
                dir_caches.append(cache)
            y = outs[0] if nd == 1 else np.concatenate(outs, axis=2)
            mask = None
            if self.training and self.dropout > 0 and k < self.num_layers - 1:
                keep = get_rng().random(y.shape) >= self.dropout
                mask = keep.astype(dtype) * dtype.type(1.0 / (1.0 - self.dropout))
                y = y * mask
            caches.append((inp, dir_caches, mask))
            inp = y
        self._cache = (caches, length, n, x.shape)
        if self.output == "last":
            last = finals[0][-nd:]
            return np.concatenate(list(last), axis=1) if nd == 2 else last[0].copy()
        out = np.array(inp.transpose(1, 0, 2) if self.batch_first else inp, order="C", copy=True)
        if self.output == "sequence":
            return out
        return out, (finals[0] if self._num_states == 1 else tuple(finals))

    def _run_backward(self, grad_output: Any, grad_state: tuple) -> np.ndarray:
        if self._cache is None:
            raise NotBuiltError(
                f"{self.describe()}: backward() needs a forward() first "
                "(each forward's cache serves one backward)"
            )
        caches, length, n, x_shape = self._cache
        h, nd = self.hidden_size, self.num_directions
        dtype = self.weight_ih_l0.data.dtype
        state_shape = (nd * self.num_layers, n, h)
        if self.output == "last":
            grad_last = np.asarray(grad_output, dtype=dtype)
            grad_h_n = np.zeros(state_shape, dtype=dtype)
            grad_h_n[-nd:] = grad_last.reshape(n, nd, h).transpose(1, 0, 2)
            grad_state = (grad_h_n,) + (None,) * (self._num_states - 1)
            grad_output = None
        seq_shape = (*x_shape[:2], nd * h)
        if grad_output is not None:
            grad_output = np.asarray(grad_output, dtype=dtype)
            if grad_output.shape != seq_shape:
                raise ShapeError(
                    f"{self.describe()}: backward() expected grad_output of shape {format_shape(seq_shape)} "
                    f"(the output's), got {format_shape(grad_output.shape)}"
                )
        checked = []
        for g in grad_state:
            if g is not None:
                g = np.asarray(g, dtype=dtype)
                if g.shape != state_shape:
                    raise ShapeError(
                        f"{self.describe()}: backward() expected a final-state gradient of shape "
                        f"{format_shape(state_shape)}, got {format_shape(g.shape)}"
                    )
            checked.append(g)
        d = None
        if grad_output is not None:
            d = grad_output.transpose(1, 0, 2) if self.batch_first else grad_output
        grads0 = [np.empty(state_shape, dtype=dtype) for _ in range(self._num_states)]
        for k in range(self.num_layers - 1, -1, -1):
            inp, dir_caches, mask = caches[k]
            if d is not None and mask is not None:
                d = d * mask
            d_in = None
            inp2 = inp.reshape(length * n, -1)
            for dd in range(nd):
                w_ih, w_hh, b_ih, b_hh = self._weights(k, dd)
                j = k * nd + dd
                dout = None if d is None else d[:, :, dd * h : (dd + 1) * h]
                dstate_n = tuple(None if g is None else g[j] for g in checked)
                dxp, dhp, hprev, dstate0 = self._kernel.backward(dir_caches[dd], dout, dstate_n, w_hh.data)
                dxp2 = dxp.reshape(length * n, -1)
                dhp2 = dhp.reshape(length * n, -1)
                w_ih.add_grad(dxp2.T @ inp2)
                w_hh.add_grad(dhp2.T @ hprev.reshape(length * n, h))
                if b_ih is not None:
                    sum_xp = dxp2.sum(axis=0)
                    b_ih.add_grad(sum_xp)
                    b_hh.add_grad(sum_xp if dhp is dxp else dhp2.sum(axis=0))
                for dst, src in zip(grads0, dstate0):
                    dst[j] = src
                dx = dxp2 @ w_ih.data
                if d_in is None:
                    d_in = dx
                else:
                    d_in += dx
            d = d_in.reshape(length, n, -1)
            # Free the caches of this layer once used.
            caches[k] = None
        self._cache = None
        self.grad_h0 = grads0[0]
        if self._num_states == 2:
            self.grad_c0 = grads0[1]
        return np.ascontiguousarray(d.transpose(1, 0, 2)) if self.batch_first else d

    # One hidden state (RNN, GRU); LSTM overrides both for (h, c).
    def forward(self, x: np.ndarray, h0: np.ndarray | None = None) -> Any:
        return self._run(x, (h0,))

    def backward(self, grad_out: Any, grad_h_n: np.ndarray | None = None) -> np.ndarray:
        grad_out, grad_h_n = self._split_grad(grad_out, grad_h_n)
        return self._run_backward(grad_out, (grad_h_n,))

    def _split_grad(self, grad_out: Any, grad_state: Any) -> tuple[Any, Any]:
        if self.output == "both" and isinstance(grad_out, (tuple, list)) and grad_state is None:
            grad_out, grad_state = grad_out
        return grad_out, grad_state

    # -- config --

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "input_size": self.input_size,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "bias": self.use_bias,
            "batch_first": self.batch_first,
            "dropout": self.dropout,
            "bidirectional": self.bidirectional,
            "output": self.output,
        }

    def extra_repr(self) -> str:
        defaults = {"num_layers": 1, "bias": True, "batch_first": False, "dropout": 0.0}
        defaults.update({"bidirectional": False, "output": "both", "nonlinearity": "tanh"})
        config = {
            k: v for k, v in self.get_config().items() if k not in ("name", "input_size", "hidden_size")
        }
        extra = "".join(f", {k}={v!r}" for k, v in config.items() if defaults.get(k) != v)
        return f"{self.input_size}, {self.hidden_size}{extra}"


_SEQ_DOC = """
    Args:
        input_size: features of each time step of the input.
        hidden_size: features of the hidden state ``h``.
        num_layers: stacked recurrent layers (default 1); layer ``k > 0`` reads
            the previous layer's output, of ``num_directions * hidden_size`` features.
        bias: whether to learn ``b_ih`` and ``b_hh`` (default ``True``).
        batch_first: inputs and outputs as ``(N, L, *)`` instead of ``(L, N, *)``
            (default ``False``); states are ``(D*num_layers, N, H)`` either way.
        dropout: probability of dropping each output of every layer but the last,
            in training mode (inverted dropout, masks from the framework's seeded
            generator; default 0).
        bidirectional: add a second direction running from the last step to the
            first (default ``False``); ``D = 2`` then, outputs concatenate
            ``[forward, reverse]`` features.
        output: what ``forward`` returns: ``"both"`` (default) PyTorch's tuple
            ``(output, final state)``; ``"sequence"`` the output sequence only;
            ``"last"`` the last layer's final hidden state of each direction
            concatenated, ``(N, D*H)`` (equal to the sequence's last step when
            unidirectional), so ``Sequential([LSTM(8, 16, batch_first=True,
            output="last"), Linear(16, 3)])`` works.
        name: layer name.
"""


class RNN(_RecurrentBase):
    """Multi-layer Elman RNN: ``h_t = act(x_t W_ih^T + b_ih + h_{{t-1}} W_hh^T + b_hh)``.

    ``act`` is ``tanh`` or ``relu``.
    {args}        nonlinearity: ``"tanh"`` (default) or ``"relu"``.

    Shape:
        - Input: ``x`` ``(L, N, input_size)`` (``(N, L, input_size)`` with
          ``batch_first``), optional ``h0`` ``(D*num_layers, N, hidden_size)``
          (zeros when omitted): ``rnn(x, h0)``.
        - Output (``output="both"``): ``(output, h_n)``, ``output``
          ``(L, N, D*hidden_size)`` (or batch first), ``h_n``
          ``(D*num_layers, N, hidden_size)`` ordered ``layer * D + direction``.

    Attributes:
        weight_ih_l{{k}}: ``(hidden_size, input_size)`` for ``k = 0``, else
        ``(hidden_size, D*hidden_size)``; weight_hh_l{{k}}: ``(hidden_size, hidden_size)``;
        bias_ih_l{{k}}, bias_hh_l{{k}}: ``(hidden_size,)``; the reverse direction's
        carry the suffix ``_reverse``. All from ``U(-1/sqrt(H), 1/sqrt(H))``.
        grad_h0: after ``backward``, ``dL/dh0`` ``(D*num_layers, N, hidden_size)``.

    Gradient:
        ``backward(grad_output, grad_h_n=None)`` returns ``dL/dx`` (either
        gradient may be ``None`` for zero). Backpropagation through time runs
        ``t = L-1 .. 0``: ``dh_t = dL/dy_t + da_{{t+1}} W_hh``,
        ``da_t = dh_t * act'(a_t)``, ``dh_{{t-1}} = da_t W_hh``; then over all
        steps at once ``dW_ih = sum_t da_t^T x_t``, ``dW_hh = sum_t da_t^T h_{{t-1}}``,
        ``db = sum_t,N da_t``, ``dx_t = da_t W_ih``.

    Example:
        >>> import numpy as np
        >>> from framework.layers import RNN
        >>> rnn = RNN(10, 20, num_layers=2)
        >>> out, h_n = rnn(np.zeros((5, 3, 10), dtype=np.float32))
        >>> out.shape, h_n.shape
        ((5, 3, 20), (2, 3, 20))
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        output: str = "both",
        *,
        name: str | None = None,
    ) -> None:
        self.nonlinearity = check_choice("RNN", "nonlinearity", nonlinearity, _NONLINEARITIES)
        super().__init__(
            input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, output, name=name
        )

    def _make_kernel(self) -> Any:
        return _RNNKernel(self.nonlinearity)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["nonlinearity"] = self.nonlinearity
        return config


class LSTM(_RecurrentBase):
    """Multi-layer LSTM with PyTorch's gate order ``i, f, g, o``.

    Per layer and time step, with ``[i, f, g, o]`` the four row blocks of
    ``x_t W_ih^T + b_ih + h_{{t-1}} W_hh^T + b_hh``: ``i, f, o = sigmoid(.)``,
    ``g = tanh(.)``, ``c_t = f * c_{{t-1}} + i * g``, ``h_t = o * tanh(c_t)``.
    {args}
    Shape:
        - Input: ``x`` ``(L, N, input_size)`` (``(N, L, input_size)`` with
          ``batch_first``), optional ``state = (h0, c0)``, each
          ``(D*num_layers, N, hidden_size)``: ``lstm(x, (h0, c0))``.
        - Output (``output="both"``): ``(output, (h_n, c_n))`` with ``output``
          ``(L, N, D*hidden_size)`` and ``h_n``, ``c_n`` ``(D*num_layers, N, hidden_size)``.

    Attributes:
        weight_ih_l{{k}}: ``(4*hidden_size, input_size)`` for ``k = 0``, else
        ``(4*hidden_size, D*hidden_size)``; weight_hh_l{{k}}: ``(4*hidden_size, hidden_size)``;
        bias_ih_l{{k}}, bias_hh_l{{k}}: ``(4*hidden_size,)``; rows stacked
        ``i, f, g, o``; ``_reverse`` suffix for the second direction; all from
        ``U(-1/sqrt(H), 1/sqrt(H))``.
        grad_h0, grad_c0: after ``backward``, ``dL/dh0`` and ``dL/dc0``.

    Gradient:
        ``backward(grad_output, grad_state=None)`` with
        ``grad_state = (grad_h_n, grad_c_n)`` (entries may be ``None``).
        Backpropagation through time, ``t = L-1 .. 0``:
        ``dh_t = dL/dy_t + dA_{{t+1}} W_hh``,
        ``dc_t = dc_{{t+1}} * f_{{t+1}} + dh_t * o_t * (1 - tanh(c_t)^2)``,
        ``dA_t = [dc_t g i(1-i), dc_t c_{{t-1}} f(1-f), dc_t i (1-g^2),
        dh_t tanh(c_t) o(1-o)]``; then ``dW_ih = sum_t dA_t^T x_t``,
        ``dW_hh = sum_t dA_t^T h_{{t-1}}``, ``db_ih = db_hh = sum dA``,
        ``dx_t = dA_t W_ih``.

    Example:
        >>> import numpy as np
        >>> from framework.layers import LSTM
        >>> lstm = LSTM(10, 20, batch_first=True, bidirectional=True)
        >>> out, (h_n, c_n) = lstm(np.zeros((3, 5, 10), dtype=np.float32))
        >>> out.shape, h_n.shape, c_n.shape
        ((3, 5, 40), (2, 3, 20), (2, 3, 20))
    """

    _num_states = 2

    def _make_kernel(self) -> Any:
        return _LSTMKernel()

    def forward(self, x: np.ndarray, state: tuple | None = None) -> Any:
        return self._run(x, _state_pair(self, state))

    def backward(self, grad_out: Any, grad_state: Any = None) -> np.ndarray:
        grad_out, grad_state = self._split_grad(grad_out, grad_state)
        grad_state = (None, None) if grad_state is None else tuple(grad_state)
        if len(grad_state) != 2:
            raise ShapeError(f"{self.describe()}: backward() expected grad_state as (grad_h_n, grad_c_n)")
        return self._run_backward(grad_out, grad_state)


class GRU(_RecurrentBase):
    """Multi-layer GRU with PyTorch's gate order ``r, z, n``.

    ``r_t = sigmoid(W_ir x_t + b_ir + W_hr h_{{t-1}} + b_hr)``,
    ``z_t = sigmoid(W_iz x_t + b_iz + W_hz h_{{t-1}} + b_hz)``,
    ``n_t = tanh(W_in x_t + b_in + r_t * (W_hn h_{{t-1}} + b_hn))``,
    ``h_t = (1 - z_t) * n_t + z_t * h_{{t-1}}``.
    {args}
    Shape:
        - Input: ``x`` ``(L, N, input_size)`` (``(N, L, input_size)`` with
          ``batch_first``), optional ``h0`` ``(D*num_layers, N, hidden_size)``.
        - Output (``output="both"``): ``(output, h_n)`` as for :class:`RNN`.

    Attributes:
        weight_ih_l{{k}}: ``(3*hidden_size, input_size)`` for ``k = 0``, else
        ``(3*hidden_size, D*hidden_size)``; weight_hh_l{{k}}: ``(3*hidden_size, hidden_size)``;
        bias_ih_l{{k}}, bias_hh_l{{k}}: ``(3*hidden_size,)``; rows stacked ``r, z, n``;
        ``_reverse`` suffix for the second direction; all from ``U(-1/sqrt(H), 1/sqrt(H))``.
        grad_h0: after ``backward``, ``dL/dh0``.

    Gradient:
        ``backward(grad_output, grad_h_n=None)``. Through time, ``t = L-1 .. 0``,
        with ``dh_t = dL/dy_t + (carried from t+1)``:
        ``da_n = dh_t (1-z)(1-n^2)``, ``da_z = dh_t (h_{{t-1}} - n) z(1-z)``,
        ``da_r = da_n (W_hn h_{{t-1}} + b_hn) r(1-r)``; the input side gets
        ``dXP_t = [da_r, da_z, da_n]``, the hidden side ``dHP_t = [da_r, da_z, da_n r]``
        and ``dh_{{t-1}} = dh_t z + dHP_t W_hh``; then ``dW_ih = sum_t dXP_t^T x_t``,
        ``dW_hh = sum_t dHP_t^T h_{{t-1}}``, ``dx_t = dXP_t W_ih``.

    Example:
        >>> import numpy as np
        >>> from framework.layers import GRU
        >>> gru = GRU(10, 20, output="last", batch_first=True)
        >>> gru(np.zeros((3, 5, 10), dtype=np.float32)).shape
        (3, 20)
    """

    def _make_kernel(self) -> Any:
        return _GRUKernel()


for _cls in (RNN, LSTM, GRU):
    if _cls.__doc__:
        _cls.__doc__ = _cls.__doc__.format(args=_SEQ_DOC)


@hookimpl
def register_layers(register: Any) -> None:
    register(RNNCell)
    register(LSTMCell)
    register(GRUCell)
    register(RNN)
    register(LSTM)
    register(GRU)
