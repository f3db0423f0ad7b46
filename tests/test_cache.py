"""The result cache answers only when a fresh scan would say the same thing."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

import picklewarden
import picklewarden.filescan
from picklewarden import FileReport, Severity, Verdict
from picklewarden.cache import CacheMode, ResultCache, decode, encode
from picklewarden.limits import DEFAULT_LIMITS
from picklewarden.model import Finding, Indicator
from picklewarden.parallel import scan_parallel
from picklewarden.policy.config import Policy
from tests.scale_samples import make_checkpoint, make_tree, malicious_pickle


@pytest.fixture
def scans(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Paths the scanner really analysed (cache misses)."""
    seen: list[str] = []
    real: Callable[..., FileReport] = picklewarden.filescan.scan_path

    def counting(path: str, *args: object, **kwargs: object) -> FileReport:
        seen.append(Path(path).name)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(picklewarden.filescan, "scan_path", counting)
    return seen


def _same(a: FileReport, b: FileReport) -> bool:
    return (a.path, a.format, a.verdict, a.findings, a.errors, a.pickles, a.notes) == (
        b.path,
        b.format,
        b.verdict,
        b.findings,
        b.errors,
        b.pickles,
        b.notes,
    )


def test_a_hit_is_what_a_fresh_scan_reports(tmp_path: Path, scans: list[str]) -> None:
    files = make_tree(tmp_path / "tree")
    cache = ResultCache(str(tmp_path / "cache"))
    fresh = [picklewarden.filescan.scan_path(str(f)) for f in files]
    first = [cache.scan_path(str(f)) for f in files]
    scans.clear()
    second = [cache.scan_path(str(f)) for f in files]
    assert all(_same(a, b) and _same(a, c) for a, b, c in zip(fresh, first, second, strict=True))
    errors = [f.name for f, r in zip(files, fresh, strict=True) if r.errors]
    assert scans == errors  # reports with errors are never stored


def test_duplicates_are_scanned_once_and_keep_their_own_path(tmp_path: Path, scans: list[str]) -> None:
    for name in ("a.pkl", "b.pkl", "c.pkl"):
        (tmp_path / name).write_bytes(malicious_pickle())
    cache = ResultCache(str(tmp_path / "cache"))
    reports = [cache.scan_path(str(tmp_path / name)) for name in ("a.pkl", "b.pkl", "c.pkl")]
    assert scans == ["a.pkl"]
    assert [Path(r.path).name for r in reports] == ["a.pkl", "b.pkl", "c.pkl"]
    assert all(r.verdict is Verdict.MALICIOUS for r in reports)


def test_what_changes_a_result_changes_the_key(tmp_path: Path, scans: list[str]) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(malicious_pickle())
    cache = ResultCache(str(tmp_path / "cache"))
    cache.scan_path(str(path))
    cache.scan_path(str(path), DEFAULT_LIMITS.replace(max_opcodes=1000))  # other limits
    cache.scan_path(str(path), policy=Policy(severity=(("PW302", Severity.INFO),)))  # a policy
    cache.scan_path(str(path), explicit=False)  # found in a directory: could be skipped
    disguised = tmp_path / "model.npy"
    disguised.write_bytes(path.read_bytes())
    assert any(f.rule == "PW303" for f in cache.scan_path(str(disguised)).findings)  # the extension matters
    path.write_bytes(malicious_pickle("echo other"))  # other bytes
    cache.scan_path(str(path))
    assert scans == ["model.pkl"] * 4 + ["model.npy", "model.pkl"]


def test_a_damaged_entry_is_a_miss(tmp_path: Path, scans: list[str]) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(malicious_pickle())
    cache = ResultCache(str(tmp_path / "cache"))
    cache.scan_path(str(path))
    key, _ = cache.key(str(path))
    entry = next((tmp_path / "cache").rglob(f"{key}.json"))
    for damage in (b"", b"{not json", json.dumps({"format": 1, "key": "other", "report": {}}).encode()):
        entry.write_bytes(damage)
        assert cache.get(key) is None
        assert cache.scan_path(str(path)).verdict is Verdict.MALICIOUS
    assert len(scans) == 4


def test_stat_mode_reads_nothing_and_notices_rewrites(tmp_path: Path, scans: list[str]) -> None:
    path = tmp_path / "model.pt"
    make_checkpoint(path, storage=64)
    copy = tmp_path / "copy.pt"
    copy.write_bytes(path.read_bytes())
    cache = ResultCache(str(tmp_path / "cache"), CacheMode.STAT)
    cache.scan_path(str(path))
    cache.scan_path(str(path))
    cache.scan_path(str(copy))  # the same bytes at another path: stat mode does not know
    before = path.stat()
    make_checkpoint(path, storage=64, payload=True)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # an attacker resets mtime; ctime moves
    assert cache.scan_path(str(path)).verdict is Verdict.MALICIOUS
    assert scans == ["model.pt", "copy.pt", "model.pt"]


def test_the_directory_is_private(tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(malicious_pickle())
    ResultCache(str(tmp_path / "cache")).scan_path(str(path))
    assert stat.S_IMODE((tmp_path / "cache").stat().st_mode) == 0o700


def test_reports_round_trip_through_json() -> None:
    report = FileReport(
        "x.pt",
        "torch-zip",
        (
            Finding(
                "PW100",
                Severity.CRITICAL,
                "runs",
                "archive/data.pkl",
                12,
                "ev",
                "os.system",
                (Indicator("command", "id"),),
            ),
            Finding("PW300", Severity.MEDIUM, "breaks", offset=None),
        ),
        ("an error",),
        2,
        notes=("a note",),
        location="org/name:x.pt",
        revision="abc",
    )
    assert decode(json.loads(json.dumps(encode(report)))) == report
    with pytest.raises((TypeError, ValueError)):
        decode({"path": "x", "format": "y", "unexpected": 1})
    with pytest.raises((TypeError, ValueError)):
        decode({"path": 3, "format": "y"})


def test_parallel_scans_share_the_cache(tmp_path: Path, scans: list[str]) -> None:
    make_tree(tmp_path / "tree")
    cache = ResultCache(str(tmp_path / "cache"))
    expected = picklewarden.scan(str(tmp_path / "tree"))
    first = list(scan_parallel([str(tmp_path / "tree")], jobs=1, cache=cache))
    scans.clear()
    again = list(scan_parallel([str(tmp_path / "tree")], jobs=2, cache=cache))
    key = lambda r: (r.path, r.verdict, r.findings, r.skipped)  # noqa: E731
    assert sorted(map(key, first)) == sorted(map(key, again)) == sorted(map(key, expected.files))
    assert scans == []  # workers were forked after the parent's patch; no miss either way
