"""The example plugin, really installed: used from framework.layers, trained, saved, loaded, uninstalled.

The distribution in ``examples/plugin-example`` is installed with pip into a
temporary folder (``pip install --target``, no network, no build isolation);
if pip cannot build it here, the same result is written by hand (the package
plus a ``.dist-info`` with ``METADATA`` and ``entry_points.txt``), which is
what ``importlib.metadata`` reads either way. Each scenario then runs in a
fresh interpreter: with the folder on ``PYTHONPATH`` the plugin is installed,
without it the plugin is uninstalled. One interpreter per scenario answers every
test of that scenario (the ``plugins`` listing through ``framework.cli.main``,
the checkpoint trained, saved and loaded, and, installed, the plugin's own test
suite through ``pytest.main``); the ``framework`` console script runs in its own.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from support import requires_h5py, subprocess_env

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "plugin-example"
DIST = "framework-plugin-example"


def _env(site: Path | None, *environment: Path) -> dict[str, str]:
    """A child interpreter's environment: with ``site``, the example is installed there.

    Without ``site`` the example counts as uninstalled, also when a copy of it
    (or any other third-party plugin) is installed in the environment running
    the tests: ``FRAMEWORK_DISABLE_PLUGIN_AUTOLOAD`` then loads the built-in
    plugins only (issue 14 item 12: tests must not depend on which other
    plugins are installed). ``environment`` stands for such installed copies.
    """
    paths = [*environment] if site is None else [site, *environment]
    hide = {} if site is not None else {"FRAMEWORK_DISABLE_PLUGIN_AUTOLOAD": "1"}
    return subprocess_env(
        *paths, clean=True, PYTHONWARNINGS="ignore", PIP_DISABLE_PIP_VERSION_CHECK="1", **hide
    )


def _python(
    code: str, site: Path | None, *args: str, cwd: Path | None = None, environment: tuple[Path, ...] = ()
) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter; only pytest's own plugins load should it run pytest
    (``PYTEST_DISABLE_PLUGIN_AUTOLOAD``: the plugin's suite needs no other)."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env={**_env(site, *environment), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _write_dist_info(source: Path, site: Path) -> None:
    """Install by hand: the package and the metadata importlib.metadata reads."""
    shutil.copytree(source / "src" / "framework_example", site / "framework_example")
    info = site / "framework_plugin_example-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {DIST}\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[framework]\nexample = framework_example.plugin\n")
    (info / "top_level.txt").write_text("framework_example\n")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """``(site folder, how)``: the example installed into a fresh folder."""
    tmp = tmp_path_factory.mktemp("plugin-install")
    source = tmp / "source"  # a copy, so the build leaves no files in the checkout
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = tmp / "site"
    result = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "--target", str(site), "--no-deps"),
            *("--no-build-isolation", "--no-index", "--quiet", str(source)),
        ],
        env=_env(None),
        capture_output=True,
        text=True,
        timeout=180,
    )
    how = "pip"
    if result.returncode != 0:
        shutil.rmtree(site, ignore_errors=True)
        site.mkdir()
        _write_dist_info(source, site)
        how = f"hand-written dist-info (pip failed: {result.stderr.strip()[-300:]})"
    assert (site / "framework_example" / "plugin.py").is_file()
    assert list(site.glob("framework_plugin_example-*.dist-info/entry_points.txt"))
    return site, how


#: The ``plugins`` command's table and JSON, as ``python -m framework plugins [--json]`` prints them.
LIST_PLUGINS = """
    import contextlib, io, json
    from framework.cli.main import main

    listing = {}
    for key, args in (("table", ["plugins"]), ("json", ["plugins", "--json"])):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(args)
        listing[key] = {"status": status, "stdout": out.getvalue(), "stderr": err.getvalue()}
"""

#: With the plugin installed: the listing, then (given a path, ``argv[3]``) train, save and load with its
#: objects, then the plugin's own test suite (``argv[1]``, a copy of its ``tests``) run by ``pytest.main``
#: with ``--basetemp argv[2]`` (a private one: pytest then prunes no shared numbered temp folders).
INSTALLED = (
    LIST_PLUGINS
    + """
    import sys
    result = {"listing": listing}
    if len(sys.argv) > 3:
        import numpy as np
        import framework
        import framework_example
        from framework import Sequential
        from framework.layers import FeatureScale, Linear

        framework.set_seed(0)
        rng = np.random.default_rng(0)
        x = rng.standard_normal((128, 4)).astype(np.float32)
        y = x @ np.array([[1.0], [-2.0], [0.5], [0.0]], dtype=np.float32) + 0.1
        model = Sequential([
            FeatureScale(init=1.0),
            Linear(4, 8, activation="mish", weight_init="lecun_normal"),
            Linear(8, 1),
        ])
        model.compile(optimizer=framework.optimizers.get("lion", learning_rate=0.01), loss="log_cosh")
        history = model.fit(x, y, epochs=5, batch_size=16, verbose=0)
        before = model.predict(x)
        model.save(sys.argv[3])
        loaded = framework.load_model(sys.argv[3])
        after = loaded.predict(x)
        result["train"] = {
            "loss": history.history["loss"],
            "max_diff": float(np.max(np.abs(before - after))),
            "layers": [type(layer).__name__ for layer in loaded.layers],
            "optimizer": type(loaded.optimizer).__name__,
            "loss_class": type(loaded.loss).__name__,
            "layer_module": FeatureScale.__module__,
            "package_file": framework_example.__file__,
            "gamma_equal": bool(np.array_equal(model.layers[0].gamma.data, loaded.layers[0].gamma.data)),
        }

    import pytest

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        status = pytest.main(
            ["-q", "-p", "no:cacheprovider", "-W", "ignore", "--basetemp", sys.argv[2], sys.argv[1]]
        )
    result["own_tests"] = {"status": int(status), "output": out.getvalue()}
    print(json.dumps(result))
"""
)

#: Uninstalled: the listing, then (given a path) loading the checkpoint the plugin's objects need.
UNINSTALLED = (
    LIST_PLUGINS
    + """
    import sys
    import framework
    result = {"listing": listing}
    if len(sys.argv) > 1:
        try:
            framework.load_model(sys.argv[1])
        except framework.CheckpointError as exc:
            result["load"] = f"CheckpointError: {exc}"
        else:
            result["load"] = "loaded"
    print(json.dumps(result))
"""
)


def _run(
    code: str, site: Path | None, *args: str, environment: tuple[Path, ...] = (), cwd: Path | None = None
) -> dict[str, Any]:
    """``code`` in a fresh interpreter of the scenario; its last line of output, parsed."""
    result = _python(code, site, *args, cwd=cwd, environment=environment)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def _has_h5py() -> bool:
    return importlib.util.find_spec("h5py") is not None


@pytest.fixture(scope="module")
def installed_run(installed: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Listing, (with h5py) training, saving and loading, and the plugin's own tests, with the plugin
    installed (one interpreter)."""
    site, _ = installed
    path = tmp_path_factory.mktemp("ckpt") / "model.h5"
    work = tmp_path_factory.mktemp("own-tests")
    tests = work / "tests"
    shutil.copytree(EXAMPLE / "tests", tests, ignore=shutil.ignore_patterns("__pycache__"))
    args = (str(tests), str(work / "basetemp"), *((str(path),) if _has_h5py() else ()))
    out = _run(INSTALLED, site, *args, cwd=work)
    out["path"] = path
    return out


@pytest.fixture(scope="module")
def checkpoint(installed_run: dict[str, Any]) -> tuple[Path, dict]:
    """The checkpoint trained, saved and loaded with the plugin installed."""
    return installed_run["path"], installed_run["train"]


@pytest.fixture(scope="module")
def uninstalled_runs(installed: tuple[Path, str], installed_run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The uninstalled scenarios: ``"absent"`` (nowhere on the path) and ``"environment"`` (a copy
    installed in the environment running the tests), each listing the plugins and loading the checkpoint."""
    site, _ = installed
    args = (str(installed_run["path"]),) if _has_h5py() else ()
    return {
        "absent": _run(UNINSTALLED, None, *args),
        "environment": _run(UNINSTALLED, None, *args, environment=(site,)),
    }


@requires_h5py
def test_installed_layer_trains_saves_and_loads(
    installed: tuple[Path, str], checkpoint: tuple[Path, dict]
) -> None:
    site, how = installed
    path, out = checkpoint
    print(f"installed with {how}")
    assert Path(out["package_file"]).is_relative_to(site), "the plugin was imported from elsewhere"
    assert out["layer_module"] == "framework_example.layers"
    assert out["layers"] == ["FeatureScale", "Linear", "Linear"]
    assert out["optimizer"] == "Lion" and out["loss_class"] == "LogCosh"
    assert out["loss"][-1] < out["loss"][0]
    assert out["max_diff"] == 0.0
    assert out["gamma_equal"]
    assert path.is_file()


@requires_h5py
def test_loading_after_uninstall_names_the_layer_and_distribution(
    uninstalled_runs: dict[str, dict[str, Any]],
) -> None:
    message = uninstalled_runs["absent"]["load"]
    assert message.startswith("CheckpointError:"), message
    assert "'FeatureScale'" in message
    assert DIST in message and "0.1.0" in message
    assert f"pip install {DIST}" in message


def test_plugins_command_lists_the_example(
    installed_run: dict[str, Any], uninstalled_runs: dict[str, dict[str, Any]]
) -> None:
    table = installed_run["listing"]["table"]
    assert table["status"] == 0, table["stderr"]
    row = next(line for line in table["stdout"].splitlines() if line.startswith(DIST))
    for expected in ("0.1.0", "example", "FeatureScale", "mish", "LecunNormal", "log_cosh", "lion"):
        assert expected in row, row

    rows = _listed(installed_run)
    mine = [r for r in rows if r["distribution"] == DIST]
    assert len(mine) == 1
    assert mine[0]["version"] == "0.1.0"
    assert mine[0]["entry_point"] == "framework:example = framework_example.plugin"
    assert mine[0]["error"] is None
    assert mine[0]["registered"] == {
        "activations": ["mish"],
        "initializers": ["LecunNormal"],
        "layers": ["FeatureScale", "Mish"],
        "losses": ["log_cosh"],
        "optimizers": ["lion"],
    }
    assert all(r["distribution"] != DIST for r in _listed(uninstalled_runs["absent"]))


def _listed(run: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of ``plugins --json`` in ``run``."""
    listing = run["listing"]["json"]
    assert listing["status"] == 0, listing["stderr"]
    return json.loads(listing["stdout"])


def test_uninstalled_scenarios_ignore_plugins_installed_in_the_environment(
    uninstalled_runs: dict[str, dict[str, Any]],
) -> None:
    """Issue 14 item 12: the example installed around the test run must not leak into them.

    ``environment=(site,)`` puts an installed copy of the example where an
    environment's own site-packages would have it; the "uninstalled" runs
    must still not see it.
    """
    run = uninstalled_runs["environment"]
    if _has_h5py():
        assert run["load"].startswith("CheckpointError:"), run["load"]
    assert all(r["distribution"] != DIST for r in _listed(run))


def test_console_script_lists_the_example(installed: tuple[Path, str]) -> None:
    script = Path(sys.executable).with_name("framework")
    if not script.is_file():
        pytest.skip(f"no 'framework' console script beside {sys.executable}")
    site, _ = installed
    result = subprocess.run(
        [str(script), "plugins"], env=_env(site), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert DIST in result.stdout and "FeatureScale" in result.stdout


def test_the_example_plugins_own_tests_pass_when_installed(installed_run: dict[str, Any]) -> None:
    """The distribution's tests (which use the conformance kit) against the installed copy.

    They run by ``pytest.main`` in the interpreter that has the plugin installed (``installed_run``),
    after its listing and training, in a copy of the distribution's ``tests`` with a private
    ``--basetemp``. Only pytest's own plugins load (``PYTEST_DISABLE_PLUGIN_AUTOLOAD``).
    """
    own = installed_run["own_tests"]
    assert own["status"] == 0, own["output"][-5000:]
    assert " passed" in own["output"] and "failed" not in own["output"]
