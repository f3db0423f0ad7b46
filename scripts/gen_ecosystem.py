#!/usr/bin/env python3
"""Generate ``src/picklewarden/knowledge/data/ecosystem.json``: what the ML ecosystem's pickles name, judged
by what unpickling them runs.

Run by hand at development time (never by the scanner, which never imports these packages)::

    python scripts/gen_ecosystem.py --output src/picklewarden/knowledge/data/ecosystem.json

1. **Collect.** Real objects of scikit-learn, pandas, scipy, xgboost, lightgbm, transformers, tokenizers,
   accelerate, peft, diffusers, sentence-transformers, lightning and torch training artifacts
   (``tests/ecosystem_samples.py``, whichever packages are installed) are pickled the ways users pickle
   them (protocols 2 and 4, ``torch.save``). picklewarden's own machine reads each pickle back, so every
   global is seen with how the pickle uses it: called, instantiated (``NEWOBJ`` or copyreg's helpers), given
   state (``BUILD``), items (``SETITEM(S)``, ``APPEND(S)``), or only referenced as a value.
2. **Judge.** For each global the shipped tables do not already know, the code its unpickling runs is
   walked as bytecode, never called: a class's ``__new__``, ``__init__`` (when the pickle calls the class),
   ``__setstate__`` (or the ``__dict__`` update when it has none, plus a Python ``__getattr__`` that BUILD's
   look-up would reach), ``__setitem__``, ``append`` and ``extend``; a function's body. Calls are followed
   into the ecosystem packages' Python code (bounded depth); standard-library, numpy and torch callables
   and compiled functions are judged by picklewarden's sink tables (their own generator covers them).
   Calling a value that the code does not name (an attribute of the pickle's state, a local callable) is
   not data-only, except the plain container, string and array methods listed in ``DATA_METHODS``.
3. **Write.** ``safe``: globals whose whole unpickling path only stores data, with the reason and the
   samples that showed them. ``sinks``: globals whose path reaches a sink, with the category and the path.
   Globals in neither stay unknown (suspicious) at scan time. Package versions are recorded.

The output is deterministic for a given interpreter and package set (sorted throughout).
"""

from __future__ import annotations

import argparse
import builtins
import dis
import importlib
import importlib.metadata
import io
import json
import pickle
import platform
import sys
import types
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from picklewarden.knowledge import resolve as _resolve  # noqa: E402
from picklewarden.knowledge.tables import Category, Ecosystem  # noqa: E402
from picklewarden.pickle.program import CallHow, CallResult, Global, Mutation, Op  # noqa: E402
from picklewarden.scanner import analyse_bytes  # noqa: E402

GENERATED_BY = "scripts/gen_ecosystem.py"
MAX_DEPTH = 6
DISTRIBUTIONS = {
    "sklearn": "scikit-learn",
    "pandas": "pandas",
    "scipy": "scipy",
    "xgboost": "xgboost-cpu",
    "lightgbm": "lightgbm",
    "transformers": "transformers",
    "tokenizers": "tokenizers",
    "accelerate": "accelerate",
    "peft": "peft",
    "diffusers": "diffusers",
    "sentence_transformers": "sentence-transformers",
    "lightning": "lightning",
    "torch": "torch",
    "numpy": "numpy",
}
# Packages whose Python code is walked into; everything else is judged by picklewarden's tables.
WALKED = frozenset(DISTRIBUTIONS) - {"torch", "numpy"} | {"huggingface_hub", "safetensors", "pytorch_lightning"}
DATA_METHODS = frozenset(
    "get items keys values pop popitem update setdefault copy clear append extend insert remove discard add "
    "index count sort reverse startswith endswith split rsplit join format replace lower upper strip lstrip "
    "rstrip encode decode partition rpartition isdigit isidentifier isinstance astype reshape view tolist item "
    "ravel flatten squeeze transpose fill setflags to detach clone contiguous numpy cpu float long int size dim "
    "numel tobytes frombuffer difference union intersection issubset most_common __contains__ __len__ __iter__ "
    "__getitem__ __eq__ __hash__ __repr__ __str__ __format__ __class_getitem__ __instancecheck__ __subclasscheck__ "
    "is_contiguous requires_grad_ as_py removesuffix removeprefix casefold group groups groupdict span start end "
    "search match fullmatch findall finditer sub data_as".split()
)
"""Methods of plain values (dicts, lists, sets, strings, arrays, tensors) that a state update may call on
data from the pickle without running anything the pickle chooses."""
_NOT_SINKS = (Category.SAFE, Category.INDIRECTION)
"""INDIRECTION is a pickle-level notion (reaching callables by name); in code, getattr & co. are ordinary."""


@dataclass(frozen=True)
class Outcome:
    ok: bool
    detail: str
    """Why it is data-only (functions walked), or the path to what is not."""
    category: str | None = None
    """The sink category when the path reaches a known sink."""


@dataclass
class Usage:
    how: set[str] = field(default_factory=set)
    samples: set[str] = field(default_factory=set)


# -- 1. collect ----------------------------------------------------------------------------------------------
def pickles(sample: Any, obj: Any) -> Iterator[tuple[str, bytes]]:
    for protocol in (2, 4):
        try:
            yield f"p{protocol}", pickle.dumps(obj, protocol=protocol)
        except Exception as exc:  # noqa: BLE001 - some objects refuse a protocol; the others still count
            print(f"  {sample.name}: pickle protocol {protocol} fails: {exc}", file=sys.stderr)
    if sample.torch_save:
        import torch

        buffer = io.BytesIO()
        torch.save(obj, buffer)
        with zipfile.ZipFile(buffer) as archive:
            for name in archive.namelist():
                if name.endswith("data.pkl"):
                    yield "torch.save", archive.read(name)


def collect() -> dict[tuple[str, str], Usage]:
    from tests.ecosystem_samples import samples

    usages: dict[tuple[str, str], Usage] = {}
    for sample in samples():
        try:
            obj = sample.build()
        except Exception as exc:  # noqa: BLE001 - a sample that cannot be built is reported and skipped
            print(f"  {sample.name}: not built: {exc}", file=sys.stderr)
            continue
        for how, data in pickles(sample, obj):
            for key, use in uses(analyse_bytes(data).programs):
                usage = usages.setdefault(key, Usage())
                usage.how.add(use)
                usage.samples.add(f"{sample.name} ({how})")
    return usages


def uses(programs: list[Any]) -> Iterator[tuple[tuple[str, str], str]]:
    """(global, how the pickle uses it) for every global of ``programs``."""
    for program in programs:
        made: dict[int, tuple[str, str]] = {}
        for stmt in program.statements:
            if isinstance(stmt, Global):
                yield key_of(stmt), "value"
            elif isinstance(stmt, CallResult) and isinstance(stmt.callee, Global):
                key = key_of(stmt.callee)
                if key in (("copyreg", "_reconstructor"), ("copyreg", "__newobj__"), ("copyreg", "__newobj_ex__")):
                    from picklewarden.pickle.machine import node_of

                    cls = node_of(stmt.args[0]) if stmt.args else None
                    if isinstance(cls, Global):
                        made[stmt.id] = key_of(cls)
                        yield key_of(cls), "new"
                    continue
                made[stmt.id] = key
                yield key, "new" if stmt.how is CallHow.NEW else "call"
            elif isinstance(stmt, Mutation) and stmt.target.id in made:
                yield made[stmt.target.id], {Op.BUILD: "build", Op.SETITEM: "setitem"}.get(stmt.op, stmt.op.value)


def key_of(node: Global) -> tuple[str, str]:
    resolved = _resolve.resolve(node.module, node.name, node.protocol)
    return resolved.module, resolved.qualname


# -- 2. judge -----------------------------------------------------------------------------------------------
def lookup(key: tuple[str, str]) -> Any:
    """The object a global names, found by importing its module and walking attributes statically."""
    module, qualname = key
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = static_attr(obj, part)
        if obj is _MISSING:
            raise LookupError(f"{module}.{qualname} not found")
    return obj


_MISSING = object()


def static_attr(obj: Any, name: str) -> Any:
    """An attribute without running descriptors or ``__getattr__`` (module dicts, class MRO dicts)."""
    if isinstance(obj, types.ModuleType):
        found = vars(obj).get(name, _MISSING)
        if found is _MISSING:
            try:
                return importlib.import_module(f"{obj.__name__}.{name}")
            except ImportError:
                return _MISSING
        return found
    if isinstance(obj, type):
        for klass in obj.__mro__:
            if name in vars(klass):
                return vars(klass)[name]
        return _MISSING
    return _MISSING


def name_of(obj: Any) -> tuple[str, str] | None:
    target = obj.__func__ if isinstance(obj, (classmethod, staticmethod, types.MethodType)) else obj
    module = getattr(target, "__module__", None)
    qualname = getattr(target, "__qualname__", None) or getattr(target, "__name__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        return None
    return module, qualname


def top(module: str) -> str:
    return module.partition(".")[0]


def sink(obj: Any) -> Outcome | None:
    """The tables' judgement of a callable, when they call it a sink."""
    key = name_of(obj)
    if key is None or (key[0] in ("ctypes", "_ctypes") and key[1] in CTYPES_DATA):
        return None
    known = _resolve.classify(_resolve.resolve(key[0], key[1], 4))
    if known is None or known.category in _NOT_SINKS:
        return None
    return Outcome(False, f"{key[0]}.{key[1]} ({known.reason})", known.category.value)


class Walker:
    """Walks the bytecode of what unpickling runs; results are cached per function."""

    def __init__(self) -> None:
        self.cache: dict[int, Outcome] = {}
        self.walked = 0
        self.compiled: set[str] = set()
        """Compiled callables of the walked packages accepted on the tables' word (reset per global)."""

    def callable_(self, obj: Any, depth: int, owner: type | None = None) -> Outcome:
        found = sink(obj)
        if found is not None:
            return found
        if isinstance(obj, (classmethod, staticmethod)):
            obj = obj.__func__
        if isinstance(obj, types.MethodType):
            obj = obj.__func__
        if isinstance(obj, type):
            return self.instantiation(obj, depth)
        if not isinstance(obj, types.FunctionType):
            key = name_of(obj)
            if key is not None and top(key[0]) in WALKED:
                self.compiled.add(f"{key[0]}.{key[1]}")
            elif isinstance(obj, _Native):
                self.compiled.add(obj.name)
            return Outcome(True, "")  # compiled: judged by the tables above
        key = name_of(obj)
        if depth > 0 and key is not None and top(key[0]) not in WALKED:
            return Outcome(True, "")  # stdlib, numpy, torch callees: their own generator's tables decide
        if owner is not None and obj.__qualname__.rpartition(".")[0] not in {k.__qualname__ for k in owner.__mro__}:
            owner = None  # a plain function: its first argument is not the instance
        if id(obj) in self.cache:
            return self.cache[id(obj)]
        if depth > MAX_DEPTH:
            return Outcome(False, f"{obj.__qualname__}: calls nested deeper than {MAX_DEPTH} levels")
        self.cache[id(obj)] = Outcome(True, "")  # recursion: assume data-only while walking
        outcome = self.function(obj, depth, owner)
        self.cache[id(obj)] = outcome
        return outcome

    def instantiation(self, cls: type, depth: int) -> Outcome:
        for name in ("__new__", "__init__"):
            method = static_attr(cls, name)
            if method is _MISSING:
                continue
            outcome = self.callable_(method, depth + 1, cls)
            if not outcome.ok:
                return Outcome(False, f"{cls.__qualname__}.{name} -> {outcome.detail}", outcome.category)
        return Outcome(True, "")

    def function(self, fn: types.FunctionType, depth: int, owner: type | None) -> Outcome:
        self.walked += 1
        cells = dict(zip(fn.__code__.co_freevars, fn.__closure__ or (), strict=False))
        for code in codes(fn.__code__):
            for callee, where in references(code, fn.__globals__, cells, owner):
                outcome = self.reference(callee, where, depth, owner)
                if not outcome.ok:
                    return Outcome(False, f"{fn.__qualname__} -> {outcome.detail}", outcome.category)
        return Outcome(True, "")

    def reference(self, ref: Any, called: bool, depth: int, owner: type | None) -> Outcome:
        if isinstance(ref, _Unnamed):
            if not called or ref.name in DATA_METHODS:
                return Outcome(True, "")
            return Outcome(False, f"calls {ref.what}, a value it does not name")
        if ref is _MISSING:
            return Outcome(True, "") if not called else Outcome(False, "calls a name that does not resolve")
        if not called:
            return sink(ref) or Outcome(True, "")
        return self.callable_(ref, depth + 1, owner)


@dataclass(frozen=True)
class _Unnamed:
    """A callee the walk cannot name: a local, a value's method, an attribute of the instance."""

    what: str
    name: str = ""


def codes(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from codes(const)


def references(
    code: types.CodeType, namespace: dict[str, Any], cells: dict[str, Any], owner: type | None
) -> Iterator[tuple[Any, bool]]:
    """(what, is it called) for every name chain the code loads. A chain is a global, a closure cell or a
    local followed by attribute loads; it is a callee when the interpreter marks it as one (``NULL +`` on
    LOAD_GLOBAL/LOAD_ATTR, LOAD_METHOD, PUSH_NULL before it)."""
    local_defs = _local_functions(code)
    bound: dict[str, Any] = {}
    """Locals bound to a named thing (``from x import f``; ``f = module.g``), flow-insensitively."""
    self_name = code.co_varnames[0] if code.co_argcount and owner is not None else None
    current: Any = None
    callee = False
    pending_null = False
    after_super = False
    for ins in dis.get_instructions(code):
        op, arg, rep = ins.opname, ins.argval, ins.argrepr
        if op in ("CACHE", "EXTENDED_ARG", "PRECALL", "CALL", "KW_NAMES", "NOP") and current is None:
            continue
        if op in ("STORE_FAST", "STORE_DEREF") and current is not None and not isinstance(current, _Self):
            bound[arg] = current if arg not in bound or bound[arg] is current else _Unnamed(f"the local {arg}")
            yield from _end(current, callee)
            current, callee = None, False
            continue
        if op == "IMPORT_NAME":
            yield from _end(current, callee)
            current, callee = _import(arg, ins), False
            continue
        if op == "IMPORT_FROM":
            current, callee = _attribute(current, arg), False
            continue
        if op == "LOAD_GLOBAL":
            yield from _end(current, callee)
            current = namespace.get(arg, vars(builtins).get(arg, _MISSING))
            callee = "NULL" in rep
        elif op in ("LOAD_FAST", "LOAD_DEREF", "LOAD_CLOSURE", "LOAD_FAST_CHECK", "LOAD_FAST_AND_CLEAR"):
            yield from _end(current, callee)
            if arg in cells:
                try:
                    current = cells[arg].cell_contents
                except ValueError:
                    current = _Unnamed(f"the closure variable {arg}")
            elif arg == self_name:
                current = _Self(owner)  # type: ignore[arg-type]
            elif arg in local_defs:
                current = None  # a function defined here: its code is walked as a constant
            elif arg in bound:
                current = bound[arg]
            else:
                current = _Unnamed(f"the local {arg}")
            callee = pending_null
        elif op in ("LOAD_ATTR", "LOAD_METHOD", "LOAD_SUPER_ATTR"):
            if after_super and owner is not None:
                current = _after(owner, arg)
            else:
                current = _attribute(current, arg)
            callee = callee or op == "LOAD_METHOD" or "NULL|self" in rep or op == "LOAD_SUPER_ATTR"
        elif op in ("PRECALL", "CALL", "CALL_FUNCTION_EX", "CALL_KW") and current is not None:
            super_call = current is builtins.super
            yield from _end(current, callee)
            current, callee = None, False
            after_super = super_call
            pending_null = False
            continue
        else:
            yield from _end(current, callee)
            current, callee = None, False
        pending_null = op == "PUSH_NULL"
        if op not in ("LOAD_ATTR", "LOAD_METHOD"):
            after_super = False
    yield from _end(current, callee)


@dataclass(frozen=True)
class _Self:
    cls: type


def _end(current: Any, callee: bool) -> Iterator[tuple[Any, bool]]:
    if current is None:
        return
    if isinstance(current, _Self):
        if callee:
            yield _Unnamed("the instance itself"), True
        return
    yield current, callee


def _attribute(base: Any, name: str) -> Any:
    if isinstance(base, _Self):
        found = static_attr(base.cls, name)
        if found is _MISSING or isinstance(found, property):
            return _Unnamed(f"self.{name} (instance data the pickle sets)", "")
        return found
    if isinstance(base, _Unnamed) or base is None or base is _MISSING:
        return _Unnamed(f"the method {name} of a value", name)
    if isinstance(base, (types.ModuleType, type)):
        found = static_attr(base, name)
        return found if found is not _MISSING else _Unnamed(f"{getattr(base, '__name__', base)}.{name}", name)
    if _is_native_library(base):
        return _Native(f"{Path(str(getattr(base, '_name', 'library'))).name}:{name}")
    method = static_attr(type(base), name)  # a module-level instance: its class's method, by name
    return method if method is not _MISSING else _Unnamed(f"the method {name} of {type(base).__name__}", name)


@dataclass(frozen=True)
class _Native:
    """A function the package's own native library exports, called by a fixed name (xgboost's ``_LIB``)."""

    name: str


def _is_native_library(obj: Any) -> bool:
    import ctypes

    return isinstance(obj, ctypes.CDLL)


# ctypes values a package builds to talk to its own native library: data, not a way to run foreign code.
CTYPES_DATA = frozenset(
    "c_void_p c_char_p c_wchar_p c_int c_uint c_int32 c_uint32 c_int64 c_uint64 c_long c_ulong c_size_t c_ssize_t "
    "c_float c_double c_bool c_char c_byte c_ubyte c_short c_ushort sizeof byref POINTER pointer addressof "
    "create_string_buffer string_at cast".split()
)


def _import(name: str, ins: dis.Instruction) -> Any:
    """The module an IMPORT_NAME loads (at generation time; relative imports are left unnamed)."""
    try:
        return importlib.import_module(name) if name else _Unnamed("a relative import")
    except ImportError:
        return _Unnamed(f"the module {name}")


def _after(owner: type, name: str) -> Any:
    """``super().name`` from a method of ``owner``: the next definition along the MRO."""
    for klass in owner.__mro__[1:]:
        if name in vars(klass):
            return vars(klass)[name]
    return None


def _local_functions(code: types.CodeType) -> set[str]:
    names: set[str] = set()
    made = False
    for ins in dis.get_instructions(code):
        if ins.opname == "MAKE_FUNCTION":
            made = True
        elif ins.opname in ("STORE_FAST", "STORE_DEREF") and made:
            names.add(ins.argval)
            made = False
        elif ins.opname not in ("CACHE", "EXTENDED_ARG"):
            made = made and ins.opname in ("SET_FUNCTION_ATTRIBUTE",)
    return names


def judge(key: tuple[str, str], how: set[str], walker: Walker) -> Outcome:
    """Whether unpickling ``key`` as the pickles use it only stores data."""
    try:
        obj = lookup(key)
    except Exception as exc:  # noqa: BLE001 - a global that does not import is left unknown
        return Outcome(False, f"does not import here: {exc}")
    found = sink(obj)
    if found is not None:
        return found
    if not isinstance(obj, type):
        if callable(obj):
            outcome = walker.callable_(obj, 0)
            kind = "called by the pickle; its code" if "call" in how else "stored as a value; its code"
            detail = f"{kind} only stores data{_compiled(walker)}" if outcome.ok else outcome.detail
            return Outcome(outcome.ok, detail, outcome.category)
        return Outcome(True, f"a {type(obj).__name__} value")
    # A class the pickle only references is usually handed to a reconstructor that instantiates it.
    steps: list[tuple[str, str]] = [("__new__", "instantiation")]
    if "call" in how or "new" not in how:
        steps.append(("__init__", "called with arguments" if "call" in how else "instantiated by a reconstructor"))
    if "build" in how:
        has_setstate = static_attr(obj, "__setstate__") is not _MISSING
        steps.append(("__setstate__", "BUILD") if has_setstate else ("__getattr__", "BUILD's __setstate__ look-up"))
    steps += [(method, op) for op, method in (("setitem", "__setitem__"), ("append", "append"), ("extend", "extend"))]
    steps = [(m, w) for m, w in steps if m in ("__new__", "__init__", "__setstate__", "__getattr__") or w in how]
    checked = []
    value_only = not how & {"call", "new", "build", "setitem", "append", "extend"}
    for method, why in steps:
        found_method = static_attr(obj, method)
        if found_method is _MISSING:
            continue
        outcome = walker.callable_(found_method, 0, obj)
        if not outcome.ok and (outcome.category is not None or not value_only):
            return Outcome(False, f"{method} ({why}) -> {outcome.detail}", outcome.category)
        # A class the pickle only names runs nothing by itself: its constructors must reach no known sink,
        # but calls the walk cannot name do not make the value unknown.
        checked.append(method if outcome.ok else f"{method} (reaches no known sink; {outcome.detail})")
    if "build" in how and static_attr(obj, "__setstate__") is _MISSING:
        checked.append("__dict__ update")
    what = ", ".join(checked) if checked else "only object's own __new__"
    return Outcome(True, f"unpickling runs {what}: only stores data{_compiled(walker)}")


def _compiled(walker: Walker) -> str:
    if not walker.compiled:
        return ""
    names = sorted(walker.compiled)
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return f" (compiled code reached, which no sink table lists: {shown})"


# -- 3. write -----------------------------------------------------------------------------------------------
def versions() -> dict[str, str]:
    out = {}
    for module, dist in sorted(DISTRIBUTIONS.items()):
        try:
            out[module] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def generate() -> dict[str, Any]:
    warnings.simplefilter("ignore")
    # Judge against the reviewed tables only: a previous ecosystem.json must not vouch for itself.
    _resolve.ecosystem = lambda: Ecosystem({}, {})  # type: ignore[attr-defined]
    usages = collect()
    walker = Walker()
    safe, sinks = [], []
    for key in sorted(usages):
        if _resolve.classify(_resolve.resolve(key[0], key[1], 4)) is not None:
            continue  # already known to the hand or generated tables
        usage = usages[key]
        walker.compiled.clear()
        walker.cache.clear()  # compiled names are collected per global
        outcome = judge(key, usage.how, walker)
        seen = sorted(usage.samples)
        shown = ", ".join(seen[:3]) + (f" and {len(seen) - 3} more" if len(seen) > 3 else "")
        entry = {"module": key[0], "qualname": key[1], "package": top(key[0]), "uses": sorted(usage.how)}
        if outcome.ok:
            safe.append({**entry, "reason": f"{outcome.detail}; seen pickling {shown}"})
        elif outcome.category is not None:
            sinks.append({**entry, "category": outcome.category, "reason": f"reaches {outcome.detail}"})
        else:
            print(f"  unknown {key[0]}.{key[1]}: {outcome.detail}", file=sys.stderr)
    print(f"  walked {walker.walked} functions; {len(safe)} safe, {len(sinks)} sinks", file=sys.stderr)
    return {
        "generated_by": GENERATED_BY,
        "python": platform.python_version(),
        "packages": versions(),
        "safe": safe,
        "sinks": sinks,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, help="write here instead of standard output")
    args = parser.parse_args(argv)
    text = json.dumps(generate(), indent=1, sort_keys=True) + "\n"
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, "utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
