"""GGUF (llama.cpp's model format): header, metadata key-values and tensor descriptors, every length bounded
by the bytes that remain. Weights are never unpickled; the one thing in a GGUF file that can run code is a
Jinja chat template rendered by an unsandboxed runtime, so template strings go to :mod:`.templates`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from picklewarden._typing import TYPE_CHECKING
from picklewarden.containers.base import Anomaly, Data, Opened
from picklewarden.formats import templates
from picklewarden.formats.safetensors import NOT_PICKLE

if TYPE_CHECKING:
    from typing import Final

_MAX_KV: Final = 1_000_000
_MAX_TENSORS: Final = 10_000_000
_MAX_DIMS: Final = 4
"""GGML_MAX_DIMS: llama.cpp rejects tensors with more dimensions."""
_MAX_KEY: Final = 1 << 16
"""Key names are short; a longer one is a broken or hostile header."""

# GGUF value types: id -> fixed size in bytes (strings and arrays are variable).
_FIXED: Final[dict[int, int]] = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING: Final = 8
_TOO_LONG: Final = "\x00too long\x00"
_U32: Final = 4
_DEFAULT_ALIGNMENT: Final = 32
_ARRAY: Final = 9


class _Broken(Exception):
    """The file ends or contradicts itself at ``offset``."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(f"{reason} (at byte {offset})")


@dataclass
class _Reader:
    data: Data
    pos: int = 0
    size: int = field(init=False)

    def __post_init__(self) -> None:
        self.size = len(self.data)

    def take(self, count: int) -> bytes:
        if count < 0 or self.pos + count > self.size:
            raise _Broken(self.pos, f"needs {count} bytes, only {self.size - self.pos} remain")
        chunk = bytes(self.data[self.pos : self.pos + count])
        self.pos += count
        return chunk

    def skip(self, count: int) -> None:
        if count < 0 or self.pos + count > self.size:
            raise _Broken(self.pos, f"needs {count} bytes, only {self.size - self.pos} remain")
        self.pos += count

    def u32(self) -> int:
        value: int = struct.unpack("<I", self.take(4))[0]
        return value

    def u64(self) -> int:
        value: int = struct.unpack("<Q", self.take(8))[0]
        return value

    def string(self, keep: bool, cap: int = templates.MAX_TEMPLATE) -> str | None:
        """The string (None when not kept). One longer than ``cap`` is skipped and raises for keys, and
        comes back as a too-long marker for values."""
        length = self.u64()
        if not keep or length > cap:
            self.skip(length)
            return _TOO_LONG if keep else None
        return self.take(length).decode("utf-8", "replace")


def open_gguf(data: Data) -> Opened:
    opened = Opened("gguf")
    opened.notes.append(f"gguf: {NOT_PICKLE} (chat templates are reviewed)")
    reader = _Reader(data)
    found: dict[str, str] = {}
    try:
        reader.skip(4)
        version = reader.u32()
        if version not in (2, 3):
            raise _Broken(4, f"unsupported GGUF version {version} (llama.cpp reads versions 2 and 3)")
        tensors, kvs = reader.u64(), reader.u64()
        if kvs > _MAX_KV or tensors > _MAX_TENSORS:
            raise _Broken(8, f"declares {tensors} tensors and {kvs} key-values, beyond any real model")
        alignment = _DEFAULT_ALIGNMENT
        for _ in range(kvs):
            key = reader.string(True, _MAX_KEY) or ""
            if key == _TOO_LONG:
                raise _Broken(reader.pos, f"a metadata key is longer than {_MAX_KEY} bytes")
            kind = reader.u32()
            if key == "general.alignment" and kind == _U32:
                alignment = struct.unpack("<I", bytes(data[reader.pos : reader.pos + 4]).ljust(4, b"\0"))[0]
            keep = "template" in key
            value = _value(reader, kind, keep)
            if keep and isinstance(value, str):
                found[key] = value
        if alignment == 0 or alignment & (alignment - 1):
            raise _Broken(reader.pos, f"general.alignment {alignment} is not a power of two")
        offsets = []
        for _ in range(tensors):
            name = reader.string(True, _MAX_KEY) or ""
            dims = reader.u32()
            if dims > _MAX_DIMS:
                raise _Broken(reader.pos, f"tensor {name!r} declares {dims} dimensions (at most {_MAX_DIMS})")
            reader.skip(8 * dims + 4)
            offsets.append((reader.u64(), name))
        _check_offsets(offsets, reader.pos, alignment, reader.size, opened)
    except _Broken as exc:
        opened.anomalies.append(Anomaly("PW408", None, None, f"GGUF header is malformed: {exc}"))
    for key, text in found.items():
        _review(key, text, opened)
    return opened


def _check_offsets(offsets: list[tuple[int, str]], end: int, alignment: int, size: int, opened: Opened) -> None:
    """Tensor data starts at the first aligned offset after the descriptors; every tensor starts inside it,
    aligned, and no two start at the same place."""
    start = -(-end // alignment) * alignment
    seen: set[int] = set()
    for offset, name in offsets:
        problem = None
        if offset % alignment:
            problem = f"is not aligned to {alignment} bytes"
        elif start + offset >= size:
            problem = f"starts past the end of the file (data offset {offset})"
        elif offset in seen:
            problem = "starts where another tensor starts"
        seen.add(offset)
        if problem is not None:
            opened.anomalies.append(Anomaly("PW408", None, None, f"GGUF tensor {name!r} {problem}"))
            return


def _value(reader: _Reader, kind: int, keep: bool) -> object:
    fixed = _FIXED.get(kind)
    if fixed is not None:
        reader.skip(fixed)
        return None
    if kind == _STRING:
        return reader.string(keep)
    if kind != _ARRAY:
        raise _Broken(reader.pos, f"unknown value type {kind}")
    inner, count = reader.u32(), reader.u64()
    fixed = _FIXED.get(inner)
    if fixed is not None:
        reader.skip(fixed * count)  # bounded: skip checks the bytes remain
        return None
    if inner != _STRING:
        raise _Broken(reader.pos, f"array of unsupported value type {inner}")
    if count * 8 > reader.size - reader.pos:
        raise _Broken(reader.pos, f"array of {count} strings cannot fit in the file")
    for _ in range(count):
        reader.string(False)
    return None


def _review(key: str, text: str, opened: Opened) -> None:
    if text == _TOO_LONG:
        opened.errors.append(f"{key}: template larger than {templates.MAX_TEMPLATE} bytes not reviewed")
        return
    review = templates.review(text, f"GGUF {key}")
    opened.anomalies.extend(review.anomalies)
    if review.error is not None:
        opened.errors.append(f"{key}: {review.error}")
