"""Hypothesis fallback for the fuzz targets (fuzz/targets.py): runs in CI, bounded.

Random bytes and mutations of real samples must never make a target raise anything but ScanError, and
``scan_bytes`` must never raise at all (a bad file is an error verdict, never a crash).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from picklewarden import ScanError, Severity, Verdict, scan_bytes

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "fuzz"))
from targets import LIMITS, TARGETS

from tests.corpus import ALL, write


def _seed_bytes() -> list[bytes]:
    import tempfile

    seeds = []
    with tempfile.TemporaryDirectory() as tmp:
        for sample in ALL:
            if sample.needs_torch:
                continue
            seeds.append(write(sample, Path(tmp), Path(tmp) / "canary").read_bytes())
    return seeds


SEEDS = _seed_bytes()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        pos = draw(st.integers(min_value=0, max_value=max(len(data) - 1, 0)))
        action = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "dup"]))
        if action == "flip" and data:
            data[pos] = draw(st.integers(min_value=0, max_value=255))
        elif action == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=9))
        elif action == "delete":
            del data[pos : pos + draw(st.integers(min_value=1, max_value=8))]
        elif action == "truncate":
            del data[pos:]
        else:
            data[pos:pos] = data[pos : pos + 16]
    return bytes(data)


inputs = st.binary(max_size=512) | mutated()


@pytest.mark.parametrize("name", sorted(TARGETS))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=inputs)
@example(data=b"\x00\r\x00")  # a header tokenize reads but untokenize cannot rebuild (npy-header)
def test_targets_raise_only_scan_errors(name: str, data: bytes) -> None:
    target: Callable[[bytes], None] = TARGETS[name]
    try:
        target(data)
    except ScanError:
        assert name != "scan", "scan_bytes must turn every problem into a verdict"


@settings(max_examples=100, deadline=None)
@given(data=mutated())
def test_a_mutated_file_is_never_safe_unless_it_still_parses(data: bytes) -> None:
    report = scan_bytes(data, limits=LIMITS)
    if report.verdict is Verdict.SAFE:
        # Either a loader's pickle was read to its end, or the report says why no loader reads anything: an
        # .npy whose version numpy refuses starts with STACK_GLOBAL, which pickle.load fails on at once.
        read = report.errors == () and report.pickles >= 1
        refused = report.errors == () and report.format == "npy" and report.pickles == 0
        assert read or (refused and any(f.rule == "PW300" and f.severity is Severity.INFO for f in report.findings))


def test_a_scanner_bug_is_an_error_report_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    """The public entry points never raise for a file, even when the analysis itself breaks."""
    from picklewarden import Verdict, filescan, scan_bytes

    def broken(*args: object, **kwargs: object) -> None:
        raise RecursionError("simulated scanner bug")

    monkeypatch.setattr(filescan, "analyse_bytes", broken)
    report = scan_bytes(b"\x80\x04K\x01.")
    assert report.verdict is Verdict.ERROR
    assert "internal error while scanning: RecursionError" in report.errors[0]


FOUND_BY_FUZZING = {
    # os.system with U+0085 (a Unicode space) in its argument: the base64-indicator check matched it with
    # \s, base64 refused the text, and the whole scan ended as an internal error instead of malicious.
    "nel-in-command": ("KFMndG91Y2ggL3RtMjQ4ZmYvhWNhcnknCmlvcwpzeXN0ZW0KLg==", Verdict.MALICIOUS),
}


@pytest.mark.parametrize("name", sorted(FOUND_BY_FUZZING))
def test_inputs_the_fuzzers_found_stay_fixed(name: str) -> None:
    import base64

    encoded, verdict = FOUND_BY_FUZZING[name]
    data = base64.b64decode(encoded)
    for target in TARGETS.values():
        try:
            target(data)
        except ScanError:
            pass
    report = scan_bytes(data)
    assert report.verdict is verdict and not report.errors
