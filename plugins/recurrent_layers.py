"""Recurrent sequence layers: multi-layer, optionally bidirectional ``RNN``, ``LSTM`` and ``GRU``.

Each follows PyTorch's constructor arguments, parameter names, weight layouts
and gate order; the shared engine is :class:`plugins.recurrent_bptt.RecurrentBase`.
What a call's backward needs is kept on the call's context, so one layer may
be called at several places of a graph, its parameter gradients summing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from framework.base.context import Context
from framework.base.validation import check_choice
from framework.errors import ShapeError
from plugins.recurrent_bptt import RecurrentBase
from plugins.recurrent_kernels import GRUKernel, LSTMKernel, RNNKernel, manual_grad, state_pair

__all__ = ["GRU", "LSTM", "RNN"]

_NONLINEARITIES = ("tanh", "relu")

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


class RNN(RecurrentBase):
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
        grad_h0: after a manual-form ``backward``, ``dL/dh0`` ``(D*num_layers, N, hidden_size)``
        (``ctx.grad_h0`` after ``backward(ctx, ...)``).

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
        return RNNKernel(self.nonlinearity)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["nonlinearity"] = self.nonlinearity
        return config


class LSTM(RecurrentBase):
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
        grad_h0, grad_c0: after a manual-form ``backward``, ``dL/dh0`` and ``dL/dc0``
        (``ctx.grad_h0``, ``ctx.grad_c0`` after ``backward(ctx, ...)``).

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
        return LSTMKernel()

    def forward(self, ctx: Context, x: np.ndarray, state: tuple | None = None) -> Any:
        return self._run(ctx, x, state_pair(self, state))

    def backward(self, ctx: Context, grad_out: Any, grad_state: Any = None) -> np.ndarray | None:
        grad_out, grad_state = self._split_grad(grad_out, grad_state)
        grad_state = (None, None) if grad_state is None else tuple(grad_state)
        if len(grad_state) != 2:
            raise ShapeError(f"{self.describe()}: backward() expected grad_state as (grad_h_n, grad_c_n)")
        return self._run_backward(ctx, grad_out, grad_state)

    @property
    def grad_c0(self) -> np.ndarray | None:
        """``dL/dc0`` ``(D*num_layers, N, H)`` of the last manual-form call (``ctx.grad_c0`` of any call)."""
        return manual_grad(self, "grad_c0")


class GRU(RecurrentBase):
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
        grad_h0: after a manual-form ``backward``, ``dL/dh0`` (``ctx.grad_h0`` after
        ``backward(ctx, ...)``).

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
        return GRUKernel()


for _cls in (RNN, LSTM, GRU):
    if _cls.__doc__:
        _cls.__doc__ = _cls.__doc__.format(args=_SEQ_DOC)
