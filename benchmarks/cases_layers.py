"""Single-layer cases: one forward and one backward of Conv2d, BatchNorm and MaxPool2d.

The shapes are those of the Fashion-MNIST example CNN's second block at batch
64. Each round runs ``REPEATS`` forward+backward pairs (training mode, the
parameter gradients zeroed before each) and returns milliseconds per pair.
PyTorch gets an input that requires a gradient, so it computes ``dL/dx`` as
the framework does.

Our layer runs under the same heap setting ``fit`` applies
(:func:`framework.training.loop.keep_freed_memory`: glibc keeps freed memory for
reuse), so a call reuses the previous call's temporaries instead of faulting
fresh pages in; without it the case would time glibc's page faults as much as
the layer (``FRAMEWORK_KEEP_HEAP=0`` measures that).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from benchmarks.case import Case

REPEATS = 20
QUICK_REPEATS = 2

LAYERS = {
    "conv2d": {"input": (64, 16, 14, 14), "title": "Conv2d(16, 32, 3, padding=1) on 64x16x14x14"},
    "batchnorm": {"input": (64, 32, 14, 14), "title": "BatchNorm(32) on 64x32x14x14"},
    "maxpool2d": {"input": (64, 16, 28, 28), "title": "MaxPool2d(2) on 64x16x28x28"},
}


def _arrays(layer: str) -> tuple[Any, Any, Any]:
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.standard_normal(LAYERS[layer]["input"], dtype=np.float32)
    return rng, x, np.float32


def _ours(layer: str, quick: bool) -> Callable[[], float]:
    from framework.layers import BatchNorm, Conv2d, MaxPool2d
    from framework.training.loop import keep_freed_memory

    keep_freed_memory()
    rng, x, dtype = _arrays(layer)
    module = {
        "conv2d": lambda: Conv2d(16, 32, 3, padding=1),
        "batchnorm": lambda: BatchNorm(32),
        "maxpool2d": lambda: MaxPool2d(2),
    }[layer]()
    grad = rng.standard_normal(module.forward(x).shape, dtype=dtype)
    module.backward(grad)
    repeats = QUICK_REPEATS if quick else REPEATS

    def run() -> float:
        start = time.perf_counter()
        for _ in range(repeats):
            module.zero_grad()
            module.forward(x)
            module.backward(grad)
        return (time.perf_counter() - start) * 1e3 / repeats

    return run


def _torch(layer: str, quick: bool) -> Callable[[], float]:
    import torch
    from torch import nn

    rng, x_np, dtype = _arrays(layer)
    module = {
        "conv2d": lambda: nn.Conv2d(16, 32, 3, padding=1),
        "batchnorm": lambda: nn.BatchNorm2d(32),
        "maxpool2d": lambda: nn.MaxPool2d(2),
    }[layer]()
    module.train()
    x = torch.from_numpy(x_np).requires_grad_(True)
    grad = torch.from_numpy(rng.standard_normal(tuple(module(x).shape), dtype=dtype))
    repeats = QUICK_REPEATS if quick else REPEATS

    def run() -> float:
        start = time.perf_counter()
        for _ in range(repeats):
            module.zero_grad(set_to_none=True)
            x.grad = None
            module(x).backward(grad)
        return (time.perf_counter() - start) * 1e3 / repeats

    return run


def conv2d_ours(quick: bool) -> Callable[[], float]:
    return _ours("conv2d", quick)


def conv2d_torch(quick: bool) -> Callable[[], float]:
    return _torch("conv2d", quick)


def conv2d_floor(quick: bool) -> Callable[[], float]:
    from benchmarks.floors import gemm_floor

    n, c, hw, o, k = 64, 16, 14, 32, 3
    p, kk = n * hw * hw, c * k * k
    return gemm_floor([(p, kk, o), (o, p, kk), (p, o, kk)], QUICK_REPEATS if quick else REPEATS)


def batchnorm_ours(quick: bool) -> Callable[[], float]:
    return _ours("batchnorm", quick)


def batchnorm_torch(quick: bool) -> Callable[[], float]:
    return _torch("batchnorm", quick)


def maxpool2d_ours(quick: bool) -> Callable[[], float]:
    return _ours("maxpool2d", quick)


def maxpool2d_torch(quick: bool) -> Callable[[], float]:
    return _torch("maxpool2d", quick)


def _case(layer: str, floor: bool = False) -> Case:
    impls = {"ours": f"{__name__}:{layer}_ours", "torch": f"{__name__}:{layer}_torch"}
    if floor:
        impls["floor"] = f"{__name__}:{layer}_floor"
    return Case(f"{layer}_layer", LAYERS[layer]["title"] + ": forward + backward", "ms/step", impls)


CASES = [_case("conv2d", floor=True), _case("batchnorm"), _case("maxpool2d")]
