"""Where the gateway keeps what it learned: one small interface, SQLite and PostgreSQL behind it.

Three tables. ``scans``: one judgement of one file's bytes (keyed by SHA-256 and the *judge key*, which
changes with the picklewarden build, the policy and the limits, so a new version or policy re-judges on
next use). ``blobs``: which upstream ETag names which cached bytes. ``repo_files``: what the proxy served
from each repository, for the repo pages. The SQL is shared; the two backends differ only in how they
connect and in their parameter marker. Each call is one short statement or transaction; calls are
serialised on one connection per store (enough for a gateway whose time goes to transfers and scans).
"""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class ScanRecord:
    """One judgement of one file."""

    id: str
    sha256: str
    judge_key: str
    """Hash of the scanner build, policy, limits and file extension the judgement was made under."""
    name: str
    """The file name it was first judged under (``repo:path`` for proxied files)."""
    size: int
    verdict: str
    report: str
    """The :class:`~picklewarden.model.FileReport`, losslessly encoded (:func:`picklewarden.cache.encode`)."""
    program: str
    """The decompiled program listing with flagged lines marked (as ``picklewarden show`` prints it)."""
    source: str
    """``proxy``, ``upload`` or ``url``."""
    private: bool
    """Fetched with the client's credentials: shown only to holders of the gateway token."""
    created: float


@dataclass(frozen=True)
class RepoFile:
    """One file the proxy served (or refused) from a repository."""

    repo_type: str
    repo: str
    path: str
    commit: str
    sha256: str
    size: int
    verdict: str
    scan_id: str
    code: str
    """Why this file brings code a ``trust_remote_code`` load would import, or ``''``."""
    private: bool
    seen: float


class Store(Protocol):
    """The storage interface the gateway uses; see :class:`SqlStore` for the two implementations."""

    def find_scan(self, sha256: str, judge_key: str) -> ScanRecord | None: ...
    def add_scan(self, record: ScanRecord) -> ScanRecord: ...
    def get_scan(self, scan_id: str) -> ScanRecord | None: ...
    def scans_of(self, sha256: str) -> list[ScanRecord]: ...
    def recent_scans(self, limit: int, *, private: bool) -> list[ScanRecord]: ...
    def blob_for(self, etag: str) -> tuple[str, int] | None: ...
    def add_blob(self, etag: str, sha256: str, size: int) -> None: ...
    def note_repo_file(self, entry: RepoFile) -> None: ...
    def repo_files(self, repo_type: str, repo: str, *, private: bool) -> list[RepoFile]: ...
    def close(self) -> None: ...


_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS scans (
        id TEXT PRIMARY KEY, sha256 TEXT NOT NULL, judge_key TEXT NOT NULL, name TEXT NOT NULL,
        size BIGINT NOT NULL, verdict TEXT NOT NULL, report TEXT NOT NULL, program TEXT NOT NULL,
        source TEXT NOT NULL, private INTEGER NOT NULL, created DOUBLE PRECISION NOT NULL,
        UNIQUE (sha256, judge_key))""",
    "CREATE INDEX IF NOT EXISTS scans_created ON scans (created)",
    "CREATE TABLE IF NOT EXISTS blobs (etag TEXT PRIMARY KEY, sha256 TEXT NOT NULL, size BIGINT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS repo_files (
        repo_type TEXT NOT NULL, repo TEXT NOT NULL, path TEXT NOT NULL, commit_sha TEXT NOT NULL,
        sha256 TEXT NOT NULL, size BIGINT NOT NULL, verdict TEXT NOT NULL, scan_id TEXT NOT NULL,
        code TEXT NOT NULL, private INTEGER NOT NULL, seen DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (repo_type, repo, path))""",
)
_SCAN_COLUMNS = "id, sha256, judge_key, name, size, verdict, report, program, source, private, created"
_REPO_COLUMNS = "repo_type, repo, path, commit_sha, sha256, size, verdict, scan_id, code, private, seen"


def _values(record: ScanRecord | RepoFile) -> tuple[Any, ...]:
    """The record's fields in column order; flags as 0/1, which both databases store in INTEGER columns."""
    return tuple(int(v) if isinstance(v, bool) else v for v in dataclasses.astuple(record))


def _marks(record: ScanRecord | RepoFile) -> str:
    return "(" + ", ".join("?" * len(dataclasses.fields(record))) + ")"


def new_scan_id() -> str:
    return uuid.uuid4().hex


def _scan(row: Sequence[Any]) -> ScanRecord:
    id_, sha256, key, name, size, verdict, report, program, source, private, created = row
    return ScanRecord(
        id_, sha256, key, name, int(size), verdict, report, program, source, bool(private), float(created)
    )


def _repo_file(row: Sequence[Any]) -> RepoFile:
    repo_type, repo, path, commit, sha256, size, verdict, scan_id, code, private, seen = row
    return RepoFile(
        repo_type, repo, path, commit, sha256, int(size), verdict, scan_id, code, bool(private), float(seen)
    )


class SqlStore:
    """:class:`Store` over a DB-API connection. Statements are written with ``?`` markers."""

    def __init__(self, connection: Any, marker: str) -> None:
        self._db = connection
        self._marker = marker
        self._lock = threading.Lock()
        for statement in _SCHEMA:
            self._run(statement)

    def _run(self, sql: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]:
        with self._lock:
            cursor = self._db.cursor()
            try:
                cursor.execute(sql.replace("?", self._marker), tuple(params))
                rows = cursor.fetchall() if cursor.description is not None else []
                self._db.commit()
                return list(rows)
            except BaseException:
                self._db.rollback()
                raise
            finally:
                cursor.close()

    def find_scan(self, sha256: str, judge_key: str) -> ScanRecord | None:
        rows = self._run(f"SELECT {_SCAN_COLUMNS} FROM scans WHERE sha256 = ? AND judge_key = ?", (sha256, judge_key))
        return _scan(rows[0]) if rows else None

    def add_scan(self, record: ScanRecord) -> ScanRecord:
        """Store ``record``; when another replica judged the same bytes first, theirs is kept and returned
        (made public, with ``record``'s name and report, if it was private and ``record`` is not)."""
        self._run(
            f"INSERT INTO scans ({_SCAN_COLUMNS}) VALUES {_marks(record)} ON CONFLICT (sha256, judge_key) DO NOTHING",
            _values(record),
        )
        if not record.private:
            # Bytes first judged for a private repository, now fetched publicly: the judgement becomes public,
            # under the public name (the private repository's name must not show).
            self._run(
                "UPDATE scans SET private = 0, name = ?, report = ?, program = ? "
                "WHERE sha256 = ? AND judge_key = ? AND private = 1",
                (record.name, record.report, record.program, record.sha256, record.judge_key),
            )
        stored = self.find_scan(record.sha256, record.judge_key)
        assert stored is not None
        return stored

    def get_scan(self, scan_id: str) -> ScanRecord | None:
        rows = self._run(f"SELECT {_SCAN_COLUMNS} FROM scans WHERE id = ?", (scan_id,))
        return _scan(rows[0]) if rows else None

    def scans_of(self, sha256: str) -> list[ScanRecord]:
        rows = self._run(f"SELECT {_SCAN_COLUMNS} FROM scans WHERE sha256 = ? ORDER BY created DESC", (sha256,))
        return [_scan(r) for r in rows]

    def recent_scans(self, limit: int, *, private: bool) -> list[ScanRecord]:
        where = "" if private else "WHERE private = 0 "
        rows = self._run(f"SELECT {_SCAN_COLUMNS} FROM scans {where}ORDER BY created DESC LIMIT ?", (limit,))
        return [_scan(r) for r in rows]

    def blob_for(self, etag: str) -> tuple[str, int] | None:
        rows = self._run("SELECT sha256, size FROM blobs WHERE etag = ?", (etag,))
        return (str(rows[0][0]), int(rows[0][1])) if rows else None

    def add_blob(self, etag: str, sha256: str, size: int) -> None:
        self._run(
            "INSERT INTO blobs (etag, sha256, size) VALUES (?, ?, ?) ON CONFLICT (etag) DO NOTHING",
            (etag, sha256, size),
        )

    def note_repo_file(self, entry: RepoFile) -> None:
        self._run(
            f"INSERT INTO repo_files ({_REPO_COLUMNS}) VALUES {_marks(entry)} "
            "ON CONFLICT (repo_type, repo, path) DO UPDATE SET commit_sha = excluded.commit_sha, "
            "sha256 = excluded.sha256, size = excluded.size, verdict = excluded.verdict, "
            "scan_id = excluded.scan_id, code = excluded.code, private = excluded.private, seen = excluded.seen",
            _values(entry),
        )

    def repo_files(self, repo_type: str, repo: str, *, private: bool) -> list[RepoFile]:
        where = "" if private else " AND private = 0"
        rows = self._run(
            f"SELECT {_REPO_COLUMNS} FROM repo_files WHERE repo_type = ? AND repo = ?{where} ORDER BY path",
            (repo_type, repo),
        )
        return [_repo_file(r) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def open_sqlite(path: Path) -> SqlStore:
    """The embedded default: a SQLite file (WAL mode, so readers never wait for the writer)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, check_same_thread=False, timeout=30)
    connection.execute("PRAGMA journal_mode=WAL")
    return SqlStore(connection, "?")


def open_postgres(dsn: str) -> SqlStore:
    """A PostgreSQL store shared by several gateway replicas (psycopg 3)."""
    import psycopg  # type: ignore[import-not-found,import-untyped,unused-ignore]

    return SqlStore(psycopg.connect(dsn), "%s")


def open_store(db: str | None, data_dir: Path) -> SqlStore:
    """``db`` is None (SQLite under ``data_dir``), ``sqlite:///PATH`` or ``postgresql://...``."""
    if db is None:
        return open_sqlite(data_dir / "picklewarden.db")
    if db.startswith("sqlite:///"):
        return open_sqlite(Path(db.removeprefix("sqlite:///")))
    if db.startswith(("postgresql://", "postgres://")):
        return open_postgres(db)
    raise ValueError(f"unsupported --db URL {db!r}: use sqlite:///PATH or postgresql://...")


def now() -> float:
    return time.time()
