"""ONNX models read with a bounded protobuf wire-format reader (no ``onnx`` package, nothing executed).

Only the fields that matter are followed: the graph, its nodes (their operator domain, and subgraphs in
attributes), initializers and their ``external_data`` entries, and model-local functions. A ``location``
that is absolute or climbs out with ``..`` makes ``onnx.load`` read a file outside the model's directory.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator

from picklewarden._typing import TYPE_CHECKING
from picklewarden.containers.base import Anomaly, Data, Opened
from picklewarden.formats.safetensors import NOT_PICKLE

if TYPE_CHECKING:
    from typing import Final

_MAX_DEPTH: Final = 32
_MAX_FIELDS: Final = 5_000_000
_STANDARD_DOMAINS: Final = frozenset({"", "ai.onnx", "ai.onnx.ml", "ai.onnx.training", "ai.onnx.preview.training"})
_DRIVE = re.compile(r"^[A-Za-z]:")

# Field numbers (onnx.proto3) of the messages followed: message -> {field: message it holds}.
_MODEL_GRAPH, _MODEL_FUNCTIONS = 7, 25
_GRAPH = {1: "node", 5: "tensor", 15: "sparse"}
_NODE = {5: "attribute"}
_ATTRIBUTE = {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse"}
_SPARSE = {1: "tensor", 2: "tensor"}
_FUNCTION = {7: "node"}


class _Broken(Exception):
    pass


def _varint(data: Data, pos: int, end: int) -> tuple[int, int]:
    # Slices only (a remote file's view supports len() and slices, not indexing).
    chunk = bytes(data[pos : min(pos + 10, end)])
    value = 0
    for index, byte in enumerate(chunk):
        value |= (byte & 0x7F) << (7 * index)
        if byte < 0x80:
            return value, pos + index + 1
    raise _Broken(f"bad varint at byte {pos}")


def fields(data: Data, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, value or payload start, payload end) for each field in ``[start, end)``."""
    pos = start
    while pos < end:
        key, pos = _varint(data, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _Broken(f"field number 0 at byte {pos}")
        if wire == 0:
            value, pos = _varint(data, pos, end)
            yield number, wire, value, pos
        elif wire == 1 or wire == 5:
            size = 8 if wire == 1 else 4
            if pos + size > end:
                raise _Broken(f"truncated fixed field at byte {pos}")
            yield number, wire, pos, pos + size
            pos += size
        elif wire == 2:
            length, pos = _varint(data, pos, end)
            if pos + length > end:
                raise _Broken(f"field {number} at byte {pos} declares {length} bytes past its message")
            yield number, wire, pos, pos + length
            pos += length
        else:
            raise _Broken(f"unsupported wire type {wire} at byte {pos}")


def looks_like(data: Data, head: bytes) -> bool:
    """A ModelProto: starts with ir_version (field 1, varint) and its top-level fields parse to the end with
    a graph among them."""
    if head[:1] != b"\x08":
        return False
    try:
        numbers = {number for number, _, _, _ in fields(data, 0, len(data))}
    except _Broken:
        return False
    return _MODEL_GRAPH in numbers and numbers <= set(range(1, 30))


class _Walk:
    def __init__(self, data: Data, opened: Opened) -> None:
        self.data = data
        self.opened = opened
        self.count = 0
        self.domains: dict[str, None] = {}

    def message(self, kind: str, start: int, end: int, depth: int) -> None:
        if depth > _MAX_DEPTH:
            raise _Broken("messages nested too deeply")
        table = {"graph": _GRAPH, "node": _NODE, "attribute": _ATTRIBUTE, "sparse": _SPARSE, "function": _FUNCTION}
        follow = table.get(kind, {})
        name = ""
        for number, wire, a, b in fields(self.data, start, end):
            self.count += 1
            if self.count > _MAX_FIELDS:
                raise _Broken(f"more than {_MAX_FIELDS} protobuf fields")
            if wire != 2:
                continue
            if kind == "node" and number == 7:
                domain = bytes(self.data[a:b]).decode("utf-8", "replace")
                if domain not in _STANDARD_DOMAINS:
                    self.domains[domain] = None
            elif kind == "tensor" and number == 8:
                name = bytes(self.data[a:b]).decode("utf-8", "replace")
            elif kind == "tensor" and number == 13:
                self.external(name, a, b)
            elif number in follow:
                self.message(follow[number], a, b, depth + 1)

    def external(self, tensor: str, start: int, end: int) -> None:
        entry = {
            n: bytes(self.data[a:b]).decode("utf-8", "replace")
            for n, w, a, b in fields(self.data, start, end)
            if w == 2
        }
        if entry.get(1) != "location":
            return
        location = entry.get(2, "")
        why = escapes(location)
        if why is not None:
            message = f"tensor {tensor!r} reads its data from {location!r}, which {why}"
            self.opened.anomalies.append(Anomaly("PW404", None, start, message, evidence=f"location: {location}"))


def escapes(location: str) -> str | None:
    """Why an external-data location leaves the model's directory, or None."""
    normal = location.replace("\\", "/")
    if normal.startswith("/") or _DRIVE.match(normal):
        return "is an absolute path"
    resolved = posixpath.normpath(normal)
    if resolved == ".." or resolved.startswith("../"):
        return "climbs out of the model directory with '..'"
    return None


def open_onnx(data: Data) -> Opened:
    opened = Opened("onnx")
    opened.notes.append(f"onnx: {NOT_PICKLE}")
    walk = _Walk(data, opened)
    try:
        for number, wire, a, b in fields(data, 0, len(data)):
            if wire == 2 and number == _MODEL_GRAPH:
                walk.message("graph", a, b, 1)
            elif wire == 2 and number == _MODEL_FUNCTIONS:
                walk.message("function", a, b, 1)
    except _Broken as exc:
        opened.anomalies.append(Anomaly("PW408", None, None, f"ONNX protobuf is malformed: {exc}"))
    if walk.domains:
        listed = ", ".join(repr(d) for d in walk.domains)
        opened.anomalies.append(Anomaly("PW405", None, None, f"nodes use operator domains {listed}"))
    return opened
