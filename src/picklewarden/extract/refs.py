"""What extraction finds: storage and tensor references, what was skipped and why, and the storage table
that ties a program's persistent ids to storages."""

from __future__ import annotations

import enum
import math
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from picklewarden.extract.dtypes import DType, storage_dtype
from picklewarden.extract.errors import ConvertError
from picklewarden.knowledge.resolve import resolve
from picklewarden.pickle.machine import node_of
from picklewarden.pickle.program import Global, Persistent, Program


@dataclass(frozen=True, slots=True)
class StorageRef:
    """A storage as torch would materialise it for a persistent id."""

    key: Hashable
    """The record key (``data/<key>`` in a ZIP archive) or the legacy root key."""
    offset: int
    """Byte offset into the root storage (non-zero only for legacy storage views)."""
    nbytes: int
    dtype: DType
    """The element type torch gives the storage (``uint8`` for untyped storages)."""
    location: str
    """The device it was saved from (``cpu``, ``cuda:0``...): informational, the bytes are in the file."""


@dataclass(frozen=True, slots=True)
class TensorRef:
    """A dense, strided tensor over a storage. Offsets and strides count elements of ``dtype``."""

    storage: StorageRef
    dtype: DType
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.size)

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize

    @property
    def extent(self) -> tuple[int, int]:
        """``(first, last + 1)`` element indices the tensor touches in its storage; ``(offset, offset)`` if empty."""
        if self.numel == 0:
            return self.offset, self.offset
        return self.offset, self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride, strict=True)) + 1


@dataclass(frozen=True, slots=True)
class Skipped:
    """Something found in the file that was not converted, and why."""

    name: str
    """Where it was: the dotted name it would have had."""
    reason: str


class Flatten(enum.Enum):
    """How tensor names were derived from the checkpoint's structure."""

    FLAT = "flat"
    """A flat mapping of tensors (a state dict): its keys are the names."""
    NESTED = "nested"
    """Nested containers: keys and list indices joined with '.' (``model.layer.0.weight``)."""
    MODULE = "module"
    """A full model pickle: the names ``state_dict()`` gives (parameters, persistent buffers, submodules)."""

    @property
    def description(self) -> str:
        match self:
            case Flatten.FLAT:
                return "flat state dict: tensor names are its keys"
            case Flatten.NESTED:
                return "nested checkpoint: keys and list indices joined with '.'"
            case Flatten.MODULE:
                return "full model: names as state_dict() gives them (parameters, persistent buffers, submodules)"


@dataclass(frozen=True)
class Extraction:
    """What a program holds, by name, before any byte is read."""

    tensors: tuple[tuple[str, TensorRef], ...]
    metadata: tuple[tuple[str, str], ...]
    """Plain data (None, bools, numbers, strings, and lists/dicts of them) as JSON text, by name."""
    skipped: tuple[Skipped, ...]
    flatten: Flatten


# -- storages --------------------------------------------------------------------------------------------


class PidLayout(enum.Enum):
    """The shape of storage persistent ids, which differs between torch's two formats."""

    ZIP = "zip"
    """``('storage', storage_type, key, location, numel)``; data in record ``data/<key>``."""
    LEGACY = "legacy"
    """``('storage', storage_type, root_key, location, numel, view_metadata)``; data after the pickles."""
    NONE = "none"
    """A plain pickle: nothing holds storage data, so no persistent id can become a tensor."""


def _text(value: Any) -> str | None:
    """torch's ``_maybe_decode_ascii``: str as is, bytes from Python 2 pickles decoded as ASCII."""
    if type(value) is str:
        return value
    if type(value) is bytes:
        try:
            return value.decode("ascii")
        except UnicodeDecodeError:
            return None
    return None


def show(value: Any, limit: int = 60) -> str:
    """A short description of a value from the file, for messages. Never formats the whole value: a
    hostile key can be a gigabyte string or an integer too long for ``str()``."""
    if type(value) in (str, bytes):
        return repr(value[:limit]) + ("..." if len(value) > limit else "")
    if type(value) is int and value.bit_length() <= 64:
        return str(value)
    return f"a value of type {type(value).__name__}"


def hashable(value: Any) -> bool:
    """``isinstance(x, Hashable)`` is not enough: a tuple holding a list claims to be and is not."""
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _count(value: Any) -> int | None:
    return value if type(value) is int and value >= 0 else None


def _storage_class(value: Any) -> tuple[DType | None, str]:
    node = node_of(value)
    if not isinstance(node, Global):
        return None, "its storage type is not a global"
    resolved = resolve(node.module, node.name, node.protocol)
    found = storage_dtype(resolved.module, resolved.qualname)
    return found, "" if found is not None else f"{resolved.symbol} is not a storage type"


class StorageTable:
    """Storages by persistent-id node, with torch's first-seen semantics.

    torch keeps the first storage object it builds for a key and hands that same object to every later
    persistent id naming the key, whatever type or size the later id claims; so does this table.
    """

    def __init__(self, program: Program, layout: PidLayout) -> None:
        self.layout = layout
        self.by_node: dict[int, StorageRef | str] = {}
        """Persistent node id -> the storage, or why it is not one we can read."""
        self.roots: dict[Hashable, StorageRef] = {}
        """Root storages by key, in first-seen order."""
        self._views: dict[Hashable, StorageRef] = {}
        for stmt in program.statements:
            if isinstance(stmt, Persistent):
                self.by_node[stmt.id] = self._add(stmt.pid)

    def _add(self, pid: Any) -> StorageRef | str:
        if self.layout is PidLayout.NONE:
            return "a persistent id in a plain pickle, which holds no storage data"
        if type(pid) is not tuple or not pid or _text(pid[0]) != "storage":
            if type(pid) is tuple and pid and _text(pid[0]) == "module":
                return "a legacy full-model class reference, not data"
            return "a persistent id that is not a torch storage"
        size = 5 if self.layout is PidLayout.ZIP else 6
        if len(pid) != size:
            return f"a storage persistent id with {len(pid)} fields where torch's {self.layout.value} format has {size}"
        dtype, why = _storage_class(pid[1])
        key, location, numel = pid[2], _text(pid[3]), _count(pid[4])
        if dtype is None:
            return why
        if location is None or numel is None:
            return "a storage persistent id with an unreadable location or size"
        if self.layout is PidLayout.ZIP:
            # torch reads record f"data/{key}"; only keys that format to a record name are usable.
            if type(key) not in (str, int) or type(key) is bool:
                return f"a storage key of type {type(key).__name__}"
            key = str(key)
        elif not hashable(key):
            return "an unhashable storage key"
        root = self.roots.get(key)
        if root is None:
            root = StorageRef(key, 0, numel * dtype.itemsize, dtype, location)
            self.roots[key] = root
        if self.layout is PidLayout.ZIP or pid[5] is None:
            return root
        return self._view(root, pid[5], dtype, location)

    def _view(self, root: StorageRef, view: Any, dtype: DType, location: str) -> StorageRef | str:
        # Storages sliced from another storage, as torch < 1.? saved them: (view_key, offset, size) in elements.
        if type(view) is not tuple or len(view) != 3:
            return "a legacy storage view with malformed view metadata"
        view_key, offset, size = view
        if not hashable(view_key) or _count(offset) is None or _count(size) is None:
            return "a legacy storage view with malformed view metadata"
        found = self._views.get(view_key)
        if found is not None:
            return found
        start, nbytes = offset * dtype.itemsize, size * dtype.itemsize
        if start + nbytes > root.nbytes:
            raise ConvertError(
                f"legacy storage view {show(view_key)} ({nbytes} bytes at {start}) lies outside its storage "
                f"{show(root.key)} of {root.nbytes} bytes"
            )
        made = StorageRef(root.key, start, nbytes, dtype, location)
        self._views[view_key] = made
        return made
