"""The stand-ins the machine hands the unpickler in place of everything from outside it, and what makes a
call's arguments inert (:func:`inert`).

A stand-in records every operation the unpickler performs on it through the :class:`~picklewarden.pickle.
machine.Recorder` it belongs to, and refuses every other one. Only these values, the unpickler's own plain
values and reviewed pure builtins' results ever reach the machine.
"""

from __future__ import annotations

from picklewarden import _native
from picklewarden._typing import TYPE_CHECKING
from picklewarden.pickle.program import CallHow, ElidedCall, Node, Op, Persistent

if TYPE_CHECKING:
    from typing import Any

    from picklewarden.errors import ScanError
    from picklewarden.pickle.machine import Recorder


class Abort(BaseException):
    """Raised from a stand-in to stop the unpickler; a BaseException so no code path can swallow it."""

    def __init__(self, error: ScanError) -> None:
        self.error = error


class Recording:
    """What a stand-in does when the machine operates on it: record, and return another stand-in.

    The one implementation shared by type stand-ins (through their metaclass) and plain ones, so the two
    can never drift apart in what they record or refuse. Anything not defined here (iteration,
    comparison, arithmetic, other attributes) fails as on an object without it.
    """

    __slots__ = ()
    _pw_node: Node
    _pw_rec: Recorder

    def __setstate__(self, state: Any) -> None:
        self._pw_rec.build(self._pw_node, state)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._pw_rec.mutate(Op.SETITEM, self._pw_node, key, value)

    def __setattr__(self, name: str, value: Any) -> None:
        self._pw_rec.mutate(Op.SETATTR, self._pw_node, name, value)

    def append(self, value: Any) -> None:
        self._pw_rec.mutate(Op.APPEND, self._pw_node, None, value)

    def extend(self, values: Any) -> None:
        self._pw_rec.mutate(Op.EXTEND, self._pw_node, None, list(values))

    def add(self, value: Any) -> None:
        self._pw_rec.mutate(Op.ADD, self._pw_node, None, value)


def recording_call(self: Any, *args: Any, **kwargs: Any) -> Any:
    """What a stand-in does when called (``__call__`` of both kinds; the compiled fast path of
    :data:`FastStandinType` falls back to it)."""
    return self._pw_rec.call(self._pw_node, args, kwargs or None, CallHow.CALL)


class StandinType(Recording, type):
    """Metaclass of stand-ins that must pass ``PyType_Check`` (NEWOBJ demands a type)."""

    __call__ = recording_call


def _fast_standin_type() -> type | None:
    """:class:`StandinType` whose calls first take the compiled elided path (``_speedups_machine.h``), or
    None without the extension. A subclass, so classes of either kind mix (and :func:`node_of` knows both);
    its ``__call__`` is the C slot itself, which Python then calls without a frame."""
    native = _native.speedups
    if native is None:
        return None
    meta: Any = native.StandinMeta
    # Named as its base: the unpickler's own errors name the type of what it refused, and they must read
    # the same whichever core ran.
    fast = type("StandinType", (StandinType, meta), {"__call__": meta.__call__, "__module__": __name__})
    fast.__qualname__ = StandinType.__qualname__
    return fast


FastStandinType = _fast_standin_type()


class TypeStandin(metaclass=StandinType):
    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        return cls._pw_rec.call(cls._pw_node, args, kwargs or None, CallHow.NEW)


class Value(Recording):
    """A cheap stand-in for results of known reconstructors (a tensor, an OrderedDict, ...)."""

    __slots__ = ("_pw_node", "_pw_rec")
    __call__ = recording_call

    def __init__(self, node: Node, rec: Recorder) -> None:
        object.__setattr__(self, "_pw_node", node)
        object.__setattr__(self, "_pw_rec", rec)

    def __repr__(self) -> str:
        return f"<stand-in #{self._pw_node.id}>"


_new_object = object.__new__
_set_node = Value.__dict__["_pw_node"].__set__
_set_rec = Value.__dict__["_pw_rec"].__set__


def value_standin(node: Node, rec: Recorder) -> Value:
    """``Value(node, rec)``, made by setting the slots directly: a third of the cost, and a state dict makes
    one for every storage and every tensor."""
    value: Value = _new_object(Value)
    _set_node(value, node)
    _set_rec(value, rec)
    return value


def node_of(value: Any) -> Node | None:
    """The Node a stand-in stands for, or None for a plain value. Exact type checks: nothing else passes."""
    kind = type(value)
    if kind is Value or kind is StandinType or kind is FastStandinType:
        node: Node = value._pw_node
        return node
    return None


_INT_LOW, _INT_HIGH = -(1 << 63), 1 << 63
_MAX_NESTING = 4
_INERT_NODES = frozenset({ElidedCall, Persistent})
"""Nodes whose stand-ins are inert: storages (the only persistent ids answered with a plain stand-in) and
other elided calls."""
_INERT_SCALARS = frozenset({float, bool, type(None)})


def inert(values: tuple[Any, ...], depth: int) -> bool:
    """Whether a call's arguments leave nothing for a rule to find (see :class:`ElidedCall`).

    Inert: None, bools, floats, ints within 64 bits, tuples of inert values (a few levels deep), stand-ins of
    storages and of other elided calls. Everything else keeps the call a statement: text and bytes (a payload
    or a decoder's input can hide in them), lists, dicts and sets (the stream can fill them after the
    call), globals, and every other call's result. Runs for every call of a safe reconstructor, so the
    common cases (ints, a tensor's size and stride tuples) are tested first and without recursion.
    """
    for value in values:
        kind = type(value)
        if kind is int:
            if _INT_LOW <= value < _INT_HIGH:
                continue
            return False
        if kind is Value:
            if type(value._pw_node) in _INERT_NODES:
                continue
            return False
        if kind is tuple:
            for item in value:
                if type(item) is int and _INT_LOW <= item < _INT_HIGH:
                    continue
                if depth < _MAX_NESTING and inert((item,), depth + 1):
                    continue
                return False
            continue
        if kind in _INERT_SCALARS:
            continue
        return False
    return True
