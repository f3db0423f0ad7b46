"""joblib's pre-0.10 array wrappers, which make ``joblib.load`` read a second file.

Old ``joblib.dump`` wrote each array to a file beside the pickle and pickled an ``NDArrayWrapper`` (or the
zlib-compressed ``ZNDArrayWrapper``) whose state names that file. When ``joblib.load`` meets the wrapper's
BUILD it joins the name to the pickle's directory and reads it with ``numpy.load(..., allow_pickle=True)``
(or its own zlib reader): whatever that file holds is unpickled. The file is not in the one scanned, so
the wrapper is judged by the name: a plain sibling file name is a load of something unseen (suspicious); a
name with a directory part or an absolute path reads anywhere on the victim's disk (malicious).
"""

from __future__ import annotations

import ntpath
import posixpath

from picklewarden._typing import TYPE_CHECKING, NamedTuple
from picklewarden.pickle.machine import node_of
from picklewarden.pickle.program import CallResult, Global, Mutation, Op, Program

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from picklewarden.knowledge.resolve import Resolved

_MODULES = ("joblib.numpy_pickle", "joblib.numpy_pickle_compat", "sklearn.externals.joblib.numpy_pickle")
WRAPPERS: frozenset[tuple[str, str]] = frozenset(
    (module, name) for module in _MODULES for name in ("NDArrayWrapper", "ZNDArrayWrapper")
)
"""Canonical names of the old wrappers, wherever joblib (or scikit-learn's vendored copy) defined them."""
ARRAY_WRAPPER = "NumpyArrayWrapper"
"""The class name joblib's unpickler checks for with isinstance (joblib's own or scikit-learn's vendored copy)."""


def wants_joblib_view(programs: Sequence[Program]) -> bool:
    """The stream imports joblib's array wrapper, so joblib.load reads raw bytes in the middle of it (then
    ``containers.joblib_files`` follows the stream as joblib does; the scanner imports it only then)."""
    return any(g.name.rsplit(".", 1)[-1] == ARRAY_WRAPPER for p in programs for g in p.globals)


_NEW = frozenset({("copyreg", "_reconstructor"), ("copyreg", "__newobj__"), ("copyreg", "__newobj_ex__")})


class SiblingLoad(NamedTuple):
    """One old-format array wrapper and the file ``joblib.load`` would read for it."""

    wrapper: Resolved
    offset: int | None
    filename: str | None
    """The literal file name from the wrapper's state; None when it is missing or not a string."""

    @property
    def plain_sibling(self) -> bool:
        """The name stays in the pickle's directory: no separator, drive, parent or absolute part."""
        name = self.filename
        if not name or name in (".", "..") or "\x00" in name:
            return False
        return posixpath.basename(name) == name and ntpath.basename(name) == name and not ntpath.splitdrive(name)[0]


def sibling_loads(program: Program, resolved: Callable[[Global], Resolved]) -> Iterator[SiblingLoad]:
    """Every BUILD of an old joblib array wrapper instance in ``program`` (``resolved`` names a global)."""
    wrappers: dict[int, Resolved] = {}
    for stmt in program.statements:
        if isinstance(stmt, Global):
            target = resolved(stmt)
            if (target.module, target.qualname) in WRAPPERS:
                wrappers[stmt.id] = target
        elif isinstance(stmt, CallResult):
            cls = _instantiated(stmt, resolved)
            if cls is not None and cls.id in wrappers:
                wrappers[stmt.id] = wrappers[cls.id]
        elif isinstance(stmt, Mutation) and stmt.op is Op.BUILD and stmt.target.id in wrappers:
            state = stmt.value[0] if isinstance(stmt.value, tuple) and stmt.value else stmt.value
            name = state.get("filename") if isinstance(state, dict) else None
            yield SiblingLoad(wrappers[stmt.target.id], stmt.offset, name if isinstance(name, str) else None)


def _instantiated(call: CallResult, resolved: Callable[[Global], Resolved]) -> Global | None:
    """The class a call instantiates: its callee (NEWOBJ, a class called), or copyreg's helpers' class."""
    callee = call.callee
    if isinstance(callee, Global):
        target = resolved(callee)
        if (target.module, target.qualname) not in _NEW:
            return callee
        first = node_of(call.args[0]) if call.args else None
        return first if isinstance(first, Global) else None
    return None
