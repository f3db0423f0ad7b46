"""Writing the safetensors format, without the safetensors package.

The format (https://huggingface.co/docs/safetensors): an 8-byte little-endian header length N, N bytes of
UTF-8 JSON, then the tensor data. The JSON maps each name to ``{"dtype", "shape", "data_offsets":
[begin, end]}`` (offsets relative to the end of the header) plus an optional ``"__metadata__"`` map of
strings to strings. Readers require the data to be covered exactly, with no gaps or overlaps, so every
tensor is written on its own, back to back. The header is padded with spaces to a multiple of 8 bytes,
as the reference writer does, so that data starts aligned.
"""

from __future__ import annotations

import json
import os
import secrets
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from picklewarden.extract.errors import ConvertError

MAX_HEADER: Final[int] = 100_000_000
"""The reference reader refuses headers larger than this."""


@dataclass(frozen=True, slots=True)
class Planned:
    """One tensor to write."""

    name: str
    dtype: str
    """safetensors dtype, e.g. ``F32``."""
    shape: tuple[int, ...]
    nbytes: int


def header(tensors: Sequence[Planned], metadata: Mapping[str, str]) -> bytes:
    """The length-prefixed, padded JSON header for ``tensors`` written in this order."""
    entries: dict[str, object] = {}
    if metadata:
        entries["__metadata__"] = dict(metadata)
    offset = 0
    for tensor in tensors:
        if tensor.name == "__metadata__" or tensor.name in entries:
            raise ConvertError(f"tensor name {tensor.name!r} cannot be written twice or as __metadata__")
        entries[tensor.name] = {
            "dtype": tensor.dtype,
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + tensor.nbytes],
        }
        offset += tensor.nbytes
    text = json.dumps(entries, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    if len(text) > MAX_HEADER:
        raise ConvertError(f"the safetensors header would be {len(text)} bytes; readers accept at most {MAX_HEADER}")
    return struct.pack("<Q", len(text)) + text


def write(
    path: str,
    tensors: Sequence[Planned],
    metadata: Mapping[str, str],
    data: Callable[[int], Iterable[bytes]],
) -> None:
    """Write a safetensors file; ``data(i)`` yields the bytes of ``tensors[i]``.

    The file appears at ``path`` only once complete (written beside it, then renamed over it), so a
    failure never leaves a truncated file that a reader might take for a model.
    """
    head = header(tensors, metadata)
    directory, base = os.path.split(os.path.abspath(path))
    temporary = os.path.join(directory, f".{base}.{secrets.token_hex(6)}.tmp")
    # O_EXCL: never write through a file (or symlink) someone else put at the temporary name.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(head)
            for index, tensor in enumerate(tensors):
                written = 0
                for chunk in data(index):
                    out.write(chunk)
                    written += len(chunk)
                if written != tensor.nbytes:
                    raise ConvertError(f"tensor {tensor.name!r}: produced {written} bytes, expected {tensor.nbytes}")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
