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
``bad-crc``, ``size-mismatch`` and ``deflate-slack``, and from :func:`read_plain` ``flags-ignored``.
Each code is listed at most 16 times; a final anomaly of the same code counts the rest.

Readers of last resort: :func:`read_plain` returns a member's bytes whatever its encryption, strong-
encryption or patch flags say (stored data is plain; torch and ``zipfile`` refuse such members, lenient
readers do not), and :func:`~picklewarden.containers.zip_lenient.open_any_zip` lists the entries of any
ZIP, without torch's prefix folder and version record. The scanner uses them so that damage becomes a
finding, not an unscanned member.

The code is split: :mod:`~picklewarden.containers.zipentry` (one member's bytes),
:mod:`~picklewarden.containers.zipindex` (miniz's name index),
:mod:`~picklewarden.containers.zipdir` (end record and central directory; the compiled walk builds
plain tensor records' entries), :mod:`~picklewarden.containers.ziprecords` (a record, the walk's result),
:mod:`~picklewarden.containers.torchentries` (the entries built in Python, with the per-record checks),
:mod:`~picklewarden.containers.zipcolumns` (whole-archive passes over the entries),
:mod:`~picklewarden.containers.torchopen` (what torch reads on opening),
:mod:`~picklewarden.containers.zipfile_view` (the records that decide what Python's zipfile reads) and
this module (torch's lookup and its own checks).

The local-header codes (``bad-local-header``, ``local-name-mismatch``, ``local-header-mismatch``) are
checked for every record except tensor data (``<prefix>/data/<key>``): those headers sit between the
weights, one page each, and are read only when the record's bytes are (see ``ZipEntry.local_read``).
Torch copies such records and never unpickles them, so a header trick there cannot change what runs.
"""

from __future__ import annotations

import types
from itertools import repeat
from operator import attrgetter, methodcaller

from picklewarden._typing import TYPE_CHECKING, cast
from picklewarden.containers.sniff import looks_like_zip as looks_like_zip
from picklewarden.containers.torchentries import EntryReader
from picklewarden.containers.torchopen import check_name_case, check_open_records
from picklewarden.containers.zipcolumns import entry_flags, ordered_spans
from picklewarden.containers.zipentry import (
    ZIP_MAGIC as ZIP_MAGIC,
)
from picklewarden.containers.zipentry import (
    Buffer,
    _decode,
    _encode,
)
from picklewarden.containers.zipentry import (
    ZipAnomaly as ZipAnomaly,
)
from picklewarden.containers.zipentry import (
    ZipEntry as ZipEntry,
)
from picklewarden.containers.zipentry import (
    data_start as data_start,
)
from picklewarden.containers.zipentry import (
    read_entry as read_entry,
)
from picklewarden.containers.zipentry import (
    read_plain as read_plain,
)
from picklewarden.containers.zipfile_view import ZipfileLayout
from picklewarden.containers.zipindex import _ASCII_FOLD, ByName, _binary_search, _heap_order, _lookup_key
from picklewarden.containers.ziprecords import Walk, _c_string
from picklewarden.errors import ScanError

if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from picklewarden.limits import Limits

_MAX_FILENAME_BUFFER = 512  # MZ_ZIP_MAX_ARCHIVE_FILENAME_SIZE: getAllRecords truncates names to 511 bytes

_FOLD = methodcaller("translate", _ASCII_FOLD)
_NAME = attrgetter("name")
_HEADER = attrgetter("header_offset")
_DATA = attrgetter("data_offset")
_SIZE = attrgetter("compressed_size")
_DIRECTORY = attrgetter("directory")


class TorchZip:
    """The directory of a PyTorch ZIP archive as torch sees it. Immutable.

    A plain class, not a dataclass: Python 3.11 compiles each generated method at import, which every
    one-file scan pays for (see "Start-up" in docs/benchmarks.md).
    """

    __slots__ = (
        "_flags",
        "_in_order",
        "_lookup",
        "all_entries",
        "anomalies",
        "entries",
        "order",
        "prefix",
        "zipfile_layout",
    )
    entries: Mapping[str, ZipEntry]
    """By central-directory name: the entry torch reads when it looks that name up."""
    order: tuple[str, ...]
    """Central-directory names in central-directory order (duplicates included)."""
    prefix: str
    """The archive folder torch derives from the first entry ("archive" in "archive/data.pkl")."""
    anomalies: tuple[ZipAnomaly, ...]
    all_entries: tuple[ZipEntry, ...]
    """Every central-directory entry in order, including those a duplicate shadows."""
    _lookup: Mapping[bytes, ZipEntry]
    _flags: bytes | None
    _in_order: bool | None
    zipfile_layout: ZipfileLayout | None
    """The directory's place and records, for reading members as Python's zipfile does (None: unknown)."""

    def __init__(
        self,
        *,
        entries: Mapping[str, ZipEntry],
        order: tuple[str, ...],
        prefix: str,
        anomalies: tuple[ZipAnomaly, ...],
        all_entries: tuple[ZipEntry, ...] = (),
        _lookup: Mapping[bytes, ZipEntry] | None = None,
        zipfile_layout: ZipfileLayout | None = None,
    ) -> None:
        _set = object.__setattr__
        _set(self, "entries", entries)
        _set(self, "order", order)
        _set(self, "prefix", prefix)
        _set(self, "anomalies", anomalies)
        _set(self, "all_entries", all_entries)
        _set(self, "_lookup", {} if _lookup is None else _lookup)
        _set(self, "zipfile_layout", zipfile_layout)
        _set(self, "_flags", None)
        _set(self, "_in_order", None)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"TorchZip is immutable: cannot set {name}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"TorchZip is immutable: cannot delete {name}")

    def _compared(self) -> tuple[Any, ...]:
        # the lookup table is derived from the entries
        return (self.entries, self.order, self.prefix, self.anomalies, self.all_entries, self.zipfile_layout)

    def __eq__(self, other: object) -> bool:
        return type(other) is TorchZip and self._compared() == other._compared()

    def __hash__(self) -> int:
        return hash((self.order, self.prefix, self.anomalies, self.all_entries))

    def __repr__(self) -> str:
        return f"TorchZip(prefix={self.prefix!r}, order={self.order!r}, anomalies={self.anomalies!r})"

    def data_flags(self) -> bytes:
        """:func:`~picklewarden.containers.zipcolumns.entry_flags` of :attr:`all_entries` for the tensor
        folder ``<prefix>/data/``, worked out once: the storage check, the storage peeks and numpy's view
        each pick storages from it."""
        if self._flags is None:
            object.__setattr__(self, "_flags", entry_flags(self.all_entries, self.prefix + "/data/"))
        return cast("bytes", self._flags)

    def in_order(self) -> bool:
        """:func:`~picklewarden.containers.zipcolumns.ordered_spans` of :attr:`all_entries`, worked out
        once: members listed in file order (header offsets strictly increasing) without overlapping."""
        if self._in_order is None:
            object.__setattr__(self, "_in_order", ordered_spans(self.all_entries))
        return bool(self._in_order)

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


class _Reader(EntryReader):
    """The directory as torch sees it: entries, the lookup miniz's binary search makes, torch's own checks."""

    def run(self) -> TorchZip:
        return self.finish(self.read_directory())

    # -- entries, lookups and torch's own checks ----------------------------------------------------

    def finish(self, walk: Walk) -> TorchZip:
        names = walk.names
        first = names[0]
        slash = first.find(b"/")
        if slash < 0:
            raise ScanError(f"torch cannot open this archive: its first entry {_decode(first)!r} is not in a folder")
        prefix = first[:slash]
        built = walk.entries
        for raw in walk.raws:
            built[raw.index] = self.make_entry(raw)
        entries = cast("list[ZipEntry]", built)  # every record now has its entry
        # torch.save writes lower-case names under a lower-case folder: then each name is its own folded key
        keys = names if walk.names_lower else list(map(_FOLD, names))
        lookup = self.build_lookup(names, entries, keys)
        by_name: dict[str, ZipEntry] = {}
        order = tuple(map(_NAME, entries))
        distinct: Mapping[str, ZipEntry] | None = None
        if len(lookup) == len(names) and walk.names_nul_free:
            # Every name distinct even ignoring case, and no C-string cuts: each entry is its own lookup.
            distinct = ByName(lookup, order)
        else:
            for name, position, entry in zip(names, walk.positions, entries, strict=True):
                found = lookup.get(_lookup_key(name))
                if found is not None:
                    by_name.setdefault(entry.name, found)
                if b"\x00" in name:
                    self.note(
                        "nul-in-name",
                        entry.name,
                        position,
                        "the name contains a NUL byte: torch's C-string lookups never reach this entry, while "
                        "Python's zipfile cuts the name at the NUL and may read it in place of another member",
                    )
        archive = TorchZip(
            entries=types.MappingProxyType(by_name) if distinct is None else distinct,
            order=order,
            prefix=_decode(prefix),
            anomalies=(),
            all_entries=tuple(entries),
            _lookup=types.MappingProxyType(lookup),
        )
        in_order = ordered_spans(entries)
        # members in file order: the first has the lowest header offset
        self.check_start(entries[0].header_offset if in_order else min(map(_HEADER, entries)))
        self.check_prefix(names, walk.positions, prefix, walk.folder_shared)
        check_name_case(self, archive)
        check_open_records(self, archive)
        self.check_overlaps(entries, in_order)
        if self.zipfile_problems:
            self.note(
                "zipfile-rejects",
                None,
                None,
                "Python's zipfile cannot read this archive as torch does: " + "; ".join(self.zipfile_problems),
            )
        cd_offset, cd_size = self.cd_span
        done = TorchZip(
            entries=archive.entries,
            order=archive.order,
            prefix=archive.prefix,
            anomalies=self.summarise(),
            all_entries=archive.all_entries,
            _lookup=archive._lookup,
            zipfile_layout=ZipfileLayout(
                cd_offset,
                cd_size,
                tuple(walk.positions),
                not self.slack and walk.zipfile_plain,
            ),
        )
        object.__setattr__(done, "_in_order", in_order)  # worked out above
        return done

    def build_lookup(self, names: list[bytes], entries: list[ZipEntry], keys: list[bytes]) -> dict[bytes, ZipEntry]:
        """For every folded name, the entry miniz's binary search returns."""
        unique = dict(zip(keys, entries, strict=True))
        if len(unique) == len(keys):
            return unique  # no two names fold alike: nothing for the heap sort to decide
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
            exact_last = {names[i]: i for i in members}
            name = entries[chosen].name
            rest = [i for i in members if i != chosen]
            others = ", ".join(f"#{i} {entries[i].name!r} at {entries[i].header_offset}" for i in rest[:4])
            if len(rest) > 4:
                others += f" and {len(rest) - 4} more"
            zipfile_pick = exact_last[names[chosen]]
            self.note(
                "duplicate-entry",
                name,
                entries[chosen].header_offset,
                f"{len(members)} central-directory entries share this name (ignoring case); torch reads entry "
                f"#{chosen} at offset {entries[chosen].header_offset} (others: {others}), Python's zipfile reads "
                f"#{zipfile_pick} for this exact name",
            )
        return lookup

    def check_start(self, first_header: int) -> None:
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

    def check_prefix(self, names: list[bytes], positions: list[int], prefix: bytes, shared: bool = False) -> None:
        """torch.load lists all records (getAllRecords), which throws for a name outside the prefix folder.
        ``shared``: every name is known to start with ``prefix + b"/"`` (:attr:`Walk.folder_shared`)."""
        wanted = _c_string(prefix + b"/")
        head = wanted[: len(prefix) + 1]
        if len(head) == len(prefix) + 1 < _MAX_FILENAME_BUFFER and (
            shared or all(map(bytes.startswith, names, repeat(head)))
        ):
            return  # every name starts with the NUL-free folder, so no C-string cut can move it outside
        for name, position in zip(names, positions, strict=True):
            shown = _c_string(name[: _MAX_FILENAME_BUFFER - 1])
            if shown[: len(prefix) + 1] != wanted[: len(prefix) + 1]:
                self.note(
                    "outside-prefix",
                    _decode(name),
                    position,
                    f"the member is not under {_decode(prefix)!r}/; torch.load refuses the whole archive, other "
                    "PyTorchStreamReader users (torch.jit.load) read it",
                )
                return

    def check_overlaps(self, entries: list[ZipEntry], in_order: bool | None = None) -> None:
        """An ``overlapping-entries`` anomaly for the first member starting inside another's bytes.
        ``in_order``: :func:`ordered_spans` of the entries when already known."""
        if ordered_spans(entries) if in_order is None else in_order:
            return
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
