"""Built-in plugin: the merge layers Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate.

Each takes a list of arrays (``layer([a, b, ...])``), in a functional model a
list of placeholders, and returns one array. Backward returns one gradient
per input, in order.

Every layer is in the context form: what a backward needs (the inputs of a
product, the winners of a maximum, the split points of a concatenation) is
kept on the per-call ``ctx``, so one merge layer may be shared by several
places of a graph.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from framework.base.context import Context
from framework.base.layer import Layer, format_shape
from framework.errors import ConfigError, ShapeError
from framework.registry.hookspecs import hookimpl
from framework.runtime.dtype import get_default_dtype

__all__ = ["Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate"]


def _sum(x: list[np.ndarray]) -> np.ndarray:
    """``x_1 + ... + x_k`` in a new array of the inputs' common dtype (integer and float: float)."""
    out = np.add(x[0], x[1], dtype=np.result_type(*x))
    for a in x[2:]:
        out += a
    return out


class _Merge(Layer):
    """Shared checks: a list of at least two inputs, all of one batch size."""

    def _shapes(self, input_shape: Any) -> list[tuple[int | None, ...]]:
        if not isinstance(input_shape, list) or len(input_shape) < 2:
            raise ShapeError(
                f"{self.describe()} expects a list of at least 2 inputs, got {format_shape(input_shape)}"
            )
        return [tuple(s) for s in input_shape]

    def _check_batch(self, x: list[np.ndarray]) -> None:
        """Refuse inputs of different batch sizes (NumPy would broadcast a batch of 1 silently)."""
        sizes = [a.shape[0] for a in x]
        if any(n != sizes[0] for n in sizes[1:]):
            shapes = ", ".join(format_shape(a.shape) for a in x)
            raise ShapeError(
                f"{self.describe()} needs inputs of one batch size, got batch sizes {sizes} "
                f"(input shapes {shapes})"
            )

    def build(self, input_shape: Any) -> None:
        self.output_shape(input_shape)
        super().build(input_shape)


class _Elementwise(_Merge):
    float_input = True  # integers and booleans are cast: True + True is 2, uint8 1 - 3 is -2

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        # one merge may serve inputs of other shapes call after call (as PyTorch's and Keras's):
        # only their number is fixed; _check_batch compares the shapes of each call
        self.input_spec = [(None,) * len(s) for s in self._shapes(input_shape)]

    def _check_batch(self, x: list[np.ndarray]) -> None:
        """One shape for every input (NumPy would broadcast ``(N, 1)`` against ``(N, 4)`` silently)."""
        super()._check_batch(x)
        for i, a in enumerate(x[1:], start=1):
            if a.shape != x[0].shape:
                raise ShapeError(
                    f"{self.describe()} needs inputs of one shape; input 0 is {format_shape(x[0].shape)}, "
                    f"input {i} is {format_shape(a.shape)}"
                )

    def output_shape(self, input_shape: Any) -> Any:
        shapes = self._shapes(input_shape)
        first = shapes[0]
        for i, s in enumerate(shapes[1:], start=1):
            if len(s) != len(first) or any(
                a is not None and b is not None and a != b for a, b in zip(first[1:], s[1:])
            ):
                raise ShapeError(
                    f"{self.describe()} needs inputs of one shape; input 0 is {format_shape(first)}, "
                    f"input {i} is {format_shape(s)}"
                )
        return first


class Add(_Elementwise):
    """Elementwise sum of its inputs: ``y = x_1 + x_2 + ... + x_k``.

    Shape:
        - Input: a list of ``k >= 2`` arrays of one shape ``(N, *)``.
        - Output: ``(N, *)``.

    Gradient:
        ``dL/dx_i = dL/dy`` for every input.

    Example:
        >>> import numpy as np
        >>> from framework.layers import Add
        >>> Add()([np.ones((2, 3)), np.ones((2, 3))])[0, 0]
        2.0
    """

    def forward(self, ctx: Context, x: list[np.ndarray]) -> np.ndarray:
        self._check_batch(x)
        ctx.n = len(x)
        return _sum(x)

    def backward(self, ctx: Context, grad_out: np.ndarray) -> list[np.ndarray]:
        # one array per input: a consumer may modify its gradient in place
        return [grad_out] + [grad_out.copy() for _ in range(ctx.n - 1)]


class Multiply(_Elementwise):
    """Elementwise product of its inputs: ``y = x_1 * x_2 * ... * x_k``.

    Shape:
        - Input: a list of ``k >= 2`` arrays of one shape ``(N, *)``.
        - Output: ``(N, *)``.

    Gradient:
        ``dL/dx_i = dL/dy * prod_{j != i} x_j`` (products of the other inputs,
        computed with prefix and suffix products, so zeros are handled).
    """

    def forward(self, ctx: Context, x: list[np.ndarray]) -> np.ndarray:
        self._check_batch(x)
        ctx.x = list(x)
        out = np.multiply(x[0], x[1], dtype=np.result_type(*x))
        for a in x[2:]:
            out *= a
        return out

    def backward(self, ctx: Context, grad_out: np.ndarray) -> list[np.ndarray]:
        xs = ctx.x
        if len(xs) == 2:
            return [grad_out * xs[1], grad_out * xs[0]]
        k = len(xs)
        prefix: list[Any] = [None] * k
        running = None
        for i in range(k):
            prefix[i] = running
            running = xs[i] if running is None else running * xs[i]
        grads: list[Any] = [None] * k
        running = None
        for i in range(k - 1, -1, -1):
            others = prefix[i] if running is None else (running if prefix[i] is None else prefix[i] * running)
            grads[i] = grad_out * others
            running = xs[i] if running is None else running * xs[i]
        return grads


class Subtract(_Elementwise):
    """Difference of exactly two inputs: ``y = x_1 - x_2``.

    Shape:
        - Input: a list of 2 arrays of one shape ``(N, *)``.
        - Output: ``(N, *)``.

    Gradient:
        ``dL/dx_1 = dL/dy``, ``dL/dx_2 = -dL/dy``.
    """

    def output_shape(self, input_shape: Any) -> Any:
        if isinstance(input_shape, list) and len(input_shape) != 2:
            raise ShapeError(f"{self.describe()} takes exactly 2 inputs, got {len(input_shape)}")
        return super().output_shape(input_shape)

    def forward(self, ctx: Context, x: list[np.ndarray]) -> np.ndarray:
        self._check_batch(x)
        return x[0] - x[1]

    def backward(self, ctx: Context, grad_out: np.ndarray) -> list[np.ndarray]:
        return [grad_out, -grad_out]


class Average(_Elementwise):
    """Elementwise mean of its inputs: ``y = (x_1 + ... + x_k) / k``.

    Shape:
        - Input: a list of ``k >= 2`` arrays of one shape ``(N, *)``.
        - Output: ``(N, *)``; integer inputs average in the default float dtype.

    Gradient:
        ``dL/dx_i = dL/dy / k`` for every input.
    """

    def forward(self, ctx: Context, x: list[np.ndarray]) -> np.ndarray:
        self._check_batch(x)
        ctx.n = len(x)
        out = _sum(x)
        if not np.issubdtype(out.dtype, np.floating):  # the mean of integers is not an integer
            out = out.astype(get_default_dtype())
        out *= out.dtype.type(1.0 / len(x))
        return out

    def backward(self, ctx: Context, grad_out: np.ndarray) -> list[np.ndarray]:
        g = grad_out * grad_out.dtype.type(1.0 / ctx.n)
        return [g] + [g.copy() for _ in range(ctx.n - 1)]


class _Extremum(_Elementwise):
    _reduce: Any = None
    _arg: Any = None

    def forward(self, ctx: Context, x: list[np.ndarray]) -> np.ndarray:
        self._check_batch(x)
        stacked = np.stack(x)
        ctx.winner = type(self)._arg(stacked, axis=0)
        ctx.n = len(x)
        return type(self)._reduce(stacked, axis=0)

    def backward(self, ctx: Context, grad_out: np.ndarray) -> list[np.ndarray]:
        zero = np.zeros((), dtype=grad_out.dtype)
        return [np.where(ctx.winner == i, grad_out, zero) for i in range(ctx.n)]


class Maximum(_Extremum):
    """Elementwise maximum of its inputs: ``y = max(x_1, ..., x_k)``.

    Shape:
        - Input: a list of ``k >= 2`` arrays of one shape ``(N, *)``.
        - Output: ``(N, *)``.

    Gradient:
        ``dL/dy`` goes to the input holding the maximum (the first one on ties);
        the others get zero there.
    """

    _reduce = staticmethod(np.max)
    _arg = staticmethod(np.argmax)


class Minimum(_Extremum):
    """Elementwise minimum of its inputs: ``y = min(x_1, ..., x_k)``.

    Shape:
        - Input: a list of ``k >= 2`` arrays of one shape ``(N, *)``.
        - Output: ``(N, *)``.

    Gradient:
        ``dL/dy`` goes to the input holding the minimum (the first one on ties).
    """

    _reduce = staticmethod(np.min)
    _arg = staticmethod(np.argmin)


class Concatenate(_Merge):
    """Joins its inputs along ``axis`` (default 1, the channel / feature axis).

    Args:
        axis: the axis to join along; not the batch axis 0 (negative counts
            from the end).

    Shape:
        - Input: a list of arrays equal in every size but ``axis``.
        - Output: the same shape with ``axis`` of size ``sum_i size_i``.

    Gradient:
        ``dL/dy`` split along ``axis`` at the input sizes: each input gets
        its own slice.
    """

    def __init__(self, axis: int = 1, *, name: str | None = None) -> None:
        super().__init__(name=name)
        if isinstance(axis, bool) or not isinstance(axis, int) or axis == 0:
            raise ConfigError(
                f"Concatenate: axis must be a non-zero integer (0 is the batch axis), got {axis!r}"
            )
        self.axis = axis

    def _axis(self, rank: int) -> int:
        axis = self.axis % rank if -rank <= self.axis < rank else None
        if axis is None or axis == 0:
            raise ShapeError(f"{self.describe()}: axis {self.axis} is out of range for rank-{rank} inputs")
        return axis

    def output_shape(self, input_shape: Any) -> Any:
        shapes = self._shapes(input_shape)
        rank = len(shapes[0])
        axis = self._axis(rank)
        for i, s in enumerate(shapes[1:], start=1):
            if len(s) != rank or any(
                d != axis and a is not None and b is not None and a != b
                for d, (a, b) in enumerate(zip(shapes[0], s))
            ):
                raise ShapeError(
                    f"{self.describe()} (axis={self.axis}) needs inputs equal in every size but axis "
                    f"{self.axis}; input 0 is {format_shape(shapes[0])}, input {i} is {format_shape(s)}"
                )
        sizes = [s[axis] for s in shapes]
        joined = None if any(d is None for d in sizes) else sum(sizes)
        return (*shapes[0][:axis], joined, *shapes[0][axis + 1 :])

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        # The joined axis may vary per input; only rank and the other sizes are fixed.
        axis = self._axis(len(self.input_shape[0]))
        self.input_spec = [(*s[:axis], None, *s[axis + 1 :]) for s in self.input_spec]

    def forward(self, ctx: Context, x: list[np.ndarray]) -> np.ndarray:
        self._check_batch(x)
        axis = self._axis(x[0].ndim)
        ctx.splits = np.cumsum([a.shape[axis] for a in x])[:-1]
        return np.concatenate(x, axis=axis)

    def backward(self, ctx: Context, grad_out: np.ndarray) -> list[np.ndarray]:
        return np.split(grad_out, ctx.splits, axis=self._axis(grad_out.ndim))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "axis": self.axis}


@hookimpl
def register_layers(register: Any) -> None:
    register(Add)
    register(Subtract)
    register(Multiply)
    register(Average)
    register(Maximum)
    register(Minimum)
    register(Concatenate, aliases=("Concat",))
