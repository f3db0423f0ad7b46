"""The scan pipeline: container -> pickle streams -> machine -> program -> rules -> file report."""

from __future__ import annotations

import mmap
import os

from picklewarden import fxcode
from picklewarden._typing import TYPE_CHECKING
from picklewarden.containers import nested
from picklewarden.containers.base import (
    Anomaly,
    Child,
    Context,
    OffsetMap,
    Opened,
    PickleSource,
    Stacking,
    join_member,
    vouches,
)
from picklewarden.containers.hints import extension_anomaly
from picklewarden.containers.opener import UNSUPPORTED, open_bytes
from picklewarden.errors import LimitExceeded, MalformedPickle
from picklewarden.files import open_regular
from picklewarden.knowledge.joblib_compat import wants_joblib_view
from picklewarden.knowledge.resolve import classify, resolve
from picklewarden.knowledge.tables import Category
from picklewarden.limits import DEFAULT_LIMITS, Limits
from picklewarden.model import FileReport, Finding, Severity
from picklewarden.pickle.machine import gc_paused, run_pickle
from picklewarden.pickle.program import CallHow, CallResult, Global, Program
from picklewarden.rules import ProgramJudge, finding

if TYPE_CHECKING:
    from collections.abc import Callable

    from picklewarden.containers.joblib_files import JoblibView

# torch's legacy (pre-1.6) format starts with a pickled magic number, then protocol version, sys_info,
# the object and its storage keys: five pickles, followed by raw storage bytes.
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PICKLES = 5


class Analysis:
    """Everything learned about one file: the report plus the programs behind it (for ``show``)."""

    # A plain class, not a dataclass: see "Start-up" in docs/benchmarks.md.
    __slots__ = ("errors", "findings", "format", "judges", "notes", "path", "programs")

    def __init__(self, path: str, format: str, *, errors: list[str] | None = None) -> None:
        self.path = path
        self.format = format
        self.programs: list[Program] = []
        self.findings: list[Finding] = []
        self.errors: list[str] = [] if errors is None else errors
        self.judges: list[ProgramJudge] = []
        self.notes: list[str] = []

    def report(self) -> FileReport:
        findings = tuple(sorted(self.findings, key=Finding.sort_key))
        return FileReport(
            self.path, self.format, findings, tuple(self.errors), len(self.programs), notes=tuple(self.notes)
        )


def _plain_result(call: CallResult) -> bool:
    """Known-safe reconstructors never return classes, so their results need not be type stand-ins."""
    callee = call.callee
    if not isinstance(callee, Global):
        return False
    known = classify(resolve(callee.module, callee.name, callee.protocol))
    return known is not None and known.category is Category.SAFE


# Findings about merely importing or calling a global, which a container's loader may vouch for (its own
# machinery: joblib's array wrapper, TorchScript's __torch__ classes). Tampering and indirection stay.
_VOUCHABLE = frozenset({"PW100", "PW101", "PW102", "PW103", "PW104", "PW105", "PW200", "PW201"})


class _Run:
    """What running one source produced."""

    __slots__ = ("errors", "findings", "legacy", "programs")

    def __init__(self) -> None:
        self.programs: list[Program] = []
        self.findings: list[Finding] = []
        self.errors: list[str] = []
        self.legacy = False


def _loader_machinery(judge: ProgramJudge, vouched: frozenset[str]) -> frozenset[int | None]:
    """Offsets of the statements that use a vouched-for name exactly as its loader does: its import, an
    argument-less instantiation (NEWOBJ), and calls with arguments only for entries marked ``(*)``.
    Anything else done with the same name (a call with arguments, one of its attributes) is judged."""
    plain = {v for v in vouched if not v.endswith("(*)")}
    called = {v[:-3] for v in vouched if v.endswith("(*)")}
    offsets: set[int | None] = set()
    for stmt in judge.program.all_statements():
        if isinstance(stmt, Global):
            symbol = judge.knowledge(stmt)[0].symbol
            if any(vouches(v, symbol) for v in plain | called):
                offsets.add(stmt.offset)
        elif isinstance(stmt, CallResult) and isinstance(stmt.callee, Global):
            symbol = judge.knowledge(stmt.callee)[0].symbol
            argless = stmt.how is CallHow.NEW and not stmt.args and not stmt.kwargs
            if any(vouches(v, symbol) for v in called) or (argless and any(vouches(v, symbol) for v in plain)):
                offsets.add(stmt.offset)
    return frozenset(offsets)


def _anomaly_finding(anomaly: Anomaly, prefix: str) -> Finding:
    return finding(
        anomaly.rule,
        anomaly.message,
        member=join_member(prefix, anomaly.member or ""),
        offset=anomaly.offset,
        severity=anomaly.severity,
        evidence=anomaly.evidence,
        symbol=anomaly.symbol,
    )


def _run_source(source: PickleSource, limits: Limits, member: str, full: bool) -> _Run:
    """Run every pickle a loader reads from ``source`` (its programs are named ``member``); ``full`` keeps
    every statement (see ``lean`` in :func:`~picklewarden.pickle.machine.run_pickle`)."""
    run = _Run()
    data = source.data
    pos = source.start
    index = 0
    most = limits.max_members if source.walker is not None else limits.max_pickles_per_stream
    while pos < len(data):
        if source.python:
            from picklewarden.pickle.pymachine import run_pickle_python  # here: only joblib views need it

            program = run_pickle_python(data, pos, limits, member=member, index=index, plain=_plain_result)
        else:
            program, _ = run_pickle(
                data,
                pos,
                limits,
                member=member,
                index=index,
                plain=_plain_result,
                file_like=source.file_like,
                lean=not full,
            )
        run.programs.append(program)
        if not program.complete or program.end is None:
            if index == 0 and source.stacking is Stacking.ALL and source.walker is None and not source.python:
                _python_reading(run, program, data, limits)
            return run
        index += 1
        if source.walker is not None:
            step = source.walker(program, index - 1)
            if step.anomaly is not None:
                run.findings.append(_anomaly_finding(step.anomaly._replace(member=None), member))
            if step.error is not None:
                run.errors.append(_where(member, step.error))
            if step.next is None:
                return run
            pos = step.next
        else:
            pos = program.end
            if source.stacking is Stacking.ONE or pos >= len(data):
                return run
            if index == 1 and type(program.result) is int and program.result == LEGACY_MAGIC:
                run.legacy = True
            if run.legacy and index >= _LEGACY_PICKLES:
                return run  # the rest is raw storage data, which torch reads as bytes
            if not _next_is_pickle(data, pos, limits):
                run.findings.append(
                    finding(
                        "PW302",
                        f"{len(data) - pos} bytes after the last pickle are not a pickle",
                        member=member,
                        offset=pos,
                    )
                )
                return run
        if index >= most:
            run.findings.append(finding("PW301", f"more than {most} pickles in one stream", member=member, offset=pos))
            return run
    return run


def _python_reading(run: _Run, program: Program, data: bytes, limits: Limits) -> None:
    """A raw stream is also what joblib.load reads, with the pure-Python unpickler, which accepts
    streams the C one rejects: where it reads further, its program is judged too."""
    from picklewarden.pickle.pymachine import further  # here: only streams the C machine gave up on

    view = further(program, data, limits, _plain_result)
    if view is None:
        return
    run.programs.append(view)
    stop = program.error.offset if isinstance(program.error, (MalformedPickle, LimitExceeded)) else None
    run.findings.append(
        finding(
            "PW309",
            f"the C unpickler (pickle.load) stops here, but the pure-Python one (joblib.load) reads on "
            f"({view.recorded} statements, {'to STOP' if view.complete else 'further'})",
            member=program.member,
            offset=stop,
        )
    )


def _next_is_pickle(data: bytes, pos: int, limits: Limits) -> bool:
    from picklewarden.containers.sniff import looks_like_pickle

    return looks_like_pickle(data[pos : pos + 64 * 1024], limits)


def _where(member: str, message: str) -> str:
    return f"{member}: {message}" if member and not message.startswith(member) else message


class _Analyser:
    """Analyses one container and everything inside it, adding programs, errors and notes to ``analysis``."""

    def __init__(self, analysis: Analysis, limits: Limits, full: bool) -> None:
        self.analysis = analysis
        self.limits = limits
        self.full = full

    def judge(self, program: Program, source: PickleSource) -> tuple[ProgramJudge, list[Finding]]:
        judge = ProgramJudge(program, self.limits)
        self.analysis.programs.append(program)
        self.analysis.judges.append(judge)
        found = []
        machinery = _loader_machinery(judge, source.vouched) if source.vouched else frozenset()
        for item in fxcode.rejudge(judge, judge.findings()):
            if item.rule in _VOUCHABLE and item.offset in machinery:
                continue
            found.append(item)
        return judge, found

    def container(self, opened: Opened, data: bytes, ctx: Context, prefix: str) -> tuple[str, list[Finding]]:
        """(format, findings) of ``opened`` and everything nested in it."""
        fmt = opened.format
        found = [_anomaly_finding(a, prefix) for a in opened.anomalies]
        self.analysis.errors.extend(_where(prefix, e) for e in opened.errors)
        self.analysis.notes.extend(_where(prefix, n) for n in opened.notes)
        programs: list[Program] = []
        for source in opened.sources:
            member = join_member(prefix, source.member)
            run = _run_source(source, self.limits, member, self.full)
            if source.optional and not any(p.statements for p in run.programs):
                # The unpickler did nothing before it stopped: say so rather than drop the view silently.
                stop = run.programs[0].error if run.programs else None
                where = getattr(stop, "offset", None)
                self.analysis.notes.append(
                    _where(
                        member,
                        f"{source.label or 'pickle view'}: pickle.load stops"
                        + (f" at offset {where}" if where is not None else "")
                        + " having imported and called nothing",
                    )
                )
                continue
            if fmt == "pickle?":
                first = run.programs[0] if run.programs else None
                if first is None or (not first.complete and not first.statements):
                    if ctx.depth == 0:
                        self.analysis.errors.append(UNSUPPORTED)
                    return "unknown", found
                fmt = "pickle"
            if run.legacy:
                fmt = "torch-legacy"
            view = None
            if wants_joblib_view(run.programs):
                from picklewarden.containers import joblib_files  # here: its readers serve joblib files only

                view = joblib_files.joblib_view(source, self.limits)
            if view is not None and view.error is not None:
                self.analysis.errors.append(_where(prefix, view.error))
            if view is not None and view.sources:
                fmt = "joblib"
                found.extend(self.pickle_view_threats(run, view))
                found.extend(_anomaly_finding(a, prefix) for a in view.anomalies)
                for inner in view.sources:
                    inner_run = _run_source(inner, self.limits, member, self.full)
                    if inner.origin is not None:
                        _relocate(inner_run, inner.origin)
                    found.extend(inner_run.findings)
                    self.analysis.errors.extend(inner_run.errors)
                    found.extend(self.programs(inner_run.programs, inner, ctx))
                    programs.extend(inner_run.programs)
                continue
            found.extend(run.findings)
            self.analysis.errors.extend(run.errors)
            found.extend(self.programs(run.programs, source, ctx))
            programs.extend(run.programs)
        for check in opened.checks:
            found.extend(_anomaly_finding(a, prefix) for a in check(programs))
        for child in opened.children:
            child_fmt, child_found = self.child(child, data, ctx, prefix)
            found.extend(child_found)
            if opened.wrapper:
                fmt = f"{fmt}>{child_fmt}"
        return fmt, found

    def pickle_view_threats(self, run: _Run, view: JoblibView) -> list[Finding]:
        """What the stream does when pickle.load (not joblib.load) reads it: joblib's array bytes run as
        opcodes. Only threats past the point where the two readings part are new."""
        out: list[Finding] = []
        vouched = view.sources[0].vouched
        for program in run.programs:
            for item in ProgramJudge(program, self.limits).findings():
                if item.severity < Severity.HIGH or item.offset is None or view.divergence is None:
                    continue
                if item.offset < view.divergence or any(vouches(v, item.symbol) for v in vouched):
                    continue
                out.append(
                    item._replace(
                        rule="PW309",
                        message=f"under pickle.load (joblib.load skips these bytes as array data): {item.message}",
                    )
                )
        return out

    def programs(self, programs: list[Program], source: PickleSource, ctx: Context) -> list[Finding]:
        found: list[Finding] = []
        for program in programs:
            judge, judged = self.judge(program, source)
            seen_through: set[int | None] = set()
            inner = self.payloads(program, judge, source, ctx, seen_through)
            judged = [_seen_through(f, seen_through) for f in judged]
            if program.reader and not source.python:
                from picklewarden.pickle.pymachine import READER

                # A second reading of the same bytes: only what the first did not already report.
                seen = {(f.rule, f.offset, f.symbol) for f in found}
                judged = [
                    f._replace(message=f"under {READER} (joblib.load): {f.message}")
                    for f in judged
                    if (f.rule, f.offset, f.symbol) not in seen
                ]
            found.extend(judged)
            found.extend(inner)
        return found

    def payloads(
        self, program: Program, judge: ProgramJudge, source: PickleSource, ctx: Context, seen_through: set[int | None]
    ) -> list[Finding]:
        """Scan what the program's values hide (handed to deserializers, or merely embedded). The offsets of
        nested loads whose every byte was scanned without error are added to ``seen_through``."""
        found: list[Finding] = []

        def called(call: CallResult) -> str | None:
            target = judge.launderer.called(call)
            return target.symbol if target is not None else None

        payloads = nested.payloads(program, lambda g: judge.knowledge(g)[0].symbol, self.limits, called)
        cap = self.limits.max_nested_payloads
        if len(payloads) > cap:
            message = f"more than {cap} embedded payloads in this pickle; the ones after them were not scanned"
            found.append(finding("PW301", message, member=program.member, offset=payloads[cap].offset))
            del payloads[cap:]
        for payload in payloads:
            inner_ctx = ctx.inside(source.data, program.member + payload.label)
            if payload.as_pickle and inner_ctx.depth <= self.limits.max_nesting_depth:
                opened = Opened("pickle", [PickleSource("", payload.data, Stacking.ONE, file_like=False)])
            else:
                opened = open_bytes(payload.data, self.limits, inner_ctx)
            where = f"{program.member}{payload.label}>{opened.format}"
            how = f"handed to {payload.via}" if payload.handed else "embedded in the pickle"
            found.append(
                finding(
                    "PW308",
                    f"a value {how} decodes ({payload.label}) to a {opened.format} of {len(payload.data)} bytes; "
                    "scanned",
                    member=program.member,
                    offset=payload.offset,
                )
            )
            errors = len(self.analysis.errors)
            inner_fmt, inner = self.container(opened, payload.data, inner_ctx, where)
            found.extend(inner if payload.handed else [_dormant(f) for f in inner])
            if payload.whole and inner_fmt != "unknown" and len(self.analysis.errors) == errors:
                seen_through.add(payload.offset)
        return found

    def child(self, child: Child, data: bytes, ctx: Context, prefix: str) -> tuple[str, list[Finding]]:
        member = join_member(prefix, child.member)
        inner_ctx = ctx.inside(data, child.member)
        opened = open_bytes(child.data, self.limits, inner_ctx)
        fmt, found = self.container(opened, child.data, inner_ctx, member)
        if child.member:
            hint = extension_anomaly(child.member, fmt, _runs_pickles(fmt), member)
            if hint is not None:
                found.append(_anomaly_finding(hint._replace(member=None), member))
            if fmt != "unknown" and not any(n.startswith(f"{member}: ") for n in self.analysis.notes):
                self.analysis.notes.append(f"{member}: {fmt}")
        return fmt, [_dormant(f) for f in found] if child.dormant else found


def _seen_through(item: Finding, offsets: set[int | None]) -> Finding:
    """A nested load whose bytes were all scanned is judged by what they hold (the nested findings): the
    load itself is only noted."""
    if item.rule != "PW103" or item.offset is None or item.offset not in offsets:
        return item
    note = "; its bytes are all in this file and were scanned, so what they hold decides"
    return item._replace(severity=Severity.INFO, message=item.message + note)


def _relocate(run: _Run, origin: OffsetMap) -> None:
    """Put a spliced view's offsets back in the member's coordinates (findings and ``show`` then agree)."""
    for program in run.programs:
        for stmt in program.statements:
            stmt.offset = origin(stmt.offset)
        for call in program.elided:
            call.offset = origin(call.offset)
        program.start = origin(program.start) or 0
        program.end = origin(program.end)
        program.extensions = [(origin(at) or 0, code) for at, code in program.extensions]
        error = program.error
        if isinstance(error, MalformedPickle):
            program.error = MalformedPickle(origin(error.offset) or 0, error.reason)
        elif isinstance(error, LimitExceeded):
            program.error = LimitExceeded(error.resource, error.limit, error.actual, origin(error.offset))
    run.findings = [f._replace(offset=origin(f.offset)) for f in run.findings]


def _runs_pickles(fmt: str) -> bool:
    inner = fmt.rsplit(">", 1)[-1]
    return inner in ("pickle", "torch-zip", "torchscript", "torch-legacy", "torch-legacy-tar", "joblib", "npy-object")


_DORMANT = "(dormant: not run while this file loads) "


def _dormant(item: Finding) -> Finding:
    """A finding inside data no loader of this file unpickles: threats keep their weight, the rest is info."""
    if item.rule == "PW308" or item.message.startswith(_DORMANT):
        return item
    level = item.severity if item.severity >= Severity.HIGH else Severity.INFO
    return item._replace(severity=level, message=f"{_DORMANT}{item.message}")


def analyse_opened(
    opened: Opened,
    path: str,
    limits: Limits,
    *,
    data: bytes | None = None,
    context: Context | None = None,
    full: bool = False,
) -> Analysis:
    """Analyse an opened file. ``data`` (its bytes) and ``context`` (the one it was opened with) let nested
    containers be followed with the file's shared byte budget. ``full`` records every statement of every
    program (for ``show``); by default calls of known-safe reconstructors with inert arguments are only
    counted (:attr:`~picklewarden.pickle.program.Program.elided`), which changes no finding."""
    analysis = Analysis(path, opened.format)
    ctx = context if context is not None else Context.root(limits, path)
    fmt, found = _Analyser(analysis, limits, full).container(opened, data if data is not None else b"", ctx, "")
    analysis.format = fmt
    analysis.findings.extend(found)
    hint = extension_anomaly(path, fmt, bool(analysis.programs) and _runs_pickles(fmt))
    if hint is not None:
        analysis.findings.append(_anomaly_finding(hint, ""))
    return analysis


def analyse_bytes(
    data: bytes, path: str = "<bytes>", limits: Limits = DEFAULT_LIMITS, *, full: bool = False
) -> Analysis:
    """Analyse a whole file's bytes. Bad input gives errors and findings; an exception out of here other
    than :class:`~picklewarden.errors.ScanError` is a scanner bug (the fuzz targets look for them).
    ``full``: see :func:`analyse_opened`."""
    if len(data) > limits.max_file_bytes:
        return _too_large(path, len(data), limits)
    ctx = Context.root(limits, path)
    # The directory, programs and findings all stay alive until the report is made: collections during
    # the analysis free nothing but walk everything (a fifth of the time on a 100k-tensor checkpoint).
    with gc_paused():
        return analyse_opened(open_bytes(data, limits, ctx), path, limits, data=data, context=ctx, full=full)


def _too_large(path: str, size: int, limits: Limits) -> Analysis:
    analysis = Analysis(path, "unknown", errors=["file too large to analyse"])
    analysis.findings.append(finding("PW301", f"file of {size} bytes exceeds the {limits.max_file_bytes}-byte limit"))
    return analysis


def analyse_path(path: str, limits: Limits = DEFAULT_LIMITS, *, full: bool = False) -> Analysis:
    """Analyse one file. Never raises for a bad file: problems become errors or findings. ``full``: see
    :func:`analyse_opened`."""
    analysis = analyse_path_if(path, limits, None, full=full)
    assert analysis is not None  # nothing to refuse it
    return analysis


HEAD_BYTES = 64 * 1024
"""How much of a file :func:`analyse_path_if` shows its ``wanted`` test."""
SMALL_FILE_BYTES = 1 << 20
"""Files up to this size are read whole rather than mapped (within the 1 MiB every scan may read)."""


def internal_error(exc: Exception) -> str:
    return f"internal error while scanning: {type(exc).__name__}: {exc}"


def analyse_path_if(
    path: str, limits: Limits, wanted: Callable[[bytes], bool] | None, *, full: bool = False
) -> Analysis | None:
    """:func:`analyse_path`, or None when ``wanted`` refuses the file's first :data:`HEAD_BYTES` bytes (a
    directory walk's test of whether a file is a model at all). The test reads the handle the analysis
    then maps, so a walk opens each file once."""
    try:
        with open_regular(path) as handle:
            fd = handle.fileno()
            size = os.fstat(fd).st_size
            # A small file is read whole: one read costs less than mapping it and faulting its pages in.
            whole = os.pread(fd, size, 0) if size <= SMALL_FILE_BYTES else None
            if wanted is not None and not wanted(
                whole[:HEAD_BYTES] if whole is not None else os.pread(fd, HEAD_BYTES, 0)
            ):
                return None
            if size > limits.max_file_bytes:
                return _too_large(path, size, limits)
            if size == 0:
                return Analysis(path, "unknown", errors=["empty file"])
            if whole is not None:
                try:
                    return analyse_bytes(whole, path, limits, full=full)
                except Exception as exc:  # noqa: BLE001 - a scanner bug must not crash the caller
                    return Analysis(path, "unknown", errors=[internal_error(exc)])
            # mmap: only the pages the readers touch (ZIP directory, pickle members) are read from disk.
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                if hasattr(mmap, "MADV_RANDOM"):
                    # No read-ahead: the readers jump between directory, headers and pickles, and read-ahead
                    # around each jump would pull in megabytes of tensor data; bulk reads ask for their pages.
                    mapped.madvise(mmap.MADV_RANDOM)
                view: bytes = mapped  # type: ignore[assignment]
                try:
                    return analyse_bytes(view, path, limits, full=full)
                except Exception as exc:  # noqa: BLE001 - reported below, once the map can be closed
                    # The traceback pins views of the map; closing it first would mask the real error.
                    failure = internal_error(exc)
            return Analysis(path, "unknown", errors=[failure])
    except OSError as exc:
        return Analysis(path, "unknown", errors=[f"cannot read: {exc.strerror or exc}"])
