"""A fast pass over one pickle's opcodes: offsets, bounds and where the C unpickler would stop.

This pass runs before the unpickler sees a byte. It never allocates from a length field: it only checks
that the bytes a length promises exist. It records the offset of every opcode that makes the unpickler
import, call, build or load a persistent id, so the machine's events (which happen in the same order) can
be tied back to bytes. Where the stream breaks or a limit is hit, ``cut`` is that opcode's offset: the
unpickler is then given the stream up to ``cut`` only, so it executes exactly the prefix a real unpickler
would have executed and fails at the same place, without ever allocating what a hostile length demands.

Decoding follows ``Modules/_pickle.c`` rather than ``pickletools.genops`` where they differ: FRAME is a
prefetch hint (its bytes must exist; arguments may cross its end), and PROTO above 5 is an error.
"""

from __future__ import annotations

import pickle as _stdlib_pickle
import time
from dataclasses import dataclass, field

from picklewarden.errors import LimitExceeded, MalformedPickle, ScanError
from picklewarden.limits import Limits
from picklewarden.pickle import opcodes as op
from picklewarden.pickle.opcodes import ArgKind

# Per byte: (kind, width, signed) or None for bytes that are not opcodes. A flat tuple keeps the hot loop
# to one index per opcode.
_TABLE: tuple[tuple[int, int, bool] | None, ...] = tuple(
    None if o is None else (int(o.kind), o.width, o.signed_length) for o in op.BY_CODE
)
_NONE, _FIXED, _LINE, _TWO_LINES, _COUNTED = (int(k) for k in ArgKind)
_PUT_TEXT = op.BY_NAME["PUT"].code
_BINPUT = op.BY_NAME["BINPUT"].code
_LONG_BINPUT = op.BY_NAME["LONG_BINPUT"].code
# EXT1/EXT2 codes are unsigned, EXT4's is a signed int4 (as pickletools and _pickle.c read them).
_EXT_SIGNED = {op.BY_NAME["EXT1"].code: False, op.BY_NAME["EXT2"].code: False, op.BY_NAME["EXT4"].code: True}


@dataclass(slots=True)
class Instruction:
    offset: int
    code: int
    arg: bytes
    """The raw argument bytes (for counted arguments, without the length prefix)."""

    @property
    def name(self) -> str:
        opcode = op.BY_CODE[self.code]
        assert opcode is not None
        return opcode.name


@dataclass(slots=True)
class Layout:
    """Where things are in one pickle, as far as it could be decoded."""

    start: int
    cut: int
    """Offset up to which the unpickler may read: the stream's end, or the opcode that breaks or exceeds."""
    end: int | None = None
    """Offset just past STOP, when the pickle is complete."""
    opcodes: int = 0
    imports: list[tuple[int, int, int]] = field(default_factory=list)
    """(offset, opcode, protocol in force) of each opcode that calls ``find_class``."""
    calls: list[tuple[int, int]] = field(default_factory=list)
    """(offset, opcode) of each opcode that calls something."""
    builds: list[int] = field(default_factory=list)
    persistent: list[int] = field(default_factory=list)
    extensions: list[tuple[int, int]] = field(default_factory=list)
    """(offset, extension code) of EXT1/2/4: they resolve through the loading process's copyreg registry."""
    protocol: int = 0
    """The last PROTO seen (0 when none)."""
    error: ScanError | None = None
    instructions: list[Instruction] | None = None


def scan_layout(data: bytes, start: int, limits: Limits, *, keep: bool = False) -> Layout:
    """Decode the pickle that begins at ``start`` up to its STOP, a malformation or a limit."""
    n = len(data)
    lay = Layout(start=start, cut=n, instructions=[] if keep else None)
    table = _TABLE
    imports, calls, builds, persistent = lay.imports, lay.calls, lay.builds, lay.persistent
    import_codes, call_codes, persistent_codes = op.IMPORTS, op.CALLS, op.PERSISTENT
    max_opcodes, max_memo = limits.max_opcodes, limits.max_memo_index
    proto = 0
    count = 0
    pos = start
    started = time.monotonic()
    deadline = started + limits.max_seconds

    def fail(at: int, error: ScanError) -> Layout:
        lay.error, lay.cut, lay.opcodes, lay.protocol = error, at, count, proto
        return lay

    while True:
        if pos >= n:
            return fail(pos, MalformedPickle(pos, "pickle data ends before STOP"))
        code = data[pos]
        entry = table[code]
        if entry is None:
            return fail(pos, MalformedPickle(pos, f"invalid opcode byte 0x{code:02x}"))
        count += 1
        if count > max_opcodes:
            return fail(pos, LimitExceeded("opcodes", max_opcodes, count, pos))
        if not count & 0xFFFF and time.monotonic() > deadline:
            elapsed = int(time.monotonic() - started)
            return fail(pos, LimitExceeded("seconds", limits.max_seconds, elapsed, pos))
        kind, width, signed = entry
        arg_start = pos + 1
        if kind == _NONE:
            nxt = arg_start
        elif kind == _FIXED:
            nxt = arg_start + width
        elif kind == _COUNTED:
            body = arg_start + width
            if body > n:
                return fail(pos, MalformedPickle(pos, "length field truncated"))
            length = int.from_bytes(data[arg_start:body], "little", signed=signed)
            if length < 0:
                return fail(pos, MalformedPickle(pos, f"negative length {length}"))
            arg_start = body
            nxt = body + length
        else:
            eol = data.find(b"\n", arg_start)
            if eol >= 0 and kind == _TWO_LINES:
                eol = data.find(b"\n", eol + 1)
            if eol < 0:
                return fail(pos, MalformedPickle(pos, "text argument has no terminating newline"))
            nxt = eol + 1
        if nxt > n:
            return fail(pos, MalformedPickle(pos, f"argument needs {nxt - n} more bytes than the stream holds"))

        if code in import_codes:
            imports.append((pos, code, proto))
        if code in call_codes:
            calls.append((pos, code))
        if code == op.BUILD:
            builds.append(pos)
        elif code in persistent_codes:
            persistent.append(pos)
        elif code == op.PROTO:
            proto = data[arg_start]
            if proto > _stdlib_pickle.HIGHEST_PROTOCOL:
                return fail(pos, MalformedPickle(pos, f"unsupported pickle protocol {proto}"))
        elif code == op.FRAME:
            frame_len = int.from_bytes(data[arg_start:nxt], "little")
            if nxt + frame_len > n:
                # C reads the whole frame up front and fails when it is not there.
                return fail(pos, MalformedPickle(pos, f"FRAME of {frame_len} bytes runs past the end"))
        elif code in op.MEMO_PUTS:
            if code == _PUT_TEXT:
                try:
                    index = int(data[arg_start : nxt - 1])
                except ValueError:
                    return fail(pos, MalformedPickle(pos, "PUT index is not an integer"))
            else:
                index = int.from_bytes(data[arg_start:nxt], "little")
            if index > max_memo:
                return fail(pos, LimitExceeded("memo index", max_memo, index, pos))
        elif code in _EXT_SIGNED:
            lay.extensions.append((pos, int.from_bytes(data[arg_start:nxt], "little", signed=_EXT_SIGNED[code])))
        if keep:
            assert lay.instructions is not None
            lay.instructions.append(Instruction(pos, code, bytes(data[arg_start:nxt])))
        pos = nxt
        if code == op.STOP:
            lay.end = lay.cut = pos
            lay.opcodes, lay.protocol = count, proto
            return lay
