"""The content-addressed file cache: every file is stored once, under its SHA-256.

A download goes to a private temporary file and is hashed as it arrives; it enters the cache only by an
atomic rename once it is complete and matches what the hub promised (its size and its ETag, when the ETag
is a content hash). A crash or a broken upstream connection therefore leaves at worst a stray temporary
file, never a poisoned entry, and nothing reads a blob before it is whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

_SHA256 = re.compile(r"[0-9a-f]{64}")
_SHA1 = re.compile(r"[0-9a-f]{40}")
_CHUNK = 1 << 20


class BlobMismatch(Exception):
    """The bytes received are not the bytes the hub described (truncated, or a different hash)."""


def is_sha256(text: str) -> bool:
    return _SHA256.fullmatch(text) is not None


def git_blob_sha1(path: Path) -> str:
    """The git object id of the file's bytes: what the Hub's ETag is for files not stored in LFS."""
    digest = hashlib.sha1(usedforsecurity=False)
    digest.update(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Incoming:
    """A download in progress: write chunks, then :meth:`BlobStore.commit` or :meth:`discard`."""

    path: Path
    handle: BinaryIO
    sha256: hashlib._Hash = field(default_factory=hashlib.sha256)
    size: int = 0

    def write(self, chunk: bytes) -> None:
        self.handle.write(chunk)
        self.sha256.update(chunk)
        self.size += len(chunk)

    def discard(self) -> None:
        self.handle.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class BlobStore:
    """Blobs under ``root/ab/abcdef...``; temporary downloads under ``root/tmp``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._tmp = root / "tmp"
        self._tmp.mkdir(parents=True, exist_ok=True, mode=0o700)

    def path(self, sha256: str) -> Path:
        if not is_sha256(sha256):
            raise ValueError(f"not a SHA-256: {sha256!r}")
        return self.root / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def start(self) -> Incoming:
        fd, name = tempfile.mkstemp(dir=self._tmp, prefix="part-")
        return Incoming(Path(name), os.fdopen(fd, "wb"))

    def commit(self, incoming: Incoming, *, size: int | None, etag: str) -> str:
        """Verify and store ``incoming``; returns its SHA-256. Raises :class:`BlobMismatch` (and discards it)
        when it is shorter or longer than ``size`` or its hash disagrees with a content-hash ``etag``."""
        incoming.handle.flush()
        os.fsync(incoming.handle.fileno())
        incoming.handle.close()
        sha256 = incoming.sha256.hexdigest()
        try:
            if size is not None and incoming.size != size:
                raise BlobMismatch(f"upstream sent {incoming.size} bytes, {size} announced")
            if is_sha256(etag) and etag != sha256:
                raise BlobMismatch(f"upstream body has SHA-256 {sha256}, its ETag says {etag}")
            if _SHA1.fullmatch(etag) and git_blob_sha1(incoming.path) != etag:
                raise BlobMismatch(f"upstream body does not match its ETag (git blob id {etag})")
        except BlobMismatch:
            incoming.discard()
            raise
        target = self.path(sha256)
        target.parent.mkdir(exist_ok=True)
        os.replace(incoming.path, target)
        return sha256

    def sweep(self) -> None:
        """Remove downloads a previous process left unfinished (it crashed or was killed)."""
        for stale in self._tmp.glob("part-*"):
            with contextlib.suppress(OSError):
                stale.unlink()
