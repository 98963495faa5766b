"""Compiled kernels, when the ``[jit]`` extra (numba) is installed.

A layer with a compiled kernel asks :func:`enabled` on each call and runs the
kernel when it says yes, its NumPy code otherwise; both compute the same
maths (each kernel is tested against the NumPy path and against PyTorch).
NumPy's element-wise operations make one pass over memory each; a kernel
makes one pass for what takes NumPy several (BatchNorm's forward and
backward: 3x faster on one core, see docs/benchmarks.md).

The choice, in order:

- :func:`set_enabled` (``True``, ``False``, or ``None`` to go back to the
  default), or the :func:`using` context for a block;
- the environment variable ``FRAMEWORK_JIT``: ``0`` never, ``1`` always (an
  error at the first kernel when numba is missing), unset or ``auto``: when
  numba is installed.

Kernels run on the calling thread (no thread pool of their own: OpenBLAS's
threads would spin against it, see docs/benchmarks.md) and release the GIL,
so the threads of ``fit(threads=K)`` run them side by side. Each is compiled
on its first call for each dtype (about a second; numba caches the machine
code beside the plugin, so later processes load it in milliseconds).
"""

from __future__ import annotations

import importlib.util
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from framework.errors import ConfigError

__all__ = ["available", "enabled", "environment_choice", "set_enabled", "using", "takes", "compiled"]

_EXTRA = 'pip install "framework[jit]" (or: pip install numba)'
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_choice: bool | None = None
_available: bool | None = None
_lock = threading.Lock()
_first_calls_lock = threading.Lock()  # a process's threads, before the file lock between processes


def available() -> bool:
    """Whether numba is installed and imports (tried once, when a layer first asks for a kernel).

    An installed numba that fails to import (one built for an older NumPy,
    say) is reported once with a ``RuntimeWarning``; the layers then run
    their NumPy code.
    """
    global _available
    if _available is None:
        _available = False
        if importlib.util.find_spec("numba") is not None:
            try:
                import numba  # noqa: F401  (the extra: imported here, never at import framework)
            except Exception as error:  # a broken install fails in many ways, not only ImportError
                warnings.warn(
                    f"numba is installed but does not import ({type(error).__name__}: {error}); "
                    "the layers run their NumPy code",
                    RuntimeWarning,
                    stacklevel=2,
                )
            else:
                _available = True
    return _available


def environment_choice() -> bool | None:
    """``FRAMEWORK_JIT``: ``False`` for ``0``, ``True`` for ``1``, ``None`` for ``auto`` or unset.

    Reads the variable only: numba is not imported.

    Raises:
        ConfigError: any other value.
    """
    value = os.environ.get("FRAMEWORK_JIT", "auto").strip().lower()
    if value in ("", "auto"):
        return None
    if value in ("0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"FRAMEWORK_JIT: expected 0, 1 or auto, got {value!r}")


def _from_environment() -> bool:
    choice = environment_choice()
    if choice is None:
        return available()
    if choice:
        _require("FRAMEWORK_JIT=1")
    return choice


def _require(what: str) -> None:
    if not available():
        raise ConfigError(
            f"{what} asks for the compiled kernels, but numba is not installed (or does not import); {_EXTRA}"
        )


def enabled() -> bool:
    """Whether layers run their compiled kernels now (see the module's text for the rules)."""
    return _from_environment() if _choice is None else _choice


def takes(*arrays: np.ndarray | None) -> bool:
    """Whether a kernel runs on these arrays now (``None`` skipped): one dtype, float32 or float64, each
    C-contiguous, and :func:`enabled`. The arrays are looked at first: an array no kernel takes (float16,
    a strided view) never imports numba.
    """
    given = [a for a in arrays if a is not None]
    if not given or given[0].dtype not in _FLOATS:
        return False
    dtype = given[0].dtype
    return all(a.dtype == dtype and a.flags.c_contiguous for a in given) and enabled()


def set_enabled(flag: bool | None) -> None:
    """Kernels on (``True``, needs numba), off (``False``), or back to the default (``None``).

    Raises:
        ConfigError: ``True`` without numba installed (names the ``jit``
            extra); a ``flag`` that is not a bool or ``None``.
    """
    global _choice
    if flag is not None and not isinstance(flag, bool):
        raise ConfigError(f"jit.set_enabled: expected True, False or None, got {flag!r}")
    if flag:
        _require("jit.set_enabled(True)")
    _choice = flag


@contextmanager
def using(flag: bool | None) -> Iterator[None]:
    """Within the block, :func:`set_enabled` ``(flag)``; the previous choice after it."""
    previous = _choice
    set_enabled(flag)
    try:
        yield
    finally:
        set_enabled(previous)


Family = dict[str, Callable[..., Any]]


def compiled(build: Callable[[Any], Family]) -> Callable[[], Family]:
    """Memoise a kernel family: ``build(numba)`` returns the family's jitted functions by name.

    numba is imported at the first call of the returned function (never at
    ``import framework``); each function compiles on its first call for each
    argument dtype.

    Example:
        >>> @compiled
        ... def _kernels(numba):
        ...     @numba.njit(nogil=True, cache=True)
        ...     def double(x):
        ...         return 2 * x
        ...     return {"double": double}
    """
    family: Family = {}

    def get() -> Family:
        if not family:
            with _lock:
                if not family:
                    _require(build.__qualname__)
                    import numba  # the extra, imported on first use

                    family.update({name: _FirstCalls(kernel) for name, kernel in build(numba).items()})
        return family

    return get


def _kind(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.dtype.num, value.ndim, value.flags.c_contiguous, value.flags.writeable
    return type(value)


class _FirstCalls:
    """A kernel whose first call for each kind of arguments holds a lock shared by every process.

    That call compiles the kernel, or loads it from numba's cache, and may save
    it there. numba numbers a function's cache files by how many its index
    holds, so two processes compiling two signatures at once (the float32 and
    float64 versions in two test workers, say) both wrote file 1, and one
    loaded the other's machine code (seen: "can't unbox array"). The lock is a
    file in the temporary folder, held with ``flock`` (no lock where the
    platform has none); later calls go straight to the kernel.
    """

    def __init__(self, kernel: Callable[..., Any]) -> None:
        self.kernel = kernel
        self.seen: set[Any] = set()

    def __call__(self, *args: Any) -> Any:
        key = tuple(map(_kind, args))
        if key in self.seen:
            return self.kernel(*args)
        with _across_processes():
            result = self.kernel(*args)
        self.seen.add(key)
        return result


@contextmanager
def _across_processes() -> Iterator[None]:
    import tempfile

    try:
        import fcntl
    except ImportError:  # no flock (Windows): numba's cache is as safe as numba makes it
        yield
        return
    path = os.path.join(tempfile.gettempdir(), f"framework-jit-{os.getuid()}.lock")
    with _first_calls_lock:
        handle = None
        try:
            handle = open(path, "a")  # closed below, after the kernel's call
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError:  # a temporary folder we cannot write: no lock, as where there is no flock
            if handle is not None:
                handle.close()
            yield
            return
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
