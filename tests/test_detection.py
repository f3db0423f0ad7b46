"""Every sample in the corpus gets its expected verdict, with evidence, and nothing in it ever runs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from picklewarden import Severity, Verdict, scan
from tests.corpus import ALL, MALICIOUS, Sample, write

_HAVE_TORCH = importlib.util.find_spec("torch") is not None


def _materialise(sample: Sample, tmp_path: Path) -> tuple[Path, Path]:
    if sample.needs_torch and not _HAVE_TORCH:
        pytest.skip("building this sample needs torch")
    canary = tmp_path / "canary"
    return write(sample, tmp_path, canary), canary


@pytest.mark.parametrize("sample", ALL, ids=lambda s: s.id)
def test_verdict_matches_the_corpus(sample: Sample, tmp_path: Path) -> None:
    path, canary = _materialise(sample, tmp_path)
    report = scan(path)
    (result,) = report.files
    assert result.verdict.label == sample.expect, [(f.rule, f.message) for f in result.findings]
    assert not canary.exists(), "scanning must never run the payload"
    if sample.expect == "safe":
        assert result.errors == ()


@pytest.mark.parametrize("sample", MALICIOUS, ids=lambda s: s.id)
def test_malicious_findings_carry_offset_and_evidence(sample: Sample, tmp_path: Path) -> None:
    path, _ = _materialise(sample, tmp_path)
    (result,) = scan(path).files
    threats = [f for f in result.findings if f.severity >= Severity.HIGH]
    assert threats
    top = threats[0]
    assert top.rule.startswith("PW1")
    assert top.offset is not None and top.offset >= 0
    assert top.evidence, "a malicious finding must show the decompiled line"


def test_directory_scan_reports_every_model_and_skips_the_rest(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    written = [write(s, tmp_path, canary) for s in ALL if not s.needs_torch]
    (tmp_path / "notes.txt").write_text("not a model\n")
    report = scan(tmp_path)
    scanned = {Path(f.path) for f in report.scanned}
    assert scanned == set(written)
    assert [Path(f.path).name for f in report.files if f.skipped] == ["notes.txt"]
    assert report.verdict is Verdict.MALICIOUS
