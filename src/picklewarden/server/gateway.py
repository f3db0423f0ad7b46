"""The gateway's core, apart from HTTP: fetch a hub file once, verify it, judge it once, decide.

Access is the hub's business: every proxied request first asks the hub about the file *with the client's
own credentials* (:meth:`Upstream.describe`), so a client that may not read a private file gets the hub's
401/404 and never the cached bytes, although the bytes themselves are stored once. Concurrent requests for
one file share one download and one scan (single flight, within this process; replicas share results
through the store and at worst fetch a file once each).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

from picklewarden.cache import decode, encode
from picklewarden.model import FileReport
from picklewarden.server.blobs import BlobMismatch, BlobStore, Incoming
from picklewarden.server.config import GatewayConfig
from picklewarden.server.judge import SKIPPED, brings_code, judge_file, judge_key
from picklewarden.server.storage import RepoFile, ScanRecord, Store, new_scan_id, now, open_store
from picklewarden.server.upstream import RemoteFile, Upstream, UpstreamError

log = logging.getLogger("picklewarden.server")
T = TypeVar("T")

REPO_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}


@dataclass(frozen=True)
class Served:
    """A proxied file and the decision about it."""

    remote: RemoteFile
    sha256: str
    path: Path
    size: int
    scan: ScanRecord
    refused: bool


def report_of(record: ScanRecord) -> FileReport:
    return decode(json.loads(record.report))


def _renamed(record: ScanRecord, label: str) -> ScanRecord:
    """``record`` as a public judgement named ``label``: the name it was first judged under goes everywhere."""
    report = report_of(record)._replace(path=label)
    program = record.program.replace(record.name, label)
    return dataclasses.replace(record, name=label, report=json.dumps(encode(report)), program=program, private=False)


class Gateway:
    """The proxy's logic. Store calls on the request path run in worker threads: a PostgreSQL round trip
    must not stall every other request on the event loop."""

    def __init__(self, config: GatewayConfig, store: Store | None = None) -> None:
        self.config = config
        # Whoever can write here decides what is served (a forged result or blob): keep it to ourselves.
        config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.store: Store = store if store is not None else open_store(config.db, config.data_dir)
        self.blobs = BlobStore(config.data_dir / "blobs")
        self.blobs.sweep()
        self.upstream = Upstream(
            config.upstream_base, connect_timeout=config.connect_timeout, read_timeout=config.read_timeout
        )
        self._flights: dict[tuple[str, ...], asyncio.Future[Any]] = {}
        self._scans = asyncio.Semaphore(max(1, os.cpu_count() or 1))
        self._public_commits: dict[tuple[str, str, str], bool] = {}
        self._background: set[asyncio.Future[None]] = set()
        self.scans_run = 0
        """Judgements made by this process (not found in the store): what single flight keeps to one."""

    async def close(self) -> None:
        await self.upstream.close()
        self.store.close()

    async def _once(self, key: tuple[str, ...], make: Callable[[], Awaitable[T]]) -> T:
        """Run ``make`` once for all concurrent callers with the same ``key``. A caller that goes away does
        not cancel the work the others wait for (``shield``)."""
        future = self._flights.get(key)
        if future is None:
            future = asyncio.ensure_future(make())
            self._flights[key] = future
            future.add_done_callback(lambda _: self._flights.pop(key, None))
        result: T = await asyncio.shield(future)
        return result

    # -- the proxy -------------------------------------------------------------------------------------
    async def fetch(self, repo_type: str, repo: str, revision: str, path: str, auth: str | None) -> Served:
        """Describe, cache, judge and decide one hub file. Raises :class:`UpstreamError`."""
        prefix = REPO_PREFIXES[repo_type]
        remote = await self.upstream.describe(prefix, repo, revision, path, auth)
        sha256, size = await self._once(("blob", remote.etag), lambda: self._ensure_blob(remote, auth))
        blob = self.blobs.path(sha256)
        private = auth is not None and not await self._public(prefix, repo, remote.commit, path)
        scan = await self.judge(sha256, size, path, label=f"{repo}:{path}", source="proxy", private=private)
        await asyncio.to_thread(
            self.store.note_repo_file,
            RepoFile(repo_type, repo, path, remote.commit, sha256, size, scan.verdict, scan.id,
                     brings_code(path, blob), private, now())
        )  # fmt: skip
        return Served(remote, sha256, blob, size, scan, self.refused(scan))

    async def _public(self, prefix: str, repo: str, commit: str, path: str) -> bool:
        """Whether anyone may read the repository at ``commit`` (asked anonymously, once per commit): most
        clients send a token even for public repositories, whose judgements should still be public."""
        key = (prefix, repo, commit)
        if key not in self._public_commits:
            try:
                await self.upstream.describe(prefix, repo, commit, path, None)
                self._public_commits[key] = True
            except UpstreamError as exc:
                if exc.status >= 500:
                    return False  # unknown for now: private until the hub can say otherwise
                self._public_commits[key] = False
        return self._public_commits[key]

    def refused(self, scan: ScanRecord) -> bool:
        if scan.verdict == SKIPPED:
            return False
        return self.config.refused(report_of(scan).verdict)

    async def _ensure_blob(self, remote: RemoteFile, auth: str | None) -> tuple[str, int]:
        known = await asyncio.to_thread(self.store.blob_for, remote.etag)
        if known is not None and self.blobs.has(known[0]):
            return known
        incoming = self.blobs.start()
        try:
            async for chunk in self.upstream.download(remote, auth):
                incoming.write(chunk)
        except BaseException:  # a broken or cancelled transfer leaves nothing behind
            incoming.discard()
            raise
        sha256 = self._commit(incoming, remote)
        await asyncio.to_thread(self.store.add_blob, remote.etag, sha256, incoming.size)
        return sha256, incoming.size

    def _commit(self, incoming: Incoming, remote: RemoteFile) -> str:
        try:
            return self.blobs.commit(incoming, size=remote.size, etag=remote.etag)
        except BlobMismatch as exc:
            raise UpstreamError(502, f"upstream body refused: {exc}") from exc

    # -- judging ---------------------------------------------------------------------------------------
    async def judge(self, sha256: str, size: int, name: str, *, label: str, source: str, private: bool) -> ScanRecord:
        """The judgement of the cached blob ``sha256`` under the current build and policy; made at most once
        per (bytes, judge key), here and, through the store, across restarts and replicas."""
        key = judge_key(name, self.config.policy, self.config.limits)
        found = await asyncio.to_thread(self.store.find_scan, sha256, key)
        if found is not None:
            if found.private and not private:
                found = await asyncio.to_thread(self.store.add_scan, _renamed(found, label))
            return found
        return await self._once(
            ("scan", sha256, key), lambda: self._judge(sha256, size, name, key, label, source, private)
        )

    async def _judge(
        self, sha256: str, size: int, name: str, key: str, label: str, source: str, private: bool
    ) -> ScanRecord:
        # Judged meanwhile (a flight that ended between the caller's look-up and this one)? Then reuse it.
        done = await asyncio.to_thread(self.store.find_scan, sha256, key)
        if done is not None:
            return done
        async with self._scans:
            self.scans_run += 1
            judgement = await asyncio.to_thread(
                judge_file, self.blobs.path(sha256), name, self.config.policy, self.config.limits
            )
        report = judgement.report._replace(path=label)
        record = ScanRecord(
            new_scan_id(), sha256, key, label, size, judgement.verdict, json.dumps(encode(report)),
            judgement.program.replace(name, label) if judgement.program else "", source, private, now(),
        )  # fmt: skip
        stored = await asyncio.to_thread(self.store.add_scan, record)
        if stored.id == record.id and stored.verdict == "malicious" and self.config.webhook:
            task = asyncio.ensure_future(self._notify(stored))
            self._background.add(task)  # held until done: the loop keeps only weak references to tasks
            task.add_done_callback(self._background.discard)
        return stored

    async def _notify(self, record: ScanRecord) -> None:
        """Tell the operator's webhook about a new malicious verdict; a failing hook is logged, not fatal."""
        from picklewarden.report.json import file_dict

        assert self.config.webhook is not None
        payload = {"event": "malicious", "scan_id": record.id, "sha256": record.sha256, "name": record.name,
                   "report": file_dict(report_of(record))}  # fmt: skip
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                await client.post(self.config.webhook, json=payload)
        except httpx.HTTPError as exc:
            log.warning("webhook %s failed: %s", self.config.webhook, exc)

    # -- uploads -----------------------------------------------------------------------------------------
    def start_upload(self) -> Incoming:
        return self.blobs.start()

    async def finish_upload(self, incoming: Incoming, name: str, source: str) -> ScanRecord:
        sha256 = self.blobs.commit(incoming, size=None, etag="")
        return await self.judge(sha256, incoming.size, name, label=name, source=source, private=False)
