"""Run under ``mpiexec -n 2``: the data-parallel ``fit`` scenarios of ``tests/test_distributed_hunt.py``.

``python hunt_fit.py OUT.npz [SCENARIO ...]`` trains each scenario (all by
default) with a ``DistributedOptimizer`` and per-rank ``batch_size=BATCH``, and
rank 0 saves to ``OUT.npz``, per scenario: both ranks' final state
(``<scenario>|w0|<name>``, ``<scenario>|w1|<name>``), the History
(``<scenario>|h|<key>``), a few extras, and ``<scenario>|error`` if it raised.
Each rank builds its model from a different seed, so only rank 0's broadcast
makes them equal.

The test imports this module and calls :func:`run` with ``distributed_=False``:
the same computation in one process with ``batch_size=SIZE * BATCH``.
"""

from __future__ import annotations

import copy
import os
import sys
import traceback
import warnings
from typing import Any

import numpy as np

import framework
from framework import Sequential
from framework.base.metric import Metric
from framework.layers import BatchNorm, Linear, ReLU, SyncBatchNorm
from framework.metrics import AUC, ConfusionMatrix, F1Score, Precision
from framework.optimizers import SGD
from framework.runtime.dtype import default_dtype
from framework.training.callbacks import EarlyStopping, ModelCheckpoint

SIZE, BATCH, SEED = 2, 8, 3

SCENARIOS = {
    "even": {"n": 64},
    "uneven": {"n": 53},
    "sample_weight": {"n": 64, "sample_weight": True},
    "sample_weight_uneven": {"n": 53, "sample_weight": True},
    "validation": {"n": 64, "n_val": 21},
    "syncbn_even": {"n": 64, "norm": True},
    "syncbn_uneven": {"n": 53, "norm": True},
    "clipnorm": {"n": 64, "clipnorm": 0.05},
    "fp16": {"n": 64, "compression": "fp16"},
    "callbacks": {"n": 64, "n_val": 20, "callbacks": True, "epochs": 6},
    "ratio_metrics": {"n": 64, "n_val": 21, "sample_weight": True, "metrics": True},
    "own_counts_metric": {"n": 64, "own_metric": True},
    "tiny_validation": {"n": 64, "n_val": 1, "metrics": True},
}


class Hits(Metric):
    """Counts right predictions in its own state, without get_state / set_state / merge_state."""

    def __init__(self) -> None:
        super().__init__(name="hits")
        self.hits = 0.0

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        self.hits += float(np.sum(np.argmax(y_pred, axis=1) == y_true))

    def result(self) -> float:
        return self.hits

    def reset_state(self) -> None:
        self.hits = 0.0


def data(n: int, n_val: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(11)
    x = rng.normal(size=(n + n_val, 6))
    y = rng.integers(0, 3, n + n_val)
    w = rng.uniform(0.1, 2.0, n + n_val)
    return x[:n], y[:n], w[:n], x[n:], y[n:]


def build(norm: type | None, seed: int) -> Sequential:
    framework.set_seed(seed)
    layers: list[Any] = [Linear(6, 10)]
    if norm is not None:
        layers.append(norm(10))
    layers += [ReLU(), Linear(10, 3)]
    model = Sequential(layers)
    model.build((None, 6))
    return model


def state(model: Sequential) -> dict[str, np.ndarray]:
    return {
        k.replace("sync_batch_norm", "batch_norm"): np.array(v, dtype=np.float64)
        for k, v in model.state_dict().items()
    }


def run(name: str, distributed_: bool, workdir: str) -> dict[str, Any]:
    """Train scenario ``name``; on several ranks (``distributed_``) or as the one-process reference."""
    from framework import distributed
    from framework.distributed import DistributedOptimizer

    cfg = SCENARIOS[name]
    rank = distributed.rank() if distributed_ else 0
    with default_dtype(np.float64):
        x, y, w, xv, yv = data(cfg["n"], cfg.get("n_val", 0))
        norm = (SyncBatchNorm if distributed_ else BatchNorm) if cfg.get("norm") else None
        model = build(norm, 100 + rank)
        opt: Any = SGD(0.1, momentum=0.9, clipnorm=cfg.get("clipnorm"))
        if distributed_:
            opt = DistributedOptimizer(opt, compression=cfg.get("compression"))
        metrics: list[Any] = ["accuracy"]
        if cfg.get("metrics"):  # ratios of counts: exact only when the ranks' counts are merged
            metrics += [Precision(average="macro"), F1Score(average="weighted"), AUC(), ConfusionMatrix()]
        if cfg.get("own_metric"):
            metrics.append(Hits())
        # with sample weights, each metric once as given and once weighted (weighted_<name>)
        weighted = [m if isinstance(m, str) else copy.deepcopy(m) for m in metrics]
        model.compile(
            opt,
            loss="cross_entropy",
            metrics=metrics,
            weighted_metrics=weighted if cfg.get("sample_weight") else None,
        )
        kwargs: dict[str, Any] = {}
        if cfg.get("sample_weight"):
            kwargs["sample_weight"] = w
        if cfg.get("n_val"):
            kwargs["validation_data"] = (xv, yv)
        ckpt = os.path.join(workdir, f"ckpt_{'dist' if distributed_ else 'ref'}_rank{rank}.h5")
        if cfg.get("callbacks"):
            # min_delta=10: the loss cannot improve that much, so it stops after epoch 2
            kwargs["callbacks"] = [
                EarlyStopping(monitor="val_loss", min_delta=10.0, patience=1),
                ModelCheckpoint(ckpt),
            ]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            hist = model.fit(
                x,
                y,
                epochs=cfg.get("epochs", 2),
                batch_size=BATCH if distributed_ else BATCH * SIZE,
                shuffle=True,
                seed=SEED,
                verbose=0,
                **kwargs,
            )
    warned = [str(w.message) for w in caught if "keep their own counts" in str(w.message)]
    return {
        "state": state(model),
        "history": {k: np.asarray(v, dtype=np.float64) for k, v in hist.history.items()},
        "epochs": np.array(len(hist.epoch)),
        "ckpt_exists": np.array(os.path.exists(ckpt)),
        "ckpt": ckpt,
        "warned": np.array(len(warned)),
    }


def main(out: str, names: list[str]) -> None:
    from framework import distributed

    warnings.simplefilter("ignore", RuntimeWarning)
    distributed.init(timeout=20)
    assert distributed.size() == SIZE, distributed.size()
    rank = distributed.rank()
    workdir = os.path.dirname(os.path.abspath(out))
    saved: dict[str, Any] = {}
    # allgather_object under a timeout (the nonblocking collectives): pickles of different sizes
    saved["allgather|sizes"] = np.array(
        [len(g) for g in distributed.allgather_object(list(range(rank * 500 + 1)))]
    )
    for name in names:
        try:
            result = run(name, True, workdir)
        except Exception:  # recorded (symmetric failures only: a rank-local one aborts the job)
            saved[f"{name}|error"] = np.array(traceback.format_exc())
            continue
        other = distributed.broadcast(
            {k: result[k] for k in ("state", "epochs", "ckpt_exists", "ckpt")}, root=1
        )
        for k, v in result["state"].items():
            saved[f"{name}|w0|{k}"] = v
            saved[f"{name}|w1|{k}"] = other["state"][k]
        for k, v in result["history"].items():
            saved[f"{name}|h|{k}"] = v
        saved[f"{name}|warned0"] = result["warned"]
        saved[f"{name}|epochs0"] = result["epochs"]
        saved[f"{name}|epochs1"] = other["epochs"]
        saved[f"{name}|ckpt0"] = np.array(result["ckpt"])
        saved[f"{name}|ckpt_exists0"] = result["ckpt_exists"]
        saved[f"{name}|ckpt_exists1"] = other["ckpt_exists"]
    if rank == 0:
        np.savez(out, **saved)
        print("DONE", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:] or list(SCENARIOS))
