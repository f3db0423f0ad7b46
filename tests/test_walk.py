"""Directory and Hugging Face cache scanning: include/exclude globs, symbolic links followed safely, cache
files named by repository, shared blobs analysed once."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from picklewarden import FileReport, Report, Verdict, scan
from picklewarden.walk import hf_location, matches
from tests.container_samples import system_pickle

BENIGN = pickle.dumps({"epoch": 1, "lr": 0.1})


def _evil(tmp_path: Path) -> bytes:
    return system_pickle(tmp_path / "canary")


def _by_name(report: Report) -> dict[str, FileReport]:
    return {Path(f.path).name: f for f in report.files}


@pytest.mark.parametrize(
    ("patterns", "path", "expected"),
    [
        (["*.pt"], "a/b/model.pt", True),
        (["*.pt"], "a/b/model.pth", False),
        (["a/*.pt"], "a/b/model.pt", False),
        (["a/**/*.pt"], "a/b/c/model.pt", True),
        (["**/ckpt/*"], "x/ckpt/1.bin", True),
        (["model.[bp]in"], "d/model.bin", True),
        (["model.[!b]in"], "d/model.bin", False),
        (["./cache/"], "cache", True),
    ],
)
def test_glob_semantics(patterns: list[str], path: str, expected: bool) -> None:
    assert matches(patterns, path) is expected


def test_include_and_exclude(tmp_path: Path) -> None:
    (tmp_path / "keep").mkdir()
    (tmp_path / "skipdir").mkdir()
    (tmp_path / "keep" / "a.pkl").write_bytes(BENIGN)
    (tmp_path / "keep" / "b.bin").write_bytes(BENIGN)
    (tmp_path / "skipdir" / "evil.pkl").write_bytes(_evil(tmp_path))
    report = scan(tmp_path, include=["*.pkl"], exclude=["skipdir"])
    assert [Path(f.path).name for f in report.files] == ["a.pkl"]
    report = scan(tmp_path, exclude=["keep/b.*"])
    assert sorted(Path(f.path).name for f in report.files) == ["a.pkl", "evil.pkl"]
    assert report.verdict is Verdict.MALICIOUS


def test_named_files_are_never_filtered(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(_evil(tmp_path))
    assert scan(path, include=["*.pkl"], exclude=["*.bin"]).verdict is Verdict.MALICIOUS


def test_symlink_loops_end_and_each_file_is_scanned_once(tmp_path: Path) -> None:
    root = tmp_path / "models"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "m.pkl").write_bytes(BENIGN)
    os.symlink(root, root / "sub" / "loop")  # sub/loop -> models (an ancestor)
    os.symlink(root / "sub", root / "again")
    report = scan(root)
    scanned = [f for f in report.files if not f.skipped]
    assert len(scanned) == 1 and scanned[0].verdict is Verdict.SAFE


def test_links_leaving_the_tree_are_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.pkl").write_bytes(_evil(tmp_path))
    root = tmp_path / "repo"
    root.mkdir()
    (root / "ok.pkl").write_bytes(BENIGN)
    os.symlink(outside / "secret.pkl", root / "link.pkl")
    os.symlink(outside, root / "linkdir")
    os.symlink(tmp_path / "missing.pkl", root / "dangling.pkl")
    files = _by_name(scan(root))
    assert files["ok.pkl"].verdict is Verdict.SAFE
    for name in ("link.pkl", "linkdir", "dangling.pkl"):
        skipped = files[name]
        assert skipped.skipped and skipped.notes
    assert "leaves the scanned tree" in files["link.pkl"].notes[0]
    assert "dangling" in files["dangling.pkl"].notes[0]
    assert "secret.pkl" not in files


def test_a_named_symlink_is_followed(tmp_path: Path) -> None:
    target = tmp_path / "real.pkl"
    target.write_bytes(_evil(tmp_path))
    os.symlink(target, tmp_path / "named.pkl")
    assert scan(tmp_path / "named.pkl").verdict is Verdict.MALICIOUS


def _hf_cache(tmp_path: Path) -> tuple[Path, Path]:
    """hub/models--acme--tiny-bert with two revisions sharing one weights blob (HF's real layout)."""
    hub = tmp_path / "hub"
    repo = hub / "models--acme--tiny-bert"
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("b" * 40)
    weights = repo / "blobs" / ("1" * 64)
    weights.write_bytes(BENIGN)
    evil = repo / "blobs" / ("2" * 64)
    evil.write_bytes(_evil(tmp_path))
    for revision, bad in (("a" * 40, False), ("b" * 40, True)):
        snapshot = repo / "snapshots" / revision
        (snapshot / "sub").mkdir(parents=True)
        os.symlink(os.path.relpath(weights, snapshot), snapshot / "pytorch_model.bin")
        if bad:
            os.symlink(os.path.relpath(evil, snapshot / "sub"), snapshot / "sub" / "training_args.bin")
    return hub, repo


def test_hugging_face_cache_is_reported_by_repository(tmp_path: Path) -> None:
    hub, _ = _hf_cache(tmp_path)
    report = scan(hub)
    located = {(f.location, f.revision[:1], f.verdict) for f in report.files}
    assert located == {
        ("acme/tiny-bert:pytorch_model.bin", "a", Verdict.SAFE),
        ("acme/tiny-bert:pytorch_model.bin", "b", Verdict.SAFE),
        ("acme/tiny-bert:sub/training_args.bin", "b", Verdict.MALICIOUS),
    }
    assert not any("blobs" in f.path for f in report.files), "blobs are reached through snapshots only"


def test_a_snapshot_may_link_into_its_own_blobs_only(tmp_path: Path) -> None:
    _, repo = _hf_cache(tmp_path)
    snapshot = repo / "snapshots" / ("b" * 40)
    assert scan(snapshot).verdict is Verdict.MALICIOUS  # followed into ../../blobs
    other = tmp_path / "hub" / "models--evil--other" / "blobs"
    other.mkdir(parents=True)
    (other / "x").write_bytes(_evil(tmp_path))
    os.symlink(other / "x", snapshot / "foreign.bin")
    files = _by_name(scan(snapshot))
    assert files["foreign.bin"].skipped


def test_shared_blob_is_analysed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub, _ = _hf_cache(tmp_path)
    import picklewarden.filescan as filescan

    seen: list[str] = []
    real = filescan.analyse_path_if

    def counting(path: str, *args: object, **kwargs: object) -> object:
        seen.append(os.path.realpath(path))
        return real(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(filescan, "analyse_path_if", counting)
    scan(hub)
    assert len(seen) == len(set(seen)) == 2


def test_hf_location_parsing() -> None:
    root = os.sep + os.path.join("c", "hub")
    path = os.path.join(root, "datasets--org--set", "snapshots", "abc", "data", "x.pkl")
    assert hf_location(path)[:2] == ("datasets/org/set:data/x.pkl", "abc")
    assert hf_location(os.path.join(root, "models--gpt2", "snapshots", "r", "m.bin"))[0] == "gpt2:m.bin"
    assert hf_location(os.path.join(root, "plain", "m.bin")) == ("", "", "")
