"""Where kernels built ahead of time live, and loading them: no numba, no LLVM.

:mod:`framework.runtime.ahead` builds them (``framework kernels build``);
:mod:`framework.runtime.jit` loads a family's module from here when one
matches. The store is ``FRAMEWORK_KERNEL_CACHE``, else
``$XDG_CACHE_HOME/framework/kernels`` (``~/.cache/framework/kernels``), a
folder per machine tag in it (:func:`machine_folder`: the numba, NumPy and
Python versions, the platform, the CPU's model and features), and in that
one extension module per family, named after the family and a hash of its
source file (:func:`paths`), with a manifest beside it: JSON, read as data,
mapping each kernel's argument kinds (:func:`framework.runtime.jit.kind_of`)
to the module's function for them.
"""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.util
import os
import re
import sys
import threading
import warnings
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

# hashlib (OpenSSL), json and platform are imported where used: this module is imported with the
# plugins, at every `import framework`, and those three took 6-10 ms of it.

__all__ = ["FORMAT", "Table", "cache_dir", "machine_folder", "paths", "any_built", "load", "version"]

#: the manifest's format; a manifest of another is ignored
FORMAT = 1

Table = dict[str, dict[Any, Callable[..., Any]]]


def cache_dir() -> Path:
    """``FRAMEWORK_KERNEL_CACHE``, else ``$XDG_CACHE_HOME/framework/kernels`` (``~/.cache/...``)."""
    chosen = os.environ.get("FRAMEWORK_KERNEL_CACHE")
    if chosen:
        return Path(chosen)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "framework" / "kernels"


@functools.cache
def _cpu() -> str:
    """The CPU's model and feature flags (Linux), else what ``platform`` knows of it (read once)."""
    import platform

    try:
        with open("/proc/cpuinfo") as info:
            lines = info.read().splitlines()
    except OSError:
        return platform.processor()
    wanted = ("model name", "flags", "Features", "CPU part")
    found = {line.split(":")[0].strip(): line for line in lines if line.split(":")[0].strip() in wanted}
    return "\n".join(found.get(key, "") for key in wanted)


def version(distribution: str) -> str:
    """The installed version of ``distribution``, or ``"none"``."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "none"


def machine_folder() -> Path:
    """The folder of this machine's builds: the cache, then a hash of what the machine code depends on."""
    import hashlib
    import platform

    parts = (
        version("numba"),
        np.__version__,
        sys.implementation.cache_tag,
        sys.platform,
        platform.machine(),
        _cpu(),
    )
    return cache_dir() / hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def paths(family: str, source: str) -> tuple[str, Path]:
    """The module name of ``family`` (defined in the file ``source``, whose hash is in the name) and its
    manifest's path.

    Raises:
        OSError: ``source`` cannot be read (a family defined outside a file): it has no build, since
            nothing would tell an old build from a new one.
    """
    import hashlib

    digest = hashlib.sha256(Path(source).read_bytes()).hexdigest()[:12]
    module = "fwk_" + re.sub(r"\W", "_", family) + "_" + digest
    return module, machine_folder() / f"{module}.json"


def any_built() -> bool:
    """Whether this machine's folder holds any build (checked without importing numba)."""
    folder = machine_folder()
    return folder.is_dir() and any(folder.glob("*.json"))


_warned: set[str] = set()
_warn_lock = threading.Lock()


def _warn(message: str) -> None:
    with _warn_lock:
        if message in _warned:
            return
        _warned.add(message)
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def load(family: str, source: str) -> Table | None:
    """The family's ahead-of-time kernels, ``{kernel: {argument kinds: function}}``; ``None`` without a build.

    A build that does not load (a corrupt or foreign file, or one another
    user could have written: see :func:`_check_trusted`) is reported once
    with a ``RuntimeWarning`` and not used: the kernels then come from numba.
    """
    import json

    try:
        module_name, manifest_path = paths(family, source)
    except OSError:  # no source file to tell builds apart: numba's kernels
        return None
    if not manifest_path.is_file():
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("format") != FORMAT or manifest.get("family") != family:
            raise ValueError(f"it is not a manifest of {family}")
        module_path = manifest_path.with_name(manifest["module"])  # a bare file name, or ValueError
        for path in (manifest_path.parent, manifest_path, module_path):
            _check_trusted(path)
        module = _import(module_name, module_path)
        return {
            name: {from_json(kind): getattr(module, export) for kind, export in versions}
            for name, versions in manifest["kernels"].items()
        }
    except Exception as error:  # a damaged build is not worth a crash: numba compiles instead
        _warn(
            f"the ahead-of-time kernels in {manifest_path.parent} did not load "
            f"({type(error).__name__}: {error}); numba compiles them instead "
            "(run 'framework kernels build' to rebuild them)"
        )
        return None


def _check_trusted(path: Path) -> None:
    """Refuse a build another user could have written: its folder and files must be this user's and
    writable by no one else (loading a module runs its code; ``FRAMEWORK_KERNEL_CACHE`` may point at
    a shared folder such as ``/tmp``). Not checked where the platform has no user ids (Windows).

    Raises:
        PermissionError: ``path`` belongs to another user, or its group or others may write it.
    """
    getuid = getattr(os, "getuid", None)
    if getuid is None:
        return
    info = path.stat()
    if info.st_uid != getuid():
        raise PermissionError(f"{path} belongs to user id {info.st_uid}, not to this user ({getuid()})")
    if info.st_mode & 0o022:
        raise PermissionError(f"{path} is writable by its group or by others (mode {info.st_mode & 0o777:o})")


def _import(name: str, path: Path) -> ModuleType:
    loader = importlib.machinery.ExtensionFileLoader(name, str(path))
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    if spec is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def to_json(kind: Any) -> Any:
    """An argument kind (nested tuples) as JSON (nested lists)."""
    return [to_json(k) for k in kind] if isinstance(kind, tuple) else kind


def from_json(kind: Any) -> Any:
    """The argument kind a manifest stores as JSON (nested lists) back as nested tuples."""
    return tuple(from_json(k) for k in kind) if isinstance(kind, list) else kind
