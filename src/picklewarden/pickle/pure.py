"""Reviewed pure builtins the stand-in machine may evaluate, so it reads on where CPython reads on.

A victim's unpickler really calls ``builtins.tuple(...)`` or ``str.join(...)`` and gets a real tuple or
str, which REDUCE then accepts as arguments and STACK_GLOBAL as a name. A stand-in is neither, so the C
machine stopped there and the rest of the stream (possibly the real payload) went unread (issue 12,
class 9). Here a short, reviewed table names the few builtins whose value the machine may compute: each
is free of side effects and of user code when its arguments are exact built-in values (iterating an exact
list, tuple, dict or set never calls into its elements, and a str or bytes method only reads bytes). Output
size is bounded before computing. Nothing named by the file other than these entries is ever called, and
nothing is imported: the table holds the builtins themselves.

When the value cannot be computed, the caller keeps a stand-in the unpickler still accepts (see
``machine.Recorder.call``) and the name stays unresolved.
"""

from __future__ import annotations

from picklewarden._typing import TYPE_CHECKING, NamedTuple
from picklewarden.pickle.names import remap
from picklewarden.pickle.program import CallHow, CallResult, Global, Node

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

UNRESOLVED_MODULE = "<unresolved>"
"""Module recorded for a global whose module or name came from a call result the machine could not compute:
no table names it, so the judge can only call it unknown."""

MAX_OUTPUT = 1 << 20
"""Characters (or bytes) a computed str/bytes may reach: memo references can repeat one big string."""

_SCALARS = (str, bytes, int, float, bool, type(None))
_CONTAINERS = (list, tuple, dict, set, frozenset)


class Pure(NamedTuple):
    """A pure builtin the machine may evaluate on literal arguments, and what its result looks like."""

    func: Callable[..., Any]
    returns: type
    """tuple, list, dict, str or bytes: what a stand-in must look like when the value cannot be computed."""
    containers: bool
    """True: arguments may be exact containers of anything (only iterated); False: flat text only."""
    codec: bool = False
    """Arguments after the text are an encoding and error handler, limited to ``_CODEC_ARGS``."""
    bound: Callable[[tuple[Any, ...]], int] | None = None
    """Worst-case output size from the arguments, checked before calling (default: 4x their size, enough
    for case mappings and UTF-8)."""


def _entry(
    func: Callable[..., Any],
    returns: type,
    containers: bool = False,
    codec: bool = False,
    bound: Callable[[tuple[Any, ...]], int] | None = None,
) -> Pure:
    return Pure(func, returns, containers, codec, bound)


def _join_bound(args: tuple[Any, ...]) -> int:
    # the separator repeats between items: a memoized '' repeated 500k times joined by 500k characters
    # would be 250 GB from a pickle of a megabyte and a half
    if len(args) != 2 or type(args[1]) not in (list, tuple, str, bytes):
        return 0  # not a call str.join accepts: it fails without allocating
    return _size(args[0]) * max(0, len(args[1]) - 1) + _size(args[1])


def _replace_bound(args: tuple[Any, ...]) -> int:
    return (_size(args[0]) + 1) * (_size(args[2] if len(args) > 2 else "") + 1)


# Each entry: why it is pure on exact built-in values.
_TABLE: dict[str, Pure] = {
    # Iterates its one argument; on an exact container that runs no Python code.
    "tuple": _entry(tuple, tuple, containers=True),
    "list": _entry(list, list, containers=True),
    # Also hashes the keys: exact str/int/tuple hash in C, a stand-in by identity (it defines no __hash__).
    "dict": _entry(dict, dict, containers=True),
    # Text methods read only their str/bytes arguments; outputs bounded by _size below.
    "str.join": _entry(str.join, str, bound=_join_bound),
    "str.lower": _entry(str.lower, str),
    "str.upper": _entry(str.upper, str),
    "str.strip": _entry(str.strip, str),
    "str.swapcase": _entry(str.swapcase, str),
    "str.casefold": _entry(str.casefold, str),
    "str.title": _entry(str.title, str),
    "str.capitalize": _entry(str.capitalize, str),
    "str.__add__": _entry(str.__add__, str),
    "str.replace": _entry(str.replace, str, bound=_replace_bound),
    "str.lstrip": _entry(str.lstrip, str),
    "str.rstrip": _entry(str.rstrip, str),
    "str.removeprefix": _entry(str.removeprefix, str),
    "str.removesuffix": _entry(str.removesuffix, str),
    "str.encode": _entry(str.encode, bytes, codec=True),
    "bytes.decode": _entry(bytes.decode, str, codec=True),
    "bytes.join": _entry(bytes.join, bytes, bound=_join_bound),
    "bytes.fromhex": _entry(bytes.fromhex, bytes),
    "bytes.replace": _entry(bytes.replace, bytes, bound=_replace_bound),
}
_BY_TYPE: dict[type, str] = {str: "str", bytes: "bytes"}
_ITERABLE = (*_CONTAINERS, str, bytes)
_CODEC_ARGS = frozenset({"utf-8", "utf8", "ascii", "latin-1", "latin1", "strict", "ignore", "replace"})
"""Encodings and error handlers the C codecs take without a registry lookup: any other name could make the
codec registry import an ``encodings`` module, and nothing named by the file may be imported."""


def _flat(value: Any, depth: int = 0) -> bool:
    kind = type(value)
    if kind in _SCALARS:
        return kind is not int or -(1 << 64) < value < 1 << 64  # keeps int->str conversions cheap
    return depth == 0 and kind in (list, tuple) and all(_flat(v, 1) for v in value)


def _size(value: Any) -> int:
    kind = type(value)
    if kind is str or kind is bytes:
        return len(value)
    if kind is list or kind is tuple:
        return sum(_size(v) for v in value) + len(value)
    return 1


def callee_entry(callee: Node, node_of: Callable[[Any], Node | None]) -> tuple[Pure, Any] | None:
    """The reviewed builtin a callee node stands for, with the bound receiver (or None), if any.

    Handles ``builtins.tuple``, ``builtins.str.join`` (a dotted name), ``getattr(builtins.str, 'join')``
    and ``getattr('', 'join')`` on an exact str or bytes; everything else is None.
    """
    if isinstance(callee, Global):
        module, name, _ = remap(callee.module, callee.name, callee.protocol)
        return (_TABLE[name], None) if module == "builtins" and name in _TABLE else None
    if not isinstance(callee, CallResult) or callee.how is not CallHow.CALL or callee.kwargs:
        return None
    getter = callee.callee
    if not isinstance(getter, Global) or len(callee.args) != 2 or type(callee.args[1]) is not str:
        return None
    if remap(getter.module, getter.name, getter.protocol)[:2] != ("builtins", "getattr"):
        return None
    target, attr = callee.args
    owner = node_of(target)
    if isinstance(owner, Global):
        module, name, _ = remap(owner.module, owner.name, owner.protocol)
        key = f"{name}.{attr}"
        return (_TABLE[key], None) if module == "builtins" and key in _TABLE else None
    kind = _BY_TYPE.get(type(target))
    if kind is not None and f"{kind}.{attr}" in _TABLE:
        return _TABLE[f"{kind}.{attr}"], target
    return None


_UNSET = object()


def evaluate(entry: Pure, receiver: Any, args: tuple[Any, ...], kwargs: dict[str, Any] | None) -> Any:
    """The real value of the call, or ``_UNSET`` when it is not provably pure and small."""
    if kwargs or len(args) > 3:
        return _UNSET
    if receiver is not None:
        args = (receiver, *args)
    if entry.containers:
        if len(args) != 1 or type(args[0]) not in _ITERABLE:
            return _UNSET
    elif entry.codec and not all(type(a) is str and a.lower() in _CODEC_ARGS for a in args[1:]):
        return _UNSET
    elif not all(_flat(a) for a in args) or sum(_size(a) for a in args) > MAX_OUTPUT:
        return _UNSET
    if not entry.containers:
        worst = entry.bound(args) if entry.bound is not None else 4 * sum(_size(a) for a in args)
        if worst > 2 * MAX_OUTPUT:
            return _UNSET
    try:
        value = entry.func(*args)
    except (TypeError, ValueError, LookupError, OverflowError):
        return _UNSET  # the victim's machine would stop here too; a stand-in keeps ours going no further
    return value if _size(value) <= 2 * MAX_OUTPUT + 64 else _UNSET


def is_unset(value: Any) -> bool:
    return value is _UNSET


class ArgsStandin(tuple):  # type: ignore[type-arg]
    """An unresolved tuple result: a real tuple (so REDUCE/NEWOBJ accept it) holding the result's stand-in."""

    __slots__ = ()


class KwargsStandin(dict):  # type: ignore[type-arg]
    """An unresolved dict result: a real dict (so NEWOBJ_EX accepts it as keywords) holding the stand-in."""

    __slots__ = ()


def unresolved_text(node: Node, returns: type) -> Any:
    """An exact str/bytes naming an unresolved result (STACK_GLOBAL demands an exact str)."""
    text = f"<unresolved call result #{node.id} at offset {node.offset}>"
    return text if returns is str else text.encode()
