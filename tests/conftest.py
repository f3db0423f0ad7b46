"""Test-session set-up shared by every test module.

- Make ``import tests.<module>`` work whatever pytest's import mode (rootdir = the repository).
- When ``CI`` is set, a skipped test fails the run, unless its reason is in ``ALLOWED_SKIPS``: CI installs
  every optional dependency (the ``test`` extra), so a skip there means a feature went untested.
- When ``CI`` is set, hypothesis draws a fixed set of examples.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

ALLOWED_SKIPS: dict[str, str] = {
    # Skip reason (exact text) -> why CI may skip it.
    "needs FIFOs": "os.mkfifo does not exist on Windows; on the Linux CI machine this test runs",
    "workers report their batches from forked processes": (
        "the test replaces the analysis in the parent and relies on fork to hand the replacement to the "
        "workers; on the Linux CI machine multiprocessing forks"
    ),
    "the crash is injected into forked workers": (
        "only where multiprocessing starts workers by fork (Linux before Python 3.14); elsewhere the pool's "
        "crash handling is covered by the process-level partial-failure tests"
    ),
}
"""At most five entries: anything else skipped in CI is a failure."""


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


# CI draws the same examples on every run, so a run fails for a change and never for a new random draw;
# local runs keep drawing fresh ones (and remember what failed) to find new cases.
settings.register_profile("ci", derandomize=True, database=None)
if _in_ci():
    settings.load_profile("ci")


def _skip_reason(longrepr: Any) -> str:
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        reason = str(longrepr[2])
        return reason.removeprefix("Skipped: ")
    return str(longrepr)


def _forbid(report: pytest.TestReport | pytest.CollectReport) -> None:
    reason = _skip_reason(report.longrepr)
    if reason in ALLOWED_SKIPS:
        return
    report.outcome = "failed"
    report.longrepr = (
        f"skipped in CI ({reason}): CI installs every optional dependency (pip install -e '.[test]'), so this "
        "feature went untested. Add the missing package to the 'test' extra, or name the skip in "
        "tests/conftest.py ALLOWED_SKIPS with a reason."
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if _in_ci() and report.skipped and not hasattr(report, "wasxfail"):
        _forbid(report)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Any:
    outcome = yield
    report: pytest.CollectReport = outcome.get_result()
    if _in_ci() and report.skipped:
        _forbid(report)
