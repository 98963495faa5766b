"""The compiled kernels against the NumPy path, in one process: the same model, alternate epochs.

``python -m benchmarks.jit_ab fashion_train_ours [--rounds 5] [--threads 2]`` builds
a case's runner (a ``*_ours`` function of :mod:`benchmarks.cases_models` or
:mod:`benchmarks.cases_attention`: ``fashion_train_ours``, ``lenet_train_ours``,
``fashion_threads_train_ours``, ``encoder_ours``, ...), runs one epoch to warm
up, then ``--rounds`` times an epoch with the kernels on and one with them off
(``framework.runtime.jit.set_enabled``), pausing 0.2 s before each so that
OpenBLAS's spinning threads settle. Prints the median, min and max ms per
step of each. One process and one model for both, so the machine's load hits
both alike; the harness (``python -m benchmarks``) runs each framework in its
own worker instead.
"""

from __future__ import annotations

import argparse
import statistics
import time


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", help="a *_ours function of benchmarks.cases_models or cases_attention")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="the cases' small data sets (a smoke run)")
    args = parser.parse_args(argv)
    from benchmarks import cases_attention, cases_models
    from benchmarks.harness import limit_threads

    limit_threads("ours", args.threads)  # the BLAS pinned, as the harness's workers pin it
    from framework.runtime import jit

    make = getattr(cases_models, args.case, None) or getattr(cases_attention, args.case, None)
    if make is None or not args.case.endswith("_ours"):
        parser.error(f"no case runner {args.case!r} in benchmarks.cases_models or cases_attention")
    run = make(args.quick)
    run()
    engines = {"compiled kernels": True, "NumPy path": False} if jit.available() else {"NumPy path": False}
    times: dict[str, list[float]] = {name: [] for name in engines}
    try:
        for _ in range(args.rounds):
            for name, flag in engines.items():
                jit.set_enabled(flag)
                time.sleep(0.2)
                times[name].append(run())
    finally:
        jit.set_enabled(None)
    print(f"{args.case}, {args.rounds} rounds, ms/step")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:<17} median {median:7.2f}  min {min(values):7.2f}  max {max(values):7.2f}")


if __name__ == "__main__":
    main()
