"""Consistency of a PyTorch archive: persistent ids against ``data/<key>`` entries, storages holding pickles,
and entries that torch and Python's ``zipfile`` read differently.

``torch.load`` turns each persistent id ``('storage', storage_type, key, location, numel)`` into a read of
``<prefix>/data/<key>`` of ``numel * element_size`` bytes. torch.save writes exactly that many; an entry
that is missing, shorter, longer or never referenced is something torch.save did not write.
"""

from __future__ import annotations

import mmap
import operator
import zipfile
from itertools import compress
from operator import attrgetter, itemgetter, not_

from picklewarden import _native
from picklewarden._typing import TYPE_CHECKING
from picklewarden.containers.archives import ZIP_ERRORS
from picklewarden.containers.base import Anomaly, Child, Context, Data, ProgramCheck, reader_of
from picklewarden.containers.legacy_tar import element_size
from picklewarden.containers.sniff import looks_like_pickle
from picklewarden.containers.torchzip import TorchZip, ZipEntry, data_start, read_entry
from picklewarden.containers.zipcolumns import FLAG_DIRECTORY, FLAG_EMPTY, FLAG_IN_FOLDER, mask
from picklewarden.containers.zipentry import peek_member
from picklewarden.containers.zipfile_view import zipfile_source
from picklewarden.errors import ScanError
from picklewarden.model import Severity
from picklewarden.pickle.layout import scan_layout

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence
    from typing import Any

    from picklewarden.pickle.program import Persistent, Program

_PEEK = 256
"""Bytes of a storage looked at to tell a pickle from tensor data (a pickle header decodes within them)."""
_PEEK_BUDGET = 512 * 1024
"""Bytes spent peeking at storages per archive: the byte budget of a scan is the pickles plus 1 MiB."""
_LOCAL_HEADER = 30
_KNOWN = frozenset(
    {
        "data.pkl",
        "constants.pkl",
        "version",
        ".data/version",
        "byteorder",
        ".data/serialization_id",
        ".format_version",
        ".storage_alignment",
    }
)
_KNOWN_FOLDERS = ("data/", "code/", "constants/", "extra/", ".data/")
_MAX_LISTED = 10
_LOOKUP_ERRORS: tuple[type[BaseException], ...] = (KeyError, *ZIP_ERRORS)
ARCHIVE_WIDE = ""
"""In ``reported``: the ZIP reader already explained why zipfile cannot open the whole archive."""


def _record_name(archive: TorchZip, name: str) -> str | None:
    """``name`` without the archive's prefix folder, or None when it lies outside it."""
    head = archive.prefix + "/"
    return name[len(head) :] if name.startswith(head) else None


def _tensor_folder(archive: TorchZip, member: str) -> str:
    """The folder torch reads a pickle's storages from: ``<name>/`` for ``<name>.pkl`` (``data.pkl`` loads
    ``data/<key>``; a TorchScript archive's ``constants.pkl``, frozen parameters included, ``constants/<key>``)."""
    name = member.rsplit("!", 1)[-1].split(" (duplicate entry #", 1)[0]
    record = _record_name(archive, name) or name
    return (record[: -len(".pkl")] if record.endswith(".pkl") else "data") + "/"


def storage_ids(programs: Iterable[Program], archive: TorchZip | None = None) -> dict[str, tuple[str, int | None, int]]:
    """record -> (storage type, element size, element count) for every well-formed storage persistent id;
    the record is ``<folder>/<key>`` for the pickle's tensor folder (``data/<key>`` without ``archive``)."""
    found: dict[str, tuple[str, int | None, int]] = {}
    kinds: dict[int, tuple[object, tuple[str, int | None]]] = {}  # by id: a pickle names each class once
    for program in programs:
        folder = _tensor_folder(archive, program.member) if archive is not None else "data/"
        for pid in [stmt.pid for stmt in program.kinds().persistent]:
            if type(pid) is not tuple or len(pid) != 5 or pid[0] != "storage":
                continue
            key, numel = pid[2], pid[4]
            if type(key) is not str or type(numel) is not int:
                continue
            found.setdefault(folder + key, (*_kind(kinds, pid[1]), numel))
    return found


def _kind(kinds: dict[int, tuple[object, tuple[str, int | None]]], cls: object) -> tuple[str, int | None]:
    """A storage class's (name, element size), looked up once per class object."""
    kind = kinds.get(id(cls))
    if kind is None or kind[0] is not cls:
        kind = kinds[id(cls)] = (cls, element_size(cls))
    return kind[1]


_CLASS, _KEY, _NUMEL, _FIRST, _SIZE = itemgetter(1), itemgetter(2), itemgetter(4), itemgetter(0), attrgetter("size")
_PID = attrgetter("pid")


def _plain_storages(pids: list[Any]) -> bool:
    """Whether every id is ``('storage', <class>, <str key>, <location>, <int numel>)`` (checked per column,
    without a Python call per id)."""
    if not pids or set(map(type, pids)) != {tuple}:
        return False
    if set(map(len, pids)) != {5} or set(map(type, map(_FIRST, pids))) != {str}:
        return False  # (only str first items: the set below then hashes nothing unhashable)
    return (
        set(map(_FIRST, pids)) == {"storage"}
        and set(map(type, map(_KEY, pids))) == {str}
        and set(map(type, map(_NUMEL, pids))) == {int}
    )


def storage_columns(persistent: Sequence[Persistent]) -> tuple[list[str], list[object], list[int]] | None:
    """The keys, classes and element counts of ``persistent`` when every id is a plain storage id (see
    :func:`_plain_storages`), else None. The reference of ``_speedups.storage_columns``."""
    pids = list(map(_PID, persistent))
    if not _plain_storages(pids):
        return None
    return list(map(_KEY, pids)), list(map(_CLASS, pids)), list(map(_NUMEL, pids))


def _fitting_storages(
    programs: Sequence[Program], archive: TorchZip, data_files: list[str], data_entries: list[ZipEntry]
) -> bool:
    """Whether the archive is what torch.save writes, checked a column at a time: every persistent id is a
    storage id, the ids name the ``data/`` entries (``data_files``, their ``data_entries``) one to one and in
    directory order, no two names fold alike (so each name's entry is the one torch reads), and each entry
    has exactly the size its elements need. When not, :func:`storage_ids` and :func:`_storage_problems` say
    what is wrong id by id. (Lookups by name would cost a cache miss per tensor; these are sequential.)

    The compiled core checks each pickle's ids in one pass (``_speedups.fit_storages``); where it cannot
    say, :func:`_fitting_storages_by_column` (the reference) does."""
    if not archive._lookup or len(archive._lookup) != len(archive.order):
        return False
    native = _native.speedups
    if native is None:
        return _fitting_storages_by_column(programs, archive, data_files, data_entries)
    head = archive.prefix + "/"
    kinds: dict[int, tuple[object, tuple[str, int | None]]] = {}

    def size_of(cls: object) -> int | None:
        return _kind(kinds, cls)[1]

    done = 0
    for program in programs:
        persistent = program.kinds().persistent
        if not persistent:
            continue
        folder = head + _tensor_folder(archive, program.member)
        fits = native.fit_storages(persistent, size_of, folder, data_files, data_entries, done, ZipEntry)
        if fits is None:
            return _fitting_storages_by_column(programs, archive, data_files, data_entries)
        if not fits:
            return False
        done += len(persistent)
    return done > 0 and done == len(data_files)


def _fitting_storages_by_column(
    programs: Sequence[Program], archive: TorchZip, data_files: list[str], data_entries: list[ZipEntry]
) -> bool:
    head = archive.prefix + "/"
    names: list[str] = []
    needed: list[int] = []
    kinds: dict[int, tuple[object, tuple[str, int | None]]] = {}
    for program in programs:
        persistent = program.kinds().persistent
        if not persistent:
            continue
        columns = storage_columns(persistent)
        if columns is None:
            return False
        keys, classes, numels = columns
        sizes = {key: _kind(kinds, cls)[1] for key, cls in dict(zip(map(id, classes), classes, strict=True)).items()}
        if None in sizes.values():
            return False  # not a torch storage class: its size is not compared
        names += map((head + _tensor_folder(archive, program.member)).__add__, keys)
        needed += map(operator.mul, map(sizes.__getitem__, map(id, classes)), numels)
    return bool(names) and names == data_files and all(map(operator.eq, map(_SIZE, data_entries), needed))


def _storage_problems(archive: TorchZip, ids: dict[str, tuple[str, int | None, int]]) -> Iterator[Anomaly]:
    """An anomaly for every storage id whose entry is missing or of another size than its elements need."""
    head = archive.prefix + "/"
    exact = archive.entries if archive._lookup else {}
    problems = []
    for wanted, spec in ids.items():
        entry = exact.get(head + wanted) or archive.record(wanted)
        if entry is None or (spec[1] is not None and entry.size != spec[1] * spec[2]):
            problems.append((wanted, spec, entry))
    for wanted, (kind, size, numel), entry in sorted(problems, key=itemgetter(0)):
        key = wanted.rsplit("/", 1)[1]
        if entry is None:
            yield Anomaly(
                "PW306",
                f"{archive.prefix}/{wanted}",
                None,
                f"the pickle loads storage {key!r} but the archive has no {wanted} entry; torch fails to load it",
            )
            continue
        if size is None:
            continue
        needed = numel * size
        if entry.size < needed:
            yield Anomaly(
                "PW306",
                entry.name,
                entry.header_offset,
                f"storage {key!r} declares {numel} x {size}-byte {kind} elements ({needed} bytes) but the entry "
                f"holds {entry.size}: torch reads past the data it was given",
            )
        elif entry.size > needed:
            yield Anomaly(
                "PW306",
                entry.name,
                entry.header_offset,
                f"storage {key!r} needs {needed} bytes but the entry holds {entry.size}: "
                f"{entry.size - needed} bytes no tensor uses",
                Severity.LOW,
            )


def storage_check(archive: TorchZip) -> ProgramCheck:
    """A check of the archive's storages against the persistent ids its pickles produced."""

    def check(programs: Sequence[Program]) -> Iterable[Anomaly]:
        head = archive.prefix + "/"
        cut = len(head)
        # Per column, not per name: a state dict has one storage entry per tensor.
        flags = archive.data_flags()
        in_data = mask(flags, FLAG_IN_FOLDER, FLAG_DIRECTORY)
        data_files = list(compress(archive.order, in_data))
        stray: list[str] = []
        if not _fitting_storages(programs, archive, data_files, list(compress(archive.all_entries, in_data))):
            ids = storage_ids(programs, archive)
            yield from _storage_problems(archive, ids)
            records = map(itemgetter(slice(cut, None)), data_files)
            stray = list(compress(data_files, map(not_, map(ids.__contains__, records)))) if ids else []
        odd = [
            name
            for name in compress(archive.order, mask(flags, 0, FLAG_IN_FOLDER | FLAG_DIRECTORY))
            if name.startswith(head)
            and name[cut:] not in _KNOWN
            and not name[cut:].startswith(_KNOWN_FOLDERS)
            and not name.endswith(".pkl")
        ]
        if stray:
            yield Anomaly(
                "PW306",
                stray[0],
                None,
                f"{len(stray)} storage entr{'y is' if len(stray) == 1 else 'ies are'} not referenced by any "
                f"persistent id: {', '.join(stray[:_MAX_LISTED])}",
                Severity.LOW,
            )
        if odd:
            yield Anomaly(
                "PW306",
                odd[0],
                None,
                f"entries torch.save does not write (torch ignores them): {', '.join(odd[:_MAX_LISTED])}",
                Severity.INFO,
            )

    return check


def _complete_pickle(head: bytes, ctx: Context) -> bool:
    """A whole pickle that imports something: raw tensor bytes essentially never decode that far."""
    if not looks_like_pickle(head, ctx.limits):
        return False
    layout = scan_layout(head, 0, ctx.limits.replace(max_opcodes=1_000_000))
    return layout.end is not None and bool(layout.imports)


def storage_payloads(
    data: Data, archive: TorchZip, ctx: Context, heads: dict[int, bytes] | None = None
) -> tuple[list[Anomaly], list[Child], int]:
    """Storages whose bytes are a pickle: a finding each, and the bytes to scan as a dormant payload; and
    how many storages were not looked at because the peek budget ran out.

    Torch only copies storage bytes, so a pickle there is dormant (something else must load it); looking
    costs a scattered read per storage, so the first bytes of each are read until ``_PEEK_BUDGET`` is spent.
    The first bytes of every storage looked at are put in ``heads`` (by header offset) when it is given.
    """
    anomalies: list[Anomaly] = []
    children: list[Child] = []
    spent = skipped = 0
    folder = archive.prefix + "/data/"
    entries = archive.all_entries
    for at, entry in enumerate(entries):
        if not entry.name.startswith(folder) or entry.directory or entry.size == 0:
            continue
        if spent >= _PEEK_BUDGET:
            # Counted from the flags: a state dict leaves one unpeeked storage per tensor.
            skipped = mask(archive.data_flags()[at:], FLAG_IN_FOLDER, FLAG_DIRECTORY | FLAG_EMPTY).count(1)
            break
        head = peek_member(data, entry, _PEEK)
        if heads is not None:
            heads[entry.header_offset] = head
        spent += max(mmap.PAGESIZE, _LOCAL_HEADER + len(entry.name) + len(head))  # a page from disk at least
        if not looks_like_pickle(head, ctx.limits) or entry.size > ctx.limits.max_pickle_bytes:
            continue
        try:
            payload, _ = read_entry(data, entry, ctx.limits)
        except ScanError:
            continue
        spent += len(payload)
        if not _complete_pickle(payload, ctx):
            continue
        anomalies.append(
            Anomaly(
                "PW307",
                entry.name,
                data_start(data, entry),
                f"storage entry {entry.name[len(folder) - len('data/') :]} is a pickle ({len(payload)} bytes), not "
                "tensor data",
            )
        )
        children.append(Child(entry.name, payload, dormant=True))
    return anomalies, children, skipped


def zipfile_differential(
    data: Data, archive: TorchZip, read: dict[str, bytes], reported: set[str], *, whole: bool = False
) -> list[Anomaly]:
    """Pickle entries whose bytes Python's zipfile cannot read, or reads differently from torch.

    ``reported`` holds members the ZIP reader already flagged (bad CRC, mismatched names...): the
    differential is then explained there and not repeated. zipfile is shown only the directory records
    that decide what it reads for these members when that is the same (:mod:`.zipfile_view`), the whole
    archive when ``whole`` is set or it is not.
    """
    found: list[Anomaly] = []
    wanted = [name for name in read if name not in reported]
    source = data if whole else zipfile_source(data, archive, wanted)
    try:
        try:
            handle = zipfile.ZipFile(reader_of(source))
        except ZIP_ERRORS:
            if source is data:
                raise
            handle = zipfile.ZipFile(reader_of(data))  # zipfile's own words for what is wrong
    except ZIP_ERRORS as exc:
        if ARCHIVE_WIDE in reported or not read:
            return found
        return [
            Anomaly(
                "PW309",
                None,
                None,
                f"Python's zipfile cannot open this archive ({exc}) but torch can: zipfile-based tools miss its "
                "pickles",
            )
        ]
    with handle:
        for name, payload in read.items():
            if name in reported:
                continue
            try:
                info = handle.getinfo(name)
                if info.file_size != len(payload):
                    raise zipfile.BadZipFile(f"zipfile expects {info.file_size} bytes, torch reads {len(payload)}")
                other = handle.read(info)
            except _LOOKUP_ERRORS as exc:
                found.append(
                    Anomaly(
                        "PW309",
                        name,
                        None,
                        f"torch reads this pickle but Python's zipfile cannot ({exc}): zipfile-based scanners miss it",
                    )
                )
                continue
            if other != payload:
                found.append(
                    Anomaly(
                        "PW309",
                        name,
                        None,
                        "Python's zipfile returns different bytes for this pickle than torch reads",
                    )
                )
    return found
