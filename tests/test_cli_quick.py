"""A plain ``scan`` line is read without click (cli/scanargs.py). It must mean exactly what it means to click.

The property: whenever the plain reader accepts a line, click accepts it too and gives the same parameters.
And a line run both ways prints the same output and exits with the same code.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import click
import pytest
from hypothesis import given
from hypothesis import strategies as st

import picklewarden.cli.scanargs as scanargs
from picklewarden.cli import cli, main

EVIL = b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00id\x85R."
GOOD = pickle.dumps({"a": 1}, protocol=4)


def _click_params(argv: list[str]) -> dict[str, object] | None:
    """What click makes of a scan line, or None when click refuses it."""
    command = cli.commands["scan"]
    try:
        with command.make_context("scan", list(argv[1:])) as ctx:
            return dict(ctx.params)
    except (click.UsageError, click.exceptions.Exit):
        return None


# Tokens a scan line is made of: every flag of the table, values good and bad, paths, and what only click reads.
_FLAGS = [flag for option in scanargs.SCAN_OPTIONS for flag in option.flags]
_VALUES = ["json", "text", "jsonl", "sarif", "JSON", "yaml", "malicious", "suspicious", "never", "always", "stat"]
_VALUES += ["1", "2", "0", "-1", "+2", " 3", "2_0", "²", "a=1", "max_pickle_bytes=9", "x.pt", "dir", "*.pt"]
_OTHER = ["--ray", "--ray=auto", "--", "-", "-h", "--help", "-qj2", "-j2", "-ofile", "--quiet=1", "--format=json"]
_OTHER += ["--jobs=2", "--fail-on=malicious", "--color=never", "--bogus", "show", "scan", ""]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("quick")
    (root / "dir").mkdir()
    (root / "x.pt").write_bytes(GOOD)
    return root


@given(st.lists(st.sampled_from(_FLAGS + _VALUES + _OTHER), max_size=7))
def test_the_plain_reader_accepts_only_what_click_reads_the_same(workdir: Path, tokens: list[str]) -> None:
    argv = ["scan", *tokens]
    old = os.getcwd()
    os.chdir(workdir)
    try:
        plain = scanargs.parse(argv)
        if plain is not None:
            assert plain == _click_params(argv), argv
    finally:
        os.chdir(old)


@pytest.mark.parametrize(
    "argv",
    [
        ["scan", "x.pt"],
        ["scan", "x.pt", "dir", "--format", "json", "-q", "--jobs", "2"],
        ["scan", "--format=sarif", "x.pt", "--fail-on", "malicious", "--color", "never", "--no-policy"],
        ["scan", "x.pt", "-o", "out.json", "--sarif-output", "out.sarif", "--include", "*.pt", "--include", "*.bin"],
        ["scan", "--cache", "cache", "--cache-mode", "stat", "--limit", "max_pickle_bytes=9", "--manifest", "m.txt"],
        ["scan", "--show-policy", "--skip-non-models", "--exclude", "a", "--policy", "p.toml"],
        ["scan"],
    ],
)
def test_plain_lines_are_read_without_click(workdir: Path, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workdir)
    plain = scanargs.parse(argv)
    assert plain is not None
    assert plain == _click_params(argv)


@pytest.mark.parametrize(
    "argv",
    [
        ["scan", "--help"],
        ["scan", "x.pt", "--ray"],
        ["scan", "--", "-x.pt"],
        ["scan", "-qj2", "x.pt"],
        ["scan", "x.pt", "--jobs", "0"],
        ["scan", "x.pt", "--format", "yaml"],
        ["scan", "x.pt", "--output", "dir"],
        ["scan", "x.pt", "--cache", "x.pt"],
        ["--version"],
        ["show", "x.pt"],
    ],
)
def test_click_reads_everything_else(workdir: Path, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workdir)
    assert scanargs.parse(argv) is None


@pytest.fixture
def scan_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "evil.pkl").write_bytes(EVIL)
    (tmp_path / "good.pkl").write_bytes(GOOD)
    (tmp_path / "bad.toml").write_text("fail_on = 'nonsense'\n")
    (tmp_path / "loud.toml").write_text("[override]\nallow_dangerous = ['os.system']\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    "argv",
    [
        ["scan", "good.pkl", "--format", "json"],
        ["scan", "evil.pkl", "good.pkl"],
        ["scan", "evil.pkl", "--format", "sarif", "--fail-on", "malicious"],
        ["scan", ".", "--format", "jsonl", "--jobs", "1"],
        ["scan", "missing.pkl", "--format", "json"],
        ["scan", "good.pkl", "--policy", "bad.toml"],
        ["scan", "evil.pkl", "--policy", "loud.toml", "-q"],
        ["scan", "good.pkl", "--policy", "loud.toml", "--limit", "nonsense"],
        ["scan", "good.pkl", "--policy", "p.toml", "--no-policy"],
        ["scan", "good.pkl", "--limit", "nonsense"],
        ["scan", "good.pkl", "--limit", "no_such_limit=3"],
        ["scan", "good.pkl", "-o", "missing-dir/out.txt"],
        ["scan", "--show-policy", "--no-policy"],
        ["scan"],
        ["scan", "empty-dir/"],
    ],
)
def test_both_readers_run_a_line_alike(
    scan_dir: Path, argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (scan_dir / "empty-dir").mkdir(exist_ok=True)
    assert scanargs.parse(argv) is not None
    plain = main(argv), *capsys.readouterr()
    monkeypatch.setattr(scanargs, "parse", lambda argv: None)
    clicked = main(argv), *capsys.readouterr()
    assert plain == clicked
