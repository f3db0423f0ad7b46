"""A tiny pickle opcode assembler, so hostile test pickles read like the technique they use.

    from tests.asm import Asm
    data = Asm(proto=2).global_("os", "system").text("touch X").tuple1().reduce().stop().bytes()

Every method emits exactly one opcode (plus its inline argument) and returns the assembler, except
``text`` (picks SHORT_BINUNICODE/BINUNICODE), ``raw`` (arbitrary bytes, for garbage and truncation) and
the automatic FRAME placeholder. Opcode bytes come from :data:`pickletools.opcodes` by name; nothing here
checks that the result is a valid pickle -- producing invalid ones is half the point.
"""

from __future__ import annotations

import builtins
import pickle
import pickletools
import struct
from typing import Final

OP: Final[dict[str, bytes]] = {op.name: op.code.encode("latin-1") for op in pickletools.opcodes}
"""Opcode name -> its single opcode byte, e.g. ``OP["REDUCE"] == b"R"``."""


class _AutoFrame:
    """Placeholder for a FRAME whose length is everything up to the next placeholder (or the end)."""


def _line(value: str) -> builtins.bytes:
    return value.encode("utf-8") + b"\n"


class Asm:
    """Append-only pickle builder. ``Asm(proto=4)`` emits PROTO 4 and opens an automatic frame."""

    def __init__(self, proto: int | None = None, *, framed: bool | None = None) -> None:
        self._parts: list[builtins.bytes | _AutoFrame] = []
        self.protocol = proto
        if proto is not None and proto >= 2:
            self.proto(proto)
        if framed if framed is not None else (proto is not None and proto >= 4):
            self.frame()

    # -- low level -------------------------------------------------------------------------------------
    def op(self, name: str, arg: builtins.bytes = b"") -> Asm:
        """Emit opcode ``name`` (a :mod:`pickletools` name) followed by raw argument bytes."""
        self._parts.append(OP[name] + arg)
        return self

    def raw(self, data: builtins.bytes) -> Asm:
        """Emit arbitrary bytes (garbage tails, hand-made arguments)."""
        self._parts.append(data)
        return self

    # -- framing and protocol --------------------------------------------------------------------------
    def proto(self, version: int) -> Asm:
        return self.op("PROTO", struct.pack("<B", version))

    def frame(self, length: int | None = None) -> Asm:
        """FRAME with an explicit length, or (``None``) one sized to the bytes up to the next auto frame."""
        if length is None:
            self._parts.append(_AutoFrame())
            return self
        return self.op("FRAME", struct.pack("<Q", length))

    def stop(self) -> Asm:
        return self.op("STOP")

    # -- stack manipulation ----------------------------------------------------------------------------
    def mark(self) -> Asm:
        return self.op("MARK")

    def pop(self) -> Asm:
        return self.op("POP")

    def pop_mark(self) -> Asm:
        return self.op("POP_MARK")

    def dup(self) -> Asm:
        return self.op("DUP")

    # -- constants -------------------------------------------------------------------------------------
    def none(self) -> Asm:
        return self.op("NONE")

    def newtrue(self) -> Asm:
        return self.op("NEWTRUE")

    def newfalse(self) -> Asm:
        return self.op("NEWFALSE")

    true = newtrue
    false = newfalse

    def int_(self, value: int) -> Asm:
        """Text INT; booleans use protocol 0's ``I01``/``I00`` spelling."""
        if isinstance(value, bool):
            return self.op("INT", b"01\n" if value else b"00\n")
        return self.op("INT", _line(str(value)))

    def binint(self, value: int) -> Asm:
        return self.op("BININT", struct.pack("<i", value))

    def binint1(self, value: int) -> Asm:
        return self.op("BININT1", struct.pack("<B", value))

    def binint2(self, value: int) -> Asm:
        return self.op("BININT2", struct.pack("<H", value))

    def long(self, value: int) -> Asm:
        return self.op("LONG", _line(f"{value}L"))

    def long1(self, value: int) -> Asm:
        data = pickle.encode_long(value)
        return self.op("LONG1", struct.pack("<B", len(data)) + data)

    def long4(self, value: int) -> Asm:
        data = pickle.encode_long(value)
        return self.op("LONG4", struct.pack("<i", len(data)) + data)

    def float_(self, value: float) -> Asm:
        return self.op("FLOAT", _line(repr(value)))

    def binfloat(self, value: float) -> Asm:
        return self.op("BINFLOAT", struct.pack(">d", value))

    # -- strings and bytes -----------------------------------------------------------------------------
    def string(self, value: str | builtins.bytes) -> Asm:
        """Protocol-0 STRING: a quoted, backslash-escaped literal (loaded as ``str`` under Python 3)."""
        data = value.encode("latin-1") if isinstance(value, str) else value
        return self.op("STRING", repr(data)[1:].encode("ascii") + b"\n")

    def binstring(self, value: str | builtins.bytes) -> Asm:
        data = value.encode("latin-1") if isinstance(value, str) else value
        return self.op("BINSTRING", struct.pack("<i", len(data)) + data)

    def short_binstring(self, value: str | builtins.bytes) -> Asm:
        data = value.encode("latin-1") if isinstance(value, str) else value
        return self.op("SHORT_BINSTRING", struct.pack("<B", len(data)) + data)

    def unicode(self, value: str) -> Asm:
        """Protocol-0 UNICODE (raw-unicode-escape, one line)."""
        escaped = value.replace("\\", "\\u005c").replace("\n", "\\u000a").replace("\r", "\\u000d")
        return self.op("UNICODE", escaped.encode("raw-unicode-escape") + b"\n")

    def binunicode(self, value: str) -> Asm:
        data = value.encode("utf-8", "surrogatepass")
        return self.op("BINUNICODE", struct.pack("<I", len(data)) + data)

    def short_binunicode(self, value: str) -> Asm:
        data = value.encode("utf-8", "surrogatepass")
        return self.op("SHORT_BINUNICODE", struct.pack("<B", len(data)) + data)

    def binunicode8(self, value: str) -> Asm:
        data = value.encode("utf-8", "surrogatepass")
        return self.op("BINUNICODE8", struct.pack("<Q", len(data)) + data)

    def text(self, value: str) -> Asm:
        """Sugar: SHORT_BINUNICODE when it fits, else BINUNICODE (both need protocol >= 1 loaders)."""
        if len(value.encode("utf-8", "surrogatepass")) < 256:
            return self.short_binunicode(value)
        return self.binunicode(value)

    def binbytes(self, data: builtins.bytes) -> Asm:
        return self.op("BINBYTES", struct.pack("<I", len(data)) + data)

    def short_binbytes(self, data: builtins.bytes) -> Asm:
        return self.op("SHORT_BINBYTES", struct.pack("<B", len(data)) + data)

    def binbytes8(self, data: builtins.bytes) -> Asm:
        return self.op("BINBYTES8", struct.pack("<Q", len(data)) + data)

    def bytearray8(self, data: builtins.bytes) -> Asm:
        return self.op("BYTEARRAY8", struct.pack("<Q", len(data)) + data)

    def next_buffer(self) -> Asm:
        return self.op("NEXT_BUFFER")

    def readonly_buffer(self) -> Asm:
        return self.op("READONLY_BUFFER")

    # -- containers ------------------------------------------------------------------------------------
    def empty_list(self) -> Asm:
        return self.op("EMPTY_LIST")

    def append(self) -> Asm:
        return self.op("APPEND")

    def appends(self) -> Asm:
        return self.op("APPENDS")

    def list_(self) -> Asm:
        return self.op("LIST")

    def empty_tuple(self) -> Asm:
        return self.op("EMPTY_TUPLE")

    def tuple_(self) -> Asm:
        return self.op("TUPLE")

    def tuple1(self) -> Asm:
        return self.op("TUPLE1")

    def tuple2(self) -> Asm:
        return self.op("TUPLE2")

    def tuple3(self) -> Asm:
        return self.op("TUPLE3")

    def empty_dict(self) -> Asm:
        return self.op("EMPTY_DICT")

    def dict_(self) -> Asm:
        return self.op("DICT")

    def setitem(self) -> Asm:
        return self.op("SETITEM")

    def setitems(self) -> Asm:
        return self.op("SETITEMS")

    def empty_set(self) -> Asm:
        return self.op("EMPTY_SET")

    def additems(self) -> Asm:
        return self.op("ADDITEMS")

    def frozenset(self) -> Asm:
        return self.op("FROZENSET")

    # -- memo ------------------------------------------------------------------------------------------
    def put(self, index: int) -> Asm:
        return self.op("PUT", _line(str(index)))

    def binput(self, index: int) -> Asm:
        return self.op("BINPUT", struct.pack("<B", index))

    def long_binput(self, index: int) -> Asm:
        return self.op("LONG_BINPUT", struct.pack("<I", index))

    def memoize(self) -> Asm:
        return self.op("MEMOIZE")

    def get(self, index: int) -> Asm:
        return self.op("GET", _line(str(index)))

    def binget(self, index: int) -> Asm:
        return self.op("BINGET", struct.pack("<B", index))

    def long_binget(self, index: int) -> Asm:
        return self.op("LONG_BINGET", struct.pack("<I", index))

    # -- names and calls -------------------------------------------------------------------------------
    def ext1(self, code: int) -> Asm:
        return self.op("EXT1", struct.pack("<B", code))

    def ext2(self, code: int) -> Asm:
        return self.op("EXT2", struct.pack("<H", code))

    def ext4(self, code: int) -> Asm:
        return self.op("EXT4", struct.pack("<i", code))

    def global_(self, module: str, name: str) -> Asm:
        """Text GLOBAL ``module\\nname\\n``."""
        return self.op("GLOBAL", _line(module) + _line(name))

    def stack_global(self) -> Asm:
        return self.op("STACK_GLOBAL")

    def reduce(self) -> Asm:
        return self.op("REDUCE")

    def build(self) -> Asm:
        return self.op("BUILD")

    def inst(self, module: str, name: str) -> Asm:
        return self.op("INST", _line(module) + _line(name))

    def obj(self) -> Asm:
        return self.op("OBJ")

    def newobj(self) -> Asm:
        return self.op("NEWOBJ")

    def newobj_ex(self) -> Asm:
        return self.op("NEWOBJ_EX")

    def persid(self, pid: str) -> Asm:
        return self.op("PERSID", _line(pid))

    def binpersid(self) -> Asm:
        return self.op("BINPERSID")

    # -- output ----------------------------------------------------------------------------------------
    def __bytes__(self) -> builtins.bytes:
        return self.bytes()

    def bytes(self) -> builtins.bytes:
        """The assembled stream; automatic FRAMEs are sized to the bytes that follow them."""
        out = bytearray()
        pending: list[builtins.bytes] = []
        frame_open = False

        def flush() -> None:
            body = b"".join(pending)
            if frame_open:
                out.extend(OP["FRAME"] + struct.pack("<Q", len(body)))
            out.extend(body)
            pending.clear()

        for part in self._parts:
            if isinstance(part, _AutoFrame):
                flush()
                frame_open = True
            else:
                pending.append(part)
        flush()
        return builtins.bytes(out)
