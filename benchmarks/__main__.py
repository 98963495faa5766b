"""``python -m benchmarks``: this framework against PyTorch CPU, a GEMM floor and a naive baseline.

Examples::

    python -m benchmarks                              # every case, 7 interleaved rounds, 2 threads
    python -m benchmarks --rounds 11 --json out.json
    python -m benchmarks --cases mlp_train lenet_train --impls ours torch
    python -m benchmarks --quick --rounds 1           # a smoke run: tiny data sets
    python -m benchmarks --list
    python -m benchmarks --show benchmarks/results/latest.json --markdown

Prints one line per case as it finishes, then a table of medians (± half the
interquartile range) and the paired ratios of interleaved rounds; writes the
whole result (raw samples, machine, BLAS, load) as JSON to ``--json`` or
``benchmarks/results/latest.json``.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import sys
from pathlib import Path

from benchmarks.case import IMPL_ORDER
from benchmarks.catalog import all_cases
from benchmarks.harness import SETTLE, run
from benchmarks.report import table, write_json


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="tiny data sets (a smoke run, not a measurement)"
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help="interleaved rounds per case (default 7, quick 1)"
    )
    parser.add_argument(
        "--threads", type=int, default=2, help="threads for NumPy's BLAS and torch (default 2)"
    )
    parser.add_argument(
        "--cases", nargs="+", default=None, metavar="NAME", help="case names or glob patterns (see --list)"
    )
    parser.add_argument("--impls", nargs="+", choices=IMPL_ORDER, default=None, help="implementations to run")
    parser.add_argument(
        "--json", type=Path, default=None, help="write results here (default benchmarks/results/latest.json)"
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=SETTLE,
        help=f"seconds to wait before each timed round, so the previous worker's BLAS threads "
        f"stop spinning (default {SETTLE})",
    )
    parser.add_argument("--markdown", action="store_true", help="print the final table as Markdown")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument(
        "--show", type=Path, default=None, metavar="JSON", help="print the table of saved results"
    )
    args = parser.parse_args(argv)

    if args.show is not None:
        print(table(json.loads(args.show.read_text()), markdown=args.markdown))
        return 0

    cases = all_cases()
    if args.list:
        for case in cases:
            print(f"{case.name:<24} {case.unit:<10} {', '.join(case.impls)}  {case.title}")
        return 0
    if args.cases:
        chosen = [c for c in cases if any(fnmatch.fnmatch(c.name, pattern) for pattern in args.cases)]
        unknown = [p for p in args.cases if not any(fnmatch.fnmatch(c.name, p) for c in cases)]
        if unknown:
            parser.error(f"no case matches {', '.join(unknown)}; see --list")
        cases = chosen
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 7)
    if rounds < 1 or args.threads < 1:
        parser.error("--rounds and --threads must be at least 1")
    if args.settle < 0:
        parser.error("--settle must be at least 0")
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(
        f"{len(cases)} cases, {rounds} rounds, {args.threads} threads"
        + (f", load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}" if load else "")
        + (" (quick)" if args.quick else "")
        + f"; ours {kernels_note()}",
        flush=True,
    )
    results = run(
        cases,
        rounds,
        args.threads,
        args.quick,
        args.impls,
        log=lambda s: print(s, flush=True),
        settle=args.settle,
    )
    results["machine"]["kernels"] = kernels_note()
    print()
    print(table(results, markdown=args.markdown))
    path = write_json(results, args.json)
    end = results["machine"].get("loadavg_end")
    print(
        f"\nload average at the end {end[0]:.2f}; results written to {path}"
        if end
        else f"\nwritten to {path}"
    )
    return 0


def kernels_note() -> str:
    """Which path this framework's workers take: the compiled kernels (and numba's version) or NumPy's.

    Read from ``FRAMEWORK_JIT`` and the installed distributions, without importing numba here.
    """
    import importlib.metadata

    try:
        version = importlib.metadata.version("numba")
    except importlib.metadata.PackageNotFoundError:
        return "on NumPy (numba not installed)"
    from framework.runtime.jit import environment_choice

    if environment_choice() is False:
        return f"on NumPy (FRAMEWORK_JIT={os.environ['FRAMEWORK_JIT']}; numba {version} installed)"
    from framework.runtime import ahead, kernel_cache

    states = [state for _, state in ahead.status()]  # imports the plugins, which define the families
    built = sum(state.startswith("built") for state in states)
    if built:
        folder = kernel_cache.machine_folder()
        return (
            f"on the compiled kernels (numba {version}; {built} of {len(states)} kernel families "
            f"built ahead of time, in {folder})"
        )
    return f"on the compiled kernels (numba {version}, compiled at first use: no ahead-of-time build)"


if __name__ == "__main__":
    sys.exit(main())
