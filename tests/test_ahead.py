"""Kernels compiled ahead of time (``framework kernels build``, :mod:`framework.runtime.ahead`).

A small kernel family of the test's own is built once for the module (a few
seconds); the built-in families' build is CI's last step (``framework kernels
build`` then ``framework kernels check``, and the kernel tests on it).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from framework.cli.main import main
from framework.errors import ConfigError
from framework.runtime import ahead, jit, kernel_cache
from tests.support import requires_numba

FAMILY = textwrap.dedent(
    """
    from framework.runtime.jit import compiled


    @compiled
    def _kernels(numba):
        @numba.njit(nogil=True, cache=False)
        def scale(x, factor, out):
            for i in range(x.shape[0]):
                out[i] = x[i] * factor

        @numba.njit(nogil=True, cache=False)
        def spin(x, rounds, out):
            total = 0.0
            for r in range(rounds):
                for i in range(x.shape[0]):
                    total += x[i] * (r % 7)
            out[0] = total

        @numba.njit(nogil=True, cache=False)
        def unused(x):
            x[0] = 1.0

        return {"scale": scale, "spin": spin, "unused": unused}
    """
)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The test family, its module importable, built for float32 only into a cache of its own.

    Building needs numba (the ``jit`` extra, which CI installs): without it, every test using this skips.
    """
    if importlib.util.find_spec("numba") is None:
        pytest.skip("needs numba: pip install -e '.[jit]'")
    folder = tmp_path_factory.mktemp("family")
    (folder / "ahead_test_kernels.py").write_text(FAMILY)
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(folder))
        patch.setenv("FRAMEWORK_KERNEL_CACHE", str(cache))
        import ahead_test_kernels

        def workload():
            x, out = np.arange(4, dtype=np.float32), np.empty(4, np.float32)
            ahead_test_kernels._kernels()["scale"](x, 2.0, out)
            ahead_test_kernels._kernels()["spin"](x, 3, out)

        lines: list[str] = []
        family = ahead_test_kernels._kernels
        written = ahead.build(lines.append, families=[family], workloads=[("test", workload)])
        module = ahead_test_kernels
        yield {
            "folder": folder,
            "cache": cache,
            "module": module,
            "written": written,
            "lines": lines,
        }
        family.reset()
        jit._families.pop(family.name, None)  # not a family of the installed plugins
        sys.modules.pop("ahead_test_kernels", None)


@requires_numba
def test_kind_of_tells_apart_exactly_what_numba_compiles_apart():
    import numba

    base = np.arange(12, dtype=np.float32).reshape(3, 4)
    readonly = base.copy()
    readonly.flags.writeable = False
    unaligned = np.frombuffer(bytearray(4 * 12 + 1), dtype=np.float32, offset=1, count=12)
    values = [
        base,
        base.copy(),
        base.astype(np.float64),
        base.astype(np.int32),
        base.ravel(),
        base.T,
        base[:, ::2],
        np.asfortranarray(base),
        readonly,
        unaligned,
        unaligned.copy(),
        np.float32(1),
        np.float64(1),
        1,
        2**62,
        True,
        False,
        1.5,
        None,
        (1, 2),
        (3, 4),
        (1, 2, 3),
        (1, 2.0),
        (base, 1),
        (base.T, 1),
    ]
    for a in values:
        for b in values:
            kinds, types = (jit.kind_of(a), jit.kind_of(b)), (numba.typeof(a), numba.typeof(b))
            if kinds[0] == kinds[1]:  # one compiled version would serve both: numba must agree
                assert types[0] == types[1], (a, b, types)
            elif types[0] == types[1]:  # finer than numba only in alignment (numba calls both aligned)
                assert kinds[0][:5] == kinds[1][:5], (a, b, kinds)


@requires_numba
def test_a_built_family_runs_in_a_new_process_without_numba(built):
    assert len(built["written"]) == 1 and built["written"][0].is_file()
    assert sorted(p.suffix for p in built["written"][0].parent.iterdir()) == [".json", ".so"]
    assert any("2 versions" in line for line in built["lines"]), built["lines"]
    manifest = json.loads(next(built["written"][0].parent.glob("*.json")).read_text())
    assert manifest["kernels"]["unused"] == []  # listed, with no version: numba's if ever called
    script = textwrap.dedent(
        """
        import sys, threading
        import numpy as np
        import ahead_test_kernels
        from framework.runtime import jit

        kernels = ahead_test_kernels._kernels()
        x, out = np.arange(5, dtype=np.float32), np.empty(5, np.float32)
        kernels["scale"](x, 3.0, out)
        assert out.tolist() == [0.0, 3.0, 6.0, 9.0, 12.0], out
        assert "numba" not in sys.modules
        assert isinstance(kernels["scale"], jit.AheadKernel) and not jit.misses

        # the GIL is released: this thread runs while the kernel does
        big, total = np.ones(1_000_000, np.float32), np.empty(1, np.float32)
        worker = threading.Thread(target=kernels["spin"], args=(big, 150, total))
        counted = 0
        worker.start()
        while worker.is_alive():
            counted += 1
        worker.join()
        assert counted > 1000, counted

        x64, out64 = x.astype(np.float64), np.empty(5)
        kernels["scale"](x64, 0.5, out64)  # a kind the build lacks: numba's, and the right answer
        assert out64.tolist() == [0.0, 0.5, 1.0, 1.5, 2.0], out64
        assert "numba" in sys.modules and len(jit.misses) == 1
        print("served")
        """
    )
    env = {"FRAMEWORK_KERNEL_CACHE": str(built["cache"]), "PYTHONPATH": f"{built['folder']}:{_root()}"}
    command = [sys.executable, "-c", script]
    env = {**_environment(), **env}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "served" in result.stdout, result.stderr[-3000:]


def test_a_damaged_build_is_warned_about_once_and_numba_serves(built, monkeypatch):
    module, family = built["module"], built["module"]._kernels
    monkeypatch.setenv("FRAMEWORK_KERNEL_CACHE", str(built["cache"]))
    (binary,) = built["written"]
    saved = binary.read_bytes()
    try:
        binary.write_bytes(b"not a shared library")
        family.reset()
        monkeypatch.setattr(kernel_cache, "_warned", set())
        with pytest.warns(RuntimeWarning, match="did not load .* numba compiles them instead"):
            kernels = family()
        assert not isinstance(kernels["scale"], jit.AheadKernel)
        x, out = np.arange(3, dtype=np.float32), np.empty(3, np.float32)
        kernels["scale"](x, 2.0, out)
        assert out.tolist() == [0.0, 2.0, 4.0]
    finally:
        binary.write_bytes(saved)
        family.reset()
    assert module is built["module"]


def test_an_edited_family_is_not_served_by_the_build_of_its_old_source(built, monkeypatch):
    family = built["module"]._kernels
    monkeypatch.setenv("FRAMEWORK_KERNEL_CACHE", str(built["cache"]))
    source = built["folder"] / "ahead_test_kernels.py"
    try:
        source.write_text(FAMILY + "\n# edited\n")
        family.reset()
        assert kernel_cache.load(family.name, family.source) is None
    finally:
        source.write_text(FAMILY)
        family.reset()
    assert kernel_cache.load(family.name, family.source) is not None


def test_with_a_build_numba_is_not_imported_to_tell_whether_kernels_run(built, monkeypatch):
    monkeypatch.setenv("FRAMEWORK_KERNEL_CACHE", str(built["cache"]))
    monkeypatch.setattr(jit, "_available", None)
    find = importlib.util.find_spec
    fake = lambda name, *a: object() if name == "numba" else find(name)  # noqa: E731
    monkeypatch.setattr(importlib.util, "find_spec", fake)
    monkeypatch.setitem(sys.modules, "numba", None)  # `import numba` would raise
    assert jit.available() is True
    family = built["module"]._kernels
    family.reset()
    monkeypatch.setattr(family, "_jitted", {})
    try:
        x, out = np.arange(3, dtype=np.float32), np.empty(3, np.float32)
        family()["scale"](x, 2.0, out)  # the build serves it
        assert out.tolist() == [0.0, 2.0, 4.0]
        with pytest.raises(ConfigError, match=r"needs numba for arguments its ahead-of-time build lacks"):
            family()["scale"](x.astype(np.float64), 2.0, out.astype(np.float64))
    finally:
        family.reset()


def test_building_without_numbas_ahead_of_time_compiler_names_the_cause(monkeypatch):
    monkeypatch.setattr(jit, "available", lambda: True)
    monkeypatch.setitem(sys.modules, "numba.pycc", None)
    with pytest.raises(ConfigError, match=r"has no ahead-of-time compiler .* compile at their first use"):
        ahead.build()


def test_building_without_numba_names_the_extra(monkeypatch):
    monkeypatch.setattr(jit, "available", lambda: False)
    with pytest.raises(ConfigError, match=r"framework kernels build asks for the compiled kernels.*jit"):
        ahead.build()


def test_the_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FRAMEWORK_KERNEL_CACHE", str(tmp_path / "mine"))
    assert kernel_cache.cache_dir() == tmp_path / "mine"
    assert kernel_cache.machine_folder().parent == tmp_path / "mine"
    monkeypatch.delenv("FRAMEWORK_KERNEL_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert kernel_cache.cache_dir() == tmp_path / "xdg" / "framework" / "kernels"
    assert not kernel_cache.any_built()


@requires_numba
def test_the_cli_reports_unbuilt_families_and_check_fails_on_them(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("FRAMEWORK_KERNEL_CACHE", str(tmp_path))
    assert main(["kernels"]) == 0
    listing = capsys.readouterr().out
    assert f"builds for this machine: {kernel_cache.machine_folder()}" in listing
    assert "plugins.bn_kernels._kernels: not built" in listing
    try:
        assert main(["kernels", "check"]) == 1
    finally:
        for family in jit.families():
            family.reset()
    report = capsys.readouterr().out
    assert "plugins.pool_kernels._kernels: no build of its current source loaded" in report
    assert "run: framework kernels build" in report


def _root() -> str:
    from pathlib import Path

    return str(Path(__file__).resolve().parents[1])


def _environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "FRAMEWORK_JIT")}


def test_threads_share_one_load_of_a_family(built, monkeypatch):
    monkeypatch.setenv("FRAMEWORK_KERNEL_CACHE", str(built["cache"]))
    family = built["module"]._kernels
    family.reset()
    seen: list[object] = []
    threads = [threading.Thread(target=lambda: seen.append(family()["scale"])) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(k) for k in seen}) == 1 and isinstance(seen[0], jit.AheadKernel)
    family.reset()


@requires_numba  # numba.pycc is imported before the cause under test shows
def test_building_without_setuptools_names_it(monkeypatch):
    monkeypatch.setattr(jit, "available", lambda: True)
    monkeypatch.delitem(sys.modules, "numba.pycc", raising=False)
    monkeypatch.delitem(sys.modules, "numba.pycc.platform", raising=False)
    monkeypatch.delitem(sys.modules, "numba.pycc.cc", raising=False)
    monkeypatch.setitem(sys.modules, "setuptools", None)
    with pytest.raises(ConfigError, match=r"needs setuptools \(pip install setuptools"):
        ahead.build()


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="no user ids on this platform")
def test_a_build_others_may_write_is_not_loaded(built, monkeypatch):
    family = built["module"]._kernels
    monkeypatch.setenv("FRAMEWORK_KERNEL_CACHE", str(built["cache"]))
    monkeypatch.setattr(kernel_cache, "_warned", set())
    (binary,) = built["written"]
    mode = binary.stat().st_mode
    try:
        binary.chmod(mode | 0o002)
        with pytest.warns(RuntimeWarning, match=r"writable by its group or by others .*numba compiles them"):
            assert kernel_cache.load(family.name, family.source) is None
        binary.chmod(mode)
        monkeypatch.setattr(os, "getuid", lambda: 12345)
        with pytest.warns(RuntimeWarning, match=r"not to this user \(12345\)"):
            assert kernel_cache.load(family.name, family.source) is None
    finally:
        binary.chmod(mode)
    monkeypatch.undo()
    monkeypatch.setenv("FRAMEWORK_KERNEL_CACHE", str(built["cache"]))
    assert kernel_cache.load(family.name, family.source) is not None


@requires_numba  # numba.pycc is imported before the cause under test shows
def test_a_cache_folder_that_cannot_be_written_is_named(monkeypatch, tmp_path):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("FRAMEWORK_KERNEL_CACHE", str(tmp_path / "a-file" / "kernels"))
    monkeypatch.setattr(jit, "available", lambda: True)
    with pytest.raises(ConfigError, match=r"cannot write the build into .*a-file.*FRAMEWORK_KERNEL_CACHE"):
        ahead.build(families=[], workloads=[])


def test_a_build_removes_the_familys_older_modules_and_no_other_familys(tmp_path):
    """Each build's module has a file name of its own (a reader of the old manifest keeps the old
    module); the build then removes the family's other files, and leaves a family whose name merely
    starts the same."""
    digest, other = "0123456789ab", "ba9876543210"
    names = [
        f"fwk_pkg_kernels_{digest}.json",  # the new manifest
        f"fwk_pkg_kernels_{digest}.1111aaaa2222.cpython-311-x86_64-linux-gnu.so",  # the new module
        f"fwk_pkg_kernels_{digest}.3333bbbb4444.cpython-311-x86_64-linux-gnu.so",  # the one it replaced
        f"fwk_pkg_kernels_{other}.json",  # an older source's build
        f"fwk_pkg_kernels_{other}.5555cccc6666.cpython-311-x86_64-linux-gnu.so",
        f"fwk_pkg_kernels_more_{digest}.json",  # family "pkg.kernels_more": not this one
        "notes.txt",
    ]
    for name in names:
        (tmp_path / name).write_text("")
    ahead._prune(tmp_path, "pkg.kernels", keep={names[0], names[1]})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([names[0], names[1], names[5], names[6]])


def test_only_a_build_of_the_current_source_spares_importing_numba(built, monkeypatch):
    """A folder holding only stale builds does not count: numba is imported (and a broken one is warned
    about, the NumPy path taken) as without a build."""
    monkeypatch.setenv("FRAMEWORK_KERNEL_CACHE", str(built["cache"]))
    find = importlib.util.find_spec
    fake = lambda name, *a: object() if name == "numba" else find(name)  # noqa: E731
    monkeypatch.setattr(importlib.util, "find_spec", fake)
    monkeypatch.setitem(sys.modules, "numba", None)  # `import numba` raises
    source = built["folder"] / "ahead_test_kernels.py"
    try:
        source.write_text(FAMILY + "\n# edited: the build is stale\n")
        monkeypatch.setattr(jit, "_available", None)
        with pytest.warns(RuntimeWarning, match="numba is installed but does not import"):
            assert jit.available() is False
    finally:
        source.write_text(FAMILY)
    monkeypatch.setattr(jit, "_available", None)
    assert jit.available() is True  # the current source's build: no import tried


def test_a_family_without_a_source_file_is_never_built_nor_loaded(tmp_path, monkeypatch):
    """Nothing would tell an old build of it from a new one."""
    monkeypatch.setenv("FRAMEWORK_KERNEL_CACHE", str(tmp_path))
    family = jit.KernelFamily(lambda numba: {})
    family.source = str(tmp_path / "gone.py")
    assert kernel_cache.load(family.name, family.source) is None
    lines: list[str] = []
    assert ahead._build_family(family, tmp_path, None, None, lines.append) is None
    assert lines == [f"{family.name}: no source file to tell its builds apart, not built"]
