"""Built-in plugin: the kernel workloads ``framework kernels build`` runs (:mod:`framework.runtime.ahead`).

Each workload calls the built-in layers that have compiled kernels the ways
the layers call them: forward in training and in evaluation, backward with
and without the input's gradient, with and without a bias, in float32 and
float64, and ``BatchNorm`` on the shards of ``fit(threads=2)``. The build
compiles ahead of time each kind of arguments these calls gave the kernels.
The inputs are small: what counts is their kinds, not their sizes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from framework.registry.hookspecs import hookimpl
from framework.runtime.dtype import default_dtype

DTYPES = (np.float32, np.float64)


def _step(layer: Any, x: np.ndarray, needs_input_grad: bool = True) -> None:
    """One forward in training and its backward, then one forward in evaluation."""
    layer.needs_input_grad = needs_input_grad
    y = layer(x, training=True)
    layer.backward(np.ones_like(y))
    layer(x, training=False)


def convolutions() -> None:
    """``Conv2d`` per sample (2 channels) and batch-last (8 channels, 72 rows of columns), ``Conv1d``."""
    from plugins.conv import Conv1d, Conv2d

    rng = np.random.default_rng(0)
    for dtype in DTYPES:
        with default_dtype(dtype):
            for conv in (Conv2d(2, 3, 3, padding=1), Conv2d(8, 4, 3), Conv2d(8, 4, 3, bias=False)):
                for needs_input_grad in (True, False):
                    x = rng.standard_normal((2, conv.in_channels, 8, 8)).astype(dtype)
                    _step(conv, x, needs_input_grad)
            _step(Conv1d(8, 4, 9), rng.standard_normal((2, 8, 12)).astype(dtype))


def pooling() -> None:
    """``MaxPool2d(2)``: the forward with and without the winners' offsets, the backward."""
    from plugins.pooling import MaxPool2d

    rng = np.random.default_rng(1)
    for dtype in DTYPES:
        _step(MaxPool2d(2), rng.standard_normal((2, 3, 8, 9)).astype(dtype))


def normalization() -> None:
    """``BatchNorm`` on 2-D to 4-D inputs, with and without affine, in ``fit(threads=2)``; ``LayerNorm``."""
    from framework.models.sequential import Sequential
    from plugins.layer_norm import LayerNorm
    from plugins.normalization import BatchNorm

    rng = np.random.default_rng(2)
    for dtype in DTYPES:
        with default_dtype(dtype):
            for shape in ((16, 3), (16, 3, 9), (16, 3, 4, 4)):
                for affine in (True, False):
                    _step(BatchNorm(3, affine=affine), rng.standard_normal(shape).astype(dtype))
            for shape in ((4, 16), (2, 3, 16)):
                _step(LayerNorm(16), rng.standard_normal(shape).astype(dtype))
                _step(LayerNorm(16, elementwise_affine=False), rng.standard_normal(shape).astype(dtype))
            model = Sequential([BatchNorm(3)])
            model.compile("sgd", loss="mse")
            x = rng.standard_normal((32, 3, 4, 4)).astype(dtype)
            model.fit(x, x, epochs=1, batch_size=32, verbose=0, threads=2)


def activations() -> None:
    """Exact ``GELU`` in float32 (the one compiled activation): C- and Fortran-ordered input, with and
    without its slope (training and evaluation)."""
    from plugins.activation_fns import GELU

    x = np.random.default_rng(4).standard_normal((6, 5)).astype(np.float32)
    for array in (x, np.asfortranarray(x)):
        _step(GELU(), array)


def batch_last_runs() -> None:
    """A ``Sequential`` passing batch-last activations (:mod:`framework.models.layouts`): ``fit``, with
    and without threads, and ``predict``."""
    from framework.layers import BatchNorm, Conv2d, Flatten, Linear, MaxPool2d, ReLU
    from framework.models import layouts
    from framework.models.sequential import Sequential

    rng = np.random.default_rng(3)
    for dtype in DTYPES:
        with default_dtype(dtype), layouts.using("always"):
            model = Sequential(
                [
                    Conv2d(8, 8, 3, padding=1),
                    BatchNorm(8),
                    ReLU(),
                    MaxPool2d(2),
                    Conv2d(8, 4, 3, padding=1, bias=False, activation="relu"),
                    MaxPool2d(2),
                    Flatten(),
                    Linear(16, 2),
                ]
            )
            model.compile("sgd", loss="cross_entropy")
            x, y = rng.standard_normal((8, 8, 9, 9)).astype(dtype), rng.integers(0, 2, 8)
            for threads in (None, 2):
                model.fit(x, y, epochs=1, batch_size=8, verbose=0, threads=threads)
            model.predict(x)


@hookimpl
def register_kernel_workloads(register: Any) -> None:
    register("convolutions", convolutions)
    register("pooling", pooling)
    register("normalization", normalization)
    register("activations", activations)
    register("batch-last runs", batch_last_runs)
