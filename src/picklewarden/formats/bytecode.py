"""A bounded reader of ``marshal`` data, enough to disassemble a code object without creating one.

Keras stores Lambda layers as ``marshal.dumps(func.__code__)``. ``marshal.loads`` on hostile bytes is
forbidden here (it builds a code object that one call away from running, and has crashed interpreters on
crafted input), so the few types a code object is made of are decoded by hand into plain Python values, and
its bytecode is listed with the running interpreter's opcode names.
"""

from __future__ import annotations

import dis
import struct
import sys
from dataclasses import dataclass

from picklewarden._typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Final

_FLAG_REF: Final = 0x80
_MAX_DEPTH: Final = 64
_MAX_ITEMS: Final = 1_000_000
_MAX_LISTING: Final = 400
"""Instructions shown per code object."""
_MAX_LINES: Final = 2_000
"""Lines of evidence in all, however many code objects the data nests."""


class MarshalError(Exception):
    pass


@dataclass(frozen=True)
class Code:
    """The fields of a marshalled code object that explain what it does."""

    name: str
    filename: str
    bytecode: bytes
    consts: tuple[object, ...]
    names: tuple[str, ...]
    layout: str
    """``3.11+`` or ``3.8-3.10``: the field layout the data was written with."""


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.refs: list[object] = []
        self.items = 0

    def take(self, count: int) -> bytes:
        if count < 0 or self.pos + count > len(self.data):
            raise MarshalError(f"truncated at byte {self.pos}")
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def i32(self) -> int:
        value: int = struct.unpack("<i", self.take(4))[0]
        return value

    def count(self, n: int) -> int:
        self.items += max(n, 0)
        if n < 0 or n > len(self.data) - self.pos + 1 or self.items > _MAX_ITEMS:
            raise MarshalError(f"implausible length {n} at byte {self.pos}")
        return n

    def read(self, depth: int = 0) -> object:
        if depth > _MAX_DEPTH:
            raise MarshalError("nested too deeply")
        code = self.take(1)[0]
        flag, kind = code & _FLAG_REF, chr(code & ~_FLAG_REF)
        slot = len(self.refs)
        if flag:
            self.refs.append(None)
        value = self._value(kind, depth)
        if flag:
            self.refs[slot] = value
        return value

    def _value(self, kind: str, depth: int) -> object:
        simple = {"0": None, "N": None, "F": False, "T": True, "S": StopIteration, ".": Ellipsis}
        if kind in simple:
            return simple[kind]
        if kind == "i":
            return self.i32()
        if kind == "I":
            value: int = struct.unpack("<q", self.take(8))[0]
            return value
        if kind == "l":
            n = self.i32()
            digits = self.take(2 * self.count(abs(n)))
            total = sum(d << (15 * i) for i, (d,) in enumerate(struct.iter_unpack("<H", digits)))
            return -total if n < 0 else total
        if kind == "g":
            real: float = struct.unpack("<d", self.take(8))[0]
            return real
        if kind == "y":
            return complex(*struct.unpack("<dd", self.take(16)))
        if kind in "fx":
            return self.take(self.take(1)[0]).decode("ascii", "replace")
        if kind in "s":
            return self.take(self.count(self.i32()))
        if kind in "tuaA":
            return self.take(self.count(self.i32())).decode("utf-8", "surrogatepass")
        if kind in "zZ":
            return self.take(self.take(1)[0]).decode("latin-1")
        if kind == ")":
            return tuple(self.read(depth + 1) for _ in range(self.count(self.take(1)[0])))
        if kind in "([<>":
            items = [self.read(depth + 1) for _ in range(self.count(self.i32()))]
            return tuple(items) if kind in "(<>" else items
        if kind == "{":
            pairs = []
            while self.data[self.pos : self.pos + 1] not in (b"0", b""):
                pairs.append((self.read(depth + 1), self.read(depth + 1)))
            self.take(1)
            return pairs
        if kind == "r":
            index = self.i32()
            if not 0 <= index < len(self.refs):
                raise MarshalError(f"reference {index} to an object not read yet")
            return self.refs[index]
        if kind == "c":
            return self._code(depth)
        raise MarshalError(f"unsupported marshal type {kind!r} at byte {self.pos - 1}")

    def _code(self, depth: int) -> Code:
        # Counts and flags are raw 32-bit fields: five of them in 3.11+, six in 3.8-3.10 (nlocals too).
        # The bytecode (a bytes object, type 's') follows, which tells the two layouts apart.
        self.take(20)
        new = self.data[self.pos : self.pos + 1] in (b"s", b"\xf3")
        if not new:
            self.take(4)
        bytecode, consts, names = (self.read(depth + 1) for _ in range(3))
        if not isinstance(bytecode, bytes) or not isinstance(consts, tuple) or not isinstance(names, tuple):
            raise MarshalError("code object fields have unexpected types")
        if new:  # localsplusnames, localspluskinds, filename, name, qualname, firstlineno, linetable, exctable
            _, _, filename, name, _ = (self.read(depth + 1) for _ in range(5))
            self.take(4)
            self.read(depth + 1)
            self.read(depth + 1)
        else:  # varnames, freevars, cellvars, filename, name, firstlineno, lnotab
            _, _, _, filename, name = (self.read(depth + 1) for _ in range(5))
            self.take(4)
            self.read(depth + 1)
        layout = "3.11+" if new else "3.8-3.10"
        return Code(str(name), str(filename), bytecode, consts, tuple(str(n) for n in names), layout)


def decode(data: bytes) -> Code:
    """The code object in ``data``. Raises :class:`MarshalError` on anything else or malformed input."""
    value = _Reader(data).read()
    if not isinstance(value, Code):
        raise MarshalError(f"marshal data holds a {type(value).__name__}, not a code object")
    return value


def listing(code: Code) -> list[str]:
    """Readable lines: the names and string constants the code uses, then its instructions; nested code
    objects follow, each listed once (references can repeat one many times), within a line budget."""
    lines: list[str] = []
    seen: set[int] = set()
    todo = [(code, 0)]
    while todo and len(lines) < _MAX_LINES:
        current, depth = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        pad = "  " * depth
        lines.append(f"{pad}code object {current.name!r} from {current.filename!r} (marshal layout {current.layout})")
        lines.append(f"{pad}  names used: {', '.join(current.names) or '-'}")
        strings = [repr(c)[:200] for c in current.consts if isinstance(c, (str, bytes))]
        if strings:
            lines.append(f"{pad}  string constants: {', '.join(strings[:50])}")
        if (current.layout == "3.11+") == (sys.version_info >= (3, 11)):
            lines.extend(f"{pad}  {line}" for line in _instructions(current))
        else:
            lines.append(f"{pad}  (bytecode of another Python version: instructions not listed)")
        todo.extend((c, depth + 1) for c in current.consts if isinstance(c, Code))
    return lines[:_MAX_LINES]


def _instructions(code: Code) -> list[str]:
    out: list[str] = []
    extended = 0
    raw = code.bytecode
    for at in range(0, len(raw) - 1, 2):
        op, arg = raw[at], raw[at + 1] | extended
        name = dis.opname[op]
        if name == "EXTENDED_ARG":
            extended = arg << 8
            continue
        extended = 0
        if name == "CACHE":
            continue
        out.append(f"{at:4d} {name} {_argument(code, name, arg)}".rstrip())
        if len(out) >= _MAX_LISTING:
            out.append("...")
            break
    return out


def _argument(code: Code, name: str, arg: int) -> str:
    if name == "LOAD_CONST" and arg < len(code.consts):
        value = code.consts[arg]
        return f"{value.name!r} (code)" if isinstance(value, Code) else repr(value)[:200]
    index = arg
    if name == "LOAD_GLOBAL" and sys.version_info >= (3, 11):
        index = arg >> 1
    elif name == "LOAD_ATTR" and sys.version_info >= (3, 12):
        index = arg >> 1
    if name in ("LOAD_GLOBAL", "LOAD_ATTR", "LOAD_NAME", "IMPORT_NAME", "IMPORT_FROM", "LOAD_METHOD", "STORE_NAME"):
        return code.names[index] if index < len(code.names) else str(arg)
    return str(arg) if dis.opname.index(name) >= dis.HAVE_ARGUMENT else ""
