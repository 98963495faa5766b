"""Run under ``mpiexec -n 2``: data-parallel fit equals one process on the concatenated batches.

Each rank builds its models from a different seed (so rank 0's broadcast is
what makes them equal), trains 10 steps of per-rank batch 16 on 320 samples,
and checks (float64, 1e-10):

- MLP: the weights equal on both ranks and equal to ``fit(batch_size=32)`` in one process;
- CNN with BatchNorm (per-rank statistics): the trainable weights equal on both
  ranks and equal to one process whose step averages the gradients of the two
  halves of each batch of 32 (each half normalised with its own statistics);
- CNN with SyncBatchNorm: equal to ``fit(batch_size=32)`` of the CNN with plain
  BatchNorm in one process, running statistics included; History identical.

Prints ``OK <checks>`` on rank 0; any failure raises, which aborts the job.
"""

from __future__ import annotations

import warnings

import numpy as np

import framework
from framework import Sequential, distributed
from framework.base.context import Context
from framework.distributed import DistributedOptimizer
from framework.layers import BatchNorm, Conv2d, Flatten, Linear, MaxPool2d, ReLU, SyncBatchNorm
from framework.optimizers import SGD

framework.set_default_dtype(np.float64)
warnings.simplefilter("ignore", RuntimeWarning)  # the plain-optimizer reference runs under MPI
RANK, SIZE = distributed.rank(), distributed.size()
assert SIZE == 2, SIZE
N, BATCH, SEED, TOL = 320, 16, 7, 1e-10


def mlp() -> Sequential:
    return Sequential([Linear(12, 16), ReLU(), Linear(16, 3)])


def cnn(norm: type) -> Sequential:
    return Sequential(
        [Conv2d(1, 4, 3, padding=1), norm(4), ReLU(), MaxPool2d(2), Flatten(), Linear(4 * 4 * 4, 3)]
    )


def seeded(build: any, seed: int, input_shape: tuple[int, ...]) -> Sequential:
    framework.set_seed(seed)
    model = build()
    model.build((None, *input_shape))
    return model


def compile_(model: Sequential, distributed_: bool) -> Sequential:
    opt = SGD(0.05, momentum=0.9)
    model.compile(
        DistributedOptimizer(opt) if distributed_ else opt, loss="cross_entropy", metrics=["accuracy"]
    )
    return model


def weights(model: Sequential, buffers: bool = True) -> dict[str, np.ndarray]:
    state = model.state_dict()
    if not buffers:
        names = {name for name, _ in model.named_parameters()}
        state = {k: v for k, v in state.items() if k in names}
    return {
        k.replace("sync_batch_norm", "batch_norm"): np.array(v, dtype=np.float64) for k, v in state.items()
    }


def close(a: dict[str, np.ndarray], b: dict[str, np.ndarray], what: str) -> None:
    assert a.keys() == b.keys(), (what, sorted(a), sorted(b))
    for k in a:
        err = float(np.max(np.abs(a[k] - b[k]))) if a[k].size else 0.0
        assert err <= TOL, f"{what}: {k} differs by {err:.3g}"


def same_on_ranks(state: dict[str, np.ndarray], what: str) -> None:
    other = distributed.broadcast(state, root=1)
    close(state, other, f"{what} (rank 0 vs rank 1)")


def half_batch_reference(model: Sequential, x: np.ndarray, y: np.ndarray) -> None:
    """One process: each step averages the gradients of the two per-rank halves of the batch of 32."""
    opt = model.optimizer
    loss = model.loss
    order = np.random.default_rng(SEED).permutation(N)
    opt.bind(model)
    for step in range(N // (BATCH * SIZE)):
        window = order[step * BATCH * SIZE : (step + 1) * BATCH * SIZE]
        grads = None
        for r in range(SIZE):
            idx = window[r * BATCH : (r + 1) * BATCH]
            model.zero_grad()
            ctx = Context(True)
            out = model.forward(ctx, x[idx])
            loss.forward(out, y[idx])
            model.backward(ctx, loss.backward())
            g = [p.grad.copy() for p in opt.params]
            grads = g if grads is None else [a + b for a, b in zip(grads, g)]
        for p, g in zip(opt.params, grads):
            p.grad = g / SIZE
        opt.step()


def main() -> None:
    rng = np.random.default_rng(0)
    checks = []
    x_flat, y = rng.normal(size=(N, 12)), rng.integers(0, 3, N)
    x_img = rng.normal(size=(N, 1, 8, 8))

    # allgather_object (blocking): every rank's value, in rank order, pickles of different sizes
    gathered = distributed.allgather_object({"rank": RANK, "a": np.arange(RANK * 1000 + 3)})
    assert [g["rank"] for g in gathered] == list(range(SIZE)), gathered
    assert all(np.array_equal(g["a"], np.arange(r * 1000 + 3)) for r, g in enumerate(gathered)), gathered
    if RANK == 0:
        checks.append("allgather")

    # MLP: equals fit(batch_size=32) in one process.
    model = compile_(seeded(mlp, 100 + RANK, (12,)), True)
    hist = model.fit(x_flat, y, epochs=1, batch_size=BATCH, seed=SEED, verbose=0)
    same_on_ranks(weights(model), "MLP")
    if RANK == 0:
        ref = compile_(seeded(mlp, 100, (12,)), False)
        ref_hist = ref.fit(x_flat, y, epochs=1, batch_size=BATCH * SIZE, seed=SEED, verbose=0)
        close(weights(model), weights(ref), "MLP vs one process")
        assert abs(hist.history["loss"][0] - ref_hist.history["loss"][0]) < TOL, (
            hist.history,
            ref_hist.history,
        )
        checks.append("mlp")

    # CNN with BatchNorm, per-rank statistics: equals the half-batch reference.
    model = compile_(seeded(lambda: cnn(BatchNorm), 200 + RANK, (1, 8, 8)), True)
    model.fit(x_img, y, epochs=1, batch_size=BATCH, seed=SEED, verbose=0)
    same_on_ranks(weights(model, buffers=False), "CNN+BatchNorm")
    if RANK == 0:
        ref = compile_(seeded(lambda: cnn(BatchNorm), 200, (1, 8, 8)), False)
        half_batch_reference(ref, x_img, y)
        close(weights(model, buffers=False), weights(ref, buffers=False), "CNN+BatchNorm vs one process")
        checks.append("cnn-batchnorm")

    # CNN with SyncBatchNorm: equals fit(batch_size=32) with BatchNorm, running statistics included.
    model = compile_(seeded(lambda: cnn(SyncBatchNorm), 300 + RANK, (1, 8, 8)), True)
    hist = model.fit(x_img, y, epochs=2, batch_size=BATCH, seed=SEED, verbose=0)
    same_on_ranks(weights(model), "CNN+SyncBatchNorm")
    history = {k: np.array(v) for k, v in hist.history.items()}
    same_on_ranks(history, "CNN+SyncBatchNorm History")
    if RANK == 0:
        ref = compile_(seeded(lambda: cnn(BatchNorm), 300, (1, 8, 8)), False)
        ref_hist = ref.fit(x_img, y, epochs=2, batch_size=BATCH * SIZE, seed=SEED, verbose=0)
        close(weights(model), weights(ref), "CNN+SyncBatchNorm vs one process")
        close(history, {k: np.array(v) for k, v in ref_hist.history.items()}, "SyncBatchNorm History")
        checks.append("cnn-syncbatchnorm")
        print("OK", " ".join(checks), flush=True)


if __name__ == "__main__":
    main()
