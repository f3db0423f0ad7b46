"""Files and directories to reports: which files a scan considers, each analysed (see :mod:`picklewarden.scanner`)
to one :class:`FileReport`, with the user's policy applied and files reached twice analysed once."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial

from picklewarden import walk
from picklewarden._typing import TYPE_CHECKING
from picklewarden.containers.opener import sniff_format
from picklewarden.limits import DEFAULT_LIMITS, Limits
from picklewarden.model import FileReport, Report
from picklewarden.pickle.machine import run_pickle
from picklewarden.scanner import HEAD_BYTES, Analysis, _plain_result, analyse_bytes, analyse_path_if, internal_error

if TYPE_CHECKING:
    from picklewarden.policy.config import Policy

Progress = Callable[[FileReport], None]


def scan_bytes(
    data: bytes, path: str = "<bytes>", limits: Limits = DEFAULT_LIMITS, *, policy: Policy | None = None
) -> FileReport:
    """Scan in-memory bytes (a whole file). ``policy`` adjusts the findings (see :mod:`picklewarden.policy`).
    Never raises for bad bytes: problems become errors or findings, like :func:`scan_path`."""
    try:
        report = analyse_bytes(data, path, limits).report()
    except Exception as exc:  # noqa: BLE001 - a scanner bug must not crash the caller; never reported clean
        report = FileReport(path, "unknown", errors=(internal_error(exc),))
    return _with_policy(report, policy)


def _with_policy(report: FileReport, policy: Policy | None) -> FileReport:
    if policy is None:
        return report
    from picklewarden.policy.apply import apply_file

    return apply_file(policy, report)


def _is_model_file(head: bytes, limits: Limits) -> bool:
    """Whether a file found in a directory walk is one some loader reads, from its first bytes."""
    fmt = sniff_format(head, limits)
    if fmt == "pickle" and head[:1] != b"\x80":
        return _unpickling_acts(head, len(head) < HEAD_BYTES, limits)
    return fmt is not None


def _unpickling_acts(head: bytes, whole: bool, limits: Limits) -> bool:
    """Whether ``pickle.load`` does anything with a file that has no protocol marker (text decodes as
    protocol-0 opcodes): it returns an object, or imports, calls or looks up an extension before it fails.

    A README or requirements file fails at once having run nothing; no loader unpickles anything from it,
    so a directory walk skips it (a file named explicitly is still scanned and reported). Where the sample
    is cut short of the file (``whole`` False) and the stream is still decoding at its end, it counts.
    """
    program, _ = run_pickle(head, 0, limits, plain=_plain_result)
    if program.complete or program.globals or program.calls or program.extensions:
        return True
    error = program.error
    offset = getattr(error, "offset", None)
    return not whole and (offset is None or offset >= len(head) - 1024)


def scan_path(
    path: str, limits: Limits = DEFAULT_LIMITS, *, explicit: bool = True, policy: Policy | None = None
) -> FileReport:
    """Scan one file. Files found under a directory that are not models, or that ``policy`` ignores, are
    returned as skipped."""
    return scan_file(path, limits, explicit=explicit, policy=policy)[0]


def scan_file(
    path: str, limits: Limits = DEFAULT_LIMITS, *, explicit: bool = True, policy: Policy | None = None
) -> tuple[FileReport, Analysis | None]:
    """:func:`scan_path`'s report, with the analysis behind it (None when the file was skipped or the
    scan failed), for callers that also show the evidence."""
    if _ignored(policy, path):
        return FileReport(path, "unknown", skipped=True), None
    try:
        analysis = analyse_path_if(path, limits, None if explicit else partial(_is_model_file, limits=limits))
        if analysis is None:
            return FileReport(path, "unknown", skipped=True), None
        return _with_policy(analysis.report(), policy), analysis
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop a scan; never reported clean
        error = internal_error(exc)
        return FileReport(path, "unknown", errors=(error,)), None


def _ignored(policy: Policy | None, path: str) -> bool:
    if policy is None or not policy.ignore:
        return False
    from picklewarden.policy.apply import ignored

    return ignored(policy, path) is not None


def iter_targets(paths: Iterable[str]) -> Iterator[tuple[str, bool]]:
    """(path, explicit) for every file to consider: named files, and files under named directories."""
    for target in walk.iter_targets(paths):
        if not target.skip:
            yield target.path, target.explicit


def _identity(path: str) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_dev, stat.st_ino)


def scan(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    limits: Limits = DEFAULT_LIMITS,
    *,
    progress: Progress | None = None,
    policy: Policy | None = None,
    skip_non_models: bool = False,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> Report:
    """Scan files and directories (recursively). ``progress`` is called once per file as it finishes.

    ``policy`` (see :func:`picklewarden.load_policy`) trusts project globals, changes severities and skips
    ignored paths; None applies no policy file at all. ``skip_non_models`` treats named files like files
    found in a directory: those that are not pickles or model files are skipped instead of reported as
    errors (for hooks that pass every ``*.bin``). ``include``/``exclude`` are globs selecting the files
    found in directories (see :mod:`picklewarden.walk`); symbolic links are followed within the scanned
    tree (and from a Hugging Face snapshot into its blob store) but never out of it. A file reached
    twice (a link, a blob shared by cache revisions) is analysed once.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    reports = []
    done: dict[tuple[int, int], FileReport] = {}
    for target in walk.iter_targets((os.fspath(p) for p in paths), include, exclude):
        report = _scan_target(target, limits, policy, skip_non_models, done)
        reports.append(report)
        if progress is not None:
            progress(report)
    return Report(tuple(reports))


def _scan_target(
    target: walk.Target,
    limits: Limits,
    policy: Policy | None,
    skip_non_models: bool,
    done: dict[tuple[int, int], FileReport],
) -> FileReport:
    path = target.path
    if target.error:
        report = FileReport(path, "unknown", errors=(target.error,))
    elif target.skip:
        report = FileReport(path, "unknown", skipped=True, notes=(target.skip,))
    elif target.explicit and not os.path.exists(path) and not os.path.islink(path):
        report = FileReport(path, "unknown", errors=("no such file or directory",))
    else:
        key = None if target.explicit else _identity(path)
        cached = done.get(key) if key is not None else None
        if cached is not None and not _ignored(policy, path):
            report = cached._replace(path=path)
        else:
            report = scan_path(path, limits, explicit=target.explicit and not skip_non_models, policy=policy)
            if key is not None and not report.skipped:
                done[key] = report
    if target.location:
        report = report._replace(location=target.location, revision=target.revision)
    return report
