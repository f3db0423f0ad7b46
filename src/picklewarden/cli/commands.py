"""The commands besides ``scan``: ``show``, ``rules``, ``explain`` and ``convert``."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from picklewarden.cli.common import cli, effective_policy, leave, with_policy_options
from picklewarden.cli.console import announce, emit, terminal_width, use_color
from picklewarden.cli.scanargs import COLOR_CHOICES


@cli.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--globals", "show_globals", is_flag=True, help="List every global the file imports, classified.")
@with_policy_options
@click.option("--color", type=click.Choice(COLOR_CHOICES), default="auto", show_default=True)
def show(path: str, show_globals: bool, policy_file: str | None, no_policy: bool, color: str) -> None:
    """Print the decompiled program of every pickle in a file, with byte offsets.

    Lines a rule flags are marked '!!' (malicious) or '! ' (suspicious) and end with the rule ids.
    With --globals, print the import manifest instead: what loading the file imports, and what is known
    about each global. Exit 2 when the file cannot be analysed completely, else 0.
    """
    from picklewarden.report import program as program_report
    from picklewarden.scanner import analyse_path

    policy = effective_policy(policy_file, no_policy, None)
    announce(policy)
    analysis = analyse_path(path, full=True)  # the listing shows every call, known-safe reconstructors too
    colored = use_color(color, sys.stdout)
    width = terminal_width() if colored else None
    if show_globals:
        entries = program_report.manifest(analysis, policy)
        rendered = program_report.render_manifest(path, entries, color=colored, width=width)
    else:
        rendered = program_report.render_program(analysis, policy, color=colored, width=width)
    emit(rendered, color=colored)
    if analysis.errors:
        leave(2)  # as `scan` does: a file that could not be analysed completely is never a clean result


@cli.command()
def rules() -> None:
    """List every rule with its severity, CWE and help."""
    from picklewarden.rules import RULES

    for rule in RULES:
        click.echo(f"{rule.id}  {rule.severity.label:<8}  CWE-{rule.cwe:<4} {rule.name}: {rule.summary}")
        click.echo(click.wrap_text(rule.help, width=100, initial_indent="    ", subsequent_indent="    "))


@cli.command()
@click.argument("rule_id")
def explain(rule_id: str) -> None:
    """Show the help of one rule."""
    from picklewarden.policy.config import SINK_RULES
    from picklewarden.rules import BY_ID

    rule = BY_ID.get(rule_id.upper())
    if rule is None:
        raise click.UsageError(f"unknown rule {rule_id!r}; see `picklewarden rules`")
    click.echo(f"{rule.id} {rule.name} ({rule.severity.label}, CWE-{rule.cwe})\n{rule.summary}.\n")
    click.echo(click.wrap_text(rule.help, width=100))
    click.echo(f"\nCWE-{rule.cwe}: https://cwe.mitre.org/data/definitions/{rule.cwe}.html")
    if rule.id in SINK_RULES:
        click.echo(
            "Policy: a known-dangerous rule. `trust` never removes it; lowering its severity or accepting a "
            "global it reports needs [override] allow_dangerous, which is reported on every run."
        )
    else:
        click.echo(f'Policy: change its severity with `[severity] {rule.id} = "..."` in picklewarden.toml.')


@cli.command()
@click.argument("src", type=click.Path(exists=True, dir_okay=False))
@click.argument("dst", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Convert even a file the scan finds malicious (nothing in it runs).")
@click.option("--overwrite", is_flag=True, help="Replace DST if it exists.")
@with_policy_options
def convert(src: str, dst: str, force: bool, overwrite: bool, policy_file: str | None, no_policy: bool) -> None:
    """Write the tensors of a PyTorch file to safetensors without running it (SRC is scanned first).

    Exit 0 written, 1 refused (the scan found SRC malicious; see --force), 2 cannot convert.
    """
    import picklewarden
    from picklewarden.errors import ScanError
    from picklewarden.extract.errors import ConvertError, UnsafeModelError
    from picklewarden.report.text import clean

    policy = effective_policy(policy_file, no_policy, None)
    announce(policy)
    if os.path.lexists(dst) and not overwrite:
        click.echo(f"picklewarden: {clean(dst)} exists; --overwrite replaces it", err=True)
        leave(2)
    try:
        result = picklewarden.convert(src, dst, force=force, policy=policy)
    except UnsafeModelError as exc:
        click.echo(
            f"picklewarden: refused to convert {clean(src)}: the scan found it {exc.verdict.label} "
            f"(`picklewarden scan {clean(src)}` shows why); --force converts it anyway, running nothing",
            err=True,
        )
        leave(1)
    except (ScanError, ConvertError, OSError, ImportError, ValueError) as exc:
        click.echo(f"picklewarden: cannot convert {clean(src)}: {exc}", err=True)
        leave(2)
    click.echo(_convert_summary(dst, result))


def _convert_summary(dst: str, result: Any) -> str:
    """What ``convert`` wrote and left out, read defensively (the result type belongs to the converter)."""
    from picklewarden.report.text import clean

    tensors = getattr(result, "tensors", ())
    lines = [f"wrote {clean(dst)}: {len(tensors)} tensor(s), {getattr(result, 'nbytes', 0)} bytes of tensor data"]
    if getattr(result, "forced", False):
        lines.append("  WARNING: the scan found the source malicious; converted anyway (--force), nothing ran")
    for skipped in getattr(result, "skipped", ()):
        lines.append(f"  skipped {clean(str(skipped.name))}: {clean(str(skipped.reason))}")
    unknown = getattr(result, "unknown_globals", ())
    if unknown:
        lines.append(f"  the original needs globals picklewarden does not know: {', '.join(map(clean, unknown))}")
    return "\n".join(lines)
