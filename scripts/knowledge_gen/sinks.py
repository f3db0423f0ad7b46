"""Sink knowledge: every callable of the domain that reaches a root sink, by a fixed point over the call graph."""

from __future__ import annotations

import builtins
import dis
import re
import sys
import types
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from knowledge_gen import native
from knowledge_gen.domain import in_domain
from knowledge_gen.introspect import (
    CATEGORIES,
    MISSING,
    brief,
    class_lookup,
    instance_dict,
    is_dunder,
    log,
    module_items,
    resolve_dotted,
    static_getattr,
    static_mro,
)

# --------------------------------------------------------------------------------------------------
# (c) sinks: bounded walk over bytecode references
# --------------------------------------------------------------------------------------------------

PROC, CODE, DESER, IMPORT, NET, FILE, TAMPER, INDIR = CATEGORIES

# (module, attribute pattern, category, what it does). Patterns are full regexes over one module's names.
ROOT_SINKS: tuple[tuple[str, str, str, str], ...] = (
    ("os", "system", PROC, "runs a shell command"),
    ("os", "popen", PROC, "runs a shell command through a pipe"),
    ("os", "exec[lv]p?e?", PROC, "replaces the process with another program"),
    ("os", "spawn[lv]p?e?", PROC, "starts a program"),
    ("os", "posix_spawnp?", PROC, "starts a program"),
    ("os", "fork|forkpty|startfile", PROC, "forks the process or starts a program"),
    ("_posixsubprocess", "fork_exec", PROC, "forks and executes a program"),
    ("subprocess", "Popen", PROC, "starts a program"),
    ("_ctypes", "dlopen|LoadLibrary", PROC, "loads a native library"),
    ("ctypes", "CDLL|PyDLL|WinDLL|OleDLL", PROC, "loads a native library to call into"),
    (
        "ctypes",
        "LibraryLoader.LoadLibrary|LibraryLoader.__getattr__|LibraryLoader.__getitem__",
        PROC,
        "loads a native library to call into",
    ),
    ("builtins", "eval", CODE, "evaluates a Python expression"),
    ("builtins", "exec", CODE, "executes Python source or code"),
    ("builtins", "compile", CODE, "compiles Python source to code"),
    ("builtins", "breakpoint", CODE, "calls the debugger hook"),
    ("builtins", "__import__", IMPORT, "imports a module by name"),
    ("importlib", "import_module|__import__", IMPORT, "imports a module by name"),
    ("importlib._bootstrap", "_gcd_import|_find_and_load", IMPORT, "imports a module by name"),
    ("_imp", "create_dynamic|exec_dynamic", IMPORT, "loads an extension module"),
    ("pickle", "loads|load|Unpickler|_loads|_load|_Unpickler", DESER, "unpickles data"),
    ("_pickle", "loads|load|Unpickler", DESER, "unpickles data"),
    ("marshal", "loads|load", DESER, "unmarshals code objects"),
    ("torch.serialization", "load|_load|_legacy_load", DESER, "unpickles a file (torch.load)"),
    ("torch._C", "import_ir_module|import_ir_module_from_buffer", CODE, "loads TorchScript code"),
    (
        "socket",
        "socket|create_connection|create_server|getaddrinfo|gethostbyname|gethostbyname_ex|gethostbyaddr|getnameinfo",
        NET,
        "opens a connection or resolves a host name",
    ),
    (
        "_socket",
        "socket|getaddrinfo|gethostbyname|gethostbyname_ex|gethostbyaddr|getnameinfo",
        NET,
        "opens a connection or resolves a host name",
    ),
    ("urllib.request", "urlopen", NET, "opens a URL"),
    ("builtins", "open", FILE, "opens a file"),
    ("io", "open_code|FileIO", FILE, "opens a file"),
    (
        "os",
        "open|remove|unlink|rmdir|removedirs|rename|renames|replace|mkdir|makedirs|truncate|chmod|lchmod|"
        "chown|lchown|symlink|link|utime|mkfifo|mknod|chroot|chdir",
        FILE,
        "opens, changes or deletes files",
    ),
    # Evaluate string annotations only when asked (eval_str=True): sinks themselves, but their many callers
    # (everything that takes a signature) pass the default and are not sinks through them.
    ("inspect", "get_annotations|signature", CODE, "evaluates string annotations as Python when eval_str=True"),
    # Tampering: calls that change how later loads in the same process behave (issue: weakening weights_only).
    (
        "torch.serialization",
        "add_safe_globals|clear_safe_globals|register_package|set_default_mmap_options|set_default_load_endianness",
        TAMPER,
        "changes how later torch.load calls in this process unpickle (the weights-only allowlist or handlers)",
    ),
    (
        "torch._weights_only_unpickler",
        "_add_safe_globals|_clear_safe_globals|_remove_safe_globals",
        TAMPER,
        "changes the weights-only unpickler's allowlist for later loads",
    ),
    (
        "torch._utils",
        "_set_obj_state",
        TAMPER,
        "sets arbitrary attributes on any object, modules included (torch.serialization's weights-only state)",
    ),
    (
        "copyreg",
        "add_extension|remove_extension|clear_extension_cache|pickle",
        TAMPER,
        "changes how later pickles resolve extension codes or reduce objects",
    ),
    # Indirection primitives: listed as sinks themselves but not propagated to their callers (almost all
    # code uses getattr).
    (
        "builtins",
        "getattr|setattr|delattr|vars|globals|locals",
        INDIR,
        "reaches attributes and callables by computed names",
    ),
    ("operator", "attrgetter|methodcaller", INDIR, "reaches attributes and methods by computed names"),
    ("functools", "partial|reduce", INDIR, "calls a callable given as data"),
)
NON_PROPAGATING = frozenset({INDIR})
# Roots listed as sinks themselves whose callers are not marked: compile() alone runs nothing (ast.parse,
# typing and inspect compile constantly); the code that runs the result is what matters.
NON_PROPAGATING_ROOTS = frozenset(
    {"builtins.compile", "torch._utils._set_obj_state", "inspect.get_annotations", "inspect.signature"}
)
"""``_set_obj_state`` tampers only when handed a module; its callers (``_rebuild_from_type_v2``) hand it the
object they just built."""
# Functions that call a sink only on data they build and validate themselves, so their callers are not
# sinks through them: namedtuple evals a template after checking every name is an identifier.
STOP_FUNCTIONS = frozenset(
    {
        "collections.namedtuple",
        # eval of the __text_signature__ a C function carries, never of a caller's data
        "inspect._signature_fromstr",
        # exec of code generated from validated identifiers (dataclass methods, mock signatures)
        "dataclasses._create_fn",
        "unittest.mock._set_signature",
        # exec of the user's ~/.tkrc at Tk() creation: not a file the pickle chooses
        "tkinter.Tk.readprofile",
        # open() of a JSON file shipped inside torch
        "torch._dynamo.exc._load_gb_type_to_gb_id_map",
        # eval of a TorchScript schema's type string (torch's own operator schemas)
        "torch.fx.operator_schemas._torchscript_type_to_python_type",
    }
)
"""Functions that call a sink only on data they build and validate themselves (reviewed): their callers are
not sinks through them. Each is a sink only if listed as a root itself."""

# Advisory examples that must come out as sinks; the script warns when the walk misses one.
EXPECTED_SINKS = (
    ("uuid", "_get_command_stdout", PROC),
    ("_osx_support", "_read_output", PROC),
    ("_aix_support", "_read_cmd_output", PROC),
    ("imaplib", "IMAP4_stream", PROC),
    ("pydoc", "pipepager", PROC),
    ("torch.storage", "_load_from_bytes", DESER),
    ("torch.fx.graph_module", "_forward_from_src", CODE),
    ("numpy.testing._private.utils", "runstring", CODE),
    ("numpy", "savez_compressed", FILE),
    ("typing", "get_type_hints", CODE),
    ("torch.serialization", "add_safe_globals", TAMPER),
    ("torch.utils.file_baton", "FileBaton.try_acquire", FILE),
)

# Node kinds: ("f", function, context class or None), ("c", class), ("b", other callable: a leaf).
Node = tuple[str, Any, Any]


def node_key(node: Node) -> tuple[str, int, int]:
    return node[0], id(node[1]), id(node[2])


def to_node(obj: Any, ctx: Any = None) -> Node | None:
    """What calling ``obj`` runs, statically: a Python function (with the class ``self`` resolves in), a
    class (its constructor), or an opaque callable."""
    for _ in range(8):  # unwrap staticmethod/classmethod/bound methods/partials/__wrapped__
        kind = type(obj)
        if kind is types.FunctionType:
            return "f", obj, ctx
        if issubclass(kind, type):
            return "c", obj, None
        if kind is staticmethod:
            obj, ctx = obj.__func__, None
        elif kind is classmethod:
            obj = obj.__func__
        elif kind is types.MethodType:
            owner = obj.__self__
            ctx = owner if issubclass(type(owner), type) else type(owner)
            obj = obj.__func__
        elif issubclass(
            kind,
            (
                types.BuiltinFunctionType,
                types.BuiltinMethodType,
                types.WrapperDescriptorType,
                types.MethodDescriptorType,
                types.ClassMethodDescriptorType,
            ),
        ):
            return "b", obj, None
        else:
            import functools

            if issubclass(kind, functools.partial):
                obj = obj.func
                continue
            wrapped = instance_dict(obj).get("__wrapped__", MISSING)
            if wrapped is MISSING:
                return None
            obj = wrapped
    return None


@dataclass(frozen=True)
class Ref:
    """One static reference in a code object: how to find the object, then attribute names."""

    kind: str  # "global", "deref", "self", "super", "import"
    name: str
    attrs: tuple[str, ...]
    module: str = ""
    level: int = 0
    constant_call: bool = False
    """Called right away with only constant arguments (``import_module("torch._dynamo")``): the pickle
    cannot steer what that call does, so the reference is not an edge."""
    value_use: bool = False
    """Used as a value, not called: an argument of a call (``isinstance(a, np.memmap)``) or compared.
    A class used so is not instantiated, so it is not an edge (a function still is: it may be a callback)."""


_ATTR_OPS = frozenset({"LOAD_ATTR", "LOAD_METHOD"})
_SELF_NAMES = frozenset({"self", "cls"})
_STORE_OPS = frozenset({"STORE_FAST", "STORE_NAME", "STORE_DEREF", "STORE_GLOBAL"})
_code_refs_cache: dict[types.CodeType, tuple[Ref, ...]] = {}


def code_refs(code: types.CodeType, top: bool = True) -> tuple[Ref, ...]:
    cached = _code_refs_cache.get(code)
    if cached is not None:
        return cached
    refs: list[Ref] = []
    imports: dict[str, tuple[str, str, int]] = {}  # local name -> (module, attribute or "", level)
    try:
        instructions = [i for i in dis.get_instructions(code) if i.opname not in ("CACHE", "EXTENDED_ARG")]
    except Exception:  # noqa: BLE001
        instructions = []
    free = set(code.co_freevars)
    chain: Ref | None = None
    pending_import: tuple[str, int, bool] | None = None  # (module, level, has fromlist)
    pending_from = ""

    def flush(index: int) -> None:
        nonlocal chain
        if chain is not None:
            if chain.kind in ("global", "deref", "import") and constant_call_at(instructions, index):
                chain = Ref(chain.kind, chain.name, chain.attrs, chain.module, chain.level, constant_call=True)
            elif value_use_at(instructions, index):
                chain = Ref(chain.kind, chain.name, chain.attrs, chain.module, chain.level, value_use=True)
            refs.append(chain)
        chain = None

    for index, ins in enumerate(instructions):
        op, arg = ins.opname, ins.argval
        if op == "IMPORT_NAME":
            flush(index)
            level = instructions[index - 2].argval if index >= 2 else 0
            fromlist = instructions[index - 1].argval if index >= 1 else None
            pending_import = (str(arg), level if isinstance(level, int) else 0, fromlist is not None)
            pending_from = ""
            continue
        if pending_import is not None:
            module, level, has_fromlist = pending_import
            if op == "IMPORT_FROM":
                pending_from = str(arg)
                continue
            if op in _STORE_OPS:
                if pending_from and not has_fromlist:  # import a.b as c: c is the module a.b
                    imports[str(arg)] = (module, "", level)
                elif pending_from:  # from a import b
                    imports[str(arg)] = (module, pending_from, level)
                elif not has_fromlist:
                    imports[str(arg)] = (module.split(".")[0] if level == 0 else module, "", level)
                else:
                    imports[str(arg)] = (module, "", level)
                pending_from = ""
                continue
            if op != "POP_TOP" or not pending_from:
                pending_import = None
        if op in _ATTR_OPS:
            if chain is not None:
                chain = Ref(chain.kind, chain.name, (*chain.attrs, str(arg)), chain.module, chain.level)
            continue
        if op == "LOAD_SUPER_ATTR":  # Python 3.12+: super().name
            flush(index)
            refs.append(Ref("super", str(arg), ()))
            continue
        if op in ("PRECALL", "CALL") and ins.arg == 0 and chain == Ref("global", "super", ()):
            if op == "CALL":  # Python 3.11: super() then LOAD_ATTR/LOAD_METHOD name
                chain = Ref("super-call", "", ())
            continue
        flush(index)
        if op in ("LOAD_GLOBAL", "LOAD_NAME"):
            chain = Ref("global", str(arg), ())
        elif op in ("LOAD_FAST", "LOAD_DEREF", "LOAD_CLASSDEREF", "LOAD_FAST_CHECK"):
            name = str(arg)
            if name in imports:
                module, attr, level = imports[name]
                chain = Ref("import", attr, (), module, level)
            elif name in _SELF_NAMES:
                chain = Ref("self", "", ())
            elif top and op == "LOAD_DEREF" and name in free:
                chain = Ref("deref", name, ())
            else:
                chain = Ref("receiver", "", ())
        elif op == "LOAD_CONST" and type(arg) is types.CodeType:
            refs.extend(code_refs(arg, top=False))
    flush(len(instructions))
    # "super-call" chains become super refs once an attribute follows; a receiver the walk cannot type is
    # kept only when a private method is called on it (see Walker.receiver_methods).
    out = tuple(
        Ref("super", r.attrs[0], r.attrs[1:]) if r.kind == "super-call" and r.attrs else r
        for r in refs
        if (r.kind != "super-call" or r.attrs) and (r.kind != "receiver" or (r.attrs and is_private(r.attrs[0])))
    )
    _code_refs_cache[code] = out
    return out


def is_private(name: str) -> bool:
    return name.startswith("_") and not is_dunder(name)


_CONSTANT_OPS = frozenset(
    "LOAD_CONST KW_NAMES BUILD_TUPLE BUILD_LIST BUILD_SET BUILD_MAP BUILD_CONST_KEY_MAP LIST_EXTEND SET_UPDATE "
    "PUSH_NULL".split()
)


def constant_call_at(instructions: list[dis.Instruction], index: int) -> bool:
    """Whether the instructions from ``index`` push only constants (at least one) and then call."""
    consts = 0
    for ins in instructions[index:]:
        if ins.opname in ("PRECALL", "CALL"):
            return consts > 0
        if ins.opname not in _CONSTANT_OPS:
            return False
        consts += ins.opname == "LOAD_CONST"
    return False


def value_use_at(instructions: list[dis.Instruction], index: int) -> bool:
    """Whether the value just loaded is an argument of a call that follows, or is compared."""
    following = instructions[index : index + 2]
    if not following:
        return False
    first = following[0]
    if first.opname in ("PRECALL", "CALL"):
        return bool(first.arg)
    if first.opname in ("COMPARE_OP", "IS_OP", "CONTAINS_OP"):
        return True
    return first.opname == "BUILD_TUPLE" and len(following) > 1 and following[1].opname in ("PRECALL", "CALL")


def resolve_import(module: str, level: int, globals_: dict[str, Any]) -> types.ModuleType | None:
    if level:
        package = globals_.get("__package__") or ""
        if not isinstance(package, str) or not package:
            return None
        pieces = package.split(".")
        if level - 1 > len(pieces):
            return None
        base = ".".join(pieces[: len(pieces) - (level - 1)])
        module = f"{base}.{module}" if module else base
    found = sys.modules.get(module)
    return found if issubclass(type(found), types.ModuleType) else None


def defining_class(func: Any, ctx: type) -> type | None:
    for klass in static_mro(ctx):
        try:
            values = type.__dict__["__dict__"].__get__(klass).values()
        except Exception:  # noqa: BLE001
            continue
        for value in values:
            if value is func or (type(value) in (staticmethod, classmethod) and value.__func__ is func):
                return klass
    return None


class Walker:
    """The call graph of the domain and the shortest path from each callable to each category of root sink.

    A fixed point: every function reachable from a candidate global is walked, whatever its depth
    (``numpy.savez_compressed`` reaches ``open`` five calls down).
    """

    def __init__(self) -> None:
        self.roots: dict[tuple[str, int, int], tuple[str, str, str]] = {}  # key -> (name, category, desc)
        self.objects: dict[tuple[str, int, int], Node] = {}
        self.edges: dict[tuple[str, int, int], list[tuple[tuple[str, int, int], int]]] = {}
        self._methods: dict[str, dict[str, list[Node]]] = {}

    # -- roots --------------------------------------------------------------------------------------
    def add_roots(self) -> None:
        for module_name, pattern, category, desc in ROOT_SINKS:
            module = sys.modules.get(module_name)
            if module is None:
                continue
            regex = re.compile(pattern)
            names = [n for n, _ in module_items(module) if regex.fullmatch(n)]
            names += [n for n in pattern.split("|") if "." in n]
            for name in sorted(set(names)):
                obj = resolve_dotted(module, name)
                node = to_node(obj) if obj is not MISSING else None
                if node is None:
                    continue
                key = node_key(node)
                self.objects[key] = node
                self.roots.setdefault(key, (f"{module_name}.{name}", category, desc))

    def add_native_roots(self, natives: dict[tuple[str, str], tuple[str, str, Any]]) -> None:
        """Native sinks listed *by name* in the reviewed table propagate to their callers; module-wide
        entries only classify the natives themselves (``posix.getcwd`` is not a process sink)."""
        named = native.expand()
        for (module_name, qualname), (category, reason, obj) in sorted(natives.items(), key=lambda item: item[0]):
            if category == native.SAFE or not self._named(named, module_name, qualname):
                continue
            node = to_node(obj)
            if node is None:
                continue
            key = node_key(node)
            self.objects[key] = node
            self.roots.setdefault(key, (f"{module_name}.{qualname}", category, f"native: {reason}"))

    @staticmethod
    def _named(table: dict[tuple[str, str], tuple[str, str]], module: str, qualname: str) -> bool:
        parts = qualname.split(".")
        return any((module, ".".join(parts[:i])) in table for i in range(len(parts), 0, -1))

    def receiver_methods(self, func: Any, name: str) -> list[Node]:
        module_name = getattr(func, "__module__", None)
        if not isinstance(module_name, str):
            return []
        index = self._methods.get(module_name)
        if index is None:
            index = {}
            module = sys.modules.get(module_name)
            for _attr, value in module_items(module) if module is not None else []:
                if not issubclass(type(value), type) or getattr(value, "__module__", None) != module_name:
                    continue
                try:
                    members = list(type.__dict__["__dict__"].__get__(value).items())
                except Exception:  # noqa: BLE001
                    continue
                for member_name, member in members:
                    node = to_node(member, value) if isinstance(member_name, str) and is_private(member_name) else None
                    if node is not None and node[0] == "f":
                        index.setdefault(member_name, []).append(node)
            self._methods[module_name] = index
        return index.get(name, [])

    # -- graph --------------------------------------------------------------------------------------
    def callees(self, node: Node) -> list[tuple[Node, int]]:
        """(callee, hop cost): a class costs nothing to enter (its constructor is the same call)."""
        kind, obj, ctx = node
        out: list[tuple[Node, int]] = []
        if kind == "c":
            for name in ("__init__", "__new__", "__post_init__"):
                value = class_lookup(obj, name)
                if value is MISSING:
                    continue
                callee = to_node(value, obj)
                if callee is not None and callee[0] == "f":
                    out.append((callee, 0))
            return out
        if kind != "f" or display(node) in STOP_FUNCTIONS:
            return out
        try:
            code = obj.__code__
            globals_ = obj.__globals__
            closure = obj.__closure__ or ()
        except Exception:  # noqa: BLE001
            return out
        cells = dict(zip(code.co_freevars, closure, strict=False))
        wrapped = instance_dict(obj).get("__wrapped__", MISSING)
        if wrapped is not MISSING:
            callee = to_node(wrapped)
            if callee is not None:
                out.append((callee, 1))
        for ref in code_refs(code):
            if ref.constant_call:
                continue
            target: Any = MISSING
            attrs = ref.attrs
            holder_ctx = None
            if ref.kind == "global":
                target = globals_.get(ref.name, MISSING) if type(globals_) is dict else MISSING
                if target is MISSING:
                    target = vars(builtins).get(ref.name, MISSING)
            elif ref.kind == "deref":
                try:
                    target = cells[ref.name].cell_contents
                except Exception:  # noqa: BLE001
                    target = MISSING
            elif ref.kind == "import":
                module = resolve_import(ref.module, ref.level, globals_)
                target = module if module is not None else MISSING
                if target is not MISSING and ref.name:
                    target = static_getattr(target, ref.name)
            elif ref.kind == "receiver":
                # ``t._evaluate(...)`` on a local the walk cannot type: a private method is an implementation
                # detail of its own module, so every class of the caller's module defining it is a callee
                # (typing._eval_type -> ForwardRef._evaluate -> eval).
                out.extend((callee, 1) for callee in self.receiver_methods(obj, ref.attrs[0]))
                continue
            elif ref.kind in ("self", "super") and issubclass(type(ctx), type):
                if ref.kind == "super":
                    owner = defining_class(obj, ctx)
                    target = class_lookup(ctx, ref.name, owner) if owner is not None else MISSING
                elif attrs:
                    target = class_lookup(ctx, attrs[0])
                    attrs = attrs[1:]
                holder_ctx = ctx
            if target is MISSING:
                continue
            for attr in attrs:
                parent = target
                target = static_getattr(target, attr)
                if target is MISSING:
                    break
                if issubclass(type(parent), type):
                    # Base.method(self, ...) from a subclass method keeps the subclass as self's class.
                    inside = issubclass(type(ctx), type) and parent in static_mro(ctx)
                    holder_ctx = ctx if inside else parent
                elif issubclass(type(parent), types.ModuleType):
                    holder_ctx = None
                else:
                    holder_ctx = type(parent)
            if target is MISSING:
                continue
            callee = to_node(target, holder_ctx)
            if callee is not None and not (ref.value_use and callee[0] == "c") and self.followed(callee):
                out.append((callee, 1))
        return out

    def followed(self, node: Node) -> bool:
        """Calls into packages outside the domain are not followed (sympy's parser would make half of torch
        a code sink); their gadgets are judged when a pickle names them. Roots are always kept."""
        if node_key(node) in self.roots or node[0] == "b":
            return True
        module = getattr(node[1], "__module__", None)
        return isinstance(module, str) and in_domain(module)

    def explore(self, entries: Iterable[Node]) -> None:
        """Collect edges for every node reachable from an entry: the whole call graph, no depth limit."""
        queue: deque[Node] = deque()
        for node in entries:
            key = node_key(node)
            self.objects.setdefault(key, node)
            queue.append(node)
        while queue:
            node = queue.popleft()
            key = node_key(node)
            if key in self.edges or key in self.roots:
                continue
            try:
                found = self.callees(node)
            except Exception as exc:  # noqa: BLE001
                log(f"could not walk {display(node)}: {brief(exc)}")
                found = []
            edges = []
            for callee, cost in found:
                callee_key = node_key(callee)
                self.objects.setdefault(callee_key, callee)
                edges.append((callee_key, cost))
                if callee_key not in self.edges:
                    queue.append(callee)
            self.edges[key] = edges

    def distances(self) -> dict[tuple[str, int, int], dict[str, tuple[int, tuple[str, int, int] | None]]]:
        """Per node and category: (hops to the nearest root of that category, next node on the path)."""
        reverse: dict[tuple[str, int, int], list[tuple[tuple[str, int, int], int]]] = {}
        for caller, edges in self.edges.items():
            for callee, cost in edges:
                reverse.setdefault(callee, []).append((caller, cost))
        for callers in reverse.values():
            callers.sort(key=lambda item: (display(self.objects[item[0]]), item[1]))
        result: dict[tuple[str, int, int], dict[str, tuple[int, tuple[str, int, int] | None]]] = {}
        for category in CATEGORIES:
            roots = sorted((k for k, v in self.roots.items() if v[1] == category), key=lambda k: self.roots[k][0])
            best: dict[tuple[str, int, int], tuple[int, tuple[str, int, int] | None]] = {k: (0, None) for k in roots}
            if category not in NON_PROPAGATING:
                queue: deque[tuple[str, int, int]] = deque(
                    k for k in roots if self.roots[k][0] not in NON_PROPAGATING_ROOTS
                )
                while queue:
                    key = queue.popleft()
                    dist = best[key][0]
                    for caller, cost in reverse.get(key, ()):
                        new = dist + cost
                        if caller in self.roots:
                            continue
                        old = best.get(caller)
                        if old is None or new < old[0]:
                            best[caller] = (new, key)
                            queue.appendleft(caller) if cost == 0 else queue.append(caller)
            for key, value in best.items():
                result.setdefault(key, {})[category] = value
        return result


def display(node: Node) -> str:
    kind, obj, _ctx = node
    try:
        if kind == "c":
            mapping = type.__dict__["__dict__"].__get__(obj)
            module = mapping.get("__module__")
            qualname = type.__dict__["__qualname__"].__get__(obj)
        else:
            module = getattr(obj, "__module__", None) if kind == "f" else instance_dict(obj).get("__module__")
            if kind == "b":
                module = object.__getattribute__(obj, "__module__") if hasattr(type(obj), "__module__") else None
            qualname = object.__getattribute__(obj, "__qualname__")
    except Exception:  # noqa: BLE001
        return repr(type(obj))
    return f"{module}.{qualname}" if module else str(qualname)


def class_members(cls: type) -> list[tuple[str, Any]]:
    """Methods a class has (own and inherited), by name, as static values."""
    out: dict[str, Any] = {}
    for klass in reversed(static_mro(cls)):
        if klass is object:
            continue
        try:
            items = list(type.__dict__["__dict__"].__get__(klass).items())
        except Exception:  # noqa: BLE001
            continue
        for name, value in items:
            if isinstance(name, str):
                out[name] = value
    return sorted(out.items())


def sink_entries(
    modules: dict[str, types.ModuleType],
) -> list[tuple[tuple[str, str], Node, type | None]]:
    """(key, node, owning class for method entries) for every candidate global in the domain."""
    out: list[tuple[tuple[str, str], Node, type | None]] = []
    for module_name, module in modules.items():
        if type(module) is not types.ModuleType:
            # A module whose class was swapped (torch's config modules are ConfigModule instances): its
            # methods are reachable as module attributes (``torch._dynamo.config.load_config``).
            for name, member in class_members(type(module)):
                method = to_node(member, type(module)) if not is_dunder(name) else None
                if method is not None and method[0] == "f":
                    out.append(((module_name, name), method, type(module)))
        for attr, value in module_items(module):
            if is_dunder(attr) or issubclass(type(value), types.ModuleType):
                continue
            node = to_node(value)
            if node is not None:
                out.append(((module_name, attr), node, None))
            if node is not None and node[0] == "c":
                owner: type | None = value
            elif node is None and in_domain(getattr(type(value), "__module__", "") or ""):
                owner = type(value)  # a module-level instance: its methods are reachable as attr.method
            else:
                owner = None
            if owner is None:
                continue
            for name, member in class_members(owner):
                if name in ("__init__", "__new__") and owner is value:
                    continue  # the class entry itself stands for its constructor
                method = to_node(member, owner)
                if method is None or method[0] not in ("f", "b"):
                    continue
                # Methods inherited from outside the domain (sympy under torch's symbolic classes) would
                # only repeat what that library does; the domain's own methods and the roots are listed.
                defined_in = getattr(method[1], "__module__", None) if method[0] == "f" else None
                if method[0] == "b" or (isinstance(defined_in, str) and in_domain(defined_in)):
                    out.append(((module_name, f"{attr}.{name}"), method, owner))
    return out


COUNTS: Counter[str] = Counter()
"""Callables classified per package by the last :func:`build_sinks` (every name a pickle can reach)."""


def package_of(module: str) -> str:
    top = module.split(".")[0]
    return top if top in ("numpy", "torch") else "stdlib"


def build_sinks(
    modules: dict[str, types.ModuleType], natives: dict[tuple[str, str], tuple[str, str, Any]]
) -> dict[tuple[str, str], tuple[str, str]]:
    """(module, qualname) -> (category, reason) for every sink of the domain, native ones included."""
    walker = Walker()
    walker.add_roots()
    walker.add_native_roots(natives)
    entries = sink_entries(modules)
    log(f"sink walk: {len(entries)} candidate globals, {len(walker.roots)} root sinks")
    COUNTS.clear()
    COUNTS.update(Counter(package_of(module) for (module, _qualname), _node, _owner in entries))
    walker.explore(node for _key, node, _owner in entries)
    log(f"sink walk: {len(walker.edges)} functions walked")
    distances = walker.distances()
    out: dict[tuple[str, str], tuple[str, str]] = {}
    for key, node, _owner in entries:
        per_category = distances.get(node_key(node))
        if not per_category:
            continue
        category = next(c for c in CATEGORIES if c in per_category)
        out[key] = (category, sink_reason(walker, distances, node_key(node), category))
    # Native sinks under their canonical name and under every name that reaches the same object
    # (types.FunctionType is builtins.function; torch.distributed.FileStore is torch._C._distributed_c10d's).
    by_object: dict[int, tuple[str, str]] = {}
    for (module_name, qualname), (category, reason, obj) in sorted(natives.items(), key=lambda item: item[0]):
        if category == native.SAFE:
            continue
        out.setdefault((module_name, qualname), (category, f"native sink {module_name}.{qualname}: {reason}"))
        by_object.setdefault(id(obj), (category, f"native sink {module_name}.{qualname}: {reason}"))
    for key, node, _owner in entries:
        found = by_object.get(id(node[1]))
        if found is not None and key not in out:
            out[key] = found
    return out


def sink_reason(walker: Walker, distances: dict[Any, dict[str, Any]], key: Any, category: str) -> str:
    root = walker.roots.get(key)
    if root is not None:
        return f"root sink {root[0]}: {root[2]}"
    path: list[str] = []
    current = distances[key][category][1]
    while current is not None and current not in walker.roots:
        name = display(walker.objects[current])
        if not path or path[-1] != name:
            path.append(name)
        current = distances[current][category][1]
    if current is None:
        return "reaches a sink"
    via = f" (via {' -> '.join(path)})" if path else ""
    return f"calls {walker.roots[current][0]}{via}"
