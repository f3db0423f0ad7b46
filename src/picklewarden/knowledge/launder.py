"""Follow callables laundered through import helpers, getattr, operator and functools to the real target.

A pickle need not name ``os.system``: ``getattr(importlib.import_module('os'), 'system')`` reaches it, as do
``operator.attrgetter``, ``operator.methodcaller``, ``functools.partial``, ``pkgutil.resolve_name`` and
``pydoc.locate``. This module evaluates such chains symbolically, over the recorded program, to the
``(module, qualname)`` the loader would finally call. The laundering helpers are dangerous by themselves
already; resolving the chain tells the responder what the payload does.
"""

from __future__ import annotations

from operator import attrgetter, itemgetter

from picklewarden import _native
from picklewarden._typing import TYPE_CHECKING, NamedTuple
from picklewarden.knowledge.resolve import Resolved, resolve
from picklewarden.knowledge.tables import INTROSPECTION_ATTRIBUTES
from picklewarden.pickle.machine import node_of
from picklewarden.pickle.program import CallResult, Global, Node, Persistent

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any


class ModuleRef(NamedTuple):
    """A module object obtained at load time (``import_module('os')``)."""

    name: str


class Getter(NamedTuple):
    """``operator.attrgetter(path)``: calling it on an object walks ``path``."""

    path: str


class MethodCaller(NamedTuple):
    """``operator.methodcaller(name, ...)``: calling it on an object calls ``object.name(...)``."""

    name: str


Ref = Resolved | ModuleRef | Getter | MethodCaller


def legacy_module_class(node: Persistent) -> Any:
    """The class a legacy torch ``('module', cls, source_file, source)`` persistent id hands back, or None.

    ``torch.serialization._legacy_load`` returns ``cls`` to the pickle (after comparing its source and, when
    ``cls.dump_patches`` is set, writing ``<name>.patch`` into the working directory).
    """
    pid = node.pid
    if isinstance(pid, tuple) and len(pid) >= 2 and pid[0] == "module":
        return pid[1]
    return None


_PID = attrgetter("pid")
_HEAD = itemgetter(0)


def module_pids(persistent: Sequence[Persistent]) -> Sequence[Persistent]:
    """The persistent ids for which :func:`legacy_module_class` is not None, in order.

    A state dict has one ``('storage', ...)`` id per tensor: when every id is a non-empty tuple, one pass
    over their first items (no Python call per id) shows none is a ``'module'`` id.
    """
    native = _native.speedups
    if native is not None and persistent and native.storage_columns(persistent) is not None:
        return ()  # every id a ('storage', ...) id
    pids = list(map(_PID, persistent))
    if set(map(type, pids)) == {tuple} and 0 not in set(map(len, pids)) and "module" not in map(_HEAD, pids):
        return ()
    return [node for node in persistent if legacy_module_class(node) is not None]


_MAX_DEPTH = 16


class Helped(NamedTuple):
    """What one call of an indirection helper amounts to, judged by what it wraps rather than by its name.

    Building a ``partial``, an ``itemgetter`` or a ``methodcaller`` calls nothing; ``getattr(G, 'name')`` on
    a global only looks an attribute up; ``reduce`` and ``operator.call`` call what they are given, now.
    """

    helper: str
    """What the helper does, for messages (``wraps ... in functools.partial``)."""
    target: Resolved | None
    """The global it wraps, reaches or calls; None when it wraps only data or values judged elsewhere."""
    calls_now: bool = False
    """The helper calls ``target`` while the file loads (``functools.reduce``, ``operator.call``)."""
    consumed: Global | None = None
    """A global the helper only looks into (``getattr``'s base): judged through ``target``, not alone."""


# Helpers whose danger lies only in what they wrap, keyed by canonical name, with what a call of each does.
_BINDS = frozenset({("functools", "partial"), ("_functools", "partial")})
_GETTERS = frozenset(
    (module, name) for module in ("operator", "_operator") for name in ("itemgetter", "attrgetter", "methodcaller")
)
_CALLS_NOW = frozenset({("functools", "reduce"), ("_functools", "reduce"), ("operator", "call"), ("_operator", "call")})
# Values the unpickler builds itself: type() of one of them is a built-in type (how NoneType pickles).
_PLAIN = (type(None), bool, int, float, complex, str, bytes, bytearray, tuple, list, dict, set, frozenset)


def _introspective(path: str) -> bool:
    return any(part in INTROSPECTION_ATTRIBUTES for part in path.split("."))


def _attr(base: Ref | None, path: str) -> Ref | None:
    if isinstance(base, ModuleRef):
        return resolve(base.name, path, 4)
    if isinstance(base, Resolved):
        return resolve(base.module, f"{base.qualname}.{path}", 4)
    return None


def _from_dotted(text: str) -> Ref | None:
    module, sep, qual = text.partition(":")
    if sep:
        return resolve(module, qual, 4) if qual else ModuleRef(module)
    head, _, tail = text.rpartition(".")
    return resolve(head, tail, 4) if head else ModuleRef(text)


class Launderer:
    """Evaluates values of one program to references; ``global_ref`` resolves a Global node."""

    def __init__(self, global_ref: Callable[[Global], Resolved]) -> None:
        self._global_ref = global_ref
        self._memo: dict[int, Ref | None] = {}

    def ref(self, value: Any, depth: int = 0) -> Ref | None:
        node = value if isinstance(value, Node) else node_of(value)
        if node is None or depth > _MAX_DEPTH:
            return None
        if node.id not in self._memo:
            self._memo[node.id] = None  # cycles resolve to nothing
            self._memo[node.id] = self._evaluate(node, depth)
        return self._memo[node.id]

    def _evaluate(self, node: Node, depth: int) -> Ref | None:
        if isinstance(node, Global):
            return self._global_ref(node)
        if isinstance(node, Persistent):
            # torch's legacy loader answers ('module', cls, source_file, source) with cls itself.
            held = legacy_module_class(node)
            return self.ref(held, depth + 1) if held is not None else None
        if not isinstance(node, CallResult):
            return None
        callee = self.ref(node.callee, depth + 1)
        args = node.args
        first = args[0] if args else None
        if isinstance(callee, Getter) and args:
            return _attr(self.ref(first, depth + 1), callee.path)
        if not isinstance(callee, Resolved):
            return None
        match (callee.module, callee.qualname):
            case ("importlib", "import_module") | ("builtins", "__import__") | ("importlib", "__import__"):
                return ModuleRef(first) if isinstance(first, str) else None
            case ("builtins", "getattr") if len(args) >= 2 and isinstance(args[1], str):
                return _attr(self.ref(first, depth + 1), args[1])
            case ("operator", "attrgetter") | ("_operator", "attrgetter") if isinstance(first, str):
                return Getter(first)
            case ("operator", "methodcaller") | ("_operator", "methodcaller") if isinstance(first, str):
                return MethodCaller(first)
            case ("functools", "partial") | ("_functools", "partial") if args:
                return self.ref(first, depth + 1)
            case ("pkgutil", "resolve_name") | ("pydoc", "locate") if isinstance(first, str):
                return _from_dotted(first)
        return None

    def called(self, call: CallResult) -> Resolved | None:
        """What calling ``call.callee`` finally invokes, when the chain resolves to a global."""
        callee = self.ref(call.callee)
        if isinstance(callee, MethodCaller) and call.args:
            target = _attr(self.ref(call.args[0]), callee.name)
            return target if isinstance(target, Resolved) else None
        return callee if isinstance(callee, Resolved) else None

    def helped(self, call: CallResult, callee: Resolved) -> Helped | None:
        """``call`` of the helper ``callee`` judged by what it wraps, or None when it is not understood (and
        the helper stays judged by its own name)."""
        key = (callee.module, callee.qualname)
        args = call.args
        first = args[0] if args else None
        if key in _BINDS and args:
            target = self.ref(first)
            wrapped = node_of(first)
            return Helped(
                f"wraps {{}} in {callee.symbol}",
                target if isinstance(target, Resolved) else None,
                consumed=wrapped if isinstance(wrapped, Global) else None,
            )
        if key in _GETTERS and args:
            # Nothing runs until the getter is called (the call site judges that); a name that walks to
            # globals has no benign use, so such a getter keeps the helper's own judgement.
            names = args if key[1] == "attrgetter" else args[:1] if key[1] == "methodcaller" else ()
            if any(not isinstance(n, str) or _introspective(n) for n in names):
                return None
            return Helped(callee.symbol, None)
        if key in _CALLS_NOW and args:
            target = self.ref(first)
            if not isinstance(target, Resolved):
                return None
            wrapped = node_of(first)
            return Helped(
                f"calls {{}} through {callee.symbol}", target, True, wrapped if isinstance(wrapped, Global) else None
            )
        base = node_of(first)
        if key == ("builtins", "getattr") and len(args) in (2, 3) and isinstance(base, Global):
            name = args[1]
            if not isinstance(name, str) or not name.isidentifier():
                return None  # a computed or dotted name: not a plain attribute look-up
            target = self.ref(call)
            if isinstance(target, Resolved):
                return Helped(f"looks up {{}} with {callee.symbol}", target, consumed=base)
        if key == ("builtins", "type") and len(args) == 1 and type(first) in _PLAIN:
            return Helped(callee.symbol, None)
        if key == ("builtins", "iter") and len(args) == 1 and type(first) in _PLAIN:
            # iter(callable, sentinel) calls; iter() of a built-in value runs no code (how itertools and
            # list iterators pickle in 3.11)
            return Helped(callee.symbol, None)
        return None
