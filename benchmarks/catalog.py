"""The catalog of benchmark cases: every case module's ``CASES``, in table order.

This is the one module that imports the case modules (``benchmarks.cases_*``);
``python -m benchmarks`` picks its cases here and hands them to
:func:`benchmarks.harness.run`, so the harness never imports a case module.
The case modules import only the standard library at the top, so this import
is light.
"""

from __future__ import annotations

from benchmarks import cases_attention, cases_layers, cases_models, cases_system
from benchmarks.case import Case


def all_cases() -> list[Case]:
    """Every case, in table order."""
    return [*cases_models.CASES, *cases_layers.CASES, *cases_attention.CASES, *cases_system.CASES]
