"""BLAS helpers for the training step: fused in-place updates, ``y <- a x + b y``.

NumPy has no fused multiply-add on arrays: ``y += a * x`` writes ``a * x`` to
a temporary and reads it back, so an SGD-with-momentum step costs four passes
over every weight. The BLAS library NumPy itself links provides the fused
level-1 routines (``axpy``, and OpenBLAS's ``axpby``), which do each update in
one pass, on as many threads as the matrix products use. This module finds
them in that library through :mod:`ctypes` and falls back to NumPy ufuncs
wherever they are missing, so results never depend on finding them (they can
differ from the ufunc path in the last bit: BLAS may fuse the multiply-add).

:func:`sum_rows` sums a batch of gradients as one matrix-vector product,
which BLAS runs faster than NumPy's reduction. :func:`num_threads` reads how
many threads the products run on now (``threadpoolctl`` limits included), so
a layer can pick the lowering that is faster on that many cores.

Only NumPy's own BLAS is used -- the wheels' bundled OpenBLAS (numpy 2's
``scipy_openblas64_`` or numpy 1's ``openblas64_``, whose symbols name their
64-bit integer interface) or an OpenBLAS that reports its integer width. Set
``FRAMEWORK_BLAS_UPDATES=0`` to always use the ufuncs.

>>> import numpy as np
>>> y = np.ones(3, dtype=np.float32)
>>> axpby(2.0, np.arange(3, dtype=np.float32), 0.5, y)
>>> y
array([0.5, 2.5, 4.5], dtype=float32)
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

__all__ = ["axpby", "axpy", "backend", "num_threads", "one_thread", "set_num_threads", "sum_rows"]

_Routine = Callable[..., None]
# (dtype char) -> (axpy, axpby): y <- a x + y and y <- a x + b y on contiguous vectors.
_ROUTINES: dict[str, tuple[_Routine, _Routine]] = {}
_BACKEND = "numpy"
_LOADED = False  # the library is looked for on first use, not at import
_MAX_SIZE = 2**31 - 1  # the largest vector the bound integer type can count (raised for 64-bit builds)

# (symbol prefix, suffix, integer type): how each known OpenBLAS build names the CBLAS routines.
_NAMINGS = (
    ("scipy_cblas_", "64_", ctypes.c_int64),  # numpy >= 2 wheels (scipy-openblas64)
    ("scipy_cblas_", "", ctypes.c_int32),  # scipy-openblas32
    ("cblas_", "64_", ctypes.c_int64),  # numpy 1.x wheels (openblas64_)
    ("cblas_", "", None),  # a system OpenBLAS: its integer width is read from its config
)


def _candidate_libraries() -> list[str]:
    """Paths of the OpenBLAS NumPy ships beside itself, then any others loaded (Linux)."""
    paths: list[str] = []
    root = os.path.dirname(os.path.dirname(np.__file__))
    for pattern in ("numpy.libs/*openblas*", "numpy/.dylibs/*openblas*", "scipy_openblas*/lib/*openblas*"):
        paths += sorted(glob.glob(os.path.join(root, pattern)))
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1]
                if "openblas" in os.path.basename(path).lower() and path not in paths:
                    paths.append(path)
    except OSError:
        pass
    return paths


def _int_type_from_config(lib: Any) -> Any:
    get_config = getattr(lib, "openblas_get_config", None)
    if get_config is None:
        return None
    get_config.restype = ctypes.c_char_p
    config = get_config() or b""
    return ctypes.c_int64 if b"USE64BITINT" in config else ctypes.c_int32


def _bind(lib: Any, prefix: str, suffix: str, int_type: Any) -> dict[str, tuple[_Routine, _Routine]] | None:
    routines = {}
    for char, c_scalar in (("f", ctypes.c_float), ("d", ctypes.c_double)):
        letter = "s" if char == "f" else "d"
        try:
            axpy = getattr(lib, f"{prefix}{letter}axpy{suffix}")
            axpby = getattr(lib, f"{prefix}{letter}axpby{suffix}")
        except AttributeError:
            return None
        pointer = ctypes.c_void_p
        axpy.argtypes = [int_type, c_scalar, pointer, int_type, pointer, int_type]
        axpby.argtypes = [int_type, c_scalar, pointer, int_type, c_scalar, pointer, int_type]
        axpy.restype = axpby.restype = None
        routines[char] = (axpy, axpby)
    return routines


def _self_test(routines: dict[str, tuple[_Routine, _Routine]]) -> bool:
    for char, (axpy, axpby) in routines.items():
        dtype = np.dtype(char)
        x = np.arange(1.0, 6.0, dtype=dtype)
        y = np.full(5, 2.0, dtype=dtype)
        axpby(5, 3.0, x.ctypes.data, 1, 0.5, y.ctypes.data, 1)
        if not np.array_equal(y, 3.0 * np.arange(1.0, 6.0) + 1.0):
            return False
        axpy(5, -1.0, x.ctypes.data, 1, y.ctypes.data, 1)
        if not np.array_equal(y, 2.0 * np.arange(1.0, 6.0) + 1.0):
            return False
    return True


def _load() -> None:
    global _BACKEND, _LOADED, _MAX_SIZE
    _LOADED = True
    if os.environ.get("FRAMEWORK_BLAS_UPDATES", "1").strip().lower() in ("0", "false", "no", "off"):
        return
    if sys.platform == "win32":  # NumPy's DLL is not found this way there; the ufuncs serve
        return
    for path in _candidate_libraries():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix, int_type in _NAMINGS:
            kind = int_type if int_type is not None else _int_type_from_config(lib)
            if kind is None:
                continue
            routines = _bind(lib, prefix, suffix, kind)
            if routines is not None and _self_test(routines):
                _MAX_SIZE = 2**63 - 1 if kind is ctypes.c_int64 else 2**31 - 1
                _ROUTINES.update(routines)
                _BACKEND = f"{os.path.basename(path)} ({prefix}*axpby{suffix})"
                return


def backend() -> str:
    """Which implementation runs the updates: the BLAS library and symbols, or ``"numpy"``."""
    if not _LOADED:
        _load()
    return _BACKEND


def _fast(x: np.ndarray, y: np.ndarray) -> tuple[_Routine, _Routine] | None:
    if not _LOADED:
        _load()
    routines = _ROUTINES.get(y.dtype.char)
    if (
        routines is None
        or x.dtype != y.dtype
        or not y.dtype.isnative
        or x.shape != y.shape
        or y.size > _MAX_SIZE
        or not (x.flags.c_contiguous and y.flags.c_contiguous and y.flags.writeable)
        or np.may_share_memory(x, y)
    ):
        return None
    return routines


_char_from_buffer = ctypes.c_char.from_buffer
_addressof = ctypes.addressof


def _address(a: np.ndarray) -> int:
    """The address of ``a``'s first element (C-contiguous ``a``).

    Through the buffer protocol this costs a fifth of ``a.ctypes.data``,
    which builds a helper object on every access; read-only arrays, which
    ``from_buffer`` refuses, take that slower road.
    """
    try:
        return _addressof(_char_from_buffer(a))  # type: ignore[arg-type]  # ndarray has the buffer protocol
    except (TypeError, ValueError):  # read-only, or empty
        return a.ctypes.data


def axpy(alpha: float, x: np.ndarray, y: np.ndarray, work: np.ndarray | None = None) -> None:
    """``y <- alpha * x + y`` in place; ``x`` and ``y`` have one shape.

    Args:
        alpha: the scale of ``x``.
        x: the array added, unchanged.
        y: the array updated in place.
        work: an optional scratch array shaped like ``y``, used by the NumPy
            path for ``alpha * x`` so it allocates nothing.
    """
    routines = _fast(x, y)
    if routines is not None:
        routines[0](y.size, alpha, _address(x), 1, _address(y), 1)
    elif alpha == 1.0:
        y += x
    else:
        y += np.multiply(x, alpha, out=work) if work is not None else alpha * x


def axpby(alpha: float, x: np.ndarray, beta: float, y: np.ndarray, work: np.ndarray | None = None) -> None:
    """``y <- alpha * x + beta * y`` in place; ``x`` and ``y`` have one shape.

    Args:
        alpha: the scale of ``x``.
        x: the array added, unchanged.
        beta: the scale of ``y`` before the addition.
        y: the array updated in place.
        work: an optional scratch array for the NumPy path (see :func:`axpy`).
    """
    routines = _fast(x, y)
    if routines is not None:
        routines[1](y.size, alpha, _address(x), 1, beta, _address(y), 1)
        return
    if np.may_share_memory(x, y):  # scaling y first would change x
        y[...] = alpha * x + beta * y
        return
    if beta != 1.0:
        y *= beta
    axpy(alpha, x, y, work)


_ONES: dict[tuple[int, str], np.ndarray] = {}


def sum_rows(a: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``a.sum(axis=0)`` of a 2-D ``a`` as one matrix-vector product, ``1^T a``.

    A bias gradient is such a sum over the batch; as a BLAS product it runs
    about five times faster than NumPy's reduction for a ``(128, 512)``
    float32 array (4 against 20 us), on the threads the products use. The
    sum is accumulated in ``a``'s dtype without pairwise summation, which in
    float32 differs from ``a.sum(axis=0)`` in the last bits.

    Args:
        a: ``(N, M)`` floating-point array, any memory order.
        out: optional ``(M,)`` array to write into.

    Returns:
        ``(M,)``, the column sums (``out`` if given).
    """
    key = (a.shape[0], a.dtype.str)
    ones = _ONES.get(key)
    if ones is None:
        if len(_ONES) >= 16:
            _ONES.clear()  # one call, safe with other threads (next(iter()) then pop is not)
        ones = _ONES[key] = np.ones(a.shape[0], dtype=a.dtype)
        ones.setflags(write=False)
    return np.matmul(ones, a, out=out)


# OpenBLAS's own query and setting of its thread count, under each build's naming.
_THREAD_PREFIXES = ("scipy_openblas", "openblas")
_THREAD_SUFFIXES = ("64_", "")
_thread_calls: tuple[Callable[[], int], Callable[[int], None]] | None = None
_thread_calls_loaded = False


def _find_thread_calls() -> tuple[Callable[[], int], Callable[[int], None]] | None:
    for path in _candidate_libraries():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in _THREAD_PREFIXES:
            for suffix in _THREAD_SUFFIXES:
                query = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                setter = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                if query is not None and setter is not None:
                    query.argtypes, query.restype = [], ctypes.c_int
                    setter.argtypes, setter.restype = [ctypes.c_int], None
                    return query, setter
    return None


def _thread_api() -> tuple[Callable[[], int], Callable[[int], None]] | None:
    global _thread_calls, _thread_calls_loaded
    if not _thread_calls_loaded:
        _thread_calls_loaded = True
        if sys.platform != "win32":
            _thread_calls = _find_thread_calls()
    return _thread_calls


def num_threads() -> int:
    """How many threads NumPy's BLAS runs a large product on now (1 when it cannot be read).

    OpenBLAS's ``openblas_get_num_threads`` through :mod:`ctypes` (about a
    microsecond), so a ``threadpoolctl`` limit set after import is seen.
    """
    api = _thread_api()
    return 1 if api is None else max(1, int(api[0]()))


def set_num_threads(n: int) -> int | None:
    """Run NumPy's BLAS on ``n`` threads from now on; returns the previous count.

    OpenBLAS's ``openblas_set_num_threads`` through :mod:`ctypes` (what
    ``threadpoolctl`` calls too). Returns ``None``, changing nothing, when
    NumPy's BLAS is not an OpenBLAS this module can find.
    """
    api = _thread_api()
    if api is None:
        return None
    previous = max(1, int(api[0]()))
    api[1](int(n))
    return previous


_ONE_LOCK = threading.Lock()
_one_users = 0
_one_saved: int | None = None


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """NumPy's BLAS on one thread for the block, the previous count back when the last such block
    ends. Blocks may overlap across threads (two ``predict(threads=2)`` at once): the count is
    saved by the first to enter and restored by the last to leave, never one's saved 1 by another.
    """
    global _one_users, _one_saved
    with _ONE_LOCK:
        if _one_users == 0:
            _one_saved = set_num_threads(1)
        _one_users += 1
    try:
        yield
    finally:
        with _ONE_LOCK:
            _one_users -= 1
            if _one_users == 0 and _one_saved is not None:
                set_num_threads(_one_saved)
                _one_saved = None
