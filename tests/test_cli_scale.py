"""The scale-related command-line options: globs, jobs, cache, JSONL streaming, limits, URLs and manifests."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from picklewarden.cli import main
from tests.scale_samples import make_tree, malicious_pickle, serve

EXPECTED = {
    "model-0.pt": "malicious",
    "model-1.pt": "safe",
    "model-2.pt": "safe",
    "model-3.pt": "malicious",
    "model-4.pt": "safe",
    "model-5.pt": "safe",
    "sub/evil-0.pkl": "malicious",
    "sub/evil-1.pkl": "malicious",
    "sub/evil-2.pkl": "malicious",
    "sub/copy-of-evil-0.pkl": "malicious",
    "broken.pkl": "malicious",  # the call runs before the truncation
    "data.npy": "malicious",
}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    make_tree(root)
    return root


def _lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines()]


def _verdicts(entries: list[dict[str, object]], root: Path) -> dict[str, object]:
    return {
        os.path.relpath(str(e["path"]), root).replace(os.sep, "/"): e["verdict"]
        for e in entries
        if not e.get("skipped")
    }


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_jsonl_streams_one_line_per_file_with_any_job_count(
    tree: Path, jobs: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["scan", str(tree), "--format", "jsonl", "-j", jobs])
    entries = _lines(capsys.readouterr().out)
    assert code == 1
    assert _verdicts(entries, tree) == EXPECTED
    skipped = [e for e in entries if e.get("skipped")]
    assert [os.path.basename(str(e["path"])) for e in skipped] == ["notes.txt"]


def test_parallel_json_report_equals_the_serial_one(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["scan", str(tree), "--format", "json", "-j", "1"])
    serial = json.loads(capsys.readouterr().out)
    main(["scan", str(tree), "--format", "json", "-j", "2"])
    parallel = json.loads(capsys.readouterr().out)
    assert parallel == serial  # same files, same order, same findings


def test_include_and_exclude_select_files_in_directories(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["scan", str(tree), "--format", "jsonl", "--include", "*.pkl", "--exclude", "sub/evil-*"])
    scanned = _verdicts(_lines(capsys.readouterr().out), tree)
    assert set(scanned) == {"sub/copy-of-evil-0.pkl", "broken.pkl"}


def test_cache_answers_the_second_run_identically(
    tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "cache"
    main(["scan", str(tree), "--format", "json", "--cache", str(cache)])
    first = json.loads(capsys.readouterr().out)
    stored = [p for p in cache.rglob("*") if p.is_file()]
    assert stored, "the first run fills the cache"
    main(["scan", str(tree), "--format", "json", "--cache", str(cache)])
    assert json.loads(capsys.readouterr().out) == first
    assert sorted(p for p in cache.rglob("*") if p.is_file()) == sorted(stored), "nothing new was analysed"


@pytest.mark.parametrize("mode", ["content", "stat"])
def test_cache_never_hides_a_changed_file(tmp_path: Path, mode: str, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "model.pkl"
    target.write_bytes(b"\x80\x04K\x01.")
    cache = str(tmp_path / "cache")
    assert main(["scan", str(target), "--cache", cache, "--cache-mode", mode, "-q"]) == 0
    target.write_bytes(malicious_pickle())
    assert main(["scan", str(target), "--cache", cache, "--cache-mode", mode, "-q"]) == 1
    assert "MALICIOUS" in capsys.readouterr().out


def test_limit_override_on_the_command_line_and_in_a_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "long.pkl"
    target.write_bytes(b"\x80\x04(" + b"K\x01" * 50 + b"l.")
    assert main(["scan", str(target), "--no-policy"]) == 0
    capsys.readouterr()
    assert main(["scan", str(target), "--no-policy", "--limit", "max_opcodes=10", "--format", "jsonl"]) == 1
    line = _lines(capsys.readouterr().out)[-1]
    assert line["verdict"] == "suspicious"
    assert [f["rule"] for f in line["findings"]] == ["PW301"]  # type: ignore[index]
    policy = tmp_path / "picklewarden.toml"
    policy.write_text("[limits]\nmax_opcodes = 10\n")
    assert main(["scan", str(target), "--policy", str(policy), "-q"]) == 1
    assert "opcodes limit 10" in capsys.readouterr().out
    # The command line wins over the policy.
    assert main(["scan", str(target), "--policy", str(policy), "--limit", "max_opcodes=1000", "-q"]) == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("max_opcodes", "NAME=POSITIVE_INTEGER"),
        ("max_opcodes=-1", "NAME=POSITIVE_INTEGER"),
        ("max_opcodes=0", "max_opcodes must be a positive integer"),
        ("nope=3", "unknown limit 'nope'"),
    ],
)
def test_bad_limits_are_usage_errors(
    tmp_path: Path, change: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "x.pkl"
    target.write_bytes(b"\x80\x04K\x01.")
    assert main(["scan", str(target), "--limit", change]) == 2
    assert message in capsys.readouterr().err


def test_policy_limits_are_validated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "picklewarden.toml"
    policy.write_text('[limits]\nmax_opcodes = "many"\n')
    assert main(["scan", str(tmp_path), "--policy", str(policy)]) == 2
    assert "max_opcodes must be a positive integer" in capsys.readouterr().err


def test_show_policy_lists_the_limits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "picklewarden.toml"
    policy.write_text("[limits]\nmax_seconds = 30\n")
    assert main(["scan", "--show-policy", "--policy", str(policy)]) == 0
    out = capsys.readouterr().out
    assert "max_seconds = 30  # default 300" in out and "# max_opcodes = 50000000  # default" in out


def test_manifest_lists_files_to_scan(tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "manifest.txt"
    manifest.write_text(f"# two files\n{tree / 'model-1.pt'}\n\n{tree / 'sub' / 'evil-1.pkl'}\n")
    assert main(["scan", "--manifest", str(manifest), "--format", "jsonl"]) == 1
    assert _verdicts(_lines(capsys.readouterr().out), tree) == {"model-1.pt": "safe", "sub/evil-1.pkl": "malicious"}


def test_hugging_face_location_is_in_every_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = tmp_path / "hub" / "models--acme--tiny"
    (repo / "blobs").mkdir(parents=True)
    blob = repo / "blobs" / ("3" * 64)
    blob.write_bytes(malicious_pickle())
    snapshot = repo / "snapshots" / ("c" * 40)
    snapshot.mkdir(parents=True)
    os.symlink(os.path.relpath(blob, snapshot), snapshot / "training_args.bin")
    hub = str(tmp_path / "hub")
    main(["scan", hub, "--format", "jsonl"])
    (entry,) = _lines(capsys.readouterr().out)
    assert entry["location"] == "acme/tiny:training_args.bin" and entry["revision"] == "c" * 40
    main(["scan", hub])
    assert "model: acme/tiny:training_args.bin @ " + "c" * 40 in capsys.readouterr().out
    main(["scan", hub, "--format", "sarif"])
    result = json.loads(capsys.readouterr().out)["runs"][0]["results"][0]
    assert result["properties"]["model"] == "acme/tiny:training_args.bin"


def test_urls_are_scanned_with_ranged_reads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("fsspec")
    pytest.importorskip("aiohttp")
    served = tmp_path / "served"
    served.mkdir()
    (served / "evil.pkl").write_bytes(malicious_pickle())
    (served / "good.pkl").write_bytes(b"\x80\x04K\x01.")
    with serve(served) as server:
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        code = main(["scan", base + "evil.pkl", base + "good.pkl", base + "missing.pkl", "--format", "jsonl"])
    entries = {str(e["path"]).rsplit("/", 1)[-1]: e for e in _lines(capsys.readouterr().out)}
    assert code == 1, entries
    assert entries["evil.pkl"]["verdict"] == "malicious"
    assert entries["good.pkl"]["verdict"] == "safe"
    assert entries["missing.pkl"]["verdict"] == "error"


@pytest.mark.parametrize(
    ("names", "expected"), [(["good"], 0), (["good", "missing"], 2), (["good", "missing", "evil"], 1)]
)
def test_jsonl_exit_codes_match_the_full_report(
    tmp_path: Path, names: list[str], expected: int, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "good.pkl").write_bytes(b"\x80\x04K\x01.")
    (tmp_path / "evil.pkl").write_bytes(malicious_pickle())
    paths = [str(tmp_path / f"{name}.pkl") for name in names]
    assert main(["scan", *paths, "--format", "jsonl", "-j", "1"]) == expected
    assert len(_lines(capsys.readouterr().out)) == len(names)
    assert main(["scan", *paths, "--format", "json", "-j", "1"]) == expected
