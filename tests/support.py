"""Shared helpers of the tests (importable as ``support``: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import runpy
import struct
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Checkpoint tests write HDF5 files; h5py is a run-time dependency that
#: ``pip install -e ".[dev]"`` installs. Without it they are skipped, not crashed.
requires_h5py = pytest.mark.skipif(
    importlib.util.find_spec("h5py") is None,
    reason="h5py is not installed (a run-time dependency: pip install -e '.[dev]')",
)


def _requires(module: str, extra: str, *, name: str | None = None) -> pytest.MarkDecorator:
    """A skip marker for a test that needs ``module`` of an optional extra (the reason names the extra)."""
    return pytest.mark.skipif(
        importlib.util.find_spec(module) is None,
        reason=f"needs {name or module}: pip install -e '.[{extra}]'",
    )


#: The parity tests compare against PyTorch (the ``parity`` extra).
requires_torch = _requires("torch", "parity")
#: ONNX export/import tests need onnx and onnxruntime (the ``onnx`` extra).
requires_onnx = _requires("onnx", "onnx")
requires_onnxruntime = _requires("onnxruntime", "onnx")
#: safetensors files need the ``safetensors`` extra.
requires_safetensors = _requires("safetensors", "safetensors")
#: scikit-learn (the ``data`` extra), which also brings SciPy.
requires_sklearn = _requires("sklearn", "data", name="scikit-learn")
requires_scipy = _requires("scipy", "data", name="scipy (scikit-learn brings it)")
#: mpmath comes with PyTorch (through sympy), the ``parity`` extra.
requires_mpmath = _requires("mpmath", "parity", name="mpmath (torch brings it)")
#: The compiled kernels need numba (the ``jit`` extra).
requires_numba = _requires("numba", "jit")


#: The TensorBoard tests need tensorboardX (the ``tensorboard`` extra, which CI installs).
requires_tensorboardx = pytest.mark.skipif(
    importlib.util.find_spec("tensorboardX") is None,
    reason="tensorboardX is not installed (the tensorboard extra: pip install -e '.[tensorboard]')",
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


def ort_session(path: Path | str) -> Any:
    """An onnxruntime session of the ONNX file ``path`` on one thread.

    Its default pool of one thread per core costs six times the session's own creation (2.8
    against 0.4 ms for the tests' small graphs) and spins against the other xdist workers.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


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
    before = _mpich_segments()
    done = subprocess.run(
        [str(mpiexec), "-n", "2", sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=str(ROOT),
    )
    _remove_orphaned_segments(_mpich_segments() - before)
    return done


_SHM = Path("/dev/shm")


def _mpich_segments() -> set[Path]:
    return set(_SHM.glob("mpich_shm_*")) if _SHM.is_dir() else set()


def _remove_orphaned_segments(new: set[Path]) -> None:
    """Remove the shared-memory files MPICH left behind (2 MB each, in RAM).

    A rank killed by an abort or a timeout never unlinks its segment, so each failure-path test
    leaked one per run. Only files that appeared during the job and that no live process maps are
    removed: another worker's job running at the same time maps its own.
    """
    if not new:
        return
    mapped: set[str] = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            mapped.update(
                line.rsplit(None, 1)[-1] for line in maps.read_text().splitlines() if "mpich_shm_" in line
            )
        except OSError:  # the process ended, or is not ours to read
            continue
    for segment in new:
        if str(segment) not in mapped:
            segment.unlink(missing_ok=True)


def read_events(directory: Path) -> list[Any]:
    """Every TensorBoard event of every event file in ``directory``, checking the TFRecord
    framing (length, its masked CRC, data, its masked CRC) of each record.

    Skips the calling test when tensorboardX (the ``tensorboard`` extra) is missing.
    """
    event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2")
    from tensorboardX.record_writer import masked_crc32c

    events = []
    for path in sorted(directory.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            header = data[pos : pos + 8]
            (length,) = struct.unpack("<Q", header)
            (crc,) = struct.unpack("<I", data[pos + 8 : pos + 12])
            assert crc == masked_crc32c(header), f"{path}: bad length CRC at {pos}"
            body = data[pos + 12 : pos + 12 + length]
            (body_crc,) = struct.unpack("<I", data[pos + 12 + length : pos + 16 + length])
            assert len(body) == length and body_crc == masked_crc32c(body), f"{path}: bad record at {pos}"
            events.append(event_pb2.Event.FromString(body))
            pos += 16 + length
    return events


def scalars(directory: Path) -> dict[str, list[tuple[int, float]]]:
    """``{tag: sorted [(step, value)]}`` of the scalar events in ``directory``."""
    found: dict[str, list[tuple[int, float]]] = {}
    for event in read_events(directory):
        for value in event.summary.value:
            if value.HasField("simple_value"):
                found.setdefault(value.tag, []).append((event.step, value.simple_value))
    return {tag: sorted(points) for tag, points in found.items()}


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    """NumPy's BLAS on one thread, as the scripts set ``OPENBLAS_NUM_THREADS=1`` before importing it."""
    try:
        from threadpoolctl import threadpool_limits  # scikit-learn brings it
    except ImportError:
        yield
        return
    with threadpool_limits(1):
        yield


def run_script(
    path: Path, argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> str:
    """Run the script ``path`` with ``argv`` in this process as ``python path *argv`` would; return stdout.

    A script ending in ``raise SystemExit(main())`` must exit with 0; ``sys.path``,
    ``sys.argv`` and the environment (the scripts ``setdefault`` the BLAS threads)
    are restored afterwards.
    """
    monkeypatch.syspath_prepend(str(path.parent))  # the scripts import their sibling ``common``
    monkeypatch.setattr(sys, "argv", [str(path), *argv])
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    capsys.readouterr()
    with _one_blas_thread(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # as PYTHONWARNINGS=ignore did for the scripts' own processes
        try:
            runpy.run_path(str(path), run_name="__main__")
        except SystemExit as exc:
            assert exc.code in (0, None), f"{path.name} exited with {exc.code}:\n{capsys.readouterr()}"
    return capsys.readouterr().out


def spy_on(
    monkeypatch: pytest.MonkeyPatch, module: Any, names: tuple[str, ...], into: list[str] | None = None
) -> list[str]:
    """Wrap the functions ``names`` of ``module`` so that each call appends its name to the list returned.

    ``into`` gathers the calls of several modules in one list. The compiled-kernel tests use it to
    show that a kernel ran (or did not).
    """
    calls: list[str] = [] if into is None else into
    for name in names:
        function = getattr(module, name)
        monkeypatch.setattr(
            module, name, lambda *a, _f=function, _n=name, **kw: calls.append(_n) or _f(*a, **kw)
        )
    return calls


#: The lists :func:`opened_paths` blocks are filling, innermost last; ``None`` until the hook is added.
_OPEN_LOGS: list[list[str]] | None = None


def _record_open(event: str, args: tuple[Any, ...]) -> None:
    if event == "open" and _OPEN_LOGS and args and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.fsdecode(args[0])
        for log in _OPEN_LOGS:
            log.append(path)


@contextlib.contextmanager
def opened_paths() -> Iterator[list[str]]:
    """The paths Python opens (its ``open`` audit events) inside the ``with`` block, in order.

    One audit hook serves the whole process, added at the first use: a hook cannot be removed, and
    each one adds a Python call to every audited event after it (``id()`` is one; two hooks added
    at import cost the suite about 4 s of CPU). Opens made by C libraries (libhdf5's own) raise no
    event: a test that must see those watches a FIFO too.
    """
    global _OPEN_LOGS
    if _OPEN_LOGS is None:
        _OPEN_LOGS = []
        sys.addaudithook(_record_open)
    log: list[str] = []
    _OPEN_LOGS.append(log)
    try:
        yield log
    finally:
        _OPEN_LOGS.remove(log)


@pytest.fixture(autouse=True, scope="module")
def torch_on_one_thread() -> Iterator[None]:
    """PyTorch on one thread for the module that imports this fixture (autouse there), restored after.

    Its references run on small tensors, where its spare OpenMP workers only spin against NumPy's
    BLAS (xdist workers already start with one thread, see conftest.py; a file run alone does not).
    """
    if importlib.util.find_spec("torch") is None:  # the tests that need it skip
        yield
        return
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
