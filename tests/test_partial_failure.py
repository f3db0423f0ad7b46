"""A scan where some files are good, some hostile, some broken, unreadable, vanishing or not files at all:
every file still gets a verdict, nothing hangs, and the exit code says what happened."""

from __future__ import annotations

import errno
import os
import pickle
from pathlib import Path

import pytest

from picklewarden import FileReport, Report, Verdict, scan
from picklewarden.cli import main
from picklewarden.parallel import scan_parallel
from tests.scale_samples import malicious_pickle

GOOD = pickle.dumps({"weights": [0.5, 1.5], "epoch": 3}, protocol=4)
EVIL = malicious_pickle()


def _tree(root: Path) -> dict[str, Path]:
    root.mkdir()
    files = {
        "good": root / "a_good.pkl",
        "evil": root / "b_evil.pkl",
        "evil_truncated": root / "c_evil_truncated.pkl",
        "good_truncated": root / "d_good_truncated.pkl",
        "unreadable": root / "e_unreadable.pkl",
        "vanishing": root / "f_vanishing.pkl",
    }
    files["good"].write_bytes(GOOD)
    files["evil"].write_bytes(EVIL)
    files["evil_truncated"].write_bytes(EVIL[:-3])  # the call is made before the stream breaks
    files["good_truncated"].write_bytes(GOOD[: len(GOOD) // 2])
    files["unreadable"].write_bytes(GOOD)
    files["vanishing"].write_bytes(EVIL)
    return files


def _make_unreadable(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """chmod 000, or, for root (whom permissions do not stop), the same PermissionError from the kernel call."""
    if os.geteuid() != 0:
        path.chmod(0)
        return
    real_open = os.open

    def guarded(file: str | os.PathLike[str], flags: int, *args: int, **kwargs: int) -> int:
        if os.fspath(file) == str(path):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(file))
        return real_open(file, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", guarded)


def test_every_file_has_a_verdict_and_the_scan_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = _tree(tmp_path / "models")
    _make_unreadable(files["unreadable"], monkeypatch)
    seen: list[str] = []

    def progress(report: FileReport) -> None:
        seen.append(report.path)
        if report.path == str(files["good"]):
            files["vanishing"].unlink()  # listed by the walk, gone before its turn

    report = scan(tmp_path / "models", progress=progress)
    verdicts = {Path(f.path).name: f.verdict for f in report.files}
    assert verdicts == {
        "a_good.pkl": Verdict.SAFE,
        "b_evil.pkl": Verdict.MALICIOUS,
        "c_evil_truncated.pkl": Verdict.MALICIOUS,
        "d_good_truncated.pkl": Verdict.SUSPICIOUS,
        "e_unreadable.pkl": Verdict.ERROR,
        "f_vanishing.pkl": Verdict.ERROR,
    }
    errors = {Path(f.path).name: f.errors for f in report.files if f.errors}
    assert "Permission denied" in errors["e_unreadable.pkl"][0]
    assert "No such file" in errors["f_vanishing.pkl"][0]
    assert seen == [f.path for f in report.files]
    assert report.exit_code() == 1


def test_exit_code_2_when_a_file_could_not_be_read_and_nothing_else_is_wrong(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.pkl"
    good.write_bytes(GOOD)
    locked = tmp_path / "locked.pkl"
    locked.write_bytes(GOOD)
    _make_unreadable(locked, monkeypatch)
    assert main(["scan", str(good), str(locked), "-j", "1"]) == 2
    out = capsys.readouterr().out
    assert "locked.pkl: ERROR" in out and "never reported as safe" in out


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_worker_pool_reports_broken_missing_and_non_files(tmp_path: Path) -> None:
    files = _tree(tmp_path / "models")
    files["unreadable"].unlink()
    fifo = tmp_path / "models" / "g_fifo.pkl"
    os.mkfifo(fifo)  # opening it for reading would block until a writer came: the scan must not wait
    missing = tmp_path / "models" / "h_missing.pkl"
    named = [str(files[k]) for k in ("good", "evil", "evil_truncated", "good_truncated")]
    reports = list(scan_parallel([*named, str(fifo), str(missing)], jobs=2))
    verdicts = {Path(r.path).name: r.verdict for r in reports}
    assert verdicts == {
        "a_good.pkl": Verdict.SAFE,
        "b_evil.pkl": Verdict.MALICIOUS,
        "c_evil_truncated.pkl": Verdict.MALICIOUS,
        "d_good_truncated.pkl": Verdict.SUSPICIOUS,
        "g_fifo.pkl": Verdict.ERROR,
        "h_missing.pkl": Verdict.ERROR,
    }
    by_name = {Path(r.path).name: r for r in reports}
    assert "not a regular file (a FIFO)" in by_name["g_fifo.pkl"].errors[0]
    assert Report(tuple(reports)).exit_code() == 1
