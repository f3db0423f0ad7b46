"""Storage bytes, read from where torch reads them, and tensors materialised from them.

Only the bytes a tensor touches are read: from a memory-mapped file that means only those pages. Views
(offsets, strides, shared storages) are materialised as contiguous copies, since safetensors stores every
tensor on its own; non-contiguous tensors are gathered with ``memoryview`` slicing (numpy, when installed,
does the same gather faster). Every offset a file gives is checked against what the file holds first.
"""

from __future__ import annotations

import array
import itertools
import math
import mmap
from collections.abc import Hashable, Iterator, Sequence
from typing import Final, Literal, Protocol

from picklewarden.containers import torchzip
from picklewarden.errors import ScanError
from picklewarden.extract.errors import ConvertError
from picklewarden.extract.refs import StorageRef, TensorRef, hashable, show
from picklewarden.limits import Limits

Buffer = bytes | mmap.mmap
"""A whole file: bytes, or a read-only memory map of it."""

CHUNK: Final[int] = 8 * 1024 * 1024
"""Bytes produced at a time when streaming a tensor out."""

_STORED = 0
_FLAG_UNREADABLE = 0x0001 | 0x0020 | 0x0040  # encrypted, patch data, strong encryption: torch refuses these
# memoryview formats of unsigned integers of each size: elements are copied as opaque bit patterns.
_FORMATS: Final[dict[int, Literal["B", "H", "I", "Q"]]] = {1: "B", 2: "H", 4: "I", 8: "Q"}
_SWAP_CODES: Final[dict[int, str]] = {array.array(code).itemsize: code for code in "QLIH"}


class StorageReader(Protocol):
    """Where a format keeps storage bytes."""

    big_endian: bool
    """The data is big-endian (torch then byte-swaps on load, and so do we)."""

    def read(self, storage: StorageRef, start: int, length: int) -> bytes:
        """``length`` bytes at ``start`` within ``storage``; ConvertError when the file does not hold them."""
        ...


def _slice(buffer: Buffer, start: int, length: int, what: str) -> bytes:
    if start < 0 or length < 0 or start + length > len(buffer):
        raise ConvertError(f"{what}: {length} bytes at offset {start} lie past the end of the file")
    return bytes(buffer[start : start + length])


class ZipStorage:
    """Storages of a PyTorch ZIP archive: record ``data/<key>``, read as torch's reader reads it."""

    def __init__(self, buffer: Buffer, archive: torchzip.TorchZip, limits: Limits) -> None:
        self.buffer = buffer
        self.archive = archive
        self.limits = limits
        self._inflated: tuple[str, bytes] | None = None
        order = self._record("byteorder")
        # torch.save writes sys.byteorder; archives from before that record existed are little-endian.
        if order is None or order in (b"little", b"big"):
            self.big_endian = order == b"big"
        else:
            raise ConvertError(f"unknown byte order {order[:16]!r} in the archive's byteorder record")

    def _record(self, name: str) -> bytes | None:
        entry = self.archive.record(name)
        if entry is None:
            return None
        try:
            return torchzip.read_entry(self.buffer, entry, self.limits)[0]
        except ScanError as exc:
            raise ConvertError(f"cannot read record {name!r}: {exc}") from None

    def read(self, storage: StorageRef, start: int, length: int) -> bytes:
        name = f"data/{storage.key}"
        entry = self.archive.record(name)
        if entry is None:
            raise ConvertError(f"the archive has no record {name!r} for a storage the pickle uses")
        begin = storage.offset + start
        if entry.size < storage.offset + storage.nbytes:
            raise ConvertError(f"record {entry.name!r} holds {entry.size} bytes; the storage needs {storage.nbytes}")
        if begin < 0 or length < 0 or begin + length > entry.size:
            raise ConvertError(f"read of {length} bytes at {begin} lies outside record {entry.name!r}")
        plain = (
            entry.method == _STORED
            and entry.stat_error is None
            and not entry.directory
            and not entry.flags & _FLAG_UNREADABLE
            and (entry.compressed_size != 0 or entry.size == 0)
        )
        if plain:
            # What torch's reader does for a stored member: entry.size bytes from the local data offset.
            try:
                start = torchzip.data_start(self.buffer, entry)
            except ScanError as exc:
                raise ConvertError(f"cannot read record {entry.name!r}: {exc}") from None
            if start + entry.size > len(self.buffer):
                raise ConvertError(f"record {entry.name!r} runs past the end of the file")
            return _slice(self.buffer, start + begin, length, entry.name)
        # Compressed or odd members (never written by torch.save): read them whole, as torch does.
        if self._inflated is None or self._inflated[0] != entry.name:
            try:
                payload, _ = torchzip.read_entry(self.buffer, entry, self.limits)
            except ScanError as exc:
                raise ConvertError(f"cannot read record {entry.name!r}: {exc}") from None
            self._inflated = (entry.name, payload)
        return self._inflated[1][begin : begin + length]


class LegacyStorage:
    """Storages of torch's legacy format, stored back to back after its five pickles.

    For each key of the storage-keys pickle, in order: the element count (8 bytes, little-endian), then
    the storage's bytes. torch checks each count against the storage it built from the first persistent id
    naming the key, and a key listed twice is read twice (the later copy wins); so do we.
    """

    big_endian = False  # torch writes (and reads) legacy storage data little-endian on every machine

    def __init__(self, buffer: Buffer, start: int, keys: Sequence[object], roots: dict[Hashable, StorageRef]) -> None:
        self.buffer = buffer
        self.offsets: dict[Hashable, int] = {}
        position = start
        for key in keys:
            root = roots.get(key) if hashable(key) else None
            if root is None:
                raise ConvertError(f"the storage list names {show(key)}, which no storage in the pickle has")
            count = int.from_bytes(_slice(buffer, position, 8, "legacy storage header"), "little", signed=True)
            if count < 0 or count * root.dtype.itemsize != root.nbytes:
                raise ConvertError(
                    f"legacy storage {show(key)} has {count} elements in the file but {root.nbytes} bytes in the pickle"
                )
            self.offsets[key] = position + 8
            position += 8 + root.nbytes
            if position > len(buffer):
                raise ConvertError(f"legacy storage {show(key)} runs past the end of the file")

    def read(self, storage: StorageRef, start: int, length: int) -> bytes:
        base = self.offsets.get(storage.key)
        if base is None:
            raise ConvertError(f"storage {show(storage.key)} is not in the file's storage list")
        if start < 0 or length < 0 or start + length > storage.nbytes:
            raise ConvertError(f"read of {length} bytes at {start} lies outside storage {show(storage.key)}")
        return _slice(self.buffer, base + storage.offset + start, length, "legacy storage")


class NoStorage:
    """A plain pickle: persistent ids have nowhere to point, so no tensor data can be read."""

    big_endian = False

    def read(self, storage: StorageRef, start: int, length: int) -> bytes:
        raise ConvertError("a plain pickle holds no storage data")


# -- materialising --------------------------------------------------------------------------------------------


def _collapse(size: tuple[int, ...], stride: tuple[int, ...]) -> list[tuple[int, int]]:
    """(size, stride) dims without size-1 dims, adjacent dims merged where memory is contiguous between them."""
    dims = [(n, s) for n, s in zip(size, stride, strict=True) if n != 1]
    merged: list[tuple[int, int]] = []
    for n, s in dims:
        if merged and merged[-1][1] == n * s:
            outer_n, _ = merged[-1]
            merged[-1] = (outer_n * n, s)
        else:
            merged.append((n, s))
    return merged


def _numpy_gather(data: bytes, itemsize: int, dims: list[tuple[int, int]]) -> Iterator[bytes] | None:
    try:
        import numpy  # type: ignore[import-not-found,unused-ignore]  # optional
        from numpy.lib.stride_tricks import as_strided  # type: ignore[import-not-found,unused-ignore]  # optional
    except ImportError:
        return None
    flat = numpy.frombuffer(data, dtype=numpy.dtype(f"u{itemsize}"))
    view = as_strided(flat, shape=[n for n, _ in dims], strides=[s * itemsize for _, s in dims], writeable=False)
    return _chunked(numpy.ascontiguousarray(view).reshape(-1).data.cast("B"))


def _python_gather(data: bytes, itemsize: int, dims: list[tuple[int, int]]) -> Iterator[bytes]:
    """The numpy-free gather: one strided ``memoryview`` copy per line of the longest moving dimension."""
    fmt = _FORMATS[itemsize]
    source = memoryview(data).cast(fmt)
    sizes = [n for n, _ in dims]
    numel = math.prod(sizes)
    moving = [i for i, (_, s) in enumerate(dims) if s != 0]
    if not moving:  # one element broadcast everywhere
        yield from _chunked(source[0:1].tobytes() * numel)
        return
    # Copy along the longest dimension that moves in memory, so the Python loop runs numel / n times.
    axis = max(moving, key=lambda i: sizes[i])
    out_strides = [math.prod(sizes[i + 1 :]) for i in range(len(sizes))]
    n, stride, out_stride = sizes[axis], dims[axis][1], out_strides[axis]
    others = [i for i in range(len(dims)) if i != axis]
    target = memoryview(bytearray(numel * itemsize)).cast(fmt)
    for index in itertools.product(*(range(sizes[i]) for i in others)):
        src = sum(j * dims[i][1] for j, i in zip(index, others, strict=True))
        dst = sum(j * out_strides[i] for j, i in zip(index, others, strict=True))
        target[dst : dst + (n - 1) * out_stride + 1 : out_stride] = source[src : src + (n - 1) * stride + 1 : stride]
    yield from _chunked(target.cast("B"))


def _chunked(data: bytes | memoryview) -> Iterator[bytes]:
    for at in range(0, len(data), CHUNK):
        yield bytes(data[at : at + CHUNK])


def _byteswapped(chunk: bytes, unit: int) -> bytes:
    if unit == 1:
        return chunk
    values = array.array(_SWAP_CODES[unit], chunk)
    values.byteswap()
    return values.tobytes()


USE_NUMPY = True
"""Gather non-contiguous tensors with numpy when it is installed (tests turn this off to cover the fallback)."""


def tensor_bytes(reader: StorageReader, tensor: TensorRef) -> Iterator[bytes]:
    """The tensor's elements in C order, little-endian, as consecutive chunks."""
    itemsize = tensor.dtype.itemsize
    if tensor.numel == 0:
        return
    if itemsize not in _FORMATS:
        raise ConvertError(f"cannot materialise {tensor.dtype.name} elements of {itemsize} bytes")
    first, end = tensor.extent
    dims = _collapse(tensor.size, tensor.stride)
    chunks: Iterator[bytes]
    if not dims or (len(dims) == 1 and dims[0][1] == 1):
        # Contiguous: stream straight from the storage, CHUNK bytes (whole elements) at a time.
        step = CHUNK - CHUNK % itemsize
        total = tensor.nbytes
        chunks = (
            reader.read(tensor.storage, first * itemsize + done, min(step, total - done))
            for done in range(0, total, step)
        )
    else:
        # Read once the span the view touches, then gather the elements from it.
        span = reader.read(tensor.storage, first * itemsize, (end - first) * itemsize)
        gathered = _numpy_gather(span, itemsize, dims) if USE_NUMPY else None
        chunks = gathered if gathered is not None else _python_gather(span, itemsize, dims)
    for chunk in chunks:
        yield _byteswapped(chunk, tensor.dtype.swap) if reader.big_endian else chunk
