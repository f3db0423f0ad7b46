"""The analysed domain: every module of the standard library, numpy and torch, imported in a sandbox.

Imported only inside a child process (``sandbox.py``) whose working directory and home are a fresh temporary
directory and whose standard input is empty, so that a module with import-time side effects cannot touch the
developer's files. Modules that fail to import are recorded, not fatal. ``__main__`` modules are judged
statically first: one that runs code when imported is itself a sink (a pickle naming anything in it makes the
unpickler import it), and is not imported here.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import io
import pkgutil
import sys
import types
import warnings
from dataclasses import dataclass, field

PACKAGES = ("numpy", "torch")
# Top-level stdlib modules whose import itself has an effect; they are listed, not imported.
IMPORT_EFFECTS: dict[str, tuple[str, str]] = {
    "antigravity": ("process", "importing it opens a web browser (webbrowser.open)"),
}
# Printing on import is harmless: listed safe without importing.
PRINT_ONLY = frozenset({"this", "__hello__", "__phello__", "__hello_alias__", "__hello_only__", "__phello_alias__"})
# Of the stdlib's ``test`` package only the helpers are reachable by name in practice; its thousands of
# test modules run suites and are not imported.
STDLIB_TEST_ROOTS = ("test.support", "test.libregrtest")


@dataclass
class Domain:
    failures: dict[str, str] = field(default_factory=dict)
    """Module -> why it could not be imported (it stays unknown)."""
    effects: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Module -> (category, reason) for modules whose import runs code (unguarded ``__main__``)."""


def brief(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _is_main_guard(node: ast.stmt) -> bool:
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
        return False
    names = [node.test.left, *node.test.comparators]
    return any(isinstance(n, ast.Name) and n.id == "__name__" for n in names)


def _inert(node: ast.stmt) -> bool:
    """Statements that only define things: imports, defs, classes, docstrings, constant assignments."""
    if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return True
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
        return True
    if isinstance(node, (ast.Assign, ast.AnnAssign)):
        value = node.value
        return value is None or not any(isinstance(n, ast.Call) for n in ast.walk(value))
    return _is_main_guard(node)


def main_runs_on_import(name: str) -> bool | None:
    """Whether importing a ``__main__`` module runs code (None when its source cannot be read)."""
    try:
        spec = importlib.util.find_spec(name)
        source = spec.loader.get_source(name) if spec and spec.loader else None  # type: ignore[union-attr]
    except Exception:  # noqa: BLE001
        return None
    if not source:
        return None
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    return not all(_inert(stmt) for stmt in tree.body)


def _import(name: str, domain: Domain) -> types.ModuleType | None:
    if name.rsplit(".", 1)[-1] == "__main__":
        runs = main_runs_on_import(name)
        if runs is None or runs:
            package = name.rsplit(".", 1)[0]
            domain.effects[name] = ("code", f"importing it runs {package}'s command-line program")
            return None
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            return importlib.import_module(name)
    except BaseException as exc:  # any import failure (even SystemExit) is recorded, never fatal
        if isinstance(exc, KeyboardInterrupt):
            raise
        if isinstance(exc, SystemExit):  # the module ran a program when imported (idlelib.idle)
            domain.effects[name] = ("code", "importing it runs a command-line program")
        else:
            domain.failures[name] = brief(exc)
        return None


def _walk(package: types.ModuleType, domain: Domain) -> None:
    path = vars(package).get("__path__")
    if not path:
        return
    try:
        infos = sorted(pkgutil.iter_modules(list(path), package.__name__ + "."), key=lambda i: i.name)
    except Exception as exc:  # noqa: BLE001
        domain.failures[package.__name__] = f"cannot list submodules: {brief(exc)}"
        return
    for info in infos:
        if info.name in sys.modules:
            module = sys.modules[info.name]
        else:
            module = _import(info.name, domain)
        if module is not None and info.ispkg:
            _walk(module, domain)


def import_domain(packages: tuple[str, ...] = PACKAGES) -> tuple[Domain, dict[str, str | None]]:
    """Import the whole domain; returns what failed and the versions of the packages seen."""
    domain = Domain()
    # setuptools' startup hook hands ``import distutils`` its own copy; this describes the stdlib.
    sys.meta_path[:] = [f for f in sys.meta_path if getattr(type(f), "__module__", "") != "_distutils_hack"]
    sys.argv = [sys.argv[0], "--help"]  # a __main__ that slips through prints usage and exits
    for name, effect in IMPORT_EFFECTS.items():
        domain.effects[name] = effect
    versions: dict[str, str | None] = {}
    for name in packages:
        module = _import(name, domain)
        versions[name] = str(vars(module).get("__version__")) if module is not None else None
        if module is not None:
            _walk(module, domain)
    skip = set(IMPORT_EFFECTS) | PRINT_ONLY | {"__main__", "test"}
    for name in sorted(sys.stdlib_module_names - skip):
        module = sys.modules.get(name) or _import(name, domain)
        if module is not None:
            _walk(module, domain)
    for name in STDLIB_TEST_ROOTS:
        module = _import(name, domain)
        if module is not None:
            _walk(module, domain)
    return domain, versions


def in_domain(name: str) -> bool:
    top = name.split(".")[0]
    return top in sys.stdlib_module_names or top in PACKAGES


# --------------------------------------------------------------------------------------------------
# Native callables
# --------------------------------------------------------------------------------------------------

_NATIVE_FUNCTIONS = (types.BuiltinFunctionType,)
_NATIVE_MEMBERS = (
    types.BuiltinFunctionType,
    types.MethodDescriptorType,
    types.WrapperDescriptorType,
    types.ClassMethodDescriptorType,
)
# Slots every C type has; they construct, compare or describe, and are judged with the class itself.
_ROUTINE_DUNDERS = frozenset({"__init__", "__new__", "__call__", "__setstate__", "__reduce__", "__reduce_ex__"})


def is_native_class(value: object) -> bool:
    if not isinstance(value, type):
        return False
    flags = value.__flags__
    heap = bool(flags & (1 << 9))  # Py_TPFLAGS_HEAPTYPE: class statements (and C types made from a spec)
    immutable = bool(flags & (1 << 8))  # Py_TPFLAGS_IMMUTABLETYPE: C types made from a spec, never a class statement
    return not heap or immutable or type(value).__name__ == "pybind11_type"


def _defining_module(value: object, holder: str) -> str:
    module = getattr(value, "__module__", None)
    return module if isinstance(module, str) and in_domain(module) else holder


def native_callables() -> dict[tuple[str, str], str]:
    """Every native callable reachable by name in the imported domain: (module, qualname) -> where seen.

    ``module`` is the defining module (the callable's ``__module__``), so a re-export is listed once under
    its canonical name; pybind11 functions carry no usable ``__qualname__``, so their name is the
    attribute's.
    """
    out: dict[tuple[str, str], str] = {}
    seen: set[int] = set()
    # Extension modules first: a pybind11 function is listed under the extension that defines it, not under
    # the Python modules that re-export it (torch.autograd re-exports torch._C functions).
    modules = [(k, m) for k, m in sys.modules.items() if isinstance(m, types.ModuleType) and in_domain(k)]
    modules.sort(key=lambda item: (str(vars(item[1]).get("__file__") or "").endswith(".py"), item[0]))
    for holder, module in modules:
        try:
            items = sorted((k, v) for k, v in vars(module).items() if isinstance(k, str))
        except Exception:  # noqa: BLE001
            continue
        for attr, value in items:
            if id(value) in seen:
                continue
            if isinstance(value, _NATIVE_FUNCTIONS):
                owner = getattr(value, "__self__", None)
                if isinstance(owner, types.ModuleType):
                    # A C module's function: canonical under that module (os.system is posix.system).
                    name = owner.__name__ if isinstance(owner.__name__, str) else holder
                    if not in_domain(name):
                        continue
                    out.setdefault((name, attr), f"{holder}.{attr}")
                elif owner is None or type(owner).__name__.startswith("pybind11_detail_function_record"):
                    # pybind11 and static functions carry no usable defining module: the first holder in
                    # extension-first order stands for it.
                    seen.add(id(value))
                    out.setdefault((holder, attr), f"{holder}.{attr}")
                # otherwise a bound method of some object: judged with that object's class
            elif is_native_class(value):
                seen.add(id(value))
                defining = _defining_module(value, holder)
                if defining != getattr(value, "__module__", None):
                    continue  # a C type of a package outside the domain, re-exported here
                qual = type.__dict__["__qualname__"].__get__(value)
                out.setdefault((defining, qual), f"{holder}.{attr}")
                for name, member in sorted(type.__dict__["__dict__"].__get__(value).items()):
                    if name.startswith("__") and name.endswith("__") and name not in _ROUTINE_DUNDERS:
                        continue
                    if name in _ROUTINE_DUNDERS:
                        continue  # constructing the class is judged as the class
                    if isinstance(member, (staticmethod, classmethod)):
                        member = member.__func__
                    if isinstance(member, _NATIVE_MEMBERS) or type(member).__name__ == "instancemethod":
                        out.setdefault((defining, f"{qual}.{name}"), f"{holder}.{attr}.{name}")
    return out
