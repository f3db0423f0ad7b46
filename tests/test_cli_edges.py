"""Rough edges a new user hit, each pinned: broken pipes, empty directories, `show` on unreadable files,
`convert`'s messages and overwrites, remote reads without their extra, unwritable outputs, README drift."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from picklewarden.cli import main

try:
    import tomllib
except ImportError:  # Python 3.10: the tomli backport, a dependency there
    import tomli as tomllib  # type: ignore[no-redef,unused-ignore]
from tests.asm import Asm

ROOT = Path(__file__).resolve().parent.parent
EVIL = Asm(2).global_("os", "system").text("echo picklewarden-edges").tuple1().reduce().stop().bytes()
GOOD = Asm(2).empty_dict().text("w").binint1(1).setitem().stop().bytes()


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "picklewarden", *args]


@pytest.mark.parametrize(("content", "expected"), [(GOOD, 0), (EVIL, 1)])
def test_a_reader_that_stops_early_does_not_change_the_exit_code(tmp_path: Path, content: bytes, expected: int) -> None:
    for i in range(40):
        (tmp_path / f"m{i}.pkl").write_bytes(content)
    for fmt in ("text", "jsonl"):
        # The reading end is closed before the scan writes anything: every write hits a broken pipe.
        read_end, write_end = os.pipe()
        os.close(read_end)
        done = subprocess.run(
            _cli("scan", str(tmp_path), "--jobs", "1", "--format", fmt),
            stdout=write_end,
            stderr=subprocess.PIPE,
            timeout=120,
        )
        os.close(write_end)
        assert done.returncode == expected, (fmt, done.stderr)
        assert b"Traceback" not in done.stderr


def test_an_empty_directory_says_nothing_was_scanned_and_fails_closed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["scan", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert "nothing to scan" in captured.err
    assert "nothing was scanned" in captured.out
    assert not captured.out.startswith("\n")


def test_a_glob_that_matches_nothing_fails_closed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "model.pkl").write_bytes(GOOD)
    assert main(["scan", str(tmp_path), "--include", "*.pt"]) == 2
    assert "nothing to scan" in capsys.readouterr().err


def test_quiet_prints_only_the_summary_for_clean_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "model.pkl").write_bytes(GOOD)
    assert main(["scan", "-q", str(tmp_path / "model.pkl")]) == 0
    assert capsys.readouterr().out == "scanned 1 file(s): 0 malicious, 0 suspicious, 0 error, 1 safe\n"


def test_quiet_omits_the_show_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "evil.pkl").write_bytes(EVIL)
    assert main(["scan", "-q", str(tmp_path / "evil.pkl")]) == 1
    out = capsys.readouterr().out
    assert "MALICIOUS" in out and "picklewarden show" not in out


def test_show_exits_2_on_a_file_it_cannot_analyse(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "junk.pt").write_bytes(b"this is not a model file\n" * 4)
    assert main(["scan", str(tmp_path / "junk.pt")]) == 2
    assert main(["show", str(tmp_path / "junk.pt")]) == 2
    assert "error" in capsys.readouterr().out
    (tmp_path / "good.pkl").write_bytes(GOOD)
    assert main(["show", str(tmp_path / "good.pkl")]) == 0


@pytest.mark.parametrize("reader", ["plain", "click"])
def test_an_unwritable_output_fails_before_the_scan(
    reader: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import picklewarden.cli.scanargs as scanargs
    import picklewarden.cli.scanrun as scanrun

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the scan started before the output was checked")

    monkeypatch.setattr(scanrun, "_reports", never)
    if reader == "click":
        monkeypatch.setattr(scanargs, "parse", lambda argv: None)
    (tmp_path / "good.pkl").write_bytes(GOOD)
    for option in ("--output", "--sarif-output"):
        target = str(tmp_path / "missing-dir" / "out.txt")
        assert main(["scan", str(tmp_path / "good.pkl"), option, target]) == 2
        assert "cannot write" in capsys.readouterr().err


def test_a_url_without_its_backend_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import fsspec  # type: ignore[import-untyped,unused-ignore]

    from picklewarden.remote import scan_url

    def missing_backend(url: str, **options: object) -> None:
        raise ImportError('HTTPFileSystem requires "requests" and "aiohttp" to be installed')

    monkeypatch.setattr(fsspec.core, "url_to_fs", missing_backend)
    report = scan_url("https://models.example/model.pt")
    assert report.errors and "pip install 'picklewarden[remote]'" in report.errors[0]
    monkeypatch.setitem(sys.modules, "fsspec", None)
    report = scan_url("s3://bucket/model.pt")
    assert report.errors and "pip install 'picklewarden[remote]'" in report.errors[0]


def test_convert_says_nothing_about_state_dict_versions_and_refuses_plainly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU(), torch.nn.Linear(2, 1))
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    out = tmp_path / "sd.safetensors"
    assert main(["convert", str(tmp_path / "sd.pt"), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "4 tensor(s)" in printed and "_metadata" not in printed and "skipped" not in printed

    (tmp_path / "evil.pt").write_bytes(EVIL)
    assert main(["convert", str(tmp_path / "evil.pt"), str(tmp_path / "evil.safetensors")]) == 1
    err = capsys.readouterr().err
    assert err.count("refused") == 1 and "--force" in err and "force=True" not in err
    assert not (tmp_path / "evil.safetensors").exists()


def test_convert_does_not_overwrite_without_asking(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch = pytest.importorskip("torch")
    torch.save({"w": torch.ones(3)}, tmp_path / "sd.pt")
    out = tmp_path / "sd.safetensors"
    out.write_bytes(b"precious")
    assert main(["convert", str(tmp_path / "sd.pt"), str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert out.read_bytes() == b"precious"
    assert main(["convert", str(tmp_path / "sd.pt"), str(out), "--overwrite"]) == 0
    assert out.read_bytes() != b"precious"


def _readme_sessions() -> list[tuple[str, str]]:
    """Every fenced block of README.md that starts with `$ picklewarden ...`: (command, expected output)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    sessions = []
    for block in re.findall(r"```\n(\$ picklewarden [^\n]*)\n(.*?)```", text, flags=re.S):
        sessions.append((block[0][2:], block[1]))
    return sessions


@pytest.mark.parametrize(("command", "expected"), _readme_sessions())
def test_the_readme_shows_the_real_output(tmp_path: Path, command: str, expected: str) -> None:
    made = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_sample.py"), "sample.pkl"], cwd=tmp_path, capture_output=True
    )
    assert made.returncode == 0, made.stderr
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "120"}
    done = subprocess.run(
        [sys.executable, "-m", *command.split()], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60
    )
    assert done.stdout == expected


def test_the_readme_has_sessions_to_check() -> None:
    assert len(_readme_sessions()) >= 2


def test_the_quick_start_sample_is_ignored_by_git() -> None:
    ignored = subprocess.run(["git", "check-ignore", "-q", "sample.pkl"], cwd=ROOT)
    assert ignored.returncode == 0


def _fenced(language: str) -> list[tuple[str, str]]:
    blocks = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = doc.read_text(encoding="utf-8")
        blocks += [(doc.name, body) for body in re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)]
    return blocks


def test_the_documented_code_blocks_are_valid() -> None:
    checked = 0
    for name, body in _fenced("python"):
        compile(body, name, "exec", flags=0, dont_inherit=True)  # syntax only: the snippet is not run
        checked += 1
    for name, body in _fenced("toml"):
        assert isinstance(tomllib.loads(body), dict), name
        checked += 1
    for name, body in _fenced("json"):
        assert isinstance(json.loads(body), dict), name
        checked += 1
    for name, body in _fenced("yaml"):
        assert yaml.safe_load(body) is not None, name
        checked += 1
    assert checked >= 10
