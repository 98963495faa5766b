"""Tests for the command line (``python -m framework``), including issue 14's closed pipe."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from support import ROOT, requires_h5py, subprocess_env

from framework.cli.main import EXIT_BROKEN_PIPE, main

# The child waits until its stdin is closed, so the test can close the reading
# end of the stdout pipe *before* anything is written: the write then fails
# with EPIPE every time, whatever the size of the output and the scheduling.
_GATED_CLI = (
    "import runpy, sys\n"
    "sys.stdin.read()\n"
    "sys.argv = ['framework', *sys.argv[1:]]\n"
    "runpy.run_module('framework', run_name='__main__', alter_sys=True)\n"
)


def test_plugins_table_lists_the_builtin_plugins(capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["distribution", "version", "plugin", "registers"]
    assert "Linear" in out


def test_plugins_json_is_valid_json(capsys):
    assert main(["plugins", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and {"plugin", "distribution", "version", "registered", "hooks", "error"} <= set(rows[0])
    by_name = {row["plugin"]: row for row in rows}
    assert by_name["kernel_workloads"]["hooks"] == ["register_kernel_workloads"]
    assert "register_layers" in by_name["conv"]["hooks"]


def test_a_plugin_with_hooks_outside_the_name_tables_shows_them(capsys):
    """A plugin registering file formats or kernel workloads has no names to list: its hooks are shown."""
    assert main(["plugins"]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    rows = {line.split()[2]: line for line in lines if len(line.split()) > 2}
    assert rows["kernel_workloads"].endswith("hooks: register_kernel_workloads")
    assert rows["formats"].endswith("hooks: register_model_formats")
    assert "hooks:" not in rows["conv"]


@pytest.mark.parametrize("args", [["plugins"], ["plugins", "--json"]], ids=["table", "json"])
def test_plugins_into_a_closed_pipe_exits_quietly(args):
    """Issue 14: ``python -m framework plugins | head`` must not print a BrokenPipeError traceback."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _GATED_CLI, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=subprocess_env(),
    )
    assert proc.stdout is not None and proc.stdin is not None and proc.stderr is not None
    proc.stdout.close()  # the reader goes away before the first line is written
    proc.stdin.close()  # let the child run
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=60) == EXIT_BROKEN_PIPE, stderr
    assert "Traceback" not in stderr
    assert "BrokenPipeError" not in stderr
    assert stderr == ""


def test_plugins_piped_into_a_reader_that_stops_after_one_line():
    """The ``| head -1`` pattern: read one line, close the pipe; quiet whether or not the write was cut."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "framework", "plugins"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=subprocess_env(),
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline().decode()
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    status = proc.wait(timeout=60)
    assert first.startswith("distribution")
    assert "Traceback" not in stderr
    assert status in (0, EXIT_BROKEN_PIPE), stderr


class _ClosedPipe:
    """A stdout whose reader has gone: every write and flush raises BrokenPipeError."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    def fileno(self) -> int:
        raise OSError("not a real file")


def test_main_returns_141_on_a_broken_pipe_in_process(monkeypatch):
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    assert main(["plugins"]) == EXIT_BROKEN_PIPE
    replacement = sys.stdout
    assert not isinstance(replacement, _ClosedPipe)  # pointed at the null device: later writes are dropped
    print("dropped")
    replacement.close()


# -- inspect and export (issue 17) ------------------------------------------


def _saved_model(tmp_path):
    from framework import Sequential
    from framework.layers import BatchNorm, Linear

    model = Sequential([Linear(4, 8, activation="relu"), BatchNorm(8), Linear(8, 3)])
    path = tmp_path / "model.h5"
    model.save(path)
    return model, path


@requires_h5py
def test_inspect_checkpoint_lists_layers_shapes_and_counts(tmp_path, capsys):
    _, path = _saved_model(tmp_path)
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "model: Sequential" in out
    assert "weight (8, 4) float32" in out and "running_var (8,)" in out
    assert "total: 99 values" in out  # 40 + 4*8 + 27


def test_inspect_safetensors_lists_torch_names(tmp_path, capsys):
    pytest.importorskip("safetensors", reason="the [safetensors] extra is not installed")
    model, _ = _saved_model(tmp_path)
    model.save_weights(tmp_path / "w.safetensors")
    assert main(["inspect", str(tmp_path / "w.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "0.weight" in out and "2.num_batches_tracked" in out


def test_inspect_errors_are_one_line(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "missing.h5")]) == 1
    assert capsys.readouterr().err.startswith("error: no such file")
    (tmp_path / "notes.txt").write_text("x")
    assert main(["inspect", str(tmp_path / "notes.txt")]) == 1
    assert "cannot tell the format" in capsys.readouterr().err


@requires_h5py
def test_export_numpy_from_the_command_line(tmp_path):
    import numpy as np

    model, path = _saved_model(tmp_path)
    out = tmp_path / "deploy"
    proc = subprocess.run(
        [sys.executable, "-m", "framework", "export", str(path), "--format", "numpy", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=subprocess_env(),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert (out / "predict.py").is_file() and (out / "weights.npz").is_file()
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    run = subprocess.run(
        [
            sys.executable,
            "-I",
            str(out / "predict.py"),
            str(tmp_path / "x.npy"),
            "--out",
            str(tmp_path / "y.npy"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), model.predict(x), rtol=1e-6, atol=1e-6)
