"""The CLI contract other tools depend on: arguments, JSON shape, exit codes."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from picklewarden.cli import main

EVIL = b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00id\x85R."
GOOD = pickle.dumps({"a": 1, "b": [1.5, "x"]}, protocol=4)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    paths = {"evil": tmp_path / "evil.pt", "good": tmp_path / "good.pkl", "broken": tmp_path / "broken.bin"}
    paths["evil"].write_bytes(EVIL)
    paths["good"].write_bytes(GOOD)
    paths["broken"].write_bytes(b"\x00\x01not a pickle at all")
    return paths


def _json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, dict[str, object]]:
    code = main(argv)
    return code, json.loads(capsys.readouterr().out)


def test_json_contract(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, body = _json(capsys, ["scan", str(files["evil"]), str(files["good"]), "--format", "json"])
    assert code == 1
    entries = body["files"]
    assert isinstance(entries, list)
    by_path = {e["path"]: e for e in entries}
    assert set(by_path) == {str(files["evil"]), str(files["good"])}
    evil = by_path[str(files["evil"])]
    assert evil["verdict"] == "malicious" and evil["format"] == "pickle"
    top = evil["findings"][0]
    assert set(top) >= {"rule", "severity", "message", "member", "offset", "evidence"}
    assert top["rule"] == "PW100" and top["offset"] == 21 and "system('id')" in top["evidence"]
    assert by_path[str(files["good"])]["verdict"] == "safe"
    assert body["summary"]["malicious"] == 1


@pytest.mark.parametrize(
    ("names", "extra", "expected"),
    [
        (["good"], [], 0),
        (["evil"], [], 1),
        (["evil"], ["--fail-on", "malicious"], 1),
        (["broken"], [], 2),
        (["broken", "evil"], [], 1),
        (["good", "broken"], [], 2),
    ],
)
def test_exit_codes(
    files: dict[str, Path], names: list[str], extra: list[str], expected: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["scan", *(str(files[n]) for n in names), *extra]) == expected


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scan"]) == 2
    assert main(["scan", "x", "--format", "yaml"]) == 2


def test_output_file_and_missing_path(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    code = main(["scan", str(files["good"]), str(tmp_path / "missing.pt"), "--format", "json", "-o", str(out)])
    body = json.loads(out.read_text())
    assert code == 2
    missing = next(f for f in body["files"] if f["path"].endswith("missing.pt"))
    assert missing["verdict"] == "error" and missing["errors"]


def test_show_prints_the_decompiled_program(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", str(files["evil"])]) == 0
    out = capsys.readouterr().out
    assert "from os import system" in out
    assert "!!" in out and "system('id')" in out


def test_rules_and_explain(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules"]) == 0
    assert "PW100" in capsys.readouterr().out
    assert main(["explain", "pw101"]) == 0
    assert "CWE-94" in capsys.readouterr().out
    assert main(["explain", "PW999"]) == 2


def test_console_script_runs_as_a_module(files: dict[str, Path]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "picklewarden", "scan", str(files["evil"]), "-q"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "MALICIOUS" in done.stdout and "PW100" in done.stdout
