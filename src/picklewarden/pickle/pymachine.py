"""Run CPython's pure-Python unpickler (``pickle._Unpickler``) over a pickle, with the C machine's stand-ins.

Why a second machine: joblib.load (every joblib format) reads pickles with ``pickle._Unpickler``, not the C
one, and the two accept different streams. The Python one parses INT/FLOAT/LONG literals and memo indices with
``int()``/``float()`` (underscores, spaces), keeps its memo in a dict (no allocation up to the index, so a
huge PUT index does not fail), calls REDUCE's callable with ``func(*args)`` (any iterable, not only a
tuple), does not check that NEWOBJ's class is a type, applies SETITEMS pairs before noticing an odd count,
and reads BUILD state through ``.items()``. Where the C unpickler fails on such an opcode, a victim using
joblib.load runs everything after it. The C machine is stricter elsewhere (FRAME bounds: the Python one
refuses arguments that cross a frame's end; INT "010" and LONG "0x1L" are accepted by C only), so neither
reading contains the other and each loader's view is judged by its own machine.

Inert the same way as :mod:`picklewarden.pickle.machine`, by the same recorder and stand-ins:
``find_class`` and ``persistent_load`` are answered by stand-ins, and the one other place the Python
unpickler reaches outside the stream, the EXT opcodes (which read copyreg's registry and *write* its
process-wide ``_extension_cache``), is replaced: the code is recorded and resolved read-only, never cached.
``BYTEARRAY8`` is replaced too, since the original allocates whatever length the stream names.

Modelled for joblib.load: its outer stream (after joblib's raw array reads are cut out) and each object
array's own pickle, read to where ``pickle._Unpickler`` stops; a raw stream the C unpickler gives up on
(joblib.load reads any pickle file). Not modelled: what real objects would do with the stand-ins (a real
``__reduce__`` result iterated as REDUCE arguments, ``.items()`` of a real BUILD state): the machine stops
there, as the C machine does, and says so.

Offsets: the opcode loop is the library's; every handler is wrapped to note the opcode's offset (through
frames) before it runs, so the recorder ties events to bytes exactly as it does for the C machine.
"""

from __future__ import annotations

import copyreg
import io
import pickle
import struct
import time
from collections.abc import Callable

from picklewarden._typing import TYPE_CHECKING
from picklewarden.errors import LimitExceeded, MalformedPickle, ScanError
from picklewarden.limits import Limits
from picklewarden.pickle import machine
from picklewarden.pickle import opcodes as op
from picklewarden.pickle.layout import Layout
from picklewarden.pickle.program import Program

if TYPE_CHECKING:
    from typing import Any

_EXT = {pickle.EXT1[0]: ("<B", 1), pickle.EXT2[0]: ("<H", 2), pickle.EXT4[0]: ("<i", 4)}
_FRAME = pickle.FRAME[0]
_BUILD = pickle.BUILD[0]
_CHECK_EVERY = 0x4000
_SAME_END = ("pickle data ends before STOP", "argument needs", "length field truncated", "invalid opcode byte")
"""Layout-pass reasons (see :mod:`picklewarden.pickle.layout`) at which both unpicklers stop alike."""
READER = "pickle._Unpickler"
""":attr:`Program.reader` of programs this machine records."""


class ClampedReader(io.BufferedReader):
    """A file over in-memory bytes whose ``read(n)`` never allocates more than what is left: the Python
    unpickler asks for whatever a length field says, and ``BufferedReader.read(n)`` allocates n up front."""

    def __init__(self, data: bytes) -> None:
        from picklewarden.containers.base import BufferReader

        super().__init__(BufferReader(data))
        self.total = len(data)

    def read(self, size: int | None = -1) -> bytes:
        if size is not None and size > 0:
            size = min(size, max(0, self.total - self.tell()))
        return super().read(size)


def read_extension(unpickler: Any, code_byte: int) -> int:
    """Read an EXT opcode's code (as ``pickle._Unpickler`` does)."""
    fmt, width = _EXT[code_byte]
    (code,) = struct.unpack(fmt, unpickler.read(width))
    return int(code)


def resolve_extension(unpickler: Any, code: int) -> None:
    """What ``pickle._Unpickler.get_extension`` does, minus writing copyreg's process-wide cache: the
    registry is only read, and a registered name goes through the unpickler's (inert) ``find_class``."""
    key = copyreg._inverted_registry.get(code)  # type: ignore[attr-defined]
    if not key:
        if code <= 0:
            raise pickle.UnpicklingError("EXT specifies code <= 0")
        raise ValueError(f"unregistered extension code {code}")
    unpickler.append(unpickler.find_class(*key))


def load_bytearray8(unpickler: Any, total: int) -> None:
    """BYTEARRAY8 without allocating a length larger than the stream."""
    (length,) = struct.unpack("<Q", unpickler.read(8))
    if length > total:
        raise pickle.UnpicklingError(f"BYTEARRAY8 of {length} bytes is longer than the stream")
    buffer = bytearray(length)
    unpickler.readinto(buffer)
    unpickler.append(buffer)


class _Over(Exception):
    def __init__(self, error: ScanError) -> None:
        self.error = error


class _PyInert(pickle._Unpickler):
    """``pickle._Unpickler`` whose every reach outside the stream is answered by the recorder's stand-ins."""

    # Set by pickle._Unpickler.load(); typeshed does not declare them.
    read: Any
    readinto: Any
    append: Any
    proto: int
    _unframer: Any

    def __init__(
        self, stream: ClampedReader, recorder: machine.Recorder, layout: Layout, limits: Limits, persistent: bool
    ) -> None:
        # latin-1, as on the C path: no loader setting reads further than this one.
        super().__init__(stream, fix_imports=True, encoding="latin1", errors="strict")
        self._stream = stream
        self._recorder = recorder
        self._layout = layout
        self._persistent = persistent
        self._frame_base = 0
        self._at = 0
        self._count = 0
        self._max_opcodes = limits.max_opcodes
        self._deadline = time.monotonic() + limits.max_seconds
        self._limits = limits
        table: dict[int, Callable[[Any], None]] = dict(pickle._Unpickler.dispatch)
        for code in _EXT:
            table[code] = _ext_handler(code)
        table[pickle.BYTEARRAY8[0]] = _PyInert._load_bytearray8
        self.dispatch = {code: self._noting(code, handler) for code, handler in table.items()}  # type: ignore[misc]

    def _noting(self, code: int, handler: Callable[[Any], None]) -> Callable[[Any], None]:
        """``handler`` preceded by what the layout pass records for the C machine: this opcode's offset."""
        layout = self._layout
        imports = code in op.IMPORTS
        calls = code in op.CALLS
        persistent = code in op.PERSISTENT

        def run(self: _PyInert) -> None:
            self._count += 1
            at = self._offset()
            if self._count >= self._max_opcodes or not self._count % _CHECK_EVERY:
                self._check(at)
            if imports:
                layout.imports.append((at, code, self.proto))
            if calls:
                layout.calls.append((at, code))
            if persistent:
                layout.persistent.append(at)
            if code == _BUILD:
                layout.builds.append(at)
            self._recorder.last_offset = self._recorder.base + at
            self._at = at
            handler(self)
            if code == _FRAME:
                frame = self._unframer.current_frame
                size = frame.seek(0, io.SEEK_END)
                frame.seek(0)
                self._frame_base = self._stream.tell() - size

        return run

    def _offset(self) -> int:
        """Offset of the opcode byte just read (inside a frame, the frame's bytes were read ahead)."""
        frame = self._unframer.current_frame
        if frame is not None:
            return int(self._frame_base + frame.tell() - 1)
        return self._stream.tell() - 1

    def _check(self, at: int) -> None:
        if self._count > self._max_opcodes:
            raise _Over(LimitExceeded("opcodes", self._max_opcodes, self._count, at))
        if time.monotonic() > self._deadline:
            raise _Over(LimitExceeded("seconds", self._limits.max_seconds, self._limits.max_seconds + 1, at))

    def find_class(self, module: str, name: str) -> Any:
        return self._recorder.find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        if not self._persistent:
            # joblib's unpickler defines none: pickle's default refuses the id.
            raise pickle.UnpicklingError("A load persistent id instruction was encountered, but no persistent_load")
        return self._recorder.persistent_load(pid)

    def load_extension(self, code_byte: int) -> None:
        code = read_extension(self, code_byte)
        self._layout.extensions.append((self._at, code))
        resolve_extension(self, code)

    def _load_bytearray8(self) -> None:
        load_bytearray8(self, self._stream.total)


def _ext_handler(code_byte: int) -> Callable[[Any], None]:
    def run(self: _PyInert) -> None:
        self.load_extension(code_byte)

    return run


def run_pickle_python(
    data: bytes,
    start: int,
    limits: Limits,
    *,
    member: str = "",
    index: int = 0,
    base: int = 0,
    plain: machine.PlainResult = machine.always_type,
    persistent: bool = False,
    text_standins: bool = False,
) -> Program:
    """Execute the pickle at ``data[start:]`` symbolically as ``pickle._Unpickler`` reads it.

    The program is recorded like :func:`picklewarden.pickle.machine.run_pickle`'s. ``persistent`` answers
    persistent ids with stand-ins; without it the stream fails at the first one, as under joblib.load.
    """
    layout = Layout(start=start, cut=len(data))
    program = Program(member=member, start=base + start, index=index, reader=READER)
    recorder = machine.Recorder(program, layout, base, limits, plain)
    recorder.text_standins = text_standins
    stream = ClampedReader(data)
    stream.seek(start)
    unpickler = _PyInert(stream, recorder, layout, limits, persistent)
    try:
        with machine.gc_paused():
            program.result = unpickler.load()
    except machine.Abort as abort:
        program.error = abort.error
    except _Over as over:
        program.error = _based(over.error, base)
    except Exception as exc:  # noqa: BLE001 - the Python unpickler raises many types for a broken stream
        at = recorder.last_offset if recorder.last_offset is not None else base + start
        detail = f"{type(exc).__name__}: {exc}"
        if len(detail) > 200:
            detail = detail[:200] + "..."
        program.error = MalformedPickle(at, f"pickle._Unpickler fails at this offset ({detail})")
    else:
        program.complete = True
        program.end = base + stream.tell()
    program.opcodes = unpickler._count
    program.protocol = unpickler.proto if hasattr(unpickler, "proto") else 0
    program.extensions = [(base + at, code) for at, code in layout.extensions]
    recorder.release()
    if not text_standins and machine.TEXT_REFUSED in str(program.error):
        # As in machine.run_pickle: a name built by a call not computed; rerun with exact-str stand-ins.
        return run_pickle_python(
            data,
            start,
            limits,
            member=member,
            index=index,
            base=base,
            plain=plain,
            persistent=persistent,
            text_standins=True,
        )
    return program


def _based(error: ScanError, base: int) -> ScanError:
    if isinstance(error, LimitExceeded):
        at = None if error.offset is None else base + error.offset
        return LimitExceeded(error.resource, error.limit, error.actual, at)
    return error


def further(program: Program, data: bytes, limits: Limits, plain: machine.PlainResult) -> Program | None:
    """The pure-Python reading of a stream the C machine gave up on, when it gets further than ``program``
    (more statements, or to STOP): what joblib.load runs from the same bytes."""
    error = program.error
    memo = isinstance(error, LimitExceeded) and error.resource == "memo index"
    if program.complete or not (isinstance(error, MalformedPickle) or memo):
        # Complete: the Python reading does the same or fails earlier. Over another limit: so would it. The
        # memo limit is the C unpickler's (it allocates a table up to the index); a dict has no such bound.
        return None
    if isinstance(error, MalformedPickle) and error.reason.startswith(_SAME_END):
        # Every opcode before this one was accepted by C, where Python does the same or fails; at this one
        # Python fails too (the bytes end, or no opcode has this byte). A truncated checkpoint costs one run.
        return None
    view = run_pickle_python(data, program.start, limits, member=program.member, index=program.index, plain=plain)
    if view.recorded > program.recorded or (view.complete and view.statements):
        return view
    return None
