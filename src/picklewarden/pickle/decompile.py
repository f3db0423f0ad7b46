"""Program -> readable Python: the evidence a person reviews.

Statements are built as ``ast`` nodes and printed with ``ast.unparse``; names and constants from the file
only ever appear as string constants or validated identifiers, so a hostile name cannot inject text (or
terminal escapes) into the output.
"""

from __future__ import annotations

import ast
import heapq
import keyword

from picklewarden._typing import TYPE_CHECKING
from picklewarden.limits import Limits
from picklewarden.pickle.machine import node_of
from picklewarden.pickle.names import remap
from picklewarden.pickle.program import (
    CallHow,
    CallResult,
    Global,
    Mutation,
    Node,
    Op,
    Persistent,
    Program,
    Statement,
)

if TYPE_CHECKING:
    from typing import Any

_MAX_ITEMS = 32
_RENDER_BUDGET = 2_000
_MAX_CONSTANT = 240


_SORTED_SET_SIZE = 100_000
"""Sets up to this size are shown in a stable order (bigger ones in iteration order, to bound the work)."""


def _in_stable_order(members: set[Any] | frozenset[Any]) -> list[Any]:
    """The first members of a set in an order that is the same in every run: a set iterates in hash order,
    and a stand-in hashes by its address, so the same file would otherwise give different evidence."""
    if len(members) > _SORTED_SET_SIZE:
        return list(members)
    return heapq.nsmallest(_MAX_ITEMS + 1, members, key=_member_key)


def _member_key(value: Any, depth: int = 0) -> tuple[Any, ...]:
    """Sorts a set's members: constants by type and text, stand-ins by node id, tuples and frozensets by
    their first members (only hashable values can be members)."""
    node = node_of(value) if not isinstance(value, Node) else value
    if node is not None:
        return (1, "", node.id)
    if type(value) in (int, str, bytes):
        return (0, type(value).__name__, value)  # numbers in numeric order (same type: comparable)
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
        return (0, type(value).__name__, repr(value)[:_MAX_CONSTANT])  # a NaN has no order: its text has
    if depth < 3 and isinstance(value, tuple):
        return (2, "tuple", tuple(_member_key(v, depth + 1) for v in value[:8]))
    if depth < 3 and isinstance(value, frozenset):
        return (2, "frozenset", tuple(heapq.nsmallest(8, (_member_key(v, depth + 1) for v in value))))
    return (3, type(value).__name__, ())


def _identifier(text: str) -> bool:
    return text.isidentifier() and not keyword.iskeyword(text) and text.isascii()


def _dotted(text: str) -> bool:
    return bool(text) and all(_identifier(part) for part in text.split("."))


class Decompiler:
    """Renders one program's statements; names are stable for the life of the object."""

    def __init__(self, program: Program, limits: Limits) -> None:
        self.program = program
        self.limits = limits
        self._global_names: dict[int, str] = {}
        self._budget = _RENDER_BUDGET
        self._taken: set[str] = set()
        for stmt in program.kinds().globals:
            self._name_global(stmt)

    # -- names ---------------------------------------------------------------------------------------
    def _name_global(self, node: Global) -> None:
        module, name, _ = remap(node.module, node.name, node.protocol)
        base = name.split(".")[-1] if _dotted(module) and _dotted(name) else f"_g{node.id}"
        candidate, n = base, 1
        while candidate in self._taken:
            candidate, n = f"{base}_{n}", n + 1
        self._taken.add(candidate)
        self._global_names[node.id] = candidate

    def name(self, node: Node) -> str:
        if isinstance(node, Global):
            return self._global_names.get(node.id, f"_g{node.id}")
        return f"_var{node.id}"

    # -- expressions ---------------------------------------------------------------------------------
    def expr(self, value: Any, depth: int = 0, path: frozenset[int] = frozenset()) -> ast.expr:
        self._budget -= 1
        node = node_of(value) if not isinstance(value, Node) else value
        if node is not None:
            return ast.Name(self.name(node))
        if value is None or isinstance(value, (bool, int, float, complex)):
            return ast.Constant(value)
        if isinstance(value, (str, bytes)):
            if len(value) > _MAX_CONSTANT:
                return ast.BinOp(ast.Constant(value[:_MAX_CONSTANT]), ast.Add(), ast.Constant(...))
            return ast.Constant(value)
        if isinstance(value, bytearray):
            return ast.Call(ast.Name("bytearray"), [self.expr(bytes(value), depth, path)], [])
        if depth >= self.limits.max_render_depth or id(value) in path or self._budget <= 0:
            # Depth, cycles and a per-statement node budget: shared memo references can make a tiny
            # structure astronomically large to print ("billion laughs").
            return ast.Constant(...)
        inner = path | {id(value)}
        if isinstance(value, dict):
            keys: list[ast.expr | None] = []
            values: list[ast.expr] = []
            for i, (k, v) in enumerate(value.items()):
                if i == _MAX_ITEMS:
                    keys.append(ast.Constant(...))
                    values.append(ast.Constant(...))
                    break
                keys.append(self.expr(k, depth + 1, inner))
                values.append(self.expr(v, depth + 1, inner))
            return ast.Dict(keys, values)
        if isinstance(value, (list, tuple, set, frozenset)):
            members = _in_stable_order(value) if isinstance(value, (set, frozenset)) else value
            items = [self.expr(v, depth + 1, inner) for _, v in zip(range(_MAX_ITEMS), members, strict=False)]
            if len(value) > _MAX_ITEMS:
                items.append(ast.Constant(...))
            if isinstance(value, list):
                return ast.List(items)
            if isinstance(value, tuple):
                return ast.Tuple(items)
            if not items:
                return ast.Call(ast.Name(type(value).__name__), [], [])
            result: ast.expr = ast.Set(items)
            if isinstance(value, frozenset):
                result = ast.Call(ast.Name("frozenset"), [result], [])
            return result
        return ast.Call(ast.Name("opaque"), [ast.Constant(type(value).__name__)], [])

    # -- statements ----------------------------------------------------------------------------------
    def statement(self, stmt: Statement) -> list[ast.stmt]:
        if isinstance(stmt, Global):
            return self._import(stmt)
        if isinstance(stmt, CallResult):
            return [ast.Assign([ast.Name(self.name(stmt))], self._call(stmt), lineno=0)]
        if isinstance(stmt, Persistent):
            call = ast.Call(ast.Name("persistent_load"), [self.expr(stmt.pid)], [])
            return [ast.Assign([ast.Name(self.name(stmt))], call, lineno=0)]
        return [self._mutation(stmt)]

    def _import(self, node: Global) -> list[ast.stmt]:
        module, name, _ = remap(node.module, node.name, node.protocol)
        local = self.name(node)
        if not (_dotted(module) and _dotted(name)):
            call = ast.Call(ast.Name("GLOBAL"), [ast.Constant(module), ast.Constant(name)], [])
            return [ast.Assign([ast.Name(local)], call, lineno=0)]
        first, *rest = name.split(".")
        if not rest:
            alias = ast.alias(first, None if local == first else local)
            return [ast.ImportFrom(module, [alias], 0)]
        head = f"_m{node.id}"
        value: ast.expr = ast.Name(head)
        for part in [first, *rest]:
            value = ast.Attribute(value, part)
        return [
            ast.Import([ast.alias(module, head)]),
            ast.Assign([ast.Name(local)], value, lineno=0),
        ]

    def _call(self, node: CallResult) -> ast.expr:
        callee = self.expr(node.callee)
        args = [self.expr(a) for a in node.args]
        keywords = [
            ast.keyword(k if isinstance(k, str) and _identifier(k) else None, self.expr(v))
            for k, v in (node.kwargs or {}).items()
        ]
        if node.how is CallHow.NEW:
            return ast.Call(ast.Attribute(callee, "__new__"), [callee, *args], keywords)
        return ast.Call(callee, args, keywords)

    def _mutation(self, m: Mutation) -> ast.stmt:
        target = ast.Name(self.name(m.target))
        match m.op:
            case Op.BUILD:
                return ast.Expr(ast.Call(ast.Attribute(target, "__setstate__"), [self.expr(m.value)], []))
            case Op.SETITEM:
                sub = ast.Subscript(target, self.expr(m.key), ast.Store())
                return ast.Assign([sub], self.expr(m.value), lineno=0)
            case Op.SETATTR:
                if isinstance(m.key, str) and _identifier(m.key):
                    return ast.Assign([ast.Attribute(target, m.key, ast.Store())], self.expr(m.value), lineno=0)
                args = [target, self.expr(m.key), self.expr(m.value)]
                return ast.Expr(ast.Call(ast.Name("setattr"), args, []))
            case Op.APPEND | Op.EXTEND | Op.ADD:
                return ast.Expr(ast.Call(ast.Attribute(target, m.op.value), [self.expr(m.value)], []))

    def render(self, stmt: Statement) -> str:
        self._budget = _RENDER_BUDGET
        text = "\n".join(ast.unparse(s) for s in self.statement(stmt))
        limit = self.limits.max_render_chars
        return text if len(text) <= limit else text[:limit] + " ..."

    def lines(self) -> list[tuple[int | None, str]]:
        """The whole program: ``(offset, source line)`` per line, ending with the unpickled result. A lean
        recording's elided calls are put back in place, so every name a line uses is defined above it."""
        out: list[tuple[int | None, str]] = []
        for stmt in self.program.all_statements():
            for line in self.render(stmt).splitlines():
                out.append((stmt.offset, line))
        result = self.result_line()
        if result is not None:
            out.append(result)
        return out

    def result_line(self) -> tuple[int | None, str] | None:
        """``result = ...`` at the STOP offset, for a program that reached STOP."""
        if not self.program.complete:
            return None
        self._budget = _RENDER_BUDGET
        return self.program.end, ast.unparse(ast.Assign([ast.Name("result")], self.expr(self.program.result), lineno=0))
