"""Canonical names for globals, and what is known about them.

The unpickler imports ``module`` and walks ``name`` attribute by attribute. An attribute that is itself a
module (``shutil.os``, ``torch.serialization.os``) is a *springboard*: the walk continues in that module, so
``("torch", "serialization.os.system")`` is ``os.system``. Springboards come from the reviewed generated data;
for modules it does not cover, a component that names a dangerous top-level module (``os``, ``subprocess``,
``builtins``...) is treated as that module, since that is what such an attribute almost always is.
"""

from __future__ import annotations

from functools import lru_cache

from picklewarden._typing import NamedTuple
from picklewarden.knowledge.tables import (
    DANGEROUS_MODULES,
    DANGEROUS_NAMES,
    INTROSPECTION_ATTRIBUTES,
    MODULE_STATE,
    SAFE,
    Category,
    Generated,
    Knowledge,
    ecosystem,
    generated,
)
from picklewarden.pickle.names import remap


class Resolved(NamedTuple):
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


_MEMO = 8192
"""Names remembered by :func:`resolve` and :func:`classify`: pure functions of the name and the static
tables, and a directory of checkpoints asks about the same few names in every file."""
_MEMO_NAME = 256
"""Longer names are not remembered: a hostile pickle's megabyte names must not outlive its scan."""


def resolve(module: str, name: str, protocol: int) -> Resolved:
    """Where the unpickler really reaches ``module``/``name`` (remappings, springboards, dangerous hops)."""
    if len(module) + len(name) <= _MEMO_NAME:
        return _remembered_resolve(module, name, protocol)
    return _resolve(module, name, protocol)


def classify(resolved: Resolved) -> Knowledge | None:
    """What is known about a global, or None when it is unknown."""
    if len(resolved.written) <= _MEMO_NAME:
        return _remembered_classify(resolved)
    return _classify(resolved)


def _resolve(module: str, name: str, protocol: int) -> Resolved:
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


def _classify(resolved: Resolved) -> Knowledge | None:
    key = (resolved.module, resolved.qualname)
    if resolved.introspection is not None:
        return Knowledge(Category.INDIRECTION, f"walks through {resolved.introspection} to reach other objects")
    data = generated()
    for ancestor in _ancestors(resolved.module):
        effect = data.effects.get(ancestor)
        if effect is not None:
            return effect
    reason = SAFE.get(key)
    if reason is None:
        reason = data.safe.get(key)
    if reason is None and data.sinks.get(key) is None:
        reason = ecosystem().safe.get(key)  # parsed only when the reviewed tables do not know the name
    if reason is not None:
        return Knowledge(Category.SAFE, reason)
    qual = resolved.qualname.split(".")
    for i in range(len(qual), 0, -1):
        prefix = (resolved.module, ".".join(qual[:i]))
        known = DANGEROUS_NAMES.get(prefix) or data.sinks.get(prefix) or ecosystem().sinks.get(prefix)
        if known is not None:
            return known
    for ancestor in _ancestors(resolved.module):
        known = DANGEROUS_MODULES.get(ancestor)
        if known is not None:
            return known
    return _closed_world(resolved, data)


# Methods that change the object they are called on: reached through a module-level object
# (``copyreg.dispatch_table.update``, ``torch.serialization._package_registry.append``) they change state that
# later code in the loading process relies on.
_MUTATORS = frozenset(
    "append extend insert update setdefault pop popitem clear remove add discard register "
    "__setitem__ __delitem__ __setattr__ __delattr__ __iadd__ __ior__".split()
)


def _state_like(module: str, head: str) -> bool:
    """Whether ``module.head`` names module state (a registry, a table) rather than a class, whose mutating
    methods (``ChainMap.__setitem__``, ``torch.add`` as ``_VariableFunctionsClass.add``) only act on the
    object a pickle hands them. The generated data does not record which names are classes, so the reviewed
    registries are listed, and otherwise Python's naming convention decides: classes are capitalised."""
    if (module, head) in MODULE_STATE:
        return True
    return head.rpartition(".")[2].lstrip("_")[:1].islower()


def _closed_world(resolved: Resolved, data: Generated) -> Knowledge | None:
    """Inside the analysed packages (``closed`` roots: the stdlib, ``test.support``, numpy, torch) every callable
    was walked: one that is no sink reaches none.

    Modules that failed to import when the data was generated, or that the analysed versions do not have, stay
    unknown, as does everything outside.
    """
    ancestors = _ancestors(resolved.module)
    roots = [a for a in ancestors if a in data.closed]
    if not roots or resolved.module not in data.modules or any(a in data.failures for a in ancestors):
        return None
    top = roots[-1]
    head, _, last = resolved.qualname.rpartition(".")
    if head and last in _MUTATORS and _state_like(resolved.module, head):
        return Knowledge(
            Category.TAMPER,
            f"mutates {resolved.module}.{head} in place: module state that later code in the loading process uses",
        )
    return Knowledge(Category.SAFE, f"reaches no sink: every module of {top} was walked ({data.versions})")


_remembered_resolve = lru_cache(maxsize=_MEMO)(_resolve)
_remembered_classify = lru_cache(maxsize=_MEMO)(_classify)
