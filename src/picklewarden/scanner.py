"""The scan pipeline: container -> pickle streams -> machine -> program -> rules -> file report."""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from picklewarden.containers.base import Opened, PickleSource, Stacking
from picklewarden.containers.opener import open_bytes, sniff_format
from picklewarden.limits import DEFAULT_LIMITS, Limits
from picklewarden.model import FileReport, Finding, Report
from picklewarden.pickle.machine import run_pickle
from picklewarden.pickle.program import CallResult, Global, Program
from picklewarden.policy.knowledge import Category
from picklewarden.policy.resolve import classify, resolve
from picklewarden.rules import ProgramJudge, finding

if TYPE_CHECKING:
    from picklewarden.policy.config import Policy

# torch's legacy (pre-1.6) format starts with a pickled magic number, then protocol version, sys_info,
# the object and its storage keys: five pickles, followed by raw storage bytes.
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PICKLES = 5

Progress = Callable[[FileReport], None]


@dataclass
class Analysis:
    """Everything learned about one file: the report plus the programs behind it (for ``show``)."""

    path: str
    format: str
    programs: list[Program] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    judges: list[ProgramJudge] = field(default_factory=list)

    def report(self) -> FileReport:
        findings = tuple(sorted(self.findings, key=Finding.sort_key))
        return FileReport(self.path, self.format, findings, tuple(self.errors), len(self.programs))


def _plain_result(call: CallResult) -> bool:
    """Known-safe reconstructors never return classes, so their results need not be type stand-ins."""
    callee = call.callee
    if not isinstance(callee, Global):
        return False
    known = classify(resolve(callee.module, callee.name, callee.protocol))
    return known is not None and known.category is Category.SAFE


def _run_source(source: PickleSource, limits: Limits, analysis: Analysis) -> None:
    data = source.data
    pos = 0
    index = 0
    while pos < len(data):
        program, _ = run_pickle(
            data, pos, limits, member=source.member, index=index, plain=_plain_result, file_like=source.file_like
        )
        analysis.programs.append(program)
        if not program.complete or program.end is None:
            return
        index += 1
        pos = program.end
        if source.stacking is Stacking.ONE or pos >= len(data):
            return
        if index == 1 and type(program.result) is int and program.result == LEGACY_MAGIC:
            analysis.format = "torch-legacy"
        if analysis.format == "torch-legacy" and index >= _LEGACY_PICKLES:
            return  # the rest is raw storage data, which torch reads as bytes
        if index >= limits.max_pickles_per_stream:
            analysis.findings.append(
                finding(
                    "PW301",
                    f"more than {limits.max_pickles_per_stream} pickles in one stream",
                    member=source.member,
                    offset=pos,
                )
            )
            return
        if not _next_is_pickle(data, pos, limits):
            analysis.findings.append(
                finding(
                    "PW302",
                    f"{len(data) - pos} bytes after the last pickle are not a pickle",
                    member=source.member,
                    offset=pos,
                )
            )
            return


def _next_is_pickle(data: bytes, pos: int, limits: Limits) -> bool:
    from picklewarden.containers.sniff import looks_like_pickle

    return looks_like_pickle(data[pos : pos + 64 * 1024], limits)


def analyse_opened(opened: Opened, path: str, limits: Limits) -> Analysis:
    analysis = Analysis(path, opened.format, errors=list(opened.errors))
    for anomaly in opened.anomalies:
        analysis.findings.append(
            finding(anomaly.rule, anomaly.message, member=anomaly.member or "", offset=anomaly.offset)
        )
    for source in opened.sources:
        _run_source(source, limits, analysis)
    if analysis.format == "pickle?":
        first = analysis.programs[0] if analysis.programs else None
        if first is None or (not first.complete and not first.statements):
            analysis.format = "unknown"
            analysis.errors.append("unsupported format: not a pickle, PyTorch or ZIP file")
            analysis.programs.clear()
        else:
            analysis.format = "pickle"
    for program in analysis.programs:
        judge = ProgramJudge(program, limits)
        analysis.judges.append(judge)
        analysis.findings.extend(judge.findings())
    return analysis


def analyse_bytes(data: bytes, path: str = "<bytes>", limits: Limits = DEFAULT_LIMITS) -> Analysis:
    return analyse_opened(open_bytes(data, limits), path, limits)


def analyse_path(path: str, limits: Limits = DEFAULT_LIMITS) -> Analysis:
    """Analyse one file. Never raises for a bad file: problems become errors or findings."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > limits.max_file_bytes:
                analysis = Analysis(path, "unknown")
                analysis.findings.append(
                    finding("PW301", f"file of {size} bytes exceeds the {limits.max_file_bytes}-byte limit")
                )
                analysis.errors.append("file too large to analyse")
                return analysis
            if size == 0:
                return Analysis(path, "unknown", errors=["empty file"])
            # mmap: only the pages the readers touch (ZIP directory, pickle members) are read from disk.
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                return analyse_opened(open_bytes(mapped, limits), path, limits)  # type: ignore[arg-type]
    except OSError as exc:
        return Analysis(path, "unknown", errors=[f"cannot read: {exc.strerror or exc}"])


def scan_bytes(
    data: bytes, path: str = "<bytes>", limits: Limits = DEFAULT_LIMITS, *, policy: Policy | None = None
) -> FileReport:
    """Scan in-memory bytes (a whole file). ``policy`` adjusts the findings (see :mod:`picklewarden.policy`)."""
    return _with_policy(analyse_bytes(data, path, limits).report(), policy)


def _with_policy(report: FileReport, policy: Policy | None) -> FileReport:
    if policy is None:
        return report
    from picklewarden.policy.apply import apply_file

    return apply_file(policy, report)


def _is_model_file(path: Path, limits: Limits) -> bool:
    try:
        with open(path, "rb") as handle:
            head = handle.read(64 * 1024)
    except OSError:
        return True  # let the scan report why it cannot be read
    return sniff_format(head, limits) is not None


def _walk(root: str) -> Iterator[str]:
    seen: set[tuple[int, int]] = set()
    for directory, subdirs, files in os.walk(root, followlinks=True):
        try:
            stat = os.stat(directory)
        except OSError:
            continue
        key = (stat.st_dev, stat.st_ino)
        if key in seen:  # symlink loop
            subdirs[:] = []
            continue
        seen.add(key)
        subdirs.sort()
        for name in sorted(files):
            yield os.path.join(directory, name)


def iter_targets(paths: Iterable[str]) -> Iterator[tuple[str, bool]]:
    """(path, explicit) for every file to consider: named files, and files under named directories."""
    for path in paths:
        if os.path.isdir(path):
            for found in _walk(path):
                yield found, False
        else:
            yield path, True


def scan_path(
    path: str, limits: Limits = DEFAULT_LIMITS, *, explicit: bool = True, policy: Policy | None = None
) -> FileReport:
    """Scan one file. Files found under a directory that are not models, or that ``policy`` ignores, are
    returned as skipped."""
    if policy is not None and policy.ignore:
        from picklewarden.policy.apply import ignored

        if ignored(policy, path) is not None:
            return FileReport(path, "unknown", skipped=True)
    if not explicit and not _is_model_file(Path(path), limits):
        return FileReport(path, "unknown", skipped=True)
    try:
        return _with_policy(analyse_path(path, limits).report(), policy)
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop a scan; never reported clean
        return FileReport(path, "unknown", errors=(f"internal error while scanning: {type(exc).__name__}: {exc}",))


def scan(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    limits: Limits = DEFAULT_LIMITS,
    *,
    progress: Progress | None = None,
    policy: Policy | None = None,
    skip_non_models: bool = False,
) -> Report:
    """Scan files and directories (recursively). ``progress`` is called once per file as it finishes.

    ``policy`` (see :func:`picklewarden.load_policy`) trusts project globals, changes severities and skips
    ignored paths; None applies no policy file at all. ``skip_non_models`` treats named files like files
    found in a directory: those that are not pickles or model files are skipped instead of reported as
    errors (for hooks that pass every ``*.bin``).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    reports = []
    for target, explicit in iter_targets(os.fspath(p) for p in paths):
        if not explicit or os.path.exists(target) or os.path.islink(target):
            report = scan_path(target, limits, explicit=explicit and not skip_non_models, policy=policy)
        else:
            report = FileReport(target, "unknown", errors=("no such file or directory",))
        reports.append(report)
        if progress is not None:
            progress(report)
    return Report(tuple(reports))
