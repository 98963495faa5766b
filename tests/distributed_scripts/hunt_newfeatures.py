"""Run under ``mpiexec -n 2``: the scenarios of ``tests/test_distributed_newfeatures_hunt.py``.

``python hunt_newfeatures.py OUT.npz WORKDIR`` runs every scenario of
:data:`SCENARIOS` with a ``DistributedOptimizer`` on 2 ranks, per-rank batch
``BATCH``; rank 0 saves both ranks' results to ``OUT.npz`` as
``<scenario>|r<rank>|<key>`` (and ``<scenario>|r<rank>|error`` if it raised).
The test imports this module and calls each ``run_*`` with ``dist=False``:
the same training in one process on the concatenated batches.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np

import framework
from framework import Sequential
from framework.layers import Linear, ReLU
from framework.optimizers import SGD
from framework.runtime.dtype import default_dtype
from framework.training.callbacks import EarlyStopping, ModelCheckpoint, ReduceLROnPlateau

SIZE, BATCH = 2, 8


def model_of(dtype: Any, seed: int) -> Sequential:
    with default_dtype(dtype):
        framework.set_seed(seed)
        model = Sequential([Linear(6, 10), ReLU(), Linear(10, 3)])
        model.build((None, 6))
    return model


def data(n: int, dtype: Any = np.float64, seed: int = 11) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(dtype)
    y = rng.normal(size=(n, 3)).astype(dtype)
    return x, y


def compiled(model: Sequential, dist: bool, lr: float = 0.05) -> Sequential:
    from framework.distributed import DistributedOptimizer

    opt: Any = SGD(lr, momentum=0.9)
    model.compile(DistributedOptimizer(opt) if dist else opt, loss="mse")
    return model


def weights(model: Sequential) -> dict[str, np.ndarray]:
    return {k: np.array(v, dtype=np.float64) for k, v in model.state_dict().items()}


def run_fp16(
    dist: bool, rank: int, workdir: str, n: int = 64, scale: float = 2.0**20, big: float = 30.0
) -> dict[str, Any]:
    """float16 model, a loss scale starting far too high (overflows, halvings), growing every 3 steps."""
    model = compiled(model_of(np.float16, 5 + rank), dist)
    model.optimizer.bind(model)
    scaler = model.optimizer.loss_scaler
    scaler.scale, scaler.growth_interval = scale, 3
    x, y = data(n, np.float16)
    x[:4] *= big  # large activations: the scaled gradients of the first batches overflow float16
    hist = model.fit(x, y, epochs=4, batch_size=BATCH * (SIZE if not dist else 1), seed=1, verbose=0)
    out: dict[str, Any] = {f"w|{k}": v for k, v in weights(model).items()}
    out.update(scale=scaler.scale, skipped=scaler.skipped, good=scaler.good_steps)
    out["loss"] = np.array(hist.history["loss"])
    out["iterations"] = model.optimizer.iterations
    return out


def run_fp16_uneven(dist: bool, rank: int, workdir: str) -> dict[str, Any]:
    """49 samples: the last window holds 1 sample, so rank 1 takes an empty step."""
    return run_fp16(dist, rank, workdir, n=49)


def run_fp16_mild(dist: bool, rank: int, workdir: str) -> dict[str, Any]:
    """float16, a loss scale that never overflows (it grows every 3 steps from 2**4): no skip at all."""
    return run_fp16(dist, rank, workdir, n=49, scale=2.0**4, big=1.0)


def run_uneven64(dist: bool, rank: int, workdir: str) -> dict[str, Any]:
    """float64, 49 samples: the last window's one sample leaves rank 1 an empty step."""
    model = compiled(model_of(np.float64, 5 + rank), dist)
    x, y = data(49)
    model.fit(x, y, epochs=2, batch_size=BATCH * (SIZE if not dist else 1), seed=1, verbose=0)
    return {f"w|{k}": v for k, v in weights(model).items()}


def _callbacks(path: str, rank: int) -> list[Any]:
    return [
        EarlyStopping(monitor="val_loss", patience=2, min_delta=0.02),
        ReduceLROnPlateau(monitor="val_loss", patience=1, factor=0.5, min_delta=0.02),
        ModelCheckpoint(path),
    ]


def _fit_resumable(dist: bool, rank: int, workdir: str, stop_at: int | None) -> dict[str, Any]:
    from framework import distributed

    x, y = data(70)
    xv, yv = data(21, seed=12)
    path = os.path.join(workdir, f"ckpt_{int(dist)}_{stop_at}.h5")
    model = compiled(model_of(np.float64, 3 + rank), dist, lr=0.2)
    batch = BATCH * (SIZE if not dist else 1)
    kw: dict[str, Any] = {"batch_size": batch, "validation_data": (xv, yv), "seed": 4, "verbose": 0}
    epochs = 40
    if stop_at is not None:
        model.fit(x, y, epochs=stop_at, callbacks=_callbacks(path, rank), **kw)
        if dist:
            distributed.barrier()
        model = framework.load_model(path)
        if dist:
            from framework.distributed import DistributedOptimizer

            model.optimizer = DistributedOptimizer(model.optimizer)
        hist = model.fit(x, y, epochs=epochs, initial_epoch=stop_at, callbacks=_callbacks(path, rank), **kw)
    else:
        hist = model.fit(x, y, epochs=epochs, callbacks=_callbacks(path, rank), **kw)
    out: dict[str, Any] = {f"w|{k}": v for k, v in weights(model).items()}
    out["epochs"] = np.array(hist.epoch)
    out["val_loss"] = np.array(hist.history["val_loss"])
    out["lr"] = model.optimizer.lr
    return out


def run_resume_full(dist: bool, rank: int, workdir: str) -> dict[str, Any]:
    return _fit_resumable(dist, rank, workdir, None)


def run_resume_cut(dist: bool, rank: int, workdir: str) -> dict[str, Any]:
    return _fit_resumable(dist, rank, workdir, 3)


def _batches(rank: int, sizes: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    x, y = data(sum(sizes), seed=20 + rank)
    out, start = [], 0
    for s in sizes:
        out.append((x[start : start + s], y[start : start + s]))
        start += s
    return out


ITER_SIZES = {0: [8, 8, 5], 1: [8, 8, 2]}


def run_iterable(dist: bool, rank: int, workdir: str) -> dict[str, Any]:
    """Each rank reads its own batches (the last ones differ in size); one process: their concatenation."""
    model = compiled(model_of(np.float64, 7 + rank), dist)
    if dist:
        batches = _batches(rank, ITER_SIZES[rank])
    else:
        mine = [_batches(r, ITER_SIZES[r]) for r in range(SIZE)]
        batches = [
            tuple(np.concatenate([mine[r][k][i] for r in range(SIZE)]) for i in range(2))
            for k in range(len(ITER_SIZES[0]))
        ]

    def gen() -> Any:
        while True:
            yield from batches

    hist = model.fit(gen(), steps_per_epoch=len(batches), epochs=2, verbose=0)
    out: dict[str, Any] = {f"w|{k}": v for k, v in weights(model).items()}
    out["loss"] = np.array(hist.history["loss"])
    return out


def run_iterable_mismatch(dist: bool, rank: int, workdir: str) -> dict[str, Any]:
    """Rank 0's iterable yields 3 batches, rank 1's 2: must be refused on both ranks, not hang or mix."""
    model = compiled(model_of(np.float64, 7), dist)
    batches = _batches(rank, [8, 8, 8] if rank == 0 else [8, 8])
    model.fit(batches, epochs=1, verbose=0)
    return {"ok": 1}


def run_validation(dist: bool, rank: int, workdir: str) -> dict[str, Any]:
    """Uneven validation split (23 samples on 2 ranks, batch 8 per rank: blocks 12 and 11), metrics."""
    model = model_of(np.float64, 9 + rank)
    from framework.distributed import DistributedOptimizer

    opt: Any = SGD(0.05)
    model.compile(DistributedOptimizer(opt) if dist else opt, loss="mse", metrics=["mae"])
    x, y = data(40)
    xv, yv = data(23, seed=13)
    yv[:5] += 10.0  # the first block's samples differ: an unweighted mean of the ranks would show
    hist = model.fit(
        x,
        y,
        epochs=2,
        batch_size=BATCH * (SIZE if not dist else 1),
        validation_data=(xv, yv),
        seed=2,
        verbose=0,
    )
    return {k: np.array(v) for k, v in hist.history.items()}


SCENARIOS: dict[str, Callable[[bool, int, str], dict[str, Any]]] = {
    "fp16": run_fp16,
    "fp16_uneven": run_fp16_uneven,
    "fp16_mild": run_fp16_mild,
    "uneven64": run_uneven64,
    "resume_full": run_resume_full,
    "resume_cut": run_resume_cut,
    "iterable": run_iterable,
    "iterable_mismatch": run_iterable_mismatch,
    "validation": run_validation,
}


def main(out_path: str, workdir: str, names: list[str]) -> None:
    from framework import distributed

    distributed.init(timeout=20)
    rank = distributed.rank()
    results: dict[str, Any] = {}
    for name in names:
        try:
            got = SCENARIOS[name](True, rank, workdir)
        except Exception as exc:  # recorded, so the other scenarios still run
            got = {"error": f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-1500:]}"}
        gathered = distributed.broadcast(got, 1)  # rank 1's results, to rank 0
        mine = got
        if rank == 0:
            for r, part in ((0, mine), (1, gathered)):
                for key, value in part.items():
                    results[f"{name}|r{r}|{key}"] = np.asarray(value)
        distributed.barrier()
    if rank == 0:
        np.savez(out_path, **results)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:] or list(SCENARIOS))
