"""Test servers for the gateway: a Hugging Face look-alike hub, and real uvicorn servers on 127.0.0.1.

The hub speaks the routes and headers ``huggingface_hub`` uses (``/api/{type}s/{repo}/revision``, ``tree``,
``resolve`` with ``X-Repo-Commit``/``ETag``, LFS files redirected to a CDN route with ``X-Linked-Etag`` and
``X-Linked-Size``), and can misbehave on demand: corrupt or truncate a body, hang, or fail, while counting
every download it serves.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

TOKEN = "hf_alice_secret"


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


@dataclass
class Repo:
    files: dict[str, bytes]
    private: bool = False
    commit: str = ""

    def __post_init__(self) -> None:
        material = repr(sorted((p, hashlib.sha256(d).hexdigest()) for p, d in self.files.items())).encode()
        self.commit = hashlib.sha1(material, usedforsecurity=False).hexdigest()


def is_lfs(path: str) -> bool:
    return path.endswith((".bin", ".pt", ".pth", ".ckpt", ".safetensors", ".pkl"))


@dataclass
class FakeHub:
    repos: dict[tuple[str, str], Repo] = field(default_factory=dict)
    downloads: Counter[str] = field(default_factory=Counter)
    """Body downloads served, by file path (CDN and direct)."""
    corrupt: set[str] = field(default_factory=set)
    truncate: set[str] = field(default_factory=set)
    hang: set[str] = field(default_factory=set)
    broken: bool = False
    """Every route answers 500."""
    hooks: list[Any] = field(default_factory=list)
    """JSON bodies POSTed to ``/hook`` (a webhook receiver for the gateway)."""

    def add(self, repo: str, files: dict[str, bytes], *, repo_type: str = "model", private: bool = False) -> Repo:
        entry = Repo(files, private)
        self.repos[(repo_type, repo)] = entry
        return entry

    def _find(self, request: Request, repo_type: str, repo: str) -> Repo | Response:
        entry = self.repos.get((repo_type, repo))
        allowed = entry is not None and (not entry.private or request.headers.get("authorization") == f"Bearer {TOKEN}")
        if entry is None or not allowed:
            return Response(
                status_code=401, headers={"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"}
            )
        return entry

    async def dispatch(self, request: Request) -> Response:
        if self.broken:
            return Response("boom", 500)
        parts = [unquote(p) for p in request.scope["raw_path"].decode().split("/")[1:]]
        if parts[0] == "hook":
            self.hooks.append(await request.json())
            return Response(status_code=204)
        if parts[0] == "cdn":
            return await self._cdn(request, parts[1], parts[2:])
        if parts[0] == "api":
            return self._api(request, parts[1:])
        repo_type = "model"
        if parts[0] in ("datasets", "spaces"):
            repo_type, parts = parts[0][:-1], parts[1:]
        width = 2 if len(parts) > 2 and parts[2] == "resolve" else 1
        repo, revision, path = "/".join(parts[:width]), parts[width + 1], "/".join(parts[width + 2 :])
        found = self._find(request, repo_type, repo)
        if isinstance(found, Response):
            return found
        if revision not in ("main", found.commit) or path not in found.files:
            return Response(status_code=404, headers={"X-Error-Code": "EntryNotFound", "X-Repo-Commit": found.commit})
        data = found.files[path]
        headers = {"X-Repo-Commit": found.commit}
        if is_lfs(path):
            sha = hashlib.sha256(data).hexdigest()
            headers |= {"X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(len(data)), "ETag": f'"{git_blob_id(data)}"'}
            location = f"/cdn/{repo_type}/{repo}/{path}"
            return Response(status_code=302, headers={**headers, "Location": location})
        headers |= {"ETag": f'"{git_blob_id(data)}"', "Content-Length": str(len(data))}
        if request.method == "HEAD":
            return Response(status_code=200, headers=headers)
        return await self._body(path, data, headers)

    async def _cdn(self, request: Request, repo_type: str, parts: list[str]) -> Response:
        width = 2 if (repo_type, "/".join(parts[:2])) in self.repos else 1
        entry = self.repos[(repo_type, "/".join(parts[:width]))]
        path = "/".join(parts[width:])
        return await self._body(path, entry.files[path], {"ETag": f'"{hashlib.sha256(entry.files[path]).hexdigest()}"'})

    async def _body(self, path: str, data: bytes, headers: dict[str, str]) -> Response:
        self.downloads[path] += 1
        if path in self.hang:
            await asyncio.sleep(30)
        if path in self.corrupt:
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        if path in self.truncate:

            async def half() -> AsyncIterator[bytes]:
                yield data[: len(data) // 2]
                raise ConnectionAbortedError("the hub drops the connection mid-body")

            return StreamingResponse(half(), headers={**headers, "Content-Length": str(len(data))})
        return Response(data, headers={**headers, "Content-Length": str(len(data))})

    def _api(self, request: Request, parts: list[str]) -> Response:
        repo_type = parts[0][:-1]
        for width in (1, 2):
            if len(parts) > width + 2 and parts[width + 1] in ("revision", "tree"):
                repo, route, _rest = "/".join(parts[1 : width + 1]), parts[width + 1], parts[width + 2 :]
                break
        else:
            return Response(status_code=404)
        found = self._find(request, repo_type, repo)
        if isinstance(found, Response):
            return found
        if route == "revision":
            siblings = [{"rfilename": p} for p in sorted(found.files)]
            return JSONResponse({"id": repo, "sha": found.commit, "siblings": siblings, "private": found.private})
        return JSONResponse([self._tree_entry(p, d) for p, d in sorted(found.files.items())])

    def _tree_entry(self, path: str, data: bytes) -> dict[str, Any]:
        entry: dict[str, Any] = {"type": "file", "path": path, "size": len(data), "oid": git_blob_id(data)}
        if is_lfs(path):
            sha = hashlib.sha256(data).hexdigest()
            # The real hub lists a Xet hash too; a client given it would fetch the bytes around the gateway.
            entry |= {"lfs": {"oid": sha, "size": len(data), "pointerSize": 134}, "xetHash": "ab" * 32}
        return entry

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{rest:path}", self.dispatch, methods=["GET", "HEAD", "POST"])])


class ServerThread:
    """A real uvicorn server on 127.0.0.1, on a port the OS picked, in a background thread."""

    def __init__(self, app: Any) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)
        self.sock.close()


@dataclass
class Running:
    hub: FakeHub
    hub_url: str
    gateway_url: str
    app: Any

    @property
    def gateway(self) -> Any:
        return self.app.state.gateway


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_all(*apps: Any) -> Iterator[list[ServerThread]]:
    servers = [ServerThread(a) for a in apps]
    for s in servers:
        s.__enter__()
    try:
        yield servers
    finally:
        for s in reversed(servers):
            s.__exit__()
