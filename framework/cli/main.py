"""Command-line interface: ``framework plugins [--json]``, ``framework inspect FILE``,
``framework export CHECKPOINT --format numpy OUT``, ``framework kernels [build | check]``.

A :class:`~framework.FrameworkError` (an unreadable file, a layer that cannot
be exported) prints ``error: <message>`` on stderr and exits with status 1.

Output piped into a reader that stops early (``python -m framework plugins |
head``) ends the command quietly with exit status 141 (128 + SIGPIPE, what a
shell reports for a program killed by a closed pipe), not with a
``BrokenPipeError`` traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TypedDict

from framework.cli.export_cmd import FORMATS, export_checkpoint
from framework.cli.inspect_file import describe_file
from framework.cli.kernels_cmd import run_kernels
from framework.errors import FrameworkError
from framework.registry.manager import KINDS, REGISTRY

__all__ = ["EXIT_BROKEN_PIPE", "main"]

EXIT_BROKEN_PIPE = 141
"""Exit status when the reader of stdout closed the pipe early: 128 + SIGPIPE (13)."""


class _PluginRow(TypedDict):
    """One plugin as ``plugins --json`` prints it."""

    plugin: str
    module: str
    distribution: str | None
    version: str | None
    entry_point: str | None
    registered: dict[str, list[str]]
    hooks: list[str]
    error: str | None


def _plugin_rows() -> list[_PluginRow]:
    """Every loaded (or failed) plugin, in load order."""
    REGISTRY.load()
    return [
        {
            "plugin": info.name,
            "module": info.module,
            "distribution": info.distribution,
            "version": info.version,
            "entry_point": info.entry_point,
            "registered": {k: sorted(v) for k, v in info.registered.items()},
            "hooks": info.hooks,
            "error": info.error,
        }
        for info in REGISTRY.plugins
    ]


def _plugins(as_json: bool) -> int:
    """``framework plugins``: a table (or JSON) of the plugins and what each registers."""
    rows = _plugin_rows()
    if as_json:
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    header = ("distribution", "version", "plugin", "registers")
    lines: list[tuple[str, str, str, str]] = []
    for row in rows:
        if row["error"]:
            what = f"FAILED: {row['error']}"
        else:
            what = "; ".join(f"{k}: {', '.join(v)}" for k, v in row["registered"].items() if v)
            if not what and row["hooks"]:  # hooks whose objects have no name table (formats, workloads)
                what = "hooks: " + ", ".join(row["hooks"])
        lines.append((row["distribution"] or "-", row["version"] or "-", row["plugin"], what or "(nothing)"))
    widths = [
        max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header[:3])
    ]
    print("  ".join(h.ljust(w) for h, w in zip(header[:3], widths)) + "  " + header[3])
    for line in lines:
        print("  ".join(c.ljust(w) for c, w in zip(line[:3], widths)) + "  " + line[3])
    total = {kind: len(REGISTRY.names(kind)) for kind in KINDS}
    print("\n" + ", ".join(f"{n} {kind}" for kind, n in total.items()))
    return 0


def _silence_stdout() -> None:
    """Point stdout at the null device, so the interpreter's last flush at exit cannot fail again.

    This is the recipe of the Python documentation (``signal`` module, "Note on
    SIGPIPE"): what is still buffered for the closed pipe is dropped.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):  # stdout is not a file (replaced, or closed)
        sys.stdout = open(os.devnull, "w")  # kept open until the interpreter exits
    finally:
        os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status.

    Args:
        argv: the arguments (default ``None``: ``sys.argv[1:]``).

    Returns:
        0 on success, 141 (:data:`EXIT_BROKEN_PIPE`) when the reader of
        stdout closed the pipe before the output was written.
    """
    parser = argparse.ArgumentParser(prog="framework", description="NumPy deep-learning framework")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plugins", help="list installed plugins and what they register")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p = sub.add_parser(
        "inspect",
        help="print a checkpoint's, weights file's or ONNX file's layers, shapes and parameter counts",
    )
    p.add_argument("file", help="a .h5 checkpoint, .safetensors, .npz or .onnx file")
    p = sub.add_parser("export", help="export a saved model (.h5) for deployment")
    p.add_argument("checkpoint", help="a whole-model .h5 file written by model.save")
    p.add_argument("--format", required=True, choices=FORMATS, help="numpy: predict.py + weights.npz; onnx")
    p.add_argument("out", help="output directory (numpy) or .onnx file / directory (onnx)")
    p = sub.add_parser("kernels", help="the compiled kernels built ahead of time (the jit extra): status")
    p.add_argument(
        "action",
        nargs="?",
        choices=("build", "check"),
        help="build: compile them for this machine; check: run the layers on the build, report what it lacks",
    )
    args = parser.parse_args(argv)
    try:
        status = _run(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at interpreter exit
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except FrameworkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return status


def _run(args: argparse.Namespace) -> int:
    """Dispatch one parsed command; returns its exit status."""
    if args.command == "plugins":
        return _plugins(args.json)
    if args.command == "inspect":
        print(describe_file(args.file))
        return 0
    if args.command == "export":
        written = export_checkpoint(args.checkpoint, args.format, args.out)
        print(f"wrote {written}")
        return 0
    if args.command == "kernels":
        return run_kernels(args.action)
    return 2
