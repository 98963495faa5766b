"""The sequence layers' shared engine: stacked, bidirectional backpropagation through time.

:class:`RecurrentBase` holds the per-layer, per-direction parameters with
PyTorch's names (``weight_ih_l0``, ``weight_hh_l0_reverse``, ...) and runs a
recurrence kernel (:mod:`plugins.recurrent_kernels`) over every layer and
direction. The input projections of all time steps are one matrix product
``(L*N, H_in) @ W_ih^T`` before the loop; only the recurrent part loops over
time steps, each step whole-array over the batch. Per-step activations are
kept in preallocated ``(L, N, ...)`` arrays on the call's context (never on the
layer), and backward forms ``dW_ih`` and ``dW_hh`` with one product each over
all steps, adding them to the parameters' gradients (calls sum).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from framework.base.context import Context
from framework.base.layer import Layer, format_shape
from framework.base.parameter import Parameter
from framework.base.validation import check_bool, check_choice, positive_int
from framework.errors import ConfigError, NotBuiltError, ShapeError
from framework.runtime.dtype import accumulation_dtype, get_default_dtype
from framework.runtime.random import get_rng
from plugins.recurrent_kernels import manual_grad, uniform

__all__ = ["RecurrentBase"]

_OUTPUTS = ("both", "sequence", "last")


class RecurrentBase(Layer):
    """Stacked, optionally bidirectional recurrence over ``(L, N, features)``.

    The arguments, shapes and gradient maths are documented on the concrete
    layers, :class:`plugins.recurrent_layers.RNN`, ``LSTM`` and ``GRU``.

    Subclasses give the kernel (``_make_kernel``) and, for two states (LSTM),
    ``_num_states = 2`` with their own ``forward`` / ``backward`` signatures.
    """

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
                setattr(self, names[0], Parameter(uniform((gh, n_in), bound, dtype)))
                setattr(self, names[1], Parameter(uniform((gh, h), bound, dtype)))
                setattr(self, names[2], Parameter(uniform((gh,), bound, dtype)) if self.use_bias else None)
                setattr(self, names[3], Parameter(uniform((gh,), bound, dtype)) if self.use_bias else None)
                names_k.append(names)
            self._param_names.append(names_k)
        # The weights do not depend on L or N: built from the start, so every input is checked as it is.
        self.build((None, None, self.input_size))

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
        """The output's shape: ``(N, L, D*H)`` (``"sequence"``), ``(N, D*H)`` (``"last"``), or for
        ``"both"`` a flat list of the sequence's and each final state's shape
        (``D*num_layers, N, H``), one per array ``forward`` returns, in order."""
        self._check_shape(input_shape)
        features = self.num_directions * self.hidden_size
        if self.output == "last":
            return (input_shape[0] if self.batch_first else input_shape[1], features)
        sequence = (input_shape[0], input_shape[1], features)
        if self.output != "both":
            return sequence
        batch = input_shape[0] if self.batch_first else input_shape[1]
        state = (self.num_directions * self.num_layers, batch, self.hidden_size)
        return [sequence] + [state] * self._num_states

    #: Final states ``forward`` returns with ``output="both"``: ``h`` (RNN, GRU), ``h, c`` (LSTM).
    _num_states = 1

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

    def _run(self, ctx: Context, x: Any, state: tuple) -> Any:
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
                xp = (inp.reshape(length * n, inp.shape[-1]) @ w_ih.data.T).reshape(length, n, w_ih.shape[0])
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
            if ctx.training and self.dropout > 0 and k < self.num_layers - 1:
                keep = get_rng().random(y.shape) >= self.dropout
                mask = keep.astype(dtype) * dtype.type(1.0 / (1.0 - self.dropout))
                y = y * mask
            caches.append((inp, dir_caches, mask))
            inp = y
        ctx.caches = (caches, length, n, x.shape)
        if self.output == "last":
            last = finals[0][-nd:]
            return np.concatenate(list(last), axis=1) if nd == 2 else last[0].copy()
        out = np.array(inp.transpose(1, 0, 2) if self.batch_first else inp, order="C", copy=True)
        if self.output == "sequence":
            return out
        return out, (finals[0] if self._num_states == 1 else tuple(finals))

    def _run_backward(self, ctx: Context, grad_output: Any, grad_state: tuple) -> np.ndarray | None:
        saved = ctx.__dict__.get("caches")
        if saved is None:
            raise NotBuiltError(
                f"{self.describe()}: backward() needs a forward() first "
                "(each forward's cache serves one backward)"
            )
        caches, length, n, x_shape = saved
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
            inp2 = inp.reshape(length * n, inp.shape[-1])  # -1 fails on an empty batch
            for dd in range(nd):
                w_ih, w_hh, b_ih, b_hh = self._weights(k, dd)
                j = k * nd + dd
                dout = None if d is None else d[:, :, dd * h : (dd + 1) * h]
                dstate_n = tuple(None if g is None else g[j] for g in checked)
                dxp, dhp, hprev, dstate0 = self._kernel.backward(dir_caches[dd], dout, dstate_n, w_hh.data)
                dxp2 = dxp.reshape(length * n, dxp.shape[-1])
                dhp2 = dhp.reshape(length * n, dhp.shape[-1])
                w_ih.add_grad(dxp2.T @ inp2)
                w_hh.add_grad(dhp2.T @ hprev.reshape(length * n, h))
                if b_ih is not None:  # float16 sums over L*N rows in float32 (else they stall at 2048 x)
                    acc = accumulation_dtype(dxp2.dtype)
                    sum_xp = dxp2.sum(axis=0, dtype=acc)
                    b_ih.add_grad(sum_xp)
                    b_hh.add_grad(sum_xp if dhp is dxp else dhp2.sum(axis=0, dtype=acc))
                for dst, src in zip(grads0, dstate0):
                    dst[j] = src
                if k == 0 and not ctx.needs_input_grad:  # nothing upstream needs dL/dx
                    continue
                dx = dxp2 @ w_ih.data
                if d_in is None:
                    d_in = dx
                else:
                    d_in += dx
            # Free the caches of this layer once used: each forward serves one backward.
            caches[k] = None
            if d_in is None:
                d = None
                continue
            d = d_in.reshape(length, n, d_in.shape[-1])
        ctx.caches = None
        ctx.grad_h0 = grads0[0]
        if self._num_states == 2:
            ctx.grad_c0 = grads0[1]
        if d is None:
            return None
        return np.ascontiguousarray(d.transpose(1, 0, 2)) if self.batch_first else d

    # One hidden state (RNN, GRU); LSTM overrides both for (h, c).
    def forward(self, ctx: Context, x: np.ndarray, h0: np.ndarray | None = None) -> Any:
        return self._run(ctx, x, (h0,))

    def backward(self, ctx: Context, grad_out: Any, grad_h_n: np.ndarray | None = None) -> np.ndarray | None:
        grad_out, grad_h_n = self._split_grad(grad_out, grad_h_n)
        return self._run_backward(ctx, grad_out, (grad_h_n,))

    @property
    def grad_h0(self) -> np.ndarray | None:
        """``dL/dh0`` ``(D*num_layers, N, H)`` of the last manual-form call (``ctx.grad_h0`` of any call)."""
        return manual_grad(self, "grad_h0")

    def _split_grad(self, grad_out: Any, grad_state: Any) -> tuple[Any, Any]:
        if self.output == "both" and isinstance(grad_out, (tuple, list)) and grad_state is None:
            if len(grad_out) != 2:
                raise ShapeError(
                    f"{self.describe()}: backward() expected (grad_output, grad_state) for the outputs "
                    f"(output, state) of output='both', got a {type(grad_out).__name__} of {len(grad_out)}"
                )
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
