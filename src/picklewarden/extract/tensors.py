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

import enum
import json
import math
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from picklewarden.errors import LimitExceeded
from picklewarden.extract.dtypes import DType, dtype_global, storage_dtype
from picklewarden.extract.errors import ConvertError
from picklewarden.knowledge.launder import legacy_module_class
from picklewarden.knowledge.resolve import resolve
from picklewarden.limits import Limits
from picklewarden.pickle.machine import node_of
from picklewarden.pickle.program import CallHow, CallResult, Global, Mutation, Node, Op, Persistent, Program


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


# -- abstract values ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Opaque:
    """A value we do not interpret: listed as skipped, with the reason."""

    reason: str


@dataclass(slots=True)
class _Mapping:
    """A dict-like container rebuilt from its recorded items (OrderedDict, defaultdict, Counter...)."""

    kind: str
    items: list[tuple[Any, Any]] = field(default_factory=list)
    attributes: Any = None
    """State BUILD set on the container itself (a state dict's ``_metadata``), not items."""


@dataclass(frozen=True, slots=True)
class _Instance:
    """An object created by ``cls.__new__`` (NEWOBJ, copyreg) with the state BUILD gave it."""

    cls: str
    state: Any


_Value = TensorRef | _Opaque | _Mapping | _Instance | tuple[Any, ...] | frozenset[Any] | set[Any]

_UTILS = "torch._utils"


def _only_state_dict_versions(attributes: Any) -> bool:
    """``{'_metadata': ...}``: the per-module version numbers torch keeps on every state dict. safetensors
    has no place for them (nor do the safetensors files transformers writes), so dropping them is no news."""
    return type(attributes) is dict and set(attributes) == {"_metadata"}


_MAPPINGS: Final[dict[tuple[str, str], str]] = {
    ("collections", "OrderedDict"): "OrderedDict",
    ("collections", "defaultdict"): "defaultdict",
    ("collections", "Counter"): "Counter",
    ("builtins", "dict"): "dict",
}
_CONSTRUCTORS: Final[frozenset[tuple[str, str]]] = frozenset({("copyreg", "_reconstructor"), ("copyreg", "__newobj__")})
_TENSOR_CALLS: Final[frozenset[tuple[str, str]]] = frozenset(
    {
        (_UTILS, "_rebuild_tensor"),
        (_UTILS, "_rebuild_tensor_v2"),
        (_UTILS, "_rebuild_tensor_v3"),
        (_UTILS, "_rebuild_parameter"),
        (_UTILS, "_rebuild_parameter_with_state"),
        (_UTILS, "_rebuild_device_tensor_from_cpu_tensor"),
        ("torch._tensor", "_rebuild_from_type_v2"),
        ("torch.nn.parameter", "Parameter"),
        ("torch.nn", "Parameter"),
    }
)
# Rebuilds torch understands and we deliberately do not: their data is not one dense strided array.
_UNSUPPORTED_TENSORS: Final[dict[tuple[str, str], str]] = {
    (_UTILS, "_rebuild_qtensor"): "a quantized tensor (safetensors has no quantized dtypes)",
    (_UTILS, "_rebuild_sparse_tensor"): "a sparse tensor (safetensors holds dense tensors only)",
    (_UTILS, "_rebuild_sparse_csr_tensor"): "a sparse tensor (safetensors holds dense tensors only)",
    (_UTILS, "_rebuild_nested_tensor"): "a nested tensor (safetensors holds dense tensors only)",
    (_UTILS, "_rebuild_meta_tensor_no_storage"): "a meta tensor: it has no data",
    (_UTILS, "_rebuild_wrapper_subclass"): "a tensor subclass without storage data",
    (_UTILS, "_rebuild_device_tensor_from_numpy"): "a device tensor rebuilt from a numpy array",
    (_UTILS, "_rebuild_xla_tensor"): "an XLA device tensor",
    (_UTILS, "_rebuild_mlc_tensor"): "an MLC device tensor",
}


def _ints(value: Any) -> tuple[int, ...] | None:
    if type(value) not in (tuple, list):
        return None
    out = tuple(value)
    return out if all(_count(v) is not None for v in out) else None


def _shape_of(value: Any, interpreter: Interpreter) -> tuple[int, ...] | None:
    node = node_of(value)
    if node is not None:
        found = interpreter.evaluate(node)
        return found if type(found) is tuple else None  # torch.Size(...) evaluates to a tuple
    return _ints(value)


class Interpreter:
    """Evaluates the program's nodes as abstract values (memoised: each node is one object, as in pickle)."""

    def __init__(self, program: Program, storages: StorageTable, limits: Limits) -> None:
        self.program = program
        self.storages = storages
        self.max_depth = limits.max_render_depth
        self._cache: dict[int, _Value] = {}
        self._active: set[int] = set()
        self._mutations: dict[int, list[Mutation]] = {}
        self._symbols: dict[int, tuple[str, str]] = {}
        for stmt in program.statements:
            if isinstance(stmt, Mutation):
                self._mutations.setdefault(stmt.target.id, []).append(stmt)

    def symbol(self, node: Global) -> tuple[str, str]:
        """The canonical ``(module, qualname)`` the unpickler would import for this global."""
        found = self._symbols.get(node.id)
        if found is None:
            resolved = resolve(node.module, node.name, node.protocol)
            found = (resolved.module, resolved.qualname)
            self._symbols[node.id] = found
        return found

    def evaluate(self, node: Node) -> _Value:
        found = self._cache.get(node.id)
        if found is not None:
            return found
        if node.id in self._active:
            return _Opaque("a value that contains itself while it is being built")
        if len(self._active) >= self.max_depth:
            # Wrappers of wrappers (Parameter(Parameter(...))) nest without bound in a hostile file.
            return _Opaque(f"a value built from more than {self.max_depth} nested calls")
        self._active.add(node.id)
        try:
            value = self._evaluate(node)
        finally:
            self._active.discard(node.id)
        self._cache[node.id] = value
        return value

    def _evaluate(self, node: Node) -> _Value:
        if isinstance(node, Persistent):
            storage = self.storages.by_node.get(node.id)
            if isinstance(storage, StorageRef):
                return _Opaque("a bare storage, not a tensor")
            return _Opaque(storage or "a persistent id")
        if isinstance(node, Global):
            module, qualname = self.symbol(node)
            return _Opaque(f"a reference to {module}.{qualname}, not data")
        if not isinstance(node, CallResult):
            return _Opaque("an unknown value")
        callee = node.callee
        if isinstance(callee, Persistent):  # torch's legacy ('module', cls, ...) id stands for cls itself
            held = node_of(legacy_module_class(callee))
            callee = held if isinstance(held, Global) else callee
        if not isinstance(callee, Global):
            return _Opaque("the result of a call through a computed callable")
        key = self.symbol(callee)
        if node.how is CallHow.SETSTATE:
            return _Opaque(f"the result of a planted __setstate__ ({key[0]}.{key[1]})")
        if node.kwargs:
            return _Opaque(f"the result of {key[0]}.{key[1]} called with keyword arguments")
        if key in _TENSOR_CALLS:
            return self.tensor(key, node.args)
        unsupported = _UNSUPPORTED_TENSORS.get(key)
        if unsupported is not None:
            return _Opaque(unsupported)
        kind = _MAPPINGS.get(key)
        if kind is not None:
            return self._mapping(node, kind)
        if key in (("builtins", "set"), ("builtins", "frozenset")) and len(node.args) <= 1:
            items = node.args[0] if node.args else ()
            if type(items) in (list, tuple) and all(node_of(item) is None and hashable(item) for item in items):
                return set(items) if key[1] == "set" else frozenset(items)
            return _Opaque(f"a {key[1]} of values that are not plain data")
        if key == ("torch", "Size") and len(node.args) == 1:
            size = _ints(node.args[0])
            return size if size is not None else _Opaque("a torch.Size of values that are not sizes")
        if node.how is CallHow.NEW:
            return _Instance(f"{key[0]}.{key[1]}", self._state(node))
        if key == ("torch.fx.graph_module", "reduce_graph_module") and node.args and type(node.args[0]) is dict:
            # A traced model: the reducer rebuilds a GraphModule whose module state is the body it is given.
            return _Instance("torch.fx.graph_module.GraphModule", node.args[0])
        if key in _CONSTRUCTORS and node.args:
            cls = node_of(node.args[0])
            if isinstance(cls, Global):
                module, qualname = self.symbol(cls)
                return _Instance(f"{module}.{qualname}", self._state(node))
        return _Opaque(f"the result of calling {key[0]}.{key[1]}")

    def _state(self, node: Node) -> Any:
        builds = [m for m in self._mutations.get(node.id, ()) if m.op is Op.BUILD]
        return builds[-1].value if builds else None

    def _mapping(self, node: CallResult, kind: str) -> _Mapping:
        made = _Mapping(kind)
        # dict(items), OrderedDict(items), defaultdict(factory, items): items passed to the call itself
        # rather than set one by one with SETITEM (which is how pickle writes them).
        position = 1 if kind == "defaultdict" else 0
        initial = node.args[position] if len(node.args) > position else None
        if isinstance(initial, dict):
            made.items.extend(initial.items())
        elif isinstance(initial, (list, tuple)):
            made.items.extend(pair for pair in initial if type(pair) in (tuple, list) and len(pair) == 2)
        for mutation in self._mutations.get(node.id, ()):
            if mutation.op is Op.SETITEM:
                made.items.append((mutation.key, mutation.value))
            elif mutation.op is Op.BUILD:
                made.attributes = mutation.value
        return made

    # -- tensors --------------------------------------------------------------------------------------------
    def tensor(self, key: tuple[str, str], args: tuple[Any, ...]) -> TensorRef | _Opaque:
        """What torch's rebuild function ``key`` returns for ``args``, as a TensorRef (or why not)."""
        name = key[1]
        if name in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3"):
            return self._rebuild(name, args)
        if name in ("_rebuild_parameter", "_rebuild_parameter_with_state", "Parameter"):
            # The Parameter wrapper only adds requires_grad (and, with state, Python attributes).
            return self._inner(args[0]) if args else _Opaque("a Parameter without data")
        if name == "_rebuild_device_tensor_from_cpu_tensor":
            if len(args) != 4:
                return _Opaque("a device tensor rebuild with unexpected arguments")
            inner, dtype = self._inner(args[0]), self._dtype(args[1])
            if isinstance(inner, TensorRef) and dtype is not None and dtype != inner.dtype:
                return _Opaque(f"a device tensor converted from {inner.dtype.name} to {dtype.name} when loaded")
            return inner
        # _rebuild_from_type_v2(func, new_type, args, state): func(*args), then a subclass and attributes.
        if len(args) != 4 or type(args[2]) is not tuple:
            return _Opaque("a tensor subclass rebuild with unexpected arguments")
        func = node_of(args[0])
        if not isinstance(func, Global):
            return _Opaque("a tensor subclass rebuilt through a computed function")
        inner_key = self.symbol(func)
        if inner_key not in _TENSOR_CALLS or inner_key[1] == "_rebuild_from_type_v2":
            return _Opaque(
                _UNSUPPORTED_TENSORS.get(inner_key, f"a tensor subclass rebuilt by {inner_key[0]}.{inner_key[1]}")
            )
        return self.tensor(inner_key, args[2])

    def _inner(self, value: Any) -> TensorRef | _Opaque:
        node = node_of(value)
        if node is None:
            return _Opaque("a Parameter whose data is not a tensor")
        found = self.evaluate(node)
        return found if isinstance(found, (TensorRef, _Opaque)) else _Opaque("a Parameter whose data is not a tensor")

    def _dtype(self, value: Any) -> DType | None:
        node = node_of(value)
        if not isinstance(node, Global):
            return None
        return dtype_global(*self.symbol(node))

    def _rebuild(self, name: str, args: tuple[Any, ...]) -> TensorRef | _Opaque:
        # _rebuild_tensor(storage, offset, size, stride)
        # _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, backward_hooks[, metadata])
        # _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, backward_hooks, dtype[, metadata])
        counts = {"_rebuild_tensor": (4,), "_rebuild_tensor_v2": (6, 7), "_rebuild_tensor_v3": (7, 8)}[name]
        if len(args) not in counts:
            return _Opaque(f"a {name} call with {len(args)} arguments")
        node = node_of(args[0])
        storage = self.storages.by_node.get(node.id) if isinstance(node, Persistent) else None
        if not isinstance(storage, StorageRef):
            return _Opaque(storage or "a tensor whose storage is not a persistent storage record")
        dtype = storage.dtype
        metadata = args[6] if name == "_rebuild_tensor_v2" and len(args) == 7 else None
        if name == "_rebuild_tensor_v3":
            explicit = self._dtype(args[6])
            if explicit is None:
                return _Opaque("a tensor whose dtype argument is not a torch dtype")
            dtype, metadata = explicit, args[7] if len(args) == 8 else None
        if metadata:
            # get_tensor_metadata: conj/neg bits mean the stored numbers are not the tensor's values.
            flags = metadata if type(metadata) is dict else {"unreadable": True}
            set_bits = sorted(str(k) for k, v in flags.items() if v)
            if set_bits:
                return _Opaque(f"a tensor with the {'/'.join(set_bits)} bit set: its stored values are not its values")
        offset, size, stride = _count(args[1]), _shape_of(args[2], self), _shape_of(args[3], self)
        if offset is None or size is None or stride is None or len(size) != len(stride):
            return _Opaque("a tensor with a malformed offset, size or stride")
        tensor = TensorRef(storage, dtype, offset, size, stride)
        first, end = tensor.extent
        available = storage.nbytes // dtype.itemsize
        if end > available:
            # torch.load fails here too ("out of bounds for storage"): the file is broken, not partly usable.
            raise ConvertError(
                f"a tensor of size {list(size)} and stride {list(stride)} at offset {first} needs {end} elements "
                f"of storage {show(storage.key)}, which holds {available}"
            )
        return tensor


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
