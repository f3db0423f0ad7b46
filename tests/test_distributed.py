"""The Ray backend scans a manifest with the same results as a local scan (on a local Ray instance)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import picklewarden
from picklewarden import FileReport, Verdict
from picklewarden.cache import ResultCache
from picklewarden.distributed import Entry, read_manifest, scan_manifest, scan_shard
from tests.scale_samples import make_tree


def _key(report: FileReport) -> tuple[object, ...]:
    return (report.path, report.format, report.verdict, report.findings, report.errors, report.skipped)


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[None]:
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield
    finally:
        ray.shutdown()


def _manifest(tmp_path: Path) -> tuple[Path, list[str]]:
    files = [str(f) for f in make_tree(tmp_path / "tree")] + [str(tmp_path / "missing.pt")]
    manifest = tmp_path / "manifest.txt"
    manifest.write_text("# models to check\n\n" + "\n".join(files) + "\n")
    return manifest, files


def test_manifest_files_and_prefixes_are_read_lazily(tmp_path: Path) -> None:
    manifest, files = _manifest(tmp_path)
    assert list(read_manifest(str(manifest))) == [Entry(f, True) for f in files]
    found = list(read_manifest(str(tmp_path / "tree")))
    assert {e.target for e in found} == {f for f in files if "missing" not in f} and not any(e.explicit for e in found)


def test_a_shard_is_a_local_scan(tmp_path: Path) -> None:
    from picklewarden.distributed import _Settings

    manifest, files = _manifest(tmp_path)
    settings = _Settings(picklewarden.DEFAULT_LIMITS, None, None, False, None)
    got = scan_shard(list(read_manifest(str(manifest))), settings)
    assert list(map(_key, got)) == list(map(_key, picklewarden.scan(files).files))


def test_ray_scan_of_a_manifest_matches_a_local_scan(tmp_path: Path, ray_instance: None) -> None:
    manifest, files = _manifest(tmp_path)
    expected = picklewarden.scan(files)
    seen: list[FileReport] = []
    got = list(scan_manifest(str(manifest), shard_size=3, max_in_flight=2, progress=seen.append))
    assert sorted(map(_key, got)) == sorted(map(_key, expected.files))
    assert seen == got
    assert {Path(r.path).name: r.verdict for r in got}["evil-0.pkl"] is Verdict.MALICIOUS


def test_ray_scan_of_a_prefix_with_a_cache(tmp_path: Path, ray_instance: None) -> None:
    make_tree(tmp_path / "tree")
    expected = picklewarden.scan(str(tmp_path / "tree"))
    cache = ResultCache(str(tmp_path / "cache"))
    first = list(scan_manifest(str(tmp_path / "tree"), cache=cache, shard_size=4))
    again = list(scan_manifest(str(tmp_path / "tree"), cache=cache, shard_size=4))
    assert sorted(map(_key, first)) == sorted(map(_key, again)) == sorted(map(_key, expected.files))
    assert any((tmp_path / "cache").rglob("*.json"))


def test_cli_ray_scan_matches_the_local_cli_scan(
    tmp_path: Path, ray_instance: None, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from picklewarden.cli import main

    manifest, _ = _manifest(tmp_path)
    local_code = main(["scan", "--manifest", str(manifest), "--format", "jsonl", "-j", "1"])
    local = sorted(capsys.readouterr().out.splitlines())
    ray_code = main(["scan", "--manifest", str(manifest), "--format", "jsonl", "--ray", "local"])
    remote = sorted(capsys.readouterr().out.splitlines())
    assert ray_code == local_code == 1
    assert remote == local and len(local) == 14
    assert {json.loads(line)["verdict"] for line in local} == {"safe", "malicious", "error"}
