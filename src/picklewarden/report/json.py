"""JSON output (schema version 1): the CLI contract other tools depend on.

The shape is documented, and checked in the tests, by ``docs/json-schema-v1.json``. Within a schema version
fields are only ever added, never renamed or removed; a breaking change bumps ``schema_version``.
"""

from __future__ import annotations

import json

from picklewarden._typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

    from picklewarden.model import FileReport, Finding, Report

SCHEMA_VERSION = 1


def finding_dict(f: Finding) -> dict[str, Any]:
    return {
        "rule": f.rule,
        "severity": f.severity.label,
        "message": f.message,
        "member": f.member,
        "offset": f.offset,
        "evidence": f.evidence,
        "symbol": f.symbol,
        "indicators": [{"kind": i.kind, "value": i.value} for i in f.indicators],
        "policy": f.policy,
    }


def file_dict(report: FileReport) -> dict[str, Any]:
    data: dict[str, Any] = {
        "path": report.path,
        "format": report.format,
        "verdict": report.verdict.label,
        "pickles": report.pickles,
        "findings": [finding_dict(f) for f in report.findings],
        "errors": list(report.errors),
    }
    # Optional keys, present only when there is something to say (older readers ignore them).
    if report.location:
        data["location"] = report.location
    if report.revision:
        data["revision"] = report.revision
    if report.notes:
        data["notes"] = list(report.notes)
    return data


def render_line(report: FileReport) -> str:
    """One file's report as one line of JSON (no newline), for ``--format jsonl``: the ``files[]`` entry of
    the JSON report, plus ``"skipped": true`` for a file that was not analysed (listed apart there)."""
    data = file_dict(report)
    if report.skipped:
        data["skipped"] = True
    return json.dumps(data, ensure_ascii=True, separators=(",", ":"))


def document(report: Report, *, version: str | None = None) -> dict[str, Any]:
    """The JSON document as Python data. ``version`` defaults to the installed picklewarden's."""
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "picklewarden", "version": version if version is not None else _installed_version()},
        "files": [file_dict(f) for f in report.scanned],
        "skipped": [f.path for f in report.files if f.skipped],
        "summary": {"files": len(report.scanned), **report.counts, "verdict": report.verdict.label},
    }


def _installed_version() -> str:
    from picklewarden import __version__

    return __version__


def render(report: Report, *, version: str | None = None) -> str:
    # ASCII-only: names and paths from hostile files may hold lone surrogates that no UTF-8 writer accepts.
    return json.dumps(document(report, version=version), indent=2, ensure_ascii=True) + "\n"
