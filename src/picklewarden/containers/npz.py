"""``numpy.load``'s view of a ZIP archive that another loader (torch) reads differently.

``numpy.load`` opens *any* file starting with ``PK\\x03\\x04`` (or ``PK\\x05\\x06``) as an npz. Reading a key
opens the member with ``zipfile``, looks at its first six bytes, and when they are the NumPy magic reads it
as an ``.npy`` array: for an object dtype that is ``pickle.load`` on the bytes after the header. The
member's name does not matter (``npz['archive/data/0']`` works as well as ``npz['w']``), so a torch
checkpoint whose storage, or extra file, or even ``data.pkl`` starts with an ``.npy`` header holds a
pickle that torch never runs and numpy does.

Modelled (numpy 2.x ``NpzFile.__getitem__``, ``format.read_array``):

* every member, whatever its name, whose bytes start with ``\\x93NUMPY`` is read as an ``.npy`` array,
  with the header rules of :mod:`picklewarden.containers.numpy_files`;
* the pickle after an object array's header runs (``allow_pickle=True``), from a file object.

Not modelled:

* which duplicate of a name ``zipfile`` picks: every entry is looked at, so the one numpy reads is among
  them;
* members ``zipfile`` refuses (bad CRC, mismatched local name, encryption flag): they are looked at anyway,
  through torch's reader, which is the lenient direction;
* past a budget of peeks, tensor storages are not looked at (reading the first bytes of 100,000 storages
  costs a scattered read each); the scan says how many were skipped.
"""

from __future__ import annotations

import operator
from bisect import bisect_left
from itertools import compress, islice
from operator import attrgetter, methodcaller

from picklewarden._typing import TYPE_CHECKING
from picklewarden.containers.base import Context, Data, Opened
from picklewarden.containers.sniff import NPY_MAGIC
from picklewarden.containers.torchzip import TorchZip, ZipEntry, data_start, read_plain
from picklewarden.containers.zipcolumns import FLAG_IN_FOLDER, FLAG_PICKLE, mask
from picklewarden.containers.zipentry import peek_member
from picklewarden.errors import LimitExceeded, ScanError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

_STORED = 0
_HEADER = attrgetter("header_offset")


class _Window:
    """A stored member's bytes as a slice of the file, read only where :func:`open_npy` looks."""

    def __init__(self, data: Data, start: int, size: int) -> None:
        self._data = data
        self._start = start
        self._size = max(0, min(size, len(data) - start))

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, span: slice) -> bytes:
        begin, end, _ = span.indices(self._size)
        return bytes(self._data[self._start + begin : self._start + max(begin, end)])


def _member(data: Data, entry: ZipEntry, ctx: Context) -> Data:
    """The member's bytes: a window over the file when stored (arrays can be gigabytes), else inflated."""
    if entry.method == _STORED and entry.size == entry.compressed_size:
        return _Window(data, data_start(data, entry), entry.size)  # type: ignore[return-value]
    payload, _ = read_plain(data, entry, ctx.limits)
    return payload


def _worth_a_look(archive: TorchZip, prefix: str | None, heads: Mapping[int, bytes]) -> Iterable[ZipEntry]:
    """The entries :func:`numpy_view` goes through: all of them, or, when no two share a local header (so
    none is passed over for having been seen), all but the storages it would pass over unpeeked.

    Found from the archive's flags: a state dict has 100,000 storages, all but a few unpeeked. Members in
    file order are found by their header offset with a binary search.
    """
    entries = archive.all_entries
    if prefix is None:
        return entries
    if not archive.in_order():
        starts = list(map(_HEADER, entries))
        if any(map(operator.ge, starts, islice(starts, 1, None))):
            return entries
        storage = map(
            operator.and_,
            map(methodcaller("startswith", prefix), archive.order),
            map(operator.not_, map(methodcaller("endswith", ".pkl"), archive.order)),
        )
        return compress(entries, map(operator.or_, map(operator.not_, storage), map(heads.__contains__, starts)))
    picked = set(compress(range(len(entries)), mask(archive.data_flags(), 0, FLAG_IN_FOLDER)))
    picked.update(compress(range(len(entries)), mask(archive.data_flags(), FLAG_IN_FOLDER | FLAG_PICKLE)))
    for offset in heads:
        at = bisect_left(entries, offset, key=_HEADER)
        if at < len(entries) and entries[at].header_offset == offset:
            picked.add(at)
    return map(entries.__getitem__, sorted(picked))


def numpy_view(data: Data, archive: TorchZip, ctx: Context, heads: Mapping[int, bytes]) -> Opened:
    """The pickles ``numpy.load(allow_pickle=True)`` runs when it reads ``archive`` as an npz.

    ``heads`` holds the first bytes of members already read or peeked at (by header offset); storages
    absent from it were skipped by the storage peek budget (the caller's note counts them).
    """
    view = Opened("npz")
    seen: set[int] = set()
    prefix = f"{archive.prefix}/data/" if archive.prefix else None
    for entry in _worth_a_look(archive, prefix, heads):
        if entry.directory or entry.size < len(NPY_MAGIC) or entry.header_offset in seen:
            continue
        seen.add(entry.header_offset)
        head = heads.get(entry.header_offset)
        if head is None:
            if prefix is not None and entry.name.startswith(prefix) and not entry.name.endswith(".pkl"):
                continue
            head = peek_member(data, entry, 256)  # deflate needs a few bytes more than it yields
        if head[: len(NPY_MAGIC)] != NPY_MAGIC:
            continue
        label = f"{entry.name} [as numpy.load reads it]"
        try:
            member = _member(data, entry, ctx)
        except (ScanError, LimitExceeded) as exc:
            view.errors.append(f"{label}: {exc}")
            continue
        from picklewarden.containers.numpy_files import open_npy  # here: few archives hold a NumPy member

        inner = open_npy(member, ctx, label)
        view.anomalies.extend(inner.anomalies)
        view.errors.extend(inner.errors)
        if inner.sources:
            view.notes.append(
                f"{entry.name} starts with a NumPy header: numpy.load reads the archive as an npz and unpickles "
                "this member's object array, which torch never runs"
            )
        view.sources.extend(source._replace(label="npz") for source in inner.sources)
    return view
