"""Hunt: a third-party plugin of every kind end to end, registry faults, and the command line.

A throwaway distribution ``framework-acme`` (a folder with ``acme_plugin.py`` and an
``acme_plugin-2.3.0.dist-info``, no pip) registers a layer, an activation, a loss, an
optimizer and a metric through the documented hooks. Everything that needs the
global registry runs in a fresh interpreter; the CLI always runs as
``python -m framework``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import ROOT, requires_h5py, subprocess_env

from framework import Layer, hookimpl
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
    return subprocess.run(
        [sys.executable, "-m", "framework", *args],
        env=subprocess_env(*paths, clean=True, **env),
        capture_output=True,
        text=True,
        timeout=90,
        cwd=ROOT,
    )


# -- the plugin end to end ----------------------------------------------------

TRAIN_SAVE = """
    import io, json, sys, contextlib
    import numpy as np
    import framework
    from framework import Sequential
    from framework.layers import Linear, AcmeScale

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
    path = sys.argv[1]
    model.save(path)
    np.save(sys.argv[2], model.predict(x))
    np.save(sys.argv[3], x)
    loaded = framework.load_model(path)
    out["loaded_types"] = [type(l).__name__ for l in loaded.layers]
    out["bit_identical"] = bool(np.array_equal(loaded.predict(x), model.predict(x)))
    out["optimizer"] = type(loaded.optimizer).__name__
    out["loss"] = type(loaded.loss).__name__ if not isinstance(loaded.loss, str) else loaded.loss
    out["metrics"] = [type(m).__name__ for m in (loaded.metrics or [])]
    out["evaluate"] = {k: float(v) for k, v in loaded.evaluate(x, y, verbose=0).items()}
    out["evaluate_orig"] = {k: float(v) for k, v in model.evaluate(x, y, verbose=0).items()}
    print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def acme_checkpoint(acme_site: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, Path]:
    pytest.importorskip("h5py")
    folder = tmp_path_factory.mktemp("ckpt")
    path = folder / "acme.h5"
    out = _python(TRAIN_SAVE, acme_site, args=(str(path), str(folder / "pred.npy"), str(folder / "x.npy")))
    return path, out, folder


@requires_h5py
def test_plugin_objects_train_save_and_load_bit_identical(acme_checkpoint: tuple[Path, dict, Path]) -> None:
    _, out, _ = acme_checkpoint
    assert out["loaded_types"] == ["Linear", "AcmeScale", "Linear"]
    assert out["bit_identical"] is True
    assert out["optimizer"] == "AcmeSGD"
    assert out["loss"] == "AcmeHalfMSE"
    assert out["metrics"] == ["AcmeMaxErr"]
    assert "acme_max_err" in out["history_keys"]
    assert out["evaluate"] == out["evaluate_orig"]


@requires_h5py
def test_plugin_layer_in_summary_and_config_round_trip(acme_checkpoint: tuple[Path, dict, Path]) -> None:
    _, out, _ = acme_checkpoint
    assert "AcmeScale" in out["summary"]
    assert out["clone_types"] == ["Linear", "AcmeScale", "Linear"]
    assert out["clone_offset"] == 0.5


LOAD_WITHOUT = """
    import json, sys
    import framework
    out = {}
    try:
        framework.load_model(sys.argv[1], compile=sys.argv[2] == "1")
        out["error"] = None
    except Exception as exc:
        out["type"] = type(exc).__name__
        out["error"] = str(exc)
    print(json.dumps(out))
"""


@requires_h5py
@pytest.mark.parametrize("compile_", ["1", "0"])
def test_loading_without_the_plugin_names_the_layer_and_distribution(
    acme_checkpoint: tuple[Path, dict, Path], compile_: str
) -> None:
    path, _, _ = acme_checkpoint
    out = _python(LOAD_WITHOUT, builtins_only=True, args=(str(path), compile_))
    assert out["type"] == "CheckpointError", out
    assert "AcmeScale" in out["error"] or "acme_softsign" in out["error"].lower()
    assert DIST in out["error"] and f"pip install {DIST}" in out["error"]


ONLY_PLUGIN_ACTIVATION_AND_TRAINING = """
    import json, sys
    import numpy as np
    import framework
    from framework import Sequential
    from framework.layers import Linear

    model = Sequential([Linear(3, 4, activation=sys.argv[2]), Linear(4, 2)])
    model.compile(loss=sys.argv[3], optimizer=sys.argv[4], metrics=[sys.argv[5]])
    model.fit(np.ones((4, 3), np.float32), np.zeros((4, 2), np.float32), epochs=1, verbose=0)
    model.save(sys.argv[1])
    print(json.dumps({"ok": True}))
"""


@requires_h5py
@pytest.mark.parametrize(
    "what, args, needle",
    [
        ("activation", ("acme_softsign", "mse", "sgd", "mae"), "acme_softsign"),
        ("loss", ("relu", "acme_half_mse", "sgd", "mae"), "acme_half_mse"),
        ("optimizer", ("relu", "mse", "acme_sgd", "mae"), "acme_sgd"),
        ("metric", ("relu", "mse", "sgd", "acme_max_err"), "acme_max_err"),
    ],
)
def test_missing_plugin_object_of_each_kind_is_a_clear_error(
    acme_site: Path, tmp_path: Path, what: str, args: tuple[str, ...], needle: str
) -> None:
    path = tmp_path / f"{what}.h5"
    _python(ONLY_PLUGIN_ACTIVATION_AND_TRAINING, acme_site, args=(str(path), *args))
    out = _python(LOAD_WITHOUT, builtins_only=True, args=(str(path), "1"))
    assert out["error"] is not None, f"a checkpoint needing the plugin {what} loaded without it"
    assert out["type"] == "CheckpointError", out
    assert needle.replace("_", "") in out["error"].lower().replace("_", "")
    assert DIST in out["error"]


@requires_h5py
def test_inspect_a_plugin_checkpoint_without_the_plugin(acme_checkpoint: tuple[Path, dict, Path]) -> None:
    path, _, _ = acme_checkpoint
    proc = _cli("inspect", str(path), FRAMEWORK_DISABLE_PLUGIN_AUTOLOAD="1")
    assert proc.returncode == 0, proc.stderr
    assert "AcmeScale" in proc.stdout and "weight (6,) float32" in proc.stdout


@requires_h5py
@pytest.mark.parametrize("fmt", ["numpy", "onnx"])
def test_export_of_a_plugin_layer_without_converter_is_a_clear_error(
    acme_checkpoint: tuple[Path, dict, Path], acme_site: Path, tmp_path: Path, fmt: str
) -> None:
    if fmt == "onnx":
        pytest.importorskip("onnx")
    path, _, _ = acme_checkpoint
    out = tmp_path / ("m.onnx" if fmt == "onnx" else "deploy")
    proc = _cli("export", str(path), "--format", fmt, str(out), paths=(acme_site,))
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert "AcmeScale" in proc.stderr or "AcmeSoftsign" in proc.stderr  # the first unexportable one


def test_plugins_command_lists_every_kind(acme_site: Path) -> None:
    proc = _cli("plugins", "--json", paths=(acme_site,))
    assert proc.returncode == 0, proc.stderr
    rows = {row["plugin"]: row for row in json.loads(proc.stdout)}
    acme = rows["acme_plugin"]
    assert (acme["distribution"], acme["version"], acme["error"]) == (DIST, VERSION, None)
    assert acme["registered"] == {
        "layers": ["AcmeScale"],
        "activations": ["acme_softsign"],
        "losses": ["acme_half_mse"],
        "optimizers": ["acme_sgd"],
        "metrics": ["acme_max_err"],
    }
    table = _cli("plugins", paths=(acme_site,))
    assert table.returncode == 0, table.stderr
    line = next(line for line in table.stdout.splitlines() if line.startswith(DIST))
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

LOAD_TWICE = """
    import json, warnings
    from framework.registry.manager import REGISTRY
    out = []
    for attempt in range(2):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                REGISTRY.get("layers", "Linear")
                out.append({"ok": True, "warnings": [str(w.message) for w in caught]})
            except Exception as exc:
                out.append({"type": type(exc).__name__, "error": str(exc)})
    print(json.dumps(out))
"""


def test_a_plugin_whose_hook_raises_is_reported_naming_it(tmp_path: Path) -> None:
    site = _make_dist(tmp_path / "site", "framework-boom", "boom_plugin", HOOK_RAISES)
    first, second = _python(LOAD_TWICE, site)
    # either a warning and the rest works, or a PluginError naming the distribution
    if first.get("ok"):
        assert any("framework-boom" in w for w in first["warnings"]), first
    else:
        assert first["type"] == "PluginError" and "framework-boom" in first["error"], first
    assert second == first or second.get("ok"), (first, second)


def test_a_conflict_is_reported_the_same_way_on_every_lookup(tmp_path: Path) -> None:
    """The second lookup after a refused plugin must not blame the built-ins ("already registered")."""
    site = _make_dist(tmp_path / "site", "framework-clash", "clash_plugin", _CLASH)
    first, second = _python(LOAD_TWICE, site)
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


@pytest.mark.parametrize(
    "args, needle",
    [
        ((), "required"),
        (("frobnicate",), "invalid choice"),
        (("export", "m.h5", "--format", "tflite", "out"), "invalid choice"),
        (("export", "m.h5", "out"), "--format"),
        (("inspect",), "file"),
        (("plugins", "--yaml"), "unrecognized arguments"),
    ],
)
def test_wrong_arguments_are_argparse_errors_with_status_2(args: tuple[str, ...], needle: str) -> None:
    proc = _cli(*args)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "usage: framework" in proc.stderr and needle in proc.stderr
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
def test_cli_export_onnx_then_inspect_and_load_back(builtin_files: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    target = tmp_path / "out"
    proc = _cli("export", str(builtin_files["h5"]), "--format", "onnx", str(target))
    assert proc.returncode == 0, proc.stderr
    onnx_file = target / "model.onnx"
    assert proc.stdout.strip() == f"wrote {onnx_file}"
    shown = _cli("inspect", str(onnx_file))
    assert shown.returncode == 0, shown.stderr
    assert "Gemm" in shown.stdout or "MatMul" in shown.stdout
    assert "Tanh" in shown.stdout

    import framework.onnx

    back = framework.onnx.load(onnx_file)
    x = np.load(builtin_files["folder"] / "x.npy")
    np.testing.assert_allclose(
        back.predict(x), np.load(builtin_files["folder"] / "y.npy"), rtol=1e-5, atol=1e-6
    )


@requires_h5py
def test_cli_export_numpy_predictor_matches_the_model(builtin_files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "deploy"
    proc = _cli("export", str(builtin_files["h5"]), "--format", "numpy", str(out))
    assert proc.returncode == 0, proc.stderr
    code = f"""
        import json, sys
        import numpy as np
        sys.path.insert(0, {str(out)!r})
        import predict
        x = np.load({str(builtin_files["folder"] / "x.npy")!r})
        y = np.load({str(builtin_files["folder"] / "y.npy")!r})
        got = predict.predict(x)
        same = bool(np.allclose(got, y, rtol=1e-5, atol=1e-6))
        print(json.dumps({{"same": same, "shape": list(got.shape)}}))
    """
    out_json = _python(code)
    assert out_json == {"same": True, "shape": [5, 3]}


@requires_h5py
@pytest.mark.parametrize("key, needle", [("h5", "Linear"), ("npz", "0.weight"), ("safetensors", "0.weight")])
def test_cli_inspect_each_format(builtin_files: dict[str, Path], key: str, needle: str) -> None:
    if key not in builtin_files:
        pytest.skip(f"no {key} support here")
    proc = _cli("inspect", str(builtin_files[key]))
    assert proc.returncode == 0, proc.stderr
    assert needle in proc.stdout and "total: 67 values" in proc.stdout  # 4*8+8 + 8*3+3


_READER = {".h5": "h5py", ".safetensors": "safetensors", ".onnx": "onnx"}


def _inspect_is_one_clean_error(path: Path) -> None:
    if path.suffix in _READER:  # without the reader the error names the extra to install instead
        pytest.importorskip(_READER[path.suffix])
    proc = _cli("inspect", str(path))
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert proc.stderr.startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr and str(path) in proc.stderr


@pytest.mark.parametrize("suffix", [".h5", ".safetensors", ".onnx", ".npz"])
def test_cli_inspect_corrupt_file_is_one_clean_error(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(b"this is not a model file at all\n" * 4)
    _inspect_is_one_clean_error(path)


@pytest.mark.parametrize("suffix", [".h5", ".safetensors", ".npz"])
def test_cli_inspect_empty_file_is_one_clean_error(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"empty{suffix}"
    path.write_bytes(b"")
    _inspect_is_one_clean_error(path)


def test_cli_inspect_empty_onnx_file_is_an_error(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    _inspect_is_one_clean_error(path)


@requires_h5py
def test_cli_inspect_truncated_checkpoint_is_one_clean_error(
    builtin_files: dict[str, Path], tmp_path: Path
) -> None:
    data = builtin_files["h5"].read_bytes()
    path = tmp_path / "cut.h5"
    path.write_bytes(data[: len(data) // 2])
    proc = _cli("inspect", str(path))
    assert proc.returncode == 1 and proc.stderr.startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("command", ["inspect", "export"])
def test_cli_missing_or_directory_input_is_error_exit_1(tmp_path: Path, command: str) -> None:
    for target in (tmp_path / "missing.h5", tmp_path):
        args = (
            ("inspect", str(target))
            if command == "inspect"
            else ("export", str(target), "--format", "numpy", str(tmp_path / "o"))
        )
        proc = _cli(*args)
        assert proc.returncode == 1, (target, proc.stdout, proc.stderr)
        assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
        assert str(target) in proc.stderr
