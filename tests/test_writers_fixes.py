"""Writers that must not lose what is already saved, and readers that must name what they refuse.

Companions of the strict xfails of ``tests/test_interchange_hunt.py``: every file the framework
writes (ONNX, ``.npz``, ``.safetensors``, the NumPy predictor, HDF5) goes through one atomic helper
(``framework.saving.atomic.atomic_path``), so a failed write raises a ``FrameworkError`` naming the
path, leaves the previous file and no temporary behind; weights files refuse unbuilt models as
``.h5`` does; ``.npz`` files that are something else, and torch tensors NumPy cannot hold, are named.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import framework
import framework.onnx
import framework.saving.atomic as atomic
from framework import Input, Sequential
from framework import layers as L
from framework.errors import CheckpointError, ConfigError, ExportError
from framework.export import numpy_predictor
from framework.interchange.npz import read_npz


def _onnx() -> Any:
    return pytest.importorskip("onnx", reason="the [onnx] extra (onnx) is not installed")


def _ort() -> Any:
    return pytest.importorskip("onnxruntime", reason="the [onnx] extra (onnxruntime) is not installed")


def _torch() -> Any:
    return pytest.importorskip("torch", reason="the [parity] extra (torch) is not installed")


def _mlp() -> Sequential:
    return Sequential([Input((3,)), L.Linear(3, 4, activation="relu"), L.Linear(4, 2)])


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def _fail_replace(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the final rename fail, as on a cross-device or vanished folder."""

    def refuse(src: Any, dst: Any) -> None:
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    monkeypatch.setattr(atomic.os, "replace", refuse)


# -- the helper --------------------------------------------------------------------------------------


def test_atomic_path_writes_replaces_and_names_failures(tmp_path: Path) -> None:
    target = tmp_path / "f.bin"
    target.write_bytes(b"previous")
    with atomic.atomic_path(target) as tmp_name:
        assert Path(tmp_name).parent == tmp_path and Path(tmp_name).name.startswith(".f.bin.")
        Path(tmp_name).write_bytes(b"new")
    assert target.read_bytes() == b"new"

    def half_write(tmp_name: str) -> None:
        Path(tmp_name).write_bytes(b"ne")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(ExportError, match=rf"{target.name}.*disk is full.*unchanged"):
        with atomic.atomic_path(target, error=ExportError) as tmp_name:
            half_write(tmp_name)
    assert target.read_bytes() == b"new"
    assert _leftovers(tmp_path) == []


def test_atomic_path_refuses_bad_targets_before_writing(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    for path, why in [
        (tmp_path / "missing" / "f", "does not exist"),
        (tmp_path, "is a directory"),
        (tmp_path / "file" / "f", "is a file, not a folder"),
    ]:
        with pytest.raises(CheckpointError, match=why) as info:
            with atomic.atomic_path(path):
                raise AssertionError("the block must not run")
        assert str(path) in str(info.value)


def test_other_errors_in_the_block_pass_unchanged_and_leave_nothing(tmp_path: Path) -> None:
    target = tmp_path / "f.bin"
    target.write_bytes(b"previous")
    with pytest.raises(KeyError):
        with atomic.atomic_path(target):
            raise KeyError("a bug in the writer")
    assert target.read_bytes() == b"previous"
    assert _leftovers(tmp_path) == []


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
@pytest.mark.parametrize("suffix", [".npz", ".h5"])
def test_written_files_get_the_usual_permissions(suffix: str, tmp_path: Path) -> None:
    """A new file gets 0o666 less the umask (as open() gives, not mkstemp's 0o600); a replaced one keeps
    its mode."""
    if suffix == ".h5":
        pytest.importorskip("h5py")
    umask = os.umask(0o022)
    os.umask(umask)
    fresh = tmp_path / f"w{suffix}"
    _mlp().save_weights(fresh)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~umask
    os.chmod(fresh, 0o640)
    _mlp().save_weights(fresh)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o640


# -- bug 1: ONNX export ------------------------------------------------------------------------------


def test_onnx_failed_export_keeps_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _onnx()
    path = tmp_path / "m.onnx"
    path.write_bytes(b"previous")
    _fail_replace(monkeypatch)
    with pytest.raises(ExportError, match=r"m\.onnx.*EXDEV|m\.onnx.*cross-device") as info:
        framework.onnx.export(_mlp(), path)
    assert isinstance(info.value.__cause__, OSError)
    assert path.read_bytes() == b"previous"
    assert _leftovers(tmp_path) == []


def test_onnx_export_replaces_a_previous_file_completely(tmp_path: Path) -> None:
    ort = _ort()
    path = tmp_path / "m.onnx"
    path.write_bytes(b"x" * 100_000)  # longer than the model: nothing of it may remain
    model = _mlp()
    framework.onnx.export(model, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.ones((2, 3), np.float32)
    np.testing.assert_allclose(session.run(None, {"input": x})[0], model.predict(x), rtol=1e-5, atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_cli_onnx_export_into_a_missing_folder_exits_with_an_error_line(tmp_path: Path, capfd: Any) -> None:
    """``framework export`` (its ``main``, in this process; tests/test_cli.py and
    tests/test_cli_plugins_hunt.py start ``python -m framework export`` itself): status 1 and one
    ``error:`` line on stderr naming the missing folder, no traceback, nothing written."""
    pytest.importorskip("h5py")
    _onnx()
    from framework.cli import main

    _mlp().save(tmp_path / "m.h5")
    target = tmp_path / "missing" / "m.onnx"
    capfd.readouterr()
    status = main(["export", str(tmp_path / "m.h5"), "--format", "onnx", str(target)])
    err = capfd.readouterr().err
    assert status == 1
    assert err.startswith("error: ") and "missing" in err
    assert "Traceback" not in err
    assert not (tmp_path / "missing").exists()


def test_cli_onnx_export_to_a_folder_under_a_file_is_an_error(tmp_path: Path, capsys: Any) -> None:
    pytest.importorskip("h5py")
    _onnx()
    from framework.cli import main

    _mlp().save(tmp_path / "m.h5")
    (tmp_path / "file").write_text("x")
    status = main(["export", str(tmp_path / "m.h5"), "--format", "onnx", str(tmp_path / "file" / "out")])
    assert status == 1
    assert "error:" in capsys.readouterr().err
    assert (tmp_path / "file").read_text() == "x"


# -- bug 2: .npz, .safetensors and the NumPy predictor are atomic ---------------------------------------


def test_npz_write_failing_half_way_keeps_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "w.npz"
    model = _mlp()
    model.save_weights(path)
    before = path.read_bytes()

    def half_savez(handle: Any, **arrays: Any) -> None:
        handle.write(b"PK\x03\x04 truncated")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(np, "savez", half_savez)
    with pytest.raises(CheckpointError, match=r"w\.npz.*disk is full"):
        model.save_weights(path)
    assert path.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_safetensors_failed_write_is_a_checkpoint_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    safetensors = pytest.importorskip("safetensors")
    import safetensors.numpy as st_numpy

    path = tmp_path / "w.safetensors"
    model = _mlp()
    model.save_weights(path)
    before = path.read_bytes()

    def fail(arrays: Any, filename: str, metadata: Any = None) -> None:
        Path(filename).write_bytes(b"half")
        raise safetensors.SafetensorError("Error while serializing: I/O error: File too large (os error 27)")

    monkeypatch.setattr(st_numpy, "save_file", fail)
    with pytest.raises(CheckpointError, match=r"w\.safetensors.*File too large"):
        model.save_weights(path)
    assert path.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_safetensors_save_onto_a_directory_is_a_checkpoint_error(tmp_path: Path) -> None:
    pytest.importorskip("safetensors")
    (tmp_path / "w.safetensors").mkdir()
    with pytest.raises(CheckpointError, match="is a directory"):
        _mlp().save_weights(tmp_path / "w.safetensors")


def test_numpy_predictor_failed_export_keeps_the_previous_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "deploy"
    numpy_predictor(_mlp(), out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    _fail_replace(monkeypatch)
    with pytest.raises(ExportError, match="deploy"):
        numpy_predictor(Sequential([Input((5,)), L.Linear(5, 1)]), out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_numpy_predictor_reexport_replaces_both_files(tmp_path: Path) -> None:
    out = tmp_path / "deploy"
    numpy_predictor(_mlp(), out)
    wide = Sequential([Input((5,)), L.Linear(5, 1)])
    script = numpy_predictor(wide, out)
    assert sorted(p.name for p in out.iterdir()) == ["predict.py", "weights.npz"]
    x = np.ones((2, 5), np.float32)
    run = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            f"import sys, numpy as np; sys.path.insert(0, {str(out)!r}); "
            "from predict import predict; np.save(sys.argv[1], predict(np.ones((2, 5), np.float32)))",
            str(tmp_path / "y.npy"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), wide.predict(x), rtol=1e-6, atol=1e-6)
    assert script == out / "predict.py"


# -- bug 3: unbuilt models ---------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_unbuilt_weights_refusal_is_the_h5_one(suffix: str, tmp_path: Path) -> None:
    if suffix == ".safetensors":
        pytest.importorskip("safetensors")
    model = Sequential([L.Linear(output_size=2)])
    with pytest.raises(CheckpointError, match=r"cannot save weights of .*: it is not built yet"):
        model.save_weights(tmp_path / f"w{suffix}")
    assert list(tmp_path.iterdir()) == []


# -- bug 4: safetensors' own error -------------------------------------------------------------------


def test_safetensors_into_a_missing_folder_names_the_path(tmp_path: Path) -> None:
    pytest.importorskip("safetensors")
    from framework.interchange.safetensors import write_safetensors

    path = tmp_path / "missing" / "w.safetensors"
    with pytest.raises(CheckpointError, match="does not exist") as info:
        write_safetensors({"a": np.ones(2, np.float32)}, path)
    assert str(path) in str(info.value)


# -- bug 5: torch dtypes NumPy lacks -----------------------------------------------------------------


def test_bfloat16_state_dict_is_widened_then_cast_to_each_parameter(float64: None) -> None:
    torch = _torch()
    model = Sequential([Input((3,)), L.Linear(3, 2)])
    assert model.dtype == np.float64
    weight = torch.tensor([[0.1, 0.2, 0.3], [1.5, -2.25, 3.0]], dtype=torch.bfloat16)
    model.load_state_dict({"0.weight": weight, "0.bias": torch.zeros(2, dtype=torch.bfloat16)})
    loaded = model.state_dict(format="torch")["0.weight"]
    assert loaded.dtype == np.float64
    np.testing.assert_array_equal(loaded, weight.to(torch.float64).numpy())


def test_a_torch_dtype_numpy_lacks_is_a_config_error_naming_key_and_dtype() -> None:
    torch = _torch()
    if not hasattr(torch, "float8_e4m3fn"):
        pytest.skip("this torch has no float8")
    model = Sequential([Input((3,)), L.Linear(3, 2)])
    state = {k: torch.from_numpy(v.copy()) for k, v in model.state_dict(format="torch").items()}
    state["0.weight"] = state["0.weight"].to(torch.float8_e4m3fn)
    before = model.state_dict()["linear.bias"].copy()
    with pytest.raises(ConfigError, match=r"'0\.weight'.*float8_e4m3fn"):
        model.load_state_dict(state)
    np.testing.assert_array_equal(model.state_dict()["linear.bias"], before)


# -- bug 6: files that are not .npz archives -----------------------------------------------------------


def test_read_npz_names_what_the_file_is(tmp_path: Path) -> None:
    import zipfile

    cases = {
        "empty.npz": (b"", "empty"),
        "array.npz": (None, ".npy"),
        "text.npz": (b"hello, world", "does not start as a zip"),
    }
    for name, (data, why) in cases.items():
        path = tmp_path / name
        if data is None:
            with open(path, "wb") as handle:
                np.save(handle, np.ones(3))
        else:
            path.write_bytes(data)
        with pytest.raises(CheckpointError, match=rf"{name}.*not an \.npz archive of arrays.*{why}"):
            read_npz(path)
    with zipfile.ZipFile(tmp_path / "zip.npz", "w") as archive:
        archive.writestr("notes.txt", "not an array")
    with pytest.raises(CheckpointError, match=r"not an \.npz archive of arrays.*notes\.txt"):
        read_npz(tmp_path / "zip.npz")
    np.savez(tmp_path / "good.npz", a=np.arange(3))
    (tmp_path / "cut.npz").write_bytes((tmp_path / "good.npz").read_bytes()[:40])
    with pytest.raises(CheckpointError, match=r"cut\.npz.*not a readable \.npz archive"):
        read_npz(tmp_path / "cut.npz")
    np.testing.assert_array_equal(read_npz(tmp_path / "good.npz")["a"], np.arange(3))


def test_torch_save_named_npz_says_how_to_load_it_and_runs_nothing(tmp_path: Path) -> None:
    torch = _torch()
    path = tmp_path / "w.npz"
    torch.save({"0.weight": torch.ones(2, 3)}, str(path))
    with pytest.raises(CheckpointError, match=r"w\.npz.*torch\.save file.*load_state_dict"):
        _mlp().load_weights(path)


# -- bug 7: the NumPy predictor onto a file ------------------------------------------------------------


def test_numpy_predictor_onto_a_file_says_to_give_a_folder(tmp_path: Path, capsys: Any) -> None:
    target = tmp_path / "taken"
    target.write_text("x")
    with pytest.raises(ExportError, match=r"taken.*it is a file.*folder"):
        numpy_predictor(_mlp(), target)
    with pytest.raises(ExportError, match="cannot create the folder"):
        numpy_predictor(_mlp(), target / "sub")
    assert target.read_text() == "x"
    pytest.importorskip("h5py")
    from framework.cli import main

    _mlp().save(tmp_path / "m.h5")
    assert main(["export", str(tmp_path / "m.h5"), "--format", "numpy", str(target)]) == 1
    assert "error:" in capsys.readouterr().err


# -- bug 8: the Sequential's declared input ------------------------------------------------------------


def _variable_length() -> Sequential:
    return Sequential([Input((None, 3)), L.GRU(3, 4, batch_first=True, output="sequence"), L.Linear(4, 2)])


def test_sequential_with_a_variable_axis_exports_before_any_predict(tmp_path: Path) -> None:
    ort = _ort()
    model = _variable_length()
    assert not model.built  # the Linear after the sequence waits for a batch
    framework.onnx.export(model, tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[:2] == ["N", "input_d1"]
    rng = np.random.default_rng(0)
    for length in (2, 9):
        x = rng.standard_normal((3, length, 3)).astype(np.float32)
        np.testing.assert_allclose(session.run(None, {"input": x})[0], model.predict(x), rtol=1e-5, atol=1e-5)


def test_sequential_with_a_lazy_layer_names_it_when_not_built(tmp_path: Path) -> None:
    _onnx()
    model = Sequential(
        [Input((None, 3)), L.GRU(3, 4, batch_first=True, output="sequence"), L.Linear(output_size=2)]
    )
    with pytest.raises(ExportError, match=r"not built.*'linear'.*first batch.*predict"):
        framework.onnx.export(model, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
