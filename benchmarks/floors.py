"""GEMM floors: the matrix products of one step, timed alone on preallocated float32 arrays.

:func:`gemm_floor` times a list of ``(m, k, n)`` products -- each in whichever
of its two layouts (``A B`` or ``(B^T A^T)^T``) BLAS runs faster -- and is the
floor of the model, layer (``benchmarks.cases_layers``) and attention
(``benchmarks.cases_attention``) cases. :func:`gemm_shapes` lists the products
our lowering performs for one step of a model of ``benchmarks.cases_models``
(no input gradient for the first layer, as PyTorch), and the ``*_floor``
functions at the end are those cases' ``floor`` implementations.

Every function here that a case names takes ``quick`` and returns a callable
that runs one round and returns milliseconds per step. NumPy is imported
inside the functions, in the worker subprocess.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from benchmarks.cases_models import BATCHES, MODELS, QUICK_BATCHES


def _conv(n: int, c: int, hw: int, o: int, k: int, pad: int, first: bool) -> dict[str, list[tuple[int, ...]]]:
    """im2col products of a stride-1 conv as ``(m, k, n)`` triples: forward, dW, dX."""
    out = hw + 2 * pad - k + 1
    p, kk = n * out * out, c * k * k
    return {"forward": [(p, kk, o)], "dw": [(o, p, kk)], "dx": [] if first else [(p, o, kk)]}


def _linear(n: int, i: int, o: int, first: bool) -> dict[str, list[tuple[int, ...]]]:
    return {"forward": [(n, i, o)], "dw": [(o, n, i)], "dx": [] if first else [(n, o, i)]}


def gemm_shapes(model: str, train: bool) -> list[tuple[int, ...]]:
    """The ``(m, k, n)`` matrix products of one step of ``model`` (forward only for inference)."""
    n = MODELS[model]["batch"]
    if model == "mlp":
        layers = [_linear(n, 784, 512, True), _linear(n, 512, 256, False), _linear(n, 256, 10, False)]
    elif model in ("lenet", "lenet_bn"):
        layers = [_conv(n, 1, 28, 6, 5, 2, True), _conv(n, 6, 14, 16, 5, 0, False)]
        layers += [_linear(n, 400, 120, False), _linear(n, 120, 84, False), _linear(n, 84, 10, False)]
    elif model == "fashion_cnn":
        layers = [_conv(n, 1, 28, 16, 3, 1, True), _conv(n, 16, 14, 32, 3, 1, False)]
        layers += [_linear(n, 1568, 128, False), _linear(n, 128, 10, False)]
    else:
        raise ValueError(f"unknown model {model!r}")
    shapes = [s for layer in layers for s in layer["forward"]]
    if train:
        shapes += [s for layer in layers for s in layer["dw"] + layer["dx"]]
    return shapes


def gemm_floor(shapes: list[tuple[int, ...]], steps: int) -> Callable[[], float]:
    """Time ``steps`` repetitions of the products ``shapes`` on preallocated arrays (ms per step).

    Each ``(m, k, n)`` product runs as ``C = A B`` or as its transpose
    ``C^T = B^T A^T``, whichever BLAS computes faster on this machine (chosen
    once, at setup), so the floor is the best either layout can do.
    """
    import numpy as np

    rng = np.random.default_rng(0)

    def arrays(m: int, k: int, n: int) -> tuple[Any, Any, Any]:
        return (
            rng.standard_normal((m, k), dtype=np.float32),
            rng.standard_normal((k, n), dtype=np.float32),
            np.empty((m, n), dtype=np.float32),
        )

    def cost(a: Any, b: Any, out: Any) -> float:
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            np.matmul(a, b, out=out)
            best = min(best, time.perf_counter() - start)
        return best

    operands = []
    for m, k, n in shapes:
        straight, transposed = arrays(m, k, n), arrays(n, k, m)
        operands.append(straight if cost(*straight) <= cost(*transposed) else transposed)

    def run() -> float:
        start = time.perf_counter()
        for _ in range(steps):
            for a, b, out in operands:
                np.matmul(a, b, out=out)
        return (time.perf_counter() - start) * 1e3 / steps

    return run


def _floor(model: str, train: bool, quick: bool) -> Callable[[], float]:
    return gemm_floor(gemm_shapes(model, train), QUICK_BATCHES if quick else BATCHES)


# -- the model cases' floors (``module:function`` specs need plain names) ------


def mlp_train_floor(quick: bool) -> Callable[[], float]:
    return _floor("mlp", True, quick)


def mlp_predict_floor(quick: bool) -> Callable[[], float]:
    return _floor("mlp", False, quick)


def lenet_train_floor(quick: bool) -> Callable[[], float]:
    return _floor("lenet", True, quick)


def lenet_predict_floor(quick: bool) -> Callable[[], float]:
    return _floor("lenet", False, quick)


def fashion_train_floor(quick: bool) -> Callable[[], float]:
    return _floor("fashion_cnn", True, quick)


def fashion_threads_train_floor(quick: bool) -> Callable[[], float]:
    return _floor("fashion_cnn", True, quick)
