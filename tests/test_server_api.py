"""The gateway's REST API and pages, over real HTTP: uploads, tokens, limits, OpenAPI, SARIF."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema
import pytest

from picklewarden.policy.config import Policy
from picklewarden.report.program import program_excerpt, render_program
from picklewarden.scanner import analyse_bytes
from picklewarden.server.app import create_app
from picklewarden.server.config import GatewayConfig
from tests.corpus import ALL
from tests.server_support import FakeHub, ServerThread

ADMIN = {"Authorization": "Bearer gw-admin"}


def _sample(sample_id: str, tmp: Path) -> bytes:
    (sample,) = [s for s in ALL if s.id == sample_id]
    return sample.make(tmp / "canary")


@pytest.fixture(scope="module")
def evil(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    # A plain pickle calling os.system (proved to fire by tests/test_corpus_fires.py): no torch needed.
    return _sample("p4-os-system", tmp_path_factory.mktemp("evil"))


@pytest.fixture
def hub(evil: bytes) -> FakeHub:
    hub = FakeHub()
    hub.add("mallory/pickles", {"model.pkl": evil})
    return hub


@pytest.fixture
def gw(tmp_path: Path, hub: FakeHub) -> Iterator[ServerThread]:
    with ServerThread(hub.app()) as upstream:
        config = GatewayConfig(
            upstream=upstream.url, data_dir=tmp_path / "gw", token="gw-admin", max_upload=1 << 20,
            webhook=f"{upstream.url}/hook",
        )  # fmt: skip
        with ServerThread(create_app(config)) as server:
            server.hub_url = upstream.url  # type: ignore[attr-defined]
            yield server


def test_healthz_and_openapi(gw: ServerThread) -> None:
    assert httpx.get(f"{gw.url}/healthz").json()["status"] == "ok"
    spec = httpx.get(f"{gw.url}/openapi.json").json()
    for path in (
        "/healthz",
        "/api/v1/scans",
        "/api/v1/scans/{scan_id}",
        "/api/v1/files/{sha256}",
        "/api/v1/repos/{repo}",
    ):
        assert path in spec["paths"], path
    content = spec["paths"]["/api/v1/scans"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= content.keys()


def test_upload_is_judged_malicious(gw: ServerThread, evil: bytes) -> None:
    response = httpx.post(f"{gw.url}/api/v1/scans", files={"file": ("model.pkl", evil)}, headers=ADMIN)
    assert response.status_code == 200, response.text
    scan = response.json()
    assert scan["verdict"] == "malicious" and scan["refused"] is True
    # The report is the `scan --format json` document, checked against its published schema.
    published = json.loads((Path(__file__).parent.parent / "docs" / "json-schema-v1.json").read_text())
    jsonschema.validate(scan["report"], published)
    assert scan["report"]["files"][0]["findings"][0]["severity"] == "critical"
    again = httpx.get(f"{gw.url}/api/v1/scans/{scan['id']}").json()
    assert again["report"] == scan["report"]
    by_hash = httpx.get(f"{gw.url}/api/v1/files/{scan['sha256']}").json()
    assert [s["id"] for s in by_hash] == [scan["id"]]
    sarif = httpx.get(f"{gw.url}/api/v1/scans/{scan['id']}/sarif").json()
    assert sarif["version"] == "2.1.0" and sarif["runs"][0]["results"]
    page = httpx.get(scan["report_url"]).text
    assert "malicious" in page and "system" in page
    assert "model.pkl" in httpx.get(gw.url + "/").text


def test_upload_needs_the_token_and_respects_the_size_limit(gw: ServerThread, evil: bytes) -> None:
    url = f"{gw.url}/api/v1/scans"
    assert httpx.post(url, files={"file": ("model.pkl", evil)}).status_code == 401
    bad = {"Authorization": "Bearer nope"}
    assert httpx.post(url, files={"file": ("model.pkl", evil)}, headers=bad).status_code == 401
    big = httpx.post(url, files={"file": ("big.pkl", b"\0" * ((1 << 20) + 1))}, headers=ADMIN)
    assert big.status_code == 413
    assert not [p for p in (Path(gw.server.config.app.state.gateway.blobs.root)).rglob("*") if p.is_file()]


def test_an_upload_too_large_by_its_length_is_refused_before_its_body(gw: ServerThread) -> None:
    host, port = gw.url.removeprefix("http://").split(":")
    head = (
        f"POST /api/v1/scans HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer gw-admin\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 10000000000\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(head.encode())  # and no body: the answer must not wait for 10 GB
        assert conn.recv(4096).startswith(b"HTTP/1.1 413")
    chunked = httpx.post(
        f"{gw.url}/api/v1/scans",
        content=iter([b"--b\r\n"]),
        headers={**ADMIN, "Content-Type": "multipart/form-data; boundary=b"},
    )
    assert chunked.status_code == 411


def test_scan_by_url(gw: ServerThread) -> None:
    hub_url = gw.hub_url  # type: ignore[attr-defined]
    url = f"{hub_url}/mallory/pickles/resolve/main/model.pkl"
    response = httpx.post(f"{gw.url}/api/v1/scans", json={"url": url}, headers=ADMIN, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["verdict"] == "malicious" and response.json()["source"] == "url"
    assert httpx.post(f"{gw.url}/api/v1/scans", json={"url": "file:///etc/passwd"}, headers=ADMIN).status_code == 422


def test_uploads_are_off_without_a_token(tmp_path: Path, evil: bytes) -> None:
    config = GatewayConfig(upstream="http://127.0.0.1:9", data_dir=tmp_path / "gw")
    with ServerThread(create_app(config)) as server:
        response = httpx.post(f"{server.url}/api/v1/scans", files={"file": ("m.pkl", evil)}, headers=ADMIN)
        assert response.status_code == 403


def test_unknown_things_are_404(gw: ServerThread) -> None:
    assert httpx.get(f"{gw.url}/api/v1/scans/nope").status_code == 404
    assert httpx.get(f"{gw.url}/ui/scans/nope").status_code == 404
    assert httpx.get(f"{gw.url}/api/v1/repos/nobody/nothing").status_code == 404
    assert httpx.get(f"{gw.url}/api/v1/files/{'0' * 64}").status_code == 404


def test_webhook_fires_once_on_a_new_malicious_verdict(gw: ServerThread, hub: FakeHub, evil: bytes) -> None:
    url = f"{gw.url}/api/v1/scans"
    first = httpx.post(url, files={"file": ("a.pkl", evil)}, headers=ADMIN).json()
    httpx.post(url, files={"file": ("b.pkl", evil)}, headers=ADMIN)  # the same bytes again: no new verdict
    httpx.post(url, files={"file": ("ok.pkl", b"\x80\x04K\x01.")}, headers=ADMIN)  # safe: no hook
    deadline = time.monotonic() + 10
    while not hub.hooks and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    assert len(hub.hooks) == 1
    assert hub.hooks[0]["scan_id"] == first["id"] and hub.hooks[0]["report"]["verdict"] == "malicious"


def test_a_download_left_by_a_crash_is_swept_at_start(tmp_path: Path) -> None:
    stale = tmp_path / "gw" / "blobs" / "tmp" / "part-crashed"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a file")
    create_app(GatewayConfig(upstream="http://127.0.0.1:9", data_dir=tmp_path / "gw"))
    assert not stale.exists()


def _reduce_pickle(calls: list[tuple[str, str]]) -> bytes:
    """A protocol-2 pickle of a list of ``module.name()`` calls (assembled, so nothing is imported)."""
    body = b"".join(b"c%s\n%s\n)R" % (m.encode(), n.encode()) + b"a" for m, n in calls)
    return b"\x80\x02]" + body + b"."


def test_long_program_listings_keep_their_evidence() -> None:
    calls = [("collections", "OrderedDict")] * 10_000
    calls[7000] = ("os", "system")
    analysis = analyse_bytes(_reduce_pickle(calls), "f.pkl")
    short = program_excerpt(analysis, Policy(), limit=400, context=3)
    lines = short.splitlines()
    assert len(lines) < 200
    assert lines[0].startswith("# f.pkl:") and lines[-1].startswith("  ") and "result = [" in lines[-1]
    flagged = [i for i, line in enumerate(lines) if line.startswith("!!")]
    assert len(flagged) == 1 and "system()" in lines[flagged[0]] and lines[flagged[0]].endswith("# PW100")
    # the flagged statement keeps three neighbours either side, and the gaps say so
    assert lines[flagged[0] - 4].startswith("# ... ") and lines[flagged[0] + 4].startswith("# ... ")
    assert not any(line.startswith("# ... ") for line in lines[flagged[0] - 3 : flagged[0] + 4])
    whole = [line for line in render_program(analysis, Policy(), width=400).splitlines() if line.startswith("!!")]
    assert [line.rstrip() for line in whole] == [lines[flagged[0]]]


def test_short_program_listings_are_whole() -> None:
    analysis = analyse_bytes(_reduce_pickle([("collections", "OrderedDict")] * 3), "f.pkl")
    listing = program_excerpt(analysis, Policy(), limit=400)
    assert "not shown" not in listing
    assert listing.splitlines()[2:] == render_program(analysis, Policy(), width=400).splitlines()[2:]
