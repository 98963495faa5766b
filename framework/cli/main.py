"""Command-line interface: ``framework plugins [--json]``."""

from __future__ import annotations

import argparse
import json
import sys

from framework.registry.manager import KINDS, REGISTRY

__all__ = ["main"]


def _plugins(as_json: bool) -> int:
    REGISTRY.load()
    rows = []
    for info in REGISTRY.plugins:
        rows.append(
            {
                "plugin": info.name,
                "module": info.module,
                "distribution": info.distribution,
                "version": info.version,
                "entry_point": info.entry_point,
                "registered": {k: sorted(v) for k, v in info.registered.items()},
                "error": info.error,
            }
        )
    if as_json:
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    header = ("distribution", "version", "plugin", "registers")
    lines = []
    for row in rows:
        if row["error"]:
            what = f"FAILED: {row['error']}"
        else:
            what = "; ".join(f"{k}: {', '.join(v)}" for k, v in row["registered"].items() if v)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="framework", description="NumPy deep-learning framework")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plugins", help="list installed plugins and what they register")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if args.command == "plugins":
        return _plugins(args.json)
    return 2
