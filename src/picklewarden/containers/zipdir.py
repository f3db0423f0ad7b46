"""The end-of-central-directory search and the central directory of a ZIP, as torch's miniz reads them.

:class:`DirectoryReader` finds the end record (miniz's backwards search), follows ZIP64, compares with
where Python's ``zipfile`` looks, and reads the central-directory records with miniz's checks (the records
and the walk's result are :mod:`picklewarden.containers.ziprecords`).
:mod:`picklewarden.containers.torchzip` turns those records into the entries torch looks up.
"""

from __future__ import annotations

import mmap
import struct
from itertools import repeat

from picklewarden import _native
from picklewarden._typing import TYPE_CHECKING
from picklewarden.containers.zipentry import (
    _CDH,
    _CDH_SIG,
    _CDH_SIZE,
    _EOCD,
    _EOCD_SIG,
    _EOCD_SIZE,
    _FLAG_MASKED,
    _FLAGS_USUAL,
    _LOCAL_SIZE,
    _MAX_PER_CODE,
    _SEARCH_BLOCK,
    _SEARCH_GIVE_UP,
    _SEARCH_STEP,
    _U16_MAX,
    _U32_MAX,
    _U64_MASK,
    _Z64_EOCD,
    _Z64_EOCD_SIG,
    _Z64_EOCD_SIZE,
    _Z64_LOCATOR,
    _Z64_LOCATOR_SIG,
    _Z64_LOCATOR_SIZE,
    _ZIPFILE_WINDOW,
    Buffer,
    ZipAnomaly,
    ZipEntry,
    _anomaly,
    _decode,
)
from picklewarden.containers.ziprecords import Walk as Walk
from picklewarden.containers.ziprecords import _Raw, _stat_zip64, _zipfile_plain
from picklewarden.errors import LimitExceeded, ScanError, UnsupportedFormat

if TYPE_CHECKING:
    from picklewarden.limits import Limits


class DirectoryReader:
    """One pass over an archive's directory, collecting anomalies as it goes."""

    read_every_local_header = True
    """Whether entries are built with their local headers read (else tensor-data records' are not: see
    :attr:`ZipEntry.local_read`, and the compiled walk builds those entries itself)."""

    def __init__(self, data: Buffer, limits: Limits) -> None:
        self.data = data
        self.size = len(data)
        self.limits = limits
        self.anomalies: list[ZipAnomaly] = []
        self.zipfile_problems: list[str] = []
        self.per_code: dict[str, int] = {}
        self.cd_span = (0, 0)
        """Offset and size of the central directory walked."""
        self.slack = False
        """Whether the declared entries leave bytes of the central directory unread."""

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

    def read_directory(self) -> Walk:
        """The central-directory records miniz reads; raises where torch cannot open the archive."""
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
        self.cd_span = (cd_offset, cd_size)
        return self.read_central_directory(cd_offset, cd_size, total, disk)

    def check_tail(self, eocd: int) -> None:
        start = max(0, self.size - _SEARCH_GIVE_UP - _SEARCH_BLOCK)
        data = self.data
        native = _native.speedups
        if isinstance(data, (bytes, mmap.mmap)):
            # In place: a small file is searched whole, not copied (the compiled search takes half the time).
            if native is None:
                found = data.find(_EOCD_SIG, start, eocd)
            else:
                found = native.find_bytes(data, _EOCD_SIG, start, eocd)
        else:
            found = bytes(data[start:eocd]).find(_EOCD_SIG)
        if found >= 0:
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

    def read_central_directory(self, cd_offset: int, cd_size: int, total: int, disk: int) -> Walk:
        data, size = self.data, self.size
        native = _native.speedups
        # The compiled walk returns None for a directory torch refuses: the loop below then says why.
        found = (
            None
            if native is None
            else native.central_directory(
                data,
                cd_offset,
                cd_size,
                total,
                disk,
                size,
                _FLAGS_USUAL,
                None if self.read_every_local_header else ZipEntry,
            )
        )
        if found is not None:
            records, entries, names, positions, plain, position, remaining, lower, nul_free, shared = found
            self.note_slack(position, remaining, total)
            return Walk(
                [_Raw(*record) for record in records], entries, names, positions, plain, lower, nul_free, shared
            )
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
                    zipfile_plain=_zipfile_plain(name, extra, header[6]),
                )
            )
            position += record_size
            remaining -= record_size
        self.note_slack(position, remaining, total)
        names = [raw.name for raw in raws]
        joined = b"".join(names)
        folder = names[0][: names[0].find(b"/") + 1] if names else b""
        return Walk(
            raws,
            [None] * len(raws),
            names,
            [raw.cd_offset for raw in raws],
            all(raw.zipfile_plain for raw in raws),
            joined.lower() == joined,
            b"\x00" not in joined,
            bool(folder) and all(map(bytes.startswith, names, repeat(folder))),
        )

    def note_slack(self, position: int, remaining: int, total: int) -> None:
        """What follows the declared entries inside the central directory."""
        self.slack = remaining != 0
        if remaining >= _CDH_SIZE and bytes(self.data[position : position + 4]) == _CDH_SIG:
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
