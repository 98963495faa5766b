"""``framework kernels [build | check]``: the kernels built ahead of time (:mod:`framework.runtime.ahead`).

- ``framework kernels``: where this machine's builds live and, per kernel
  family, whether it is built;
- ``framework kernels build``: compile every family ahead of time (needs
  numba and a C compiler; about 15 s for the built-in layers);
- ``framework kernels check``: run the kernel workloads on the build; exit
  status 1 if a call needed numba (a kind of arguments the build lacks).
"""

from __future__ import annotations

import time

from framework.runtime import ahead, kernel_cache

__all__ = ["run_kernels"]


def run_kernels(action: str | None) -> int:
    """Run ``framework kernels`` with ``action`` (``None``, ``"build"`` or ``"check"``); the exit status."""
    if action == "build":
        start = time.perf_counter()
        written = ahead.build(report=print)
        took = time.perf_counter() - start
        print(f"built {len(written)} modules in {took:.1f} s into {kernel_cache.machine_folder()}")
        return 0
    if action == "check":
        problems = ahead.check(report=print)
        for line in problems:
            print(f"not served by the build: {line}")
        print("run: framework kernels build" if problems else "the build served every call without numba")
        return 1 if problems else 0
    print(f"builds for this machine: {kernel_cache.machine_folder()}")
    for family, state in ahead.status():
        print(f"  {family}: {state}")
    return 0
