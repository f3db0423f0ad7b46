"""Parallel scanning reports exactly what a sequential scan reports, streams, and survives dying workers."""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

import picklewarden
import picklewarden.filescan
from picklewarden import FileReport, Verdict
from picklewarden.parallel import WORKER_DIED, render_jsonl, scan_parallel
from tests.scale_samples import make_tree, malicious_pickle


def _key(report: FileReport) -> tuple[object, ...]:
    return (report.path, report.format, report.verdict, report.findings, report.errors, report.skipped, report.notes)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    make_tree(tmp_path / "tree")
    os.symlink("model-0.pt", tmp_path / "tree" / "link-to-model-0.pt")
    return tmp_path / "tree"


@pytest.mark.parametrize("jobs", [1, 2, 3])
def test_same_reports_as_a_sequential_scan(tree: Path, jobs: int) -> None:
    expected = picklewarden.scan([str(tree), str(tree / "notes.txt"), str(tree / "missing.pt")])
    seen: list[FileReport] = []
    reports = list(
        scan_parallel([str(tree), str(tree / "notes.txt"), str(tree / "missing.pt")], jobs=jobs, progress=seen.append)
    )
    assert sorted(map(_key, reports)) == sorted(map(_key, expected.files))
    assert seen == reports
    verdicts = {Path(r.path).name: r.verdict for r in reports}
    assert verdicts["evil-1.pkl"] is Verdict.MALICIOUS and verdicts["model-1.pt"] is Verdict.SAFE
    assert verdicts["link-to-model-0.pt"] is verdicts["model-0.pt"] is Verdict.MALICIOUS
    assert verdicts["missing.pt"] is Verdict.ERROR


@pytest.mark.parametrize("jobs", [1, 2])
def test_ordered_results_come_in_walk_order(tree: Path, jobs: int) -> None:
    expected = picklewarden.scan([str(tree), str(tree / "missing.pt")])
    got = list(scan_parallel([str(tree), str(tree / "missing.pt")], jobs=jobs, ordered=True))
    assert list(map(_key, got)) == list(map(_key, expected.files))


def test_options_of_scan_apply(tree: Path) -> None:
    kwargs = {"skip_non_models": True, "exclude": ["sub/**"], "include": ["*.pt", "*.txt", "*.pkl"]}
    expected = picklewarden.scan([str(tree), str(tree / "notes.txt")], **kwargs)  # type: ignore[arg-type]
    got = list(scan_parallel([str(tree), str(tree / "notes.txt")], jobs=2, **kwargs))  # type: ignore[arg-type]
    assert sorted(map(_key, got)) == sorted(map(_key, expected.files))
    assert not any("/sub/" in r.path for r in got)


def test_results_stream_and_targets_are_pulled_lazily(tmp_path: Path) -> None:
    for index in range(60):
        (tmp_path / f"{index:03d}.pkl").write_bytes(malicious_pickle())
    pulled = 0

    def paths() -> Iterator[str]:
        nonlocal pulled
        for path in sorted(tmp_path.iterdir()):
            pulled += 1
            yield str(path)

    stream = scan_parallel(paths(), jobs=2)
    first = next(stream)
    assert first.verdict is Verdict.MALICIOUS
    assert pulled <= 2 * 4 * 2 + 1  # in flight plus ready results: bounded, not the whole list
    assert len(list(stream)) == 59
    stream.close()


def _dies_on_killer(path: str, *args: object, **kwargs: object) -> FileReport:
    if path.endswith("killer.pkl"):
        os._exit(3)  # what a segfault or an out-of-memory kill looks like to the pool
    return _real_scan_path(path, *args, **kwargs)  # type: ignore[arg-type]


_real_scan_path = picklewarden.filescan.scan_path


@pytest.mark.skipif(multiprocessing.get_start_method() != "fork", reason="the crash is injected into forked workers")
def test_a_file_that_kills_its_worker_is_an_error_and_the_scan_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for index in range(12):
        (tmp_path / f"{index:02d}.pkl").write_bytes(malicious_pickle())
    (tmp_path / "killer.pkl").write_bytes(malicious_pickle())
    monkeypatch.setattr(picklewarden.filescan, "scan_path", _dies_on_killer)
    reports = {Path(r.path).name: r for r in scan_parallel([str(tmp_path)], jobs=2)}
    assert len(reports) == 13
    assert reports["killer.pkl"].verdict is Verdict.ERROR and reports["killer.pkl"].errors == (WORKER_DIED,)
    assert all(r.verdict is Verdict.MALICIOUS for name, r in reports.items() if name != "killer.pkl")


def _batch_size(batch: list[tuple[str, bool]], settings: object) -> list[FileReport]:
    """A worker's answer naming how many files came in its batch (replaces the analysis in forked workers)."""
    return [FileReport(path, "unknown", notes=(str(len(batch)),)) for path, _ in batch]


@pytest.mark.skipif(
    multiprocessing.get_start_method() != "fork", reason="workers report their batches from forked processes"
)
def test_small_files_travel_together_and_big_ones_in_small_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import picklewarden.parallel as parallel

    small, big = tmp_path / "small", tmp_path / "big"
    for folder, size in ((small, 100), (big, 4096)):
        folder.mkdir()
        for index in range(40):
            (folder / f"{index:02d}.pkl").write_bytes(b"x" * size)
    monkeypatch.setattr(parallel, "_analyse_batch", _batch_size)
    monkeypatch.setattr(parallel, "_BATCH_BYTES", 3 * 4096)
    monkeypatch.setattr(parallel, "_BATCH", 8)
    monkeypatch.setattr(parallel, "_BATCH_MIN", 2)
    monkeypatch.setattr(parallel, "_LOOKAHEAD_BATCHES", 1)  # the walk is read 16 files ahead: its end shows late
    sizes = {}
    for folder in (small, big):
        reports = list(scan_parallel([str(folder)], jobs=2))
        assert len(reports) == 40
        sizes[folder.name] = sorted(int(r.notes[0]) for r in reports)
    # full batches while the walk's end is out of sight, then smaller ones (a share of what is left)
    assert max(sizes["small"]) == 8 and min(sizes["small"]) < 8
    assert max(sizes["big"]) == 3  # the byte bound sends every third file


def test_batches_shrink_as_the_walk_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    """Guided self-scheduling: the largest batch while more is coming, then half of each worker's share of
    what is left, never below the smallest batch (a directory of 100 small files keeps both workers busy)."""
    import picklewarden.parallel as parallel

    def cuts(count: int, jobs: int) -> list[int]:
        found = (SimpleNamespace(explicit=False) for _ in range(count))  # files a walk found
        pending = parallel._Lookahead(enumerate(found), jobs * 4 * 96)  # type: ignore[arg-type]
        taken = []
        while True:
            size = pending.batch_size(jobs)
            batch = [item for item in (pending.take() for _ in range(size)) if item is not None]
            if not batch:
                return taken
            taken.append(len(batch))

    monkeypatch.setattr(parallel, "_BATCH", 96)
    monkeypatch.setattr(parallel, "_BATCH_MIN", 8)
    assert cuts(100, 2) == [25, 19, 14, 11, 8, 8, 8, 7]
    big = cuts(2000, 2)
    assert big[:5] == [96] * 5 and sum(big) == 2000 and big[-1] <= 8 and sorted(big, reverse=True) == big
    assert cuts(0, 2) == [] and cuts(3, 2) == [3]


def test_jsonl_is_one_line_per_file_with_the_json_report_fields(tree: Path) -> None:
    from picklewarden.report.json import file_dict

    for report in scan_parallel([str(tree)], jobs=1):
        line = render_jsonl(report)
        assert "\n" not in line and line.isascii()
        data = json.loads(line)
        assert data.pop("skipped", False) is report.skipped
        assert data == json.loads(json.dumps(file_dict(report)))


def test_jobs_must_be_positive(tree: Path) -> None:
    with pytest.raises(ValueError, match="jobs"):
        list(scan_parallel([str(tree)], jobs=0))


def test_ordered_output_runs_at_most_a_window_ahead(tmp_path: Path) -> None:
    from picklewarden import walk
    from picklewarden.parallel import _in_pool, _reorder, _Settings, _Window

    for index in range(30):
        (tmp_path / f"{index:02d}.pkl").write_bytes(malicious_pickle())
    pulled = 0

    def targets() -> Iterator[walk.Target]:
        nonlocal pulled
        for target in walk.iter_targets([str(tmp_path)]):
            pulled += 1
            assert pulled - window.head <= window.size + 1
            yield target

    window = _Window(3)
    settings = _Settings(picklewarden.DEFAULT_LIMITS, None, False, None)
    names = [Path(r.path).name for r in _reorder(_in_pool(targets(), settings, 2, window), window)]
    assert names == sorted(names) and len(names) == 30


def test_the_last_analysis_is_held_only_when_asked_and_one_at_a_time(tmp_path: Path) -> None:
    """The CLI leaves with os._exit, so it asks to keep the last file's analysis rather than free ~10M
    objects of a big state dict; every earlier analysis is let go before the next one starts."""
    import pickle

    from picklewarden import parallel

    for name in ("a.pkl", "b.pkl"):
        (tmp_path / name).write_bytes(pickle.dumps({"name": name}))
    made: list[object] = []
    held_when_called: list[list[object]] = []
    original = picklewarden.filescan.scan_file

    def watched(*args: object, **kwargs: object) -> object:
        held_when_called.append(list(parallel._held))
        report, analysis = original(*args, **kwargs)  # type: ignore[arg-type]
        made.append(analysis)
        return report, analysis

    picklewarden.filescan.scan_file = watched  # type: ignore[assignment]
    try:
        reports = list(scan_parallel([tmp_path / "a.pkl", tmp_path / "b.pkl"], jobs=1, hold_last=True))
        assert [r.verdict for r in reports] == [Verdict.SAFE, Verdict.SAFE]
        assert held_when_called == [[], []], "an analysis was still held when the next file started"
        assert len(parallel._held) == 1 and parallel._held[0] is made[1]
        list(scan_parallel([tmp_path / "a.pkl"], jobs=1))
        assert parallel._held == []
    finally:
        picklewarden.filescan.scan_file = original  # type: ignore[assignment]
