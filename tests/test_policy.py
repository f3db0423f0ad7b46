"""Policy files: finding them, validating them, what they may and may not change, and precedence."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import pytest

import picklewarden
from picklewarden.cli import main
from picklewarden.model import FileReport, Finding, Severity, Verdict
from picklewarden.policy.apply import apply_file, covers, ignored
from picklewarden.policy.config import DEFAULT_POLICY, Policy, PolicyError, discover, load, parse, resolve_policy
from tests.asm import Asm

# A full-model pickle that instantiates the project's own class (unknown to picklewarden) and calls os.system.
OWN_CLASS = Asm(2).global_("acme_models.nn", "Block").empty_tuple().newobj().stop().bytes()
EVIL = Asm(2).global_("os", "system").text("id").tuple1().reduce().stop().bytes()
OPEN = Asm(2).global_("builtins", "open").text("/etc/passwd").tuple1().reduce().stop().bytes()


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs in its own directory, so no policy file of the developer's leaks in."""
    monkeypatch.chdir(tmp_path)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# -- matching --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("entry", "symbol", "expected"),
    [
        ("acme_models", "acme_models.nn.Block", True),
        ("acme_models", "acme_models", True),
        ("acme", "acme_models.nn.Block", False),  # never a string prefix
        ("acme_models.nn", "acme_models.nnx.Block", False),
        ("mylib.nn.Block", "mylib.nn.Block", True),
        ("mylib.nn.Block", "mylib.nn.BlockEvil", False),
        ("mylib.nn.Block", "mylib.nn.Other", False),
        ("mylib.nn.Block", "mylib.nn.Block.Config", True),
        ("x", "", False),
    ],
)
def test_trust_matches_by_dotted_component(entry: str, symbol: str, expected: bool) -> None:
    assert covers(entry, symbol) is expected


# -- what a policy may change ----------------------------------------------------------------------------
def _report(*findings: Finding) -> FileReport:
    return FileReport("m.pt", "torch-zip", tuple(findings), pickles=1)


UNKNOWN = Finding(
    "PW201", Severity.MEDIUM, "instantiates unknown global acme_models.nn.Block", symbol="acme_models.nn.Block"
)
IMPORTED = Finding("PW200", Severity.LOW, "imports unknown global acme_models.Thing", symbol="acme_models.Thing")
SINK = Finding("PW100", Severity.CRITICAL, "calls os.system", symbol="os.system")


def test_trust_drops_only_unknown_global_findings() -> None:
    policy = parse({"trust": ["acme_models", "os", "os.system"]})
    result = apply_file(policy, _report(UNKNOWN, IMPORTED, SINK))
    assert [f.rule for f in result.findings] == ["PW100"]
    assert result.findings[0].severity is Severity.CRITICAL and result.verdict is Verdict.MALICIOUS
    assert any("'os.system' names a known-dangerous global" in w for w in policy.warnings)
    assert any("'os' names a known-dangerous global" in w for w in policy.warnings)


def test_trust_of_an_unrelated_package_changes_nothing() -> None:
    result = apply_file(parse({"trust": ["acme"]}), _report(UNKNOWN))
    assert result.verdict is Verdict.SUSPICIOUS


def test_lowering_a_sink_rule_needs_an_explicit_override() -> None:
    with pytest.raises(PolicyError, match=r"lowers PW100 .*allow_dangerous"):
        parse({"severity": {"PW100": "low"}}, source="p.toml")
    policy = parse({"severity": {"PW100": "low"}, "override": {"allow_dangerous": ["PW100"]}}, source="p.toml")
    assert any("DANGEROUS OVERRIDE" in w for w in policy.warnings)
    finding = apply_file(policy, _report(SINK)).findings[0]
    assert finding.severity is Severity.LOW
    assert finding.policy.startswith("DANGEROUS OVERRIDE: severity critical -> low") and "p.toml" in finding.policy


def test_raising_any_rule_and_lowering_other_rules_is_allowed() -> None:
    policy = parse({"severity": {"PW106": "critical", "PW200": "info", "PW302": "info"}})
    assert not policy.warnings
    result = apply_file(policy, _report(IMPORTED))
    assert result.findings[0].severity is Severity.INFO and result.verdict is Verdict.SAFE
    assert "severity low -> info" in result.findings[0].policy


def test_allow_dangerous_global_is_kept_visible_and_loud() -> None:
    policy = parse({"override": {"allow_dangerous": ["os.system"]}}, source="team.toml")
    result = apply_file(policy, _report(SINK))
    (finding,) = result.findings
    assert finding.severity is Severity.INFO and result.verdict is Verdict.SAFE
    assert "DANGEROUS OVERRIDE: os.system accepted by allow_dangerous 'os.system'" in finding.policy
    assert any("os.system" in w and "DANGEROUS OVERRIDE" in w for w in policy.warnings)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"trusts": ["x"]}, "unknown key"),
        ({"trust": "acme"}, "must be a list of strings"),
        ({"trust": ["acme*"]}, "not a dotted Python name"),
        ({"trust": ["acme."]}, "not a dotted Python name"),
        ({"fail_on": "error"}, "fail_on must be one of"),
        ({"severity": {"PW999": "low"}}, "unknown rule"),
        ({"severity": {"PW200": "loud"}}, "must be one of"),
        ({"override": {"allow_dangerous": ["PW200"]}}, "not a known-sink rule"),
        ({"override": {"allow_dangerous": ["os system"]}}, "neither a rule id nor a dotted name"),
        ({"override": {"allow": ["PW100"]}}, "unknown key"),
        ({"ignore": [""]}, "empty"),
    ],
)
def test_invalid_policies_are_errors_not_silence(table: dict[str, object], message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        parse(table)


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("tests/fixtures/**", "tests/fixtures/a/b.pt", True),
        ("tests/fixtures/**", "tests/fixturesX/b.pt", False),
        ("**/cache/*.pkl", "a/b/cache/x.pkl", True),
        ("**/cache/*.pkl", "cache/x.pkl", True),
        ("*.ckpt", "deep/dir/last.ckpt", True),  # no slash: matches the file name anywhere
        ("models/*.pt", "models/sub/x.pt", False),  # '*' stays within one component
        ("models/[ab].pt", "models/a.pt", True),
        ("models/[!ab].pt", "models/a.pt", False),
    ],
)
def test_ignore_globs(tmp_path: Path, pattern: str, path: str, expected: bool) -> None:
    policy = Policy(ignore=(pattern,), root=str(tmp_path))
    assert (ignored(policy, str(tmp_path / path)) is not None) is expected
    assert (ignored(policy, path) is not None) is expected  # relative to the working directory (= root here)


# -- finding the file ------------------------------------------------------------------------------------
def test_discovery_walks_up_and_the_nearest_file_wins(tmp_path: Path) -> None:
    deep = tmp_path / "a" / "b" / "c"
    deep.mkdir(parents=True)
    assert discover(deep) is None
    _write(tmp_path / "pyproject.toml", '[tool.picklewarden]\ntrust = ["root_pkg"]\n')
    assert discover(deep) == tmp_path / "pyproject.toml"
    _write(tmp_path / "a" / "pyproject.toml", "[project]\nname = 'no-table'\n")  # no table: keep walking
    assert discover(deep) == tmp_path / "pyproject.toml"
    _write(tmp_path / "a" / "b" / "picklewarden.toml", 'trust = ["near"]\n')
    assert discover(deep) == tmp_path / "a" / "b" / "picklewarden.toml"
    _write(tmp_path / "a" / "b" / "pyproject.toml", '[tool.picklewarden]\ntrust = ["same_dir"]\n')
    assert discover(deep) == tmp_path / "a" / "b" / "picklewarden.toml"  # picklewarden.toml first in a dir
    assert resolve_policy(start=str(deep)).trust == ("near",)
    assert resolve_policy(tmp_path / "pyproject.toml", start=str(deep)).trust == ("root_pkg",)  # explicit wins


def test_discovery_parses_only_a_pyproject_that_can_name_the_table(tmp_path: Path) -> None:
    """A pyproject.toml that never spells the name is skipped unparsed (even when it is not valid TOML);
    one that may spell it through a \\u escape in a quoted key is parsed, as TOML reads it."""
    deep = tmp_path / "a"
    deep.mkdir()
    _write(deep / "pyproject.toml", "[project\nname = 'not toml'\n")
    assert discover(deep) is None
    _write(deep / "pyproject.toml", '[tool."pickle\\u0077arden"]\ntrust = ["escaped"]\n')
    assert discover(deep) == deep / "pyproject.toml"
    assert resolve_policy(start=str(deep)).trust == ("escaped",)
    _write(deep / "pyproject.toml", "[tool.picklewarden\n")
    with pytest.raises(PolicyError, match="cannot read"):
        discover(deep)


def test_pyproject_table_and_source_naming(tmp_path: Path) -> None:
    path = _write(tmp_path / "pyproject.toml", '[tool.picklewarden]\nfail_on = "malicious"\n')
    policy = load(path)
    assert policy.fail_on is Verdict.MALICIOUS and policy.source.endswith("pyproject.toml [tool.picklewarden]")
    assert policy.root == str(tmp_path.resolve())
    with pytest.raises(PolicyError, match=r"no \[tool\.picklewarden\] table"):
        load(_write(tmp_path / "other" / "pyproject.toml", "[project]\nname='x'\n"))
    with pytest.raises(PolicyError, match="cannot read"):
        load(_write(tmp_path / "bad.toml", "trust = [\n"))
    with pytest.raises(PolicyError, match="no such policy file"):
        load(tmp_path / "missing.toml")


def test_library_api_takes_a_policy(tmp_path: Path) -> None:
    (tmp_path / "m.pt").write_bytes(OWN_CLASS)
    assert picklewarden.scan(str(tmp_path / "m.pt")).verdict is Verdict.SUSPICIOUS
    policy = picklewarden.load_policy(_write(tmp_path / "picklewarden.toml", 'trust = ["acme_models"]\n'))
    assert picklewarden.scan(str(tmp_path / "m.pt"), policy=policy).verdict is Verdict.SAFE
    assert picklewarden.scan_bytes(OWN_CLASS, policy=policy).verdict is Verdict.SAFE
    assert picklewarden.scan_bytes(EVIL, policy=policy).verdict is Verdict.MALICIOUS
    assert resolve_policy(start=str(tmp_path)) == policy


# -- the command line ------------------------------------------------------------------------------------
@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "own.pt").write_bytes(OWN_CLASS)
    (tmp_path / "models" / "evil.pkl").write_bytes(EVIL)
    (tmp_path / "fixtures").mkdir()
    (tmp_path / "fixtures" / "attack.pkl").write_bytes(EVIL)
    (tmp_path / "data.pkl").write_bytes(pickle.dumps({"w": [1.0, 2.0]}))
    return tmp_path


def _scan_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, object]]:
    code = main(["scan", "--format", "json", *argv])
    return code, json.loads(capsys.readouterr().out)


def test_cli_uses_the_discovered_policy(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scan", "models/own.pt"]) == 1
    capsys.readouterr()
    _write(project / "pyproject.toml", '[tool.picklewarden]\ntrust = ["acme_models"]\nignore = ["fixtures/**"]\n')
    assert main(["scan", "models/own.pt", "data.pkl"]) == 0
    capsys.readouterr()
    code, body = _scan_json(capsys, ".")
    assert code == 1  # evil.pkl is still malicious: trust never covers os.system
    files = {f["path"]: f["verdict"] for f in body["files"]}  # type: ignore[union-attr]
    assert files == {"./data.pkl": "safe", "./models/evil.pkl": "malicious", "./models/own.pt": "safe"}
    assert "./fixtures/attack.pkl" in body["skipped"]  # type: ignore[operator]
    assert main(["scan", "--no-policy", "models/own.pt"]) == 1


def test_cli_precedence_flag_over_policy_over_default(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scan", "models/own.pt"]) == 1  # default fail_on: suspicious
    _write(project / "picklewarden.toml", 'fail_on = "malicious"\n')
    assert main(["scan", "models/own.pt"]) == 0  # the policy's fail_on
    assert main(["scan", "models/own.pt", "--fail-on", "suspicious"]) == 1  # the flag wins
    other = _write(project / "strict" / "policy.toml", 'fail_on = "suspicious"\n')
    assert main(["scan", "models/own.pt", "--policy", str(other)]) == 1  # --policy replaces discovery


def test_cli_reports_dangerous_overrides_loudly(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "open.pkl").write_bytes(OPEN)
    _write(project / "picklewarden.toml", '[override]\nallow_dangerous = ["builtins.open"]\n')
    assert main(["scan", "open.pkl"]) == 0
    captured = capsys.readouterr()
    assert "DANGEROUS OVERRIDE" in captured.err and "builtins.open" in captured.err
    assert "policy: DANGEROUS OVERRIDE" in captured.out and "PW104" in captured.out
    assert main(["scan", "open.pkl", "--format", "sarif"]) == 0
    log = json.loads(capsys.readouterr().out)
    notices = log["runs"][0]["invocations"][0]["toolConfigurationNotifications"]
    assert "DANGEROUS OVERRIDE" in notices[0]["message"]["text"]
    assert log["runs"][0]["results"][0]["suppressions"][0]["kind"] == "external"


def test_cli_invalid_policy_is_a_usage_error(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write(project / "picklewarden.toml", '[severity]\nPW101 = "info"\n')
    assert main(["scan", "data.pkl"]) == 2
    assert "lowers PW101" in capsys.readouterr().err
    assert main(["scan", "data.pkl", "--policy", "missing.toml"]) == 2
    assert main(["scan", "data.pkl", "--policy", "x.toml", "--no-policy"]) == 2


def test_show_policy(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scan", "--show-policy"]) == 0
    out = capsys.readouterr().out
    assert "built-in defaults" in out and 'fail_on = "suspicious"  # default' in out
    _write(project / "picklewarden.toml", 'trust = ["acme_models"]\n[severity]\nPW200 = "info"\n')
    assert main(["scan", "--show-policy", "--fail-on", "malicious"]) == 0
    out = capsys.readouterr().out
    assert "picklewarden.toml" in out and 'trust = ["acme_models"]' in out
    assert 'fail_on = "malicious"' in out and 'PW200 = "info"  # default low' in out
    # What --show-policy prints is itself a valid policy file, and means the same thing.
    toml = __import__("tomllib" if sys.version_info >= (3, 11) else "tomli")
    shown = parse(toml.loads(out))
    assert shown.trust == ("acme_models",) and shown.severity_map == {"PW200": Severity.INFO}


def test_show_marks_and_lists_globals_under_the_policy(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "--globals", "models/own.pt"]) == 0
    out = capsys.readouterr().out
    assert "acme_models.nn.Block" in out and "unknown" in out and "acme_models" in out
    _write(project / "picklewarden.toml", 'trust = ["acme_models"]\n')
    assert main(["show", "--globals", "models/own.pt"]) == 0
    out = capsys.readouterr().out
    assert "trusted" in out and "trusted by policy entry 'acme_models'" in out
    assert main(["show", "models/own.pt"]) == 0
    assert "! " not in capsys.readouterr().out  # trusted class: nothing flagged
    assert DEFAULT_POLICY == Policy()
