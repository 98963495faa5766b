"""Attention cases: ``MultiheadAttention`` forward+backward and one ``TransformerEncoderLayer`` step.

The shapes are issue 16's: batch 32, sequence 128, embed 128, 4 heads,
causal self-attention. The encoder block is the char model's
(``examples/char_transformer.py``): ``dim_feedforward = 4 * 128``, GELU,
pre-norm, no dropout; one training step is zeroing the gradients, forward,
backward of a fixed ``dL/dy`` and an Adam update. PyTorch gets an input that
requires a gradient (so it computes ``dL/dx`` as the framework does) and the
causal mask as ``attn_mask`` with ``is_causal=True`` (its fused causal path).

Each round runs ``REPEATS`` steps and returns milliseconds per step. The
floor is the bare float32 matrix products each step does (forward and
backward), timed on preallocated arrays by
:func:`benchmarks.floors.gemm_floor`; the head products run as one
``(N*H)``-batched matmul of each shape.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from benchmarks.case import Case

REPEATS = 10
QUICK_REPEATS = 2
N, L, E, H = 32, 128, 128, 4
FF = 4 * E
QUICK_N = 4


def _batch(quick: bool) -> int:
    return QUICK_N if quick else N


def _arrays(quick: bool) -> tuple[Any, Any]:
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.standard_normal((_batch(quick), L, E), dtype=np.float32)
    g = rng.standard_normal((_batch(quick), L, E), dtype=np.float32)
    return x, g


def _timed(step: Callable[[], None], quick: bool) -> Callable[[], float]:
    repeats = QUICK_REPEATS if quick else REPEATS

    def run() -> float:
        start = time.perf_counter()
        for _ in range(repeats):
            step()
        return (time.perf_counter() - start) * 1e3 / repeats

    return run


# -- MultiheadAttention ------------------------------------------------------------


def mha_ours(quick: bool) -> Callable[[], float]:
    from framework.layers import MultiheadAttention
    from framework.training.loop import keep_freed_memory

    keep_freed_memory()
    x, g = _arrays(quick)
    mha = MultiheadAttention(E, H)

    def step() -> None:
        mha.zero_grad()
        mha.forward(x, is_causal=True)
        mha.backward(g)

    return _timed(step, quick)


def _torch_mask(length: int) -> Any:
    import torch

    return torch.nn.Transformer.generate_square_subsequent_mask(length)


def mha_torch(quick: bool) -> Callable[[], float]:
    import torch
    from torch import nn

    x_np, g_np = _arrays(quick)
    mha = nn.MultiheadAttention(E, H, batch_first=True)
    x = torch.from_numpy(x_np).requires_grad_(True)
    g = torch.from_numpy(g_np)
    mask = _torch_mask(L)

    def step() -> None:
        mha.zero_grad(set_to_none=True)
        x.grad = None
        y, _ = mha(x, x, x, attn_mask=mask, is_causal=True, need_weights=False)
        y.backward(g)

    return _timed(step, quick)


def _attention_gemms(n: int) -> list[tuple[int, ...]]:
    """The ``(m, k, n)`` products of one multi-head self-attention forward and backward.

    Projections on ``(N*L, E)`` rows: QKV ``(NL, E, 3E)`` and out ``(NL, E, E)``
    forward; backward their weight gradients ``(3E, NL, E)``, ``(E, NL, E)`` and
    input gradients ``(NL, 3E, E)``, ``(NL, E, E)``. Per head (batch ``N*H``,
    head size ``D``): forward ``Q K^T`` and ``P V``; backward ``dV = P^T G``,
    ``dP = G V^T``, ``dQ = dZ K``, ``dK = dZ^T Q``.
    """
    rows, d, b = n * L, E // H, n * H
    proj = [(rows, E, 3 * E), (rows, E, E), (3 * E, rows, E), (E, rows, E), (rows, 3 * E, E), (rows, E, E)]
    heads = [(b, L, d, L), (b, L, L, d), (b, L, L, d), (b, L, d, L), (b, L, L, d), (b, L, L, d)]
    return proj + heads


def batched_gemm_floor(shapes: list[tuple[int, ...]], steps: int) -> Callable[[], float]:
    """:func:`benchmarks.floors.gemm_floor` with ``(batch, m, k, n)`` products as one batched matmul."""
    import numpy as np

    from benchmarks.floors import gemm_floor

    plain = gemm_floor([s for s in shapes if len(s) == 3], steps)
    rng = np.random.default_rng(0)
    batched = [
        (
            rng.standard_normal((b, m, k), dtype=np.float32),
            rng.standard_normal((b, k, n), dtype=np.float32),
            np.empty((b, m, n), dtype=np.float32),
        )
        for b, m, k, n in (s for s in shapes if len(s) == 4)
    ]

    def run() -> float:
        start = time.perf_counter()
        for _ in range(steps):
            for a, w, out in batched:
                np.matmul(a, w, out=out)
        batched_ms = (time.perf_counter() - start) * 1e3 / steps
        return plain() + batched_ms

    return run


def mha_floor(quick: bool) -> Callable[[], float]:
    return batched_gemm_floor(_attention_gemms(_batch(quick)), QUICK_REPEATS if quick else REPEATS)


# -- TransformerEncoderLayer -----------------------------------------------------


def _encoder_ours(quick: bool, threads: int | None) -> Callable[[], float]:
    """One Adam step of the block; with ``threads``, the batch as that many shards (``Replicas``)."""
    from framework.base.context import Context
    from framework.layers import TransformerEncoderLayer
    from framework.optimizers import Adam
    from framework.training.loop import keep_freed_memory
    from framework.training.replicas import Replicas

    keep_freed_memory()
    x, g = _arrays(quick)
    block = TransformerEncoderLayer(E, H, FF, dropout=0.0, activation="gelu", norm_first=True)
    opt = Adam(block, learning_rate=1e-4)
    # the replicas' threads are held for the worker's life
    runner: Any = block if threads is None else Replicas(block, threads=threads).__enter__()

    def step() -> None:
        opt.zero_grad()
        ctx = Context(True)
        runner.forward(ctx, x, is_causal=True)
        runner.backward(ctx, g)
        opt.step()

    return _timed(step, quick)


def encoder_ours(quick: bool) -> Callable[[], float]:
    return _encoder_ours(quick, None)


def encoder_threads_ours(quick: bool) -> Callable[[], float]:
    """The same step with the batch as two shards on two threads (``framework.training.replicas``)."""
    return _encoder_ours(quick, 2)


def encoder_threads_torch(quick: bool) -> Callable[[], float]:
    return encoder_torch(quick)


def encoder_threads_floor(quick: bool) -> Callable[[], float]:
    return encoder_floor(quick)


def encoder_torch(quick: bool) -> Callable[[], float]:
    import torch
    from torch import nn

    x_np, g_np = _arrays(quick)
    block = nn.TransformerEncoderLayer(
        E, H, FF, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
    )
    block.train()
    opt = torch.optim.Adam(block.parameters(), lr=1e-4)
    x = torch.from_numpy(x_np).requires_grad_(True)
    g = torch.from_numpy(g_np)
    mask = _torch_mask(L)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        x.grad = None
        block(x, src_mask=mask, is_causal=True).backward(g)
        opt.step()

    return _timed(step, quick)


def encoder_floor(quick: bool) -> Callable[[], float]:
    rows = _batch(quick) * L
    ff = [(rows, E, FF), (rows, FF, E), (FF, rows, E), (E, rows, FF), (rows, FF, E), (rows, E, FF)]
    return batched_gemm_floor(_attention_gemms(_batch(quick)) + ff, QUICK_REPEATS if quick else REPEATS)


def _case(name: str, title: str) -> Case:
    impls = {i: f"{__name__}:{name}_{i}" for i in ("ours", "torch", "floor")}
    return Case(f"attention_{name}", title, "ms/step", impls)


CASES = [
    _case("mha", f"MultiheadAttention({E}, {H}) causal on {N}x{L}x{E}: forward + backward"),
    _case(
        "encoder",
        f"TransformerEncoderLayer({E}, {H}, {FF}, gelu, pre-norm) causal on {N}x{L}x{E}: Adam step",
    ),
    _case("encoder_threads", "the same step as two shards of the batch on two threads (Replicas)"),
]
