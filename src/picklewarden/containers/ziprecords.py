"""One central-directory record as the directory walk reads it (:class:`_Raw`), the walk's result
(:class:`Walk`), and the record-level rules both walks apply: miniz's ZIP64 stat, Python's zipfile's view of a
name and extra field, C-string names.

Split from :mod:`picklewarden.containers.zipdir`, which walks the directory (in Python, or through the
compiled ``_speedups.central_directory``) and builds these.
"""

from __future__ import annotations

import struct

from picklewarden._typing import TYPE_CHECKING
from picklewarden.containers.zipentry import _U32_MAX, ZipEntry

if TYPE_CHECKING:
    from typing import Any

_ZIPFILE_MAX_VERSION = 63  # zipfile.MAX_EXTRACT_VERSION: a record needing a later version makes zipfile raise


# Plain classes, not dataclasses: Python 3.11 compiles each generated method at import, which every one-file
# scan pays for (see "Start-up" in docs/benchmarks.md). Equality is kept: the two cores' walks are compared.
# _Raw's fields in the order of __init__ (the order of the compiled walk's record tuples).
_RAW_FIELDS = (
    "index",
    "cd_offset",
    "name",
    "flags",
    "method",
    "crc32",
    "compressed_size",
    "size",
    "header_offset",
    "external_attr",
    "extra",
    "time",
    "stat_error",
    "zipfile_plain",
)


class _Raw:
    """A central-directory record as read, before local headers are looked at."""

    __slots__ = _RAW_FIELDS

    def __init__(
        self,
        index: int,
        cd_offset: int,
        name: bytes,
        flags: int,
        method: int,
        crc32: int,
        compressed_size: int,
        size: int,
        header_offset: int,
        external_attr: int,
        extra: bytes,
        time: int,
        stat_error: str | None,
        zipfile_plain: bool = False,
    ) -> None:
        self.index = index
        self.cd_offset = cd_offset
        self.name = name
        self.flags = flags
        self.method = method
        self.crc32 = crc32
        self.compressed_size = compressed_size
        self.size = size
        self.header_offset = header_offset
        self.external_attr = external_attr
        self.extra = extra
        self.time = time
        self.stat_error = stat_error
        self.zipfile_plain = zipfile_plain
        """Python's zipfile reads this record exactly as its bytes say (see :func:`_zipfile_plain`)."""

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in _RAW_FIELDS)

    def __eq__(self, other: object) -> bool:
        return type(other) is _Raw and self._values() == other._values()

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass it replaces

    def __repr__(self) -> str:
        return f"_Raw{self._values()!r}"


class Walk:
    """The central directory as walked: every record's name and offset, and what torchzip builds entries from."""

    __slots__ = (
        "entries",
        "folder_shared",
        "names",
        "names_lower",
        "names_nul_free",
        "positions",
        "raws",
        "zipfile_plain",
    )

    def __init__(
        self,
        raws: list[_Raw],
        entries: list[ZipEntry | None],
        names: list[bytes],
        positions: list[int],
        zipfile_plain: bool,
        names_lower: bool,
        names_nul_free: bool,
        folder_shared: bool,
    ) -> None:
        self.raws = raws
        """The records whose entries are built in Python: every record, except those in ``entries``."""
        self.entries = entries
        """By record: the entry the compiled walk built for a plain tensor record (stored raw storage bytes
        with an ASCII name and nothing odd about them: their local header unread, no check to note), else
        None."""
        self.names = names
        self.positions = positions
        """Offset of each record."""
        self.zipfile_plain = zipfile_plain
        """Python's zipfile reads every record plainly (:func:`_zipfile_plain`)."""
        self.names_lower = names_lower
        """No name holds an ASCII capital: each is its own case-folded lookup key."""
        self.names_nul_free = names_nul_free
        """No name holds a NUL: no C-string lookup cuts one short."""
        self.folder_shared = folder_shared
        """Every name starts with the first name's folder, up to and including its first ``/``."""

    def _values(self) -> tuple[Any, ...]:
        return (
            self.raws,
            self.entries,
            self.names,
            self.positions,
            self.zipfile_plain,
            self.names_lower,
            self.names_nul_free,
            self.folder_shared,
        )

    def __eq__(self, other: object) -> bool:
        return type(other) is Walk and self._values() == other._values()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Walk{self._values()!r}"


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


def _zipfile_plain(name: bytes, extra: bytes, extract_version: int) -> bool:
    """Python's zipfile (3.10-3.13, ``_RealGetContents``) reads this record's name as its raw bytes, accepts
    its version and extra field, and takes nothing from the extra field.

    ASCII names decode alike as cp437 and UTF-8; zipfile cuts a name at a NUL and, on Windows, turns
    backslashes into slashes; versions above 6.3 raise; ZIP64 extras (id 1) replace sizes and offsets, and
    from 3.12 a Unicode path extra (0x7075) replaces the name.
    """
    if extract_version > _ZIPFILE_MAX_VERSION or not name.isascii() or b"\x00" in name or b"\\" in name:
        return False
    position = 0
    while len(extra) - position >= 4:
        field_id, field_size = struct.unpack_from("<HH", extra, position)
        if field_size + 4 > len(extra) - position or field_id in (0x0001, 0x7075):
            return False
        position += 4 + field_size
    return True


def _zipfile_extra_corrupt(extra: bytes) -> bool:
    """Python's zipfile raises 'Corrupt extra field' when a field's length runs past the extra data."""
    position = 0
    while len(extra) - position >= 4:
        _field_id, field_size = struct.unpack_from("<HH", extra, position)
        if field_size + 4 > len(extra) - position:
            return True
        position += 4 + field_size
    return False
