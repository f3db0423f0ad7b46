"""JSON output (schema version 1): the CLI contract other tools depend on. Keep field names stable."""

from __future__ import annotations

import json
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
    }


def file_dict(report: FileReport) -> dict[str, Any]:
    return {
        "path": report.path,
        "format": report.format,
        "verdict": report.verdict.label,
        "pickles": report.pickles,
        "findings": [finding_dict(f) for f in report.findings],
        "errors": list(report.errors),
    }


def render(report: Report) -> str:
    from picklewarden import __version__

    body = {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "picklewarden", "version": __version__},
        "files": [file_dict(f) for f in report.scanned],
        "skipped": [f.path for f in report.files if f.skipped],
        "summary": {"files": len(report.scanned), **report.counts, "verdict": report.verdict.label},
    }
    return json.dumps(body, indent=2, ensure_ascii=False) + "\n"
