"""One ZIP member's bytes, read the way torch's miniz reader reads them (and, by :func:`read_plain`, the
way a reader that ignores the general-purpose flags does).

The directory that produces :class:`ZipEntry` values is read by :mod:`picklewarden.containers.zipdir`
and :mod:`picklewarden.containers.torchzip`; see the latter for what torch does and why.
"""

from __future__ import annotations

import contextlib
import mmap
import struct
import zlib

from picklewarden._typing import TYPE_CHECKING, NamedTuple
from picklewarden.containers.base import Anomaly
from picklewarden.errors import LimitExceeded, ScanError

if TYPE_CHECKING:
    from typing import Any

    from picklewarden.limits import Limits

Buffer = bytes | bytearray | memoryview | mmap.mmap
"""Anything sliceable holding a whole file (``bytes`` or an ``mmap`` in practice)."""

ZIP_MAGIC = b"PK\x03\x04"

_EOCD_SIG = b"PK\x05\x06"
_Z64_LOCATOR_SIG = b"PK\x06\x07"
_Z64_EOCD_SIG = b"PK\x06\x06"
_CDH_SIG = b"PK\x01\x02"

_EOCD_SIZE = 22
_Z64_LOCATOR_SIZE = 20
_Z64_EOCD_SIZE = 56
_CDH_SIZE = 46
_LOCAL_SIZE = 30

_EOCD = struct.Struct("<4sHHHHIIH")
_Z64_LOCATOR = struct.Struct("<4sIQI")
_Z64_EOCD = struct.Struct("<4sQHHIIQQQQ")
_CDH = struct.Struct("<4sHHHHHHIIIHHHHHII")
_LOCAL = struct.Struct("<4sHHHHHIIIHH")

_U16_MAX = 0xFFFF
_U32_MAX = 0xFFFFFFFF
_U64_MASK = 0xFFFFFFFFFFFFFFFF

# miniz's backwards search for the end-of-central-directory record.
_SEARCH_BLOCK = 4096
_SEARCH_STEP = _SEARCH_BLOCK - 3
_SEARCH_GIVE_UP = _U16_MAX + _EOCD_SIZE
# Python's zipfile only looks this far back for the record.
_ZIPFILE_WINDOW = (1 << 16) + _EOCD_SIZE

_FLAG_ENCRYPTED = 0x0001
_FLAG_DESCRIPTOR = 0x0008
_FLAG_PATCH = 0x0020
_FLAG_STRONG = 0x0040
_FLAG_UTF8 = 0x0800
_FLAG_MASKED = 0x2000
_FLAGS_DEFLATE_OPTIONS = 0x0006
_FLAGS_USUAL = _FLAG_DESCRIPTOR | _FLAG_UTF8
_ATTR_DOS_DIRECTORY = 0x10

_STORED = 0
_DEFLATED = 8

_INFLATE_CHUNK = 1 << 20
_MAX_PER_CODE = 16  # anomalies listed per code; the rest are counted


_set = object.__setattr__
# ZipEntry's fields in the order of __init__ (its repr and the compiled walk's list follow it too).
_ENTRY_FIELDS = (
    "name",
    "header_offset",
    "data_offset",
    "compressed_size",
    "size",
    "method",
    "crc32",
    "flags",
    "index",
    "directory",
    "stat_error",
    "local_read",
)

# The records here are not dataclasses: Python 3.11 compiles each generated method at import, which every
# one-file scan pays for (see "Start-up" in docs/benchmarks.md). ZipEntry is a plain class because the
# compiled directory walk fills its slots itself (_speedups.c, plain_entry), and a field is called ``index``.


class ZipEntry:
    """One central-directory entry, with the values torch uses when it reads it. Immutable."""

    __slots__ = _ENTRY_FIELDS
    name: str
    """Central-directory name (what torch looks up); undecodable bytes are kept as surrogates."""
    header_offset: int
    """Offset of the local header in the file."""
    data_offset: int
    """Offset of the member's data (header + 30 + local name and extra lengths). For tensor-data records
    whose local header was not read (``local_read`` False) a lower bound: use :func:`data_start`."""
    compressed_size: int
    size: int
    """Uncompressed size: the number of bytes torch allocates and returns."""
    method: int
    """0 stored, 8 deflate; anything else torch refuses to read."""
    crc32: int
    flags: int
    index: int
    """Position in the central directory."""
    directory: bool
    """miniz considers it a directory (name ends in '/' or DOS directory attribute): torch reads nothing."""
    stat_error: str | None
    """Why torch fails as soon as it looks this entry up, or None."""
    local_read: bool
    """Whether the local header was read when the directory was. Tensor-data records' headers are not: they
    sit between gigabytes of weights, one page each, and torch never unpickles what they hold."""

    def __init__(
        self,
        name: str,
        header_offset: int,
        data_offset: int,
        compressed_size: int,
        size: int,
        method: int,
        crc32: int,
        flags: int,
        index: int = -1,
        directory: bool = False,
        stat_error: str | None = None,
        local_read: bool = True,
    ) -> None:
        _set(self, "name", name)
        _set(self, "header_offset", header_offset)
        _set(self, "data_offset", data_offset)
        _set(self, "compressed_size", compressed_size)
        _set(self, "size", size)
        _set(self, "method", method)
        _set(self, "crc32", crc32)
        _set(self, "flags", flags)
        _set(self, "index", index)
        _set(self, "directory", directory)
        _set(self, "stat_error", stat_error)
        _set(self, "local_read", local_read)

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in _ENTRY_FIELDS)

    def replace(self, **changes: Any) -> ZipEntry:
        """A copy with some fields changed."""
        return ZipEntry(**{**dict(zip(_ENTRY_FIELDS, self._values(), strict=True)), **changes})

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"ZipEntry is immutable: cannot set {name}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"ZipEntry is immutable: cannot delete {name}")

    def __eq__(self, other: object) -> bool:
        return type(other) is ZipEntry and self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}={v!r}" for n, v in zip(_ENTRY_FIELDS, self._values(), strict=True))
        return f"ZipEntry({shown})"


class ZipAnomaly(NamedTuple):
    """Something odd about the archive, or about how torch and other readers see it."""

    code: str
    member: str | None
    offset: int | None
    message: str


def read_entry(data: Buffer, entry: ZipEntry, limits: Limits) -> tuple[bytes, tuple[ZipAnomaly, ...]]:
    """The bytes torch reads for ``entry``, and anything odd noticed while reading them.

    Raises :class:`LimitExceeded` when the member is larger than ``limits.max_pickle_bytes``, and
    :class:`ScanError` whenever torch itself could not read the member (or would read uninitialised
    memory). The CRC is checked here, although torch does not check it.
    """
    payload, anomalies = _extract(data, entry, limits.max_pickle_bytes)
    actual = zlib.crc32(payload)
    if actual != entry.crc32:
        extra = " (torch.save writes 0 when CRC computation is disabled)" if entry.crc32 == 0 else ""
        anomalies.append(
            ZipAnomaly(
                "bad-crc",
                entry.name,
                entry.header_offset,
                f"CRC-32 of the data torch reads is {actual:08x} but the directory says {entry.crc32:08x}{extra}; "
                "torch does not check CRCs and uses the data, while Python's zipfile refuses it",
            )
        )
    return payload, tuple(anomalies)


def _encode(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _pread(data: Buffer, size: int, offset: int, length: int) -> bytes | None:
    """``length`` bytes at ``offset``, or None when the file does not hold them all (a short read)."""
    if offset < 0 or length < 0 or offset > size or length > size - offset:
        return None
    return bytes(data[offset : offset + length])


def _anomaly(code: str, member: str | None, offset: int | None, message: str) -> ZipAnomaly:
    return ZipAnomaly(code, member, offset, message)


def data_start(data: Buffer, entry: ZipEntry) -> int:
    """Where ``entry``'s data starts, reading its local header if the directory pass did not."""
    return entry.data_offset if entry.local_read else _local_header(data, len(data), entry)


def _is_tensor_data(name: bytes) -> bool:
    """A record under a ``data/`` folder that is not a pickle: raw storage bytes that torch only copies."""
    return b"/data/" in b"/" + name and not name.endswith(b".pkl") and not name.endswith(b"/")


def _local_header(data: Buffer, size: int, entry: ZipEntry) -> int:
    """The data offset the local header gives torch; ScanError when torch fails reading it."""
    raw = _pread(data, size, entry.header_offset, _LOCAL_SIZE)
    if raw is None:
        raise ScanError(f"local header of {entry.name!r} at offset {entry.header_offset} is past the end of the file")
    fields = _LOCAL.unpack(raw)
    if fields[0] != ZIP_MAGIC:
        raise ScanError(f"no local header signature at offset {entry.header_offset} for {entry.name!r}")
    return int(entry.header_offset + _LOCAL_SIZE + fields[9] + fields[10])


def _extract(data: Buffer, entry: ZipEntry, limit: int) -> tuple[bytes, list[ZipAnomaly]]:
    """(bytes torch reads, anomalies seen reading them), following mz_zip_reader_extract_to_mem.

    Everything torch checks is checked before ``limit`` (LimitExceeded) is applied to the size.
    """
    size = len(data)
    if entry.stat_error is not None:
        raise ScanError(f"torch cannot read {entry.name!r}: {entry.stat_error}")
    _check_supported(entry)
    if entry.directory or entry.compressed_size == 0:
        if entry.size == 0:
            return b"", []
        what = "a directory" if entry.directory else "a member with compressed size 0"
        raise ScanError(
            f"{entry.name!r} is {what} with size {entry.size}: torch returns that many bytes of uninitialised memory"
        )
    data_offset = _local_header(data, size, entry)
    if ((data_offset + entry.compressed_size) & _U64_MASK) > size:
        raise ScanError(
            f"data of {entry.name!r} ({entry.compressed_size} bytes at offset {data_offset}) runs past the end of "
            "the file"
        )
    if entry.method == _STORED and entry.size > size - data_offset:
        raise ScanError(
            f"{entry.name!r} is stored with size {entry.size} at offset {data_offset}, past the end of the file"
        )
    if entry.size > limit:
        raise LimitExceeded("pickle bytes", limit, entry.size, entry.header_offset)
    _will_need(data, data_offset, entry.compressed_size)
    if entry.method == _STORED:
        return bytes(data[data_offset : data_offset + entry.size]), []
    return _inflate(data, data_offset, entry)


def _will_need(data: Buffer, start: int, length: int) -> None:
    """Ask the kernel for a member's pages in one go: the scanner maps files with read-ahead turned off
    (so the reads between gigabytes of tensors cost their own pages only), which a bulk read needs back."""
    if isinstance(data, mmap.mmap) and length > mmap.PAGESIZE and hasattr(mmap, "MADV_WILLNEED"):
        aligned = start - start % mmap.PAGESIZE
        with contextlib.suppress(OSError, ValueError):
            data.madvise(mmap.MADV_WILLNEED, aligned, min(length + start - aligned, len(data) - aligned))


def _check_supported(entry: ZipEntry) -> None:
    """The checks mz_zip_reader_file_stat makes (torch fails 'retrieving file meta-data')."""
    if entry.method not in (_STORED, _DEFLATED):
        raise ScanError(f"torch cannot read {entry.name!r}: unsupported compression method {entry.method}")
    if entry.flags & (_FLAG_ENCRYPTED | _FLAG_STRONG):
        raise ScanError(f"torch cannot read {entry.name!r}: it is marked encrypted (flags {entry.flags:#06x})")
    if entry.flags & _FLAG_PATCH:
        raise ScanError(f"torch cannot read {entry.name!r}: it is marked as patch data (flags {entry.flags:#06x})")


def _inflate(data: Buffer, data_offset: int, entry: ZipEntry) -> tuple[bytes, list[ZipAnomaly]]:
    """Inflate into a buffer of exactly ``entry.size`` bytes as miniz's tinfl does for torch.

    miniz only reports an error when the stream ends early; when it is corrupt, cut short or longer than
    the buffer it stops without setting one, and torch uses the buffer as it is: the first ``size`` bytes
    are then well defined only if the stream produced that many.
    """
    size = entry.size
    inflater = zlib.decompressobj(-15)
    out = bytearray()
    position, end = data_offset, data_offset + entry.compressed_size
    pending = b""

    def more_input() -> bytes:
        nonlocal position
        chunk = bytes(data[position : min(end, position + _INFLATE_CHUNK)])
        position += len(chunk)
        return chunk

    try:
        while len(out) < size and not inflater.eof:
            if not pending:
                pending = more_input()
                if not pending:
                    break
            out += inflater.decompress(pending, size - len(out))
            pending = inflater.unconsumed_tail
    except zlib.error:
        pass
    if len(out) < size:
        if inflater.eof:
            raise ScanError(f"{entry.name!r} inflates to {len(out)} bytes, fewer than its declared {size}; torch fails")
        raise ScanError(
            f"the deflate stream of {entry.name!r} is corrupt or cut short before its declared {size} bytes; torch "
            "does not notice and returns the rest of its buffer as uninitialised memory"
        )
    anomalies: list[ZipAnomaly] = []
    overflow = broken = False
    try:
        while not inflater.eof:
            if not pending:
                pending = more_input()
                if not pending:
                    broken = True
                    break
            if inflater.decompress(pending, 1):
                overflow = True
                break
            pending = inflater.unconsumed_tail
    except zlib.error:
        broken = True
    if overflow or broken:
        what = "inflates to more than" if overflow else "is corrupt or cut short after"
        anomalies.append(
            _anomaly(
                "size-mismatch",
                entry.name,
                entry.header_offset,
                f"the deflate stream {what} the declared {size} bytes; torch silently keeps the first {size} bytes, "
                "other readers fail or see more",
            )
        )
    else:
        slack = (end - position) + len(pending) + len(inflater.unused_data)
        if slack:
            anomalies.append(
                _anomaly(
                    "deflate-slack",
                    entry.name,
                    entry.data_offset,
                    f"{slack} bytes follow the end of the deflate stream inside the member; torch ignores them",
                )
            )
    return bytes(out), anomalies


_FLAGS_REFUSED = _FLAG_ENCRYPTED | _FLAG_STRONG | _FLAG_PATCH


def read_plain(data: Buffer, entry: ZipEntry, limits: Limits) -> tuple[bytes, tuple[ZipAnomaly, ...]]:
    """The bytes any reader could take for ``entry``: :func:`read_entry`, except that the encryption,
    strong-encryption and patched-data flag bits are ignored, as lenient readers ignore them.

    Stored data is plain whatever those bits say (an attacker sets them to make scanners give up while
    a reader that skips the check, or one shown a different flag in the local header, still reads the
    pickle), so it is returned with a ``flags-ignored`` anomaly. Deflated data is inflated as it is: data
    that is really encrypted does not inflate, and raises :class:`ScanError` like anything no reader can
    obtain.
    """
    refused = entry.flags & _FLAGS_REFUSED
    if not refused:
        return read_entry(data, entry, limits)
    payload, anomalies = read_entry(data, entry.replace(flags=entry.flags & ~_FLAGS_REFUSED), limits)
    what = ", ".join(
        name
        for bit, name in (
            (_FLAG_ENCRYPTED, "encrypted"),
            (_FLAG_STRONG, "strong encryption"),
            (_FLAG_PATCH, "patch data"),
        )
        if refused & bit
    )
    damage = _anomaly(
        "flags-ignored",
        entry.name,
        entry.header_offset,
        f"the central directory flags this member as {what} (flags {entry.flags:#06x}), so torch and zipfile "
        f"refuse it, yet its {'stored' if entry.method == _STORED else 'deflated'} bytes are plain: scanned as a "
        "reader that ignores the flag takes them",
    )
    return payload, (damage, *anomalies)


def to_anomaly(problem: ZipAnomaly) -> Anomaly:
    """A reader's observation as a container anomaly (rule PW310, the code leading the message)."""
    return Anomaly("PW310", problem.member, problem.offset, f"{problem.code}: {problem.message}")


def peek_member(data: Buffer, entry: ZipEntry, size: int) -> bytes:
    """The first ``size`` bytes of a member's content, inflating no more than that (storages may be
    gigabytes); ``b""`` when its local header cannot be read or its deflate stream is broken."""
    try:
        start = data_start(data, entry)
    except ScanError:
        return b""
    raw = bytes(data[start : start + min(entry.compressed_size, size)])
    if entry.method != _DEFLATED:
        return raw[: entry.size]
    try:
        return zlib.decompressobj(-15).decompress(raw, size)
    except zlib.error:
        return b""
