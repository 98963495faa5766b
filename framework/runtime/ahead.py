"""Kernels compiled ahead of time: ``framework kernels build`` and ``framework kernels check``.

numba compiles a kernel at its first call and keeps the machine code in its
cache, but loading that code back still needs numba and LLVM: about 140 MB of
memory in every process that runs a kernel (``import numba`` alone is 70 MB).
:func:`build` compiles each kernel family (:func:`framework.runtime.jit.compiled`)
once, with numba's ahead-of-time compiler (``numba.pycc``), into a CPython
extension module of its own. A later process loads that module (a fraction
of a megabyte) and calls its functions; numba is not imported.

Which versions to compile: a compiled kernel is specialised to the kinds of
its arguments (:func:`framework.runtime.jit.kind_of`: dtypes, dimensions,
layouts). The build runs every installed plugin's kernel workload (the
``register_kernel_workloads`` hook: the built-in layers forward and backward
in float32 and float64) on numba's kernels and compiles each kind they were
called with. A later call of another kind goes to numba, as without a build.

Where the modules go, and how a process finds and loads them:
:mod:`framework.runtime.kernel_cache`. A module is used only on the kind of
machine it was built for, and only while its family's source file is
unchanged.

The modules are built for this CPU (``target_cpu="host"``) and release the
GIL, as the numba kernels do.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from framework.errors import ConfigError
from framework.runtime import jit
from framework.runtime.kernel_cache import FORMAT, machine_folder, paths, to_json, version

__all__ = ["build", "check", "status"]


def status() -> list[tuple[str, str]]:
    """``(family, state)`` for every family of the installed plugins: built (how many versions), or not."""
    _load_plugins()
    rows = []
    for family in jit.families():
        if not family.ahead:
            rows.append((family.name, "compiled at first use only (parallel kernels: not built ahead)"))
            continue
        try:
            _, manifest_path = paths(family.name, family.source)
        except OSError:
            rows.append((family.name, "no source file: not built (numba compiles its kernels)"))
            continue
        if manifest_path.is_file():
            try:
                kernels = json.loads(manifest_path.read_text())["kernels"]
                versions = sum(len(v) for v in kernels.values())
                rows.append((family.name, f"built: {len(kernels)} kernels, {versions} versions"))
            except (ValueError, KeyError, TypeError) as error:
                rows.append((family.name, f"damaged manifest ({error})"))
        else:
            rows.append((family.name, "not built (numba compiles its kernels at first use)"))
    return rows


def _load_plugins() -> list[tuple[str, Callable[[], None]]]:
    """Import every plugin (which defines its kernel families); their kernel workloads by name."""
    from framework.registry.manager import REGISTRY

    workloads: list[tuple[str, Callable[[], None]]] = []

    def register(name: str, run: Callable[[], None]) -> None:
        if not callable(run):
            raise ConfigError(f"kernel workload {name!r}: expected a callable, got {run!r}")
        workloads.append((name, run))

    for function, _info in REGISTRY.hook_implementations("register_kernel_workloads"):
        function(register=register)
    return workloads


Workloads = list[tuple[str, Callable[[], None]]]


def build(
    report: Callable[[str], None] = lambda line: None,
    *,
    families: list[jit.KernelFamily] | None = None,
    workloads: Workloads | None = None,
) -> list[Path]:
    """Compile every kernel family ahead of time for this machine; returns the modules written.

    Runs each plugin's kernel workload on numba's kernels, then compiles,
    per family, each kind of arguments its kernels were called with. Each
    module and manifest is written under a temporary name and renamed into
    place, the manifest last: a process never sees half a build.

    Args:
        report: called with a line of progress per workload and per module.
        families: the families to build (default: every family the plugins define).
        workloads: ``(name, run)`` pairs to run (default: the plugins' ``register_kernel_workloads``).

    Raises:
        ConfigError: numba is not installed, or has no ahead-of-time compiler
            (``numba.pycc``, deprecated by numba), or the C compiler it needs
            is missing.
    """
    jit._require("framework kernels build")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numba marks pycc as pending deprecation
            from numba.pycc import CC
            from numba.pycc import compiler as pycc_compiler
    except ImportError as error:
        if "setuptools" in f"{error.name} {error}":  # numba says so in its own words
            raise ConfigError(
                "framework kernels build: numba's ahead-of-time compiler needs setuptools "
                '(pip install setuptools, or pip install "framework[jit]")'
            ) from None
        raise ConfigError(
            f"this numba ({version('numba')}) has no ahead-of-time compiler ({error}); "
            "the kernels compile at their first use instead"
        ) from None
    plugin_workloads = _load_plugins()
    chosen = [f for f in (jit.families() if families is None else families) if f.ahead]
    _record(plugin_workloads if workloads is None else workloads, chosen, report)
    folder = machine_folder()
    written = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with jit._across_processes("build"):  # two builds at once would prune each other's modules
            for family in chosen:
                target = _build_family(family, folder, CC, pycc_compiler, report)
                if target is not None:
                    written.append(target)
    except OSError as error:
        raise ConfigError(
            f"framework kernels build: cannot write the build into {folder} ({error}); "
            "set FRAMEWORK_KERNEL_CACHE to a folder you can write"
        ) from error
    for family in chosen:
        family.reset()  # this process too loads the new builds from here on
    return written


def _build_family(
    family: jit.KernelFamily, folder: Path, CC: Any, pycc_compiler: Any, report: Callable[[str], None]
) -> Path | None:
    """Compile one family into ``folder``; its module's path (``None`` when no workload called it, or the
    family has no source file)."""
    try:
        module_name, manifest_path = paths(family.name, family.source)
    except OSError:
        report(f"{family.name}: no source file to tell its builds apart, not built")
        return None
    kernels = family.jitted()
    if not any(k.seen for k in kernels.values()):
        report(f"{family.name}: no workload called it, not built")
        return None
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        compiler = CC(module_name)
        compiler.output_dir = scratch
        compiler.target_cpu = "host"
        compiler.verbose = False
        versions = _export(compiler, kernels)
        with warnings.catch_warnings(), _releasing_gil(pycc_compiler):
            warnings.simplefilter("ignore")
            try:
                compiler.compile()
            except Exception as error:  # distutils' and the C compiler's errors have no common base
                raise ConfigError(
                    f"framework kernels build: compiling {family.name} failed "
                    f"({type(error).__name__}: {error}); numba's ahead-of-time compiler needs a C "
                    "compiler (gcc, clang or MSVC)"
                ) from error
        (built,) = Path(scratch).glob(f"{module_name}*")
        # a file name of its own: a process reading the old manifest still finds the old module
        target = folder / f"{module_name}.{uuid.uuid4().hex[:12]}{built.name[len(module_name) :]}"
        os.replace(built, target)
    manifest = {"format": FORMAT, "family": family.name, "module": target.name, "kernels": versions}
    partial = manifest_path.with_suffix(".json.partial")
    partial.write_text(json.dumps(manifest, indent=1))
    os.replace(partial, manifest_path)
    _prune(folder, family.name, keep={target.name, manifest_path.name})
    count = sum(len(v) for v in versions.values())
    report(f"{family.name}: {len(versions)} kernels, {count} versions -> {target}")
    return target


def _prune(folder: Path, family: str, keep: set[str]) -> None:
    """Remove the family's older builds from ``folder``: those of its older sources, and the module the
    manifest just replaced. A process that still has one loaded keeps it (POSIX); where the file cannot
    be removed (in use on Windows), it stays."""
    prefix = "fwk_" + re.sub(r"\W", "_", family) + "_"
    own = re.compile(re.escape(prefix) + r"[0-9a-f]{12}\.")
    for path in folder.iterdir():
        if path.name not in keep and own.match(path.name):
            try:
                path.unlink()
            except OSError:
                pass


def _record(workloads: Workloads, families: list[jit.KernelFamily], report: Callable[[str], None]) -> None:
    """Run the workloads on numba's kernels: each kernel remembers the kinds it was called with."""
    jit._ahead_on = False
    try:
        for family in families:
            family.reset()
        _run_workloads(workloads, report)
    finally:
        jit._ahead_on = True
        for family in families:
            family.reset()


def _run_workloads(workloads: Workloads, report: Callable[[str], None]) -> None:
    """Run the workloads with the kernels on, as a process without numba would run them: a family
    compiled at first use only stands aside meanwhile (:func:`framework.runtime.jit.first_use_kernels`)."""
    jit._workloads_running = True
    try:
        with jit.using(True):
            for name, run in workloads:
                report(f"workload {name}")
                run()
    finally:
        jit._workloads_running = False


def check(report: Callable[[str], None] = lambda line: None) -> list[str]:
    """Run the plugins' kernel workloads on this machine's build; what it did not serve.

    Returns a line per family without a (current) build, per kernel called
    with a kind of arguments the build lacks (numba compiled it), and a line
    if numba was imported by the workloads; an empty list when the build
    served every call without numba.
    """
    already = "numba" in sys.modules
    workloads = _load_plugins()
    for family in jit.families():
        family.reset()
    jit.misses.clear()
    _run_workloads(workloads, report)
    problems = [
        f"{family.name}: no build of its current source loaded (numba compiled its kernels)"
        for family in jit.families()
        if family.ahead and not all(isinstance(k, jit.AheadKernel) for k in family().values())
    ]
    for family_name, kernel, kinds in sorted(jit.misses, key=str):
        problems.append(f"{family_name}: kernel {kernel} has no version for {kinds}")
    if "numba" in sys.modules and not already:
        problems.append("the workloads imported numba")
    return problems


def _export(compiler: Any, kernels: dict[str, Any]) -> dict[str, list[list[Any]]]:
    """Declare one exported function per kernel and kind of arguments; the manifest's kernel table."""
    versions: dict[str, list[list[Any]]] = {}
    for name, first_calls in kernels.items():
        versions[name] = []  # every kernel is listed: one the workloads never called goes to numba
        dispatcher = first_calls.kernel
        for kind, argtypes in first_calls.seen.items():
            compiled = dispatcher.overloads.get(argtypes)
            if compiled is None:  # numba settled on other types than typeof said: left to numba
                continue
            export = f"{name}_{len(versions[name])}"
            compiler.export(export, compiled.signature)(_forwarder(dispatcher, len(argtypes)))
            versions[name].append([to_json(kind), export])
    return versions


def _forwarder(kernel: Any, arity: int) -> Callable[..., Any]:
    """A plain function of ``arity`` arguments calling ``kernel``: numba compiles it with the kernel's own
    options (``fastmath``, ``nogil``) into the exported function."""
    forwarders: dict[int, Callable[..., Any]] = {
        1: lambda a: kernel(a),
        2: lambda a, b: kernel(a, b),
        3: lambda a, b, c: kernel(a, b, c),
        4: lambda a, b, c, d: kernel(a, b, c, d),
        5: lambda a, b, c, d, e: kernel(a, b, c, d, e),
        6: lambda a, b, c, d, e, f: kernel(a, b, c, d, e, f),
        7: lambda a, b, c, d, e, f, g: kernel(a, b, c, d, e, f, g),
        8: lambda a, b, c, d, e, f, g, h: kernel(a, b, c, d, e, f, g, h),
        9: lambda a, b, c, d, e, f, g, h, i: kernel(a, b, c, d, e, f, g, h, i),
        10: lambda a, b, c, d, e, f, g, h, i, j: kernel(a, b, c, d, e, f, g, h, i, j),
    }
    if arity not in forwarders:
        raise ConfigError(f"framework kernels build: a kernel of {arity} arguments (at most 10)")
    return forwarders[arity]


class _releasing_gil:
    """While it is active, numba.pycc's exported functions release the GIL, as ``njit(nogil=True)`` does.

    pycc has no option for it: it builds its wrappers with default flags, so
    the flags class it uses is swapped for one whose ``release_gil`` is set.
    """

    def __init__(self, pycc_compiler: Any) -> None:
        self.module = pycc_compiler
        self.original = pycc_compiler.Flags

    def __enter__(self) -> None:
        original = self.original

        class Releasing(original):  # type: ignore[misc, valid-type]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                self.release_gil = True

        self.module.Flags = Releasing

    def __exit__(self, *exc: Any) -> None:
        self.module.Flags = self.original
