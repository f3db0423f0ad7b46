"""Scan a manifest of paths and URLs across a Ray cluster (the optional extra ``picklewarden[ray]``).

The driver reads the manifest lazily, cuts it into shards of ``shard_size`` entries, and keeps at most
``max_in_flight`` shards queued on the cluster; each shard is one Ray task that scans its entries with the
same code as a local scan (:func:`picklewarden.filescan.scan_path` for paths, :func:`picklewarden.remote.scan_url`
for URLs), the same limits, policy and cache, and returns the reports. Reports are yielded as shards finish,
so a manifest of millions of objects streams through bounded memory on the driver.

Every node needs picklewarden installed (or ``runtime_env={"pip": ["picklewarden[ray,remote]"]}``), every
path in the manifest must be readable at the same path on every node (a shared filesystem), and a shared
cache must be a directory every node can write (or each node keeps its own). See ``docs/scale.md``.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from picklewarden._typing import TYPE_CHECKING
from picklewarden.limits import DEFAULT_LIMITS, Limits
from picklewarden.model import FileReport

if TYPE_CHECKING:
    from typing import Any

    from picklewarden.cache import ResultCache
    from picklewarden.policy.config import Policy

Progress = Callable[[FileReport], None]
TASK_FAILED = "the Ray task scanning this entry failed (a worker crash, an out-of-memory kill or a lost node)"


@dataclass(frozen=True)
class Entry:
    """One object to scan: a local path or a URL."""

    target: str
    explicit: bool
    """Listed by name (scanned whatever it is) rather than found under a prefix (skipped unless a model)."""


@dataclass(frozen=True)
class _Settings:
    limits: Limits
    policy: Policy | None
    cache: ResultCache | None
    skip_non_models: bool
    storage_options: Mapping[str, Any] | None


def read_manifest(source: str, storage_options: Mapping[str, Any] | None = None) -> Iterator[Entry]:
    """The entries of a manifest, lazily.

    ``source`` is a manifest file (local or a URL; one path or URL per line; blank lines and lines
    starting with ``#`` are ignored; entries are explicit), or a prefix: a local directory (walked as a
    local scan walks it) or a URL ending in ``/`` (every object under it; entries are not explicit, so
    objects that are not model files are skipped).
    """
    from picklewarden.remote import is_url

    if not is_url(source):
        if os.path.isdir(source):
            from picklewarden import walk

            for target in walk.iter_targets([source]):
                yield Entry(target.path, target.explicit)
            return
        with open(source, encoding="utf-8") as handle:
            yield from _lines(handle)
        return
    fs, path = _fs(source, storage_options)
    if source.endswith("/") or fs.isdir(path):
        protocol = source.split("://", 1)[0]
        for found in sorted(fs.find(path)):
            yield Entry(found if "://" in found else f"{protocol}://{found}", False)
        return
    with fs.open(path, "rt", encoding="utf-8") as handle:
        yield from _lines(handle)


def _lines(lines: Iterable[str]) -> Iterator[Entry]:
    for line in lines:
        text = line.strip()
        if text and not text.startswith("#"):
            yield Entry(text, True)


def _fs(url: str, storage_options: Mapping[str, Any] | None) -> tuple[Any, str]:
    fsspec: Any = importlib.import_module("fsspec")  # untyped optional dependency
    fs, path = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
    return fs, str(path)


def scan_shard(entries: Sequence[Entry], settings: _Settings) -> list[FileReport]:
    """Scan one shard in this process (what each Ray task runs)."""
    return [_scan_entry(entry, settings) for entry in entries]


def _scan_entry(entry: Entry, settings: _Settings) -> FileReport:
    from picklewarden.remote import is_url

    explicit = entry.explicit and not settings.skip_non_models
    if is_url(entry.target):
        from picklewarden.remote import scan_url

        return scan_url(
            entry.target,
            settings.limits,
            policy=settings.policy,
            storage_options=settings.storage_options,
            cache=settings.cache,
            explicit=explicit,
        )
    if entry.explicit and not os.path.exists(entry.target) and not os.path.islink(entry.target):
        return FileReport(entry.target, "unknown", errors=("no such file or directory",))
    if settings.cache is not None:
        return settings.cache.scan_path(entry.target, settings.limits, explicit=explicit, policy=settings.policy)
    from picklewarden.filescan import scan_path

    return scan_path(entry.target, settings.limits, explicit=explicit, policy=settings.policy)


def scan_manifest(
    manifest: str | Iterable[Entry],
    *,
    address: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
    cache: ResultCache | None = None,
    policy: Policy | None = None,
    skip_non_models: bool = False,
    storage_options: Mapping[str, Any] | None = None,
    shard_size: int = 64,
    max_in_flight: int | None = None,
    runtime_env: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
) -> Iterator[FileReport]:
    """Scan every entry of ``manifest`` (see :func:`read_manifest`, or the entries themselves) on Ray,
    yielding reports as shards finish.

    ``address`` is the cluster to join (``"auto"``, ``"ray://head:10001"``); None joins the cluster this
    process is already connected to, or starts a local one (stopped again at the end). ``max_in_flight``
    shards are queued at once (default: twice the cluster's CPUs). Raises ImportError without Ray.
    """
    if shard_size < 1:
        raise ValueError("shard_size must be at least 1")
    ray: Any = importlib.import_module("ray")  # untyped optional dependency
    started = False
    if not ray.is_initialized():
        ray.init(address=address, runtime_env=dict(runtime_env) if runtime_env else None, log_to_driver=False)
        started = address is None
    try:
        entries = read_manifest(manifest, storage_options) if isinstance(manifest, str) else iter(manifest)
        settings = _Settings(limits, policy, cache, skip_non_models, storage_options)
        limit = max_in_flight or max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
        task = ray.remote(scan_shard)
        shared = ray.put(settings)
        running: dict[Any, list[Entry]] = {}
        retry: list[Entry] = []
        exhausted = False
        while True:
            while retry and len(running) < limit:
                # Entries of a shard whose task failed, one task each, so only the one that fails is blamed.
                alone = [retry.pop()]
                running[task.remote(alone, shared)] = alone
            while not retry and not exhausted and len(running) < limit:
                shard = _take(entries, shard_size)
                if not shard:
                    exhausted = True
                    break
                running[task.remote(shard, shared)] = shard
            if not running:
                return
            done, _ = ray.wait(list(running), num_returns=1)
            shard = running.pop(done[0])
            try:
                reports = ray.get(done[0])
            except Exception as exc:  # noqa: BLE001 - a task that dies (after Ray's own retries) is one bad entry
                if len(shard) > 1:
                    retry.extend(reversed(shard))
                    continue
                reports = [FileReport(shard[0].target, "unknown", errors=(f"{TASK_FAILED}: {type(exc).__name__}",))]
            for report in reports:
                if progress is not None:
                    progress(report)
                yield report
    finally:
        if started:
            ray.shutdown()


def _take(entries: Iterator[Entry], count: int) -> list[Entry]:
    shard = []
    for entry in entries:
        shard.append(entry)
        if len(shard) >= count:
            break
    return shard
