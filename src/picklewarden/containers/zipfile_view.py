"""What Python's ``zipfile`` needs to see of an archive to read the pickle members torch reads.

``zipfile.ZipFile`` parses every central-directory record before it reads one member: on a state dict
with 100,000 tensors that is 100,000 ``ZipInfo`` objects, to compare the one or two pickles torch reads.
In the plainly regular case (below) the result depends only on a few records, so zipfile is handed the
archive with its central directory cut down to those records, and it runs its own code on them: its end
record search, its name decoding and last-entry-wins lookup, its local-header, flag, overlap and CRC checks,
its decompression. Outside that case it gets the whole archive.

Plainly regular (each condition is why leaving a record out changes nothing, in CPython 3.10-3.13):

* zipfile's own ``_EndRecData`` (run on the archive: it reads only the tail) finds the directory where
  torch does, with no bytes prepended (so zipfile reads exactly the records torch walked, at the same
  offsets), and those records fill the directory exactly (no slack for zipfile to read as more records);
* every record is one zipfile reads plainly (:func:`~picklewarden.containers.ziprecords._zipfile_plain`): it
  raises on none, and its name is its ASCII bytes, so a record left out is never one zipfile would find
  under a name torch reads;
* local-header offsets increase strictly along the directory: zipfile (3.12+) lets a member run up to the
  next local header (or the directory), and that next header is the following record, which is kept;
* the data of every record kept for its name ends before the directory, so it is read from the same bytes.

The records kept are those named like a member torch reads, and each one's successor; they are followed
by ZIP64 and plain end records as zipfile writes them, placing the directory where it was.
"""

from __future__ import annotations

import operator
import struct
import zipfile
from itertools import compress

from picklewarden._typing import TYPE_CHECKING, NamedTuple, cast
from picklewarden.containers.base import BufferReader, Data
from picklewarden.containers.zipcolumns import FLAG_ENDS_IN_L, mask

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable

    from picklewarden.containers.torchzip import TorchZip

_EOCD = struct.Struct("<4sHHHHIIH")
_Z64_EOCD = struct.Struct("<4sQHHIIQQQQ")
_Z64_LOCATOR = struct.Struct("<4sIQI")
_LOCAL = struct.Struct("<4sHHHHHIIIHH")
_EOCD_MAGIC = b"PK\x05\x06"
_Z64_EOCD_MAGIC = b"PK\x06\x06"
_Z64_LOCATOR_MAGIC = b"PK\x06\x07"
_LOCAL_MAGIC = b"PK\x03\x04"
_U16 = 0xFFFF
_HEADER = operator.attrgetter("header_offset")
_U32 = 0xFFFFFFFF


class ZipfileLayout(NamedTuple):
    """Where the central directory torch walked lies, and whether zipfile reads its records plainly."""

    # A NamedTuple, not a dataclass: see "Start-up" in docs/benchmarks.md.
    cd_offset: int
    cd_size: int
    positions: tuple[int, ...]
    """Offset of each central-directory record, in directory order."""
    plain: bool
    """Every record is one zipfile reads plainly, and they fill the directory exactly."""

    def __repr__(self) -> str:  # without the positions: one per record
        return f"ZipfileLayout(cd_offset={self.cd_offset}, cd_size={self.cd_size}, plain={self.plain})"


class _Spliced:
    """The archive's bytes up to ``cut``, then ``tail``: sliceable like the file itself."""

    def __init__(self, data: Data, cut: int, tail: bytes) -> None:
        self._data = data
        self._cut = cut
        self._tail = tail

    def __len__(self) -> int:
        return self._cut + len(self._tail)

    def __getitem__(self, span: slice) -> bytes:
        start, stop, _ = span.indices(len(self))
        cut = self._cut
        head = bytes(self._data[start : min(stop, cut)]) if start < cut else b""
        return head + self._tail[max(start - cut, 0) : max(stop - cut, 0)]


SPLICE_FROM = 64
"""Records from which the directory is cut down: below, zipfile parses the few records faster than the cut is made."""


def zipfile_source(data: Data, archive: TorchZip, wanted: Collection[str]) -> Data:
    """The bytes to hand ``zipfile`` for reading members ``wanted``: the archive with only the records that
    decide what zipfile reads for them, when the archive is plainly regular, else the archive itself."""
    layout = archive.zipfile_layout
    if layout is None or not layout.plain or not wanted or len(archive.all_entries) < SPLICE_FROM:
        return data
    if not _same_directory(data, layout):
        return data
    entries = archive.all_entries
    count = len(entries)
    if count != len(layout.positions):
        return data
    if not archive.in_order():  # (in order: header offsets increase)
        offsets = list(map(_HEADER, entries))
        if any(map(operator.ge, offsets[:-1], offsets[1:])):
            return data
    chosen = set(wanted)
    # torch's pickle records (what the differential compares) end in "l" or "L": a flag of the archive's
    maybe: Iterable[int] = range(count)
    if all(name.endswith(("l", "L")) for name in chosen):
        maybe = compress(range(count), mask(archive.data_flags(), FLAG_ENDS_IN_L))
    named = [index for index in maybe if archive.order[index] in chosen]
    for index in named:
        end = _data_end(data, entries[index].header_offset, entries[index].compressed_size)
        if end is None or end > layout.cd_offset:
            return data
    kept = sorted({*named, *(index + 1 for index in named if index + 1 < count)})
    bounds = (*layout.positions, layout.cd_offset + layout.cd_size)
    records = b"".join(bytes(data[bounds[index] : bounds[index + 1]]) for index in kept)
    spliced = _Spliced(data, layout.cd_offset, records + _end_records(len(kept), len(records), layout.cd_offset))
    return cast("Data", spliced)  # sliced and measured like the file, which is all BufferReader asks


def _end_records(count: int, size: int, offset: int) -> bytes:
    """ZIP64 end record, its locator and the end record, as zipfile writes them for a directory of
    ``count`` records, ``size`` bytes at ``offset`` (ZIP64 always, as torch writes: any size fits)."""
    zip64_at = offset + size
    return (
        _Z64_EOCD.pack(_Z64_EOCD_MAGIC, _Z64_EOCD.size - 12, 45, 45, 0, 0, count, count, size, offset)
        + _Z64_LOCATOR.pack(_Z64_LOCATOR_MAGIC, 0, zip64_at, 1)
        + _EOCD.pack(_EOCD_MAGIC, 0, 0, min(count, _U16), min(count, _U16), min(size, _U32), min(offset, _U32), 0)
    )


def _same_directory(data: Data, layout: ZipfileLayout) -> bool:
    """zipfile's own end-record search (it reads only the tail) finds torch's directory, plainly."""
    try:
        end = zipfile._EndRecData(BufferReader(data))  # type: ignore[attr-defined]
        if end is None:
            return False
        signature, size, offset, location = (
            end[zipfile._ECD_SIGNATURE],  # type: ignore[attr-defined]
            end[zipfile._ECD_SIZE],  # type: ignore[attr-defined]
            end[zipfile._ECD_OFFSET],  # type: ignore[attr-defined]
            end[zipfile._ECD_LOCATION],  # type: ignore[attr-defined]
        )
    except (AttributeError, IndexError, TypeError, ValueError, OSError, EOFError, zipfile.BadZipFile, struct.error):
        return False  # another zipfile than the one described above: let it read the whole archive
    # zipfile's start of the archive: after the ZIP64 records when it found them, else after the directory
    concat = location - size - offset - (_Z64_EOCD.size + _Z64_LOCATOR.size if signature == _Z64_EOCD_MAGIC else 0)
    return (offset, size, concat) == (layout.cd_offset, layout.cd_size, 0)


def _data_end(data: Data, header_offset: int, compressed_size: int) -> int | None:
    """Where zipfile stops reading a member's data: after its local header, name, extra and compressed
    size; None when there is no local header to read."""
    raw = bytes(data[header_offset : header_offset + _LOCAL.size])
    if len(raw) < _LOCAL.size or raw[:4] != _LOCAL_MAGIC:
        return None
    fields = _LOCAL.unpack(raw)
    return int(header_offset + _LOCAL.size + fields[9] + fields[10] + compressed_size)
