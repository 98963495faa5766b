"""Data-parallel training over MPI: equivalence with one process, faults, and the world of size 1.

The multi-rank cases launch ``mpiexec -n 2`` (the one next to the Python
running the tests, from the ``mpich`` wheel of the ``distributed`` extra) on
the scripts in ``tests/distributed_scripts``; they are skipped without it.
The scenarios that must succeed, here and in the two ``test_distributed_*hunt``
files, share one job (:func:`fit_scenarios`); each failure path has its own.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import launch_mpi, requires_h5py

import framework
from framework import Sequential, distributed
from framework.distributed import DistributedError, DistributedOptimizer, shard_steps, shard_windows
from framework.distributed.optimizer import make_buckets
from framework.layers import BatchNorm, Linear, ReLU, SyncBatchNorm
from framework.optimizers import SGD

SCRIPTS = Path(__file__).resolve().parent / "distributed_scripts"

_FIT_RUN: dict[str, Any] | None = None


def fit_scenarios(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The one ``mpiexec`` run of ``distributed_scripts/fit_scenarios.py`` of this pytest run:
    ``{"returncode", "stdout", "stderr", "workdir"}``; ``workdir`` holds ``hunt_fit.npz`` and
    ``hunt_newfeatures.npz`` (each written once its part is done).

    It runs every succeeding multi-rank scenario of this file, ``test_distributed_hunt.py`` and
    ``test_distributed_newfeatures_hunt.py`` in one job, once per pytest run: under xdist the
    first worker to ask launches it while the others wait on a file lock in the folder the
    workers' temporary folders share, then read its record.
    """
    global _FIT_RUN
    if _FIT_RUN is None:
        root = tmp_path_factory.getbasetemp()
        if os.environ.get("PYTEST_XDIST_WORKER"):
            root = root.parent  # the session's folder, shared by its workers
        work = root / "distributed-fit"
        record = work / "record.json"
        with open(root / "distributed-fit.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not record.exists():
                work.mkdir(exist_ok=True)
                result = launch_mpi(str(SCRIPTS / "fit_scenarios.py"), str(work), timeout=180)
                done = {"returncode": result.returncode, "stdout": result.stdout, "stderr": result.stderr}
                (work / "record.tmp").write_text(json.dumps(done))
                os.replace(work / "record.tmp", record)
        _FIT_RUN = {**json.loads(record.read_text()), "workdir": work}
    return _FIT_RUN


def test_two_ranks_equal_one_process_on_the_concatenated_batches(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    result = fit_scenarios(tmp_path_factory)  # equivalence.py is its last part
    assert result["returncode"] == 0, result["stderr"][-3000:]
    assert "OK allgather mlp cnn-batchnorm cnn-syncbatchnorm" in result["stdout"]


def test_an_exception_on_one_rank_aborts_the_job_with_its_traceback() -> None:
    start = time.monotonic()
    result = launch_mpi(str(SCRIPTS / "fault.py"), "raise", timeout=30)
    assert time.monotonic() - start < 30
    assert result.returncode != 0
    assert "[rank 1/2]" in result.stderr
    assert "ValueError: injected failure on batch 3" in result.stderr


def test_a_collective_times_out_with_an_error_naming_it(tmp_path: Path) -> None:
    report = tmp_path / "error.txt"
    result = launch_mpi(str(SCRIPTS / "fault.py"), "timeout", str(report), timeout=30)
    assert result.returncode != 0
    # the rank's own report: mpiexec may drop an aborting rank's last stderr lines under load
    assert "DistributedError: allreduce on rank 0 timed out after 0.25 s" in report.read_text()


# -- a world of size 1 (no mpiexec) ------------------------------------------------------


def test_size_one_world_without_mpi() -> None:
    assert not distributed.launched_by_mpi() or distributed.size() >= 1
    assert (distributed.rank(), distributed.size(), distributed.local_rank()) == (0, 1, 0)
    assert distributed.is_main()
    distributed.barrier()
    a = np.arange(3.0)
    np.testing.assert_array_equal(distributed.allreduce(a), a)
    assert distributed.allreduce(2, op="sum") == 2.0
    assert distributed.broadcast({"k": [1]}) == {"k": [1]}
    assert distributed.allgather_object({"k": [1]}) == [{"k": [1]}]
    assert distributed.broadcast(a) is a
    with pytest.raises(DistributedError, match="op must be one of"):
        distributed.allreduce(a, op="prod")
    with pytest.raises(DistributedError, match="root must be a rank"):
        distributed.broadcast(a, root=1)


def test_size_one_fit_with_distributed_optimizer_is_plain_fit() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 5)), rng.integers(0, 2, 50)

    def train(wrap: bool) -> tuple[Sequential, dict[str, list[float]]]:
        framework.set_seed(3)
        model = Sequential([Linear(5, 8), BatchNorm(8), ReLU(), Linear(8, 2)])
        opt = SGD(0.1, momentum=0.9)
        model.compile(DistributedOptimizer(opt) if wrap else opt, loss="cross_entropy", metrics=["accuracy"])
        history = model.fit(x, y, epochs=2, batch_size=16, seed=1, verbose=0, validation_split=0.2)
        return model, history.history

    (a, ha), (b, hb) = train(False), train(True)
    assert ha == hb
    for (k, v), (_, w) in zip(a.state_dict().items(), b.state_dict().items()):
        np.testing.assert_array_equal(v, w, err_msg=k)
    assert type(b.optimizer).__name__ == "DistributedOptimizer"


@requires_h5py
def test_distributed_optimizer_delegates_and_saves_as_the_wrapped_one(tmp_path: Path) -> None:
    model = Sequential([Linear(3, 2)])
    model.compile(DistributedOptimizer(SGD(0.2), compression="fp16"), loss="mse")
    model.fit(np.ones((4, 3)), np.zeros((4, 2)), verbose=0)
    assert model.optimizer.lr == 0.2 and model.optimizer.iterations == 1
    model.optimizer.learning_rate = 0.1
    assert model.optimizer.optimizer.lr == 0.1
    model.save(tmp_path / "m.h5")
    loaded = framework.load_model(tmp_path / "m.h5")
    assert type(loaded.optimizer).__name__ == "SGD" and loaded.optimizer.lr == 0.1  # the rate when saved
    with pytest.raises(framework.errors.ConfigError, match="compression"):
        DistributedOptimizer(SGD(), compression="int8")


def test_fusion_buckets_are_few_contiguous_and_per_dtype() -> None:
    params = [framework.Parameter(np.zeros(n, dtype=np.float32)) for n in (1000, 1000, 3000, 10)]
    params.append(framework.Parameter(np.zeros(5, dtype=np.float64)))
    buckets = make_buckets(params, bucket_bytes=8000)
    assert [len(b.params) for b in buckets] == [2, 1, 1, 1]  # a bucket never exceeds 8000 bytes but alone
    assert [b.buffer.dtype for b in buckets] == [np.float32] * 3 + [np.float64]
    assert buckets[0].views[1].base is buckets[0].buffer
    assert make_buckets(params, 8000, "fp16")[0].buffer.dtype == np.float16


def test_sharding_covers_every_sample_once_with_equal_step_counts() -> None:
    n, batch, size = 103, 8, 3
    order = np.random.default_rng(0).permutation(n)
    parts = [list(shard_windows(n, batch, r, size, order)) for r in range(size)]
    assert {len(p) for p in parts} == {shard_steps(n, batch, size)}
    seen = np.concatenate([idx for p in parts for idx, _ in p])
    assert sorted(seen.tolist()) == list(range(n))
    for step in range(len(parts[0])):  # the ranks' batches of a step are one window of the order
        window = np.concatenate([parts[r][step][0] for r in range(size)])
        np.testing.assert_array_equal(window, order[step * batch * size : (step + 1) * batch * size])
        for r in range(size):  # weight * mean over n_r / size summed over r = mean over the window
            idx, weight = parts[r][step]
            assert weight == pytest.approx(len(idx) * size / len(window))


def test_sync_batch_norm_on_one_rank_is_batch_norm() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 3, 2, 2))
    framework.set_seed(0)
    sync, plain = SyncBatchNorm(3), BatchNorm(3)
    np.testing.assert_array_equal(sync(x, training=True), plain(x, training=True))
    np.testing.assert_array_equal(sync.running_var.data, plain.running_var.data)
