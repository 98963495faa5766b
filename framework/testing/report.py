"""Conformance reports: one named outcome per check, one error listing every failure.

Every ``check_*`` function of the kit builds a :class:`ConformanceReport`,
runs each check through :func:`run_check` (an exception inside a check is that
check's failure, never the kit's) and raises :class:`ConformanceError` with
the whole report at the end, so a plugin author sees every problem at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from framework.errors import FrameworkError

__all__ = ["ConformanceError", "CheckResult", "ConformanceReport"]


class ConformanceError(FrameworkError, AssertionError):
    """A layer (or other plugin object) failed a conformance check; the message is the report."""


@dataclass
class CheckResult:
    """The outcome of one named check: ``status`` is ``"ok"``, ``"FAIL"`` or ``"skip"``."""

    check: str
    status: str
    detail: str = ""


@dataclass
class ConformanceReport:
    """Every check run on one object; :meth:`raise_if_failed` turns failures into one error."""

    subject: str
    results: list[CheckResult] = field(default_factory=list)

    def add(self, check: str, status: str, detail: str = "") -> None:
        """Record one check's outcome (``"ok"``, ``"FAIL"`` or ``"skip"``)."""
        self.results.append(CheckResult(check, status, detail))

    @property
    def failures(self) -> list[CheckResult]:
        """The checks that failed, in the order they ran."""
        return [r for r in self.results if r.status == "FAIL"]

    @property
    def passed(self) -> bool:
        """``True`` when no check failed (skipped checks do not count)."""
        return not self.failures

    @property
    def ok(self) -> bool:
        """Alias of :attr:`passed`, as on :class:`~framework.testing.gradients.GradientReport`."""
        return self.passed

    def checks(self, status: str | None = None) -> list[str]:
        """Names of the checks run (with ``status``: only those with that status)."""
        return [r.check for r in self.results if status is None or r.status == status]

    def __str__(self) -> str:
        failed = self.failures
        head = (
            f"{self.subject}: {len(failed)} of {len(self.results)} conformance checks failed"
            if failed
            else f"{self.subject}: all {len(self.results)} conformance checks passed"
        )
        lines = [head]
        for r in failed:
            lines.append(f"  [FAIL] {r.check}: " + r.detail.replace("\n", "\n         "))
        for r in self.results:
            if r.status == "skip":
                lines.append(f"  [skip] {r.check}: {r.detail}")
        passed = [r.check for r in self.results if r.status == "ok"]
        if passed:
            lines.append(f"  [ok]   {', '.join(passed)}")
        return "\n".join(lines)

    def raise_if_failed(self) -> ConformanceReport:
        """Raise :class:`ConformanceError` with this report when a check failed; else return self."""
        if self.failures:
            raise ConformanceError(str(self))
        return self


class CheckSkipped(Exception):
    """Raised inside a check: the check does not apply; the message says why."""


class CheckFailed(Exception):
    """Raised inside a check: the check failed; the message is the detail shown in the report."""


def run_check(report: ConformanceReport, check: str, skip: Iterable[str], fn: Callable[[], Any]) -> Any:
    """Run one check and record it; an exception inside it is that check's failure, not the kit's.

    Returns what ``fn`` returned (its string form is the ``ok`` detail), or
    ``None`` when the check was skipped or failed.
    """
    if check in skip:
        report.add(check, "skip", "skipped on request")
        return None
    try:
        outcome = fn()
    except CheckSkipped as exc:
        report.add(check, "skip", str(exc))
        return None
    except CheckFailed as exc:
        report.add(check, "FAIL", str(exc))
        return None
    except Exception as exc:
        report.add(check, "FAIL", f"raised {type(exc).__name__}: {exc}")
        return None
    report.add(check, "ok", "" if outcome is None else str(outcome))
    return outcome
