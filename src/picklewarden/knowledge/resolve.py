"""Canonical names for globals, and what is known about them.

The unpickler imports ``module`` and walks ``name`` attribute by attribute. An attribute that is itself a
module (``shutil.os``, ``torch.serialization.os``) is a *springboard*: the walk continues in that module, so
``("torch", "serialization.os.system")`` is ``os.system``. Springboards come from the reviewed generated data;
for modules it does not cover, a component that names a dangerous top-level module (``os``, ``subprocess``,
``builtins``...) is treated as that module, since that is what such an attribute almost always is.
"""

from __future__ import annotations

from dataclasses import dataclass

from picklewarden.knowledge.tables import (
    DANGEROUS_MODULES,
    DANGEROUS_NAMES,
    INTROSPECTION_ATTRIBUTES,
    SAFE,
    Category,
    Knowledge,
    ecosystem,
    generated,
)
from picklewarden.pickle.names import remap


@dataclass(frozen=True, slots=True)
class Resolved:
    """A global as the unpickler would really reach it."""

    module: str
    qualname: str
    written: str
    """``module.name`` as written in the stream (differs after remapping or springboards)."""
    remapped: bool
    hops: tuple[str, ...] = ()
    """Springboard modules the dotted path went through."""
    introspection: str | None = None
    """A component such as ``__globals__`` that walks to arbitrary objects."""

    @property
    def symbol(self) -> str:
        return f"{self.module}.{self.qualname}"

    @property
    def display(self) -> str:
        note = []
        if self.remapped:
            note.append("Python-2 name remapped")
        if self.hops:
            note.append("through " + " -> ".join(self.hops))
        suffix = f" (written {self.written}: {', '.join(note)})" if note else ""
        return self.symbol + suffix


def _is_top_level_danger(name: str) -> bool:
    return name in DANGEROUS_MODULES or name == "builtins"


def resolve(module: str, name: str, protocol: int) -> Resolved:
    written = f"{module}.{name}"
    module, name, remapped = remap(module, name, protocol)
    parts = name.split(".")
    springboards = generated().springboards if len(parts) > 1 else {}
    hops: list[str] = []
    path: list[str] = []
    introspection = None
    for part in parts[:-1]:
        if part in INTROSPECTION_ATTRIBUTES and introspection is None:
            introspection = part
        # Springboard data covers module attributes; a component naming a dangerous module is taken to be
        # that module wherever it appears (``anything.os.system`` reaches os.system if it resolves at all).
        target = None if path else springboards.get(module, {}).get(part)
        if target is None and _is_top_level_danger(part):
            target = part
        if target is not None:
            module = target
            hops.append(target)
            path = []
            continue
        path.append(part)
    if parts[-1] in INTROSPECTION_ATTRIBUTES and introspection is None:
        introspection = parts[-1]
    path.append(parts[-1])
    return Resolved(module, ".".join(path), written, remapped, tuple(hops), introspection)


def _ancestors(module: str) -> list[str]:
    pieces = module.split(".")
    return [".".join(pieces[:i]) for i in range(len(pieces), 0, -1)]


def classify(resolved: Resolved) -> Knowledge | None:
    """What is known about a global, or None when it is unknown."""
    key = (resolved.module, resolved.qualname)
    if resolved.introspection is not None:
        return Knowledge(Category.INDIRECTION, f"walks through {resolved.introspection} to reach other objects")
    reason = SAFE.get(key)
    data = generated()
    eco = ecosystem()
    if reason is None:
        reason = data.safe.get(key)
    if reason is None and key not in data.sinks:
        reason = eco.safe.get(key)
    if reason is not None:
        return Knowledge(Category.SAFE, reason)
    qual = resolved.qualname.split(".")
    for i in range(len(qual), 0, -1):
        prefix = (resolved.module, ".".join(qual[:i]))
        known = DANGEROUS_NAMES.get(prefix) or data.sinks.get(prefix) or eco.sinks.get(prefix)
        if known is not None:
            return known
    for ancestor in _ancestors(resolved.module):
        known = DANGEROUS_MODULES.get(ancestor)
        if known is not None:
            return known
    return None
