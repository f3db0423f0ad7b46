"""The Hugging Face routes: ``resolve`` is served from the scanned cache, ``/api/...`` passes through.

Paths are split on the *raw* request path, so a revision sent URL-encoded (``refs%2Fpr%2F1``, as
``huggingface_hub`` sends it) stays one segment. Segments that could climb out of a repository (``..``,
``.``, empty, backslashes, NUL) are refused with 400 before anything reaches the hub or the cache.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.responses import FileResponse, JSONResponse

from picklewarden.report.json import finding_dict
from picklewarden.server.gateway import Gateway, Served, report_of
from picklewarden.server.upstream import UpstreamError, upstream_failure

_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authenticate",
     "proxy-authorization", "content-encoding", "content-length", "host"}
)  # fmt: skip
_METADATA_MAX = 64 << 20
"""Largest metadata answer relayed (tree listings of huge repos are paginated well below this)."""
_REQUEST_MAX = 1 << 20
"""Largest request body relayed to the hub (a paths-info query for thousands of files stays well below)."""
VERDICT_HEADER = "X-Picklewarden-Verdict"


@dataclass(frozen=True)
class Resolve:
    repo_type: str
    repo: str
    revision: str
    path: str


class BadPath(ValueError):
    pass


def _segments(raw_path: bytes, *, allow_empty: bool = False) -> list[str]:
    parts = [unquote(p) for p in raw_path.decode("latin-1").split("?", 1)[0].split("/")[1:]]
    for part in parts:
        if part in (".", "..") or (part == "" and not allow_empty) or "\\" in part or "\0" in part:
            raise BadPath(f"refused path segment {part!r}")
    return parts


def parse_resolve(raw_path: bytes) -> Resolve | None:
    """``[datasets/|spaces/]{repo}/resolve/{revision}/{path}`` with a one- or two-part repo id, else None."""
    parts = raw_path.decode("latin-1").split("?", 1)[0].split("/")[1:]
    repo_type = "model"
    if parts and parts[0] in ("datasets", "spaces"):
        repo_type, parts = parts[0][:-1], parts[1:]
    for width in (1, 2):
        if len(parts) > width + 2 and parts[width] == "resolve":
            segments = _segments(("/" + "/".join(parts)).encode("latin-1"))
            repo = "/".join(segments[:width])
            return Resolve(repo_type, repo, segments[width + 1], "/".join(segments[width + 2 :]))
    return None


def header_text(text: str) -> str:
    """``text`` as a header value: one line, ASCII (names from hostile files can hold anything), bounded."""
    return text.encode("ascii", "backslashreplace").decode().replace("\r", " ").replace("\n", " ")[:2000]


def refusal(served: Served, report_url: str) -> dict[str, Any]:
    report = report_of(served.scan)
    worst = report.findings[0] if report.findings else None
    reason = f"{worst.rule}: {worst.message}" if worst else "; ".join(report.errors) or served.scan.verdict
    return {
        "error": f"picklewarden refused {served.scan.name}: {served.scan.verdict} ({reason}). Evidence: {report_url}",
        "file": served.scan.name,
        "verdict": served.scan.verdict,
        "findings": [finding_dict(f) for f in report.findings],
        "errors": list(report.errors),
        "report_url": report_url,
        "sha256": served.sha256,
    }


def _file_headers(served: Served, report_url: str) -> dict[str, str]:
    return {
        "X-Repo-Commit": served.remote.commit,
        "ETag": f'"{served.remote.etag}"',
        VERDICT_HEADER: served.scan.verdict,
        "X-Picklewarden-Report": report_url,
        "Accept-Ranges": "bytes",
    }


async def resolve(gateway: Gateway, request: Request, target: Resolve) -> Response:
    auth = request.headers.get("authorization")
    try:
        served = await gateway.fetch(target.repo_type, target.repo, target.revision, target.path, auth)
    except UpstreamError as exc:
        body = {"error": f"picklewarden gateway: {exc.message}"}
        headers = {**exc.headers, "X-Error-Message": exc.headers.get("X-Error-Message", body["error"])}
        return JSONResponse(body, exc.status, headers={k: header_text(v) for k, v in headers.items()})
    report_url = str(request.url_for("scan_page", scan_id=served.scan.id))
    headers = _file_headers(served, report_url)
    if request.method == "HEAD":
        # A refused file still answers HEAD with 200 and its verdict: huggingface_hub turns any error on its
        # HEAD into a misleading "check your connection" error, while the 403 of the GET that follows reaches
        # the user verbatim (hf_hub_download, from_pretrained and the CLI all print it). No byte is served.
        return Response(status_code=200, headers={**headers, "Content-Length": str(served.size)})
    if served.refused:
        body = refusal(served, report_url)
        headers["X-Error-Message"] = header_text(body["error"])
        return JSONResponse(body, 403, headers=headers)
    return FileResponse(served.path, headers=headers, media_type="application/octet-stream")


async def passthrough(gateway: Gateway, request: Request) -> Response:
    """Relay a metadata request to the hub, with the client's credentials, minus anything that would let
    the client fetch file bytes around the gateway (Xet hashes and Xet headers)."""
    url = gateway.upstream.base + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
    headers["Accept-Encoding"] = "identity"
    body = b""
    async for chunk in request.stream():  # metadata queries (paths-info) are small; uploads go elsewhere
        body += chunk
        if len(body) > _REQUEST_MAX:
            return JSONResponse({"error": f"request body larger than {_REQUEST_MAX} bytes"}, 413)
    try:
        response, content = await _bounded(gateway, request.method, url, headers, body)
    except UpstreamError as exc:
        return JSONResponse({"error": f"picklewarden gateway: {exc.message}"}, exc.status)
    if b"xetHash" in content and "json" in response.headers.get("content-type", ""):
        content = json.dumps(_without_xet(json.loads(content))).encode()
    own = str(request.base_url).rstrip("/")
    out = {}
    for key, value in response.headers.items():
        low = key.lower()
        if low in _HOP or low.startswith("x-xet") or (low == "link" and "xet" in value):
            continue
        out[key] = value.replace(gateway.upstream.base, own) if low in ("link", "location") else value
    status = 502 if response.status_code >= 500 else response.status_code
    return Response(content, status, headers=out)


async def _bounded(
    gateway: Gateway, method: str, url: str, headers: dict[str, str], body: bytes
) -> tuple[httpx.Response, bytes]:
    """The hub's answer, read whole but never more than :data:`_METADATA_MAX` bytes."""
    client = gateway.upstream.client
    try:
        async with client.stream(method, url, headers=headers, content=body) as response:
            chunks, size = [], 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > _METADATA_MAX:
                    raise UpstreamError(502, f"upstream metadata answer larger than {_METADATA_MAX} bytes")
                chunks.append(chunk)
            return response, b"".join(chunks)
    except httpx.HTTPError as exc:
        raise upstream_failure(exc) from exc


def _without_xet(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_xet(v) for k, v in value.items() if k != "xetHash"}
    if isinstance(value, list):
        return [_without_xet(v) for v in value]
    return value


def register(app: FastAPI, gateway: Gateway) -> None:
    """Add the hub routes; they match anything, so they must be registered last."""

    @app.api_route("/{rest:path}", methods=["GET", "HEAD", "POST"], include_in_schema=False)
    async def hub(request: Request, rest: str) -> Response:
        try:
            target = parse_resolve(request.scope.get("raw_path") or request.url.path.encode())
            if target is None:
                _segments(request.scope.get("raw_path") or b"/", allow_empty=True)
        except BadPath as exc:
            return JSONResponse({"error": str(exc)}, 400, headers={"X-Error-Message": str(exc)})
        if target is not None and request.method in ("GET", "HEAD"):
            return await resolve(gateway, request, target)
        if rest.startswith("api/"):
            return await passthrough(gateway, request)
        return JSONResponse({"error": "not found"}, 404)
