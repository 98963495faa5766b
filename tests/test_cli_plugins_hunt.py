"""Hunt: a third-party plugin of every kind end to end, registry faults, and the command line.

A throwaway distribution ``framework-acme`` (a folder with ``acme_plugin.py`` and an
``acme_plugin-2.3.0.dist-info``, no pip) registers a layer, an activation, a loss, an
optimizer and a metric through the documented hooks. Everything that needs the
plugin in the global registry runs in a fresh interpreter with a clean environment:
one with the plugin installed trains and saves every checkpoint and runs the
``plugins`` and ``export`` commands, one without it loads them all back. The
registry's faults use private ``Registry`` objects (a plugin folder put on
``sys.path`` for the entry-point ones). The command line runs as
``python -m framework`` for each command family (``--help``, a usage error, a
plugin checkpoint inspected with autoloading off, an unreadable file, an export
that fails), and otherwise in this process through ``framework.cli.main.main``
with the output captured at the file-descriptor level: what the child's stderr
would show (warnings included) is checked the same way.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
import types
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import ROOT, requires_h5py, subprocess_env

from framework import Layer, hookimpl
from framework.cli.main import main
from framework.errors import PluginError
from framework.registry.manager import Registry

DIST = "framework-acme"
VERSION = "2.3.0"

PLUGIN = '''
import numpy as np

import framework
from framework import Layer, Loss, Metric, Parameter, hookimpl
from framework.base.optimizer import Optimizer


class AcmeScale(Layer):
    """y = x * weight + offset."""

    def __init__(self, num_features, *, offset=0.0, name=None):
        super().__init__(name=name)
        self.num_features = int(num_features)
        self.offset = float(offset)
        self.weight = None

    def build(self, input_shape):
        rng = np.random.default_rng(7)
        w = 1.0 + 0.25 * rng.standard_normal(self.num_features)
        self.weight = Parameter(w.astype(framework.get_default_dtype()))
        super().build(input_shape)

    def forward(self, ctx, x):
        ctx.x = x
        return x * self.weight.data + self.offset

    def backward(self, ctx, grad_out):
        self.weight.add_grad((grad_out * ctx.x).reshape(-1, self.num_features).sum(axis=0))
        return grad_out * self.weight.data

    def get_config(self):
        return {**super().get_config(), "num_features": self.num_features, "offset": self.offset}


class AcmeSoftsign(Layer):
    """x / (1 + |x|)."""

    def build(self, input_shape):
        super().build(input_shape)
        self.input_spec = None

    def forward(self, ctx, x):
        ctx.x = x
        return x / (1.0 + np.abs(x))

    def backward(self, ctx, grad_out):
        return grad_out / (1.0 + np.abs(ctx.x)) ** 2


class AcmeHalfMSE(Loss):
    def forward(self, y_pred, y_true, sample_weight=None):
        y_pred = np.asarray(y_pred)
        self._d = y_pred - np.asarray(y_true, dtype=y_pred.dtype)
        return float(0.5 * np.mean(self._d**2))

    def backward(self):
        return self._d / self._d.size


class AcmeSGD(Optimizer):
    def update(self, param, grad, state, lr):
        param.data -= lr * grad


class AcmeMaxErr(Metric):
    def values(self, y_pred, y_true):
        return np.abs(np.asarray(y_pred) - np.asarray(y_true)).max(axis=1)


@hookimpl
def register_layers(register):
    register(AcmeScale, aliases=("acme_scale",))


@hookimpl
def register_activations(register):
    register(AcmeSoftsign, name="acme_softsign")


@hookimpl
def register_losses(register):
    register(AcmeHalfMSE, name="acme_half_mse")


@hookimpl
def register_optimizers(register):
    register(AcmeSGD, name="acme_sgd")


@hookimpl
def register_metrics(register):
    register(AcmeMaxErr, name="acme_max_err")
'''


def _make_dist(site: Path, dist: str, module: str, code: str, version: str = VERSION) -> Path:
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{module}.py").write_text(textwrap.dedent(code))
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[framework]\n{module} = {module}\n")
    return site


@pytest.fixture(scope="module")
def acme_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make_dist(tmp_path_factory.mktemp("acme") / "site", DIST, "acme_plugin", PLUGIN)


def _python(code: str, *paths: Path, builtins_only: bool = False, args: tuple[str, ...] = ()) -> Any:
    """Run ``code`` in a fresh interpreter (``paths`` first on ``sys.path``); it prints one JSON line."""
    env = subprocess_env(*paths, clean=True)
    if builtins_only:
        env["FRAMEWORK_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _cli(*args: str, paths: tuple[Path, ...] = (), **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m framework *args`` in a fresh interpreter with a clean environment."""
    return subprocess.run(
        [sys.executable, "-m", "framework", *args],
        env=subprocess_env(*paths, clean=True, **env),
        capture_output=True,
        text=True,
        timeout=90,
        cwd=ROOT,
    )


#: What the default warning filters of a fresh interpreter hide (the rest would reach its stderr).
_HIDDEN_WARNINGS = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


def _main(capfd: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``main(args)`` in this process: ``(status, stdout, stderr)`` as ``python -m framework`` shows them.

    An exception escaping ``main`` fails the test (the child would print a traceback); a
    warning a fresh interpreter would print is written to the returned stderr, ahead of the
    rest, so ``stderr.startswith("error: ")`` fails on it as it would on the child's.
    """
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            status = main(list(args))
        except SystemExit as exc:  # argparse: usage errors (2) and --help (0)
            status = exc.code if isinstance(exc.code, int) else 1
    out, err = capfd.readouterr()
    shown = [
        f"{w.category.__name__}: {w.message}\n"
        for w in caught
        if not issubclass(w.category, _HIDDEN_WARNINGS)
    ]
    return status, out, "".join(shown) + err


# -- the plugin end to end ----------------------------------------------------

#: In a fresh interpreter with the plugin installed: train and save the checkpoints every test
#: below reads, and run the ``plugins`` and ``export`` commands. Each part reports its own
#: failure (a traceback) instead of taking the others down.
WITH_PLUGIN = """
    import contextlib, io, json, sys, traceback, warnings
    from pathlib import Path
    import numpy as np
    import framework
    from framework import Sequential
    from framework.cli.main import main
    from framework.layers import Linear, AcmeScale

    folder = Path(sys.argv[1])
    results = {}


    def part(name):
        def run(fn):
            try:
                results[name] = fn()
            except BaseException:
                results[name] = {"failed": traceback.format_exc()}
        return run


    @part("train_save")
    def train_save():
        out = {}
        rng = np.random.default_rng(0)
        x = rng.standard_normal((32, 4)).astype(np.float32)
        y = rng.standard_normal((32, 2)).astype(np.float32)
        model = Sequential([Linear(4, 6, activation="acme_softsign"), AcmeScale(6, offset=0.5), Linear(6, 2)])
        model.compile(loss="acme_half_mse", optimizer="acme_sgd", metrics=["acme_max_err"])
        hist = model.fit(x, y, epochs=2, batch_size=8, verbose=0)
        out["history_keys"] = sorted(hist.history)
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            text = model.summary()
        out["summary"] = (text or "") + buf.getvalue()
        clone = Sequential.from_config(model.get_config())
        clone.build((None, 4))
        clone.set_weights(model.get_weights()) if hasattr(clone, "set_weights") else None
        out["clone_types"] = [type(l).__name__ for l in clone.layers]
        out["clone_offset"] = clone.layers[1].offset
        out["clone_same"] = bool(np.array_equal(clone.predict(x), model.predict(x)))
        path = folder / "acme.h5"
        model.save(path)
        loaded = framework.load_model(path)
        out["loaded_types"] = [type(l).__name__ for l in loaded.layers]
        out["bit_identical"] = bool(np.array_equal(loaded.predict(x), model.predict(x)))
        out["optimizer"] = type(loaded.optimizer).__name__
        out["loss"] = type(loaded.loss).__name__ if not isinstance(loaded.loss, str) else loaded.loss
        out["metrics"] = [type(m).__name__ for m in (loaded.metrics or [])]
        out["evaluate"] = {k: float(v) for k, v in loaded.evaluate(x, y, verbose=0).items()}
        out["evaluate_orig"] = {k: float(v) for k, v in model.evaluate(x, y, verbose=0).items()}
        return out


    # One checkpoint per kind: only that object comes from the plugin.
    for what, (activation, loss, optimizer, metric) in json.loads(sys.argv[2]).items():
        @part(f"kind:{what}")
        def save_kind():
            model = Sequential([Linear(3, 4, activation=activation), Linear(4, 2)])
            model.compile(loss=loss, optimizer=optimizer, metrics=[metric])
            model.fit(np.ones((4, 3), np.float32), np.zeros((4, 2), np.float32), epochs=1, verbose=0)
            model.save(folder / f"{what}.h5")
            return {"ok": True}


    HIDDEN = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


    def command(*args):
        # main(args), with what `python -m framework` would print on stdout and stderr (warnings too)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                status = main(list(args))
        shown = "".join(
            f"{w.category.__name__}: {w.message}\\n" for w in caught if not issubclass(w.category, HIDDEN)
        )
        return {"status": status, "stdout": out.getvalue(), "stderr": shown + err.getvalue()}


    for fmt in json.loads(sys.argv[3]):
        @part(f"export:{fmt}")
        def export():
            target = folder / ("m.onnx" if fmt == "onnx" else "deploy")
            return command("export", str(folder / "acme.h5"), "--format", fmt, str(target))


    @part("plugins")
    def plugins():
        return {"json": command("plugins", "--json"), "table": command("plugins")}


    print(json.dumps(results))
"""

#: In a fresh interpreter with the built-in plugins only: load each checkpoint (key, file, compile).
WITHOUT_PLUGIN = """
    import json, sys
    import framework

    results = {}
    for key, path, compile_ in json.loads(sys.argv[1]):
        out = {}
        try:
            framework.load_model(path, compile=compile_)
            out["error"] = None
        except Exception as exc:
            out["type"] = type(exc).__name__
            out["error"] = str(exc)
        results[key] = out
    print(json.dumps(results))
"""

KINDS = {
    "activation": ("acme_softsign", "mse", "sgd", "mae"),
    "loss": ("relu", "acme_half_mse", "sgd", "mae"),
    "optimizer": ("relu", "mse", "acme_sgd", "mae"),
    "metric": ("relu", "mse", "sgd", "acme_max_err"),
}


@pytest.fixture(scope="module")
def acme_runs(acme_site: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Everything the plugin's checkpoints give, with (``"with"``) and without (``"without"``) it."""
    folder = tmp_path_factory.mktemp("ckpt")
    formats = ["numpy"] + (["onnx"] if importlib.util.find_spec("onnx") is not None else [])
    with_plugin = _python(WITH_PLUGIN, acme_site, args=(str(folder), json.dumps(KINDS), json.dumps(formats)))
    without: dict[str, Any] = {}
    if importlib.util.find_spec("h5py") is not None:  # the checkpoints exist (the tests reading them skip)
        loads = [[f"acme:{c}", str(folder / "acme.h5"), c] for c in (True, False)]
        loads += [[f"kind:{what}", str(folder / f"{what}.h5"), True] for what in KINDS]
        without = _python(WITHOUT_PLUGIN, builtins_only=True, args=(json.dumps(loads),))
    return {"with": with_plugin, "without": without, "folder": folder}


def _part(runs: dict[str, Any], name: str) -> Any:
    """One part of the run with the plugin, failing the test with the child's traceback if it failed."""
    got = runs["with"][name]
    assert not (isinstance(got, dict) and "failed" in got), got.get("failed")
    return got


@requires_h5py
def test_plugin_objects_train_save_and_load_bit_identical(acme_runs: dict[str, Any]) -> None:
    out = _part(acme_runs, "train_save")
    assert out["loaded_types"] == ["Linear", "AcmeScale", "Linear"]
    assert out["bit_identical"] is True
    assert out["optimizer"] == "AcmeSGD"
    assert out["loss"] == "AcmeHalfMSE"
    assert out["metrics"] == ["AcmeMaxErr"]
    assert "acme_max_err" in out["history_keys"]
    assert out["evaluate"] == out["evaluate_orig"]


@requires_h5py
def test_plugin_layer_in_summary_and_config_round_trip(acme_runs: dict[str, Any]) -> None:
    out = _part(acme_runs, "train_save")
    assert "AcmeScale" in out["summary"]
    assert out["clone_types"] == ["Linear", "AcmeScale", "Linear"]
    assert out["clone_offset"] == 0.5


@requires_h5py
@pytest.mark.parametrize("compile_", [True, False])
def test_loading_without_the_plugin_names_the_layer_and_distribution(
    acme_runs: dict[str, Any], compile_: bool
) -> None:
    _part(acme_runs, "train_save")
    out = acme_runs["without"][f"acme:{compile_}"]
    assert out["type"] == "CheckpointError", out
    assert "AcmeScale" in out["error"] or "acme_softsign" in out["error"].lower()
    assert DIST in out["error"] and f"pip install {DIST}" in out["error"]


@requires_h5py
@pytest.mark.parametrize("what", list(KINDS))
def test_missing_plugin_object_of_each_kind_is_a_clear_error(acme_runs: dict[str, Any], what: str) -> None:
    _part(acme_runs, f"kind:{what}")
    needle = next(name for name in KINDS[what] if name.startswith("acme_"))
    out = acme_runs["without"][f"kind:{what}"]
    assert out["error"] is not None, f"a checkpoint needing the plugin {what} loaded without it"
    assert out["type"] == "CheckpointError", out
    assert needle.replace("_", "") in out["error"].lower().replace("_", "")
    assert DIST in out["error"]


@requires_h5py
def test_inspect_a_plugin_checkpoint_without_the_plugin(acme_runs: dict[str, Any]) -> None:
    _part(acme_runs, "train_save")
    proc = _cli("inspect", str(acme_runs["folder"] / "acme.h5"), FRAMEWORK_DISABLE_PLUGIN_AUTOLOAD="1")
    assert proc.returncode == 0, proc.stderr
    assert "AcmeScale" in proc.stdout and "weight (6,) float32" in proc.stdout


@requires_h5py
@pytest.mark.parametrize("fmt", ["numpy", "onnx"])
def test_export_of_a_plugin_layer_without_converter_is_a_clear_error(
    acme_runs: dict[str, Any], fmt: str
) -> None:
    if fmt == "onnx" and importlib.util.find_spec("onnx") is None:  # the child imports it, not this process
        pytest.skip("onnx is not installed: pip install -e '.[onnx]'")
    proc = _part(acme_runs, f"export:{fmt}")
    assert proc["status"] == 1, proc
    assert proc["stderr"].startswith("error: ") and "Traceback" not in proc["stderr"]
    assert "AcmeScale" in proc["stderr"] or "AcmeSoftsign" in proc["stderr"]  # the first unexportable one


@requires_h5py
def test_export_of_a_plugin_layer_through_the_entry_point_is_one_error_line(
    acme_runs: dict[str, Any], acme_site: Path, tmp_path: Path
) -> None:
    """The same refusal from ``python -m framework export``: exit status 1, one line, no traceback."""
    _part(acme_runs, "train_save")
    proc = _cli(
        "export", str(acme_runs["folder"] / "acme.h5"), "--format", "numpy", str(tmp_path / "deploy"),
        paths=(acme_site,),
    )  # fmt: skip
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert "AcmeScale" in proc.stderr or "AcmeSoftsign" in proc.stderr


def test_plugins_command_lists_every_kind(acme_runs: dict[str, Any]) -> None:
    runs = _part(acme_runs, "plugins")
    proc = runs["json"]
    assert proc["status"] == 0, proc["stderr"]
    rows = {row["plugin"]: row for row in json.loads(proc["stdout"])}
    acme = rows["acme_plugin"]
    assert (acme["distribution"], acme["version"], acme["error"]) == (DIST, VERSION, None)
    assert acme["registered"] == {
        "layers": ["AcmeScale"],
        "activations": ["acme_softsign"],
        "losses": ["acme_half_mse"],
        "optimizers": ["acme_sgd"],
        "metrics": ["acme_max_err"],
    }
    table = runs["table"]
    assert table["status"] == 0, table["stderr"]
    line = next(line for line in table["stdout"].splitlines() if line.startswith(DIST))
    for name in ("AcmeScale", "acme_softsign", "acme_half_mse", "acme_sgd", "acme_max_err", VERSION):
        assert name in line


# -- registry faults ----------------------------------------------------------


def _module(name: str, **hooks: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    for hook, fn in hooks.items():
        setattr(module, hook, hookimpl(fn))
    return module


def _layer_class(name: str) -> type:
    return type(name, (Layer,), {"forward": lambda self, x: x, "backward": lambda self, g: g})


@pytest.mark.parametrize(
    "kind, name",
    [("activations", "Re_LU"), ("losses", "MSE"), ("optimizers", "a_dam"), ("metrics", "Accuracy")],
)
def test_collision_with_a_builtin_of_each_kind_names_both(kind: str, name: str) -> None:
    registry = Registry()
    cls = _layer_class("Impostor")
    plugin = _module("impostor", **{f"register_{kind}": lambda register: register(cls, name=name)})
    with pytest.raises(PluginError) as info:
        registry.register_plugin(plugin, distribution="framework-impostor", version="9.9")
    message = str(info.value)
    assert "framework-impostor" in message and "framework " in message
    assert "twice" in message and "override=True" in message
    assert registry.get(kind, name) is not cls


def test_alias_collision_between_two_plugins_names_both() -> None:
    registry = Registry()
    first, second = _layer_class("Alpha"), _layer_class("Beta")
    registry.register_plugin(
        _module("p1", register_layers=lambda register: register(first, aliases=("my_block",))),
        distribution="dist-one",
        version="1.0",
    )
    with pytest.raises(PluginError) as info:
        registry.register_plugin(
            _module("p2", register_layers=lambda register: register(second, name="MyBlock")),
            distribution="dist-two",
            version="2.0",
        )
    assert "dist-one" in str(info.value) and "dist-two" in str(info.value)
    assert registry.get("layers", "my_block") is first


def test_one_name_in_two_kinds_is_not_a_collision() -> None:
    registry = Registry()
    cls = _layer_class("Dual")
    registry.register_plugin(
        _module(
            "dual",
            register_layers=lambda register: register(cls, name="dual_thing"),
            register_activations=lambda register: register(cls, name="dual_thing"),
        ),
        distribution="dist-dual",
    )
    assert registry.get("layers", "dual_thing") is cls is registry.get("activations", "dual_thing")


def test_a_failed_registration_leaves_no_half_registered_plugin() -> None:
    """A plugin refused for a collision must not leave its other names behind."""
    registry = Registry()
    good, bad = _layer_class("Survivor"), _layer_class("Clash")
    plugin = _module(
        "half",
        register_layers=lambda register: register(good, name="survivor_layer"),
        register_losses=lambda register: register(bad, name="mse"),
    )
    with pytest.raises(PluginError):
        registry.register_plugin(plugin, distribution="dist-half")
    assert not registry.contains("layers", "survivor_layer")


HOOK_RAISES = """
    from framework import hookimpl

    @hookimpl
    def register_layers(register):
        raise RuntimeError("acme hook exploded")
"""


def _load_twice(site: Path, module: str, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """A fresh registry, asked for ``Linear`` twice, with the distribution in ``site`` installed.

    A private :class:`Registry` loads the entry points exactly as the global one does in a
    fresh interpreter (``site`` first on ``sys.path``, no ``FRAMEWORK_*`` switch set); the
    plugin's module is dropped from ``sys.modules`` afterwards.
    """
    monkeypatch.syspath_prepend(str(site))
    for variable in ("FRAMEWORK_DISABLE_PLUGIN_AUTOLOAD", "FRAMEWORK_STRICT_PLUGINS"):
        monkeypatch.delenv(variable, raising=False)
    registry = Registry()
    out: list[dict[str, Any]] = []
    try:
        for _attempt in range(2):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    registry.get("layers", "Linear")
                    out.append({"ok": True, "warnings": [str(w.message) for w in caught]})
                except Exception as exc:
                    out.append({"type": type(exc).__name__, "error": str(exc)})
    finally:
        sys.modules.pop(module, None)
    return out


def test_a_plugin_whose_hook_raises_is_reported_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = _make_dist(tmp_path / "site", "framework-boom", "boom_plugin", HOOK_RAISES)
    first, second = _load_twice(site, "boom_plugin", monkeypatch)
    # either a warning and the rest works, or a PluginError naming the distribution
    if first.get("ok"):
        assert any("framework-boom" in w for w in first["warnings"]), first
    else:
        assert first["type"] == "PluginError" and "framework-boom" in first["error"], first
    assert second == first or second.get("ok"), (first, second)


def test_a_conflict_is_reported_the_same_way_on_every_lookup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second lookup after a refused plugin must not blame the built-ins ("already registered")."""
    site = _make_dist(tmp_path / "site", "framework-clash", "clash_plugin", _CLASH)
    first, second = _load_twice(site, "clash_plugin", monkeypatch)
    assert first["type"] == "PluginError" and "framework-clash" in first["error"], first
    assert second.get("type") == "PluginError", second
    assert "framework-clash" in second["error"] and "twice" in second["error"], second


_CLASH = """
    from framework import Layer, hookimpl

    class Linear(Layer):
        def forward(self, x):
            return x

        def backward(self, grad_out):
            return grad_out

    @hookimpl
    def register_layers(register):
        register(Linear)
"""


def test_override_keeps_every_reachable_class_nameable() -> None:
    """After a plugin overrides "Linear", whatever "Dense" returns must still be serialisable (name_of)."""
    registry = Registry()
    replacement = _layer_class("Linear")
    registry.register_plugin(
        _module("ovr", register_layers=lambda register: register(replacement, override=True)),
        distribution="dist-ovr",
    )
    assert registry.get("layers", "Linear") is replacement
    via_alias = registry.get("layers", "Dense")
    assert registry.name_of("layers", via_alias) is not None


# -- the command line ---------------------------------------------------------


def test_help_lists_the_commands_and_exits_0() -> None:
    proc = _cli("--help")
    assert proc.returncode == 0 and proc.stderr == ""
    for command in ("plugins", "inspect", "export"):
        assert command in proc.stdout


WRONG_ARGUMENTS = [
    ((), "required"),
    (("frobnicate",), "invalid choice"),
    (("export", "m.h5", "--format", "tflite", "out"), "invalid choice"),
    (("export", "m.h5", "out"), "--format"),
    (("inspect",), "file"),
    (("plugins", "--yaml"), "unrecognized arguments"),
]


@pytest.mark.parametrize("args, needle", WRONG_ARGUMENTS)
def test_wrong_arguments_are_argparse_errors_with_status_2(
    capfd: pytest.CaptureFixture[str], args: tuple[str, ...], needle: str
) -> None:
    status, out, err = _main(capfd, *args)
    assert status == 2, (out, err)
    assert "usage: framework" in err and needle in err
    assert "Traceback" not in err


def test_wrong_arguments_through_the_entry_point_exit_2() -> None:
    """``python -m framework`` itself: a usage error is status 2 with the usage line, no traceback."""
    proc = _cli("frobnicate")
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "usage: framework" in proc.stderr and "invalid choice" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def builtin_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("h5py")
    from framework import Sequential
    from framework.layers import Linear

    folder = tmp_path_factory.mktemp("files")
    model = Sequential([Linear(4, 8, activation="tanh"), Linear(8, 3)])
    x = np.random.default_rng(3).standard_normal((5, 4)).astype(np.float32)
    np.save(folder / "x.npy", x)
    np.save(folder / "y.npy", model.predict(x))
    model.save(folder / "m.h5")
    model.save_weights(folder / "w.npz")
    files = {"h5": folder / "m.h5", "npz": folder / "w.npz", "folder": folder}
    try:
        import safetensors  # noqa: F401

        model.save_weights(folder / "w.safetensors")
        files["safetensors"] = folder / "w.safetensors"
    except ImportError:
        pass
    return files


@requires_h5py
def test_cli_export_onnx_then_inspect_and_load_back(
    builtin_files: dict[str, Path], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("onnx")
    target = tmp_path / "out"
    status, out, err = _main(capfd, "export", str(builtin_files["h5"]), "--format", "onnx", str(target))
    assert status == 0 and err == "", err
    onnx_file = target / "model.onnx"
    assert out.strip() == f"wrote {onnx_file}"
    status, shown, err = _main(capfd, "inspect", str(onnx_file))
    assert status == 0 and err == "", err
    assert "Gemm" in shown or "MatMul" in shown
    assert "Tanh" in shown

    import framework.onnx

    back = framework.onnx.load(onnx_file)
    x = np.load(builtin_files["folder"] / "x.npy")
    np.testing.assert_allclose(
        back.predict(x), np.load(builtin_files["folder"] / "y.npy"), rtol=1e-5, atol=1e-6
    )


@requires_h5py
def test_cli_export_numpy_predictor_matches_the_model(
    builtin_files: dict[str, Path], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The exported ``predict.py`` (imported from its folder, as its docstring says) predicts what the
    model did; ``tests/test_cli.py`` runs one as a script in an isolated interpreter."""
    out = tmp_path / "deploy"
    status, _, err = _main(capfd, "export", str(builtin_files["h5"]), "--format", "numpy", str(out))
    assert status == 0 and err == "", err
    spec = importlib.util.spec_from_file_location("_hunt_exported_predict", out / "predict.py")
    assert spec is not None and spec.loader is not None
    predict = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(predict)
    x = np.load(builtin_files["folder"] / "x.npy")
    got = predict.predict(x)
    assert list(got.shape) == [5, 3]
    assert np.allclose(got, np.load(builtin_files["folder"] / "y.npy"), rtol=1e-5, atol=1e-6)


@requires_h5py
@pytest.mark.parametrize("key, needle", [("h5", "Linear"), ("npz", "0.weight"), ("safetensors", "0.weight")])
def test_cli_inspect_each_format(
    builtin_files: dict[str, Path], capfd: pytest.CaptureFixture[str], key: str, needle: str
) -> None:
    if key not in builtin_files:
        pytest.skip(f"no {key} support here")
    status, out, err = _main(capfd, "inspect", str(builtin_files[key]))
    assert status == 0, err
    assert needle in out and "total: 67 values" in out  # 4*8+8 + 8*3+3


_READER = {".h5": "h5py", ".safetensors": "safetensors", ".onnx": "onnx"}


def _inspect_is_one_clean_error(path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    if path.suffix in _READER:  # without the reader the error names the extra to install instead
        pytest.importorskip(_READER[path.suffix])
    status, out, err = _main(capfd, "inspect", str(path))
    assert status == 1, (out, err)
    assert err.startswith("error: "), err
    assert "Traceback" not in err and str(path) in err


@pytest.mark.parametrize("suffix", [".h5", ".safetensors", ".onnx", ".npz"])
def test_cli_inspect_corrupt_file_is_one_clean_error(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], suffix: str
) -> None:
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(b"this is not a model file at all\n" * 4)
    _inspect_is_one_clean_error(path, capfd)


@requires_h5py
def test_cli_inspect_corrupt_file_through_the_entry_point(tmp_path: Path) -> None:
    """``python -m framework inspect`` itself: an unreadable file is status 1 and one error line."""
    path = tmp_path / "bad.h5"
    path.write_bytes(b"this is not a model file at all\n" * 4)
    proc = _cli("inspect", str(path))
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert proc.stderr.startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr and str(path) in proc.stderr


@pytest.mark.parametrize("suffix", [".h5", ".safetensors", ".npz"])
def test_cli_inspect_empty_file_is_one_clean_error(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], suffix: str
) -> None:
    path = tmp_path / f"empty{suffix}"
    path.write_bytes(b"")
    _inspect_is_one_clean_error(path, capfd)


def test_cli_inspect_empty_onnx_file_is_an_error(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("onnx")
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    _inspect_is_one_clean_error(path, capfd)


@requires_h5py
def test_cli_inspect_truncated_checkpoint_is_one_clean_error(
    builtin_files: dict[str, Path], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    data = builtin_files["h5"].read_bytes()
    path = tmp_path / "cut.h5"
    path.write_bytes(data[: len(data) // 2])
    status, _, err = _main(capfd, "inspect", str(path))
    assert status == 1 and err.startswith("error: "), err
    assert "Traceback" not in err


@pytest.mark.parametrize("command", ["inspect", "export"])
def test_cli_missing_or_directory_input_is_error_exit_1(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], command: str
) -> None:
    for target in (tmp_path / "missing.h5", tmp_path):
        args = (
            ("inspect", str(target))
            if command == "inspect"
            else ("export", str(target), "--format", "numpy", str(tmp_path / "o"))
        )
        status, out, err = _main(capfd, *args)
        assert status == 1, (target, out, err)
        assert err.startswith("error: ") and "Traceback" not in err
        assert str(target) in err
