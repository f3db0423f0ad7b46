"""Read a PyTorch ZIP checkpoint exactly the way torch 2.x does, and report everything odd about it.

torch reads its ``.pt`` archives with ``PyTorchStreamReader`` on top of the miniz copy vendored in
``third_party/miniz-3.0.2``; ``torch.load`` adds a few checks of its own in Python. This module is a
pure-Python model of that reader, built from the miniz sources and confirmed with mutated archives
against torch 2.13 (see ``tests/test_torchzip.py``). It never trusts a length field: every read is
bounds-checked first, and nothing is allocated from a size the file claims beyond what the file holds
(or, for the one member being decompressed, beyond ``Limits.max_pickle_bytes``).

What torch does, and this module therefore does:

* ``torch.load`` treats a file as a ZIP only when its first four bytes are ``PK\\x03\\x04``; anything
  else goes to the legacy loader, which **unpickles the file from byte 0** (``legacy-fallback``).
* The end-of-central-directory record is the *last* ``PK\\x05\\x06`` found scanning backwards in
  4096-byte blocks (each step 4093 bytes back). The scan stops once a block starts 65,557 or more
  bytes before the end. A miniz bug makes the step from a block starting between 1 and 4092 land on a
  negative offset, so torch fails to open archives whose record lies just before such a block.
* A ZIP64 locator right before that record is honoured when the ZIP64 record it points to has the
  right signature; otherwise ZIP64 is silently ignored. ZIP64 values replace the 32-bit ones.
* Offsets are absolute. Unlike Python's ``zipfile``, miniz does not correct for bytes prepended to an
  archive.
* Members are looked up by **central-directory** name, ``<prefix>/<name>``, where the prefix is the
  first entry's name up to its first ``/``. The lookup is a binary search over a heap-sorted index and
  ignores ASCII case, so among duplicate (or case-variant) names the one torch reads depends on the
  heap sort, not on position; Python's ``zipfile`` takes the last exact match instead.
* The local header is only used for its signature and its name and extra lengths: data starts at
  ``header + 30 + local name length + local extra length``. Local names, flags, methods, sizes and
  CRCs are ignored.
* CRC-32 is never verified (torch builds miniz with ``MINIZ_DISABLE_ZIP_READER_CRC32_CHECKS``).
* Stored members are read for their *uncompressed* size (miniz only checks the compressed size
  against the file, and only insists the two match when method and modification time are both 0).
* Deflated members are inflated into a buffer of their uncompressed size. Only a stream that ends
  early is an error; a stream that is longer is cut at that size, and one that is corrupt or cut
  short fails *without* miniz setting an error, so torch uses the buffer with an uninitialised tail.
* Encrypted (flag bits 0 and 6) and patch (bit 5) members, and methods other than 0 and 8, are
  refused when read; bit 13 (masked local headers) makes the whole archive unreadable.
* Members marked as directories, or with a compressed size of 0, are "read" without touching the
  file: torch returns an uninitialised buffer of the uncompressed size. :func:`read_entry` raises
  :class:`ScanError` wherever torch would hand uninitialised memory to the unpickler.
* Opening reads ``.data/serialization_id`` (when present) and ``.data/version`` or ``version``, parsed
  with ``std::stoull`` and required to be in 1..10. ``torch.load`` then lists every record and
  refuses archives with a member outside ``<prefix>/``.

Anomaly codes (``ZipAnomaly.code``): ``legacy-fallback``, ``prefix-data``, ``trailing-data``,
``multiple-eocd``, ``zip64-ignored``, ``zip64-mismatch``, ``cd-slack``, ``zipfile-rejects``,
``outside-prefix``, ``bad-version``, ``torch-refuses``, ``duplicate-entry``, ``name-case``, ``nul-in-name``,
``flag-bits``, ``unsupported-method``, ``bad-zip64-extra``, ``uninitialized-read``,
``bad-local-header``, ``local-name-mismatch``, ``local-header-mismatch``, ``size-mismatch``,
``truncated``, ``overlapping-entries``, ``compressed-pickle``, and, from :func:`read_entry`,
``bad-crc``, ``size-mismatch`` and ``deflate-slack``. Each code is listed at most 16 times; a final
anomaly of the same code counts the rest.

The local-header codes (``bad-local-header``, ``local-name-mismatch``, ``local-header-mismatch``) are
checked for every record except tensor data (``<prefix>/data/<key>``): those headers sit between the
weights, one page each, and are read only when the record's bytes are (see ``ZipEntry.local_read``).
Torch copies such records and never unpickles them, so a header trick there cannot change what runs.
"""

from __future__ import annotations

import contextlib
import mmap
import struct
import types
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from picklewarden.containers.sniff import looks_like_zip as looks_like_zip
from picklewarden.errors import LimitExceeded, ScanError, UnsupportedFormat
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

_MAX_FILENAME_BUFFER = 512  # MZ_ZIP_MAX_ARCHIVE_FILENAME_SIZE: getAllRecords truncates names to 511 bytes
_MIN_VERSION = 1
_MAX_VERSION = 10  # kMaxSupportedFileFormatVersion in torch 2.13
_INFLATE_CHUNK = 1 << 20
_VERSION_RECORD_CAP = 1 << 16
_MAX_PER_CODE = 16  # anomalies listed per code; the rest are counted

_TORCH_RECORDS = (
    "data.pkl",
    "constants.pkl",
    "version",
    ".data/version",
    "byteorder",
    ".format_version",
    ".storage_alignment",
    ".data/serialization_id",
)
"""Records torch.load and torch.jit.load look up by fixed name."""

_ASCII_FOLD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz")


@dataclass(frozen=True)
class ZipEntry:
    """One central-directory entry, with the values torch uses when it reads it."""

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
    index: int = -1
    """Position in the central directory."""
    directory: bool = False
    """miniz considers it a directory (name ends in '/' or DOS directory attribute): torch reads nothing."""
    stat_error: str | None = None
    """Why torch fails as soon as it looks this entry up, or None."""
    local_read: bool = True
    """Whether the local header was read when the directory was. Tensor-data records' headers are not: they
    sit between gigabytes of weights, one page each, and torch never unpickles what they hold."""


@dataclass(frozen=True)
class ZipAnomaly:
    """Something odd about the archive, or about how torch and other readers see it."""

    code: str
    member: str | None
    offset: int | None
    message: str


@dataclass(frozen=True)
class TorchZip:
    """The directory of a PyTorch ZIP archive as torch sees it."""

    entries: Mapping[str, ZipEntry] = field(hash=False)
    """By central-directory name: the entry torch reads when it looks that name up."""
    order: tuple[str, ...]
    """Central-directory names in central-directory order (duplicates included)."""
    prefix: str
    """The archive folder torch derives from the first entry ("archive" in "archive/data.pkl")."""
    anomalies: tuple[ZipAnomaly, ...]
    all_entries: tuple[ZipEntry, ...] = ()
    """Every central-directory entry in order, including those a duplicate shadows."""
    _lookup: Mapping[bytes, ZipEntry] = field(default_factory=dict, hash=False, compare=False, repr=False)

    def record(self, name: str) -> ZipEntry | None:
        """The entry torch reads for record ``name`` (looked up as ``prefix + "/" + name``), or None."""
        key = _lookup_key(_encode(self.prefix) + b"/" + _encode(name))
        if self._lookup:
            return self._lookup.get(key)
        # built by hand without the lookup table: compare folded names (duplicates resolve arbitrarily)
        return next((e for n, e in self.entries.items() if _encode(n).translate(_ASCII_FOLD) == key), None)


def open_torch_zip(data: Buffer, limits: Limits) -> TorchZip:
    """Parse the directory of a PyTorch ZIP archive the way torch does; member data is not read.

    Raises :class:`UnsupportedFormat` when there is no end-of-central-directory record torch can find,
    :class:`LimitExceeded` for more than ``limits.max_members`` entries, and :class:`ScanError` for every
    other archive torch cannot open.
    """
    return _Reader(data, limits).run()


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


# ----------------------------------------------------------------------------------------------------
# helpers


def _encode(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _lookup_key(name: bytes) -> bytes:
    """A lookup name as miniz compares it: cut at the first NUL (a C string), ASCII case folded."""
    nul = name.find(b"\x00")
    if nul >= 0:
        name = name[:nul]
    return name.translate(_ASCII_FOLD)


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


def _stoull(raw: bytes) -> int | None:
    """std::stoull(std::string) in base 10: None where it throws."""
    nul = raw.find(b"\x00")
    text = raw if nul < 0 else raw[:nul]
    text = text.lstrip(b" \t\n\v\f\r")
    negative = False
    if text[:1] in (b"+", b"-"):
        negative = text[:1] == b"-"
        text = text[1:]
    digits = 0
    while digits < len(text) and 0x30 <= text[digits] <= 0x39:
        digits += 1
    if digits == 0:
        return None
    value = int(text[:digits])
    if value > _U64_MASK:
        return None
    return (-value) & _U64_MASK if negative else value


def _heap_order(keys: list[bytes]) -> list[int]:
    """Central-directory indices in the order miniz's in-place heap sort leaves them.

    The order among equal keys depends on the exact sequence of sift-downs, so this follows the same
    textbook heap sort (build by sifting down from the last parent, then repeatedly move the root to
    the end), comparing with strict less-than as miniz does.
    """
    count = len(keys)
    order = list(range(count))
    if count <= 1:
        return order

    def sift_down(root: int, bound: int) -> None:
        while True:
            child = 2 * root + 1
            if child >= bound:
                return
            if child + 1 < bound and keys[order[child]] < keys[order[child + 1]]:
                child += 1
            if not keys[order[root]] < keys[order[child]]:
                return
            order[root], order[child] = order[child], order[root]
            root = child

    for start in range((count - 2) // 2, -1, -1):
        sift_down(start, count)
    for bound in range(count - 1, 0, -1):
        order[bound], order[0] = order[0], order[bound]
        sift_down(0, bound)
    return order


def _binary_search(keys: list[bytes], order: list[int], key: bytes) -> int | None:
    low, high = 0, len(order) - 1
    while low <= high:
        middle = low + ((high - low) >> 1)
        candidate = keys[order[middle]]
        if candidate == key:
            return order[middle]
        if candidate < key:
            low = middle + 1
        else:
            high = middle - 1
    return None


@dataclass
class _Raw:
    """A central-directory record as read, before local headers are looked at."""

    index: int
    cd_offset: int
    name: bytes
    flags: int
    method: int
    crc32: int
    compressed_size: int
    size: int
    header_offset: int
    external_attr: int
    extra: bytes
    time: int
    stat_error: str | None


class _Reader:
    """One pass over an archive's directory, collecting anomalies as it goes."""

    read_every_local_header = False
    """Tensor-data records' local headers are read on demand only (see :attr:`ZipEntry.local_read`)."""

    def __init__(self, data: Buffer, limits: Limits) -> None:
        self.data = data
        self.size = len(data)
        self.limits = limits
        self.anomalies: list[ZipAnomaly] = []
        self.zipfile_problems: list[str] = []
        self.per_code: dict[str, int] = {}

    def note(self, code: str, member: str | None, offset: int | None, message: str) -> None:
        seen = self.per_code[code] = self.per_code.get(code, 0) + 1
        if seen <= _MAX_PER_CODE:
            self.anomalies.append(_anomaly(code, member, offset, message))

    def summarise(self) -> tuple[ZipAnomaly, ...]:
        """The anomalies, with one closing note per code that occurred more often than is listed."""
        extra = [
            _anomaly(code, None, None, f"{count - _MAX_PER_CODE} more '{code}' anomalies are not listed")
            for code, count in self.per_code.items()
            if count > _MAX_PER_CODE
        ]
        return (*self.anomalies, *extra)

    # -- end of central directory -------------------------------------------------------------------

    def find_eocd(self) -> int:
        """Offset of the record miniz finds (mz_zip_reader_locate_header_sig)."""
        size = self.size
        if size < _EOCD_SIZE:
            raise UnsupportedFormat(f"{size} bytes is too small for a ZIP archive")
        start = max(size - _SEARCH_BLOCK, 0)
        while True:
            if start < 0:
                raise ScanError(
                    "torch cannot open this archive: its search for the end-of-central-directory record reads "
                    "at a negative offset (miniz bug for records 4 KiB to 64 KiB from the end of small files)"
                )
            window = bytes(self.data[start : start + min(_SEARCH_BLOCK, size - start)])
            last = size - _EOCD_SIZE - start  # the record must fit before the end of the file
            if last >= 0:
                found = window.rfind(_EOCD_SIG, 0, min(len(window), last + 4))
                if found >= 0:
                    return start + found
            if start == 0 or size - start >= _SEARCH_GIVE_UP:
                raise UnsupportedFormat("no end-of-central-directory record where torch looks for it")
            start -= _SEARCH_STEP

    def run(self) -> TorchZip:
        data, size = self.data, self.size
        eocd = self.find_eocd()
        self.check_tail(eocd)
        (_sig, disk, cd_disk, on_disk, total, cd_size, cd_offset, comment_len) = _EOCD.unpack(
            bytes(data[eocd : eocd + _EOCD_SIZE])
        )
        end_of_comment = eocd + _EOCD_SIZE + comment_len
        if end_of_comment < size:
            self.note(
                "trailing-data",
                None,
                end_of_comment,
                f"{size - end_of_comment} bytes follow the end-of-central-directory record and its comment; "
                "torch ignores them",
            )
        zip64_at = self.find_zip64(eocd)
        if zip64_at is not None:
            disk, cd_disk, on_disk, total, cd_size, cd_offset = self.read_zip64(
                zip64_at, (disk, cd_disk, on_disk, total, cd_size, cd_offset)
            )
        if total != on_disk or ((disk | cd_disk) != 0 and (disk != 1 or cd_disk != 1)):
            raise ScanError("torch cannot open this archive: it claims to span several disks")
        if cd_size < total * _CDH_SIZE:
            raise ScanError(
                f"torch cannot open this archive: {total} entries cannot fit in a {cd_size}-byte central directory"
            )
        if cd_offset + cd_size > size:
            raise ScanError(
                f"torch cannot open this archive: its central directory ({cd_size} bytes at offset {cd_offset}) "
                f"runs past the end of the {size}-byte file (truncated, or offsets relative to prepended data)"
            )
        if total == 0:
            raise ScanError("torch cannot open this archive: it does not contain any files")
        if total > self.limits.max_members:
            raise LimitExceeded("archive members", self.limits.max_members, total, eocd)
        self.compare_zipfile_directory(eocd, cd_offset, cd_size)
        raws = self.read_central_directory(cd_offset, cd_size, total, disk)
        return self.finish(raws)

    def check_tail(self, eocd: int) -> None:
        start = max(0, self.size - _SEARCH_GIVE_UP - _SEARCH_BLOCK)
        if bytes(self.data[start:eocd]).find(_EOCD_SIG) >= 0:
            self.note(
                "multiple-eocd",
                None,
                eocd,
                "more than one end-of-central-directory signature near the end of the file; torch uses the last one",
            )

    def compare_zipfile_directory(self, eocd: int, cd_offset: int, cd_size: int) -> None:
        """Where Python's zipfile finds the central directory (zipfile._EndRecData and _RealGetContents)."""
        data, size = self.data, self.size
        tail = bytes(data[max(size - _ZIPFILE_WINDOW, 0) :])
        if tail[-_EOCD_SIZE:][:4] == _EOCD_SIG and tail[-2:] == b"\x00\x00":
            found = size - _EOCD_SIZE
        else:
            at = tail.rfind(_EOCD_SIG)
            found = -1 if at < 0 else size - len(tail) + at
        if found < 0 or found + _EOCD_SIZE > size:
            self.zipfile_problems.append("it finds no end-of-central-directory record in the last 64 KiB")
            return
        if found != eocd:
            self.zipfile_problems.append(f"it uses the end record at offset {found}, torch the one at {eocd}")
            return
        fields = _EOCD.unpack(bytes(data[eocd : eocd + _EOCD_SIZE]))
        z_size, z_offset, location = fields[5], fields[6], eocd
        if eocd >= _Z64_LOCATOR_SIZE and bytes(data[eocd - _Z64_LOCATOR_SIZE : eocd - 16]) == _Z64_LOCATOR_SIG:
            locator = _Z64_LOCATOR.unpack(bytes(data[eocd - _Z64_LOCATOR_SIZE : eocd]))
            if locator[1] != 0 or locator[3] > 1:
                self.zipfile_problems.append("it refuses the ZIP64 locator's disk numbers")
                return
            record_at = eocd - _Z64_LOCATOR_SIZE - _Z64_EOCD_SIZE  # zipfile ignores the locator's offset
            if record_at >= 0 and bytes(data[record_at : record_at + 4]) == _Z64_EOCD_SIG:
                record = _Z64_EOCD.unpack(bytes(data[record_at : record_at + _Z64_EOCD_SIZE]))
                z_size, z_offset, location = record[8], record[9], record_at
        shift = location - z_size - z_offset
        if (z_offset + shift, z_size, shift) != (cd_offset, cd_size, 0):
            self.zipfile_problems.append(
                f"it reads a {z_size}-byte central directory at offset {z_offset + shift} with member offsets moved "
                f"by {shift}, torch a {cd_size}-byte one at {cd_offset}"
            )

    def find_zip64(self, eocd: int) -> int | None:
        """Offset of a ZIP64 end record torch honours, or None."""
        if eocd < _Z64_LOCATOR_SIZE + _Z64_EOCD_SIZE:
            return None
        locator = _Z64_LOCATOR.unpack(bytes(self.data[eocd - _Z64_LOCATOR_SIZE : eocd]))
        if locator[0] != _Z64_LOCATOR_SIG:
            return None
        record_at = int(locator[2])
        if record_at > self.size - _Z64_EOCD_SIZE:
            raise ScanError(f"torch cannot open this archive: its ZIP64 locator points past the end ({record_at})")
        if bytes(self.data[record_at : record_at + 4]) != _Z64_EOCD_SIG:
            self.note(
                "zip64-ignored",
                None,
                record_at,
                "a ZIP64 locator points at bytes that are not a ZIP64 end record; torch silently uses the 32-bit "
                "values",
            )
            return None
        if locator[3] != 1:
            raise ScanError("torch cannot open this archive: its ZIP64 locator claims several disks")
        return record_at

    def read_zip64(
        self, record_at: int, plain: tuple[int, int, int, int, int, int]
    ) -> tuple[int, int, int, int, int, int]:
        fields = _Z64_EOCD.unpack(bytes(self.data[record_at : record_at + _Z64_EOCD_SIZE]))
        record_size, disk, cd_disk, on_disk, total, cd_size, cd_offset = (
            fields[1],
            fields[4],
            fields[5],
            fields[6],
            fields[7],
            fields[8],
            fields[9],
        )
        if record_size < _Z64_EOCD_SIZE - 12:
            raise ScanError("torch cannot open this archive: its ZIP64 end record is too short")
        if total > _U32_MAX or on_disk > _U32_MAX:
            raise ScanError(f"torch cannot open this archive: its ZIP64 end record claims {total} entries")
        if cd_size > _U32_MAX:
            raise ScanError(f"torch cannot open this archive: its central directory claims {cd_size} bytes")
        wide = (disk, cd_disk, on_disk, total, cd_size, cd_offset)
        sentinels = (_U16_MAX, _U16_MAX, _U16_MAX, _U16_MAX, _U32_MAX, _U32_MAX)
        if any(p != w and p != s for p, w, s in zip(plain, wide, sentinels, strict=True)):
            self.note(
                "zip64-mismatch",
                None,
                record_at,
                f"the ZIP64 end record (entries {total}, directory {cd_size} bytes at {cd_offset}) disagrees with "
                f"the 32-bit one (entries {plain[3]}, directory {plain[4]} bytes at {plain[5]}); torch uses ZIP64",
            )
        return wide

    # -- central directory --------------------------------------------------------------------------

    def read_central_directory(self, cd_offset: int, cd_size: int, total: int, disk: int) -> list[_Raw]:
        data, size = self.data, self.size
        raws: list[_Raw] = []
        position, remaining = cd_offset, cd_size
        for index in range(total):
            header = bytes(data[position : position + _CDH_SIZE]) if remaining >= _CDH_SIZE else b""
            if len(header) < _CDH_SIZE or header[:4] != _CDH_SIG:
                raise ScanError(
                    f"torch cannot open this archive: central-directory entry {index} at offset {position} is "
                    "missing or corrupt"
                )
            (
                _sig,
                _made_by,
                _needed,
                flags,
                method,
                time,
                _date,
                crc32,
                compressed,
                plain,
                name_len,
                extra_len,
                comment_len,
                entry_disk,
                _internal,
                external,
                header_offset,
            ) = _CDH.unpack(header)
            if _CDH_SIZE + name_len + extra_len > remaining:
                raise ScanError(f"torch cannot open this archive: central-directory entry {index} is truncated")
            name = bytes(data[position + _CDH_SIZE : position + _CDH_SIZE + name_len])
            extra = bytes(data[position + _CDH_SIZE + name_len : position + _CDH_SIZE + name_len + extra_len])
            # The directory reader's own ZIP64 parse (PyTorch's patched miniz), used only for its checks.
            c_size, c_plain, c_offset = compressed, plain, header_offset
            if extra_len and max(compressed, plain, header_offset) == _U32_MAX:
                c_plain, c_size, c_offset = self.directory_zip64(index, extra, compressed, plain, header_offset)
            if c_size != _U32_MAX and c_plain != _U32_MAX:
                if ((method | (time << 16)) == 0 and c_plain != c_size) or (c_plain and not c_size):
                    raise ScanError(
                        f"torch cannot open this archive: entry {index} ({_decode(name)!r}) has inconsistent sizes "
                        f"(compressed {c_size}, uncompressed {c_plain})"
                    )
            if entry_disk == _U16_MAX or (entry_disk != disk and entry_disk != 1):
                raise ScanError(f"torch cannot open this archive: entry {index} is on another disk")
            if c_size != _U32_MAX and ((c_offset + _LOCAL_SIZE + c_size) & _U64_MASK) > size:
                raise ScanError(
                    f"torch cannot open this archive: entry {index} ({_decode(name)!r}, {c_size} bytes at "
                    f"{c_offset}) runs past the end of the {size}-byte file (truncated?)"
                )
            if flags & _FLAG_MASKED:
                raise ScanError(f"torch cannot open this archive: entry {index} has masked (encrypted) headers")
            record_size = _CDH_SIZE + name_len + extra_len + comment_len
            if record_size > remaining:
                raise ScanError(f"torch cannot open this archive: central-directory entry {index} is truncated")
            s_plain, s_size, s_offset, stat_error = _stat_zip64(extra, plain, compressed, header_offset)
            raws.append(
                _Raw(
                    index,
                    position,
                    name,
                    flags,
                    method,
                    crc32,
                    s_size,
                    s_plain,
                    s_offset,
                    external,
                    extra,
                    time,
                    stat_error,
                )
            )
            position += record_size
            remaining -= record_size
        if remaining >= _CDH_SIZE and bytes(data[position : position + 4]) == _CDH_SIG:
            self.note(
                "cd-slack",
                None,
                position,
                f"the central directory holds more entries than the {total} it declares; torch ignores them, "
                "Python's zipfile reads them",
            )
        elif remaining > 0:
            self.note(
                "cd-slack",
                None,
                position,
                f"{remaining} unused bytes at the end of the central directory; torch ignores them",
            )
        return raws

    def directory_zip64(
        self, index: int, extra: bytes, compressed: int, plain: int, offset: int
    ) -> tuple[int, int, int]:
        """ZIP64 values as PyTorch's patched mz_zip_reader_read_central_dir reads them (for its checks)."""
        position, remaining = 0, len(extra)
        while True:
            if remaining < 4:
                raise ScanError(f"torch cannot open this archive: entry {index} has a corrupt extra field")
            field_id, field_size = struct.unpack_from("<HH", extra, position)
            if field_size + 4 > remaining:
                raise ScanError(f"torch cannot open this archive: entry {index} has a corrupt extra field")
            if field_id == 1:
                break
            position += 4 + field_size
            remaining -= 4 + field_size
            if remaining == 0:
                break
        if remaining >= 4:
            position += 4
            remaining -= 4
            values = [plain, compressed, offset]
            for slot in range(3):
                if values[slot] == _U32_MAX and remaining >= 8:
                    values[slot] = int(struct.unpack_from("<Q", extra, position)[0])
                    position += 8
                    remaining -= 8
            plain, compressed, offset = values
        return plain, compressed, offset

    # -- entries, lookups and torch's own checks ----------------------------------------------------

    def finish(self, raws: list[_Raw]) -> TorchZip:
        first = raws[0].name
        slash = first.find(b"/")
        if slash < 0:
            raise ScanError(f"torch cannot open this archive: its first entry {_decode(first)!r} is not in a folder")
        prefix = first[:slash]
        entries = [self.make_entry(raw) for raw in raws]
        keys = [raw.name.translate(_ASCII_FOLD) for raw in raws]
        lookup = self.build_lookup(raws, entries, keys)
        by_name: dict[str, ZipEntry] = {}
        for raw, entry in zip(raws, entries, strict=True):
            found = lookup.get(_lookup_key(raw.name))
            if found is not None:
                by_name.setdefault(entry.name, found)
            if b"\x00" in raw.name:
                self.note(
                    "nul-in-name",
                    entry.name,
                    raw.cd_offset,
                    "the name contains a NUL byte: torch's C-string lookups never reach this entry, while Python's "
                    "zipfile cuts the name at the NUL and may read it in place of another member",
                )
        archive = TorchZip(
            entries=types.MappingProxyType(by_name),
            order=tuple(entry.name for entry in entries),
            prefix=_decode(prefix),
            anomalies=(),
            all_entries=tuple(entries),
            _lookup=types.MappingProxyType(lookup),
        )
        self.check_start(entries)
        self.check_prefix(raws, prefix)
        self.check_name_case(archive)
        self.check_open_records(archive)
        self.check_overlaps(entries)
        if self.zipfile_problems:
            self.note(
                "zipfile-rejects",
                None,
                None,
                "Python's zipfile cannot read this archive as torch does: " + "; ".join(self.zipfile_problems),
            )
        return TorchZip(
            entries=archive.entries,
            order=archive.order,
            prefix=archive.prefix,
            anomalies=self.summarise(),
            all_entries=archive.all_entries,
            _lookup=archive._lookup,
        )

    def make_entry(self, raw: _Raw) -> ZipEntry:
        data, size = self.data, self.size
        name = _decode(raw.name)
        directory = raw.name.endswith(b"/") or bool(raw.external_attr & _ATTR_DOS_DIRECTORY)
        data_offset = raw.header_offset + _LOCAL_SIZE
        # Tensor data: a lower bound now (the name's length; torch.save pads the extra field to align data),
        # the exact offset on demand. Reading 100k scattered headers would read the whole file.
        skip_local = _is_tensor_data(raw.name) and not self.read_every_local_header
        local = None if skip_local else _pread(data, size, raw.header_offset, _LOCAL_SIZE)
        if skip_local:
            data_offset += len(raw.name)
        elif local is None or local[:4] != ZIP_MAGIC:
            if not directory and raw.compressed_size:
                self.note(
                    "bad-local-header",
                    name,
                    raw.header_offset,
                    "no local header where the central directory points; torch fails when it reads this member",
                )
        else:
            fields = _LOCAL.unpack(local)
            local_flags, local_method, local_name_len, local_extra_len = fields[2], fields[3], fields[9], fields[10]
            data_offset = raw.header_offset + _LOCAL_SIZE + local_name_len + local_extra_len
            local_name = _pread(data, size, raw.header_offset + _LOCAL_SIZE, local_name_len)
            if local_name != raw.name:
                shown = _decode(local_name) if local_name is not None else "(past the end of the file)"
                self.note(
                    "local-name-mismatch",
                    name,
                    raw.header_offset,
                    f"the local header names it {shown!r}; torch uses the central-directory name and ignores the "
                    "local one, while Python's zipfile refuses to read the member",
                )
            if local_flags != raw.flags or local_method != raw.method:
                self.note(
                    "local-header-mismatch",
                    name,
                    raw.header_offset,
                    f"the local header says flags {local_flags:#06x} method {local_method}, the central directory "
                    f"flags {raw.flags:#06x} method {raw.method}; torch uses the central directory",
                )
        self.check_entry(raw, name, directory, data_offset)
        return ZipEntry(
            name=name,
            header_offset=raw.header_offset,
            data_offset=data_offset,
            compressed_size=raw.compressed_size,
            size=raw.size,
            method=raw.method,
            crc32=raw.crc32,
            flags=raw.flags,
            index=raw.index,
            directory=directory,
            stat_error=raw.stat_error,
            local_read=not skip_local,
        )

    def check_entry(self, raw: _Raw, name: str, directory: bool, data_offset: int) -> None:
        offset = raw.header_offset
        if raw.stat_error is not None:
            self.note(
                "bad-zip64-extra",
                name,
                raw.cd_offset,
                f"torch fails as soon as it looks this member up: {raw.stat_error}",
            )
        if raw.method not in (_STORED, _DEFLATED):
            self.note(
                "unsupported-method",
                name,
                offset,
                f"compression method {raw.method} is neither stored nor deflate; torch refuses to read this member",
            )
        elif raw.method == _DEFLATED and name.endswith(".pkl"):
            self.note(
                "compressed-pickle",
                name,
                offset,
                "the pickle is deflate-compressed (torch never compresses pickles it writes); torch inflates it on "
                "load, so its opcodes are not visible in the raw file",
            )
        unusual = raw.flags & ~(_FLAGS_USUAL | (_FLAGS_DEFLATE_OPTIONS if raw.method == _DEFLATED else 0))
        if unusual:
            if raw.flags & (_FLAG_ENCRYPTED | _FLAG_STRONG | _FLAG_PATCH):
                effect = "encrypted or patch data, so torch refuses to read this member"
            else:
                effect = "torch ignores them"
            self.note("flag-bits", name, offset, f"unusual general-purpose flag bits {unusual:#06x}: {effect}")
        if raw.flags & _FLAG_UTF8:
            try:
                raw.name.decode("utf-8")
            except UnicodeDecodeError:
                self.zipfile_problems.append(f"entry {raw.index} is flagged UTF-8 but its name is not valid UTF-8")
        if _zipfile_extra_corrupt(raw.extra):
            self.zipfile_problems.append(f"entry {raw.index} has a malformed extra field, which torch ignores")
        if (directory or raw.compressed_size == 0) and raw.size:
            self.note(
                "uninitialized-read",
                name,
                offset,
                f"miniz treats this member as {'a directory' if directory else 'empty'} and reads nothing, so torch "
                f"returns {raw.size} bytes of uninitialised memory for it",
            )
            return
        if raw.method == _STORED and raw.size != raw.compressed_size:
            self.note(
                "size-mismatch",
                name,
                offset,
                f"stored member with compressed size {raw.compressed_size} but size {raw.size}; torch reads {raw.size} "
                f"bytes, Python's zipfile at most {raw.compressed_size}",
            )
        needed = max(raw.compressed_size, raw.size if raw.method == _STORED else 0)
        if data_offset + needed > self.size:
            self.note(
                "truncated",
                name,
                offset,
                f"member data ({needed} bytes at offset {data_offset}) runs past the end of the file; torch fails "
                "when it reads this member",
            )

    def build_lookup(self, raws: list[_Raw], entries: list[ZipEntry], keys: list[bytes]) -> dict[bytes, ZipEntry]:
        """For every folded name, the entry miniz's binary search returns."""
        groups: dict[bytes, list[int]] = {}
        for index, key in enumerate(keys):
            groups.setdefault(key, []).append(index)
        lookup: dict[bytes, ZipEntry] = {}
        duplicated = [members for members in groups.values() if len(members) > 1]
        order = _heap_order(keys) if duplicated else []
        for key, members in groups.items():
            if len(members) == 1:
                lookup[key] = entries[members[0]]
                continue
            chosen = _binary_search(keys, order, key)
            assert chosen is not None  # a sorted index always finds an equal key
            lookup[key] = entries[chosen]
            exact_last = {raws[i].name: i for i in members}
            name = entries[chosen].name
            rest = [i for i in members if i != chosen]
            others = ", ".join(f"#{i} {entries[i].name!r} at {entries[i].header_offset}" for i in rest[:4])
            if len(rest) > 4:
                others += f" and {len(rest) - 4} more"
            zipfile_pick = exact_last[raws[chosen].name]
            self.note(
                "duplicate-entry",
                name,
                entries[chosen].header_offset,
                f"{len(members)} central-directory entries share this name (ignoring case); torch reads entry "
                f"#{chosen} at offset {entries[chosen].header_offset} (others: {others}), Python's zipfile reads "
                f"#{zipfile_pick} for this exact name",
            )
        return lookup

    def check_start(self, entries: list[ZipEntry]) -> None:
        first_header = min(entry.header_offset for entry in entries)
        starts_zip = bytes(self.data[:4]) == ZIP_MAGIC
        if self.size > 8 and bytes(self.data[:8]) == b"PYTORCH1":
            self.note(
                "torch-refuses",
                None,
                0,
                "the file starts with the 'PYTORCH1' magic of the preview-release format, which PyTorchStreamReader "
                "refuses",
            )
        if not starts_zip:
            self.note(
                "legacy-fallback",
                None,
                0,
                "the file does not start with a local header, so torch.load does not treat it as a ZIP and unpickles "
                "it from byte 0 as a legacy checkpoint (torch.jit.load still reads the ZIP)",
            )
        if first_header > 0:
            self.note(
                "prefix-data",
                None,
                0,
                f"{first_header} bytes precede the first member the central directory lists; torch ignores them"
                + ("" if starts_zip else " when it reads the ZIP"),
            )

    def check_prefix(self, raws: list[_Raw], prefix: bytes) -> None:
        """torch.load lists all records (getAllRecords), which throws for a name outside the prefix folder."""
        wanted = _c_string(prefix + b"/")
        for raw in raws:
            shown = _c_string(raw.name[: _MAX_FILENAME_BUFFER - 1])
            if shown[: len(prefix) + 1] != wanted[: len(prefix) + 1]:
                self.note(
                    "outside-prefix",
                    _decode(raw.name),
                    raw.cd_offset,
                    f"the member is not under {_decode(prefix)!r}/; torch.load refuses the whole archive, other "
                    "PyTorchStreamReader users (torch.jit.load) read it",
                )
                return

    def check_name_case(self, archive: TorchZip) -> None:
        """torch finds its records whatever their case; case-sensitive readers (zipfile) do not."""
        for record in _TORCH_RECORDS:
            entry = archive.record(record)
            wanted = f"{archive.prefix}/{record}"
            if entry is not None and entry.name != wanted:
                self.note(
                    "name-case",
                    entry.name,
                    entry.header_offset,
                    f"torch reads this member for {record!r} because miniz ignores ASCII case; case-sensitive readers "
                    f"such as Python's zipfile find no {wanted!r}",
                )

    def check_open_records(self, archive: TorchZip) -> None:
        """What PyTorchStreamReader reads while opening: .data/serialization_id, then the version record."""
        serialization = archive.record(".data/serialization_id")
        if serialization is not None:
            problem = self.try_read(serialization)
            if problem is not None:
                self.note(
                    "torch-refuses",
                    serialization.name,
                    serialization.header_offset,
                    f"torch reads .data/serialization_id while opening the archive and fails: {problem}",
                )
        version = archive.record(".data/version") or archive.record("version")
        if version is None:
            self.note("bad-version", None, None, "the archive has no version record; torch refuses to open it")
            return
        try:
            text, _ = _extract(self.data, version, _VERSION_RECORD_CAP)
        except LimitExceeded:
            self.note(
                "bad-version",
                version.name,
                version.header_offset,
                f"the version record is {version.size} bytes; torch reads it all and parses a number from its start",
            )
            return
        except ScanError as exc:
            self.note(
                "bad-version", version.name, version.header_offset, f"torch cannot read the version record: {exc}"
            )
            return
        value = _stoull(text)
        if value is None or not _MIN_VERSION <= value <= _MAX_VERSION:
            self.note(
                "bad-version",
                version.name,
                version.header_offset,
                f"version {text[:40]!r} is not a number in {_MIN_VERSION}..{_MAX_VERSION}; torch 2.x refuses to open "
                "the archive",
            )

    def try_read(self, entry: ZipEntry) -> str | None:
        try:
            _extract(self.data, entry, self.limits.max_pickle_bytes)
        except LimitExceeded:
            return None
        except ScanError as exc:
            return str(exc)
        return None

    def check_overlaps(self, entries: list[ZipEntry]) -> None:
        spans = sorted(
            (entry.header_offset, entry.data_offset + entry.compressed_size, entry.name)
            for entry in entries
            if not entry.directory and entry.compressed_size
        )
        reach, holder = -1, ""
        for start, end, name in spans:
            if start < reach:
                self.note(
                    "overlapping-entries",
                    name,
                    start,
                    f"this member's bytes overlap those of {holder!r}; the same bytes are read as two members",
                )
                return
            if end > reach:
                reach, holder = end, name


def _c_string(raw: bytes) -> bytes:
    nul = raw.find(b"\x00")
    return raw if nul < 0 else raw[:nul]


def _stat_zip64(extra: bytes, plain: int, compressed: int, offset: int) -> tuple[int, int, int, str | None]:
    """ZIP64 values as mz_zip_file_stat_internal reads them (what extraction uses), and its error if any."""
    if max(compressed, plain, offset) != _U32_MAX or not extra:
        return plain, compressed, offset, None
    position, remaining = 0, len(extra)
    while remaining:
        if remaining < 4:
            return plain, compressed, offset, "corrupt extra field"
        field_id, field_size = struct.unpack_from("<HH", extra, position)
        if field_size + 4 > remaining:
            return plain, compressed, offset, "corrupt extra field"
        if field_id == 1:
            cursor, left = position + 4, field_size
            values = [plain, compressed, offset]
            for slot in range(3):
                if values[slot] == _U32_MAX:
                    if left < 8:
                        return plain, compressed, offset, "ZIP64 extra field too short"
                    values[slot] = int(struct.unpack_from("<Q", extra, cursor)[0])
                    cursor += 8
                    left -= 8
            return values[0], values[1], values[2], None
        position += 4 + field_size
        remaining -= 4 + field_size
    return plain, compressed, offset, None


def _zipfile_extra_corrupt(extra: bytes) -> bool:
    """Python's zipfile raises 'Corrupt extra field' when a field's length runs past the extra data."""
    position = 0
    while len(extra) - position >= 4:
        _field_id, field_size = struct.unpack_from("<HH", extra, position)
        if field_size + 4 > len(extra) - position:
            return True
        position += 4 + field_size
    return False
