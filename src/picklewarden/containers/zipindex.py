"""miniz's name index: the ASCII case folding, heap sort and binary search that decide which of several
same-named entries torch reads, and ``std::stoull`` for the version record."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from picklewarden.containers.zipentry import _U64_MASK, ZipEntry, _encode

_ASCII_FOLD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz")


class ByName(Mapping[str, ZipEntry]):
    """Entries by exact central-directory name, answered from the folded-name lookup, for an archive whose
    names are distinct even ignoring ASCII case and hold no NUL: each folded name then belongs to one entry,
    so the entry for a name is the lookup's entry for its folded form when that entry has this very name.
    A state dict's second table of 500,000 names is then never built. Read-only.
    """

    __slots__ = ("_lookup", "_order")

    def __init__(self, lookup: Mapping[bytes, ZipEntry], order: tuple[str, ...]) -> None:
        self._lookup = lookup
        self._order = order

    def __getitem__(self, name: str) -> ZipEntry:
        if type(name) is str:
            try:
                key = _encode(name).translate(_ASCII_FOLD)
            except UnicodeEncodeError:  # a lone surrogate no decoded name holds
                raise KeyError(name) from None
            entry = self._lookup.get(key)
            if entry is not None and entry.name == name:
                return entry
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._order)

    def __len__(self) -> int:
        return len(self._order)

    def __repr__(self) -> str:
        return f"ByName({len(self._order)} entries)"


def _lookup_key(name: bytes) -> bytes:
    """A lookup name as miniz compares it: cut at the first NUL (a C string), ASCII case folded."""
    nul = name.find(b"\x00")
    if nul >= 0:
        name = name[:nul]
    return name.translate(_ASCII_FOLD)


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
