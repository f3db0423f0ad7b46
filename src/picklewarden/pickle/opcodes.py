"""The pickle opcode table, derived as data from :data:`pickletools.opcodes`.

``pickletools`` documents every opcode of protocols 0-5 with its argument layout; retyping that knowledge
is how other scanners' opcode lists drifted from CPython, so everything here is computed from it once, at
import time, and checked for consistency.
"""

from __future__ import annotations

import enum
import pickletools

from picklewarden._typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from typing import Final


class ArgKind(enum.IntEnum):
    """How an opcode's inline argument is laid out in the stream."""

    NONE = 0
    FIXED = 1
    """A fixed number of bytes (``width``)."""
    LINE = 2
    """Bytes up to and including a newline."""
    TWO_LINES = 3
    """Two newline-terminated lines (``GLOBAL`` and ``INST``: module and name)."""
    COUNTED = 4
    """A little-endian length of ``width`` bytes, then that many bytes."""


class Opcode(NamedTuple):
    """One pickle opcode: how its argument is encoded and which protocol introduced it."""

    name: str
    code: int
    kind: ArgKind
    width: int
    """Bytes of the fixed argument, or of the length prefix for ``COUNTED``."""
    signed_length: bool
    """The length prefix is a signed int (``BINSTRING``, ``LONG4``): negative counts are an error in C."""
    proto: int


def _derive(info: pickletools.OpcodeInfo) -> Opcode:
    code = ord(info.code.encode("latin-1"))
    arg = info.arg
    if arg is None:
        return Opcode(info.name, code, ArgKind.NONE, 0, False, info.proto)
    n = arg.n
    if n >= 0:
        return Opcode(info.name, code, ArgKind.FIXED, n, False, info.proto)
    if n == pickletools.UP_TO_NEWLINE:
        # The only two-line argument is the "module\nname\n" pair of GLOBAL and INST.
        kind = ArgKind.TWO_LINES if arg.name.endswith("_pair") else ArgKind.LINE
        return Opcode(info.name, code, kind, 0, False, info.proto)
    widths = {
        pickletools.TAKEN_FROM_ARGUMENT1: (1, False),
        pickletools.TAKEN_FROM_ARGUMENT4: (4, True),
        pickletools.TAKEN_FROM_ARGUMENT4U: (4, False),
        pickletools.TAKEN_FROM_ARGUMENT8U: (8, False),
    }
    width, signed = widths[n]
    return Opcode(info.name, code, ArgKind.COUNTED, width, signed, info.proto)


OPCODES: Final[tuple[Opcode, ...]] = tuple(_derive(info) for info in pickletools.opcodes)
BY_NAME: Final[dict[str, Opcode]] = {op.name: op for op in OPCODES}
_CODED = {op.code: op for op in OPCODES}
BY_CODE: Final[tuple[Opcode | None, ...]] = tuple(_CODED.get(byte) for byte in range(256))

assert len(BY_NAME) == len(OPCODES) == len(_CODED), "pickletools table inconsistent"
assert {"GLOBAL", "STACK_GLOBAL", "REDUCE", "BUILD", "FRAME", "STOP"} <= BY_NAME.keys()


def codes(*names: str) -> frozenset[int]:
    """The byte codes of the named opcodes (a KeyError for a name pickletools does not know)."""
    return frozenset(BY_NAME[name].code for name in names)


# Opcodes by what they make the unpickler do. The machine and the layout pass both rely on these sets.
IMPORTS: Final = codes("GLOBAL", "INST", "STACK_GLOBAL")
"""Opcodes that make the unpickler call ``find_class``."""
CALLS: Final = codes("REDUCE", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX")
"""Opcodes that call a callable or a class's ``__new__``."""
EXTENSIONS: Final = codes("EXT1", "EXT2", "EXT4")
PERSISTENT: Final = codes("PERSID", "BINPERSID")
MEMO_PUTS: Final = codes("PUT", "BINPUT", "LONG_BINPUT")
BUILD: Final = BY_NAME["BUILD"].code
PROTO: Final = BY_NAME["PROTO"].code
STOP: Final = BY_NAME["STOP"].code
FRAME: Final = BY_NAME["FRAME"].code
MEMOIZE: Final = BY_NAME["MEMOIZE"].code
