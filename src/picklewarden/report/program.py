"""``picklewarden show``: the whole decompiled program of a file, and its import manifest.

The program listing puts every line at the byte offset of the opcode that produced it; lines a rule flags
are marked (``!!`` malicious, ``! `` suspicious) and end with a comment naming the rules. The manifest lists
every global loading the file would import, with what picklewarden knows about it and why: "this model
needs these packages".
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from picklewarden._typing import TYPE_CHECKING
from picklewarden.model import Finding, Severity, Verdict
from picklewarden.policy.apply import apply_finding, match
from picklewarden.report.text import clean, console, severity_style

if TYPE_CHECKING:
    from rich.text import Text

    from picklewarden.pickle.program import Program
    from picklewarden.policy.config import Policy
    from picklewarden.scanner import Analysis


@dataclass(frozen=True)
class ImportEntry:
    """One global a file imports, as the unpickler would really reach it."""

    symbol: str
    """Canonical ``module.qualname``."""
    display: str
    """How it is written when that differs (Python-2 remapping, springboards), else the symbol."""
    classification: str
    """``safe``, ``unknown``, ``trusted`` (by the policy), or the danger category (``process``, ``code``...)."""
    reason: str
    member: str
    offset: int | None
    """Where it is first imported."""
    count: int
    """How many import opcodes name it."""

    @property
    def package(self) -> str:
        return self.symbol.split(".", 1)[0]


def manifest(analysis: Analysis, policy: Policy) -> list[ImportEntry]:
    """Every distinct global the file's pickles import, in first-import order."""
    entries: dict[str, ImportEntry] = {}
    for judge in analysis.judges:
        for node in judge.program.globals:
            resolved, known = judge.knowledge(node)
            symbol = resolved.symbol
            seen = entries.get(symbol)
            if seen is not None:
                entries[symbol] = ImportEntry(**{**seen.__dict__, "count": seen.count + 1})
                continue
            if known is None:
                trusted = match(policy.trust, symbol)
                classification = "trusted" if trusted else "unknown"
                reason = (
                    f"trusted by policy entry {trusted!r}"
                    if trusted
                    else "not known to picklewarden: loading imports it, so you must trust its package"
                )
            else:
                classification, reason = known.category.value, known.reason
                accepted = match(policy.dangerous_globals, symbol) if classification != "safe" else None
                if accepted:
                    reason += f" (DANGEROUS OVERRIDE: accepted by allow_dangerous {accepted!r})"
            entries[symbol] = ImportEntry(
                symbol, resolved.display, classification, reason, judge.program.member, node.offset, 1
            )
    return list(entries.values())


def _class_style(classification: str) -> str:
    if classification == "safe":
        return "green"
    if classification in ("unknown", "trusted"):
        return "yellow" if classification == "unknown" else "cyan"
    return "bold red"


def render_manifest(path: str, entries: list[ImportEntry], *, color: bool = False, width: int | None = None) -> str:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    buffer = io.StringIO()
    out = console(color=color, width=width, file=buffer)
    out.print(Text(f"# {clean(path)}: {len(entries)} distinct global(s) imported"))
    if entries:
        table = Table(box=box.SIMPLE_HEAD if color else box.ASCII, show_edge=not color)
        for column in ("global", "class", "where", "uses", "reason"):
            table.add_column(column, justify="right" if column == "uses" else "left")
        order = {"safe": 2, "trusted": 1, "unknown": 1}
        for e in sorted(entries, key=lambda e: (order.get(e.classification, 0), e.symbol)):
            where = (f"{e.member} @ " if e.member else "@ ") + ("?" if e.offset is None else str(e.offset))
            name = e.symbol if e.display == e.symbol else e.display
            table.add_row(
                clean(name),
                Text(e.classification, _class_style(e.classification)),
                clean(where),
                str(e.count),
                clean(e.reason),
            )
        out.print(table)
        packages = sorted({e.package for e in entries if e.package not in ("builtins", "__builtin__")})
        out.print(Text(f"Loading this file imports from: {', '.join(clean(p) for p in packages) or 'builtins only'}"))
    text = buffer.getvalue()
    return text if color else "\n".join(line.rstrip() for line in text.splitlines()) + "\n"


def _flags(findings: list[Finding], policy: Policy) -> dict[tuple[str, int], list[Finding]]:
    flagged: dict[tuple[str, int], list[Finding]] = {}
    for raw in findings:
        f = apply_finding(policy, raw)
        if f is None or f.offset is None or f.severity is Severity.INFO:
            continue
        flagged.setdefault((f.member, f.offset), []).append(f)
    return flagged


def _pickle_header(program: Program) -> str:
    member = clean(program.member) or "<stream>"
    state = "complete" if program.complete else f"incomplete: {clean(str(program.error))}"
    return (
        f"# --- {member} pickle #{program.index} at offset {program.start} "
        f"(protocol {program.protocol}, {program.opcodes} opcodes, {state})"
    )


def _mark(hits: list[Finding] | None) -> tuple[str, Severity | None, str]:
    """The margin mark, the worst severity and the trailing rules comment of a listing line."""
    if not hits:
        return "  ", None, ""
    worst = max(f.severity for f in hits)
    mark = "!!" if Verdict.from_severity(worst) is Verdict.MALICIOUS else "! "
    return mark, worst, "  # " + ", ".join(sorted({f.rule for f in hits}))


def _where(offset: int | None) -> str:
    return f"{offset:>8}" if offset is not None else " " * 8


def render_program(analysis: Analysis, policy: Policy, *, color: bool = False, width: int | None = None) -> str:
    from rich.syntax import Syntax
    from rich.text import Text

    buffer = io.StringIO()
    out = console(color=color, width=width, file=buffer)
    flagged = _flags(analysis.findings, policy)
    out.print(Text(f"# {clean(analysis.path)}: {clean(analysis.format)}, {len(analysis.programs)} pickle(s)"))
    for judge in analysis.judges:
        program = judge.program
        out.print(Text("\n" + _pickle_header(program), "bold" if color else ""))
        lines = judge.decompiler.lines()
        highlighted: list[Text] = []
        if color:
            # The decompiler escapes everything from the file, so its lines are safe to highlight as Python.
            source = "\n".join(line for _, line in lines)
            highlighted = list(Syntax(source, "python", theme="ansi_dark").highlight(source).split("\n"))
        for i, (offset, line) in enumerate(lines):
            mark, worst, rules = _mark(flagged.get((program.member, offset)) if offset is not None else None)
            style = severity_style(worst) if worst is not None else ""
            row = Text()
            row.append(mark, style)
            row.append(_where(offset), "dim")
            row.append("  ")
            row.append_text(highlighted[i] if color and i < len(highlighted) else Text(clean(line)))
            row.append(rules, style)
            out.print(row)
    for error in analysis.errors:
        out.print(Text(f"# error: {clean(error)}"))
    text = buffer.getvalue()
    return text if color else "\n".join(line.rstrip() for line in text.splitlines()) + "\n"


def program_excerpt(analysis: Analysis, policy: Policy, *, limit: int, context: int = 3) -> str:
    """The listing as plain lines, whole when a pickle has at most ``limit`` statements; otherwise its first
    ``limit // 4`` statements and every flagged statement with ``context`` statements either side, the gaps
    marked. Only the statements shown are decompiled, so a 500k-tensor state dict costs what its
    evidence does (the gateway stores this for every file it judges)."""
    flagged = _flags(analysis.findings, policy)
    out = [f"# {clean(analysis.path)}: {clean(analysis.format)}, {len(analysis.programs)} pickle(s)"]
    for judge in analysis.judges:
        program = judge.program
        out += ["", _pickle_header(program)]
        statements = program.all_statements()  # a lean recording's elided calls back in place
        keep: range | set[int] = range(len(statements))
        if len(statements) > limit:
            keep = set(range(limit // 4))
            for i, stmt in enumerate(statements):
                if stmt.offset is not None and (program.member, stmt.offset) in flagged:
                    keep.update(range(max(0, i - context), min(len(statements), i + context + 1)))
        hidden = 0
        for i, stmt in enumerate(statements):
            if i not in keep:
                hidden += 1
                continue
            if hidden:
                out.append(f"# ... {hidden} statement(s) not shown (see picklewarden show)")
                hidden = 0
            out += _plain_rows(flagged, program.member, stmt.offset, judge.decompiler.render(stmt))
        if hidden:
            out.append(f"# ... {hidden} statement(s) not shown (see picklewarden show)")
        result = judge.decompiler.result_line()
        if result is not None:
            out += _plain_rows(flagged, program.member, *result)
    out += [f"# error: {clean(error)}" for error in analysis.errors]
    return "\n".join(line.rstrip() for line in out) + "\n"


def _plain_rows(flagged: dict[tuple[str, int], list[Finding]], member: str, offset: int | None, text: str) -> list[str]:
    mark, _, rules = _mark(flagged.get((member, offset)) if offset is not None else None)
    return [f"{mark}{_where(offset)}  {clean(line)}{rules}" for line in text.splitlines()]
