"""Data-parallel ``fit`` on 2 MPI ranks with newer features: float16 loss scaling, callback state, iterables.

``tests/distributed_scripts/hunt_newfeatures.py`` runs every scenario once
under ``mpiexec -n 2`` (in the one job of ``fit_scenarios.py``, see
``test_distributed.fit_scenarios``); each test recomputes the
scenario in this process on the concatenated batches (``batch_size = 2 * 8``,
plain optimizer) and compares: float64 to 1e-10, float16 to float16's
precision, and the two ranks to each other exactly (weights, loss scales,
skip decisions, stopping epochs).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import requires_h5py
from test_distributed import fit_scenarios

import framework
from framework import Sequential
from framework.distributed import DistributedOptimizer
from framework.layers import Linear, ReLU
from framework.optimizers import SGD, Adam
from framework.runtime.dtype import default_dtype

SCRIPTS = Path(__file__).resolve().parent / "distributed_scripts"
TOL = 1e-10

_spec = importlib.util.spec_from_file_location("hunt_newfeatures", SCRIPTS / "hunt_newfeatures.py")
hunt = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hunt)


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    pytest.importorskip("h5py")
    result = fit_scenarios(tmp_path_factory)  # one mpiexec job for every succeeding scenario
    out = result["workdir"] / "hunt_newfeatures.npz"
    assert out.exists(), f"returncode {result['returncode']}\n{result['stderr'][-3000:]}"
    with np.load(out) as saved:
        return {k: saved[k] for k in saved.files}


def _rank(dist: dict[str, Any], name: str, r: int, allow_error: bool = False) -> dict[str, Any]:
    prefix = f"{name}|r{r}|"
    part = {k[len(prefix) :]: v for k, v in dist.items() if k.startswith(prefix)}
    assert part, f"{name}: rank {r} recorded nothing"
    if not allow_error:
        assert "error" not in part, str(part["error"])
    return part


def _w(part: dict[str, Any]) -> dict[str, np.ndarray]:
    return {k[2:]: np.asarray(v, dtype=np.float64) for k, v in part.items() if k.startswith("w|")}


def _max_err(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    assert a.keys() == b.keys(), (sorted(a), sorted(b))
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


def _ranks_identical(dist: dict[str, Any], name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    r0, r1 = _rank(dist, name, 0), _rank(dist, name, 1)
    assert r0.keys() == r1.keys()
    for key in r0:
        np.testing.assert_array_equal(r0[key], r1[key], err_msg=f"{name}: rank 0 vs rank 1, {key}")
    return r0, r1


# -- float16 with dynamic loss scaling ------------------------------------------------------


def _fp16_model(seed: int) -> Sequential:
    with default_dtype(np.float16):
        framework.set_seed(seed)
        model = Sequential([Linear(6, 10), ReLU(), Linear(10, 3)])
        model.build((None, 6))
    return model


@pytest.mark.parametrize("make", [lambda: SGD(0.05, momentum=0.9), lambda: Adam(1e-2)], ids=["sgd", "adam"])
def test_world_of_one_distributed_optimizer_scales_float16_loss(make: Any) -> None:
    # A script written for mpiexec, run in one process: DistributedOptimizer must be the wrapped
    # optimizer exactly, loss scaling included (it hid the scaler: no scaling, small gradients flushed).
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 6)).astype(np.float16)
    y = (1e-3 * rng.normal(size=(32, 3))).astype(np.float16)
    results = []
    for wrap in (False, True):
        model = _fp16_model(1)
        opt = make()
        model.compile(DistributedOptimizer(opt) if wrap else opt, loss="mse")
        model.fit(x, y, epochs=2, batch_size=8, seed=0, verbose=0)
        scaler = model.optimizer.loss_scaler
        assert scaler is not None, "DistributedOptimizer hides the float16 loss scaler"
        results.append((model.get_weights(), scaler.scale, scaler.good_steps, model.optimizer.iterations))
    (w_plain, *rest_plain), (w_dist, *rest_dist) = results
    assert rest_plain == rest_dist
    for a, b in zip(w_plain, w_dist):
        np.testing.assert_array_equal(a, b)


def test_world_of_one_distributed_optimizer_syncs_float16_master_weights() -> None:
    # set_weights between two fits: the master copy must take them (it lives on the wrapped optimizer)
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(16, 6)).astype(np.float16), rng.normal(size=(16, 3)).astype(np.float16)
    got = []
    for wrap in (False, True):
        model = _fp16_model(2)
        model.compile(DistributedOptimizer(SGD(0.1)) if wrap else SGD(0.1), loss="mse")
        model.fit(x, y, epochs=1, batch_size=8, verbose=0)
        model.set_weights([np.zeros_like(w) for w in model.get_weights()])
        model.fit(x, y, epochs=1, batch_size=16, verbose=0)
        got.append(model.get_weights())
    for a, b in zip(*got):
        np.testing.assert_array_equal(a, b)
    assert max(float(np.abs(w.astype(np.float64)).max()) for w in got[1]) < 1.0  # restarted from zeros


def _compare_fp16(got: dict[str, Any], ref: dict[str, Any], name: str) -> None:
    for key in ("scale", "skipped", "good", "iterations"):
        assert float(got[key]) == float(ref[key]), (
            f"{name}: {key} on 2 ranks {got[key]}, one process {ref[key]}"
        )
    scale = max(float(np.abs(v).max()) for v in _w(ref).values())
    assert _max_err(_w(got), _w(ref)) <= 5e-3 * scale
    np.testing.assert_allclose(got["loss"], ref["loss"], rtol=5e-3)


@pytest.mark.parametrize("name", ["fp16", "fp16_uneven", "fp16_mild"])
def test_fp16_two_ranks_take_identical_decisions(dist: dict[str, Any], name: str) -> None:
    r0, _ = _ranks_identical(dist, name)  # weights, scale, skipped, good steps, iterations, History
    assert r0["iterations"] > 0
    if name != "fp16_mild":
        assert r0["skipped"] > 0, "the scenario must skip steps"


def test_fp16_two_ranks_equal_one_process_without_overflow(dist: dict[str, Any], tmp_path: Path) -> None:
    got = _rank(dist, "fp16_mild", 0)
    assert float(got["skipped"]) == 0
    _compare_fp16(got, hunt.run_fp16_mild(False, 0, str(tmp_path)), "fp16_mild")


@pytest.mark.parametrize("name", ["fp16", "fp16_uneven"])
def test_fp16_two_ranks_equal_one_process_with_overflows(
    dist: dict[str, Any], name: str, tmp_path: Path
) -> None:
    _compare_fp16(_rank(dist, name, 0), getattr(hunt, f"run_{name}")(False, 0, str(tmp_path)), name)


def test_empty_rank_in_last_window_float64(dist: dict[str, Any], tmp_path: Path) -> None:
    r0, _ = _ranks_identical(dist, "uneven64")
    assert _max_err(_w(r0), _w(hunt.run_uneven64(False, 0, str(tmp_path)))) <= TOL


# -- callbacks saved in checkpoints, resumed on 2 ranks -------------------------------------


@requires_h5py
def test_resume_from_checkpoint_equals_uninterrupted(dist: dict[str, Any]) -> None:
    full, _ = _ranks_identical(dist, "resume_full")
    cut, _ = _ranks_identical(dist, "resume_cut")
    assert full["epochs"][-1] < 39, "EarlyStopping must stop the run early for the test to mean anything"
    assert float(full["lr"]) < 0.2, "ReduceLROnPlateau must have reduced the rate"
    np.testing.assert_array_equal(cut["epochs"], full["epochs"][3:])
    np.testing.assert_allclose(cut["val_loss"], full["val_loss"][3:], rtol=0, atol=1e-12)
    assert float(cut["lr"]) == float(full["lr"])
    assert _max_err(_w(cut), _w(full)) <= 1e-12


@requires_h5py
def test_resume_two_ranks_equal_one_process(dist: dict[str, Any], tmp_path: Path) -> None:
    full = _rank(dist, "resume_full", 0)
    ref = hunt.run_resume_full(False, 0, str(tmp_path))
    np.testing.assert_array_equal(full["epochs"], ref["epochs"])
    np.testing.assert_allclose(full["val_loss"], ref["val_loss"], rtol=0, atol=TOL)
    assert _max_err(_w(full), _w(ref)) <= TOL


# -- iterables -------------------------------------------------------------------------------


def test_iterable_batches_weighted_as_one_process_on_their_concatenation(
    dist: dict[str, Any], tmp_path: Path
) -> None:
    # the ranks' last batches hold 5 and 2 samples: an unweighted mean of the ranks' gradients is wrong
    r0, _ = _ranks_identical(dist, "iterable")
    ref = hunt.run_iterable(False, 0, str(tmp_path))
    assert _max_err(_w(r0), _w(ref)) <= TOL
    np.testing.assert_allclose(r0["loss"], ref["loss"], rtol=0, atol=TOL)


def test_iterables_of_different_lengths_refused_on_every_rank(dist: dict[str, Any]) -> None:
    for r in range(2):
        part = _rank(dist, "iterable_mismatch", r, allow_error=True)
        assert "ok" not in part, f"rank {r}: iterables of 3 and 2 batches trained without a word"
        message = str(part["error"])
        assert message.startswith("DistributedError"), message
        assert "iterables differ" in message and "step 2" in message and f"rank {r}" in message


# -- validation split unevenly ----------------------------------------------------------------


def test_uneven_validation_blocks_weighted_as_one_process(dist: dict[str, Any], tmp_path: Path) -> None:
    r0, _ = _ranks_identical(dist, "validation")
    ref = hunt.run_validation(False, 0, str(tmp_path))
    assert r0.keys() == ref.keys()
    for key in ref:
        np.testing.assert_allclose(r0[key], ref[key], rtol=0, atol=TOL, err_msg=key)
