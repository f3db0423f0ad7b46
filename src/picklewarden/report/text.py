"""The terminal report: per file the verdict, each finding with its evidence, indicators, a summary table.

Built with rich. ``color=False`` (logs, pipes, files, golden tests) gives plain text with no escape codes and
no line wrapping; ``color=True`` adds colour for a terminal. Everything taken from a scanned file (paths,
names in messages, evidence, indicators) passes through :func:`clean` first, so a hostile file cannot write
terminal escape sequences or rich markup into a person's terminal.
"""

from __future__ import annotations

import io
from collections.abc import Iterable

from picklewarden._typing import TYPE_CHECKING, assert_never
from picklewarden.model import FileReport, Finding, Report, Severity, Verdict

if TYPE_CHECKING:
    from typing import Final

    from rich.console import Console, RenderableType

PLAIN_WIDTH: Final = 10_000
"""Plain output never wraps: one finding line stays one line for grep and for CI logs."""


def clean(text: str) -> str:
    """``text`` with every non-printable character (ESC, CR, BEL, bidi controls...) shown as an escape."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def severity_style(severity: Severity) -> str:
    match severity:
        case Severity.CRITICAL:
            return "bold white on red"
        case Severity.HIGH:
            return "bold red"
        case Severity.MEDIUM:
            return "yellow"
        case Severity.LOW:
            return "cyan"
        case Severity.INFO:
            return "dim"
        case _:
            assert_never(severity)


def verdict_style(verdict: Verdict) -> str:
    match verdict:
        case Verdict.MALICIOUS:
            return "bold red"
        case Verdict.SUSPICIOUS:
            return "bold yellow"
        case Verdict.ERROR:
            return "bold magenta"
        case Verdict.SAFE:
            return "bold green"
        case _:
            assert_never(verdict)


def _offset(offset: int | None) -> str:
    return "offset ?" if offset is None else f"offset {offset} (0x{offset:x})"


def where(f: Finding) -> str:
    return f"{clean(f.member)} @ {_offset(f.offset)}" if f.member else f"@ {_offset(f.offset)}"


def _finding(f: Finding) -> list[RenderableType]:
    from rich.text import Text

    from picklewarden.rules import BY_ID

    rule = BY_ID.get(f.rule)
    head = Text("  ")
    head.append(f"[{f.severity.label.upper()}]", severity_style(f.severity))
    head.append(f" {f.rule}", "bold")
    if rule is not None:
        head.append(f" {rule.name}")
    head.append(f" {where(f)}", "dim")
    out: list[RenderableType] = [head, Text(f"    {clean(f.message)}")]
    lines = f.evidence.splitlines()
    for i, line in enumerate(lines):
        # The rules put the line at the finding's offset last, after the lines it uses (its imports).
        marked = i == len(lines) - 1
        row = Text("    ")
        row.append("> " if marked else "  ", "bold red" if marked else "")
        row.append("| ", "dim")
        row.append(clean(line), "bold" if marked else "")
        out.append(row)
    if f.indicators:
        out.append(Text("    indicators:", "bold"))
        for indicator in f.indicators:
            row = Text(f"      {clean(indicator.kind)}: ", "bold")
            row.append(clean(indicator.value), "magenta")
            out.append(row)
    if f.policy:
        loud = "DANGEROUS OVERRIDE" in f.policy
        out.append(Text(f"    policy: {clean(f.policy)}", "bold white on red" if loud else "italic"))
    return out


def render_file(report: FileReport) -> list[RenderableType]:
    from rich.text import Text

    verdict = report.verdict
    noun = "pickle" if report.pickles == 1 else "pickles"
    head = Text()
    head.append(clean(report.path), "bold")
    head.append(": ")
    head.append(verdict.label.upper(), verdict_style(verdict))
    head.append(f" ({clean(report.format)}, {report.pickles} {noun})", "dim")
    out: list[RenderableType] = [head]
    if report.location:
        at = f"  model: {clean(report.location)}"
        out.append(Text(at + (f" @ {clean(report.revision)}" if report.revision else ""), "dim"))
    for note in report.notes:
        out.append(Text(f"  note: {clean(note)}", "dim"))
    for f in report.findings:
        out.extend(_finding(f))
    for error in report.errors:
        row = Text("  ")
        row.append("[ERROR]", verdict_style(Verdict.ERROR))
        row.append(f" {clean(error)} (not analysed completely: never reported as safe)")
        out.append(row)
    return out


def _summary(report: Report, *, quiet: bool, color: bool) -> list[RenderableType]:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(
        title=None,
        box=box.SIMPLE_HEAD if color else box.ASCII,
        show_edge=not color,
    )
    table.add_column("file")
    table.add_column("verdict")
    table.add_column("findings", justify="right")
    table.add_column("worst")
    table.add_column("rules")
    shown = 0
    for f in sorted(report.scanned, key=lambda f: -f.verdict):
        if f.verdict is Verdict.SAFE and (quiet or len(report.scanned) > 1):
            continue
        worst = f.max_severity
        rules = sorted({x.rule for x in f.findings})
        table.add_row(
            clean(f.path),
            Text(f.verdict.label, verdict_style(f.verdict)),
            str(len(f.findings)),
            Text(worst.label, severity_style(worst)) if worst is not None else Text("-"),
            " ".join(rules) if rules else ("error" if f.errors else "-"),
        )
        shown += 1
    counts = report.counts
    line = Text(f"scanned {len(report.scanned)} file(s): ")
    for i, v in enumerate(reversed(Verdict)):
        if i:
            line.append(", ")
        line.append(f"{counts[v.label]} {v.label}", verdict_style(v) if counts[v.label] else "")
    skipped = sum(1 for f in report.files if f.skipped)
    if skipped:
        line.append(f"; {skipped} skipped")
    listed_above = any(not (quiet and f.verdict is Verdict.SAFE) for f in report.scanned)
    out: list[RenderableType] = [Text("")] if listed_above else []
    if shown:
        out.append(table)
    out.append(line)
    if not report.scanned:
        line.append(": nothing was scanned")
    if not quiet and any(f.verdict >= Verdict.SUSPICIOUS for f in report.scanned):
        out.append(Text("The whole decompiled program of a file: picklewarden show FILE", "dim"))
    return out


def renderables(report: Report, *, quiet: bool = False, color: bool = False) -> Iterable[RenderableType]:
    for f in report.scanned:
        if quiet and f.verdict is Verdict.SAFE:
            continue
        yield from render_file(f)
    yield from _summary(report, quiet=quiet, color=color)


def console(*, color: bool, width: int | None = None, file: io.StringIO | None = None) -> Console:
    """A rich console that writes to ``file`` (default: a new buffer), coloured or strictly plain."""
    from rich.console import Console

    return Console(
        file=file if file is not None else io.StringIO(),
        force_terminal=color,
        no_color=not color,
        color_system="standard" if color else None,
        width=width if width is not None else (100 if color else PLAIN_WIDTH),
        highlight=False,
        markup=False,
        emoji=False,
        soft_wrap=not color,
        legacy_windows=False,
        force_jupyter=False,
        force_interactive=False,
    )


def render(report: Report, *, quiet: bool = False, color: bool = False, width: int | None = None) -> str:
    """The report as terminal text. ``quiet`` lists only files that are not safe (and the summary)."""
    buffer = io.StringIO()
    out = console(color=color, width=width, file=buffer)
    for item in renderables(report, quiet=quiet, color=color):
        out.print(item)
    text = buffer.getvalue()
    if not color:
        # Tables pad their cells; trailing blanks only make goldens and logs noisier.
        text = "\n".join(line.rstrip() for line in text.splitlines()) + "\n"
    return text
