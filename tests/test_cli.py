"""Tests for the command line (``python -m framework``), including issue 14's closed pipe."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from support import ROOT, subprocess_env

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
    assert rows and {"plugin", "distribution", "version", "registered", "error"} <= set(rows[0])


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
