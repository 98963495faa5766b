from __future__ import annotations

import subprocess
import sys
import types

import numpy as np
import pytest
from support import subprocess_env

import framework
from framework import Layer, hookimpl
from framework.errors import PluginError, UnknownNameError
from framework.registry.manager import REGISTRY, Registry, canonical_name


def test_canonical_name_ignores_case_and_underscores():
    assert canonical_name("Kaiming_Uniform") == canonical_name("kaimingUniform") == "kaiminguniform"


def test_builtin_layers_come_through_entry_points():
    entry = REGISTRY.entry("layers", "linear")
    assert entry.plugin.distribution == "framework"
    assert entry.plugin.entry_point == "framework:core = plugins.core"
    from framework.layers import Dense, Linear

    assert Dense is Linear


def test_namespace_import_and_get():
    from framework import layers

    layer = layers.get("linear", output_size=3)
    assert type(layer).__name__ == "Linear"
    assert layers.get(layer) is layer
    with pytest.raises(AttributeError, match="registered layers"):
        layers.NoSuchLayer  # noqa: B018


def test_unknown_name_lists_registered_names():
    with pytest.raises(UnknownNameError) as info:
        REGISTRY.get("layers", "nope")
    assert "Linear" in str(info.value) and "nope" in str(info.value)


def _plugin(**hooks):
    module = types.ModuleType("fake_plugin")
    for name, fn in hooks.items():
        setattr(module, name, hookimpl(fn))
    return module


class _Twice(Layer):
    def forward(self, x):
        return 2 * x

    def backward(self, grad_out):
        return 2 * grad_out


def test_manual_registration_and_lookup():
    reg = Registry()
    reg.register_plugin(
        _plugin(register_layers=lambda register: register(_Twice, aliases=("double",))),
        distribution="twice-dist",
        version="1.0",
    )
    assert reg.get("layers", "DOUBLE") is _Twice
    assert reg.get("layers", "_twice") is _Twice
    assert reg.entry("layers", "double").plugin.distribution == "twice-dist"


def test_conflict_names_both_distributions():
    reg = Registry()
    reg.register_plugin(
        _plugin(register_layers=lambda register: register(_Twice, name="Scale")), distribution="dist-a"
    )

    class Other(_Twice):
        pass

    with pytest.raises(PluginError) as info:
        reg.register_plugin(
            _plugin(register_layers=lambda register: register(Other, name="scale")), distribution="dist-b"
        )
    assert "dist-a" in str(info.value) and "dist-b" in str(info.value)


def test_override_replaces_on_purpose():
    reg = Registry()

    class MyLinear(_Twice):
        pass

    reg.register_plugin(
        _plugin(register_layers=lambda register: register(MyLinear, name="Linear", override=True)),
        distribution="mine",
    )
    assert reg.get("layers", "linear") is MyLinear


def test_hookimpl_with_unknown_argument_is_refused():
    reg = Registry()

    def register_layers(register, something_else):  # not in the spec
        pass

    with pytest.raises(PluginError, match="hook specification"):
        reg.register_plugin(_plugin(register_layers=register_layers), distribution="bad")


def test_misspelled_hook_is_refused():
    reg = Registry()
    with pytest.raises(PluginError):
        reg.register_plugin(_plugin(register_layer=lambda register: None), distribution="typo")


def test_cli_lists_plugins():
    out = subprocess.run(
        [sys.executable, "-m", "framework", "plugins"],
        capture_output=True,
        text=True,
        check=True,
        env=subprocess_env(),
    )
    assert "framework" in out.stdout and "Linear" in out.stdout


def test_linear_via_framework_namespace():
    layer = framework.layers.Linear(2, 3)
    assert layer(np.zeros((4, 2), dtype=np.float32)).shape == (4, 3)
