"""Recurrent cells: one step of an Elman RNN, an LSTM or a GRU (``RNNCell``, ``LSTMCell``, ``GRUCell``).

A cell keeps nothing of a call on itself: what its backward needs lives on
the call's context, so one cell may be called at every step of a hand-unrolled
loop in a functional ``Model`` (shared weights, parameter gradients summed
over the steps). In a graph, pass the state with the input as a list,
``cell([x_t, h])`` (``cell([x_t, h, c])`` for an ``LSTMCell``); ``backward``
then returns ``[dL/dx, dL/dh]`` (``[dL/dx, dL/dh, dL/dc]``).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from framework.base.context import Context
from framework.base.layer import Layer, format_shape
from framework.base.parameter import Parameter
from framework.base.validation import check_bool, check_choice, positive_int
from framework.errors import NotBuiltError, ShapeError
from framework.runtime.dtype import accumulation_dtype, get_default_dtype
from plugins.recurrent_kernels import GRUKernel, LSTMKernel, RNNKernel, manual_grad, state_pair, uniform

__all__ = ["GRUCell", "LSTMCell", "RNNCell"]

_NONLINEARITIES = ("tanh", "relu")
_LABELS = ("h0", "c0")


class _CellBase(Layer):
    """One step of a recurrence over a batch; subclasses pick the kernel and the number of states."""

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
        self.weight_ih = Parameter(uniform((gh, self.input_size), bound, dtype))
        self.weight_hh = Parameter(uniform((gh, self.hidden_size), bound, dtype))
        self.bias_ih = Parameter(uniform((gh,), bound, dtype)) if self.use_bias else None
        self.bias_hh = Parameter(uniform((gh,), bound, dtype)) if self.use_bias else None
        # The weights do not depend on the input's shape: built from the start, like Linear(in, out).
        self.build((None, self.input_size))

    def _make_kernel(self) -> Any:
        raise NotImplementedError

    def build(self, input_shape: Any) -> None:
        self._check_shape(input_shape)
        super().build(input_shape)

    # One hidden state (RNNCell, GRUCell); LSTMCell overrides both for (h, c).
    def forward(self, ctx: Context, x: Any, h0: np.ndarray | None = None) -> np.ndarray:
        return self._step(ctx, x, (h0,))[0]

    def backward(self, ctx: Context, grad_out: np.ndarray) -> Any:
        return self._step_backward(ctx, (grad_out,))

    @property
    def grad_h0(self) -> np.ndarray | None:
        """``dL/dh0`` ``(N, hidden_size)`` of the last manual-form call (``ctx.grad_h0`` of any call)."""
        return manual_grad(self, "grad_h0")

    # -- shapes --

    def _check_shape(self, shape: Any) -> None:
        if shape is None or len(shape) != 2 or shape[1] != self.input_size:
            raise ShapeError(
                f"{self.describe()} expected input of shape (N, {self.input_size}), got {format_shape(shape)}"
            )

    def _check_list(self, items: Any) -> None:
        """A list input must be ``[x, h]`` (``[x, h, c]`` for an LSTMCell)."""
        want = 1 + self._num_states
        if len(items) != want:
            names = ", ".join(("x", "h", "c")[:want])
            raise ShapeError(
                f"{self.describe()} expected a list input [{names}] of {want} arrays, got {len(items)}"
            )

    def _check_input(self, x: Any) -> None:
        if isinstance(x, (list, tuple)):
            self._check_list(x)
            n = getattr(x[0], "shape", (None,))[0]
            for label, s in zip(_LABELS, x[1:]):
                shape = getattr(s, "shape", None)
                if shape is None or len(shape) != 2 or shape[1] != self.hidden_size:
                    raise ShapeError(
                        f"{self.describe()} expected {label} of shape ({n}, {self.hidden_size}) "
                        f"(N, hidden_size), got {format_shape(shape)}"
                    )
            x = x[0]
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

    # -- the step --

    def _step(self, ctx: Context, x: Any, state: tuple) -> tuple:
        ctx.list_input = isinstance(x, (list, tuple))
        if ctx.list_input:
            if any(s is not None for s in state):
                raise ShapeError(
                    f"{self.describe()}: give the state either in the list input or as an argument, not both"
                )
            self._check_list(x)
            x, state = x[0], tuple(x[1:])
        dtype = self.weight_ih.data.dtype
        x = np.asarray(x, dtype=dtype)
        self._check_shape(x.shape)
        state0 = tuple(self._state(s, x.shape[0], dtype, lab) for s, lab in zip(state, _LABELS))
        xp = x @ self.weight_ih.data.T
        if self.bias_ih is not None:
            xp += self.bias_ih.data
        b_hh = None if self.bias_hh is None else self.bias_hh.data
        _, final, cache = self._kernel.forward(xp[None], self.weight_hh.data, b_hh, state0, False)
        ctx.x = x
        ctx.cache = cache
        return tuple(s.copy() for s in final)

    def _step_backward(self, ctx: Context, grads: tuple) -> Any:
        cache = ctx.__dict__.get("cache")
        if cache is None:
            raise NotBuiltError(
                f"{self.describe()}: backward() needs a forward() first, and each forward serves one "
                "backward. To unroll a cell over time steps, call it in a functional Model (each call "
                "gets its own context) or pass each call its own Context: cell.forward(ctx_t, [x_t, h])"
            )
        ctx.cache = None
        x = ctx.x
        dtype = x.dtype
        grads = tuple(None if g is None else np.asarray(g, dtype=dtype) for g in grads)
        want = (x.shape[0], self.hidden_size)
        for label, g in zip(("grad_h", "grad_c"), grads):  # never a silently broadcast gradient
            if g is not None and g.shape != want:
                raise ShapeError(
                    f"{self.describe()}: backward() expected {label} of shape {format_shape(want)} "
                    f"(the output's), got {format_shape(g.shape)}"
                )
        dxp, dhp, hprev, dstate0 = self._kernel.backward(cache, None, grads, self.weight_hh.data)
        dxp, dhp, hprev = dxp[0], dhp[0], hprev[0]
        self.weight_ih.add_grad(dxp.T @ x)
        self.weight_hh.add_grad(dhp.T @ hprev)
        if self.bias_ih is not None:  # float16 sums over the batch in float32
            acc = accumulation_dtype(dxp.dtype)
            self.bias_ih.add_grad(dxp.sum(axis=0, dtype=acc))
            self.bias_hh.add_grad(dhp.sum(axis=0, dtype=acc))
        ctx.grad_h0 = dstate0[0]
        if self._num_states == 2:
            ctx.grad_c0 = dstate0[1]
        dx = dxp @ self.weight_ih.data if ctx.needs_input_grad else None
        return [dx, *dstate0] if ctx.list_input else dx

    def output_shape(self, input_shape: Any) -> Any:
        if isinstance(input_shape, list):
            self._check_list(input_shape)
            input_shape = input_shape[0]
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
          (zeros when omitted), given as ``cell(x, h0)`` or, in a functional
          graph, as the list ``cell([x, h0])``.
        - Output: ``h'`` ``(N, hidden_size)``.

    Attributes:
        weight_ih: ``(hidden_size, input_size)``; weight_hh: ``(hidden_size, hidden_size)``;
        bias_ih, bias_hh: ``(hidden_size,)``; all drawn from
        ``U(-1/sqrt(hidden_size), 1/sqrt(hidden_size))`` as in PyTorch.
        grad_h0: after a manual-form ``backward``, ``dL/dh0`` ``(N, hidden_size)``
        (``ctx.grad_h0`` after ``backward(ctx, ...)``).

    Gradient:
        With ``G = dL/dh'`` and ``dA = G * act'(a)`` (``1 - h'^2`` for tanh,
        ``[h' > 0]`` for relu): ``dW_ih = dA^T x``, ``dW_hh = dA^T h``,
        ``db_ih = db_hh = sum_N dA``, ``dx = dA W_ih``, ``dh0 = dA W_hh``.
        ``backward`` returns ``dx``, or ``[dx, dh0]`` for a list input (every
        cell; ``[dx, dh0, dc0]`` for an LSTMCell). Parameter gradients are
        added, so the calls of one cell at every step of an unrolled loop sum.

    Example:
        >>> import numpy as np
        >>> from framework.layers import RNNCell
        >>> cell = RNNCell(4, 3)
        >>> cell(np.ones((2, 4), dtype=np.float32)).shape
        (2, 3)
    """

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
        return RNNKernel(self.nonlinearity)

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
          ``(N, hidden_size)`` (zeros when omitted), as ``cell(x, (h0, c0))``
          or, in a functional graph, as the list ``cell([x, h0, c0])``.
        - Output: ``(h', c')``, each ``(N, hidden_size)``.

    Attributes:
        weight_ih: ``(4*hidden_size, input_size)``; weight_hh: ``(4*hidden_size, hidden_size)``;
        bias_ih, bias_hh: ``(4*hidden_size,)``; rows stacked ``i, f, g, o``; all
        from ``U(-1/sqrt(hidden_size), 1/sqrt(hidden_size))``.
        grad_h0, grad_c0: after a manual-form ``backward``, ``dL/dh0`` and ``dL/dc0``
        (``ctx.grad_h0``, ``ctx.grad_c0`` after ``backward(ctx, ...)``).

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

    _num_states = 2

    def _make_kernel(self) -> Any:
        return LSTMKernel()

    def forward(self, ctx: Context, x: Any, state: tuple | None = None) -> tuple[np.ndarray, np.ndarray]:
        h, c = self._step(ctx, x, (None, None) if state is None else state_pair(self, state))
        return h, c

    def backward(self, ctx: Context, grad_out: Any, grad_c: np.ndarray | None = None) -> Any:
        if isinstance(grad_out, (tuple, list)):
            if len(grad_out) != 2 or grad_c is not None:
                raise ShapeError(
                    f"{self.describe()}: backward() expected (grad_h, grad_c) for the outputs (h, c), "
                    f"got a {type(grad_out).__name__} of {len(grad_out)}"
                    + (" and grad_c as well" if grad_c is not None else "")
                )
            grad_out, grad_c = grad_out
        return self._step_backward(ctx, (grad_out, grad_c))

    @property
    def grad_c0(self) -> np.ndarray | None:
        """``dL/dc0`` ``(N, hidden_size)`` of the last manual-form call (``ctx.grad_c0`` of any call)."""
        return manual_grad(self, "grad_c0")

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
        - Input: ``x`` ``(N, input_size)``; optional ``h0`` ``(N, hidden_size)``,
          as ``cell(x, h0)`` or ``cell([x, h0])``.
        - Output: ``h'`` ``(N, hidden_size)``.

    Attributes:
        weight_ih: ``(3*hidden_size, input_size)``; weight_hh: ``(3*hidden_size, hidden_size)``;
        bias_ih, bias_hh: ``(3*hidden_size,)``; rows stacked ``r, z, n``; all
        from ``U(-1/sqrt(hidden_size), 1/sqrt(hidden_size))``.
        grad_h0: after a manual-form ``backward``, ``dL/dh0`` (``ctx.grad_h0`` after
        ``backward(ctx, ...)``).

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

    def _make_kernel(self) -> Any:
        return GRUKernel()
