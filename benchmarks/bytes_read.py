"""How many bytes of a checkpoint picklewarden reads, against the budget of issue 8.

    python benchmarks/bytes_read.py FILE... [--json]

Budget: the pickle members + the ZIP directory (end record, central directory) + 1 MiB, whatever the
size of the tensor data. The measures per file:

``sliced``   bytes the readers asked for by slicing the file (an mmap subclass that counts ``data[a:b]``;
             reads made through ``memoryview(data)`` are invisible to it).
``disk``     bytes of the file in the page cache after ``scan_path`` started with none of it cached
             (``posix_fadvise(DONTNEED)`` before, ``mincore`` after): everything the scan touched, in pages,
             including the kernel's read-ahead around each page fault (up to ``read_ahead_kb``). Linux only.
``distinct`` the bytes of the file covered by those slices: re-reads of the same bytes (the zipfile
             differential re-reads the pickles and the directory) count once; this is the I/O measure.

The pickle-member and directory sizes come from Python's zipfile (ZIP checkpoints) or from decoding the
leading pickles (legacy checkpoints, plain pickles).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import mmap
import os
import struct
import sys
import zipfile
from dataclasses import asdict, dataclass

MIB = 1 << 20
PAGE = mmap.PAGESIZE


@dataclass(frozen=True)
class Measure:
    path: str
    size: int
    pickles: int
    """Bytes of the pickle members (or leading pickles)."""
    directory: int
    """Bytes of the ZIP end record and central directory (0 for other formats)."""
    sliced: int
    distinct: int
    """Bytes of the file covered by at least one slice (re-reads of the same bytes counted once)."""
    disk: int | None
    """Page-cache bytes after a cold scan, or None where that cannot be measured."""
    random: int | None
    """``disk`` with read-ahead turned off on the scanner's map."""

    @property
    def budget(self) -> int:
        return self.pickles + self.directory + MIB

    @property
    def within(self) -> bool:
        return max(self.distinct, self.disk or 0) <= self.budget

    @property
    def within_without_readahead(self) -> bool:
        return max(self.distinct, self.random or 0) <= self.budget


class CountingMap(mmap.mmap):
    """An mmap that counts the bytes sliced out of it."""

    sliced = 0
    spans: list[tuple[int, int]]

    def __getitem__(self, index):  # type: ignore[no-untyped-def]
        if not hasattr(self, "spans"):
            self.spans = []
        if isinstance(index, slice):
            start, stop, _ = index.indices(len(self))
            self.sliced += max(0, stop - start)
            if stop > start:
                self.spans.append((start, stop))
        else:
            self.sliced += 1
            position = index % len(self)
            self.spans.append((position, position + 1))
        return super().__getitem__(index)

    @property
    def distinct(self) -> int:
        covered, reach = 0, 0
        for start, stop in sorted(getattr(self, "spans", [])):
            if stop > reach:
                covered += stop - max(start, reach)
                reach = stop
        return covered


def sizes(path: str) -> tuple[int, int]:
    """(pickle bytes, directory bytes) of the file."""
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic == b"PK\x03\x04":
        with zipfile.ZipFile(path) as archive:
            pickles = sum(i.compress_size for i in archive.infolist() if i.filename.endswith(".pkl"))
            directory = _directory_size(path)
        return pickles, directory
    from picklewarden.limits import DEFAULT_LIMITS
    from picklewarden.pickle.layout import scan_layout

    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        position = 0
        for _ in range(5):  # legacy torch files hold five pickles, then raw storages
            layout = scan_layout(data, position, DEFAULT_LIMITS)
            if layout.end is None:
                break
            position = layout.end
        return position, 0


def _directory_size(path: str) -> int:
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - (1 << 16) - 22))
        tail = handle.read()
    at = tail.rfind(b"PK\x05\x06")
    cd_size = struct.unpack("<I", tail[at + 12 : at + 16])[0]
    return cd_size + (len(tail) - at)


def sliced(path: str) -> tuple[int, int]:
    """(bytes sliced, distinct bytes sliced) by a scan of ``path`` through a counting map."""
    from picklewarden.containers.base import Context
    from picklewarden.containers.opener import open_bytes
    from picklewarden.limits import DEFAULT_LIMITS
    from picklewarden.scanner import analyse_opened

    with open(path, "rb") as handle:
        data = CountingMap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            view: bytes = data  # type: ignore[assignment]
            context = Context.root(DEFAULT_LIMITS, path)
            analyse_opened(open_bytes(view, DEFAULT_LIMITS, context), path, DEFAULT_LIMITS, data=view, context=context)
            return data.sliced, data.distinct
        finally:
            try:
                data.close()
            except BufferError:  # a view is still referenced by a traceback or a result
                pass


def disk(path: str, *, random: bool = False) -> int | None:
    """Page-cache bytes of ``path`` after a scan from a cold cache (None where unsupported)."""
    if not hasattr(os, "posix_fadvise") or not sys.platform.startswith("linux"):
        return None
    from picklewarden.filescan import scan_path

    with open(path, "rb") as handle:
        os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        if resident(handle.fileno()) > 16 * PAGE:
            return None  # pages are pinned (mapped elsewhere): no cold start possible
        if random:
            _scan_without_readahead(path)
        else:
            scan_path(path)
        return resident(handle.fileno())


def _scan_without_readahead(path: str) -> None:
    """``scanner.analyse_path`` with the map advised MADV_RANDOM."""
    from picklewarden.containers.base import Context
    from picklewarden.containers.opener import open_bytes
    from picklewarden.limits import DEFAULT_LIMITS
    from picklewarden.scanner import analyse_opened

    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        data.madvise(mmap.MADV_RANDOM)
        view: bytes = data  # type: ignore[assignment]
        context = Context.root(DEFAULT_LIMITS, path)
        analysis = analyse_opened(
            open_bytes(view, DEFAULT_LIMITS, context), path, DEFAULT_LIMITS, data=view, context=context
        )
        del analysis  # it may hold views of the map, which must go before the map closes


def resident(fd: int) -> int:
    """Bytes of the file ``fd`` currently in the page cache (mincore over a fresh mapping)."""
    size = os.fstat(fd).st_size
    if size == 0:
        return 0
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    address = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    if address in (None, ctypes.c_void_p(-1).value):
        raise OSError(ctypes.get_errno(), "mmap failed")
    try:
        pages = (size + PAGE - 1) // PAGE
        vector = (ctypes.c_ubyte * pages)()
        if libc.mincore(address, size, vector) != 0:
            raise OSError(ctypes.get_errno(), "mincore failed")
        return sum(byte & 1 for byte in vector) * PAGE
    finally:
        libc.munmap(address, size)


def measure(path: str) -> Measure:
    pickles, directory = sizes(path)
    total, distinct = sliced(path)
    size = os.path.getsize(path)
    return Measure(path, size, pickles, directory, total, distinct, disk(path), disk(path, random=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = [measure(path) for path in args.files]
    if args.json:
        rows = [
            {
                **asdict(r),
                "budget": r.budget,
                "within": r.within,
                "within_without_readahead": r.within_without_readahead,
            }
            for r in results
        ]
        print(json.dumps(rows, indent=2))
        return
    print("| file | MiB | pickles KiB | directory KiB | budget KiB | sliced KiB | distinct KiB | disk KiB | within |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        disk_kib = f"{r.disk / 1024:.0f}" if r.disk is not None else "n/a"
        print(
            f"| {os.path.basename(r.path)} | {r.size / MIB:.0f} | {r.pickles / 1024:.0f} | {r.directory / 1024:.0f} | "
            f"{r.budget / 1024:.0f} | {r.sliced / 1024:.0f} | {r.distinct / 1024:.0f} | {disk_kib} | "
            f"{'yes' if r.within else 'NO'} |"
        )


if __name__ == "__main__":
    main()
