"""The registry under faults: conflicts, override, broken and strict plugins, disabled autoload, bad hooks.

Entry-point cases install throwaway distributions: a folder with a module
and a ``<name>-<version>.dist-info`` holding ``METADATA`` and
``entry_points.txt`` is an installed distribution as far as
``importlib.metadata`` is concerned. With the folder on ``sys.path`` a private
``Registry()`` loads them in this process, through the same entry-point
discovery as the global registry. What needs the global registry (it loads
once per process: the ``plugins`` command, disabled autoload with the
``framework.layers`` namespace) runs in a fresh interpreter. Unit-level cases
use private ``Registry()`` objects.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import types
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import subprocess_env

from framework import Layer, hookimpl
from framework.errors import PluginError
from framework.registry.manager import Registry

# -- throwaway distributions --------------------------------------------------


def _make_dist(site: Path, dist: str, module: str, code: str, version: str = "1.0") -> None:
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module}.py").write_text(textwrap.dedent(code))
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[framework]\n{module} = {module}\n")


def _layer_plugin(class_name: str, registered_as: str | None = None, override: bool = False) -> str:
    name = f", name={registered_as!r}" if registered_as else ""
    return f"""
        import numpy as np
        from framework import Layer, hookimpl

        class {class_name}(Layer):
            def forward(self, x):
                return x

            def backward(self, grad_out):
                return grad_out

        @hookimpl
        def register_layers(register):
            register({class_name}{name}, override={override})
    """


GOOD = _layer_plugin("GoodWidget")
BROKEN = """
    raise ImportError("cannot import name 'missing_helper' from 'somewhere'")
"""


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., dict[str, Any]]]:
    """``installed(site, strict=None, **env)``: put ``site`` on ``sys.path``, load a private
    ``Registry()`` with the ``FRAMEWORK_*`` variables ``env`` only, and return the load's
    ``error`` (``None`` or the ``PluginError`` text), its ``warnings``, the ``layers`` names,
    the ``plugins`` records and the ``registry``. The plugin modules imported from ``site``
    are forgotten after the test."""
    sites: list[Path] = []

    def load(site: Path, strict: bool | None = None, **env_vars: str) -> dict[str, Any]:
        sites.append(site)
        monkeypatch.syspath_prepend(str(site))  # also invalidates the import caches
        for name in ("FRAMEWORK_STRICT_PLUGINS", "FRAMEWORK_DISABLE_PLUGIN_AUTOLOAD"):
            monkeypatch.delenv(name, raising=False)
        for name, value in env_vars.items():
            monkeypatch.setenv(name, value)
        registry = Registry()
        out: dict[str, Any] = {}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                registry.load(strict=strict)
                out["error"] = None
            except PluginError as exc:
                out["error"] = str(exc)
        out["warnings"] = [str(w.message) for w in caught if "plugins." not in str(w.message)]
        out["layers"] = registry.names("layers") if registry.loaded else None
        out["plugins"] = [
            {"name": p.name, "distribution": p.distribution, "version": p.version, "error": p.error}
            for p in registry.plugins
        ]
        out["registry"] = registry
        return out

    yield load
    for name, module in list(sys.modules.items()):
        where = getattr(module, "__file__", None) or ""
        if any(where.startswith(str(site)) for site in sites):
            del sys.modules[name]


def _run(code: str, site: Path, **env_vars: str) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter with ``site`` on the path; it prints one JSON line."""
    env = subprocess_env(site, clean=True)
    env.update(env_vars)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


# -- conflicts ----------------------------------------------------------------


def _plugin(**hooks: Any) -> types.SimpleNamespace:
    return types.SimpleNamespace(**{name: hookimpl(fn) for name, fn in hooks.items()})


def _layer_class(name: str) -> type:
    return type(name, (Layer,), {"forward": lambda self, x: x, "backward": lambda self, g: g})


def test_two_distributions_registering_one_name_raise_naming_both() -> None:
    registry = Registry()
    first, second = _layer_class("Gadget"), _layer_class("Gadget")
    registry.register_plugin(
        _plugin(register_layers=lambda register: register(first)), name="a", distribution="dist-alpha"
    )
    with pytest.raises(PluginError) as info:
        registry.register_plugin(
            _plugin(register_layers=lambda register: register(second, name="gad_get")),
            name="b",
            distribution="dist-beta",
            version="2.0",
        )
    message = str(info.value)
    assert "dist-alpha" in message and "dist-beta 2.0" in message
    assert "'gadget'" in message and "override=True" in message
    assert registry.get("layers", "Gadget") is first


def test_a_plugin_cannot_silently_replace_a_builtin() -> None:
    registry = Registry()
    impostor = _layer_class("Linear")
    with pytest.raises(PluginError, match=r"framework 0\.1\.0.*dist-impostor|dist-impostor.*framework"):
        registry.register_plugin(
            _plugin(register_layers=lambda register: register(impostor)), distribution="dist-impostor"
        )
    assert registry.get("layers", "Linear") is not impostor


def test_override_true_replaces_a_builtin_on_purpose() -> None:
    registry = Registry()
    builtin = registry.get("layers", "Linear")
    replacement = _layer_class("Linear")
    registry.register_plugin(
        _plugin(register_layers=lambda register: register(replacement, override=True)),
        distribution="dist-fastlinear",
    )
    assert registry.get("layers", "Linear") is replacement
    assert registry.entry("layers", "linear").plugin.distribution == "dist-fastlinear"
    assert registry.get("layers", "Dense") is builtin  # the built-in's alias was not claimed


def test_conflict_between_installed_distributions(tmp_path: Path, installed) -> None:
    site = tmp_path / "site"
    _make_dist(site, "dist-alpha", "alpha_plugin", _layer_plugin("Widget"), version="1.2")
    _make_dist(site, "dist-beta", "beta_plugin", _layer_plugin("OtherWidget", registered_as="Widget"))
    out = installed(site)
    assert out["error"] is not None
    assert "dist-alpha 1.2" in out["error"] and "dist-beta 1.0" in out["error"]
    assert "'widget'" in out["error"]


def test_override_between_installed_distributions(tmp_path: Path, installed) -> None:
    site = tmp_path / "site"
    _make_dist(site, "dist-better-flatten", "better_flatten", _layer_plugin("Flatten", override=True))
    loaded = installed(site)
    assert loaded["error"] is None
    assert loaded["registry"].get("layers", "Flatten").__module__ == "better_flatten"


# -- broken plugins and strict mode --------------------------------------------


def test_broken_plugin_is_reported_and_the_rest_works(tmp_path: Path, installed) -> None:
    site = tmp_path / "site"
    _make_dist(site, "dist-broken", "broken_plugin", BROKEN, version="0.3")
    _make_dist(site, "dist-good", "good_plugin", GOOD)
    out = installed(site)
    assert out["error"] is None
    [warning] = [w for w in out["warnings"] if "dist-broken" in w]
    assert "0.3" in warning
    assert "framework:broken_plugin = broken_plugin" in warning
    assert "missing_helper" in warning and "the other plugins are loaded" in warning
    assert "GoodWidget" in out["layers"] and "Linear" in out["layers"]
    [failed] = [p for p in out["plugins"] if p["distribution"] == "dist-broken"]
    assert failed["version"] == "0.3" and "ImportError" in failed["error"]


def test_plugins_command_shows_the_broken_plugin(tmp_path: Path) -> None:
    site = tmp_path / "site"
    _make_dist(site, "dist-broken", "broken_plugin", BROKEN, version="0.3")
    env = subprocess_env(site, clean=True)
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-m", "framework", "plugins"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if line.startswith("dist-broken"))
    assert "0.3" in row and "FAILED" in row and "missing_helper" in row


@pytest.mark.parametrize("how", ["environment", "argument"])
def test_strict_mode_turns_a_broken_plugin_into_an_error(tmp_path: Path, how: str, installed) -> None:
    site = tmp_path / "site"
    _make_dist(site, "dist-broken", "broken_plugin", BROKEN, version="0.3")
    if how == "environment":
        out = installed(site, FRAMEWORK_STRICT_PLUGINS="1")
    else:
        out = installed(site, strict=True)
    assert out["error"] is not None
    assert "dist-broken 0.3" in out["error"]
    assert "framework:broken_plugin = broken_plugin" in out["error"]
    assert "missing_helper" in out["error"]


def test_strict_mode_is_quiet_when_nothing_is_broken(tmp_path: Path, installed) -> None:
    site = tmp_path / "site"
    _make_dist(site, "dist-good", "good_plugin", GOOD)
    out = installed(site, FRAMEWORK_STRICT_PLUGINS="1")
    # Built-in modules that have not landed yet are themselves "broken" plugins here.
    if out["error"] is not None:
        assert "distribution framework " in out["error"], out["error"]
        pytest.skip("a built-in plugin module is missing from this checkout")
    assert "GoodWidget" in out["layers"]


# -- disabled autoload ----------------------------------------------------------


def test_disabled_autoload_loads_builtins_only_and_allows_manual_registration(tmp_path: Path) -> None:
    site = tmp_path / "site"
    _make_dist(site, "dist-good", "good_plugin", GOOD)
    _make_dist(site, "dist-broken", "broken_plugin", BROKEN)
    code = """
        import json
        import numpy as np
        import framework
        from framework import layers
        from framework.registry.manager import REGISTRY

        REGISTRY.load()
        out = {
            "before": REGISTRY.contains("layers", "GoodWidget"),
            "linear": REGISTRY.contains("layers", "Linear"),
            "distributions": sorted({p.distribution for p in REGISTRY.plugins}),
        }
        import good_plugin
        info = REGISTRY.register_plugin(good_plugin, distribution="dist-good", version="1.0")
        widget = layers.get("GoodWidget")
        out["after"] = type(widget).__name__
        out["output"] = widget(np.ones((2, 3), dtype=np.float32)).tolist()
        out["registered"] = info.registered
        out["attribute"] = layers.GoodWidget.__module__
        print(json.dumps(out))
    """
    out = _run(code, site, FRAMEWORK_DISABLE_PLUGIN_AUTOLOAD="1")
    assert out["before"] is False
    assert out["linear"] is True
    assert out["distributions"] == ["framework"]
    assert out["after"] == "GoodWidget"
    assert out["output"] == [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    assert out["registered"] == {"layers": ["GoodWidget"]}
    assert out["attribute"] == "good_plugin"


# -- hook validation -------------------------------------------------------------


def test_hookimpl_with_an_unknown_argument_is_refused() -> None:
    registry = Registry()

    def register_layers(register: Any, device: Any) -> None:
        register(_layer_class("Never"))

    with pytest.raises(PluginError) as info:
        registry.register_plugin(
            _plugin(register_layers=register_layers), name="bad", distribution="dist-bad"
        )
    message = str(info.value)
    assert "dist-bad" in message and "device" in message and "hook specification" in message
    assert not registry.contains("layers", "Never")


def test_misspelled_hook_is_refused() -> None:
    registry = Registry()
    with pytest.raises(PluginError) as info:
        registry.register_plugin(
            _plugin(register_layer=lambda register: None), name="typo", distribution="dist-typo"
        )
    assert "dist-typo" in str(info.value) and "register_layer" in str(info.value)
    # The refused plugin left nothing behind: a corrected one registers under the same name.
    registry.register_plugin(
        _plugin(register_layers=lambda register: register(_layer_class("Fixed"))),
        name="typo",
        distribution="dist-typo",
    )
    assert registry.contains("layers", "Fixed")


def test_hook_may_take_a_subset_of_the_arguments() -> None:
    registry = Registry()
    registry.register_plugin(
        _plugin(register_initializers=lambda: None, register_layers=lambda register: None),
        distribution="dist-minimal",
    )
    assert any(p.distribution == "dist-minimal" for p in registry.plugins)
