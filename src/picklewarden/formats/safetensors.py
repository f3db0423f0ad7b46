"""safetensors: a data-only format (no loader unpickles it), validated as the reference reader does.

Layout: an 8-byte little-endian header length N, N bytes of JSON, then the tensor data. The reference
reader refuses headers over 100 MB, requires every tensor's ``data_offsets`` to match its dtype and shape,
and requires the tensors to cover the data section exactly: no gap, no overlap, nothing after the last one.
"""

from __future__ import annotations

import json
import struct

from picklewarden._typing import TYPE_CHECKING
from picklewarden.containers.base import Anomaly, Data, Opened
from picklewarden.extract.safetensors_format import MAX_HEADER

if TYPE_CHECKING:
    from typing import Any, Final

NOT_PICKLE = "a data-only format: its loaders never unpickle, so no code runs when it is loaded"
_MAX_REPORTED: Final = 20
"""Problems listed per file: a broken header tends to break every entry the same way."""

_BITS: Final[dict[str, int]] = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "F64": 64,
    "I64": 64,
    "U64": 64,
    "C64": 64,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
}
"""Bits per element of each dtype the reference reader knows (sub-byte types pack)."""


def open_safetensors(data: Data) -> Opened:
    opened = Opened("safetensors")
    opened.notes.append(f"safetensors: {NOT_PICKLE}")
    problems = validate(data)
    for problem in problems[:_MAX_REPORTED]:
        opened.anomalies.append(Anomaly("PW408", None, None, f"safetensors {problem}"))
    if len(problems) > _MAX_REPORTED:
        opened.notes.append(f"{len(problems) - _MAX_REPORTED} more safetensors problems not listed")
    return opened


def validate(data: Data) -> list[str]:
    """Every way the file breaks the format (empty when the reference reader would accept it)."""
    total = len(data)
    (size,) = struct.unpack_from("<Q", bytes(data[:8]))
    if size > MAX_HEADER:
        return [f"header declares {size} bytes, more than the {MAX_HEADER} the reference reader accepts"]
    if 8 + size > total:
        return [f"header declares {size} bytes but the file holds only {total - 8} after the length"]
    duplicates: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in items:
            if key in seen:
                duplicates.append(key)
            seen[key] = value
        return seen

    try:
        header = json.loads(bytes(data[8 : 8 + size]).decode("utf-8"), object_pairs_hook=pairs)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        return [f"header is not valid UTF-8 JSON: {exc}"]
    if not isinstance(header, dict):
        return ["header is not a JSON object"]
    problems = [f"header names {key!r} twice" for key in duplicates]
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        problems.append("__metadata__ is not a map of strings to strings")
    spans: list[tuple[int, int, str]] = []
    for name, entry in header.items():
        span = _entry(name, entry, problems)
        if span is not None:
            spans.append(span)
    spans.sort()
    expected = 0
    for begin, end, name in spans:
        if begin > expected:
            problems.append(f"{begin - expected} bytes before tensor {name!r} belong to no tensor")
        elif begin < expected:
            problems.append(f"tensor {name!r} overlaps the tensor before it")
        expected = max(expected, end)
    data_size = total - 8 - size
    if expected > data_size:
        problems.append(f"tensor data runs {expected - data_size} bytes past the end of the file")
    elif expected < data_size:
        problems.append(f"{data_size - expected} bytes after the last tensor belong to no tensor")
    return problems


def _entry(name: str, entry: object, problems: list[str]) -> tuple[int, int, str] | None:
    if not isinstance(entry, dict):
        problems.append(f"entry {name!r} is not an object")
        return None
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    bits = _BITS.get(dtype) if isinstance(dtype, str) else None
    if bits is None:
        problems.append(f"tensor {name!r} has unknown dtype {dtype!r}")
        return None
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        problems.append(f"tensor {name!r} has an invalid shape {shape!r}")
        return None
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(type(o) is int and o >= 0 for o in offsets)
        or offsets[0] > offsets[1]
    ):
        problems.append(f"tensor {name!r} has invalid data_offsets {offsets!r}")
        return None
    count = 1
    for dim in shape:
        count *= dim
    nbits = count * bits
    begin, end = offsets
    if nbits % 8 or nbits // 8 != end - begin:
        problems.append(f"tensor {name!r}: {dtype} {shape} needs {nbits / 8:g} bytes, data_offsets give {end - begin}")
    return begin, end, name
