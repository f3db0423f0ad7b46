"""Whole-archive passes over a ZIP's entries, a column at a time: a state dict has 500,000 of them.

Each function here is the pure-Python reference of a compiled one in ``_speedups.c`` (same name), and
asks it first: the compiled pass reads the entries' slots directly, where the reference makes a few C-level
``map`` passes. The compiled pass returns None for entries it does not read (another class, a field of an
unexpected type); the reference then answers.
"""

from __future__ import annotations

import functools
import operator
from itertools import accumulate, compress, islice, repeat
from operator import attrgetter, methodcaller

from picklewarden import _native
from picklewarden._typing import TYPE_CHECKING
from picklewarden.containers.zipentry import ZipEntry

if TYPE_CHECKING:
    from collections.abc import Sequence

FLAG_IN_FOLDER = 1
"""The name starts with the folder asked about."""
FLAG_DIRECTORY = 2
"""miniz treats the entry as a directory."""
FLAG_EMPTY = 4
"""Its uncompressed size is 0."""
FLAG_PICKLE = 8
"""Its name ends in ``.pkl``."""
FLAG_ENDS_IN_L = 16
"""Its name ends in ``l`` or ``L``: every name that folds to ``.pkl`` or ``_pkl`` does."""

_NAME = attrgetter("name")
_HEADER = attrgetter("header_offset")
_DATA = attrgetter("data_offset")
_COMPRESSED = attrgetter("compressed_size")
_SIZE = attrgetter("size")
_DIRECTORY = attrgetter("directory")


def ordered_spans(entries: Sequence[ZipEntry]) -> bool:
    """Whether members are listed in file order (torch.save's) and none starts inside an earlier one's bytes
    (those of a member with bytes: not a directory, compressed size not 0).

    The spans are then already sorted, and a running maximum of their ends says whether any member with
    bytes starts before an earlier one ends.
    """
    native = _native.speedups
    fits = None if native is None else native.ordered_spans(entries, ZipEntry)
    return _ordered_spans(entries) if fits is None else fits


def _ordered_spans(entries: Sequence[ZipEntry]) -> bool:
    starts = list(map(_HEADER, entries))
    if not all(map(operator.lt, starts, islice(starts, 1, None))):
        return False
    kept = list(map(operator.and_, map(operator.not_, map(_DIRECTORY, entries)), map(bool, map(_COMPRESSED, entries))))
    ends = list(compress(map(operator.add, map(_DATA, entries), map(_COMPRESSED, entries)), kept))
    reaches = list(accumulate(ends, max))
    return not any(map(operator.lt, islice(compress(starts, kept), 1, None), reaches))


def entry_flags(entries: Sequence[ZipEntry], folder: str) -> bytes:
    """A byte per entry: the sum of :data:`FLAG_IN_FOLDER` (its name starts with ``folder``),
    :data:`FLAG_DIRECTORY`, :data:`FLAG_EMPTY`, :data:`FLAG_PICKLE` and :data:`FLAG_ENDS_IN_L`. Masks over
    it are ``translate`` tables (:func:`mask`), counts ``bytes.count``."""
    native = _native.speedups
    flags = None if native is None else native.entry_flags(entries, ZipEntry, folder)
    return _entry_flags(entries, folder) if flags is None else flags


def _entry_flags(entries: Sequence[ZipEntry], folder: str) -> bytes:
    names = list(map(_NAME, entries))
    in_folder = map(methodcaller("startswith", folder), names)
    directory = map(operator.mul, map(bool, map(_DIRECTORY, entries)), repeat(FLAG_DIRECTORY))
    empty = map(operator.mul, map(operator.not_, map(_SIZE, entries)), repeat(FLAG_EMPTY))
    pickle = map(operator.mul, map(methodcaller("endswith", ".pkl"), names), repeat(FLAG_PICKLE))
    ends_in_l = map(operator.mul, map(methodcaller("endswith", ("l", "L")), names), repeat(FLAG_ENDS_IN_L))
    return bytes(
        map(
            operator.add,
            map(operator.add, map(operator.add, in_folder, directory), map(operator.add, empty, pickle)),
            ends_in_l,
        )
    )


def mask(flags: bytes, wanted: int, unwanted: int = 0) -> bytes:
    """A byte per entry, 1 where every flag of ``wanted`` and none of ``unwanted`` is set, else 0."""
    return flags.translate(_table(wanted, unwanted))


@functools.lru_cache(maxsize=16)
def _table(wanted: int, unwanted: int) -> bytes:
    # made once per question: a directory scan asks the same few of every small archive
    return bytes(int(f & wanted == wanted and not f & unwanted) for f in range(256))
