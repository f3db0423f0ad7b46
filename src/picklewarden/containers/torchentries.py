"""The entries of the records torchzip builds in Python, with torch's per-record checks.

Records the compiled walk does not build itself (every record on the pure-Python core; names, methods,
flags or extras out of the ordinary; everything but tensor data) get their local header read (tensor
data's only on demand) and each check of :meth:`EntryReader.check_entry` noted. Split from
:mod:`picklewarden.containers.torchzip`, whose reader extends this one.
"""

from __future__ import annotations

from picklewarden.containers.zipdir import DirectoryReader
from picklewarden.containers.zipentry import (
    _ATTR_DOS_DIRECTORY,
    _DEFLATED,
    _FLAG_ENCRYPTED,
    _FLAG_PATCH,
    _FLAG_STRONG,
    _FLAG_UTF8,
    _FLAGS_DEFLATE_OPTIONS,
    _FLAGS_USUAL,
    _LOCAL,
    _LOCAL_SIZE,
    _STORED,
    ZIP_MAGIC,
    ZipEntry,
    _decode,
    _is_tensor_data,
    _pread,
)
from picklewarden.containers.ziprecords import _Raw, _zipfile_extra_corrupt


def _entry(raw: _Raw, name: str, data_offset: int, directory: bool, *, local_read: bool) -> ZipEntry:
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
        local_read=local_read,
    )


class EntryReader(DirectoryReader):
    """A directory reader that builds an entry per record and notes what torch does with it."""

    read_every_local_header = False
    """Tensor-data records' local headers are read on demand only (see :attr:`ZipEntry.local_read`); the
    compiled walk builds the entries of plain ones (``Walk.entries``)."""

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
        return _entry(raw, name, data_offset, directory, local_read=not skip_local)

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
