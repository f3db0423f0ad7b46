"""The REST API (``/healthz``, ``/api/v1/...``), documented by FastAPI's OpenAPI at ``/openapi.json``.

Reports are the ``scan --format json`` document (schema version 1) of the one file judged. Uploads and
private results need the gateway token (``Authorization: Bearer TOKEN``); without a configured token,
uploads are disabled and private results are never shown.
"""

from __future__ import annotations

import hmac
from typing import Any

import httpx
from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from picklewarden import __version__
from picklewarden.model import Report
from picklewarden.report import json as json_report
from picklewarden.report import sarif
from picklewarden.server.gateway import REPO_PREFIXES, Gateway, report_of
from picklewarden.server.storage import RepoFile, ScanRecord

_SCAN_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"url": {"type": "string", "format": "uri"}},
                    "required": ["url"],
                }
            },
        },
    }
}


class ScanOut(BaseModel):
    id: str
    sha256: str
    name: str
    size: int
    verdict: str = Field(description="safe, error, suspicious, malicious, or skipped (not a model format)")
    refused: bool = Field(description="Whether the proxy withholds these bytes under the gateway's policy")
    source: str
    created: float
    report_url: str
    report: dict[str, Any] = Field(description="The `picklewarden scan --format json` document for this file")


class RepoOut(BaseModel):
    repo_type: str
    repo: str
    files: list[RepoFile]
    brings_code: bool


def is_admin(gateway: Gateway, request: Request) -> bool:
    token = gateway.config.token
    given = request.headers.get("authorization", "")
    return token is not None and hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


def scan_out(gateway: Gateway, request: Request, record: ScanRecord) -> ScanOut:
    document = json_report.document(Report((report_of(record),)))
    url = str(request.url_for("scan_page", scan_id=record.id))
    return ScanOut(
        id=record.id, sha256=record.sha256, name=record.name, size=record.size, verdict=record.verdict,
        refused=gateway.refused(record), source=record.source, created=record.created, report_url=url,
        report=document,
    )  # fmt: skip


def visible(gateway: Gateway, request: Request, record: ScanRecord | None) -> ScanRecord:
    if record is None or (record.private and not is_admin(gateway, request)):
        raise HTTPException(404, "no such scan")
    return record


def router(gateway: Gateway) -> APIRouter:
    api = APIRouter()

    @api.get("/healthz", tags=["service"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @api.post("/api/v1/scans", tags=["scans"], response_model=ScanOut, openapi_extra=_SCAN_BODY)
    async def create_scan(request: Request) -> ScanOut:
        """Scan an uploaded file (multipart field ``file``) or a remote object (JSON ``{"url": ...}``)."""
        if gateway.config.token is None:
            raise HTTPException(403, "uploads are disabled: start the gateway with --token-file")
        if not is_admin(gateway, request):
            raise HTTPException(401, "a valid gateway token is required", headers={"WWW-Authenticate": "Bearer"})
        if request.headers.get("content-type", "").startswith("application/json"):
            body = await request.json()
            url = body.get("url") if isinstance(body, dict) else None
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise HTTPException(422, 'expected {"url": "http(s)://..."}')
            record = await _scan_url(gateway, url)
        else:
            record = await _scan_upload(gateway, request)
        return scan_out(gateway, request, record)

    @api.get("/api/v1/scans/{scan_id}", tags=["scans"], response_model=ScanOut)
    async def get_scan(scan_id: str, request: Request) -> ScanOut:
        return scan_out(gateway, request, visible(gateway, request, gateway.store.get_scan(scan_id)))

    @api.get("/api/v1/scans/{scan_id}/sarif", tags=["scans"])
    async def get_sarif(scan_id: str, request: Request) -> dict[str, Any]:
        """The scan as SARIF 2.1.0 (as ``scan --format sarif`` writes it)."""
        record = visible(gateway, request, gateway.store.get_scan(scan_id))
        return sarif.document(Report((report_of(record),)))

    @api.get("/api/v1/files/{sha256}", tags=["scans"], response_model=list[ScanOut])
    async def get_file(sha256: str, request: Request) -> list[ScanOut]:
        """Every judgement of these bytes (one per picklewarden build and policy), newest first."""
        admin = is_admin(gateway, request)
        records = [r for r in gateway.store.scans_of(sha256.lower()) if admin or not r.private]
        if not records:
            raise HTTPException(404, "no scan of these bytes")
        return [scan_out(gateway, request, r) for r in records]

    @api.get("/api/v1/repos/{repo:path}", tags=["repos"], response_model=RepoOut)
    async def get_repo(repo: str, request: Request, repo_type: str = "model") -> RepoOut:
        """The verdicts of the files the proxy served from a repository (``repo_type``: model, dataset, space)."""
        if repo_type not in REPO_PREFIXES:
            raise HTTPException(422, "repo_type must be model, dataset or space")
        rows = gateway.store.repo_files(repo_type, repo, private=is_admin(gateway, request))
        if not rows:
            raise HTTPException(404, "no file of this repository went through the gateway")
        return RepoOut(repo_type=repo_type, repo=repo, files=rows, brings_code=any(r.code for r in rows))

    return api


_MULTIPART_SLACK = 64 << 10
"""Bytes of multipart framing (boundaries, part headers) allowed on top of ``max_upload``."""


async def _scan_upload(gateway: Gateway, request: Request) -> ScanRecord:
    # The form parser spools the whole body to disk before the loop below sees a byte, so the declared
    # length is checked first (the server never reads past it); a body without one is refused.
    length = request.headers.get("content-length", "")
    if not length.isdigit():
        raise HTTPException(411, "an upload needs a Content-Length")
    if int(length) > gateway.config.max_upload + _MULTIPART_SLACK:
        raise HTTPException(413, f"upload larger than {gateway.config.max_upload} bytes")
    form = await request.form(max_files=1, max_fields=4)
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise HTTPException(422, "expected a multipart field 'file'")
    incoming = gateway.start_upload()
    try:
        while chunk := await upload.read(1 << 20):
            incoming.write(chunk)
            if incoming.size > gateway.config.max_upload:
                raise HTTPException(413, f"upload larger than {gateway.config.max_upload} bytes")
    except BaseException:
        incoming.discard()
        raise
    finally:
        await form.close()
    return await gateway.finish_upload(incoming, upload.filename or "upload", "upload")


async def _scan_url(gateway: Gateway, url: str) -> ScanRecord:
    incoming = gateway.start_upload()
    try:
        async with gateway.upstream.client.stream("GET", url, follow_redirects=True) as response:
            if response.status_code >= 400:
                raise HTTPException(502, f"{url} answered {response.status_code}")
            async for chunk in response.aiter_bytes():
                incoming.write(chunk)
                if incoming.size > gateway.config.max_upload:
                    raise HTTPException(413, f"object larger than {gateway.config.max_upload} bytes")
    except httpx.HTTPError as exc:
        incoming.discard()
        raise HTTPException(502, f"could not fetch {url}: {type(exc).__name__}") from exc
    except BaseException:
        incoming.discard()
        raise
    name = httpx.URL(url).path.rsplit("/", 1)[-1] or "object"
    return await gateway.finish_upload(incoming, name, "url")
