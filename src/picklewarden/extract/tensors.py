"""Find the tensors in a program by interpreting its tensor rebuilds symbolically.

The machine has already run the pickle with inert stand-ins (:mod:`picklewarden.pickle.machine`), so the
program holds every call the real unpickler would make, with its arguments. Here a small, closed table of
callables is *understood* instead of called: torch's tensor rebuild functions become :class:`TensorRef`
(which storage, dtype, offset, size, stride), dict-like containers are rebuilt from their recorded
``SETITEM``s, and objects keep the state ``BUILD`` gave them. Every other call stays opaque and is reported
as skipped. Nothing from the file is executed, imported, or even looked up: names are matched as data,
after the scanner's own canonical resolution.

Naming follows what users already get from torch: a flat state dict keeps its keys; nested containers are
joined with ``.`` (``{"model": {"0.weight": w}}`` gives ``model.0.weight``, list items their index); a
full model (an object whose state has ``_parameters``, ``_buffers`` and ``_modules``, i.e. an
``nn.Module``) yields exactly the names ``state_dict()`` would: parameters, then persistent buffers, then
submodules, ``None`` entries left out.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from picklewarden.errors import LimitExceeded
from picklewarden.extract.interpret import Interpreter, _Instance, _Mapping, _only_state_dict_versions, _Opaque
from picklewarden.extract.refs import (
    Extraction,
    Flatten,
    Skipped,
    StorageTable,
    TensorRef,
    show,
)
from picklewarden.limits import Limits
from picklewarden.pickle.machine import node_of
from picklewarden.pickle.program import Program

# -- walking the result -------------------------------------------------------------------------------------


def _plain(value: Any, depth: int, seen: set[int]) -> bool:
    """JSON-representable data built by the unpickler itself (no stand-ins anywhere inside)."""
    kind = type(value)
    if value is None or kind in (bool, int, float, str):
        return True
    if depth <= 0 or id(value) in seen:
        return False
    if kind in (list, tuple):
        seen.add(id(value))
        return all(_plain(item, depth - 1, seen) for item in value)
    if kind is dict:
        seen.add(id(value))
        return all(type(k) is str and _plain(v, depth - 1, seen) for k, v in value.items())
    return False


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _describe(value: Any) -> str:
    return f"a {type(value).__name__} value (not plain data)"


class _Walker:
    def __init__(self, interpreter: Interpreter, limits: Limits) -> None:
        self.interpreter = interpreter
        self.max_depth = limits.max_render_depth
        self.budget = limits.max_program_statements
        self.visits = 0
        self.tensors: dict[str, TensorRef] = {}
        self.metadata: dict[str, str] = {}
        self.skipped: list[Skipped] = []
        self.nested = False
        self.module_root = False
        # Containers being walked, to stop at cycles: stand-ins by node id, the unpickler's own by id().
        self._active_nodes: set[int] = set()
        self._active_objects: set[int] = set()

    def _skip(self, path: tuple[str, ...], reason: str) -> None:
        self.skipped.append(Skipped(".".join(path) or "<root>", reason))

    def _tick(self) -> None:
        self.visits += 1
        if self.visits > self.budget:
            # Shared references make a DAG that a walk by name expands; bound it like any other resource.
            raise LimitExceeded("converted entries", self.budget, self.visits)

    def walk(
        self, value: Any, path: tuple[str, ...], *, depth: int = 0, containers: int = 0, meta: bool = True
    ) -> None:
        self._tick()
        if depth > self.max_depth:
            self._skip(path, f"nested deeper than {self.max_depth} levels")
            return
        node = node_of(value)
        if node is not None:
            if node.id in self._active_nodes:
                self._skip(path, "a container that contains itself")
                return
            self._active_nodes.add(node.id)
            try:
                self._walk_value(self.interpreter.evaluate(node), path, depth, containers, meta)
            finally:
                self._active_nodes.discard(node.id)
            return
        if type(value) in (dict, list, tuple):
            if id(value) in self._active_objects:
                self._skip(path, "a container that contains itself")
                return
            self._active_objects.add(id(value))
            try:
                self._walk_value(value, path, depth, containers, meta)
            finally:
                self._active_objects.discard(id(value))
            return
        self._walk_value(value, path, depth, containers, meta)

    def _walk_value(self, value: Any, path: tuple[str, ...], depth: int, containers: int, meta: bool) -> None:
        if isinstance(value, TensorRef):
            self._tensor(value, path, containers)
        elif isinstance(value, _Opaque):
            self._skip(path, value.reason)
        elif isinstance(value, _Mapping):
            self._items(value.items, path, depth, containers, meta)
            if value.attributes and not _only_state_dict_versions(value.attributes):
                self._skip(path, f"attributes set on the {value.kind} itself")
        elif isinstance(value, _Instance):
            self._instance(value, path, depth, containers)
        elif type(value) is dict:
            self._items(list(value.items()), path, depth, containers, meta)
        elif type(value) in (list, tuple):
            if meta and _plain(value, self.max_depth, set()):
                self._meta(path, value)
            else:
                for index, item in enumerate(value):
                    self.walk(item, (*path, str(index)), depth=depth + 1, containers=containers + 1, meta=meta)
        elif _plain(value, 1, set()):
            if meta:
                self._meta(path, value)
        else:
            self._skip(path, _describe(value))

    def _items(
        self, items: list[tuple[Any, Any]], path: tuple[str, ...], depth: int, containers: int, meta: bool
    ) -> None:
        for key, item in items:
            if type(key) is str:
                name = key
            elif type(key) is int and key.bit_length() <= 64:
                name = str(key)  # optimizer state is keyed by parameter index
            else:
                shown = show(key) if node_of(key) is None else "a stand-in"
                self._skip(path, f"an entry keyed by {shown}: only str and int keys can name a tensor")
                continue
            self.walk(item, (*path, name), depth=depth + 1, containers=containers + 1, meta=meta)

    def _tensor(self, tensor: TensorRef, path: tuple[str, ...], containers: int) -> None:
        name = ".".join(path) or "tensor"
        if tensor.dtype.safetensors is None:
            self._skip(path, f"a {tensor.dtype.name} tensor: {tensor.dtype.unsupported}")
        elif not _utf8(name):
            self._skip(path, "a tensor whose name is not valid Unicode (lone surrogates cannot be written)")
        elif name in self.tensors or name == "__metadata__":
            self._skip(path, "a tensor whose name is already taken (keys with dots collide with nested names)")
        else:
            self.tensors[name] = tensor
            if containers > 1:
                self.nested = True

    def _meta(self, path: tuple[str, ...], value: Any) -> None:
        name = ".".join(path) or "value"
        if name in self.metadata or not _utf8(name):
            self._skip(path, "a metadata value whose name is already taken or is not valid Unicode")
            return
        # JSON keeps types readable (3 vs "3"); NaN and infinities use Python's JSON spelling. Text that
        # cannot be UTF-8 (lone surrogates from a pickle) is kept as JSON escapes instead.
        try:
            text = json.dumps(value, ensure_ascii=False)
        except ValueError:  # an integer beyond Python's int-to-text digit limit
            self._skip(path, "a number too long to write as text")
            return
        self.metadata[name] = text if _utf8(text) else json.dumps(value)

    def _instance(self, obj: _Instance, path: tuple[str, ...], depth: int, containers: int) -> None:
        state = obj.state[0] if type(obj.state) is tuple and len(obj.state) == 2 else obj.state
        if type(state) is dict and all(k in state for k in ("_parameters", "_buffers", "_modules")):
            if not path:
                self.module_root = True
            elif containers:
                self.nested = True
            self._skip(
                path, f"a {obj.cls} model: only its parameters and persistent buffers are kept, as in state_dict()"
            )
            self._module(state, path, depth)
            return
        if state is None:
            self._skip(path, f"an instance of {obj.cls}")
            return
        # Other objects (argparse.Namespace, config objects, EMA helpers...) are not data we can write as
        # metadata, but any tensors they hold are still weights: keep those, under the attribute names.
        self._skip(path, f"an instance of {obj.cls} (tensors inside it, if any, are kept)")
        # BUILD state is the instance dict, or (dict, slot dict); either way the keys are attribute names.
        parts = obj.state if type(obj.state) is tuple and len(obj.state) == 2 else (obj.state,)
        for part in parts:
            if part is not None:
                self.walk(part, path, depth=depth + 1, containers=containers, meta=False)

    def _module(self, state: dict[Any, Any], path: tuple[str, ...], depth: int) -> None:
        non_persistent = self._names(state.get("_non_persistent_buffers_set"))
        for attribute in ("_parameters", "_buffers"):
            for name, value in self._entries(state.get(attribute), (*path, attribute)):
                if value is None or (attribute == "_buffers" and name in non_persistent):
                    continue
                self._weight(value, (*path, name), depth)
        for name, value in self._entries(state.get("_modules"), (*path, "_modules")):
            if value is None:
                continue
            node = node_of(value)
            sub = self.interpreter.evaluate(node) if node is not None else value
            sub_state = sub.state if isinstance(sub, _Instance) else None
            if type(sub_state) is tuple and len(sub_state) == 2:
                sub_state = sub_state[0]
            if type(sub_state) is dict and all(k in sub_state for k in ("_parameters", "_buffers", "_modules")):
                self._tick()
                if depth + 1 > self.max_depth:
                    self._skip((*path, name), f"nested deeper than {self.max_depth} levels")
                else:
                    self._module(sub_state, (*path, name), depth + 1)
            else:
                self._skip((*path, name), "a submodule that is not a module object")

    def _weight(self, value: Any, path: tuple[str, ...], depth: int) -> None:
        node = node_of(value)
        found = self.interpreter.evaluate(node) if node is not None else value
        if isinstance(found, TensorRef):
            self._tensor(found, path, 0)
        elif isinstance(found, _Opaque):
            self._skip(path, found.reason)
        else:
            self._skip(path, "a parameter or buffer that is not a tensor")

    def _entries(self, value: Any, path: tuple[str, ...]) -> Iterator[tuple[str, Any]]:
        node = node_of(value)
        found = self.interpreter.evaluate(node) if node is not None else value
        if isinstance(found, _Mapping):
            items = found.items
        elif type(found) is dict:
            items = list(found.items())
        elif found is None:
            return
        else:
            self._skip(path, "module state that is not a mapping")
            return
        for key, item in items:
            if type(key) is str:
                yield key, item
            else:
                self._skip(path, "a module entry whose name is not a string")

    def _names(self, value: Any) -> frozenset[str]:
        node = node_of(value)
        found = self.interpreter.evaluate(node) if node is not None else value
        if isinstance(found, (set, frozenset)):
            return frozenset(v for v in found if type(v) is str)
        return frozenset()


def extract(program: Program, storages: StorageTable, limits: Limits) -> Extraction:
    """Name every tensor and plain value the program's result holds; list what is skipped."""
    walker = _Walker(Interpreter(program, storages, limits), limits)
    walker.walk(program.result, ())
    if walker.module_root:
        flatten = Flatten.MODULE
    elif walker.nested:
        flatten = Flatten.NESTED
    else:
        flatten = Flatten.FLAT
    return Extraction(
        tensors=tuple(walker.tensors.items()),
        metadata=tuple(walker.metadata.items()),
        skipped=tuple(walker.skipped),
        flatten=flatten,
    )
