"""Scan objects in remote stores (``s3://``, ``gs://``, ``hf://``, ``https://``...) without downloading them.

The readers only ever ask a file for ``len()`` and byte slices, and for a PyTorch ZIP checkpoint they
slice only the end-of-central-directory area, the central directory, each member's local header and the
pickle members. :class:`RangedFile` turns each slice into a ranged read through `fsspec
<https://filesystem-spec.readthedocs.io>`_ (the optional extra ``picklewarden[remote]``; ``s3://`` also
needs ``s3fs``, ``gs://`` ``gcsfs``, ``hf://`` ``huggingface_hub``), so a 10 GB checkpoint costs its
pickle plus a few hundred KiB of transfer.

Small reads are rounded out to aligned blocks, and blocks are kept in a bounded LRU cache: the directory
readers make many small reads close together (a 30-byte header, then the name after it), which then cost
one request. A plain pickle (or a legacy checkpoint, whose reader copies the file) is read whole, up to
``whole`` bytes (256 MiB by default); beyond that, and for iteration byte by byte, the read is refused
with :class:`WholeObjectRead` rather than silently downloading gigabytes.
"""

from __future__ import annotations

import collections
import importlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol, overload

from picklewarden.errors import ScanError
from picklewarden.limits import DEFAULT_LIMITS, Limits
from picklewarden.model import FileReport

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from picklewarden.cache import ResultCache
    from picklewarden.policy.config import Policy

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_STRONG_IDENTITY = ("ETag", "etag", "md5Hash", "crc32c", "generation", "VersionId", "version_id", "blob_id")
"""fsspec ``info()`` fields (S3, GCS, HTTP, Hugging Face) that change whenever the object's bytes change."""
DEFAULT_BLOCK = 4 * 1024
"""Smallest read: a page. Larger blocks waste transfer on the many scattered local-header reads."""
_SNIFF = 64 * 1024
"""Head read to decide whether an object listed under a prefix is a model file (as for local walks)."""
DEFAULT_WHOLE = 256 * 1024 * 1024
"""Largest object read completely when a reader asks for all of it (plain pickles, legacy checkpoints)."""
DEFAULT_CACHE = 64 * 1024 * 1024
"""Bytes of blocks kept: the whole directory and pickle of most checkpoints, read twice by some checks."""


class WholeObjectRead(ScanError):
    """Something asked for every byte of a remote object; refused so that nothing downloads it silently."""


class RangeSource(Protocol):
    """Where a :class:`RangedFile` reads from."""

    @property
    def size(self) -> int: ...

    def read(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end)``, all of them (``0 <= start < end <= size``)."""
        ...


@dataclass(frozen=True)
class Transfer:
    """What a :class:`RangedFile` has fetched so far."""

    requests: int
    bytes: int


class RangedFile:
    """A read-only remote object as a byte sequence: ``len()`` and slices, fetched on demand.

    Implements exactly what the container readers use (``len``, ``data[i]``, ``data[a:b]``); slices
    return ``bytes``. Not thread-safe: one scan at a time.
    """

    def __init__(
        self, source: RangeSource, *, block: int = DEFAULT_BLOCK, cache: int = DEFAULT_CACHE, whole: int = DEFAULT_WHOLE
    ) -> None:
        if block <= 0 or cache < block or whole < 0:
            raise ValueError("block must be positive, the cache at least one block, whole not negative")
        self._source = source
        self._whole = whole
        self._size = source.size
        self._block = block
        self._capacity = cache // block
        self._blocks: collections.OrderedDict[int, bytes] = collections.OrderedDict()
        self._requests = 0
        self._fetched = 0

    @property
    def transfer(self) -> Transfer:
        return Transfer(self._requests, self._fetched)

    def __len__(self) -> int:
        return self._size

    @overload
    def __getitem__(self, index: int) -> int: ...

    @overload
    def __getitem__(self, index: slice) -> bytes: ...

    def __getitem__(self, index: int | slice) -> int | bytes:
        if isinstance(index, slice):
            start, stop, step = index.indices(self._size)
            if step != 1:
                raise ValueError("RangedFile slices must be contiguous")
            return self._read(start, stop) if stop > start else b""
        position = index + self._size if index < 0 else index
        if not 0 <= position < self._size:
            raise IndexError("RangedFile index out of range")
        return self._read(position, position + 1)[0]

    def __bytes__(self) -> bytes:
        # A plain pickle is all pickle, so reading all of it is what a scan needs; a legacy checkpoint is
        # read whole too (its reader copies the file), which is only acceptable up to a bound.
        if self._size <= self._whole:
            return self._read(0, self._size)
        raise WholeObjectRead(
            f"refusing to download the whole {self._size}-byte object (more than {self._whole} bytes): its "
            "format is read from a complete copy; only ZIP checkpoints are read in ranges"
        )

    def __iter__(self) -> Iterator[int]:
        # Without this, bytes(file) and list(file) would fall back to indexing byte by byte.
        raise WholeObjectRead(f"refusing to iterate over the {self._size}-byte object byte by byte")

    def _read(self, start: int, stop: int) -> bytes:
        size = self._block
        first, last = start // size, (stop - 1) // size
        parts: list[bytes] = []
        index = first
        while index <= last:
            cached = self._blocks.get(index)
            if cached is not None:
                self._blocks.move_to_end(index)
                parts.append(cached)
                index += 1
                continue
            end = index
            while end < last and end + 1 not in self._blocks:
                end += 1
            # One request for the whole run of missing blocks.
            data = self._fetch(index * size, min((end + 1) * size, self._size))
            for offset, block in enumerate(range(index, end + 1)):
                self._keep(block, data[offset * size : (offset + 1) * size])
            parts.append(data)
            index = end + 1
        joined = parts[0] if len(parts) == 1 else b"".join(parts)
        skip = start - first * size
        return joined[skip : skip + stop - start]

    def _keep(self, index: int, data: bytes) -> None:
        self._blocks[index] = data
        if len(self._blocks) > self._capacity:
            self._blocks.popitem(last=False)

    def _fetch(self, start: int, end: int) -> bytes:
        data = self._source.read(start, end)
        self._requests += 1
        self._fetched += len(data)
        if len(data) != end - start:
            # A server that ignores Range sends the whole object; one that cuts it short is just as wrong.
            raise ScanError(f"ranged read of bytes {start}-{end - 1} returned {len(data)} bytes")
        return data


_BACKENDS: Final[dict[str, str]] = {
    "s3": "pip install 'picklewarden[remote]' s3fs",
    "gs": "pip install 'picklewarden[remote]' gcsfs",
    "gcs": "pip install 'picklewarden[remote]' gcsfs",
    "hf": "pip install 'picklewarden[remote]' huggingface_hub",
}
"""What to install for a scheme beyond the ``remote`` extra (fsspec + aiohttp for http(s)://)."""


class FsspecSource:
    """A :class:`RangeSource` over any URL fsspec opens."""

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None = None) -> None:
        try:
            # Through importlib: fsspec ships no type information, and it is an optional dependency.
            fsspec: Any = importlib.import_module("fsspec")
            self._fs, self._path = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
        except ImportError as exc:
            # fsspec often comes with torch, without the backend for the scheme (aiohttp for https://).
            scheme = url.partition("://")[0]
            backend = _BACKENDS.get(scheme, "pip install 'picklewarden[remote]'")
            raise ScanError(
                f"reading {scheme}:// URLs needs packages that are not installed: {backend} ({exc})"
            ) from exc
        self.url = url
        self.info: Mapping[str, Any] = self._fs.info(self._path)
        size = self.info.get("size")
        self._size = int(size) if size is not None else int(self._fs.size(self._path))

    @property
    def size(self) -> int:
        return self._size

    @property
    def identity(self) -> str | None:
        """What the store says identifies these exact bytes (a content hash, an ETag, a generation or
        version id), or None when it says nothing that strong (then results are not cached)."""
        info = self.info
        lfs = info.get("lfs")
        strong: dict[str, Any] = {}
        if isinstance(lfs, Mapping) and lfs.get("sha256"):
            strong["sha256"] = lfs["sha256"]  # Hugging Face: the LFS object's content hash
        for field in _STRONG_IDENTITY:
            if info.get(field):
                strong[field] = str(info[field])
        if not strong:
            return None
        return "store:" + json.dumps({"url": self.url, "size": self._size, **strong}, sort_keys=True)

    def read(self, start: int, end: int) -> bytes:
        data = self._fs.cat_file(self._path, start=start, end=end)
        return bytes(data)


def is_url(text: str) -> bool:
    """True for ``scheme://...`` (what :func:`scan_url` takes); False for local paths (also on Windows)."""
    return _URL.match(text) is not None and not os.path.exists(text)


def open_url(url: str, storage_options: Mapping[str, Any] | None = None, **options: int) -> RangedFile:
    """A :class:`RangedFile` for ``url`` (``options``: ``block``, ``cache`` and ``whole`` sizes in bytes)."""
    return RangedFile(FsspecSource(url, storage_options), **options)


def scan_url(
    url: str,
    limits: Limits = DEFAULT_LIMITS,
    *,
    policy: Policy | None = None,
    storage_options: Mapping[str, Any] | None = None,
    file: RangedFile | None = None,
    cache: ResultCache | None = None,
    explicit: bool = True,
) -> FileReport:
    """Scan the object at ``url`` with ranged reads. Never raises for a bad object or an unreachable
    store: problems become errors in the report (never a clean verdict).

    ``storage_options`` go to fsspec (credentials, endpoints). ``file`` scans an already opened
    :class:`RangedFile` (to inspect its :attr:`~RangedFile.transfer` afterwards); ``url`` then only names it.
    ``cache`` answers objects whose store identity (content hash, ETag, generation) was seen with the same
    settings; objects without one are always analysed. ``explicit=False`` (objects listed under a prefix)
    skips objects that are not pickles or model files, as a directory walk does, after reading their head.
    """
    if policy is not None and policy.ignore:
        from picklewarden.policy.apply import ignored

        if ignored(policy, url) is not None:
            return FileReport(url, "unknown", skipped=True)
    source: FsspecSource | None = None
    try:
        if file is None:
            source = FsspecSource(url, storage_options)
            file = RangedFile(source)
    except ScanError as exc:
        return FileReport(url, "unknown", errors=(str(exc),))
    except Exception as exc:  # noqa: BLE001 - fsspec backends raise anything; never reported clean
        return FileReport(url, "unknown", errors=(f"cannot open: {type(exc).__name__}: {exc}",))
    key = None
    identity = source.identity if source is not None else None
    if cache is not None and identity is not None:
        key = cache.identity_key(identity, url, limits, explicit=explicit, policy=policy)
        cached = cache.get(key)
        if cached is not None:
            return cached._replace(path=url)
    report = _scan_ranged(url, file, limits, policy, explicit)
    if cache is not None and key is not None and not report.errors:
        cache.put(key, report)
    return report


def scan_urls(
    urls: Iterable[str],
    limits: Limits = DEFAULT_LIMITS,
    *,
    policy: Policy | None = None,
    storage_options: Mapping[str, Any] | None = None,
    cache: ResultCache | None = None,
) -> Iterator[FileReport]:
    """Reports for each URL in turn; a URL ending in ``/`` is a prefix whose objects are all scanned
    (those that are not model files are skipped, as in a local directory walk). A prefix that cannot be
    listed is one error report."""
    from picklewarden.distributed import read_manifest

    for url in urls:
        if not url.endswith("/"):
            yield scan_url(url, limits, policy=policy, storage_options=storage_options, cache=cache)
            continue
        try:
            entries = list(read_manifest(url, storage_options))
        except Exception as exc:  # noqa: BLE001 - fsspec backends raise anything; never reported clean
            yield FileReport(url, "unknown", errors=(f"cannot list: {type(exc).__name__}: {exc}",))
            continue
        for entry in entries:
            yield scan_url(
                entry.target, limits, policy=policy, storage_options=storage_options, cache=cache, explicit=False
            )


def _scan_ranged(url: str, file: RangedFile, limits: Limits, policy: Policy | None, explicit: bool) -> FileReport:
    from picklewarden.containers.base import Context
    from picklewarden.containers.opener import open_bytes, sniff_format
    from picklewarden.rules import finding
    from picklewarden.scanner import analyse_opened, internal_error

    size = len(file)
    try:
        if not explicit and sniff_format(file[:_SNIFF], limits) is None:
            return FileReport(url, "unknown", skipped=True)
        if size > limits.max_file_bytes:
            message = f"file of {size} bytes exceeds the {limits.max_file_bytes}-byte limit"
            return FileReport(url, "unknown", (finding("PW301", message),), ("file too large to analyse",))
        if size == 0:
            return FileReport(url, "unknown", errors=("empty file",))
        # The readers type their input as bytes; a RangedFile offers the part of bytes they use.
        data: bytes = file  # type: ignore[assignment]
        context = Context.root(limits, url)
        analysis = analyse_opened(open_bytes(data, limits, context), url, limits, data=data, context=context)
        report = analysis.report()
    except ScanError as exc:
        return FileReport(url, "unknown", errors=(str(exc),))
    except Exception as exc:  # noqa: BLE001 - one bad object must not stop a scan; never reported clean
        return FileReport(url, "unknown", errors=(internal_error(exc),))
    if policy is None:
        return report
    from picklewarden.policy.apply import apply_file

    return apply_file(policy, report)
