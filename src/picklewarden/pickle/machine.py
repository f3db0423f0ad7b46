"""Run CPython's own C unpickler over a pickle, with inert stand-ins for everything it would import.

Why this design (``ENGINE.md`` design B, with the layout pass of design A for offsets and bounds): every
scanner bypass of recent years was a place where a re-implemented decoder disagreed with ``_pickle.c``
(frames, memo, marks, text opcodes, error points). Here the victim's own machine reads the bytes, so it
executes exactly the opcodes a victim's would, in the same order, and stops where it stops. Its opcode
loop also runs in C.

It is inert because the only values that ever reach the machine from outside are ours:
``find_class`` and ``persistent_load`` return stand-ins and never import or resolve anything; a
stand-in records every call, ``__new__``, BUILD, item, append and attribute set the machine performs on
it and returns another stand-in. Nothing named by the stream is ever imported, and copyreg's extension
registry is only read by the machine (EXT codes are recorded by the layout pass).

One exception to "returns another stand-in": a call of a reviewed pure builtin (``tuple``, ``str.join``,
...; see pure.py) on exact plain values gets its real value, and when that cannot be proven safe, a stand-in
of the built-in type the unpickler demands there, so the machine reads on wherever CPython's does.

A lean recording (what a scan uses) keeps calls of known-safe reconstructors whose arguments are inert out
of the statements, in :attr:`Program.elided`: a state dict's 100k tensor rebuilds, which no rule can find
anything in, then cost the passes after the machine nothing. Whatever the stream later does with such a
result puts the call back in place (see :class:`~picklewarden.pickle.program.ElidedCall`).
"""

from __future__ import annotations

import contextlib
import gc
import pickle as _stdlib_pickle
import threading
import time
from collections.abc import Callable, Iterator

from picklewarden import _native
from picklewarden._typing import TYPE_CHECKING
from picklewarden.errors import LimitExceeded, MalformedPickle, ScanError
from picklewarden.pickle import opcodes as op
from picklewarden.pickle.layout import Layout, scan_layout
from picklewarden.pickle.program import (
    CallHow,
    CallResult,
    ElidedCall,
    Global,
    Mutation,
    Node,
    Op,
    Persistent,
    Program,
    merge_elided,
)
from picklewarden.pickle.pure import (
    UNRESOLVED_MODULE,
    ArgsStandin,
    KwargsStandin,
    Pure,
    callee_entry,
    evaluate,
    is_unset,
    unresolved_text,
)
from picklewarden.pickle.standins import Abort as Abort
from picklewarden.pickle.standins import (
    FastStandinType,
    StandinType,
    TypeStandin,
    Value,
    inert,
    recording_call,
    value_standin,
)
from picklewarden.pickle.standins import node_of as node_of
from picklewarden.pickle.stream import open_stream

if TYPE_CHECKING:
    from typing import Any, NoReturn

    from picklewarden.buffers import Buffer
    from picklewarden.limits import Limits

_INVALID_OPCODE = next(code for code in range(255, -1, -1) if op.BY_CODE[code] is None)

PlainResult = Callable[[CallResult], bool]
"""Decides whether a call's result may be a plain (non-type) stand-in; see :func:`run_pickle`.

Its answer must depend on the call's callee only: it is asked for the first call of each callee and
the answer is reused for the callee's later calls."""

_OPNAMES: tuple[str | None, ...] = tuple(None if o is None else o.name for o in op.BY_CODE)


class Recorder:
    """Turns the machine's callbacks into a :class:`Program`, tying each event to its opcode offset.

    This is the reference. With the compiled core, :func:`_run` uses a subclass that keeps the counters and
    lists below in ``_speedups.RecorderCore``, whose C callbacks take the two per-tensor paths (a storage's
    persistent id, an elided call) and leave every other case to these methods."""

    standin_type: type = StandinType

    def __init__(
        self, program: Program, layout: Layout, base: int, limits: Limits, plain: PlainResult, *, lean: bool = False
    ):
        self.program = program
        self.lean = lean
        self.elided = program.elided
        # Elided calls something later operated on: put back among the statements when the run ends.
        self.kept: dict[int, ElidedCall] = {}
        self.layout = layout
        self.layout_calls = layout.calls
        self.layout_persistent = layout.persistent
        self.base = base
        self.limits = limits
        self.plain = plain
        self.plain_by_callee: dict[int, bool] = {}
        # Callees whose calls with inert arguments are elided: plain, and not a pure builtin evaluated here.
        self.elide_by_callee: dict[int, bool] = {}
        self.pure_by_callee: dict[int, tuple[Pure, Any] | None] = {}
        # Set on a rerun after STACK_GLOBAL refused a stand-in: unresolved text results become exact strs,
        # kept here by identity so find_class knows the name it receives is unresolved.
        self.text_standins = False
        self.unresolved: dict[int, tuple[Any, Node]] = {}
        self.deadline = time.monotonic() + limits.max_seconds
        self.statements = program.statements
        self.check_at = 0  # statement count at which _record next looks at the clock and the limit
        self.next_id = 0
        self.n_imports = self.n_calls = self.n_builds = self.n_persistent = 0
        self.last_offset: int | None = None
        # Instance attributes planted by BUILD state (the '__setstate__' injection route).
        self.planted: dict[int, Any] = {}

    # -- helpers -------------------------------------------------------------------------------------
    def _record(self, stmt: Global | CallResult | Persistent | Mutation) -> None:
        statements = self.statements
        if len(statements) + len(self.elided) >= self.check_at:
            self._checkpoint(stmt)
        statements.append(stmt)
        if stmt.offset is not None:
            self.last_offset = stmt.offset

    def _checkpoint(self, stmt: Global | CallResult | Persistent | Mutation) -> None:
        """The clock every 4096 statements, the statement limit when it is reached (one comparison per
        statement in between: this runs for every call in a state dict). Elided calls count: the limits
        are the same in a lean and a full recording."""
        count = len(self.statements) + len(self.elided)
        limit = self.limits.max_program_statements
        if not count & 0xFFF and time.monotonic() > self.deadline:
            elapsed = int(time.monotonic() - self.deadline + self.limits.max_seconds)
            self._abort(LimitExceeded("seconds", self.limits.max_seconds, elapsed, stmt.offset))
        if count >= limit:
            self._abort(LimitExceeded("program statements", limit, count + 1, stmt.offset))
        self.check_at = min((count | 0xFFF) + 1, limit)

    def _abort(self, error: ScanError) -> NoReturn:
        raise Abort(error)

    def _new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def _offset(self, offsets: list[int], index: int) -> int | None:
        if 0 <= index < len(offsets):
            return self.base + offsets[index]
        return None

    def _standin(self, node: Node, as_type: bool) -> Any:
        if as_type:
            return self.standin_type("standin", (TypeStandin,), {"_pw_node": node, "_pw_rec": self})
        return value_standin(node, self)

    # -- callbacks from the machine --------------------------------------------------------------------
    def find_class(self, module: str, name: str) -> Any:
        index = self.n_imports
        self.n_imports += 1
        offset, opname, proto = None, "GLOBAL", 0
        if index < len(self.layout.imports):
            at, code, proto = self.layout.imports[index]
            offset = self.base + at
            opcode = op.BY_CODE[code]
            opname = opcode.name if opcode else opname
        if self.unresolved:
            module, name = self._unresolved_name(module, name)
        node = Global(self._new_id(), offset, module, name, proto, opname)
        self._record(node)
        return self._standin(node, as_type=True)

    def _unresolved_name(self, module: str, name: str) -> tuple[str, str]:
        """A name built from an unresolved call result is unknown: no table can vouch for it, so it is
        recorded under a module no table names, keeping whatever part is known for the evidence."""
        parts = []
        for text in (module, name):
            known = self.unresolved.get(id(text))
            parts.append(text if known is None or known[0] is not text else "<unresolved>")
        if parts == [module, name]:
            return module, name
        return UNRESOLVED_MODULE, ".".join(parts)

    def persistent_load(self, pid: Any) -> Any:
        index = self.n_persistent
        self.n_persistent = index + 1
        offsets = self.layout_persistent
        offset = self.base + offsets[index] if index < len(offsets) else None
        node_id = self.next_id
        self.next_id = node_id + 1
        node = Persistent(node_id, offset, pid)
        self._record(node)
        if type(pid) is tuple and pid:
            if pid[0] == "storage":
                # torch's storages (one per tensor, 100k in a big state dict): never a class, so cheap.
                return value_standin(node, self)
            if pid[0] == "module" and len(pid) >= 2:
                # torch's legacy loader returns the pickled class itself (``data[0]``) for a whole-module
                # save, and the stream then instantiates it with NEWOBJ: the class is what gets called.
                return pid[1]
        # Any other loader's persistent_load may return a class, which NEWOBJ then instantiates.
        return self._standin(node, as_type=True)

    def call(self, callee: Node, args: tuple[Any, ...], kwargs: dict[str, Any] | None, how: CallHow) -> Any:
        opname = None
        offset = None
        if how is not CallHow.SETSTATE:
            index = self.n_calls
            self.n_calls = index + 1
            calls = self.layout_calls
            if index < len(calls):
                at, code = calls[index]
                offset = self.base + at
                opname = _OPNAMES[code]
        else:
            offset = self._offset(self.layout.builds, self.n_builds - 1)
            opname = "BUILD"
        node_id = self.next_id
        self.next_id = node_id + 1
        if type(callee) is Global and kwargs is None and how is not CallHow.SETSTATE:
            # A state dict calls the same few rebuild functions hundreds of thousands of times; ``plain``
            # is a property of the callee (see PlainResult), so it is asked once per callee node.
            elide = self.elide_by_callee.get(callee.id)
            if elide is None:
                probe = CallResult(node_id, offset, callee, args, kwargs, how, opname)
                elide = self.elide_by_callee[callee.id] = self.plain(probe) and self._pure(probe) is None
            if elide and (not args or inert(args, 0)):
                # Elided (see ElidedCall); inline rather than a method: this runs for every tensor.
                elided = self.elided
                seq = len(self.statements) + len(elided)
                safe = ElidedCall(node_id, offset, callee, args, None, how, opname, seq)
                if not self.lean:
                    self._record(safe)
                else:
                    if seq >= self.check_at:
                        self._checkpoint(safe)
                    elided.append(safe)
                    if offset is not None:
                        self.last_offset = offset
                return value_standin(safe, self)
        elif type(callee) is ElidedCall:
            self._keep(callee)  # the result of a call is called
        node = CallResult(node_id, offset, callee, args, kwargs, how, opname)
        self._record(node)
        # Only a plain call: NEWOBJ's cls.__new__ of a list or dict ignores its arguments, unlike the call.
        found = self._pure(node) if how is CallHow.CALL else None
        if found is not None:
            return self._pure_result(node, found[0], found[1], args, kwargs)
        plain = self.plain_by_callee.get(callee.id)
        if plain is None:
            plain = self.plain_by_callee[callee.id] = self.plain(node)
        if plain:
            return value_standin(node, self)
        return self._standin(node, as_type=True)

    def _pure(self, node: CallResult) -> tuple[Pure, Any] | None:
        """The reviewed pure builtin a call's callee is, looked up once per callee."""
        callee = node.callee
        found: tuple[Pure, Any] | None = self.pure_by_callee.get(callee.id, _NOT_LOOKED)
        if found is _NOT_LOOKED:
            found = self.pure_by_callee[callee.id] = callee_entry(callee, node_of)
        return found

    def _keep(self, node: ElidedCall) -> None:
        """Something operates on an elided call's result: it goes back among the statements."""
        if self.lean:
            self.kept[node.id] = node

    def finish(self) -> None:
        """Put the elided calls something later depended on back among the statements, in place."""
        if not self.kept:
            return
        program = self.program
        merged = merge_elided(program.statements, program.elided)
        program.statements[:] = [s for s in merged if type(s) is not ElidedCall or s.id in self.kept]
        program.elided[:] = [c for c in program.elided if c.id not in self.kept]
        self.kept.clear()

    def release(self) -> None:
        """Drop everything the recorder holds once the run is over. Every stand-in class references its
        recorder and is in a reference cycle (through its ``__mro__``) that only the cyclic collector frees:
        emptied, the recorder no longer keeps the program and its values alive with it."""
        for name in _RELEASED:
            delattr(self, name)
        vars(self).clear()

    def _pure_result(
        self, node: CallResult, entry: Pure, receiver: Any, args: tuple[Any, ...], kwargs: dict[str, Any] | None
    ) -> Any:
        """A reviewed pure builtin's real value, or a stand-in of the kind the unpickler accepts where the
        victim's real value would go (see pure.py)."""
        value = evaluate(entry, receiver, args, kwargs)
        if not is_unset(value):
            return value
        if entry.returns is tuple:
            return ArgsStandin((value_standin(node, self),))
        if entry.returns is dict:
            return KwargsStandin({UNRESOLVED_MODULE: value_standin(node, self)})
        if entry.returns in (str, bytes) and self.text_standins:
            text = unresolved_text(node, entry.returns)
            self.unresolved[id(text)] = (text, node)
            return text
        return value_standin(node, self)

    def build(self, target: Node, state: Any) -> None:
        offset = self._offset(self.layout.builds, self.n_builds)
        self.n_builds += 1
        if type(target) is ElidedCall:
            self._keep(target)
        setstate = self.planted.get(target.id)
        if setstate is not None:
            # A real instance without its own __setstate__ now calls the planted one with this state.
            callee = node_of(setstate)
            self.call(callee if callee is not None else target, (state,), None, CallHow.SETSTATE)
        self._record(Mutation(Op.BUILD, target, offset, None, state))
        self._plant(target, state)

    def mutate(self, what: Op, target: Node, key: Any, value: Any) -> None:
        if type(target) is ElidedCall:
            self._keep(target)
        self._record(Mutation(what, target, self.last_offset, key, value))
        if what is Op.SETATTR and key == "__setstate__":
            self.planted[target.id] = value

    def _plant(self, target: Node, state: Any) -> None:
        dict_state = state
        if type(state) is tuple and len(state) == 2:
            dict_state = state[0]
            if type(state[1]) is dict and "__setstate__" in state[1]:
                self.planted[target.id] = state[1]["__setstate__"]
        if type(dict_state) is dict and "__setstate__" in dict_state:
            self.planted[target.id] = dict_state["__setstate__"]


class _InertUnpickler(_stdlib_pickle.Unpickler):
    """The C unpickler with find_class and persistent_load answered by stand-ins only."""

    def __init__(self, file: Any, recorder: Recorder) -> None:
        # latin-1 never fails to decode Python 2 strings, so no loader setting stops reading earlier than ours.
        super().__init__(file, fix_imports=True, encoding="latin1", errors="strict")
        self._pw = recorder

    def find_class(self, module: str, name: str) -> Any:
        return self._pw.find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        return self._pw.persistent_load(pid)


class _FastInertUnpickler(_stdlib_pickle.Unpickler):
    """:class:`_InertUnpickler` whose persistent_load is the compiled recorder's (no Python frame per storage)."""

    def __init__(self, file: Any, recorder: Any) -> None:
        super().__init__(file, fix_imports=True, encoding="latin1", errors="strict")
        self._pw = recorder
        self.persistent_load = recorder.fast_persistent_load  # type: ignore[method-assign]

    def find_class(self, module: str, name: str) -> Any:
        return self._pw.find_class(module, name)


def _fast_recorder() -> type[Recorder] | None:
    """The Recorder subclass whose state lives in ``_speedups.RecorderCore``, or None without the extension."""
    native = _native.speedups
    if native is None or FastStandinType is None:
        return None
    try:
        native.configure(Value, Persistent, ElidedCall, Global, CallHow.CALL, _OPNAMES, recording_call)
    except TypeError:  # record classes the C side cannot fill (not slotted as it expects): Python only
        return None
    core: Any = native.RecorderCore
    fast: type[Recorder] = type("FastRecorder", (Recorder, core), {"standin_type": FastStandinType})
    return fast


_FastRecorder = _fast_recorder()

_NOT_LOOKED: Any = object()
_RELEASED = ("statements", "elided", "layout_calls", "layout_persistent", "elide_by_callee")
"""Recorder attributes that are ``_speedups.RecorderCore`` fields in the compiled recorder (the rest are in
its ``__dict__``)."""


def always_type(node: CallResult) -> bool:
    return False


def run_pickle(
    data: Buffer,
    start: int,
    limits: Limits,
    *,
    member: str = "",
    index: int = 0,
    base: int = 0,
    plain: PlainResult = always_type,
    file_like: bool = True,
    lean: bool = False,
) -> tuple[Program, Layout]:
    """Execute the pickle at ``data[start:]`` symbolically and return what it did.

    ``plain(call)`` says whether a call's result may be a cheap non-type stand-in: answer True only
    for callables known never to return a class (a tensor rebuild, a container); it is asked once per
    callee. Others return a type
    stand-in, so that NEWOBJ on the result proceeds as it would on a victim's real class.
    The layout pass runs first; where it finds the stream broken or over a limit, the machine is made to
    fail at that same opcode, having executed exactly the prefix a real unpickler would have.
    ``file_like`` feeds the machine through a buffered file object (as ``pickle.load(open(...))`` and
    torch's legacy loader do) rather than a plain ``BytesIO`` (as torch's zip loader does).
    Offsets in the program are ``base`` + offset within ``data``.
    ``lean`` records less: calls of a callee ``plain`` answers True for, other than a pure builtin, whose
    arguments are all :func:`inert` go to :attr:`Program.elided` instead of the statements, unless the
    stream later operates on their result (see :class:`~picklewarden.pickle.program.ElidedCall`). So
    ``plain`` must answer True only for known-safe reconstructors. A full recording (the default) keeps
    every statement, as ``show`` prints it.
    """
    if isinstance(data, memoryview):
        data = data.tobytes()  # the layout pass searches for newlines, which a memoryview cannot
    layout = scan_layout(data, start, limits)
    program = _run(data, start, limits, layout, member, index, base, plain, file_like, lean=lean)
    if plain is not always_type and _PLAIN_REFUSED in str(program.error):
        # A callable judged plain did return a class here (enum.Enum's functional API does), and NEWOBJ
        # refused the cheap stand-in where it would accept the victim's class: rerun with type stand-ins.
        program = _run(data, start, limits, layout, member, index, base, always_type, file_like, lean=lean)
    if TEXT_REFUSED in str(program.error):
        # A name built by a call the machine could not compute: rerun with exact-str stand-ins for such
        # results (only now, so elsewhere they stay stand-ins the judge knows are not constants).
        program = _run(
            data, start, limits, layout, member, index, base, plain, file_like, text_standins=True, lean=lean
        )
    return program, layout


_PLAIN_REFUSED = f"must be a type, not {Value.__name__}"
"""How the C unpickler refuses a plain stand-in as NEWOBJ/NEWOBJ_EX's class."""

TEXT_REFUSED = "STACK_GLOBAL requires str"
"""How the C unpickler refuses a stand-in as STACK_GLOBAL's module or name."""


def _run(
    data: Buffer,
    start: int,
    limits: Limits,
    layout: Layout,
    member: str,
    index: int,
    base: int,
    plain: PlainResult,
    file_like: bool,
    *,
    text_standins: bool = False,
    lean: bool = False,
) -> Program:
    program = Program(member=member, start=base + start, index=index, protocol=layout.protocol, opcodes=layout.opcodes)
    program.extensions = [(base + at, code) for at, code in layout.extensions]
    # The compiled callbacks when the extension is in use (read per run: tests switch cores).
    fast = _FastRecorder if _native.speedups is not None else None
    recorder = (fast or Recorder)(program, layout, base, limits, plain, lean=lean)
    recorder.text_standins = text_standins
    # Where the layout pass found the stream broken or over a limit, an invalid opcode is planted at that
    # offset so the machine stops exactly there. Truncating instead would also cut any FRAME spanning
    # that point, and C reads a frame whole: it would fail at the FRAME and skip a payload that a real
    # unpickler executes.
    patch = layout.cut if layout.cut < len(data) else None
    # A BytesIO may peek (the C unpickler then buffers ahead) only where no FRAME runs: see stream.py.
    peek = not layout.frame_end
    stream, origin, release = open_stream(data, start, patch, file_like, _INVALID_OPCODE, peek=peek)
    unpickler = (_FastInertUnpickler if fast is not None else _InertUnpickler)(stream, recorder)
    try:
        with gc_paused():
            program.result = unpickler.load()
    except Abort as abort:
        program.error = abort.error
    except Exception as exc:  # noqa: BLE001 - the C machine raises many types for a broken stream
        program.error = _machine_error(layout, recorder, exc)
    else:
        program.complete = True
        end = origin + stream.tell()
        program.end = base + end
        if layout.end is not None and end != layout.end:
            # The layout pass and the machine disagree on where the pickle ends: trust the machine,
            # but say so, since offsets after this point may be wrong.
            program.error = MalformedPickle(base + layout.end, "offset decoder disagrees with the unpickler")
    finally:
        release()
    recorder.finish()
    recorder.release()
    return program


_gc_lock = threading.Lock()
_gc_holders = 0
_gc_was_enabled = False


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while the machine runs (reentrant and thread-safe).

    Everything the machine builds stays alive in the program until it is judged, so collections during the
    run find nothing to free, yet each one walks the whole growing graph: 40% of the machine's time on a
    100k-tensor state dict. The collector is restored when the last concurrent run ends, and the cycles
    stand-in classes form are collected then.
    """
    global _gc_holders, _gc_was_enabled
    with _gc_lock:
        if _gc_holders == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_holders += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_holders -= 1
            if _gc_holders == 0 and _gc_was_enabled:
                if gc.get_freeze_count() == 0:
                    # What the pause allocated is in the youngest generation, and the first collection
                    # after it would walk all of it (0.6 s for a 500k-tensor state dict) only to find it
                    # alive: the analysis holds it until its report is made, and reference counting frees
                    # it after (Recorder.release breaks the one big cycle). Moved to the oldest generation
                    # unwalked instead; the few cycles among it wait for a full collection. Skipped when
                    # the host froze objects itself, which unfreezing would undo.
                    gc.freeze()
                    gc.unfreeze()
                gc.enable()


_AT_CUT = (f"invalid load key, '\\x{_INVALID_OPCODE:02x}'.", "pickle data was truncated", "Ran out of input")
"""What the C unpickler says when it reaches the planted opcode or the end of the stream."""


def _machine_error(layout: Layout, recorder: Recorder, exc: Exception) -> ScanError:
    if layout.error is not None and str(exc) in _AT_CUT:
        # The machine ran into the cut we made where the layout pass found the stream broken (an opcode
        # the machine itself refuses earlier, such as a literal C cannot parse, is reported as such).
        error = layout.error
        if isinstance(error, MalformedPickle):
            return MalformedPickle(recorder.base + error.offset, error.reason)
        if isinstance(error, LimitExceeded):
            at = None if error.offset is None else recorder.base + error.offset
            return LimitExceeded(error.resource, error.limit, error.actual, at)
        return error
    after = recorder.last_offset if recorder.last_offset is not None else recorder.base + layout.start
    detail = f"{type(exc).__name__}: {exc}"
    if len(detail) > 200:
        detail = detail[:200] + "..."
    return MalformedPickle(after, f"the unpickler fails after this offset ({detail})")
