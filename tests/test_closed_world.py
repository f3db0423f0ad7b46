"""The closed world of native callables: every builtin function, method descriptor and C/pybind11 class that
the stdlib, numpy and torch define is listed in the reviewed table ``scripts/knowledge_gen/native.py``, as
safe or as a sink. Enumerated from the installed packages, imported in the generator's sandbox (a child
process in a temporary directory), so a new release that adds a native callable fails here until reviewed.
"""

from __future__ import annotations

import sys
from functools import cache
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
sys.path.insert(0, str(SCRIPTS))

from knowledge_gen import native, sandbox  # noqa: E402


@cache
def enumerated() -> dict[str, Any]:
    found = sandbox.run("natives", timeout=900)
    assert isinstance(found, dict)
    return found


def test_numpy_and_torch_were_enumerated() -> None:
    versions = enumerated()["versions"]
    assert versions["numpy"] and versions["torch"], versions
    modules = {m.split(".")[0] for m, _q, _w in enumerated()["natives"]}
    assert {"numpy", "torch", "builtins", "posix", "_io", "_socket"} <= modules


def test_every_native_callable_is_listed_safe_or_sink() -> None:
    table = native.expand()
    unlisted = [f"{m}.{q} (seen as {w})" for m, q, w in enumerated()["natives"] if native.lookup(m, q, table) is None]
    assert not unlisted, f"{len(unlisted)} native callables neither safe nor a sink:\n" + "\n".join(unlisted[:50])


def test_table_entries_are_well_formed() -> None:
    categories = {native.SAFE, *native.SINK_CATEGORIES}
    for entry in native.NATIVE:
        assert entry.category in categories, entry
        assert entry.reason.strip(), entry
        assert entry.module.strip(), entry


def test_native_sinks_named_by_the_issue() -> None:
    """The native sinks picklewarden once missed are listed with the right category."""
    table = native.expand()
    expected = {
        ("torch._C", "_VariableFunctionsClass.from_file"): "file",
        ("torch._C", "StorageBase.from_file"): "file",
        ("torch", "from_file"): "file",
        ("numpy", "ndarray.tofile"): "file",
        ("numpy._core._multiarray_umath", "fromfile"): "file",
        ("_socket", "socket"): "network",
        ("posix", "system"): "process",
        ("_io", "FileIO"): "file",
        ("torch._C", "import_ir_module"): "code",
        ("torch._C._distributed_c10d", "FileStore"): "file",
    }
    got = {key: (native.lookup(*key, table) or ("unlisted", ""))[0] for key in expected}
    assert got == expected


def test_enumerated_sinks_exist() -> None:
    """Every sink named by exact name in the table exists in the installed packages (no stale entries for
    the ones the issue names), and is found by the enumeration under that name."""
    names = {(m, q) for m, q, _w in enumerated()["natives"]}
    for key in [("torch._C", "StorageBase.from_file"), ("numpy", "ndarray.tofile"), ("torch._C", "import_ir_module")]:
        assert key in names, key
