from __future__ import annotations

import os
import stat
import sys
import tempfile


def _cache_bytecode_outside_the_checkout() -> None:
    """Under ``PYTHONDONTWRITEBYTECODE`` keep bytecode out of the checkout, but cache it.

    Without any cache every xdist worker and every child interpreter the tests start (CLI,
    examples, MPI ranks) compiles ``framework/`` and ``plugins/`` and rewrites the test modules
    again: measured on a fresh clone, 238 s of CPU for the suite against 199 s with a cache.
    The cache goes to a directory of this user's under the system's temporary directory
    (``sys.pycache_prefix``, which pytest's assertion rewriting follows too); children inherit it
    through ``PYTHONPYCACHEPREFIX``. A directory another user owns or can write is not used.
    """
    if not sys.dont_write_bytecode or sys.pycache_prefix:
        return
    prefix = os.path.join(tempfile.gettempdir(), f"framework-tests-pycache-{os.getuid()}")
    try:
        os.makedirs(prefix, mode=0o700, exist_ok=True)
        info = os.lstat(prefix)
    except OSError:
        return
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        return
    sys.pycache_prefix = prefix
    sys.dont_write_bytecode = False
    os.environ["PYTHONPYCACHEPREFIX"] = prefix
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


if hasattr(os, "getuid"):
    _cache_bytecode_outside_the_checkout()

# Under pytest-xdist (``-n auto``) every core runs a worker: each worker's BLAS and PyTorch then
# run on one thread, as their spare threads would only spin against the other workers
# (measured: the suite on 2 cores 119 -> 104 s). Set before NumPy and PyTorch are imported,
# which read these at start; a value the user set is kept.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_variable, "1")

import numpy as np  # noqa: E402  (after the environment above is set)
import pytest  # noqa: E402

import framework  # noqa: E402


@pytest.fixture
def float64():
    """Build layers in float64 for finite-difference checks; restore float32 after."""
    old = framework.get_default_dtype()
    framework.set_default_dtype("float64")
    yield
    framework.set_default_dtype(old)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _seeded_framework():
    """Every test starts from the same global generator state and default dtype (float32),
    whatever ran before it in its process (under xdist the order changes from run to run)."""
    framework.set_seed(20261126)
    framework.set_default_dtype("float32")
    yield


def pytest_report_header(config):
    """Say up front when run-time dependencies are missing (their tests are skipped, not failed)."""
    import importlib.util

    missing = [name for name in ("h5py", "tqdm") if importlib.util.find_spec(name) is None]
    if missing:
        return (
            f"framework: run-time dependencies not installed: {', '.join(missing)}; their tests are skipped. "
            "Install them with: pip install -e '.[dev]'"
        )
    return None
