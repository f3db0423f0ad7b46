"""Plain-text output for terminals and logs."""

from __future__ import annotations

from picklewarden.model import FileReport, Report, Verdict


def _offset(offset: int | None) -> str:
    return "?" if offset is None else f"{offset} (0x{offset:x})"


def render_file(report: FileReport) -> list[str]:
    lines = [f"{report.path}: {report.verdict.label.upper()} ({report.format})"]
    for f in report.findings:
        where = f"{f.member} @ {_offset(f.offset)}" if f.member else f"@ {_offset(f.offset)}"
        lines.append(f"  [{f.severity.label.upper()}] {f.rule} {where}: {f.message}")
        for evidence in f.evidence.splitlines():
            lines.append(f"      | {evidence}")
    for error in report.errors:
        lines.append(f"  [ERROR] {error}")
    return lines


def render(report: Report, *, quiet: bool = False) -> str:
    lines: list[str] = []
    for f in report.scanned:
        if quiet and f.verdict is Verdict.SAFE:
            continue
        lines.extend(render_file(f))
    counts = report.counts
    summary = ", ".join(f"{counts[v.label]} {v.label}" for v in reversed(Verdict))
    skipped = sum(1 for f in report.files if f.skipped)
    lines.append(f"scanned {len(report.scanned)} file(s): {summary}" + (f"; {skipped} skipped" if skipped else ""))
    return "\n".join(lines) + "\n"
