"""Built-in plugin: Linear, Identity, Dropout, Flatten and Activation layers."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from framework.base.context import Context
from framework.base.layer import Layer, format_shape
from framework.base.parameter import Parameter
from framework.base.validation import check_bool as _check_bool
from framework.base.validation import positive_int as _positive_int
from framework.base.validation import resolve_activation as _activation
from framework.base.validation import resolve_initializer as _initializer
from framework.errors import ConfigError, ShapeError
from framework.registry.hookspecs import hookimpl
from framework.registry.namespace import serialize
from framework.runtime import blas
from framework.runtime.dtype import get_default_dtype
from framework.runtime.random import get_rng

__all__ = ["Linear", "Identity", "Dropout", "Flatten", "Activation"]


class Linear(Layer):
    """Fully connected layer: ``y = activation(x W^T + b)``.

    Args:
        input_size: size of each input's last axis; ``None`` infers it from the
            first input (the weight is created then).
        output_size: size of each output's last axis.
        activation: an activation name (``"relu"``), class or instance, or
            ``None`` for none.
        bias: whether to learn an additive bias; ``False`` leaves ``bias`` as
            ``None``.
        weight_init: initializer name, class or instance for ``weight``
            (default He/Kaiming uniform with the activation's gain).
        bias_init: initializer for ``bias`` (default zeros).
        name: layer name.

    Shape:
        - Input: ``(N, *, input_size)``
        - Output: ``(N, *, output_size)``

    Attributes:
        weight: ``Parameter`` of shape ``(output_size, input_size)``.
        bias: ``Parameter`` of shape ``(output_size,)`` or ``None``.

    Gradient:
        With ``Z = X W^T + b`` and ``G = dL/dZ`` (after the activation's
        backward): ``dL/dW = G^T X``, ``dL/db = sum over samples of G``,
        ``dL/dX = G W``. The batch mean's ``1/N`` is already in ``G``. For a
        2-D input, ``Y`` is computed as ``(W X^T)^T`` and returned F-ordered
        (the transpose of a C-ordered array), which BLAS computes fastest and
        the next Linear consumes without a copy; ``dL/dX`` comes back in
        ``X``'s layout (``(W^T G^T)^T`` for an F-ordered ``X``), so element-wise
        work upstream never mixes C and F operands. With
        ``needs_input_grad = False`` (the first layer during ``fit``) the
        ``G W`` product is skipped and ``backward`` returns ``None``.

    Example:
        >>> import numpy as np
        >>> from framework.layers import Linear
        >>> layer = Linear(3, 4, activation="relu")
        >>> layer(np.ones((2, 3), dtype=np.float32)).shape
        (2, 4)
    """

    returns_fresh_grad = True
    float_input = True  # an integer or boolean input is cast to the default float dtype

    def __init__(
        self,
        input_size: int | None = None,
        output_size: int | None = None,
        activation: Any = None,
        bias: bool = True,
        weight_init: Any = "kaiming_uniform",
        bias_init: Any = "zeros",
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        if output_size is None:
            raise ConfigError(
                "Linear: output_size is required, e.g. Linear(784, 128) or Linear(output_size=128)"
            )
        self.input_size = _positive_int("Linear", "input_size", input_size, allow_none=True)
        self.output_size = _positive_int("Linear", "output_size", output_size)
        self.activation = _activation("Linear", activation)
        self.use_bias = _check_bool("Linear", "bias", bias)
        self.weight_init = _initializer("Linear", "weight_init", weight_init)
        self.bias_init = _initializer("Linear", "bias_init", bias_init)
        self.weight: Parameter | None = None
        self.bias: Parameter | None = None
        if self.input_size is not None:
            self.build((None, self.input_size))

    def build(self, input_shape: Any) -> None:
        if not isinstance(input_shape, tuple) or len(input_shape) < 2:
            raise ShapeError(
                f"{self.describe()} expected input of shape (N, *, in_features), "
                f"got {format_shape(input_shape)}"
            )
        n_in = input_shape[-1]
        if self.input_size is not None and n_in != self.input_size:
            raise ShapeError(
                f"{self.describe()} expected input of shape (N, *, {self.input_size}), "
                f"got {format_shape(input_shape)}"
            )
        self.input_size = int(n_in)
        dtype = get_default_dtype()
        gain = getattr(self.activation, "gain", None)
        self.weight = Parameter(self.weight_init((self.output_size, self.input_size), dtype=dtype, gain=gain))
        if self.use_bias:
            self.bias = Parameter(self.bias_init((self.output_size,), dtype=dtype))
        super().build(input_shape)

    def _check_input(self, x: Any) -> None:
        shape = getattr(x, "shape", None)
        if shape is None or len(shape) < 2 or shape[-1] != self.input_size:
            raise ShapeError(
                f"{self.describe()} expected input of shape (N, *, {self.input_size}), "
                f"got {format_shape(shape)}"
            )

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        ctx.x = x
        w = self.weight.data
        # For a batch of vectors the product is computed transposed, W x^T, into a
        # C-ordered (out, N) array whose transpose is returned: BLAS writes that
        # layout fastest, and the next Linear's W x^T then reads a C-ordered x^T.
        if x.ndim == 2:
            y = np.matmul(w, x.T).T
        else:  # (N, *, in) as one (rows, in) product: np.matmul would make one BLAS call per sample
            y = (x.reshape(-1, x.shape[-1]) @ w.T).reshape(*x.shape[:-1], w.shape[0])
        if self.bias is not None:
            y += self.bias.data
        return self.activation_forward(ctx, self.activation, y)

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        g = self.activation_backward(ctx, self.activation, grad_out)
        x = ctx.x
        g2 = g.reshape(-1, self.output_size)
        x2 = x.reshape(-1, self.input_size)
        self.weight.add_grad_product(g2.T, x2)
        if self.bias is not None:
            out = self.bias._grad_target()
            if out is None:
                self.bias.grad += blas.sum_rows(g2)
            else:
                blas.sum_rows(g2, out=out)
        if not ctx.needs_input_grad:  # the first layer in fit: nothing upstream to feed
            return None
        if g.ndim == 2 and not x.flags.c_contiguous:  # dL/dx in x's layout: F-ordered as (W^T G^T)^T
            return np.matmul(self.weight.data.T, g.T).T
        return (g2 @ self.weight.data).reshape(x.shape)

    def output_shape(self, input_shape: Any) -> Any:
        if len(input_shape) < 2 or (self.input_size is not None and input_shape[-1] != self.input_size):
            raise ShapeError(
                f"{self.describe()} expected input of shape (N, *, {self.input_size}), "
                f"got {format_shape(input_shape)}"
            )
        return (*input_shape[:-1], self.output_size)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "input_size": self.input_size,
            "output_size": self.output_size,
            "activation": serialize("activations", self.activation),
            "bias": self.use_bias,
            "weight_init": serialize("initializers", self.weight_init),
            "bias_init": serialize("initializers", self.bias_init),
        }

    def extra_repr(self) -> str:
        act = f", activation={serialize('activations', self.activation)!r}" if self.activation else ""
        bias = "" if self.use_bias else ", bias=False"
        return f"{self.input_size}, {self.output_size}{act}{bias}"


class Identity(Layer):
    """Returns its input unchanged; its gradient passes straight through.

    Shape:
        - Input: any ``(N, *)``; Output: the same.
    """

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        self.input_spec = None  # any shape, call after call (one Identity may serve several widths)

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        return x

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        return grad_out


class Dropout(Layer):
    """Zeroes each element with probability ``p`` during training (inverted dropout).

    In training mode the kept elements are scaled by ``1 / (1 - p)`` so the
    expected activation is unchanged; in eval mode the layer is the identity.

    Args:
        p: probability of zeroing an element, in ``[0, 1)``.
        seed: seed of this layer's own generator; ``None`` draws masks from the
            framework's global generator (see ``framework.set_seed``).

    Shape:
        - Input: any ``(N, *)``; Output: the same.

    Gradient:
        ``y = x * m / (1 - p)`` with ``m`` the 0/1 mask, so
        ``dL/dx = dL/dy * m / (1 - p)``: only kept units pass gradient.
    """

    returns_fresh_grad = True
    float_input = True  # an integer or boolean input is cast to the default float dtype

    def __init__(self, p: float = 0.5, seed: int | None = None, *, name: str | None = None) -> None:
        super().__init__(name=name)
        if (
            isinstance(p, bool)
            or not isinstance(p, (int, float, np.integer, np.floating))
            or not 0.0 <= p < 1.0
        ):
            raise ConfigError(f"Dropout: p must be a probability in [0, 1), got {p!r}")
        self.p = float(p)
        self.seed = seed
        self._rng = np.random.default_rng(seed) if seed is not None else None

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        self.input_spec = None  # any shape, call after call

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        if not ctx.training or self.p == 0.0:
            ctx.scaled_mask = None
            return x
        rng = self._rng if self._rng is not None else get_rng()
        dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else get_default_dtype()
        keep = rng.random(x.shape, dtype=np.float32 if dtype == np.float16 else dtype) >= self.p
        mask = ctx.scaled_mask = keep.astype(dtype) * dtype.type(1.0 / (1.0 - self.p))
        return x * mask

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        mask = ctx.scaled_mask
        if mask is None:
            return grad_out
        if ctx.grad_out_writable and grad_out.dtype == mask.dtype:
            return np.multiply(grad_out, mask, out=grad_out)
        return grad_out * mask

    def get_config(self) -> dict[str, Any]:
        config = {**super().get_config(), "p": self.p}
        if self.seed is not None:
            config["seed"] = self.seed
        return config


class Flatten(Layer):
    """Flattens axes ``start_dim`` .. ``end_dim`` into one (PyTorch's ``nn.Flatten``).

    Args:
        start_dim: first axis to flatten (default 1, keeping the batch axis).
        end_dim: last axis to flatten (default -1).

    Shape:
        - Input: ``(N, C, H, W)``; Output: ``(N, C*H*W)`` with the defaults.
    """

    def __init__(self, start_dim: int = 1, end_dim: int = -1, *, name: str | None = None) -> None:
        super().__init__(name=name)
        if any(isinstance(d, bool) or not isinstance(d, int) for d in (start_dim, end_dim)):
            raise ConfigError(
                f"Flatten: start_dim and end_dim must be integers, got {start_dim!r}, {end_dim!r}"
            )
        if start_dim == 0:
            raise ConfigError("Flatten: start_dim must not be 0 (the batch axis); use Reshape for that")
        self.start_dim = start_dim
        self.end_dim = end_dim

    def _axes(self, rank: int) -> tuple[int, int]:
        for arg, dim in (("start_dim", self.start_dim), ("end_dim", self.end_dim)):
            if not -rank <= dim < rank:
                raise ShapeError(
                    f"{self.describe()}: {arg}={dim} is out of range for a rank-{rank} input "
                    f"(expected {-rank} <= {arg} < {rank})"
                )
        start = self.start_dim % rank
        end = self.end_dim % rank
        if start == 0 or end < start:
            raise ShapeError(
                f"{self.describe()}: cannot flatten axes {self.start_dim}..{self.end_dim} "
                f"of a rank-{rank} input"
            )
        return start, end

    def build(self, input_shape: Any) -> None:
        self._axes(len(input_shape))
        super().build(input_shape)
        self.input_spec = None  # any shape: forward checks the axes against each input's rank

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        ctx.in_shape = x.shape
        start, end = self._axes(x.ndim)
        # the size spelt out, not -1: an empty batch (N = 0) has no size to infer it from
        return x.reshape(*x.shape[:start], math.prod(x.shape[start : end + 1]), *x.shape[end + 1 :])

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        return grad_out.reshape(ctx.in_shape)

    def output_shape(self, input_shape: Any) -> Any:
        start, end = self._axes(len(input_shape))
        middle = input_shape[start : end + 1]
        size = None if any(d is None for d in middle) else math.prod(middle)
        return (*input_shape[:start], size, *input_shape[end + 1 :])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "start_dim": self.start_dim, "end_dim": self.end_dim}


class Activation(Layer):
    """Applies a registered activation as a layer: ``Activation("relu")``.

    Args:
        activation: an activation name, class or instance.

    Shape:
        - Input: any ``(N, *)``; Output: the same.
    """

    def __init__(self, activation: Any, *, name: str | None = None) -> None:
        super().__init__(name=name)
        if activation is None:
            raise ConfigError("Activation: activation is required, e.g. Activation('relu')")
        self.activation = _activation("Activation", activation)

    @property
    def gain(self) -> float | None:
        return getattr(self.activation, "gain", None)

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        self.input_spec = None

    def forward(self, ctx: Context, x: np.ndarray) -> np.ndarray:
        return self.activation_forward(ctx, self.activation, x)

    def backward(self, ctx: Context, grad_out: np.ndarray) -> np.ndarray:
        return self.activation_backward(ctx, self.activation, grad_out)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "activation": serialize("activations", self.activation)}


@hookimpl
def register_layers(register: Any) -> None:
    register(Linear, aliases=("Dense",))
    register(Identity)
    register(Dropout)
    register(Flatten)
    register(Activation)
