"""Run under ``mpiexec -n 2``: every data-parallel ``fit`` scenario that must succeed, in one job.

``python fit_scenarios.py WORKDIR`` runs, one after the other:

1. :mod:`hunt_newfeatures`'s scenarios; rank 0 saves ``WORKDIR/hunt_newfeatures.npz``;
2. :mod:`hunt_fit`'s scenarios; rank 0 saves ``WORKDIR/hunt_fit.npz`` and prints ``DONE``;
3. :mod:`equivalence`'s checks, with no collective timeout (the blocking collectives; the two
   parts before run with a 20 s timeout, the nonblocking ones): rank 0 prints ``OK <checks>``,
   and a failed check aborts the job (its other ranks would wait in a collective otherwise).

Each part restores the warning filters it changed, and equivalence's module (which makes
float64 the default dtype when imported) is imported last. One ``mpiexec`` start instead of
three: each costs about a second. The failure-path scripts (``fault.py``,
``hunt_mismatch.py``) need a job of their own each.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import warnings
from types import ModuleType

HERE = os.path.dirname(os.path.abspath(__file__))


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(workdir: str) -> None:
    from framework import distributed

    newfeatures = _load("hunt_newfeatures")
    with warnings.catch_warnings():
        newfeatures.main(os.path.join(workdir, "hunt_newfeatures.npz"), workdir, list(newfeatures.SCENARIOS))
    hunt_fit = _load("hunt_fit")
    with warnings.catch_warnings():
        hunt_fit.main(os.path.join(workdir, "hunt_fit.npz"), list(hunt_fit.SCENARIOS))
    distributed.init(timeout=None)
    _load("equivalence").main()


if __name__ == "__main__":
    main(sys.argv[1])
