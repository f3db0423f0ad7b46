"""The hub behind the gateway, spoken to with httpx the way ``huggingface_hub`` speaks to it.

A ``HEAD`` on ``/{repo}/resolve/{revision}/{path}`` answers with the commit (``X-Repo-Commit``), the file's
ETag (``X-Linked-Etag`` for LFS files, which is their SHA-256; else ``ETag``, the git blob id) and size
(``X-Linked-Size`` or ``Content-Length``). LFS files answer with a redirect to a CDN: relative redirects
(renamed repositories) are followed with the client's credentials, an absolute one is where the bytes are
and gets none (httpx drops ``Authorization`` on a cross-origin redirect too).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import quote, urljoin

import httpx

_MAX_REDIRECTS = 5
FORWARDED_ERROR_HEADERS = ("X-Error-Code", "X-Error-Message", "X-Repo-Commit", "WWW-Authenticate")
"""Upstream headers ``huggingface_hub`` reads from an error (e.g. ``EntryNotFound``) and gets back as-is."""


class UpstreamError(Exception):
    """The hub could not give the file: ``status`` is what the gateway answers with."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@dataclass(frozen=True)
class RemoteFile:
    """What the hub says about one file at one revision."""

    commit: str
    etag: str
    """Normalised (no quotes, no ``W/``)."""
    size: int | None
    url: str
    """Where its bytes are: the hub's resolve URL at the commit, or the CDN location."""
    same_origin: bool
    """Whether :attr:`url` is on the hub itself (so the client's credentials go with the download)."""


def normalise_etag(value: str | None) -> str:
    if not value:
        return ""
    return value.removeprefix("W/").strip('"')


def resolve_path(prefix: str, repo: str, revision: str, path: str) -> str:
    return f"/{prefix}{repo}/resolve/{quote(revision, safe='')}/{quote(path)}"


def upstream_failure(exc: httpx.HTTPError) -> UpstreamError:
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamError(504, f"upstream hub timed out: {type(exc).__name__}")
    return UpstreamError(502, f"upstream hub unreachable: {type(exc).__name__}: {exc}")


def _error(response: httpx.Response) -> UpstreamError:
    headers = {h: response.headers[h] for h in FORWARDED_ERROR_HEADERS if h in response.headers}
    if response.status_code >= 500:
        return UpstreamError(502, f"upstream hub answered {response.status_code}", headers)
    message = response.headers.get("X-Error-Message") or f"upstream hub answered {response.status_code}"
    return UpstreamError(response.status_code, message, headers)


class Upstream:
    def __init__(self, base: str, *, connect_timeout: float, read_timeout: float) -> None:
        self.base = base.rstrip("/")
        timeout = httpx.Timeout(read_timeout, connect=connect_timeout)
        self.client = httpx.AsyncClient(timeout=timeout, follow_redirects=False)

    async def close(self) -> None:
        await self.client.aclose()

    def _headers(self, authorization: str | None) -> dict[str, str]:
        headers = {"Accept-Encoding": "identity", "User-Agent": "picklewarden-gateway"}
        if authorization:
            headers["Authorization"] = authorization
        return headers

    async def describe(self, prefix: str, repo: str, revision: str, path: str, auth: str | None) -> RemoteFile:
        """HEAD the file, following the hub's own redirects. Raises :class:`UpstreamError`."""
        url = self.base + resolve_path(prefix, repo, revision, path)
        try:
            for _ in range(_MAX_REDIRECTS):
                response = await self.client.head(url, headers=self._headers(auth))
                location = response.headers.get("Location")
                if response.is_redirect and location and httpx.URL(urljoin(url, location)).host == httpx.URL(url).host:
                    if "X-Linked-Etag" not in response.headers:  # a renamed repository: ask again there
                        url = urljoin(url, location)
                        continue
                break
        except httpx.HTTPError as exc:
            raise upstream_failure(exc) from exc
        if response.status_code >= 400:
            raise _error(response)
        commit = response.headers.get("X-Repo-Commit", "")
        etag = normalise_etag(response.headers.get("X-Linked-Etag") or response.headers.get("ETag"))
        if not commit or not etag:
            raise UpstreamError(502, "upstream hub gave no X-Repo-Commit or ETag: not a Hugging Face hub?")
        size_header = response.headers.get("X-Linked-Size") or (
            None if response.is_redirect else response.headers.get("Content-Length")
        )
        size = int(size_header) if size_header and size_header.isdigit() else None
        if response.is_redirect and response.headers.get("Location"):
            target = urljoin(url, response.headers["Location"])
        else:
            target = self.base + resolve_path(prefix, repo, commit, path)
        same = httpx.URL(target).host == httpx.URL(self.base).host
        return RemoteFile(commit, etag, size, target, same)

    async def download(self, remote: RemoteFile, auth: str | None) -> AsyncIterator[bytes]:
        """The file's bytes, in chunks. Raises :class:`UpstreamError` (a broken stream included)."""
        headers = self._headers(auth if remote.same_origin else None)
        try:
            request = self.client.build_request("GET", remote.url, headers=headers)
            response = await self.client.send(request, stream=True, follow_redirects=True)
            try:
                if response.status_code >= 400:
                    raise _error(response)
                async for chunk in response.aiter_raw():
                    yield chunk
            finally:
                await response.aclose()
        except httpx.HTTPError as exc:
            raise upstream_failure(exc) from exc
