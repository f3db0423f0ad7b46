"""The stream the stand-in machine reads: the same kind of file object the victim's loader reads through.

Split from machine.py; the read path matters for fidelity (a buffered file and a BytesIO differ in how the C
unpickler reads FRAMEs), and an invalid opcode may be planted where the layout pass found the stream broken.
"""

from __future__ import annotations

import contextlib
import io
import mmap

from picklewarden._typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from _typeshed import WriteableBuffer

    from picklewarden.buffers import Buffer


def open_stream(
    data: Buffer, start: int, patch: int | None, file_like: bool, invalid: int, *, peek: bool = False
) -> tuple[Any, int, Callable[[], None]]:
    """(stream for the machine, offset in ``data`` of the stream's position 0, release callback).

    A victim's ``pickle.load(open(...))`` reads through a buffered file, torch's zip loader through a
    ``BytesIO``; the machine gets the same kind of stream. Without ``peek`` the C unpickler calls ``read``
    once per opcode argument, so the ``BytesIO`` case must not be a Python-level reader (that was 70% of
    the time on a large state dict): it is a real ``BytesIO``, sharing a ``bytes`` object without copying it,
    or a copy of the stream with the patched byte when there is a cut. With ``peek`` (for a stream that
    runs no FRAME) it is a :class:`PeekingBytesIO`.
    """
    kind = BYTES_STREAM if peek else io.BytesIO
    if file_like:
        raw = _ViewReader(data, start, patch, invalid)
        return io.BufferedReader(raw), 0, raw.release
    if patch is None and type(data) is bytes:
        stream = kind(data)
        stream.seek(start)
        return stream, 0, stream.close
    view = memoryview(data)
    try:
        if patch is None:
            copy = bytes(view[start:])
        else:
            copy = b"".join((view[start:patch], bytes((invalid,)), view[patch + 1 :]))
    finally:
        view.release()
    stream = kind(copy)
    return stream, start, stream.close


class PeekingBytesIO(io.BytesIO):
    """A ``BytesIO`` that also has ``peek``, as every buffered file does.

    With ``peek`` the C unpickler fetches 128 KiB ahead at a time and decodes from its own buffer; without
    it, it calls ``read`` for every opcode and argument (15M calls for a 500k-tensor state dict, twice the
    time of the rest of the machine). torch's zip loader hands the unpickler a plain ``BytesIO``. The two
    read paths of ``Modules/_pickle.c`` differ only in how many bytes they ask the file for at once, until
    a FRAME runs: without ``peek`` the frame becomes the whole buffer, and a line or argument running past
    its end is read again from the file at the frame's end (``I12`` + ``3\n`` beyond a 3-byte frame loads 3,
    not 123); with ``peek`` the buffer runs on. So the machine peeks only on streams whose layout runs no
    FRAME (torch.save writes protocol 2, without frames); tests/test_machine_core.py compares both readers
    on mutated pickles and on frames cut at every byte."""

    def peek(self, size: int = 0, /) -> bytes:
        position = self.tell()
        ahead = self.read(max(size, 1))
        self.seek(position)
        return ahead


BYTES_STREAM: type[io.BytesIO] = PeekingBytesIO
"""The class of the machine's ``BytesIO`` streams (a test swaps in ``io.BytesIO`` to compare)."""


_PREFETCH = 256 * 1024
"""Bytes of a mapped pickle asked for ahead of the reader at a time."""


class _ViewReader(io.RawIOBase):
    """A read-only file over bytes or an mmap, without copying them, with one byte optionally replaced."""

    def __init__(self, data: Buffer, start: int, patch: int | None, invalid: int) -> None:
        super().__init__()
        self._invalid = invalid
        self._view = memoryview(data)
        self._pos = start
        self._patch = patch
        # A mapped file is read with the kernel's read-ahead off (see scanner.analyse_path): prefetch just
        # ahead of the reader instead, so a long pickle streams in while one that ends early costs no more.
        self._map = data if isinstance(data, mmap.mmap) and hasattr(mmap, "MADV_WILLNEED") else None
        self._advised = start - start % mmap.PAGESIZE

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        target = memoryview(buffer).cast("B")
        count = max(0, min(len(target), len(self._view) - self._pos))
        if self._map is not None and self._pos + count > self._advised:
            self._prefetch(self._pos + count)
        target[:count] = self._view[self._pos : self._pos + count]
        if self._patch is not None and self._pos <= self._patch < self._pos + count:
            target[self._patch - self._pos] = self._invalid
        self._pos += count
        return count

    def _prefetch(self, needed: int) -> None:
        assert self._map is not None
        page = mmap.PAGESIZE
        # Whole pages from a page boundary: madvise refuses an unaligned start.
        end = min(len(self._view), -(-max(self._advised + _PREFETCH, needed) // page) * page)
        if end > self._advised:
            with contextlib.suppress(OSError, ValueError):
                self._map.madvise(mmap.MADV_WILLNEED, self._advised, end - self._advised)
        self._advised = max(self._advised, end)

    def release(self) -> None:
        """Drop the buffer export (an mmap cannot close while a view of it exists)."""
        self._view.release()
        self.close()
