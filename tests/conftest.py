from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile

# Under PYTHONDONTWRITEBYTECODE nothing caches this checkout's bytecode: every xdist worker and every
# child interpreter the tests start (CLI, examples, MPI ranks, the plugin's own tests) compiles
# framework/ and plugins/ and rewrites the test modules again. The suite writes them to __pycache__
# (git ignores it) whatever the variable says; installed packages keep the bytecode pip wrote.
# Measured on a fresh clone, `python -m pytest -q -n auto`: 72 s with every run compiling, 68 s
# for the first run and 62 s after with this. (A cache outside the tree, sys.pycache_prefix, was
# worse: Python then ignores the installed packages' bytecode too, and torch's first run is 78 s.)
sys.dont_write_bytecode = False
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


def _temporary_files_in_memory(folder: str = "/dev/shm", room: int = 2 << 30) -> None:
    """Temporary files (``tmp_path``, ``tempfile``, child processes) on a memory file system.

    Every save goes through ``framework.saving.atomic``, which fsyncs the file and its folder:
    on this machine's disk 0.7 ms a save idle and far more under load, against nothing on tmpfs
    (the code is the same; no test can observe durability across a power cut). Used only when
    the folder exists, is writable and has ``room`` free, and when ``TMPDIR`` is not set.
    """
    if os.environ.get("TMPDIR") or not os.path.isdir(folder) or not os.access(folder, os.W_OK | os.X_OK):
        return
    try:
        info = os.statvfs(folder)
    except (OSError, AttributeError):
        return
    if info.f_bavail * info.f_frsize >= room:
        os.environ["TMPDIR"] = folder
        tempfile.tempdir = None  # computed again from TMPDIR at the next use


_temporary_files_in_memory()

# Under pytest-xdist (``-n auto``) every core runs a worker: each worker's BLAS and PyTorch then
# run on one thread, as their spare threads would only spin against the other workers
# (measured: the suite on 2 cores 119 -> 104 s). Set before NumPy and PyTorch are imported,
# which read these at start; a value the user set is kept.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_variable, "1")

# The compiled kernels (the ``[jit]`` extra) are tested in tests/test_jit.py and tests/test_jit_conv.py,
# which turn them on and hold each against the NumPy path it replaces; the rest of the suite runs the
# NumPy path, which its parity tests hold against PyTorch. With the kernels on everywhere, every
# worker compiled every kernel on a fresh clone: the first run took 68 s instead of 57 s.
os.environ.setdefault("FRAMEWORK_JIT", "0")
# Kernels built ahead of time (``framework kernels build``) are looked for in FRAMEWORK_KERNEL_CACHE:
# an empty folder of the run's own, so that a build in the user's cache does not change which kernels
# the tests run. CI's last run sets it to a folder it built into, and keeps it.
if not os.environ.get("FRAMEWORK_KERNEL_CACHE"):
    os.environ["FRAMEWORK_KERNEL_CACHE"] = tempfile.mkdtemp(prefix="framework-kernels-")
    atexit.register(shutil.rmtree, os.environ["FRAMEWORK_KERNEL_CACHE"], True)

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


@pytest.fixture(params=["float32", "float64"])
def dtype(request):
    """The test once per float dtype, layers built in it (the default dtype, restored after);
    the value is the ``np.dtype``. A module may define its own ``dtype`` fixture instead."""
    old = framework.get_default_dtype()
    framework.set_default_dtype(request.param)
    yield np.dtype(request.param)
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


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """An xdist worker ends here, without the interpreter's finalization.

    By now the worker has sent its last report and its coverage data (both in
    ``pytest_sessionfinish``); tearing down a heap holding torch, onnxruntime and ten
    thousand test items took 2-3 s, during which the controller waited (measured on the
    whole suite: last test at 51.1 s, summary at 53.9 s). The worker's streams are flushed first.
    """
    if hasattr(config, "workerinput"):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def pytest_collection_finish(session):
    """The cyclic garbage collector at a tenth of its default pace during the tests.

    Ten thousand tests build models that make many short-lived objects, while every full collection walks
    the whole heap (torch, onnx, the collected items). Measured on the whole suite (two workers, a loaded
    machine): 3,000-3,600 collections taking 9-12.6 s per worker at the default ``(700, 10, 10)``,
    1,300-1,400 taking 5.8-6.7 s at these. ``gc.freeze()`` after collection measured no gain.
    """
    import gc

    gc.set_threshold(10000, 20, 20)
