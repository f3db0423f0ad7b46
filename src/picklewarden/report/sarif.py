"""SARIF 2.1.0 output, for code-scanning dashboards (GitHub code scanning, GitLab, Azure DevOps, IDEs).

* Every rule the results use is a ``reportingDescriptor`` with its summary, help, default level, CWE (as
  a ``CWE`` taxonomy relationship and as the ``external/cwe/cwe-N`` tag dashboards filter on) and a
  ``security-severity``.
* A finding in a bare pickle file points at the opcode with ``region.byteOffset``. A finding inside a
  container member (a ``.pt`` ZIP entry) has a file-level location on the model file, because its offset
  counts bytes of the member, not of the file, plus a related location in the member, which is listed as
  a nested artifact (``parentIndex``) of the file.
* Files that could not be analysed are ``toolExecutionNotifications`` (and ``executionSuccessful`` is
  false); policy warnings are ``toolConfigurationNotifications``. Findings a policy accepted with
  ``allow_dangerous`` carry an external suppression with the policy's note as the justification.

Checked against the official OASIS schema in ``tests/test_sarif.py``.
"""

from __future__ import annotations

import hashlib
import json
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

from picklewarden._typing import TYPE_CHECKING, assert_never
from picklewarden.model import FileReport, Finding, Report, Severity
from picklewarden.rules import RULES, Rule

if TYPE_CHECKING:
    from typing import Any, Final

SARIF_VERSION: Final = "2.1.0"
SARIF_SCHEMA: Final = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"


def level(severity: Severity) -> str:
    """SARIF ``level`` of a severity: dashboards fail builds on ``error``."""
    match severity:
        case Severity.CRITICAL | Severity.HIGH:
            return "error"
        case Severity.MEDIUM:
            return "warning"
        case Severity.LOW | Severity.INFO:
            return "note"
        case _:
            assert_never(severity)


def security_severity(severity: Severity) -> str:
    """GitHub's ``security-severity`` (a CVSS-like score as a string) for a severity."""
    match severity:
        case Severity.CRITICAL:
            return "9.8"
        case Severity.HIGH:
            return "8.1"
        case Severity.MEDIUM:
            return "5.5"
        case Severity.LOW:
            return "3.1"
        case Severity.INFO:
            return "0.0"
        case _:
            assert_never(severity)


def artifact_uri(path: str) -> str:
    """A URI reference for a scanned path: relative paths stay relative (to the repository root)."""
    p = Path(path)
    if p.is_absolute():
        return p.as_uri()
    return urllib.parse.quote(p.as_posix(), safe="/", errors="surrogateescape")


def _member_uri(member: str) -> str:
    return urllib.parse.quote(member, safe="/", errors="backslashreplace")


def _rule(rule: Rule) -> dict[str, Any]:
    return {
        "id": rule.id,
        "name": rule.name,
        "shortDescription": {"text": rule.summary},
        "fullDescription": {"text": rule.help},
        "help": {
            "text": f"{rule.help}\n\nCWE-{rule.cwe}. Explain locally with: picklewarden explain {rule.id}",
            "markdown": f"{rule.help}\n\n[CWE-{rule.cwe}](https://cwe.mitre.org/data/definitions/{rule.cwe}.html)"
            f" · `picklewarden explain {rule.id}`",
        },
        "defaultConfiguration": {"level": level(rule.severity)},
        "relationships": [{"target": {"id": str(rule.cwe), "toolComponent": {"name": "CWE"}}, "kinds": ["superset"]}],
        "properties": {
            "tags": ["security", f"external/cwe/cwe-{rule.cwe}"],
            "security-severity": security_severity(rule.severity),
            "severity": rule.severity.label,
        },
    }


def _taxonomy(rules: Sequence[Rule]) -> dict[str, Any]:
    cwes = sorted({rule.cwe for rule in rules})
    return {
        "name": "CWE",
        "organization": "MITRE",
        "shortDescription": {"text": "The MITRE Common Weakness Enumeration"},
        "informationUri": "https://cwe.mitre.org/",
        "taxa": [{"id": str(cwe), "helpUri": f"https://cwe.mitre.org/data/definitions/{cwe}.html"} for cwe in cwes],
    }


def _fingerprint(path: str, f: Finding) -> str:
    # Stable across runs and unaffected by byte offsets moving when unrelated parts of the file change.
    key = "\x00".join((path, f.member, f.rule, f.symbol or f.message))
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _message(f: Finding) -> str:
    where = ""
    if f.member:
        where = f" (in {f.member}" + (f", byte {f.offset})" if f.offset is not None else ")")
    elif f.offset is not None:
        where = f" (byte {f.offset})"
    evidence = f.evidence.splitlines()[-1] if f.evidence else ""
    return f"{f.message}{where}" + (f": {evidence}" if evidence else "")


class _Artifacts:
    """The run's ``artifacts`` array: each scanned file, then container members as nested artifacts."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self._index: dict[tuple[str, str], int] = {}

    def index(self, path: str, member: str = "") -> int:
        key = (path, member)
        found = self._index.get(key)
        if found is not None:
            return found
        if member:
            parent = self.index(path)
            entry: dict[str, Any] = {"location": {"uri": _member_uri(member)}, "parentIndex": parent}
        else:
            entry = {"location": {"uri": artifact_uri(path)}, "roles": ["analysisTarget"]}
        self.items.append(entry)
        self._index[key] = len(self.items) - 1
        return self._index[key]


def _result(file: FileReport, f: Finding, artifacts: _Artifacts, rule_index: dict[str, int]) -> dict[str, Any]:
    path = file.path
    file_index = artifacts.index(path)
    physical: dict[str, Any] = {"artifactLocation": {"uri": artifact_uri(path), "index": file_index}}
    if not f.member and f.offset is not None:
        physical["region"] = {"byteOffset": f.offset, "byteLength": 1}
    result: dict[str, Any] = {
        "ruleId": f.rule,
        "level": level(f.severity),
        "message": {"text": _message(f)},
        "locations": [{"physicalLocation": physical}],
        "partialFingerprints": {"picklewardenFinding/v1": _fingerprint(path, f)},
        "properties": {
            "severity": f.severity.label,
            "member": f.member,
            "offset": f.offset,
            "symbol": f.symbol,
            "evidence": f.evidence,
            "indicators": [{"kind": i.kind, "value": i.value} for i in f.indicators],
        },
    }
    if f.rule in rule_index:
        result["ruleIndex"] = rule_index[f.rule]
    if f.member:
        member_index = artifacts.index(path, f.member)
        member_physical: dict[str, Any] = {"artifactLocation": {"uri": _member_uri(f.member), "index": member_index}}
        if f.offset is not None:
            member_physical["region"] = {"byteOffset": f.offset, "byteLength": 1}
        result["relatedLocations"] = [
            {"id": 1, "physicalLocation": member_physical, "message": {"text": f"pickle in {f.member}"}}
        ]
    if file.location:
        result["properties"]["model"] = file.location
        if file.revision:
            result["properties"]["revision"] = file.revision
    if f.policy:
        result["properties"]["policy"] = f.policy
        if f.severity is Severity.INFO and "DANGEROUS OVERRIDE" in f.policy:
            result["suppressions"] = [{"kind": "external", "justification": f.policy}]
    return result


def document(report: Report, *, version: str | None = None, notices: Sequence[str] = ()) -> dict[str, Any]:
    """The SARIF log as Python data. ``notices`` (e.g. policy warnings) become configuration notifications."""
    if version is None:
        from picklewarden import __version__

        version = __version__
    artifacts = _Artifacts()
    # Only the rules the results use, in rule order: a log stays small and stable as rules are added.
    used = {f.rule for file in report.scanned for f in file.findings}
    rules = [rule for rule in RULES if rule.id in used]
    rule_index = {rule.id: i for i, rule in enumerate(rules)}
    results: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    for file in report.scanned:
        index = artifacts.index(file.path)
        for f in file.findings:
            results.append(_result(file, f, artifacts, rule_index))
        for error in file.errors:
            location = {"physicalLocation": {"artifactLocation": {"uri": artifact_uri(file.path), "index": index}}}
            failures.append(
                {
                    "level": "error",
                    "message": {"text": f"{file.path}: not analysed completely (never reported as safe): {error}"},
                    "locations": [location],
                }
            )
    invocation: dict[str, Any] = {"executionSuccessful": not failures}
    if failures:
        invocation["toolExecutionNotifications"] = failures
    if notices:
        invocation["toolConfigurationNotifications"] = [
            {"level": "warning", "message": {"text": notice}} for notice in notices
        ]
    run: dict[str, Any] = {
        "tool": {
            "driver": {
                "name": "picklewarden",
                "version": version,
                "semanticVersion": version,
                "rules": [_rule(rule) for rule in rules],
                "supportedTaxonomies": [{"name": "CWE"}],
            }
        },
        "taxonomies": [_taxonomy(rules)],
        "invocations": [invocation],
        "artifacts": artifacts.items,
        "results": results,
    }
    return {"$schema": SARIF_SCHEMA, "version": SARIF_VERSION, "runs": [run]}


def render(report: Report, *, version: str | None = None, notices: Sequence[str] = ()) -> str:
    return json.dumps(document(report, version=version, notices=notices), indent=2, ensure_ascii=True) + "\n"
