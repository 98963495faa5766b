"""Shared helpers of the tests (importable as ``support``: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Checkpoint tests write HDF5 files; h5py is a run-time dependency that
#: ``pip install -e ".[dev]"`` installs. Without it they are skipped, not crashed.
requires_h5py = pytest.mark.skipif(
    importlib.util.find_spec("h5py") is None,
    reason="h5py is not installed (a run-time dependency: pip install -e '.[dev]')",
)


def subprocess_env(*extra_paths: Path | str, clean: bool = False, **variables: str) -> dict[str, str]:
    """An environment for a child interpreter that imports this checkout's ``framework``.

    ``PYTHONPATH`` is ``extra_paths`` then the repository root, so a test's
    subprocess runs the code under test whether or not the package is
    installed. ``clean`` drops ``FRAMEWORK_*`` variables and any inherited
    ``PYTHONPATH``; ``variables`` are set last.
    """
    env = dict(os.environ)
    inherited = [] if clean else [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if clean:  # neither the framework's switches nor this run's pytest options (coverage)
        env = {
            k: v
            for k, v in env.items()
            if not k.startswith(("FRAMEWORK_", "COV_CORE_", "COVERAGE_")) and k != "PYTEST_ADDOPTS"
        }
    env["PYTHONPATH"] = os.pathsep.join([*(str(p) for p in extra_paths), str(ROOT), *inherited])
    env.update(variables)
    return env


def launch_mpi(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``mpiexec -n 2 python *args`` from the repository root, BLAS on one thread per rank.

    Skips the calling test when mpi4py or the mpich wheel's ``mpiexec`` (the
    ``distributed`` extra) is missing.
    """
    pytest.importorskip("mpi4py")
    mpiexec = Path(sys.executable).parent / "mpiexec"
    if not mpiexec.exists():
        pytest.skip("mpiexec (the mpich wheel of the distributed extra) is not installed")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "PMIX_"))}
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    return subprocess.run(
        [str(mpiexec), "-n", "2", sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=str(ROOT),
    )
