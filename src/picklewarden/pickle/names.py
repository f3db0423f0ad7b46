"""How the unpickler turns the names written in a stream into the module and attribute path it imports."""

from __future__ import annotations

import _compat_pickle


def remap(module: str, name: str, protocol: int) -> tuple[str, str, bool]:
    """Apply CPython's Python-2 name remapping (``fix_imports``, protocols below 3).

    Returns ``(module, name, remapped)``: the names the unpickler actually imports. torch, ``pickle.load``
    and numpy all leave ``fix_imports`` on, so a file that says ``__builtin__.eval`` imports ``builtins.eval``.
    """
    if protocol >= 3:
        return module, name, False
    mapped = _compat_pickle.NAME_MAPPING.get((module, name))
    if mapped is not None:
        return mapped[0], mapped[1], True
    target = _compat_pickle.IMPORT_MAPPING.get(module)
    if target is not None:
        return target, name, True
    return module, name, False
