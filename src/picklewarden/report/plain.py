"""The uncoloured text report without rich: the same lines :func:`picklewarden.report.text.render` prints
with ``color=False``, written directly.

Importing rich costs about 20 ms, a fifth of a one-file scan; logs, pipes and CI never colour, so they need
none of it. The layout is rich's own (an ASCII-boxed summary table, lines stripped of trailing blanks), and
``tests/test_reports.py`` compares both renderers on every report shape. Text whose width is not one cell
per character (anything outside ASCII) is left to rich, whose tables measure East Asian and combining
characters; :func:`render` returns None for it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from picklewarden.model import FileReport, Finding, Report, Verdict
from picklewarden.report.text import clean, where

_ERROR_SUFFIX = " (not analysed completely: never reported as safe)"
_COLUMNS = (("file", False), ("verdict", False), ("findings", True), ("worst", False), ("rules", False))
"""Summary table columns: (header, right-justified)."""


def render(report: Report, *, quiet: bool = False) -> str | None:
    """The plain text report, or None when some text is not ASCII (rich must measure it)."""
    lines: list[str] = []
    for f in report.scanned:
        if not (quiet and f.verdict is Verdict.SAFE):
            lines.extend(_file(f))
    lines.extend(_summary(report, quiet=quiet))
    text = "\n".join(line.rstrip() for line in lines) + "\n"
    return text if text.isascii() else None


def _file(report: FileReport) -> Iterator[str]:
    noun = "pickle" if report.pickles == 1 else "pickles"
    yield f"{clean(report.path)}: {report.verdict.label.upper()} ({clean(report.format)}, {report.pickles} {noun})"
    if report.location:
        yield f"  model: {clean(report.location)}" + (f" @ {clean(report.revision)}" if report.revision else "")
    for note in report.notes:
        yield f"  note: {clean(note)}"
    for f in report.findings:
        yield from _finding(f)
    for error in report.errors:
        yield f"  [ERROR] {clean(error)}{_ERROR_SUFFIX}"


def _finding(f: Finding) -> Iterator[str]:
    from picklewarden.rules import BY_ID

    rule = BY_ID.get(f.rule)
    name = f" {rule.name}" if rule is not None else ""
    yield f"  [{f.severity.label.upper()}] {f.rule}{name} {where(f)}"
    yield f"    {clean(f.message)}"
    lines = f.evidence.splitlines()
    for i, line in enumerate(lines):
        yield f"    {'> ' if i == len(lines) - 1 else '  '}| {clean(line)}"
    if f.indicators:
        yield "    indicators:"
        for indicator in f.indicators:
            yield f"      {clean(indicator.kind)}: {clean(indicator.value)}"
    if f.policy:
        yield f"    policy: {clean(f.policy)}"


def _summary(report: Report, *, quiet: bool) -> Iterator[str]:
    rows: list[tuple[str, ...]] = []
    for f in sorted(report.scanned, key=lambda f: -f.verdict):
        if f.verdict is Verdict.SAFE and (quiet or len(report.scanned) > 1):
            continue
        worst = f.max_severity
        rules = sorted({x.rule for x in f.findings})
        shown = " ".join(rules) if rules else ("error" if f.errors else "-")
        rows.append((clean(f.path), f.verdict.label, str(len(f.findings)), worst.label if worst else "-", shown))
    counts = report.counts
    tally = ", ".join(f"{counts[v.label]} {v.label}" for v in reversed(Verdict))
    line = f"scanned {len(report.scanned)} file(s): {tally}"
    skipped = sum(1 for f in report.files if f.skipped)
    if skipped:
        line += f"; {skipped} skipped"
    if not report.scanned:
        line += ": nothing was scanned"
    if any(not (quiet and f.verdict is Verdict.SAFE) for f in report.scanned):
        yield ""
    if rows:
        yield from _table(rows)
    yield line
    if not quiet and any(f.verdict >= Verdict.SUSPICIOUS for f in report.scanned):
        yield "The whole decompiled program of a file: picklewarden show FILE"


def _table(rows: Sequence[tuple[str, ...]]) -> Iterator[str]:
    """rich's ``box.ASCII`` table with edges: one space of padding each side of a cell, no wrapping."""
    header = tuple(name for name, _ in _COLUMNS)
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(_COLUMNS))]

    def row(cells: tuple[str, ...]) -> str:
        padded = (
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, (_, right) in zip(cells, widths, _COLUMNS, strict=True)
        )
        return "| " + " | ".join(padded) + " |"

    edge = "+" + "-" * (sum(widths) + 3 * len(widths) - 1) + "+"
    yield edge
    yield row(header)
    yield "|" + "+".join("-" * (width + 2) for width in widths) + "|"
    yield from (row(cells) for cells in rows)
    yield edge
