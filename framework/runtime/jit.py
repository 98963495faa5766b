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

Loading numba costs a process about 140 MB of memory. ``framework kernels
build`` compiles the kernels ahead of time into one extension module per
family (:mod:`framework.runtime.ahead`); a process that finds them
(:mod:`framework.runtime.kernel_cache`) loads
those instead and never imports numba, unless a kernel meets arguments of a
kind the build did not see (then numba compiles that one, as without a build).
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from framework.errors import ConfigError
from framework.runtime import kernel_cache

__all__ = [
    "available",
    "enabled",
    "environment_choice",
    "set_enabled",
    "using",
    "takes",
    "compiled",
    "families",
    "kind_of",
]

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
            if _any_current_build():  # the kernels load from the build: numba need not import
                _available = True
                return True
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


def _any_current_build() -> bool:
    """Whether a family defined so far has a build of its current source on this machine."""
    if not kernel_cache.any_built():  # no build at all: no source file need be read
        return False
    for family in list(_families.values()):
        try:
            if kernel_cache.paths(family.name, family.source)[1].is_file():
                return True
        except OSError:  # no source file: never built
            continue
    return False


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


class KernelFamily:
    """The kernels one ``build(numba)`` function makes, loaded on first use (see :func:`compiled`).

    ``name`` is the build function's module and qualified name, ``source``
    the file it is defined in (an ahead-of-time build of an older version of
    that file is not used). ``ahead`` is ``False`` for a family numba's
    ahead-of-time compiler cannot build (``parallel=True`` kernels): its
    kernels always come from numba.
    """

    def __init__(self, build: Callable[[Any], Family], ahead: bool = True) -> None:
        self.build = build
        self.ahead = ahead
        self.name = f"{build.__module__}.{build.__qualname__}"
        self.source = inspect.getsourcefile(build) or ""
        self._jitted: dict[str, _FirstCalls] = {}
        self._kernels: Family = {}

    def __call__(self) -> Family:
        if not self._kernels:
            with _lock:
                if not self._kernels:
                    self._kernels.update(self._load())
        return self._kernels

    def _load(self) -> Family:
        loaded = kernel_cache.load(self.name, self.source) if _ahead_on and self.ahead else None
        if loaded is None:
            return dict(self.jitted())
        return {name: AheadKernel(name, table, self) for name, table in loaded.items()}

    def jitted(self) -> dict[str, _FirstCalls]:
        """The numba dispatchers (numba imported and the kernels compiled on their first calls)."""
        if not self._jitted:
            with _jit_lock:
                if not self._jitted:
                    _require(self.build.__qualname__)
                    try:
                        import numba  # the extra, imported on first use
                    except Exception as error:  # available() trusted a build and did not import it
                        raise ConfigError(
                            f"{self.name}: a kernel needs numba for arguments its ahead-of-time build "
                            f"lacks, and numba does not import ({type(error).__name__}: {error}); {_EXTRA}"
                        ) from error

                    self._jitted.update({n: _FirstCalls(k) for n, k in self.build(numba).items()})
        return self._jitted

    def reset(self) -> None:
        """Forget what was loaded: the next call loads again (the ahead-of-time build, or numba)."""
        with _lock:
            self._kernels.clear()


_families: dict[str, KernelFamily] = {}
#: ``(family, kernel, argument kinds)`` of each call an ahead-of-time build could not serve
misses: set[tuple[str, str, Any]] = set()
_ahead_on = True  # False while ``framework kernels build`` records the kinds (the kernels must be numba's)
_jit_lock = threading.RLock()


def families() -> list[KernelFamily]:
    """Every kernel family defined so far (by importing the modules that define them)."""
    return list(_families.values())


def compiled(build: Callable[[Any], Family], *, ahead: bool = True) -> KernelFamily:
    """Memoise a kernel family: ``build(numba)`` returns the family's jitted functions by name.

    The returned :class:`KernelFamily`, called, gives the kernels by name:
    an ahead-of-time build's (:mod:`framework.runtime.ahead`) where one
    matches, numba's otherwise. numba is imported at the first call that
    needs it (never at ``import framework``); each function compiles on its
    first call for each kind of arguments. ``ahead=False`` marks a family
    that ``framework kernels build`` cannot compile (``parallel=True``
    kernels; use it as ``compiled_at_first_use``): it is never built, and
    its kernels always come from numba.

    Example:
        >>> @compiled
        ... def _kernels(numba):
        ...     @numba.njit(nogil=True, cache=True)
        ...     def double(x, out):
        ...         out[:] = 2 * x
        ...     return {"double": double}
    """
    family = KernelFamily(build, ahead)
    _families[family.name] = family
    return family


def compiled_at_first_use(build: Callable[[Any], Family]) -> KernelFamily:
    """:func:`compiled` for a family without an ahead-of-time build (``ahead=False``)."""
    return compiled(build, ahead=False)


def first_use_kernels() -> bool:
    """Whether a family without an ahead-of-time build (:func:`compiled_at_first_use`) may run now.

    numba must import (tried once per process: in a process running a build,
    this is what imports it, as a call of a kind the build lacks does, and
    only the memory differs); and ``framework kernels build`` or ``check``
    must not be running the workloads. Those must see the calls of a process
    where numba does not import, which takes another path.
    """
    global _numba_imports
    if _workloads_running:
        return False
    if _numba_imports is None:
        try:
            import numba  # noqa: F401  (the extra, imported on first use)
        except Exception:  # a broken install fails in many ways; available() has warned where it matters
            _numba_imports = False
        else:
            _numba_imports = True
    return _numba_imports


_numba_imports: bool | None = None
#: True while ``framework kernels build`` or ``check`` runs the kernel workloads
_workloads_running = False


Kind = Any


def kind_of(value: Any) -> Kind:
    """What numba's typing sees of ``value``: two values of one kind run one compiled version.

    An array is its dtype, ``ndim``, layout (``C``, ``F`` or ``A``), whether
    it is read-only and whether it is aligned; a tuple the kinds of its items.
    A compiled kernel trusts the layout and dtype it was built for, so the
    ahead-of-time kernels are chosen by this exactly (a float64 array given to
    a float32 version would be read as garbage, or crash).
    """
    if isinstance(value, np.ndarray):
        flags = value.flags
        layout = "C" if flags.c_contiguous else "F" if flags.f_contiguous else "A"
        return ("array", value.dtype.str, value.ndim, layout, not flags.writeable, flags.aligned)
    if isinstance(value, bool):
        return ("bool",)
    if isinstance(value, int):
        return ("int64",) if -(2**63) <= value < 2**63 else ("int", "wide")
    if isinstance(value, float):
        return ("float64",)
    if value is None:
        return ("none",)
    if isinstance(value, np.generic):
        return ("scalar", value.dtype.str)
    if isinstance(value, tuple):
        return ("tuple", *map(kind_of, value))
    return ("object", type(value).__module__, type(value).__qualname__)


class AheadKernel:
    """A kernel of an ahead-of-time build: the compiled version for the arguments' kinds, else numba's."""

    def __init__(self, name: str, table: dict[Kind, Callable[..., Any]], family: KernelFamily) -> None:
        self.name = name
        self.table = table
        self.family = family

    def __call__(self, *args: Any) -> Any:
        kinds = tuple(map(kind_of, args))
        kernel = self.table.get(kinds)
        if kernel is None:  # a kind the build did not see: numba compiles it, as without a build
            misses.add((self.family.name, self.name, kinds))
            return self.family.jitted()[self.name](*args)
        return kernel(*args)


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

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        #: numba's argument types for each kind of arguments called so far (what a build compiles)
        self.seen: dict[Any, tuple[Any, ...]] = {}

    def __call__(self, *args: Any) -> Any:
        key = tuple(map(kind_of, args))
        if key in self.seen:
            return self.kernel(*args)
        with _across_processes():
            result = self.kernel(*args)
        typeof = getattr(self.kernel, "typeof_pyval", None)  # numba's dispatchers have it
        self.seen[key] = tuple(map(typeof, args)) if typeof is not None else ()
        return result


@contextmanager
def _across_processes(name: str = "jit") -> Iterator[None]:
    """Hold the lock file ``framework-{name}-{uid}.lock`` of the temporary folder for the block."""
    import tempfile

    try:
        import fcntl
    except ImportError:  # no flock (Windows): numba's cache is as safe as numba makes it
        yield
        return
    path = os.path.join(tempfile.gettempdir(), f"framework-{name}-{os.getuid()}.lock")
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
