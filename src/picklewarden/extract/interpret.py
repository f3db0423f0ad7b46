"""The symbolic interpreter: a small, closed table of callables (torch's tensor rebuilds, dict-like
containers, object reconstructors) understood instead of called, turning a program's values into abstract
values (:class:`TensorRef`, mappings, instances) and opaque leftovers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from picklewarden.extract.dtypes import DType, dtype_global
from picklewarden.extract.errors import ConvertError
from picklewarden.extract.refs import StorageRef, StorageTable, TensorRef, _count, hashable, show
from picklewarden.knowledge.launder import legacy_module_class
from picklewarden.knowledge.resolve import resolve
from picklewarden.limits import Limits
from picklewarden.pickle.machine import node_of
from picklewarden.pickle.program import CallHow, CallResult, Global, Mutation, Node, Op, Persistent, Program

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
