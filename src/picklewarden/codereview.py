"""Review of Python-syntax source that a loader compiles and runs: TorchScript ``code/`` files and the
code a pickled ``torch.fx.GraphModule`` carries.

The source is parsed with :mod:`ast` (TorchScript source is Python syntax) and never compiled to bytecode or
run. Parsing, not patterns: a parenthesised callee ``(torch.save)(...)``, an alias ``f = torch.save``, an
``import ... as``, ``getattr(torch, "save")`` or a reference passed along without a call all resolve to the
same dotted name. Two reviews share that resolution:

- :func:`dangerous` lists every reference to an operation that reads or writes files, starts processes,
  opens sockets, loads serialized data, runs code or native operators (TorchScript: a deny list, since
  TorchScript itself cannot import anything).
- :func:`fx_review` additionally accepts only what ``torch.fx`` code generation emits (a ``forward`` over
  submodules, torch ops and a few builtins, imports of torch and math): FX source is plain Python run with
  ``exec``, so anything else is a finding.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass

PARSE_FILENAME = "<picklewarden: ast only>"
"""The filename every parse uses: ``ast.parse`` raises a ``compile`` audit event, and an audit hook can tell
this AST-only parse (nothing is ever compiled to bytecode or run) from a real compilation by it."""

_MAX_ALIAS_DEPTH = 16
_MAX_TEXT = 160


@dataclass(frozen=True)
class Issue:
    line: int
    name: str
    """The dotted name (or construct) found."""
    kind: str
    """'file', 'process', 'network', 'deserialize', 'code', 'native', 'distributed' or 'unexpected'."""
    why: str
    text: str
    """The source line, stripped and shortened."""
    function: str = ""
    """The innermost ``def`` the line sits in ('' at class or module level)."""


# Dotted prefixes (component-wise) and what reaching them does. Data, each with its reason.
_DENY: dict[str, tuple[str, str]] = {
    **dict.fromkeys(
        ("torch.save", "torch.ops.aten.save", "torch.serialization.save", "numpy.save", "numpy.savez", "numpy.savetxt"),
        ("file", "writes a file"),
    ),
    **dict.fromkeys(
        ("torch.from_file", "torch.ops.aten.from_file", "numpy.fromfile", "numpy.memmap", "numpy.loadtxt"),
        ("file", "maps, creates or reads a file"),
    ),
    **dict.fromkeys(
        ("open", "builtins.open", "io", "_io", "codecs.open", "shutil", "pathlib", "tempfile", "fileinput", "glob"),
        ("file", "opens, reads or writes files"),
    ),
    **dict.fromkeys(
        ("os", "posix", "nt", "subprocess", "pty", "_posixsubprocess", "multiprocessing", "signal", "webbrowser"),
        ("process", "starts processes or acts on the operating system"),
    ),
    **dict.fromkeys(("ctypes", "_ctypes", "cffi", "sys"), ("native", "reaches native code or the interpreter")),
    **dict.fromkeys(
        ("socket", "_socket", "ssl", "http", "urllib", "requests", "aiohttp", "ftplib", "smtplib", "asyncio"),
        ("network", "opens network connections"),
    ),
    **dict.fromkeys(
        (
            "pickle",
            "_pickle",
            "cPickle",
            "marshal",
            "dill",
            "joblib",
            "cloudpickle",
            "shelve",
            "yaml",
            "torch.load",
            "torch.jit.load",
            "torch.serialization",
            "torch.hub",
            "torch.package",
            "numpy.load",
        ),
        ("deserialize", "loads serialized data"),
    ),
    **dict.fromkeys(
        (
            "eval",
            "exec",
            "compile",
            "__import__",
            "breakpoint",
            "globals",
            "locals",
            "vars",
            "setattr",
            "delattr",
            "input",
            "__builtins__",
            "importlib",
            "runpy",
            "code",
            "codeop",
            "types",
            "inspect",
            "pydoc",
            "pkgutil",
        ),
        ("code", "runs or imports code by name"),
    ),
}
_CORE_NAMESPACES = frozenset(
    "aten prim prims quantized _quantized mkldnn mkldnn_prepacked onednn sparse quantization mkl _native "
    "rngprims inductor_prims profiler static_runtime debugprims _test".split()
)
_NETWORK_NAMESPACES = frozenset("c10d _c10d_functional _c10d_functional_autograd symm_mem _dtensor".split())

# What torch.fx code generation emits (torch/fx/graph.py: the custom builtins and the import statements).
_FX_GLOBALS = frozenset({"torch", "math", "operator", "inf", "nan", "device", "NoneType", "fx_pytree", "pytree"})
_FX_IMPORT_ROOTS = frozenset({"torch", "math", "operator", "_operator"})
_SAFE_BUILTINS = frozenset(
    "getattr len range slice tuple list dict set frozenset int float bool complex str bytes type isinstance "
    "issubclass min max abs sum any all zip enumerate iter next sorted reversed divmod round pow hash id "
    "repr print callable None True False Ellipsis NotImplemented".split()
)
_FX_STATEMENTS = (
    ast.Module,
    ast.FunctionDef,
    ast.Assign,
    ast.AnnAssign,
    ast.AugAssign,
    ast.Return,
    ast.Expr,
    ast.Pass,
    ast.Delete,
    ast.Import,
    ast.ImportFrom,
    ast.With,
)


def parse(source: str) -> ast.Module | None:
    """The AST of ``source``, or None when Python's parser rejects it (or it nests too deeply)."""
    try:
        return ast.parse(source, filename=PARSE_FILENAME)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def _deny(name: str) -> tuple[str, str] | None:
    parts = name.split(".")
    if parts[0] == "builtins" and len(parts) > 1:
        parts = parts[1:]  # builtins.open is open
    if parts[0] == "ops":
        parts = ["torch", *parts]  # TorchScript's serialized code writes ops.aten.save for torch.ops.aten.save
    for end in range(len(parts), 0, -1):
        hit = _DENY.get(".".join(parts[:end]))
        if hit is not None:
            return hit
    if len(parts) >= 4 and parts[:2] == ["torch", "ops"]:
        namespace = parts[2]
        if namespace in _NETWORK_NAMESPACES:
            return ("distributed", "a distributed operator: it exchanges data with other processes")
        if namespace not in _CORE_NAMESPACES:
            return ("native", f"operator namespace {namespace!r} is not part of torch: native code loaded elsewhere")
    return None


class _Names:
    """Dotted-name resolution through the module's aliases (assignments and imports)."""

    def __init__(self, tree: ast.Module) -> None:
        self.bound = _bound_names(tree)
        self.aliases: dict[str, ast.expr | str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        self.aliases[alias.asname] = alias.name
                    else:
                        root = alias.name.split(".")[0]
                        self.aliases[root] = root
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for alias in node.names:
                    self.aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
            elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Name) and isinstance(node.value, (ast.Name, ast.Attribute, ast.Call)):
                        self.aliases.setdefault(target.id, node.value)

    def dotted(self, node: ast.expr, depth: int = 0) -> str | None:
        if depth > _MAX_ALIAS_DEPTH:
            return None
        if isinstance(node, ast.Name):
            alias = self.aliases.get(node.id)
            if isinstance(alias, str):
                return alias
            if alias is not None:
                return self.dotted(alias, depth + 1)
            # A parameter or a local holding a computed value is opaque; anything else is a global.
            return None if node.id in self.bound else node.id
        if isinstance(node, ast.Attribute):
            base = self.dotted(node.value, depth + 1)
            return None if base is None else f"{base}.{node.attr}"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr":
            args = node.args
            if len(args) >= 2 and isinstance(args[1], ast.Constant) and isinstance(args[1].value, str):
                base = self.dotted(args[0], depth + 1)
                return None if base is None else f"{base}.{args[1].value}"
        return None


def _line(lines: list[str], number: int) -> str:
    text = lines[number - 1].strip() if 0 < number <= len(lines) else ""
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 3] + "..."


def _references(tree: ast.Module, names: _Names) -> Iterator[tuple[ast.expr, str]]:
    """Every maximal name/attribute chain (and constant ``getattr``) with its resolved dotted name."""
    inner: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            inner.add(id(node.value))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr":
            inner.update(id(a) for a in node.args[:1])
            inner.add(id(node.func))
    for node in ast.walk(tree):
        if id(node) in inner or not isinstance(node, (ast.Name, ast.Attribute, ast.Call)):
            continue
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            continue
        name = names.dotted(node)
        if name is not None:
            yield node, name


def dangerous(source: str, tree: ast.Module | None = None) -> list[Issue] | None:
    """Every reference to a file, process, network, deserialization, code or native operation, or None when
    the source does not parse."""
    tree = tree if tree is not None else parse(source)
    if tree is None:
        return None
    lines = source.splitlines()
    names = _Names(tree)
    functions = _functions(tree)
    found: list[Issue] = []
    for node, name in _references(tree, names):
        hit = _deny(name)
        if hit is not None:
            line = node.lineno
            found.append(Issue(line, name, hit[0], hit[1], _line(lines, line), functions.get(line, "")))
    for statement in ast.walk(tree):
        if isinstance(statement, (ast.Import, ast.ImportFrom)):
            module = (statement.module or "") if isinstance(statement, ast.ImportFrom) else ""
            line = statement.lineno
            for alias in statement.names:
                full = f"{module}.{alias.name}" if module else alias.name
                hit = _deny(full)
                if hit is not None:
                    found.append(Issue(line, full, hit[0], f"imported: {hit[1]}", _line(lines, line)))
    return sorted(set(found), key=lambda i: (i.line, i.name))


def fx_review(source: str) -> list[Issue] | None:
    """What in FX source is not what ``torch.fx`` code generation writes (plus every :func:`dangerous`
    reference), or None when it does not parse."""
    tree = parse(source)
    if tree is None:
        return None
    found = dangerous(source, tree) or []
    lines = source.splitlines()
    local = _bound_names(tree)

    def odd(node: ast.AST, name: str, why: str) -> None:
        line = getattr(node, "lineno", 0)
        found.append(Issue(line, name, "unexpected", why, _line(lines, line)))

    for node in ast.walk(tree):
        if isinstance(node, ast.stmt) and not isinstance(node, _FX_STATEMENTS):
            odd(node, type(node).__name__, "a statement torch.fx code generation never writes")
        elif isinstance(node, ast.Lambda):
            odd(node, "lambda", "torch.fx code generation never writes a lambda")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] not in _FX_IMPORT_ROOTS:
                    odd(node, alias.name, "imports a module other than torch or math")
        elif isinstance(node, ast.ImportFrom):
            if node.module == "builtins" and not node.level:
                # FX writes ``from builtins import getattr as getattr`` when a graph calls a builtin.
                for alias in node.names:
                    if alias.name not in _SAFE_BUILTINS:
                        odd(node, f"builtins.{alias.name}", "imports a builtin torch.fx graphs do not call")
            elif node.level or (node.module or "").split(".")[0] not in _FX_IMPORT_ROOTS:
                odd(node, node.module or ".", "imports from a module other than torch or math")
        elif isinstance(node, ast.Attribute) and node.attr.startswith("__") and node.attr.endswith("__"):
            odd(node, node.attr, "walks a dunder attribute")
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            if node.id not in local and node.id not in _FX_GLOBALS and node.id not in _SAFE_BUILTINS:
                odd(node, node.id, "a global name torch.fx code generation does not use")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr":
            # FX writes getattr(self, "name") for submodules with odd names; never a computed attribute.
            if len(node.args) != 2 or not isinstance(node.args[1], ast.Constant):
                odd(node, "getattr", "a computed attribute name")
    return sorted(set(found), key=lambda i: (i.line, i.name))


def _functions(tree: ast.Module) -> dict[int, str]:
    """line -> name of the innermost ``def`` containing it."""
    spans = sorted(
        (node.lineno, node.end_lineno or node.lineno, node.name)
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    )
    where: dict[int, str] = {}
    for first, last, name in spans:  # outer defs first: inner ones overwrite their lines
        for line in range(first, last + 1):
            where[line] = name
    return where


def _bound_names(tree: ast.Module) -> set[str]:
    """Names the source binds itself (locals, parameters, functions, import aliases)."""
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            bound.add(node.id)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.FunctionDef):
            bound.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                bound.add((alias.asname or alias.name).split(".")[0])
    return bound
