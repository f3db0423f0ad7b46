"""Scan many files on every core, streaming each file's report as soon as it is ready.

:func:`scan_parallel` is :func:`picklewarden.scan` for large trees: the same targets (directory walks with
the same links, globs and Hugging Face cache naming), the same per-file reports, but files are analysed in
worker processes (the analysis is CPU-bound Python, so threads would share one core) and reports come back
in the order they finish. Memory stays bounded whatever the number of files: targets are walked lazily,
at most ``16 * jobs`` files are in flight, and only a bounded number of finished reports is remembered
(to answer a second path to an already analysed file).

A file that kills its worker (a crash or an out-of-memory kill inside the C unpickler) does not stop the
scan: the files that were in flight are retried one at a time, and the one that kills a worker alone is
reported as an error, never as clean.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable, Iterable, Iterator

from picklewarden._typing import TYPE_CHECKING
from picklewarden.limits import DEFAULT_LIMITS, Limits
from picklewarden.model import FileReport

if TYPE_CHECKING:
    import concurrent.futures

    from picklewarden.cache import ResultCache
    from picklewarden.policy.config import Policy
    from picklewarden.walk import Target

Progress = Callable[[FileReport], None]

_IN_FLIGHT_PER_JOB = 2
"""Batches queued per worker: enough to keep every worker busy between two results, few enough that a
million-file tree does not sit in the pool's queue."""
_BATCH = 96
"""The most files found in a directory walk sent to a worker at once: a small checkpoint is analysed in well
under a millisecond, and each round trip costs the parent about as much (8 per batch spent twice the parent's
CPU; on 1,000 small checkpoints and two workers, 96 per batch ran 4 % faster than 32)."""
_BATCH_MIN = 8
"""The fewest: batches shrink as the walk's end comes into view (guided self-scheduling), so that no worker
is left finishing a big batch while the others are idle: 100 files in batches of 96 kept one worker idle."""
_LOOKAHEAD_BATCHES = 4
"""How far ahead of the pool the walk is read, in largest batches per worker: far enough to see its end."""
_BATCH_BYTES = 16 * 1024**2
"""A batch is sent early once its files hold this many bytes: big files travel in small batches, so one
worker is not left with several of them at the end."""
_REMEMBERED = 4096
"""Finished reports kept to answer another path to the same file (a link, a shared Hugging Face blob)."""
WORKER_DIED = "the scanner's worker process died while analysing this file (a crash or an out-of-memory kill)"


def default_jobs() -> int:
    """The CPUs this process may run on (its affinity mask, which containers and ``taskset`` narrow), or
    ``os.cpu_count()`` where that is unknown."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class _Settings:
    """What every worker needs besides the file (sent with each task; all of it is small). A plain class:
    a NamedTuple's string annotations cost a compile each at import, in every one-file scan."""

    __slots__ = ("cache", "limits", "policy", "skip_non_models")

    def __init__(self, limits: Limits, policy: Policy | None, skip_non_models: bool, cache: ResultCache | None) -> None:
        self.limits, self.policy, self.skip_non_models, self.cache = limits, policy, skip_non_models, cache


def scan_parallel(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    *,
    jobs: int | None = None,
    limits: Limits = DEFAULT_LIMITS,
    cache: ResultCache | None = None,
    progress: Progress | None = None,
    policy: Policy | None = None,
    skip_non_models: bool = False,
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
    ordered: bool = False,
    hold_last: bool = False,
) -> Iterator[FileReport]:
    """Scan files and directories with ``jobs`` worker processes, yielding each file's report as it finishes.

    The arguments after ``progress`` are those of :func:`picklewarden.scan`, with the same meaning.
    ``jobs`` defaults to :func:`default_jobs`; ``jobs=1`` analyses in this process (no workers are
    started), in walk order. ``cache`` answers files whose result is already known (see
    :mod:`picklewarden.cache`). ``progress`` is called with each report just before it is yielded.
    Reports are those :func:`picklewarden.scan` returns, in completion order, or with ``ordered`` in
    the order :func:`picklewarden.scan` gives them (a report waits for those before it; workers run at
    most a bounded window ahead of the oldest unfinished file, so memory stays bounded). Collect them into
    a :class:`~picklewarden.model.Report` for the summary and exit code.
    ``hold_last`` (with ``jobs=1``) keeps the analysis of the last file alive after the scan, for a process
    that then exits without freeing anything (the CLI): freeing the analysis of a 500k-tensor state dict,
    about ten million objects, takes 0.2 s. Each file's analysis is freed before the next one starts.
    """
    from picklewarden import walk

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    count = default_jobs() if jobs is None else jobs
    if count < 1:
        raise ValueError(f"jobs must be at least 1, got {count}")
    settings = _Settings(limits, policy, skip_non_models, cache)
    targets = walk.iter_targets((os.fspath(p) for p in paths), tuple(include), tuple(exclude))
    window = _Window(count * _IN_FLIGHT_PER_JOB * _BATCH * 4) if ordered and count > 1 else None
    if count == 1:
        numbered = _in_process(targets, settings, hold_last)
    else:
        numbered = _in_pool(targets, settings, count, window)
    for report in _reorder(numbered, window) if window is not None else (r for _, r in numbered):
        if progress is not None:
            progress(report)
        yield report


class _Window:
    """How far ahead of the oldest unfinished file the pool may pull targets (for ordered results)."""

    __slots__ = ("head", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.head = 0
        """Sequence number of the next report to hand out."""


def _reorder(numbered: Iterator[tuple[int, FileReport]], window: _Window) -> Iterator[FileReport]:
    waiting: dict[int, FileReport] = {}
    for seq, report in numbered:
        waiting[seq] = report
        while window.head in waiting:
            yield waiting.pop(window.head)
            window.head += 1


def render_jsonl(report: FileReport) -> str:
    """One file's report as one line of JSON (see :func:`picklewarden.report.json.render_line`)."""
    from picklewarden.report.json import render_line

    return render_line(report)


# -- one file ---------------------------------------------------------------------------------------------


def _quick(target: Target) -> FileReport | None:
    """The report of a target that needs no analysis (a walk error, a skipped link, a missing file)."""
    path = target.path
    if target.error:
        return FileReport(path, "unknown", errors=(target.error,))
    if target.skip:
        return FileReport(path, "unknown", skipped=True, notes=(target.skip,))
    if target.explicit and not os.path.exists(path) and not os.path.islink(path):
        return FileReport(path, "unknown", errors=("no such file or directory",))
    return None


def _analyse(path: str, explicit: bool, settings: _Settings, hold: bool = False) -> FileReport:
    """One file, as :func:`picklewarden.filescan.scan_path` reports it (through the cache when there is one).
    Runs in the workers: module-level so that it pickles by reference. With ``hold``, its analysis is kept
    in :data:`_held` until the next file's analysis starts."""
    explicit = explicit and not settings.skip_non_models
    _held.clear()  # the previous file's analysis goes first: memory stays that of one file
    if settings.cache is not None:
        return settings.cache.scan_path(path, settings.limits, explicit=explicit, policy=settings.policy)
    from picklewarden import filescan

    if not hold:
        return filescan.scan_path(path, settings.limits, explicit=explicit, policy=settings.policy)
    report, analysis = filescan.scan_file(path, settings.limits, explicit=explicit, policy=settings.policy)
    _held.append(analysis)
    return report


_held: list[object] = []
"""The analysis of the last file scanned in this process, with ``scan_parallel(hold_last=True)``."""


def _located(report: FileReport, target: Target) -> FileReport:
    if target.location:
        return report._replace(location=target.location, revision=target.revision)
    return report


def _identity(target: Target) -> tuple[int, int] | None:
    """(device, inode) of a file found in a directory: a second path to it is not analysed again."""
    return _stat(target)[0]


def _stat(target: Target) -> tuple[tuple[int, int] | None, int]:
    """:func:`_identity` and the size of a file found in a directory ((None, 0) for a named one)."""
    if target.explicit:
        return None, 0
    try:
        stat = os.stat(target.path)
    except OSError:
        return None, 0
    return (stat.st_dev, stat.st_ino), stat.st_size


class _Remembered:
    """Reports of recently finished files by identity, forgetting the oldest beyond a bound."""

    def __init__(self, bound: int = _REMEMBERED) -> None:
        self._reports: collections.OrderedDict[tuple[int, int], FileReport] = collections.OrderedDict()
        self._bound = bound

    def get(self, key: tuple[int, int] | None, path: str) -> FileReport | None:
        found = self._reports.get(key) if key is not None else None
        return None if found is None else found._replace(path=path)

    def add(self, key: tuple[int, int] | None, report: FileReport) -> None:
        if key is None or report.skipped:
            return
        self._reports[key] = report
        if len(self._reports) > self._bound:
            self._reports.popitem(last=False)


# -- in this process ----------------------------------------------------------------------------------------


def _in_process(targets: Iterable[Target], settings: _Settings, hold: bool) -> Iterator[tuple[int, FileReport]]:
    remembered = _Remembered()
    for seq, target in enumerate(targets):
        report = _quick(target)
        if report is None:
            key = _identity(target)
            report = remembered.get(key, target.path) if not _policy_ignores(settings, target.path) else None
            if report is None:
                report = _analyse(target.path, target.explicit, settings, hold)
                remembered.add(key, report)
        yield seq, _located(report, target)


def _policy_ignores(settings: _Settings, path: str) -> bool:
    # A remembered report must not stand in for a path the policy ignores (it is reported as skipped).
    policy = settings.policy
    if policy is None or not policy.ignore:
        return False
    from picklewarden.policy.apply import ignored

    return ignored(policy, path) is not None


# -- in worker processes ------------------------------------------------------------------------------------


class _Task:
    """One file handed to the pool (or answered from another path to the same file)."""

    __slots__ = ("key", "seq", "suspect", "target", "waiting")

    def __init__(self, seq: int, target: Target, key: tuple[int, int] | None) -> None:
        self.seq = seq
        """Position of the target in the walk."""
        self.target = target
        self.key = key
        self.suspect = False
        """In flight when a worker died: retried alone, so that only the file that kills a worker is blamed."""
        self.waiting: list[tuple[int, Target]] | None = None
        """Other paths to the same file, answered with this task's report."""


def _analyse_batch(batch: list[tuple[str, bool]], settings: _Settings) -> list[FileReport]:
    """Several files in one round trip: a small model is analysed in about a millisecond, about what
    sending a task to a worker and its result back costs the parent."""
    return [_analyse(path, explicit, settings) for path, explicit in batch]


def _in_pool(
    targets: Iterable[Target], settings: _Settings, jobs: int, window: _Window | None
) -> Iterator[tuple[int, FileReport]]:
    # Imported here: a one-file scan (jobs=1) never pays for multiprocessing's imports.
    import concurrent.futures
    from concurrent.futures.process import BrokenProcessPool

    remembered = _Remembered()
    pending = _Lookahead(enumerate(targets), jobs * _LOOKAHEAD_BATCHES * _BATCH, window)
    pulled = 0
    suspects: collections.deque[_Task] = collections.deque()
    running: dict[concurrent.futures.Future[list[FileReport]], list[_Task]] = {}
    by_key: dict[tuple[int, int], _Task] = {}
    limit = jobs * _IN_FLIGHT_PER_JOB
    exhausted = False
    # Workers are forked where the platform allows: importing the analysis here first means each worker
    # starts with it loaded instead of spending ~0.1 s importing it again.
    import picklewarden.filescan  # noqa: F401

    pool = concurrent.futures.ProcessPoolExecutor(max_workers=jobs)

    def submit(batch: list[_Task]) -> None:
        work = [(task.target.path, task.target.explicit) for task in batch]
        running[pool.submit(_analyse_batch, work, settings)] = batch

    try:
        while True:
            ready: list[tuple[int, FileReport]] = []
            # Suspects run alone: nothing else is submitted while one is in flight.
            alone = any(task.suspect for batch in running.values() for task in batch)
            if not alone and suspects and not running:
                submit([suspects.popleft()])
                alone = True
            batch: list[_Task] = []
            batch_bytes = 0
            cut = pending.batch_size(jobs)
            while not alone and not suspects and not exhausted and len(running) < limit and len(ready) < _BATCH * limit:
                if window is not None and pulled - window.head >= window.size:
                    break  # the oldest unfinished file holds the ordered output back: do not run further ahead
                item = pending.take()
                if item is None:
                    exhausted = True
                    break
                seq, target = item
                pulled = seq + 1
                quick = _quick(target)
                if quick is not None:
                    ready.append((seq, _located(quick, target)))
                    continue
                key, size = _stat(target)
                ignored = _policy_ignores(settings, target.path)
                known = None if ignored else remembered.get(key, target.path)
                if known is not None:
                    ready.append((seq, _located(known, target)))
                    continue
                twin = by_key.get(key) if key is not None and not ignored else None
                if twin is not None:
                    twin.waiting = [*(twin.waiting or []), (seq, target)]
                    continue
                task = _Task(seq, target, key)
                if key is not None and not ignored:
                    by_key[key] = task
                batch.append(task)
                batch_bytes += size
                # Named files go alone (they are few and may be large); files found in a walk are batched.
                if target.explicit or len(batch) >= cut or batch_bytes >= _BATCH_BYTES:
                    submit(batch)
                    batch = []
                    batch_bytes = 0
                    cut = pending.batch_size(jobs)
            if batch:
                submit(batch)
            yield from ready
            if not running:
                if exhausted and not suspects:
                    return
                continue
            done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            broken = False
            for future in done:
                tasks = running.pop(future)
                try:
                    reports = future.result()
                except BrokenProcessPool:
                    broken = True
                    if len(tasks) == 1 and tasks[0].suspect:
                        reports = [FileReport(tasks[0].target.path, "unknown", errors=(WORKER_DIED,))]
                    else:
                        _suspect(tasks, suspects)
                        continue
                for task, report in zip(tasks, reports, strict=True):
                    yield from _finish(task, report, remembered, by_key)
            if broken:
                # Every task still running was lost with the pool: all of them become suspects.
                for tasks in running.values():
                    _suspect(tasks, suspects)
                running.clear()
                pool.shutdown(wait=True, cancel_futures=True)
                pool = concurrent.futures.ProcessPoolExecutor(max_workers=jobs)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class _Lookahead:
    """The walk, read up to ``size`` targets ahead of the pool, so that batches can shrink near its end.

    Only files found in a walk are read ahead (a named file goes alone, in a batch of its own), and never past
    the window of ordered output."""

    __slots__ = ("ahead", "ended", "size", "source", "window")

    def __init__(self, source: Iterator[tuple[int, Target]], size: int, window: _Window | None = None) -> None:
        self.source, self.size, self.window = source, size, window
        self.ahead: collections.deque[tuple[int, Target]] = collections.deque()
        self.ended = False

    def _fill(self) -> None:
        window = self.window
        while not self.ended and len(self.ahead) < self.size:
            if self.ahead:
                seq, target = self.ahead[-1]  # seq + 1 targets have been read from the walk
                if target.explicit or (window is not None and seq + 1 - window.head >= window.size):
                    return
            item = next(self.source, None)
            if item is None:
                self.ended = True
            else:
                self.ahead.append(item)

    def take(self) -> tuple[int, Target] | None:
        """The next target with its position in the walk, or None at the walk's end."""
        self._fill()
        return self.ahead.popleft() if self.ahead else None

    def batch_size(self, jobs: int) -> int:
        """The largest batch until the walk's end is in view; then a share of what is left (half of each
        worker's part: guided self-scheduling), never below the smallest batch."""
        self._fill()
        if not self.ended:
            return _BATCH
        return max(_BATCH_MIN, min(_BATCH, -(-len(self.ahead) // (2 * jobs))))


def _suspect(tasks: list[_Task], suspects: collections.deque[_Task]) -> None:
    for task in tasks:
        task.suspect = True
        suspects.append(task)


def _finish(
    task: _Task, report: FileReport, remembered: _Remembered, by_key: dict[tuple[int, int], _Task]
) -> Iterator[tuple[int, FileReport]]:
    if task.key is not None and by_key.get(task.key) is task:
        del by_key[task.key]
        remembered.add(task.key, report)
    yield task.seq, _located(report, task.target)
    for seq, twin in task.waiting or ():
        yield seq, _located(report._replace(path=twin.path), twin)
