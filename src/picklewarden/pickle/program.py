"""The program a pickle makes the unpickler perform, over abstract values.

Values the unpickler builds itself (numbers, strings, bytes, lists, tuples, dicts, sets) stay ordinary
Python values. Everything that would come from outside the unpickler — a global it imports, what a call
returns, a persistent id's object — is a :class:`Node`. Statements are kept in execution order, each with
the byte offset (relative to the whole container member) of the opcode that caused it.
"""

from __future__ import annotations

import enum

from picklewarden._typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

    from picklewarden.errors import ScanError


class CallHow(enum.Enum):
    """How the unpickler invoked a callable."""

    CALL = "call"
    """``callable(*args)``: REDUCE, INST and OBJ with arguments."""
    NEW = "new"
    """``cls.__new__(cls, *args)``: NEWOBJ, NEWOBJ_EX, and INST/OBJ without arguments."""
    SETSTATE = "setstate"
    """``obj.__setstate__(state)`` where a previous BUILD planted ``__setstate__`` in the instance."""


class _Slotted:
    """The records below are plain slotted classes, not dataclasses: Python 3.11 compiles each generated
    dataclass method at import, which every one-file scan pays for (see "Start-up" in docs/benchmarks.md).
    Identity is their equality; the compiled machine core fills their slots directly."""

    __slots__ = ()

    def __repr__(self) -> str:
        names = [name for cls in reversed(type(self).__mro__) for name in getattr(cls, "__slots__", ())]
        shown = ", ".join(f"{name}={getattr(self, name, None)!r}" for name in names if not name.startswith("_"))
        return f"{type(self).__name__}({shown})"


class Node(_Slotted):
    """A value the unpickler obtained from outside itself. Identity matters; equality is identity."""

    __slots__ = ("id", "offset")

    def __init__(self, id: int, offset: int | None) -> None:
        self.id = id
        self.offset = offset


class Global(Node):
    __slots__ = ("module", "name", "opcode", "protocol")

    def __init__(self, id: int, offset: int | None, module: str, name: str, protocol: int, opcode: str) -> None:
        self.id = id
        self.offset = offset
        self.module = module
        """Module name as written in the stream."""
        self.name = name
        """Qualified name as written in the stream."""
        self.protocol = protocol
        """Protocol in force when it was imported (Python-2 remapping applies below 3)."""
        self.opcode = opcode


class CallResult(Node):
    __slots__ = ("args", "callee", "how", "kwargs", "opcode")

    def __init__(
        self,
        id: int,
        offset: int | None,
        callee: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any] | None,
        how: CallHow,
        opcode: str | None,
    ) -> None:
        self.id = id
        self.offset = offset
        self.callee = callee
        """The called value: a Node, or a plain value (which a real unpickler would reject)."""
        self.args = args
        self.kwargs = kwargs
        self.how = how
        self.opcode = opcode


class ElidedCall(CallResult):
    """A call the lean recording need not keep as a statement: its callee is a global the scanner vouched for
    as a known-safe reconstructor (see ``plain`` in :func:`picklewarden.pickle.machine.run_pickle`) and every
    argument is inert (numbers, None, tuples of them, storage stand-ins, stand-ins of other such calls).

    Nothing a rule looks for can be in such a call: the callee is safe, and no argument holds text, bytes, a
    mutable container or a value of any other call. In a lean program it is kept in
    :attr:`Program.elided` unless something later operates on its result (BUILD, an item or attribute set,
    a call of it), which puts it back among the statements; a full recording keeps every one in place.
    """

    __slots__ = ("seq",)

    def __init__(
        self,
        id: int,
        offset: int | None,
        callee: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any] | None,
        how: CallHow,
        opcode: str | None,
        seq: int,
    ) -> None:
        CallResult.__init__(self, id, offset, callee, args, kwargs, how, opcode)
        self.seq = seq
        """Its index in the full recording's statement list, where :meth:`Program.all_statements` puts it
        back."""


class Persistent(Node):
    __slots__ = ("pid",)

    def __init__(self, id: int, offset: int | None, pid: Any) -> None:
        self.id = id
        self.offset = offset
        self.pid = pid


class Op(enum.Enum):
    """What a statement does to its target."""

    BUILD = "build"
    SETITEM = "setitem"
    APPEND = "append"
    EXTEND = "extend"
    ADD = "add"
    SETATTR = "setattr"


class Mutation(_Slotted):
    """BUILD / SETITEM(S) / APPEND(S) / ADDITEMS / slot-state setattr applied to a Node."""

    __slots__ = ("key", "offset", "op", "target", "value")

    def __init__(self, op: Op, target: Node, offset: int | None, key: Any = None, value: Any = None) -> None:
        self.op = op
        self.target = target
        self.offset = offset
        self.key = key
        self.value = value


Statement = Global | CallResult | Persistent | Mutation


class Program(_Slotted):
    """Everything one pickle made the unpickler do, in order."""

    __slots__ = (
        "_kinds",
        "complete",
        "elided",
        "end",
        "error",
        "extensions",
        "index",
        "member",
        "opcodes",
        "protocol",
        "reader",
        "result",
        "start",
        "statements",
    )

    def __init__(
        self,
        member: str,
        start: int,
        index: int,
        statements: list[Statement] | None = None,
        result: Any = None,
        complete: bool = False,
        end: int | None = None,
        error: ScanError | None = None,
        protocol: int = 0,
        opcodes: int = 0,
        extensions: list[tuple[int, int]] | None = None,
        reader: str = "",
        elided: list[ElidedCall] | None = None,
    ) -> None:
        self.member = member
        """Container member (or '' for a bare stream) the pickle came from."""
        self.start = start
        """Offset of the pickle's first byte within the member."""
        self.index = index
        """Position of this pickle among the pickles read back to back from the member."""
        self.statements: list[Statement] = [] if statements is None else statements
        self.result = result
        self.complete = complete
        """True when the unpickler reached STOP and returned."""
        self.end = end
        self.error = error
        self.protocol = protocol
        self.opcodes = opcodes
        self.extensions: list[tuple[int, int]] = [] if extensions is None else extensions
        self.reader = reader
        """Which unpickler read the stream when it is not the C one ('' for ``_pickle.Unpickler``)."""
        self.elided: list[ElidedCall] = [] if elided is None else elided
        """Calls a lean recording left out of :attr:`statements` (see :class:`ElidedCall`), in order; empty in
        a full recording."""
        self._kinds: tuple[list[Statement], int, StatementKinds] | None = None

    def kinds(self) -> StatementKinds:
        """:attr:`statements` split by kind, each part in order. A state dict's statements are almost all
        storage persistent ids (its calls are elided), so the passes looking for imports, calls and
        mutations walk :attr:`StatementKinds.others` instead. Computed once per statement list and count."""
        statements = self.statements
        cached = self._kinds
        if cached is not None and cached[0] is statements and cached[1] == len(statements):
            return cached[2]
        persistent = [s for s in statements if type(s) is Persistent]
        others = [s for s in statements if type(s) is not Persistent] if len(persistent) < len(statements) else []
        kinds = StatementKinds([s for s in others if type(s) is Global], persistent, others)
        self._kinds = (statements, len(statements), kinds)
        return kinds

    @property
    def recorded(self) -> int:
        """How many statements the full recording has (the lean one's statements plus its elided calls)."""
        return len(self.statements) + len(self.elided)

    def all_statements(self) -> list[Statement]:
        """Every statement of the full recording, in order: :attr:`statements` with the elided calls put back."""
        if not self.elided:
            return self.statements
        return merge_elided(self.statements, self.elided)

    def elided_counts(self) -> dict[tuple[str, str], int]:
        """How many calls of each callee were elided, by ``(module, name)`` as written, in first-call order."""
        counts: dict[tuple[str, str], int] = {}
        for call in self.elided:
            callee: Global = call.callee
            key = (callee.module, callee.name)
            counts[key] = counts.get(key, 0) + 1
        return counts

    @property
    def globals(self) -> list[Global]:
        return list(self.kinds().globals)

    @property
    def calls(self) -> list[CallResult]:
        """Every call, elided ones included, in order."""
        return [s for s in self.all_statements() if isinstance(s, CallResult)]


class StatementKinds:
    """A program's statements by kind (see :meth:`Program.kinds`); treat the lists as read-only."""

    __slots__ = ("globals", "others", "persistent")

    def __init__(self, globals_: list[Global], persistent: list[Persistent], others: list[Statement]) -> None:
        self.globals = globals_
        """The imports, in order."""
        self.persistent = persistent
        """The persistent ids, in order."""
        self.others = others
        """Every statement that is not a persistent id (imports, calls, mutations), in order."""


def merge_elided(statements: list[Statement], elided: list[ElidedCall]) -> list[Statement]:
    """``statements`` with ``elided`` (in order) put back at their :attr:`ElidedCall.seq` positions.

    ``statements`` must be everything else the full recording holds, in order; elided calls it already
    contains stay where they are."""
    merged: list[Statement] = []
    pending = iter(statements)
    for call in elided:
        while len(merged) < call.seq:
            item = next(pending, None)
            if item is None:
                break
            merged.append(item)
        merged.append(call)
    merged.extend(pending)
    return merged
