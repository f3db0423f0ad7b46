"""The CI guard in conftest.py: a test skipped in CI for a missing package fails the run."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

_CONFTEST = (Path(__file__).parent / "conftest.py").read_text(encoding="utf-8")
_TESTS = """
import pytest

def test_needs_missing_package():
    pytest.importorskip("picklewarden_no_such_package")

@pytest.mark.skipif(True, reason="needs FIFOs")
def test_allowed_skip():
    pass

@pytest.mark.xfail(reason="known gap", strict=True)
def test_expected_failure():
    raise AssertionError
"""


def test_ci_turns_a_missing_package_skip_into_a_failure(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeconftest(_CONFTEST)
    pytester.makepyfile(_TESTS)
    monkeypatch.setenv("CI", "true")
    result = pytester.runpytest_subprocess("-q")
    result.assert_outcomes(failed=1, skipped=1, xfailed=1)
    result.stdout.fnmatch_lines(["*skipped in CI (could not import 'picklewarden_no_such_package'*"])


def test_outside_ci_a_missing_package_only_skips(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makeconftest(_CONFTEST)
    pytester.makepyfile(_TESTS)
    monkeypatch.delenv("CI", raising=False)
    result = pytester.runpytest_subprocess("-q")
    result.assert_outcomes(skipped=2, xfailed=1)


def test_the_allowed_list_stays_short() -> None:
    from tests.conftest import ALLOWED_SKIPS

    assert len(ALLOWED_SKIPS) <= 5
    assert all(why.strip() for why in ALLOWED_SKIPS.values())
