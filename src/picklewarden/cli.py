"""Command line: argv -> options -> library call -> render -> exit code. Only this module prints."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from picklewarden import __version__
from picklewarden.model import Verdict

_FAIL_ON = {"suspicious": Verdict.SUSPICIOUS, "malicious": Verdict.MALICIOUS}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="picklewarden")
def cli() -> None:
    """Find malicious code in pickles and PyTorch model files without executing them."""


@cli.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), help="Write the report here.")
@click.option(
    "--fail-on",
    type=click.Choice(sorted(_FAIL_ON)),
    default="suspicious",
    show_default=True,
    help="Lowest verdict that makes the exit code 1.",
)
@click.option("--quiet", "-q", is_flag=True, help="Text output: list only files that are not safe.")
def scan(paths: tuple[str, ...], fmt: str, output: str | None, fail_on: str, quiet: bool) -> None:
    """Scan files and directories. Exit 0 clean, 1 threshold reached, 2 incomplete or usage error."""
    from picklewarden.report import json as json_report
    from picklewarden.report import text as text_report
    from picklewarden.scanner import scan as run_scan

    report = run_scan(paths)
    rendered = json_report.render(report) if fmt == "json" else text_report.render(report, quiet=quiet)
    if output:
        with open(output, "w", encoding="utf-8") as handle:
            handle.write(rendered)
    else:
        click.echo(rendered, nl=False)
    sys.exit(report.exit_code(_FAIL_ON[fail_on]))


@cli.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
def show(path: str) -> None:
    """Print the decompiled program of every pickle in a file, with offsets; flagged lines marked '!!'."""
    from picklewarden.scanner import analyse_path

    analysis = analyse_path(path)
    flagged = {(f.member, f.offset) for f in analysis.findings if f.offset is not None}
    click.echo(f"# {path}: {analysis.format}, {len(analysis.programs)} pickle(s)")
    for judge in analysis.judges:
        program = judge.program
        member = program.member or "<stream>"
        state = "complete" if program.complete else f"incomplete: {program.error}"
        click.echo(
            f"\n# --- {member} pickle #{program.index} at offset {program.start} "
            f"(protocol {program.protocol}, {program.opcodes} opcodes, {state})"
        )
        for offset, line in judge.decompiler.lines():
            mark = "!!" if (program.member, offset) in flagged else "  "
            where = f"{offset:>8}" if offset is not None else " " * 8
            click.echo(f"{mark}{where}  {line}")
    for error in analysis.errors:
        click.echo(f"# error: {error}")


@cli.command()
def rules() -> None:
    """List every rule with its severity and CWE."""
    from picklewarden.rules import RULES

    for rule in RULES:
        click.echo(f"{rule.id}  {rule.severity.label:<8}  CWE-{rule.cwe:<4} {rule.name}: {rule.summary}")


@cli.command()
@click.argument("rule_id")
def explain(rule_id: str) -> None:
    """Show the help of one rule."""
    from picklewarden.rules import BY_ID

    rule = BY_ID.get(rule_id.upper())
    if rule is None:
        raise click.UsageError(f"unknown rule {rule_id!r}; see `picklewarden rules`")
    click.echo(f"{rule.id} {rule.name} ({rule.severity.label}, CWE-{rule.cwe})\n{rule.summary}.\n\n{rule.help}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code (click's usage errors exit 2, as the contract requires)."""
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="picklewarden", standalone_mode=True)
    except SystemExit as exit_:
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else 2)
    return 0
