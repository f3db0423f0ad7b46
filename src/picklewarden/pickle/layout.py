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

import mmap
import pickle as _stdlib_pickle
import time

from picklewarden import _native
from picklewarden._typing import TYPE_CHECKING, assert_never
from picklewarden.errors import LimitExceeded, MalformedPickle, ScanError
from picklewarden.pickle import opcodes as op
from picklewarden.pickle.opcodes import ArgKind

if TYPE_CHECKING:
    from picklewarden.limits import Limits

Searchable = bytes | bytearray | mmap.mmap
"""What the layout pass reads: it needs ``find`` for text arguments, which a memoryview lacks."""

_PUT_TEXT = op.BY_NAME["PUT"].code
_BINPUT = op.BY_NAME["BINPUT"].code
# EXT1/EXT2 codes are unsigned, EXT4's is a signed int4 (as pickletools and _pickle.c read them).
_EXT_SIGNED = {op.BY_NAME["EXT1"].code: False, op.BY_NAME["EXT2"].code: False, op.BY_NAME["EXT4"].code: True}

# The hot loop runs once per opcode (millions of times for a large state dict), so everything it needs per
# byte is precomputed into flat tuples indexed by the opcode byte; one index answers "how long is it".
# _STEP[code] > 0: the opcode and its fixed argument take that many bytes; 0: not an opcode; < 0: one of:
_LINE, _TWO_LINES, _COUNTED1, _COUNTED4, _COUNTED4S, _COUNTED8 = -1, -2, -3, -4, -5, -6


def _step(opcode: op.Opcode | None) -> int:
    if opcode is None:
        return 0
    match opcode.kind:
        case ArgKind.NONE | ArgKind.FIXED:
            return 1 + opcode.width
        case ArgKind.LINE:
            return _LINE
        case ArgKind.TWO_LINES:
            return _TWO_LINES
        case ArgKind.COUNTED:
            return {1: _COUNTED1, 4: _COUNTED4S if opcode.signed_length else _COUNTED4, 8: _COUNTED8}[opcode.width]
        case _:
            assert_never(opcode.kind)


_STEP: tuple[int, ...] = tuple(_step(o) for o in op.BY_CODE)
# Only 4-byte length prefixes are signed; the loop relies on it.
assert not any(o.kind is ArgKind.COUNTED and o.signed_length and o.width != 4 for o in op.OPCODES)

# What the layout records for an opcode beyond its length (0: nothing). Only opcodes with an action
# leave the fast path.
_A_IMPORT, _A_CALL, _A_IMPORT_CALL, _A_BUILD, _A_PERSISTENT, _A_PROTO, _A_FRAME, _A_PUT, _A_EXT, _A_STOP = range(1, 11)


_SINGLE = {op.BUILD: _A_BUILD, op.PROTO: _A_PROTO, op.FRAME: _A_FRAME, op.STOP: _A_STOP}


def _action(code: int) -> int:
    if code in op.IMPORTS:
        return _A_IMPORT_CALL if code in op.CALLS else _A_IMPORT
    if code in op.CALLS:
        return _A_CALL
    if code in op.PERSISTENT:
        return _A_PERSISTENT
    if code in op.MEMO_PUTS and code != _BINPUT:
        return _A_PUT
    if code in _EXT_SIGNED:
        return _A_EXT
    return _SINGLE.get(code, 0)


_A_KEEP = -1  # only recorded in ``Layout.instructions``
_BASE_ACTIONS = tuple(_action(code) for code in range(256))


def _actions(keep: bool, small_memo: bool) -> tuple[int, ...]:
    """Per byte, the action; with ``keep`` every opcode leaves the fast path to be kept, and with a memo
    limit a one-byte index can exceed, BINPUT leaves it to be checked."""
    table = list(_BASE_ACTIONS)
    if small_memo:
        table[_BINPUT] = _A_PUT
    if keep:
        table = [action or (_A_KEEP if opcode else 0) for action, opcode in zip(table, op.BY_CODE, strict=True)]
    return tuple(table)


_ACTIONS = {(keep, small): _actions(keep, small) for keep in (False, True) for small in (False, True)}
# The same tables as bytes for the compiled loop (picklewarden/_speedups.c), which decodes without ``keep``.
_NATIVE_STEPS = bytes(step & 0xFF for step in _STEP)
_NATIVE_ACTIONS = {small: bytes(_ACTIONS[False, small]) for small in (False, True)}
_EXT4 = op.BY_NAME["EXT4"].code

# Why a decode stops short: the Python loop and the compiled one (which returns these numbers) share them,
# and :func:`_problem` words them once.
_S_CHUNK, _S_STOP, _F_END, _F_BAD_OPCODE, _F_LENGTH_TRUNCATED, _F_NEGATIVE_LENGTH = range(6)
_F_NO_NEWLINE, _F_SHORT, _F_PUT_NOT_INT, _F_MEMO, _F_PROTO, _F_FRAME = range(6, 12)


def _problem(kind: int, pos: int, value: object, limits: Limits) -> ScanError:
    """The error for a decode that stopped at ``pos`` for reason ``kind`` (``value`` is its detail)."""
    if kind == _F_MEMO:
        assert isinstance(value, int)
        return LimitExceeded("memo index", limits.max_memo_index, value, pos)
    if kind == _F_BAD_OPCODE:
        assert isinstance(value, int)
        return MalformedPickle(pos, f"invalid opcode byte 0x{value:02x}")
    template = _MESSAGES[kind]
    return MalformedPickle(pos, template.format(value))


_MESSAGES = {
    _F_END: "pickle data ends before STOP",
    _F_LENGTH_TRUNCATED: "length field truncated",
    _F_NEGATIVE_LENGTH: "negative length {}",
    _F_NO_NEWLINE: "text argument has no terminating newline",
    _F_SHORT: "argument needs {} more bytes than the stream holds",
    _F_PUT_NOT_INT: "PUT index is not an integer",
    _F_PROTO: "unsupported pickle protocol {}",
    _F_FRAME: "FRAME of {} bytes runs past the end",
}
_CHECK_EVERY = 0x10000
"""Opcodes decoded between two looks at the clock (a monotonic() call per opcode would double the cost)."""


class Instruction:
    """One decoded opcode at its byte offset. (Layout's records are plain slotted classes for start-up time:
    see :class:`~picklewarden.pickle.program.Node`.)"""

    __slots__ = ("arg", "code", "offset")

    def __init__(self, offset: int, code: int, arg: bytes) -> None:
        self.offset = offset
        self.code = code
        self.arg = arg
        """The raw argument bytes (for counted arguments, without the length prefix)."""

    def __repr__(self) -> str:
        return f"Instruction(offset={self.offset!r}, code={self.code!r}, arg={self.arg!r})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not Instruction:
            return NotImplemented
        return (self.offset, self.code, self.arg) == (other.offset, other.code, other.arg)

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    @property
    def name(self) -> str:
        opcode = op.BY_CODE[self.code]
        assert opcode is not None
        return opcode.name


class Layout:
    """Where things are in one pickle, as far as it could be decoded."""

    __slots__ = (
        "builds",
        "calls",
        "cut",
        "end",
        "error",
        "extensions",
        "frame_end",
        "imports",
        "instructions",
        "opcodes",
        "persistent",
        "protocol",
        "start",
    )

    def __init__(self, start: int, cut: int, instructions: list[Instruction] | None = None) -> None:
        self.start = start
        self.cut = cut
        """Offset up to which the unpickler may read: the stream's end, or the opcode that breaks or exceeds."""
        self.end: int | None = None
        """Offset just past STOP, when the pickle is complete."""
        self.opcodes = 0
        self.imports: list[tuple[int, int, int]] = []
        """(offset, opcode, protocol in force) of each opcode that calls ``find_class``."""
        self.calls: list[tuple[int, int]] = []
        """(offset, opcode) of each opcode that calls something."""
        self.builds: list[int] = []
        self.persistent: list[int] = []
        self.extensions: list[tuple[int, int]] = []
        """(offset, extension code) of EXT1/2/4: they resolve through the loading process's copyreg registry."""
        self.protocol = 0
        """The last PROTO seen (0 when none)."""
        self.frame_end = 0
        """Where the last FRAME the unpickler runs ends (before STOP or ``cut``); 0 when it runs none, and
        only then may the machine's BytesIO peek (see :func:`~picklewarden.pickle.stream.open_stream`)."""
        self.error: ScanError | None = None
        self.instructions = instructions


class _Prefetch:
    """Pages of a mapped file asked for just ahead of the layout pass.

    The scanner maps files with read-ahead off, so that reads between tensors cost their own pages only;
    this pass reads a pickle front to back, one page fault at a time without it. A window that grows with
    what the pass has consumed keeps a long pickle streaming, while a short one (a legacy file's first
    pickles, then gigabytes of storages) costs at most the first window beyond it.
    """

    _FIRST = 256 * 1024
    _MOST = 8 * 1024 * 1024

    def __init__(self, data: Searchable, start: int) -> None:
        self.map = data if isinstance(data, mmap.mmap) and hasattr(mmap, "MADV_WILLNEED") else None
        self.start = start - start % mmap.PAGESIZE
        self.end = self.start
        if self.map is not None:
            self.ahead_of(start)

    def ahead_of(self, pos: int) -> None:
        if self.map is None:
            return
        window = min(max(self._FIRST, pos - self.start), self._MOST)
        if pos + window // 2 < self.end:
            return  # still well inside what was asked for
        page = mmap.PAGESIZE
        end = min(len(self.map), -(-(pos + window) // page) * page)  # page-aligned: madvise wants it
        begin = max(self.end, pos - pos % page)
        if end > begin:
            try:
                self.map.madvise(mmap.MADV_WILLNEED, begin, end - begin)
            except (OSError, ValueError):
                self.map = None
                return
        self.end = max(self.end, end)


def scan_layout(data: Searchable, start: int, limits: Limits, *, keep: bool = False) -> Layout:
    """Decode the pickle that begins at ``start`` up to its STOP, a malformation or a limit."""
    n = len(data)
    lay = Layout(start=start, cut=n, instructions=[] if keep else None)
    imports, calls, builds, persistent = lay.imports, lay.calls, lay.builds, lay.persistent
    instructions = lay.instructions
    steps = _STEP
    actions = _ACTIONS[keep, limits.max_memo_index < 0xFF]
    max_opcodes, max_memo = limits.max_opcodes, limits.max_memo_index
    max_bytes = limits.max_pickle_bytes
    proto = frame_end = 0
    count = 0  # opcodes decoded before the current chunk; within it, ``done`` counts those before ``pos``
    pos = start
    started = time.monotonic()
    deadline = started + limits.max_seconds
    prefetch = _Prefetch(data, start)

    def fail(at: int, error: ScanError, decoded: int) -> Layout:
        lay.error, lay.cut, lay.opcodes, lay.protocol, lay.frame_end = error, at, decoded, proto, frame_end
        return lay

    def stop(at: int, after: int, decoded: int) -> Layout:
        if after - start > max_bytes:
            return fail(at, LimitExceeded("pickle bytes", max_bytes, after - start, at), decoded)
        lay.end = lay.cut = after
        lay.opcodes, lay.protocol, lay.frame_end = decoded, proto, frame_end
        return lay

    # The compiled loop decodes the same chunks (the checks between chunks stay here); ``keep`` is for small
    # heads and listings, which the reference loop serves.
    native = None if keep else _native.speedups
    native_actions = _NATIVE_ACTIONS[limits.max_memo_index < 0xFF]

    while True:
        if count >= max_opcodes:
            # One opcode more than allowed: the limit is reported at it, unless it is not an opcode at all.
            if pos >= n:
                return fail(pos, _problem(_F_END, pos, None, limits), count)
            if not steps[data[pos]]:
                return fail(pos, _problem(_F_BAD_OPCODE, pos, data[pos], limits), count)
            return fail(pos, LimitExceeded("opcodes", max_opcodes, count + 1, pos), count + 1)
        if count and not count % _CHECK_EVERY:
            if time.monotonic() > deadline:
                elapsed = int(time.monotonic() - started)
                return fail(pos, LimitExceeded("seconds", limits.max_seconds, elapsed, pos), count + 1)
            if pos - start > max_bytes:  # checked per chunk, not per opcode: the hot loop stays lean
                return fail(pos, LimitExceeded("pickle bytes", max_bytes, pos - start, pos), count + 1)
            prefetch.ahead_of(pos)
        chunk_end = min(max_opcodes, count + _CHECK_EVERY - count % _CHECK_EVERY)
        if native is not None:
            status, pos, done, proto, frame_end, value = native.layout_chunk(
                data, pos, count, chunk_end, proto, _NATIVE_STEPS, native_actions, max_memo,
                _stdlib_pickle.HIGHEST_PROTOCOL, _PUT_TEXT, _EXT4, op.STOP,
                imports, calls, builds, persistent, lay.extensions, frame_end,
            )  # fmt: skip
            if status == _S_CHUNK:
                count = chunk_end
                continue
            if status == _S_STOP:
                assert isinstance(value, int)
                return stop(pos, value, done)
            return fail(pos, _problem(status, pos, value, limits), done)
        for done in range(count, chunk_end):
            try:
                code = data[pos]
            except IndexError:
                return fail(pos, _problem(_F_END, pos, None, limits), done)
            step = steps[code]
            if step > 0:
                nxt = pos + step
            elif step == 0:
                return fail(pos, _problem(_F_BAD_OPCODE, pos, code, limits), done)
            elif step <= _COUNTED1:
                if step == _COUNTED1:
                    body = pos + 2
                    if body > n:
                        return fail(pos, _problem(_F_LENGTH_TRUNCATED, pos, None, limits), done + 1)
                    nxt = body + data[pos + 1]
                else:
                    body = pos + (9 if step == _COUNTED8 else 5)
                    if body > n:
                        return fail(pos, _problem(_F_LENGTH_TRUNCATED, pos, None, limits), done + 1)
                    length = int.from_bytes(data[pos + 1 : body], "little", signed=step == _COUNTED4S)
                    if length < 0:
                        return fail(pos, _problem(_F_NEGATIVE_LENGTH, pos, length, limits), done + 1)
                    nxt = body + length
            else:
                eol = data.find(b"\n", pos + 1)
                if eol >= 0 and step == _TWO_LINES:
                    eol = data.find(b"\n", eol + 1)
                if eol < 0:
                    return fail(pos, _problem(_F_NO_NEWLINE, pos, None, limits), done + 1)
                nxt = eol + 1
            if nxt > n:
                return fail(pos, _problem(_F_SHORT, pos, nxt - n, limits), done + 1)
            action = actions[code]
            if action:
                # The argument's first byte: after the length prefix for counted arguments.
                arg_start = body if step <= _COUNTED1 else pos + 1
                if action == _A_CALL:
                    calls.append((pos, code))
                elif action == _A_PERSISTENT:
                    persistent.append(pos)
                elif action == _A_BUILD:
                    builds.append(pos)
                elif action == _A_IMPORT:
                    imports.append((pos, code, proto))
                elif action == _A_IMPORT_CALL:
                    imports.append((pos, code, proto))
                    calls.append((pos, code))
                elif action == _A_PUT:
                    if code == _PUT_TEXT:
                        try:
                            index = int(data[arg_start : nxt - 1])
                        except ValueError:
                            return fail(pos, _problem(_F_PUT_NOT_INT, pos, None, limits), done + 1)
                    else:
                        index = int.from_bytes(data[arg_start:nxt], "little")
                    if index > max_memo:
                        return fail(pos, _problem(_F_MEMO, pos, index, limits), done + 1)
                elif action == _A_PROTO:
                    proto = data[arg_start]
                    if proto > _stdlib_pickle.HIGHEST_PROTOCOL:
                        return fail(pos, _problem(_F_PROTO, pos, proto, limits), done + 1)
                elif action == _A_FRAME:
                    frame_len = int.from_bytes(data[arg_start:nxt], "little")
                    if nxt + frame_len > n:
                        # C reads the whole frame up front and fails when it is not there.
                        return fail(pos, _problem(_F_FRAME, pos, frame_len, limits), done + 1)
                    frame_end = nxt + frame_len
                elif action == _A_EXT:
                    lay.extensions.append(
                        (pos, int.from_bytes(data[arg_start:nxt], "little", signed=_EXT_SIGNED[code]))
                    )
                if instructions is not None:
                    instructions.append(Instruction(pos, code, bytes(data[arg_start:nxt])))
                if code == op.STOP:
                    return stop(pos, nxt, done + 1)
            pos = nxt
        count = chunk_end
