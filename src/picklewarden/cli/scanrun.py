"""``picklewarden scan``: paths, directories, URLs and manifests -> reports -> one rendered output.

The body of the command, without click: ``cli/scan.py`` is its click command, and a plain command line comes
here straight from :func:`picklewarden.cli.scanargs.parse`.
"""

from __future__ import annotations

import contextlib
import os
import sys

from picklewarden._typing import TYPE_CHECKING
from picklewarden.cli import console
from picklewarden.cli.console import (
    ConfigProblem,
    UsageProblem,
    announce,
    echo,
    effective_policy,
    emit,
    open_output,
    terminal_width,
    use_color,
    warn,
)
from picklewarden.report import OutputFormat

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from typing import TextIO

    from picklewarden.cache import ResultCache
    from picklewarden.limits import Limits
    from picklewarden.model import FileReport
    from picklewarden.policy.config import Policy


@contextlib.contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[FileReport], None] | None]:
    """A progress display on stderr (only when it is a terminal), or None."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn

    from picklewarden.report.text import clean

    columns = (
        SpinnerColumn(),
        TextColumn("scanned {task.completed} file(s)"),
        BarColumn(),
        TextColumn("{task.description}", markup=False),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("", total=None)

        def advance(report: FileReport) -> None:
            bar.update(task, advance=1, description=clean(report.path)[-60:])

        yield advance


def run_scan(
    *,
    paths: tuple[str, ...],
    fmt: str,
    output: str | None,
    sarif_output: str | None,
    fail_on: str | None,
    quiet: bool,
    skip_non_models: bool,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    jobs: int | None,
    cache_dir: str | None,
    cache_mode: str,
    limit_changes: tuple[str, ...],
    manifest: tuple[str, ...],
    ray_address: str | None,
    policy_file: str | None,
    no_policy: bool,
    show_policy: bool,
    color: str,
) -> int:
    """Scan, render, and return the exit code: 0 clean, 1 threshold reached, 2 incomplete.

    Raises UsageProblem before any output, and ConfigProblem for a policy or output it cannot use.
    """
    policy = effective_policy(policy_file, no_policy, fail_on)
    if show_policy:
        from picklewarden.policy.config import to_toml

        announce(policy)
        echo(to_toml(policy), nl=False)
        return 0
    if not paths and not manifest:
        raise UsageProblem("give at least one file, directory or URL to scan")
    limits = _limits(policy, limit_changes)  # a usage problem is raised before any output
    announce(policy)
    cache = None
    if cache_dir is not None:
        from picklewarden.cache import CacheMode, ResultCache

        cache = ResultCache(cache_dir, CacheMode(cache_mode))
    output_format = OutputFormat(fmt)

    many = len(paths) > 1 or bool(manifest) or any(os.path.isdir(p) or p.endswith("/") for p in paths)
    # Claim the output files before scanning: an unwritable path fails now, not after an hour's scan.
    out_file = open_output(output) if output else None
    sarif_file = open_output(sarif_output) if sarif_output else None
    sink: TextIO | None = (out_file or sys.stdout) if output_format is OutputFormat.JSONL else None
    reports: list[FileReport] = []
    # Streaming JSONL keeps no report once written: the exit code needs only which (verdict, incomplete)
    # kinds occurred, so one slim representative of each is kept (memory stays flat over a million files).
    keep_all = sink is None or bool(sarif_output)
    kinds: dict[tuple[object, bool], FileReport] = {}
    seen = scanned = 0
    with _progress(many and not quiet and sys.stderr.isatty()) as progress:
        stream = _reports(
            paths,
            manifest=manifest,
            ray_address=ray_address,
            jobs=jobs if jobs is not None else (None if many else 1),
            limits=limits,
            cache=cache,
            policy=policy,
            skip_non_models=skip_non_models,
            include=include,
            exclude=exclude,
            ordered=output_format is not OutputFormat.JSONL,
        )
        for one in stream:
            if progress is not None:
                progress(one)
            seen += 1
            scanned += not one.skipped
            if keep_all:
                reports.append(one)
            elif not one.skipped:
                kinds.setdefault((one.verdict, bool(one.errors)), _summary_only(one))
            if sink is not None:
                from picklewarden.report.json import render_line

                emit(render_line(one) + "\n", sink)

    from picklewarden.model import Report

    report = Report(tuple(reports) if keep_all else tuple(kinds.values()))
    notices = [f"policy {policy.source}: {w}" for w in policy.warnings]
    if sarif_file is not None:
        from picklewarden.report import sarif

        with sarif_file:
            emit(sarif.render(report, notices=notices), sarif_file)
    colored = output is None and use_color(color, sys.stdout)
    rendered: str | None = None
    match output_format:
        case OutputFormat.TEXT:
            from picklewarden.report import plain

            # Uncoloured text without rich's import when it is ASCII (see report/plain.py), else rich's.
            rendered = None if colored else plain.render(report, quiet=quiet)
            if rendered is None:
                from picklewarden.report import text

                width = terminal_width() if colored else None
                rendered = text.render(report, quiet=quiet, color=colored, width=width)
        case OutputFormat.JSON:
            from picklewarden.report import json as json_report

            rendered = json_report.render(report)
        case OutputFormat.JSONL:
            pass  # already streamed
        case OutputFormat.SARIF:
            from picklewarden.report import sarif

            rendered = sarif.render(report, notices=notices)
    if out_file is not None:
        with out_file:
            if rendered is not None:
                emit(rendered, out_file)
    elif rendered is not None:
        emit(rendered, color=colored)
    if not seen:
        # A mistyped glob or an empty directory must not pass a gate as "clean".
        warn("nothing to scan: no file found under the given paths" + (" and manifests" if manifest else ""))
        return 2
    if not scanned:
        warn(f"nothing was scanned: all {seen} file(s) were skipped as not model files")
    return report.exit_code(policy.effective_fail_on)


def _limits(policy: Policy, changes: Sequence[str]) -> Limits:
    """The policy's limits with ``--limit NAME=VALUE`` applied on top."""
    from picklewarden.policy.config import PolicyError, parse_limits

    table: dict[str, object] = {}
    for change in changes:
        name, sep, value = change.partition("=")
        if not sep or not value.strip().isdigit():
            raise UsageProblem(f"--limit expects NAME=POSITIVE_INTEGER, got {change!r}")
        table[name.strip()] = int(value)
    try:
        return policy.apply_limits().replace(**dict(parse_limits(table, "--limit")))
    except PolicyError as exc:
        raise ConfigProblem(str(exc)) from exc


def _summary_only(report: FileReport) -> FileReport:
    """What the exit code needs of a report already streamed: its verdict and whether it is complete."""

    worst = max(report.findings, key=lambda f: f.severity, default=None)
    slim = () if worst is None else (worst._replace(evidence="", indicators=()),)
    return report._replace(findings=slim, notes=())


def _is_url(path: str) -> bool:
    if "://" not in path:
        return False  # the common case, without importing the remote-access module
    from picklewarden.remote import is_url

    return is_url(path)


def _reports(
    paths: Sequence[str],
    *,
    manifest: Sequence[str],
    ray_address: str | None,
    jobs: int | None,
    limits: Limits,
    cache: ResultCache | None,
    policy: Policy,
    skip_non_models: bool,
    include: Sequence[str],
    exclude: Sequence[str],
    ordered: bool,
) -> Iterator[FileReport]:
    """Every report of the run: local paths on this machine's cores, URLs by ranged reads, or everything
    on a Ray cluster."""
    if ray_address is not None:
        from picklewarden import distributed

        def entries() -> Iterator[distributed.Entry]:
            # Lazily: the driver holds only the shards in flight, whatever the manifest's length.
            for path in paths:
                if os.path.isdir(path) or path.endswith("/"):
                    yield from distributed.read_manifest(path)
                else:
                    yield distributed.Entry(path, True)
            for source in manifest:
                yield from distributed.read_manifest(source)

        try:
            yield from distributed.scan_manifest(
                entries(),
                address=None if ray_address == "local" else ray_address,
                limits=limits,
                cache=cache,
                policy=policy,
                skip_non_models=skip_non_models,
            )
        except ImportError as exc:
            raise ConfigProblem(f"--ray needs Ray installed (pip install 'picklewarden[ray]'): {exc}") from exc
        return
    local = [p for p in paths if not _is_url(p)]
    urls = [p for p in paths if _is_url(p)]
    for source in manifest:
        from picklewarden.distributed import read_manifest

        try:
            for entry in read_manifest(source):
                (urls if _is_url(entry.target) else local).append(entry.target)
        except (OSError, ImportError) as exc:
            raise ConfigProblem(f"cannot read manifest {source}: {exc}") from exc
    if local:
        from picklewarden.parallel import scan_parallel

        yield from scan_parallel(
            local,
            hold_last=console.EXITS_WITHOUT_TEARDOWN,
            jobs=jobs,
            limits=limits,
            cache=cache,
            policy=policy,
            skip_non_models=skip_non_models,
            include=include,
            exclude=exclude,
            ordered=ordered,
        )
    if urls:
        from picklewarden.remote import scan_urls

        yield from scan_urls(urls, limits, policy=policy, cache=cache)
