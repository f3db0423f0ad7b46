"""The gateway's result store: one contract, checked on SQLite and on a real PostgreSQL server.

PostgreSQL comes from ``PICKLEWARDEN_TEST_PG_DSN`` (``postgresql://user:pw@host:port/db``; ``.ci/run``
starts a server and sets it). In CI a missing server is a failure, not a skip: the replica story depends
on it. Each test works in a schema of its own, dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from picklewarden.server.app import create_app
from picklewarden.server.config import GatewayConfig
from picklewarden.server.storage import RepoFile, ScanRecord, SqlStore, open_store
from tests.corpus import ALL
from tests.server_support import ServerThread

PG_ENV = "PICKLEWARDEN_TEST_PG_DSN"


@pytest.fixture
def pg_dsn() -> Iterator[str]:
    """A DSN whose search path is a fresh schema on the test server."""
    dsn = os.environ.get(PG_ENV)
    if not dsn:
        if os.environ.get("CI"):
            pytest.fail(f"{PG_ENV} is not set: CI must start PostgreSQL (see .ci/run)")
        pytest.skip(f"{PG_ENV} not set (set it to a PostgreSQL server to run these tests locally)")
    import psycopg

    schema = f"pw_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    joiner = "&" if "?" in dsn else "?"
    try:
        yield f"{dsn}{joiner}options={quote(f'-csearch_path={schema}')}"
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    if request.param == "sqlite":
        opened = open_store(None, tmp_path)
        assert (tmp_path / "picklewarden.db").is_file()
    else:
        opened = open_store(request.getfixturevalue("pg_dsn"), tmp_path)
    yield opened
    opened.close()


def _record(sha: str, key: str = "k1", *, private: bool = False, created: float = 1.0) -> ScanRecord:
    return ScanRecord(uuid.uuid4().hex, sha, key, f"file-{sha[:4]}.pt", 10, "safe", "{}", "", "proxy", private, created)


def test_scans(store: SqlStore) -> None:
    first = store.add_scan(_record("a" * 64))
    assert store.find_scan("a" * 64, "k1") == first
    assert store.get_scan(first.id) == first
    # The same bytes judged again under the same key (another replica got there first): theirs is kept.
    assert store.add_scan(_record("a" * 64, created=2.0)) == first
    newer = store.add_scan(_record("a" * 64, "k2", created=3.0))
    assert [r.id for r in store.scans_of("a" * 64)] == [newer.id, first.id]
    assert store.find_scan("a" * 64, "k3") is None and store.get_scan("missing") is None


def test_private_scans_are_hidden_until_fetched_publicly(store: SqlStore) -> None:
    secret = store.add_scan(_record("b" * 64, private=True, created=5.0))
    public = store.add_scan(_record("c" * 64, created=4.0))
    assert [r.id for r in store.recent_scans(10, private=False)] == [public.id]
    assert [r.id for r in store.recent_scans(10, private=True)] == [secret.id, public.id]
    public_copy = ScanRecord(
        "x",
        "b" * 64,
        "k1",
        "org/public:w.pt",
        10,
        "safe",
        '{"path": "org/public:w.pt"}',
        "# org/public:w.pt",
        "proxy",
        False,
        9.0,
    )
    again = store.add_scan(public_copy)
    assert again.id == secret.id and again.private is False
    # The private repository's name is gone from the public record.
    assert (again.name, again.report, again.program) == (
        "org/public:w.pt",
        '{"path": "org/public:w.pt"}',
        "# org/public:w.pt",
    )


def test_blobs_and_repo_files(store: SqlStore) -> None:
    assert store.blob_for("etag1") is None
    store.add_blob("etag1", "d" * 64, 42)
    store.add_blob("etag1", "e" * 64, 1)  # an ETag names one content for good
    assert store.blob_for("etag1") == ("d" * 64, 42)
    row = RepoFile("model", "org/name", "model.bin", "c0ffee", "d" * 64, 42, "safe", "s1", "", False, 1.0)
    store.note_repo_file(row)
    store.note_repo_file(
        RepoFile(
            "model", "org/name", "modeling.py", "c0ffee", "f" * 64, 9, "skipped", "s2", "Python source", False, 1.0
        )
    )
    store.note_repo_file(
        RepoFile("model", "org/name", "secret.bin", "c0ffee", "f" * 64, 9, "safe", "s3", "", True, 1.0)
    )
    updated = RepoFile("model", "org/name", "model.bin", "beef", "d" * 64, 42, "malicious", "s4", "", False, 2.0)
    store.note_repo_file(updated)
    public = store.repo_files("model", "org/name", private=False)
    assert [f.path for f in public] == ["model.bin", "modeling.py"]
    assert public[0] == updated
    assert len(store.repo_files("model", "org/name", private=True)) == 3
    assert store.repo_files("dataset", "org/name", private=True) == []


def test_replicas_share_results_through_postgresql(pg_dsn: str, tmp_path: Path) -> None:
    """Two gateways (own caches, one PostgreSQL): a file judged by one is not judged again by the other."""
    (sample,) = [s for s in ALL if s.id == "p4-os-system"]
    evil = sample.make(tmp_path / "canary")
    admin = {"Authorization": "Bearer t"}
    ids = []
    for replica in ("a", "b"):
        config = GatewayConfig(upstream="http://127.0.0.1:9", data_dir=tmp_path / replica, db=pg_dsn, token="t")
        with ServerThread(create_app(config)) as server:
            scan = httpx.post(f"{server.url}/api/v1/scans", files={"file": ("m.pkl", evil)}, headers=admin).json()
            assert scan["verdict"] == "malicious"
            ids.append(scan["id"])
            assert server.server.config.app.state.gateway.scans_run == (1 if replica == "a" else 0)
            assert httpx.get(f"{server.url}/api/v1/scans/{ids[0]}").json()["verdict"] == "malicious"
    assert ids[0] == ids[1]
    assert not (tmp_path / "a" / "picklewarden.db").exists()


def test_unsupported_db_url(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unsupported --db"):
        open_store("mysql://x", tmp_path)
