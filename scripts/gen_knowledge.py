#!/usr/bin/env python3
"""Generate ``src/picklewarden/knowledge/data/generated.json``: reviewed knowledge about globals.

Run by hand at development time, never by the scanner::

    python scripts/gen_knowledge.py > src/picklewarden/knowledge/data/generated.json
    python scripts/gen_knowledge.py --output src/picklewarden/knowledge/data/generated.json

It imports the standard library and, when installed, numpy and torch, and introspects them *statically*:
module dictionaries, class ``__dict__``s along the MRO, closure cells and bytecode. No function that is
inspected is ever called (the only calls are constructors of sample objects chosen here, which are pickled
so that the globals their pickles reference can be listed). Three sections come out:

``springboards``
    For every stdlib/numpy/torch module, each attribute whose value is a module (``shutil.os``), keyed by
    the module's real ``__name__`` and mapped to the target's ``__name__``. The scanner uses these to
    canonicalise dotted names such as ``("torch", "serialization.os.system")`` without importing.
``safe``
    Globals that everyday checkpoints reference, found by pickling sample objects made here (with
    ``pickletools.genops`` over our own pickles) plus torch's ``weights_only`` allowlist, torch layer,
    optimizer and scheduler classes, and torch dtype-like constants.
``sinks``
    Functions, classes and methods that reach a process, code, import, deserialization, network or file
    sink within a few calls, found by a bounded walk over bytecode references, plus a few indirection
    primitives. Each reason names the root sink and the call path.

The output is deterministic for a given interpreter and package set: everything is sorted, and path
choices are tie-broken by name.
"""

from __future__ import annotations

import _compat_pickle
import argparse
import builtins
import contextlib
import dis
import importlib
import io
import json
import os
import pickle
import pickletools
import platform
import re
import sys
import time
import types
import warnings
import zipfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

GENERATED_BY = "scripts/gen_knowledge.py"
DEFAULT_DEPTH = 3
CATEGORIES = ("process", "code", "deserialize", "import", "network", "file", "indirection")
"""Closed set of sink categories, most severe first (the order picks a node's category)."""

MISSING = object()

# --------------------------------------------------------------------------------------------------
# Importing the domain
# --------------------------------------------------------------------------------------------------

# Top-level stdlib names never imported: import-time side effects (browser, printing, GUI, test suites).
SKIP_TOP = frozenset(
    "antigravity this idlelib tkinter turtle turtledemo test __main__ __hello__ __phello__ "
    "_tkinter lib2to3 pydoc_data".split()
)
# Submodule name components never imported: ``__main__`` modules run programs (venv, ensurepip, unittest),
# test packages are huge and have side effects.
SKIP_PART = frozenset("__main__ test tests idle_test".split())
# Extra numpy/torch modules imported explicitly because advisories and pickles name them but
# ``import numpy, torch`` does not load them.
EXTRA_MODULES = ("numpy.random", "numpy.random._pickle", "numpy.testing", "numpy.testing._private.utils")


def log(message: str) -> None:
    print(f"gen_knowledge: {message}", file=sys.stderr)


def brief(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return text if len(text) <= 160 else text[:157] + "..."


def guarded_import(name: str) -> types.ModuleType | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return importlib.import_module(name)
    except BaseException as exc:  # any import failure (even SystemExit) just skips the module
        if isinstance(exc, KeyboardInterrupt):
            raise
        return None


def _submodule_names(package: types.ModuleType) -> list[str]:
    """Names of a package's submodules, listed from its ``__path__`` without importing them."""
    import pkgutil

    path = vars(package).get("__path__")
    if not path:
        return []
    try:
        return sorted(f"{package.__name__}.{info.name}" for info in pkgutil.iter_modules(list(path)))
    except Exception:  # noqa: BLE001
        return []


def import_stdlib() -> None:
    """Import every stdlib module and submodule that imports cleanly (guarded, side-effect ones skipped)."""
    # setuptools' startup hook hands ``import distutils`` its own copy; this script describes the stdlib.
    sys.meta_path[:] = [f for f in sys.meta_path if getattr(type(f), "__module__", "") != "_distutils_hack"]
    todo = deque(sorted(n for n in sys.stdlib_module_names if n not in SKIP_TOP and not n.startswith("__")))
    seen: set[str] = set()
    while todo:
        name = todo.popleft()
        if name in seen or SKIP_PART.intersection(name.split(".")):
            continue
        seen.add(name)
        module = guarded_import(name)
        if module is not None:
            todo.extend(_submodule_names(module))


def import_optional() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in ("numpy", "torch"):
        module = guarded_import(name)
        versions[name] = str(vars(module).get("__version__")) if module is not None else None
    for name in EXTRA_MODULES:
        if versions.get(name.split(".")[0]):
            guarded_import(name)
    return versions


def in_domain(name: str) -> bool:
    top = name.split(".")[0]
    return (top in sys.stdlib_module_names and top not in SKIP_TOP) or top in ("numpy", "torch")


def module_key(key: str, module: types.ModuleType) -> str:
    """A module's real ``__name__``, unless importing that name gives a different module (``_io``)."""
    name = vars(module).get("__name__")
    if isinstance(name, str) and sys.modules.get(name) is module:
        return name
    return key


def from_stdlib(module: types.ModuleType) -> bool:
    """Built-in, frozen, or a file under the stdlib directories (not a third-party module shadowing one)."""
    import sysconfig

    path = vars(module).get("__file__")
    if not isinstance(path, str):
        return True
    roots = {os.path.realpath(sysconfig.get_paths()[k]) for k in ("stdlib", "platstdlib")}
    real = os.path.realpath(path)
    return any(real.startswith(root + os.sep) for root in roots) and "site-packages" not in real.split(os.sep)


def domain_modules() -> dict[str, types.ModuleType]:
    out: dict[str, types.ModuleType] = {}
    for key, module in sorted(sys.modules.items()):
        if not issubclass(type(module), types.ModuleType) or not in_domain(key):
            continue
        if key.split(".")[0] not in ("numpy", "torch") and not from_stdlib(module):
            continue
        out.setdefault(module_key(key, module), module)
    return out


def is_dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def module_items(module: types.ModuleType) -> list[tuple[str, Any]]:
    try:
        return sorted((k, v) for k, v in list(vars(module).items()) if isinstance(k, str))
    except Exception:  # noqa: BLE001
        return []


# --------------------------------------------------------------------------------------------------
# (a) springboards
# --------------------------------------------------------------------------------------------------


def target_name(module: types.ModuleType) -> str | None:
    name = vars(module).get("__name__")
    if not isinstance(name, str):
        return None
    if sys.modules.get(name) is module:
        return name
    for key, other in sys.modules.items():  # a module whose __name__ lies (``_io`` says ``io``)
        if other is module:
            return key
    return name


def build_springboards(modules: dict[str, types.ModuleType]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for key, module in modules.items():
        attrs = {}
        for attr, value in module_items(module):
            if is_dunder(attr) or not issubclass(type(value), types.ModuleType):
                continue
            target = target_name(value)
            if target is not None:
                attrs[attr] = target
        if attrs:
            out[key] = dict(sorted(attrs.items()))
    return dict(sorted(out.items()))


def canonicalise(module: str, name: str, springboards: dict[str, dict[str, str]]) -> tuple[str, str]:
    """Follow springboards the way ``picklewarden.knowledge.resolve`` does: ``torch._utils`` +
    ``torch.channels_last`` -> ``torch`` + ``channels_last``."""
    parts = name.split(".")
    path: list[str] = []
    for part in parts[:-1]:
        target = springboards.get(module, {}).get(part) if not path else None
        if target is not None:
            module = target
        else:
            path.append(part)
    path.append(parts[-1])
    return module, ".".join(path)


# --------------------------------------------------------------------------------------------------
# Static attribute lookup (never calls descriptors, __getattr__ or properties)
# --------------------------------------------------------------------------------------------------


def static_mro(cls: type) -> tuple[type, ...]:
    try:
        mro = type.__dict__["__mro__"].__get__(cls)
        return tuple(mro) if isinstance(mro, tuple) else (cls,)
    except Exception:  # noqa: BLE001
        return (cls,)


def class_lookup(cls: type, name: str, start_after: type | None = None) -> Any:
    mro = static_mro(cls)
    if start_after is not None and start_after in mro:
        mro = mro[mro.index(start_after) + 1 :]
    for klass in mro:
        try:
            value = type.__dict__["__dict__"].__get__(klass).get(name, MISSING)
        except Exception:  # noqa: BLE001
            continue
        if value is not MISSING:
            return value
    return MISSING


def instance_dict(obj: Any) -> dict[str, Any]:
    try:
        value = object.__getattribute__(obj, "__dict__")
    except Exception:  # noqa: BLE001
        return {}
    return value if type(value) is dict else {}


def static_getattr(obj: Any, name: str) -> Any:
    if issubclass(type(obj), types.ModuleType):
        try:
            return vars(obj).get(name, MISSING)
        except Exception:  # noqa: BLE001
            return MISSING
    if issubclass(type(obj), type):
        return class_lookup(obj, name)
    value = instance_dict(obj).get(name, MISSING)
    if value is MISSING:
        value = class_lookup(type(obj), name)
    return value


def resolve_dotted(module: types.ModuleType, qualname: str) -> Any:
    obj: Any = module
    for part in qualname.split("."):
        obj = static_getattr(obj, part)
        if obj is MISSING:
            return MISSING
    return obj


def split_dotted(dotted: str) -> tuple[str, str] | None:
    """Split ``a.b.C.d`` at its longest importable module prefix."""
    parts = dotted.split(".")
    for i in range(len(parts) - 1, 0, -1):
        candidate = ".".join(parts[:i])
        module = sys.modules.get(candidate)
        if module is None and in_domain(candidate):
            try:
                import importlib.util

                if importlib.util.find_spec(candidate) is not None:
                    module = guarded_import(candidate)
            except Exception:  # noqa: BLE001
                module = None
        if module is not None:
            return candidate, ".".join(parts[i:])
    return None


# --------------------------------------------------------------------------------------------------
# Listing the globals a pickle references (our own pickles only; nothing is loaded)
# --------------------------------------------------------------------------------------------------

_STRING_OPS = frozenset("SHORT_BINUNICODE BINUNICODE UNICODE BINUNICODE8 STRING BINSTRING SHORT_BINSTRING".split())
_NO_PUSH_OPS = frozenset("PROTO FRAME MEMOIZE PUT BINPUT LONG_BINPUT STOP".split())


def remap(module: str, name: str, protocol: int) -> tuple[str, str]:
    """CPython's Python-2 name remapping, as the unpickler applies it below protocol 3."""
    if protocol >= 3:
        return module, name
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def pickle_globals(data: bytes, count: int = 1) -> list[tuple[str, str]]:
    """Every ``(module, name)`` the first ``count`` pickles of a stream reference, remapped.

    ``count`` > 1 reads pickles back to back (torch's legacy format: magic, protocol, sys info, object,
    storage keys, then raw storage bytes). STACK_GLOBAL operands are tracked through the memo, which is
    all the pickles made here need.
    """
    found: list[tuple[str, str]] = []
    stream = io.BytesIO(data)
    for _ in range(count):
        memo: dict[int, Any] = {}
        pushed: list[Any] = []
        protocol = 0
        for op, arg, _pos in pickletools.genops(stream):
            name = op.name
            if name == "PROTO":
                protocol = arg
            elif name in ("GLOBAL", "INST"):
                module, _, attr = arg.partition(" ")
                found.append(remap(module, attr, protocol))
                pushed.append(None)
            elif name in _STRING_OPS:
                pushed.append(arg)
            elif name == "MEMOIZE":
                memo[len(memo)] = pushed[-1] if pushed else None
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[arg] = pushed[-1] if pushed else None
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                pushed.append(memo.get(arg))
            elif name == "STACK_GLOBAL":
                module, attr = (pushed[-2], pushed[-1]) if len(pushed) >= 2 else (None, None)
                if isinstance(module, str) and isinstance(attr, str):
                    found.append((module, attr))
                else:
                    log(f"unresolved STACK_GLOBAL operands {module!r} {attr!r}")
                pushed.append(None)
            elif name not in _NO_PUSH_OPS:
                pushed.append(None)
    return found


LEGACY_TORCH_PICKLES = 5
"""Pickles at the start of a legacy (non-zip) torch.save stream: magic, protocol, sys info, object, keys."""


def torch_save_pickles(obj: Any, protocol: int) -> list[tuple[bytes, int]]:
    import torch

    out: list[tuple[bytes, int]] = []
    for zipped in (True, False):
        buffer = io.BytesIO()
        torch.save(obj, buffer, pickle_protocol=protocol, _use_new_zipfile_serialization=zipped)
        raw = buffer.getvalue()
        if zipped:
            with zipfile.ZipFile(io.BytesIO(raw)) as archive:
                out.extend((archive.read(n), 1) for n in archive.namelist() if n.endswith("data.pkl"))
        else:
            out.append((raw, LEGACY_TORCH_PICKLES))
    return out


@dataclass
class Sample:
    description: str
    make: Callable[[], Any]
    protocols: tuple[int, ...] = (0, 1, 2, 3, 4, 5)
    torch_save: bool = False
    quiet: bool = False
    """Failing to build or pickle it is expected on some builds (sub-byte and quantized dtypes)."""


def sample_globals(
    samples: Iterable[Sample], springboards: dict[str, dict[str, str]]
) -> dict[tuple[str, str], list[str]]:
    """Map each canonical global referenced by the samples' pickles to the samples that referenced it."""
    out: dict[tuple[str, str], list[str]] = {}
    for sample in samples:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                obj = sample.make()
        except Exception as exc:  # noqa: BLE001
            if not sample.quiet:
                log(f"sample {sample.description!r} not built: {brief(exc)}")
            continue
        made = 0
        for protocol in sample.protocols:
            streams: list[tuple[bytes, int]] = []
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    if sample.torch_save:
                        streams.extend(torch_save_pickles(obj, protocol))
                    else:
                        streams.append((pickle.dumps(obj, protocol=protocol), 1))
            except Exception:  # noqa: BLE001 - some objects need a newer protocol
                continue
            for stream, count in streams:
                made += 1
                for module, name in pickle_globals(stream, count):
                    key = canonicalise(module, name, springboards)
                    users = out.setdefault(key, [])
                    if sample.description not in users:
                        users.append(sample.description)
        if not made and not sample.quiet:
            log(f"sample {sample.description!r} could not be pickled with any protocol")
    return out


# --------------------------------------------------------------------------------------------------
# (b) safe
# --------------------------------------------------------------------------------------------------

# Why each everyday stdlib/numpy global is harmless; the generator adds where it was seen.
STDLIB_REASONS: dict[tuple[str, str], str] = {
    ("collections", "OrderedDict"): "ordered dict container (every state_dict is one)",
    ("collections", "defaultdict"): "dict container; its default factory is a separate global, judged on its own",
    ("collections", "Counter"): "counting dict container",
    ("collections", "deque"): "double-ended queue container",
    ("argparse", "Namespace"): "plain attribute bag for training arguments; BUILD sets its attributes",
    ("datetime", "datetime"): "date-time value built from packed bytes",
    ("datetime", "date"): "date value built from packed bytes",
    ("datetime", "time"): "time-of-day value built from packed bytes",
    ("datetime", "timedelta"): "duration value",
    ("datetime", "timezone"): "fixed-offset time zone value",
    ("pathlib", "PosixPath"): "path value; constructing it touches no file",
    ("pathlib", "PurePosixPath"): "pure path value (no file access)",
    ("pathlib", "PureWindowsPath"): "pure path value (no file access)",
    ("decimal", "Decimal"): "decimal number value",
    ("fractions", "Fraction"): "rational number value",
    ("uuid", "UUID"): "identifier value; BUILD sets its int",
    ("copyreg", "_reconstructor"): "protocol 0/1 object rebuild: object.__new__(cls), or base.__new__(cls, state) "
    "and base.__init__(obj, state) for another base; cls and base are separate globals, judged on their own",
    ("_codecs", "encode"): "how protocol 2 encodes bytes (latin-1 text to bytes); no side effects",
    ("builtins", "object"): "base class used by copyreg._reconstructor",
    ("builtins", "set"): "set container",
    ("builtins", "frozenset"): "frozen set container",
    ("builtins", "bytearray"): "mutable bytes value",
    ("builtins", "complex"): "complex number value",
    ("builtins", "slice"): "slice value",
    ("builtins", "range"): "lazy range value",
    ("builtins", "Ellipsis"): "the Ellipsis constant",
    ("builtins", "NotImplemented"): "the NotImplemented constant",
    ("builtins", "list"): "list container (also a common defaultdict factory)",
    ("builtins", "dict"): "dict container (also a common defaultdict factory)",
    ("builtins", "int"): "int value (also a common defaultdict factory)",
    ("builtins", "float"): "float value (also a common defaultdict factory)",
    ("builtins", "str"): "str value (also a common defaultdict factory)",
    ("builtins", "tuple"): "tuple container (also a defaultdict factory)",
    ("builtins", "bytes"): "bytes value",
    ("re", "_compile"): "compiles a regular expression pattern (no code execution)",
    ("re", "RegexFlag"): "enum of regex flags; enum members pickle as their class called with the value",
    ("http", "HTTPStatus"): "enum of HTTP status codes; enum members pickle as their class called with the value",
    ("numpy", "dtype"): "numpy dtype; BUILD sets its fields",
    ("numpy", "ndarray"): "numpy array class passed to the reconstructor",
    ("numpy", "matrix"): "numpy matrix (ndarray subclass)",
    ("numpy", "record"): "numpy structured scalar type",
    ("numpy.rec", "recarray"): "numpy record array (ndarray subclass)",
    ("numpy.ma", "MaskedArray"): "numpy masked array class",
    ("numpy.ma.core", "_mareconstruct"): "numpy masked-array reconstructor (builds empty arrays)",
    ("numpy._core.multiarray", "_reconstruct"): "numpy array reconstructor (ndarray.__new__ of a subtype)",
    ("numpy._core.multiarray", "scalar"): "numpy scalar reconstructor from dtype and bytes",
    ("numpy._core.numeric", "_frombuffer"): "numpy protocol-5 array reconstructor from a buffer",
    ("numpy.random._pickle", "__randomstate_ctor"): "builds a RandomState; calls its bit_generator_ctor argument "
    "with one argument, and that callable is itself a global in the pickle, judged on its own",
    ("numpy.random._pickle", "__generator_ctor"): "builds a Generator; calls its bit_generator_ctor argument "
    "with one argument, and that callable is itself a global in the pickle, judged on its own",
    ("numpy.random._pickle", "__bit_generator_ctor"): "builds a bit generator from a known name, or calls a "
    "class argument with no arguments (the class is a global judged on its own)",
    ("numpy.random.bit_generator", "SeedSequence"): "numpy seed sequence value",
    ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"): "Cython unpickle helper: checks a layout "
    "checksum, then SeedSequence.__new__ and sets fields",
    ("numpy.random._mt19937", "MT19937"): "numpy bit generator class; BUILD sets its state",
    ("numpy.random._pcg64", "PCG64"): "numpy bit generator class; BUILD sets its state",
    ("numpy.random._pcg64", "PCG64DXSM"): "numpy bit generator class; BUILD sets its state",
    ("numpy.random._philox", "Philox"): "numpy bit generator class; BUILD sets its state",
    ("numpy.random._sfc64", "SFC64"): "numpy bit generator class; BUILD sets its state",
}

TORCH_FUNCTION_REASONS: dict[str, str] = {
    "_rebuild_tensor": "rebuilds a tensor view over a storage (legacy)",
    "_rebuild_tensor_v2": "rebuilds a tensor view over a storage",
    "_rebuild_tensor_v3": "rebuilds a tensor view over a storage with an explicit dtype",
    "_rebuild_parameter": "wraps a rebuilt tensor in nn.Parameter",
    "_rebuild_parameter_with_state": "wraps a rebuilt tensor in nn.Parameter and sets its python state",
    "_rebuild_qtensor": "rebuilds a quantized tensor",
    "_rebuild_sparse_tensor": "rebuilds a sparse tensor from index and value tensors",
    "_rebuild_nested_tensor": "rebuilds a nested tensor from buffer, sizes and strides",
    "_rebuild_meta_tensor_no_storage": "rebuilds a meta tensor (shape only, no data)",
    "_rebuild_device_tensor_from_numpy": "rebuilds a device tensor from a numpy array",
    "_rebuild_device_tensor_from_cpu_tensor": "moves a rebuilt CPU tensor to a device",
    "_rebuild_wrapper_subclass": "rebuilds a wrapper tensor subclass (the class is a separate global)",
    "_rebuild_from_type_v2": "rebuilds a tensor subclass: calls its func argument (itself a global judged "
    "on its own), converts to new_type and sets state",
    "_get_layout": "looks a torch.layout up by name in a fixed table",
}
TORCH_REASONS: dict[tuple[str, str], str] = {
    ("torch._C", "Generator"): "random number generator class; BUILD sets its state",
    ("torch.nn.functional", "relu"): "activation function Transformer layers store by reference (a tensor op)",
    ("torch.optim.lr_scheduler", "CyclicLR._triangular_scale_fn"): "CyclicLR's default scale function, stored "
    "by reference (returns a constant)",
}


def describe_torch_value(obj: Any) -> str | None:
    import torch

    kinds = (
        (torch.dtype, "torch dtype constant (not callable)"),
        (torch.layout, "torch layout constant (not callable)"),
        (torch.memory_format, "torch memory format constant (not callable)"),
        (torch.qscheme, "torch quantization scheme constant (not callable)"),
    )
    for kind, text in kinds:
        if type(obj) is kind:
            return text
    return None


def describe_torch(module: str, qualname: str, obj: Any) -> str:
    import torch

    text = describe_torch_value(obj)
    if text is not None:
        return text
    if (module, qualname) in TORCH_REASONS:
        return TORCH_REASONS[(module, qualname)]
    leaf = qualname.rsplit(".", 1)[-1]
    if leaf in TORCH_FUNCTION_REASONS:
        return TORCH_FUNCTION_REASONS[leaf]
    if obj is torch.Size:
        return "tensor shape value (tuple subclass)"
    if obj is torch.device:
        return "device value"
    if issubclass(type(obj), type):
        if issubclass(obj, torch.nn.Module):
            return "torch layer class; BUILD sets its state"
        if issubclass(obj, torch.nn.Parameter):
            return "tensor parameter class"
        if issubclass(obj, torch.Tensor):
            return "tensor class"
    if type(obj).__name__ == "tensortype" or leaf.endswith("Tensor"):
        return "legacy tensor type"
    if type(obj).__name__ == "StorageType" or leaf.endswith("Storage"):
        return "storage class named by tensors' persistent ids"
    return ""


@dataclass
class SafeTable:
    reasons: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    structural: set[tuple[str, str]] = field(default_factory=set)
    """Keys listed for what they are (allowlist, layer classes...) rather than only seen in a sample pickle."""

    def add(self, key: tuple[str, str], *fragments: str, sampled: bool = False) -> None:
        if not sampled:
            self.structural.add(key)
        entry = self.reasons.setdefault(key, [])
        for fragment in fragments:
            if fragment and fragment not in entry:
                entry.append(fragment)


def defined_classes(prefix: str, base: type) -> Iterator[tuple[str, str, type]]:
    """Classes defined in modules under ``prefix`` that subclass ``base``, by defining module and qualname."""
    for key, module in sorted(sys.modules.items()):
        if not (key == prefix or key.startswith(prefix + ".")) or not issubclass(type(module), types.ModuleType):
            continue
        for _attr, value in module_items(module):
            if not issubclass(type(value), type):
                continue
            try:
                own_module = type.__dict__["__dict__"].__get__(value).get("__module__")
                qualname = type.__dict__["__qualname__"].__get__(value)
                if own_module == key and issubclass(value, base) and "<locals>" not in qualname:
                    yield key, qualname, value
            except Exception:  # noqa: BLE001
                continue


def seen(descriptions: list[str]) -> str:
    shown = descriptions[:3]
    more = f" and {len(descriptions) - 3} more" if len(descriptions) > 3 else ""
    return "seen pickling " + ", ".join(shown) + more


def stdlib_samples() -> list[Sample]:
    import argparse as argparse_module
    import collections
    import datetime
    import decimal
    import fractions
    import http
    import pathlib
    import uuid

    samples = [
        Sample("collections.OrderedDict", lambda: collections.OrderedDict(a=1)),
        Sample("collections.Counter", lambda: collections.Counter("aab")),
        Sample("collections.deque", lambda: collections.deque([1, 2], maxlen=4)),
        Sample("argparse.Namespace", lambda: argparse_module.Namespace(lr=0.1, layers=[1, 2])),
        Sample("naive datetime", lambda: datetime.datetime(2024, 1, 2, 3, 4, 5, 6)),
        Sample("UTC datetime", lambda: datetime.datetime(2024, 1, 2, tzinfo=datetime.timezone.utc)),
        Sample(
            "fixed-offset datetime",
            lambda: datetime.datetime(2024, 1, 2, tzinfo=datetime.timezone(datetime.timedelta(hours=2), "X")),
        ),
        Sample("datetime.date", lambda: datetime.date(2024, 1, 2)),
        Sample("datetime.time", lambda: datetime.time(1, 2, 3)),
        Sample("datetime.timedelta", lambda: datetime.timedelta(days=1, seconds=2)),
        Sample("pathlib.Path", lambda: pathlib.Path("/data/run")),
        Sample("pathlib.PurePosixPath", lambda: pathlib.PurePosixPath("data/run")),
        Sample("pathlib.PureWindowsPath", lambda: pathlib.PureWindowsPath("C:/data")),
        Sample("decimal.Decimal", lambda: decimal.Decimal("1.25")),
        Sample("fractions.Fraction", lambda: fractions.Fraction(1, 3)),
        Sample("uuid.UUID", lambda: uuid.UUID(int=12345)),
        Sample("uuid.UUID with is_safe", lambda: uuid.UUID(int=1, is_safe=uuid.SafeUUID.safe)),
        Sample("set", lambda: {1, 2}),
        Sample("frozenset", lambda: frozenset({1})),
        Sample("bytearray", lambda: bytearray(b"ab")),
        Sample("bytes", lambda: b"ab\xff"),
        Sample("complex", lambda: 1 + 2j),
        Sample("slice", lambda: slice(1, 5, 2)),
        Sample("range", lambda: range(3)),
        Sample("Ellipsis", lambda: ...),
        Sample("NotImplemented", lambda: NotImplemented),
        Sample("compiled regex", lambda: re.compile(r"a+", re.IGNORECASE)),
        Sample("re.RegexFlag enum member", lambda: re.IGNORECASE),
        Sample("http.HTTPStatus enum member", lambda: http.HTTPStatus.OK),
    ]
    for factory in (list, dict, set, int, float, str, tuple):
        samples.append(
            Sample(f"collections.defaultdict({factory.__name__})", lambda f=factory: collections.defaultdict(f, a=f()))
        )
    return samples


def numpy_samples() -> list[Sample]:
    import numpy as np

    protocols = (2, 3, 4, 5)
    samples = [
        Sample("numpy int array", lambda: np.arange(6).reshape(2, 3)),
        Sample("numpy float16 array", lambda: np.zeros(3, np.float16)),
        Sample("numpy Fortran-order array", lambda: np.asfortranarray(np.zeros((2, 2)))),
        Sample("numpy object array", lambda: np.array([1, "a", None], dtype=object)),
        Sample("numpy unicode array", lambda: np.array(["ab", "c"])),
        Sample("numpy datetime64 array", lambda: np.array(["2024-01-02"], dtype="M8[D]")),
        Sample("numpy structured array", lambda: np.zeros(2, dtype=[("a", "<i4"), ("b", "<f8", (2,))])),
        Sample("numpy record array", lambda: np.rec.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")])),
        Sample("numpy masked array", lambda: np.ma.masked_array([1, 2, 3], mask=[0, 1, 0])),
        Sample("numpy matrix", lambda: np.asmatrix([[1, 2]])),
        Sample("numpy structured scalar", lambda: np.zeros(1, dtype=[("a", "i4")])[0]),
        Sample("numpy dtype", lambda: np.dtype("f4")),
        Sample("numpy structured dtype", lambda: np.dtype([("a", "<i4"), ("b", "<f8", (2,))])),
        Sample("numpy subarray dtype", lambda: np.dtype(("i4", (2,)))),
        Sample("numpy dtype with metadata", lambda: np.dtype("i4", metadata={"unit": "m"})),
        Sample("numpy datetime dtype", lambda: np.dtype("M8[ns]")),
        Sample("numpy.random.RandomState", lambda: np.random.RandomState(0)),
        Sample("numpy.random.Generator", lambda: np.random.default_rng(0)),
    ]
    for name in ("MT19937", "PCG64", "PCG64DXSM", "Philox", "SFC64"):
        samples.append(Sample(f"numpy.random.{name}", lambda n=name: getattr(np.random, n)(0)))
        samples.append(
            Sample(f"numpy.random.Generator({name})", lambda n=name: np.random.Generator(getattr(np.random, n)(0)))
        )
    for code in "?bhilqBHILQefdgFDGSUVOMm":
        samples.append(Sample(f"numpy {np.dtype(code).name} scalar", lambda c=code: np.zeros(1, dtype=c)[0]))
    for sample in samples:
        sample.protocols = protocols
    return samples


def torch_samples() -> list[Sample]:
    import torch
    from torch import nn

    def model() -> nn.Module:
        layers = nn.Sequential(
            nn.Linear(4, 4),
            nn.Conv1d(1, 1, 1),
            nn.Conv2d(1, 1, 1),
            nn.Conv3d(1, 1, 1),
            nn.BatchNorm1d(2),
            nn.BatchNorm2d(2),
            nn.LayerNorm(2),
            nn.GroupNorm(1, 2),
            nn.Embedding(3, 2),
            nn.LSTM(2, 2),
            nn.GRU(2, 2),
            nn.RNN(2, 2),
            nn.MultiheadAttention(4, 2),
            nn.Dropout(),
            nn.ReLU(),
            nn.GELU(),
            nn.SiLU(),
            nn.Tanh(),
            nn.Sigmoid(),
            nn.Softmax(dim=-1),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Identity(),
            nn.ConvTranspose2d(1, 1, 1),
            nn.Upsample(scale_factor=2.0),
        )
        return nn.ModuleDict(
            {
                "layers": layers,
                "list": nn.ModuleList([nn.Linear(1, 1)]),
                "params": nn.ParameterList([nn.Parameter(torch.zeros(1))]),
                "pdict": nn.ParameterDict({"w": nn.Parameter(torch.zeros(1))}),
                "transformer": nn.Transformer(8, 2, 1, 1, 16),
            }
        )

    def trained_optimizer(cls: type) -> Any:
        # SparseAdam wants sparse gradients, Muon 2-D parameters only.
        sparse = cls.__name__ == "SparseAdam"
        layer = nn.Embedding(3, 2, sparse=True) if sparse else nn.Linear(2, 2, bias=cls.__name__ != "Muon")
        inputs = torch.tensor([0, 2]) if sparse else torch.ones(1, 2)
        optimizer = cls(layer.parameters())
        layer(inputs).sum().backward()
        if cls.__name__ == "LBFGS":
            optimizer.step(lambda: layer(inputs).sum())
        else:
            optimizer.step()
        return optimizer

    def scheduler(name: str, **kwargs: Any) -> Any:
        optimizer = torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=0.1)
        return getattr(torch.optim.lr_scheduler, name)(optimizer, **kwargs)

    protocols = (2, 3, 4, 5)
    samples: list[Sample] = []
    for name, value in module_items(torch):
        if describe_torch_value(value) is not None:
            samples.append(Sample(f"torch.{name}", lambda v=value: v, protocols))
    for name, value in module_items(torch):
        if type(value) is torch.dtype:
            samples.append(Sample(f"{name} tensor", lambda v=value: torch.zeros(2, dtype=v), protocols, True, True))
    samples += [
        Sample("torch.device", lambda: torch.device("cpu"), protocols, True),
        Sample("torch.Size", lambda: torch.Size([2, 3]), protocols, True),
        Sample("tensor view", lambda: torch.arange(6.0)[2:], protocols, True),
        Sample("tensor requiring grad", lambda: torch.ones(2, requires_grad=True), protocols, True),
        Sample("sparse COO tensor", lambda: torch.eye(2).to_sparse(), protocols, True),
        Sample("sparse CSR tensor", lambda: torch.eye(2).to_sparse_csr(), protocols, True),
        Sample(
            "quantized tensor", lambda: torch.quantize_per_tensor(torch.ones(2), 0.1, 0, torch.quint8), protocols, True
        ),
        Sample(
            "per-channel quantized tensor",
            lambda: torch.quantize_per_channel(
                torch.ones(2, 2), torch.ones(2), torch.zeros(2, dtype=torch.long), 0, torch.qint8
            ),
            protocols,
            True,
        ),
        Sample("nested tensor", lambda: torch.nested.nested_tensor([torch.zeros(2), torch.zeros(3)]), protocols, True),
        Sample("meta tensor", lambda: torch.zeros(2, device="meta"), protocols, True),
        Sample("nn.Parameter", lambda: nn.Parameter(torch.zeros(2)), protocols, True),
        Sample("nn.Buffer", lambda: nn.Buffer(torch.zeros(1)), protocols, True),
        Sample("RNG state", torch.get_rng_state, protocols, True),
        Sample("torch.Generator", torch.Generator, protocols, True),
        Sample("full model", model, protocols, True),
        Sample("model state_dict", lambda: model().state_dict(), protocols, True),
        Sample("half-precision model", lambda: nn.Linear(2, 2).half(), protocols, True),
    ]
    for module, qualname, cls in defined_classes("torch.optim", torch.optim.Optimizer):
        if qualname.startswith("_") or cls is torch.optim.Optimizer:
            continue
        samples.append(Sample(f"{module}.{qualname}", lambda c=cls: trained_optimizer(c), protocols, True))
        samples.append(
            Sample(f"{module}.{qualname} state_dict", lambda c=cls: trained_optimizer(c).state_dict(), protocols, True)
        )
    for name, kwargs in (
        ("StepLR", {"step_size": 1}),
        ("MultiStepLR", {"milestones": [1]}),
        ("ExponentialLR", {"gamma": 0.9}),
        ("CosineAnnealingLR", {"T_max": 3}),
        ("OneCycleLR", {"max_lr": 1.0, "total_steps": 3}),
        ("ReduceLROnPlateau", {}),
        ("CyclicLR", {"base_lr": 0.01, "max_lr": 0.1}),
        ("CosineAnnealingWarmRestarts", {"T_0": 2}),
        ("LinearLR", {}),
        ("ConstantLR", {}),
        ("PolynomialLR", {}),
    ):
        samples.append(Sample(f"lr_scheduler.{name}", lambda n=name, k=kwargs: scheduler(n, **k), protocols, True))
        samples.append(
            Sample(
                f"lr_scheduler.{name} state_dict",
                lambda n=name, k=kwargs: scheduler(n, **k).state_dict(),
                protocols,
                True,
            )
        )
    # torch.save also pickles numpy values that checkpoints carry.
    samples += [Sample(f"torch.save of {s.description}", s.make, protocols, True) for s in numpy_samples()[:3]]
    return samples


def build_safe(springboards: dict[str, dict[str, str]], versions: dict[str, str | None]) -> SafeTable:
    table = SafeTable()
    found = sample_globals(stdlib_samples(), springboards)
    for key, users in sorted(found.items()):
        table.add(key, STDLIB_REASONS.get(key, ""), seen(users), sampled=True)
    import pathlib

    for name, value in module_items(pathlib):
        if issubclass(type(value), type) and issubclass(value, pathlib.PurePath) and not name.startswith("_"):
            table.add(
                ("pathlib", name),
                STDLIB_REASONS.get(
                    ("pathlib", name),
                    "path class; constructing a path touches no file (its methods are separate globals)",
                ),
            )
    if versions.get("numpy"):
        build_safe_numpy(table, springboards)
    if versions.get("torch"):
        build_safe_torch(table, springboards)
    missing = [key for key, fragments in table.reasons.items() if not fragments]
    for key in missing:
        log(f"safe entry {key} has no reason")
    return table


def build_safe_numpy(table: SafeTable, springboards: dict[str, dict[str, str]]) -> None:
    found = sample_globals(numpy_samples(), springboards)
    for key, users in sorted(found.items()):
        table.add(key, STDLIB_REASONS.get(key, ""), seen(users), sampled=True)
        module, qualname = key
        # numpy 2 moved numpy.core to numpy._core and keeps numpy.core.* as shims; numpy 1.x pickles (most
        # checkpoints in the wild) name the old module. Add the old spelling when the shim resolves to the
        # very same object.
        if module.startswith("numpy._core."):
            legacy = "numpy.core." + module[len("numpy._core.") :]
            shim = guarded_import(legacy)
            target = sys.modules.get(module)
            if shim is None or target is None:
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    same = getattr(shim, qualname) is resolve_dotted(target, qualname)
            except Exception:  # noqa: BLE001
                same = False
            if same:
                table.add(
                    (legacy, qualname),
                    STDLIB_REASONS.get(key, ""),
                    f"numpy<2 spelling of {module}.{qualname} (numpy 2 keeps a shim to the same object)",
                    sampled=True,
                )


def build_safe_torch(table: SafeTable, springboards: dict[str, dict[str, str]]) -> None:
    import torch
    from torch import _weights_only_unpickler as weights_only

    for module, qualname, _cls in defined_classes("torch.nn.modules", torch.nn.Module):
        table.add((module, qualname), "torch layer class; BUILD sets its state")
    for module, qualname, _cls in defined_classes("torch.optim", torch.optim.Optimizer):
        table.add((module, qualname), "torch optimizer class; BUILD sets its param groups and state")
    scheduler_bases = tuple(
        cls
        for cls in (vars(torch.optim.lr_scheduler).get(n) for n in ("LRScheduler", "ReduceLROnPlateau"))
        if cls is not None
    )
    for base in scheduler_bases:
        for module, qualname, _cls in defined_classes("torch.optim", base):
            table.add((module, qualname), "torch learning-rate scheduler class; BUILD sets its state")
    for name, value in module_items(torch):
        text = describe_torch_value(value)
        if text is not None and not name.startswith("_"):
            table.add(("torch", name), text)

    allowed = weights_only._get_allowed_globals()
    for dotted, obj in sorted(allowed.items()):
        split = split_dotted(dotted)
        if split is None:
            log(f"weights_only global {dotted} has no importable module prefix")
            continue
        module, qualname = canonicalise(*split, springboards)
        target = sys.modules.get(split[0])
        # Storage names map to StorageType placeholders in the allowlist, not to the classes themselves.
        placeholder = type(obj).__name__ == "StorageType"
        if not placeholder and (target is None or resolve_dotted(target, split[1]) is not obj):
            log(f"weights_only global {dotted} does not resolve statically to the allowlisted object")
        what = describe_torch(module, qualname, obj) if module.split(".")[0] == "torch" else ""
        table.add(
            (module, qualname),
            STDLIB_REASONS.get((module, qualname), what),
            "allowed by torch's weights_only unpickler",
        )

    found = sample_globals(torch_samples(), springboards)
    for key, users in sorted(found.items()):
        module, qualname = key
        target = sys.modules.get(module)
        obj = resolve_dotted(target, qualname) if target is not None else MISSING
        what = describe_torch(module, qualname, obj) if module.split(".")[0] == "torch" else ""
        table.add(key, STDLIB_REASONS.get(key, what), seen(users), sampled=True)


# --------------------------------------------------------------------------------------------------
# (c) sinks: bounded walk over bytecode references
# --------------------------------------------------------------------------------------------------

PROC, CODE, DESER, IMPORT, NET, FILE, INDIR = CATEGORIES

# (module, attribute pattern, category, what it does). Patterns are full regexes over one module's names.
ROOT_SINKS: tuple[tuple[str, str, str, str], ...] = (
    ("os", "system", PROC, "runs a shell command"),
    ("os", "popen", PROC, "runs a shell command through a pipe"),
    ("os", "exec[lv]p?e?", PROC, "replaces the process with another program"),
    ("os", "spawn[lv]p?e?", PROC, "starts a program"),
    ("os", "posix_spawnp?", PROC, "starts a program"),
    ("os", "fork|forkpty|startfile", PROC, "forks the process or starts a program"),
    ("_posixsubprocess", "fork_exec", PROC, "forks and executes a program"),
    ("subprocess", "Popen", PROC, "starts a program"),
    ("_ctypes", "dlopen|LoadLibrary", PROC, "loads a native library"),
    ("ctypes", "CDLL|PyDLL|WinDLL|OleDLL", PROC, "loads a native library to call into"),
    (
        "ctypes",
        "LibraryLoader.LoadLibrary|LibraryLoader.__getattr__|LibraryLoader.__getitem__",
        PROC,
        "loads a native library to call into",
    ),
    ("builtins", "eval", CODE, "evaluates a Python expression"),
    ("builtins", "exec", CODE, "executes Python source or code"),
    ("builtins", "compile", CODE, "compiles Python source to code"),
    ("builtins", "breakpoint", CODE, "calls the debugger hook"),
    ("builtins", "__import__", IMPORT, "imports a module by name"),
    ("importlib", "import_module|__import__", IMPORT, "imports a module by name"),
    ("importlib._bootstrap", "_gcd_import|_find_and_load", IMPORT, "imports a module by name"),
    ("_imp", "create_dynamic|exec_dynamic", IMPORT, "loads an extension module"),
    ("pickle", "loads|load|Unpickler|_loads|_load|_Unpickler", DESER, "unpickles data"),
    ("_pickle", "loads|load|Unpickler", DESER, "unpickles data"),
    ("marshal", "loads|load", DESER, "unmarshals code objects"),
    ("torch.serialization", "load|_load|_legacy_load", DESER, "unpickles a file (torch.load)"),
    ("torch._C", "import_ir_module|import_ir_module_from_buffer", CODE, "loads TorchScript code"),
    (
        "socket",
        "socket|create_connection|create_server|getaddrinfo|gethostbyname|gethostbyname_ex|gethostbyaddr|getnameinfo",
        NET,
        "opens a connection or resolves a host name",
    ),
    (
        "_socket",
        "socket|getaddrinfo|gethostbyname|gethostbyname_ex|gethostbyaddr|getnameinfo",
        NET,
        "opens a connection or resolves a host name",
    ),
    ("urllib.request", "urlopen", NET, "opens a URL"),
    ("builtins", "open", FILE, "opens a file"),
    ("io", "open_code|FileIO", FILE, "opens a file"),
    (
        "os",
        "open|remove|unlink|rmdir|removedirs|rename|renames|replace|mkdir|makedirs|truncate|chmod|lchmod|"
        "chown|lchown|symlink|link|utime|mkfifo|mknod|chroot|chdir",
        FILE,
        "opens, changes or deletes files",
    ),
    # Indirection primitives: listed as sinks themselves but not propagated to their callers (almost all
    # code uses getattr).
    (
        "builtins",
        "getattr|setattr|delattr|vars|globals|locals",
        INDIR,
        "reaches attributes and callables by computed names",
    ),
    ("operator", "attrgetter|methodcaller", INDIR, "reaches attributes and methods by computed names"),
    ("functools", "partial|reduce", INDIR, "calls a callable given as data"),
)
NON_PROPAGATING = frozenset({INDIR})
# Roots listed as sinks themselves whose callers are not marked: compile() alone runs nothing (ast.parse,
# typing and inspect compile constantly); the code that runs the result is what matters.
NON_PROPAGATING_ROOTS = frozenset({"builtins.compile"})
# Functions that call a sink only on data they build and validate themselves, so their callers are not
# sinks through them: namedtuple evals a template after checking every name is an identifier.
STOP_FUNCTIONS = frozenset({"collections.namedtuple"})

# Advisory examples that must come out as sinks; the script warns when the walk misses one.
EXPECTED_SINKS = (
    ("uuid", "_get_command_stdout", PROC),
    ("_osx_support", "_read_output", PROC),
    ("_aix_support", "_read_cmd_output", PROC),
    ("imaplib", "IMAP4_stream", PROC),
    ("pydoc", "pipepager", PROC),
    ("torch.storage", "_load_from_bytes", DESER),
    ("torch.fx.graph_module", "_forward_from_src", CODE),
    ("numpy.testing._private.utils", "runstring", CODE),
)

# Node kinds: ("f", function, context class or None), ("c", class), ("b", other callable: a leaf).
Node = tuple[str, Any, Any]


def node_key(node: Node) -> tuple[str, int, int]:
    return node[0], id(node[1]), id(node[2])


def to_node(obj: Any, ctx: Any = None) -> Node | None:
    """What calling ``obj`` runs, statically: a Python function (with the class ``self`` resolves in), a
    class (its constructor), or an opaque callable."""
    for _ in range(8):  # unwrap staticmethod/classmethod/bound methods/partials/__wrapped__
        kind = type(obj)
        if kind is types.FunctionType:
            return "f", obj, ctx
        if issubclass(kind, type):
            return "c", obj, None
        if kind is staticmethod:
            obj, ctx = obj.__func__, None
        elif kind is classmethod:
            obj = obj.__func__
        elif kind is types.MethodType:
            owner = obj.__self__
            ctx = owner if issubclass(type(owner), type) else type(owner)
            obj = obj.__func__
        elif issubclass(
            kind,
            (
                types.BuiltinFunctionType,
                types.BuiltinMethodType,
                types.WrapperDescriptorType,
                types.MethodDescriptorType,
                types.ClassMethodDescriptorType,
            ),
        ):
            return "b", obj, None
        else:
            import functools

            if issubclass(kind, functools.partial):
                obj = obj.func
                continue
            wrapped = instance_dict(obj).get("__wrapped__", MISSING)
            if wrapped is MISSING:
                return None
            obj = wrapped
    return None


@dataclass(frozen=True)
class Ref:
    """One static reference in a code object: how to find the object, then attribute names."""

    kind: str  # "global", "deref", "self", "super", "import"
    name: str
    attrs: tuple[str, ...]
    module: str = ""
    level: int = 0
    constant_call: bool = False
    """Called right away with only constant arguments (``import_module("torch._dynamo")``): the pickle
    cannot steer what that call does, so the reference is not an edge."""
    value_use: bool = False
    """Used as a value, not called: an argument of a call (``isinstance(a, np.memmap)``) or compared.
    A class used so is not instantiated, so it is not an edge (a function still is: it may be a callback)."""


_ATTR_OPS = frozenset({"LOAD_ATTR", "LOAD_METHOD"})
_SELF_NAMES = frozenset({"self", "cls"})
_STORE_OPS = frozenset({"STORE_FAST", "STORE_NAME", "STORE_DEREF", "STORE_GLOBAL"})
_code_refs_cache: dict[types.CodeType, tuple[Ref, ...]] = {}


def code_refs(code: types.CodeType, top: bool = True) -> tuple[Ref, ...]:
    cached = _code_refs_cache.get(code)
    if cached is not None:
        return cached
    refs: list[Ref] = []
    imports: dict[str, tuple[str, str, int]] = {}  # local name -> (module, attribute or "", level)
    try:
        instructions = [i for i in dis.get_instructions(code) if i.opname not in ("CACHE", "EXTENDED_ARG")]
    except Exception:  # noqa: BLE001
        instructions = []
    free = set(code.co_freevars)
    chain: Ref | None = None
    pending_import: tuple[str, int, bool] | None = None  # (module, level, has fromlist)
    pending_from = ""

    def flush(index: int) -> None:
        nonlocal chain
        if chain is not None:
            if chain.kind in ("global", "deref", "import") and constant_call_at(instructions, index):
                chain = Ref(chain.kind, chain.name, chain.attrs, chain.module, chain.level, constant_call=True)
            elif value_use_at(instructions, index):
                chain = Ref(chain.kind, chain.name, chain.attrs, chain.module, chain.level, value_use=True)
            refs.append(chain)
        chain = None

    for index, ins in enumerate(instructions):
        op, arg = ins.opname, ins.argval
        if op == "IMPORT_NAME":
            flush(index)
            level = instructions[index - 2].argval if index >= 2 else 0
            fromlist = instructions[index - 1].argval if index >= 1 else None
            pending_import = (str(arg), level if isinstance(level, int) else 0, fromlist is not None)
            pending_from = ""
            continue
        if pending_import is not None:
            module, level, has_fromlist = pending_import
            if op == "IMPORT_FROM":
                pending_from = str(arg)
                continue
            if op in _STORE_OPS:
                if pending_from and not has_fromlist:  # import a.b as c: c is the module a.b
                    imports[str(arg)] = (module, "", level)
                elif pending_from:  # from a import b
                    imports[str(arg)] = (module, pending_from, level)
                elif not has_fromlist:
                    imports[str(arg)] = (module.split(".")[0] if level == 0 else module, "", level)
                else:
                    imports[str(arg)] = (module, "", level)
                pending_from = ""
                continue
            if op != "POP_TOP" or not pending_from:
                pending_import = None
        if op in _ATTR_OPS:
            if chain is not None:
                chain = Ref(chain.kind, chain.name, (*chain.attrs, str(arg)), chain.module, chain.level)
            continue
        if op == "LOAD_SUPER_ATTR":  # Python 3.12+: super().name
            flush(index)
            refs.append(Ref("super", str(arg), ()))
            continue
        if op in ("PRECALL", "CALL") and ins.arg == 0 and chain == Ref("global", "super", ()):
            if op == "CALL":  # Python 3.11: super() then LOAD_ATTR/LOAD_METHOD name
                chain = Ref("super-call", "", ())
            continue
        flush(index)
        if op in ("LOAD_GLOBAL", "LOAD_NAME"):
            chain = Ref("global", str(arg), ())
        elif op in ("LOAD_FAST", "LOAD_DEREF", "LOAD_CLASSDEREF", "LOAD_FAST_CHECK"):
            name = str(arg)
            if name in imports:
                module, attr, level = imports[name]
                chain = Ref("import", attr, (), module, level)
            elif name in _SELF_NAMES:
                chain = Ref("self", "", ())
            elif top and op == "LOAD_DEREF" and name in free:
                chain = Ref("deref", name, ())
        elif op == "LOAD_CONST" and type(arg) is types.CodeType:
            refs.extend(code_refs(arg, top=False))
    flush(len(instructions))
    # "super-call" chains become super refs once an attribute follows.
    out = tuple(
        Ref("super", r.attrs[0], r.attrs[1:]) if r.kind == "super-call" and r.attrs else r
        for r in refs
        if r.kind != "super-call" or r.attrs
    )
    _code_refs_cache[code] = out
    return out


_CONSTANT_OPS = frozenset(
    "LOAD_CONST KW_NAMES BUILD_TUPLE BUILD_LIST BUILD_SET BUILD_MAP BUILD_CONST_KEY_MAP LIST_EXTEND SET_UPDATE "
    "PUSH_NULL".split()
)


def constant_call_at(instructions: list[dis.Instruction], index: int) -> bool:
    """Whether the instructions from ``index`` push only constants (at least one) and then call."""
    consts = 0
    for ins in instructions[index:]:
        if ins.opname in ("PRECALL", "CALL"):
            return consts > 0
        if ins.opname not in _CONSTANT_OPS:
            return False
        consts += ins.opname == "LOAD_CONST"
    return False


def value_use_at(instructions: list[dis.Instruction], index: int) -> bool:
    """Whether the value just loaded is an argument of a call that follows, or is compared."""
    following = instructions[index : index + 2]
    if not following:
        return False
    first = following[0]
    if first.opname in ("PRECALL", "CALL"):
        return bool(first.arg)
    if first.opname in ("COMPARE_OP", "IS_OP", "CONTAINS_OP"):
        return True
    return first.opname == "BUILD_TUPLE" and len(following) > 1 and following[1].opname in ("PRECALL", "CALL")


def resolve_import(module: str, level: int, globals_: dict[str, Any]) -> types.ModuleType | None:
    if level:
        package = globals_.get("__package__") or ""
        if not isinstance(package, str) or not package:
            return None
        pieces = package.split(".")
        if level - 1 > len(pieces):
            return None
        base = ".".join(pieces[: len(pieces) - (level - 1)])
        module = f"{base}.{module}" if module else base
    found = sys.modules.get(module)
    return found if issubclass(type(found), types.ModuleType) else None


def defining_class(func: Any, ctx: type) -> type | None:
    for klass in static_mro(ctx):
        try:
            values = type.__dict__["__dict__"].__get__(klass).values()
        except Exception:  # noqa: BLE001
            continue
        for value in values:
            if value is func or (type(value) in (staticmethod, classmethod) and value.__func__ is func):
                return klass
    return None


class Walker:
    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.roots: dict[tuple[str, int, int], tuple[str, str, str]] = {}  # key -> (name, category, desc)
        self.objects: dict[tuple[str, int, int], Node] = {}
        self.edges: dict[tuple[str, int, int], list[tuple[tuple[str, int, int], int]]] = {}

    # -- roots --------------------------------------------------------------------------------------
    def add_roots(self) -> None:
        for module_name, pattern, category, desc in ROOT_SINKS:
            module = sys.modules.get(module_name)
            if module is None:
                continue
            regex = re.compile(pattern)
            names = [n for n, _ in module_items(module) if regex.fullmatch(n)]
            names += [n for n in pattern.split("|") if "." in n]
            for name in sorted(set(names)):
                obj = resolve_dotted(module, name)
                node = to_node(obj) if obj is not MISSING else None
                if node is None:
                    continue
                key = node_key(node)
                self.objects[key] = node
                self.roots.setdefault(key, (f"{module_name}.{name}", category, desc))

    # -- graph --------------------------------------------------------------------------------------
    def callees(self, node: Node) -> list[tuple[Node, int]]:
        """(callee, hop cost): a class costs nothing to enter (its constructor is the same call)."""
        kind, obj, ctx = node
        out: list[tuple[Node, int]] = []
        if kind == "c":
            for name in ("__init__", "__new__", "__post_init__"):
                value = class_lookup(obj, name)
                if value is MISSING:
                    continue
                callee = to_node(value, obj)
                if callee is not None and callee[0] == "f":
                    out.append((callee, 0))
            return out
        if kind != "f" or display(node) in STOP_FUNCTIONS:
            return out
        try:
            code = obj.__code__
            globals_ = obj.__globals__
            closure = obj.__closure__ or ()
        except Exception:  # noqa: BLE001
            return out
        cells = dict(zip(code.co_freevars, closure, strict=False))
        wrapped = instance_dict(obj).get("__wrapped__", MISSING)
        if wrapped is not MISSING:
            callee = to_node(wrapped)
            if callee is not None:
                out.append((callee, 1))
        for ref in code_refs(code):
            if ref.constant_call:
                continue
            target: Any = MISSING
            attrs = ref.attrs
            holder_ctx = None
            if ref.kind == "global":
                target = globals_.get(ref.name, MISSING) if type(globals_) is dict else MISSING
                if target is MISSING:
                    target = vars(builtins).get(ref.name, MISSING)
            elif ref.kind == "deref":
                try:
                    target = cells[ref.name].cell_contents
                except Exception:  # noqa: BLE001
                    target = MISSING
            elif ref.kind == "import":
                module = resolve_import(ref.module, ref.level, globals_)
                target = module if module is not None else MISSING
                if target is not MISSING and ref.name:
                    target = static_getattr(target, ref.name)
            elif ref.kind in ("self", "super") and issubclass(type(ctx), type):
                if ref.kind == "super":
                    owner = defining_class(obj, ctx)
                    target = class_lookup(ctx, ref.name, owner) if owner is not None else MISSING
                elif attrs:
                    target = class_lookup(ctx, attrs[0])
                    attrs = attrs[1:]
                holder_ctx = ctx
            if target is MISSING:
                continue
            for attr in attrs:
                parent = target
                target = static_getattr(target, attr)
                if target is MISSING:
                    break
                if issubclass(type(parent), type):
                    # Base.method(self, ...) from a subclass method keeps the subclass as self's class.
                    inside = issubclass(type(ctx), type) and parent in static_mro(ctx)
                    holder_ctx = ctx if inside else parent
                elif issubclass(type(parent), types.ModuleType):
                    holder_ctx = None
                else:
                    holder_ctx = type(parent)
            if target is MISSING:
                continue
            callee = to_node(target, holder_ctx)
            if callee is not None and not (ref.value_use and callee[0] == "c"):
                out.append((callee, 1))
        return out

    def explore(self, entries: Iterable[Node]) -> None:
        """Collect edges for every node within ``depth`` hops of an entry."""
        budget: dict[tuple[str, int, int], int] = {}
        queue: deque[tuple[Node, int]] = deque()
        for node in entries:
            key = node_key(node)
            if budget.get(key, -1) < self.depth:
                budget[key] = self.depth
                self.objects[key] = node
                queue.append((node, self.depth))
        while queue:
            node, left = queue.popleft()
            key = node_key(node)
            if budget.get(key, -1) > left or key in self.roots:
                continue
            if key not in self.edges:
                try:
                    found = self.callees(node)
                except Exception as exc:  # noqa: BLE001
                    log(f"could not walk {display(node)}: {brief(exc)}")
                    found = []
                edges = []
                for callee, cost in found:
                    callee_key = node_key(callee)
                    self.objects.setdefault(callee_key, callee)
                    edges.append((callee_key, cost))
                self.edges[key] = edges
            for callee_key, cost in self.edges[key]:
                remaining = left - cost
                if remaining < 0 or budget.get(callee_key, -1) >= remaining:
                    continue
                budget[callee_key] = remaining
                queue.appendleft((self.objects[callee_key], remaining)) if cost == 0 else queue.append(
                    (self.objects[callee_key], remaining)
                )

    def distances(self) -> dict[tuple[str, int, int], dict[str, tuple[int, tuple[str, int, int] | None]]]:
        """Per node and category: (hops to the nearest root of that category, next node on the path)."""
        reverse: dict[tuple[str, int, int], list[tuple[tuple[str, int, int], int]]] = {}
        for caller, edges in self.edges.items():
            for callee, cost in edges:
                reverse.setdefault(callee, []).append((caller, cost))
        for callers in reverse.values():
            callers.sort(key=lambda item: (display(self.objects[item[0]]), item[1]))
        result: dict[tuple[str, int, int], dict[str, tuple[int, tuple[str, int, int] | None]]] = {}
        for category in CATEGORIES:
            roots = sorted((k for k, v in self.roots.items() if v[1] == category), key=lambda k: self.roots[k][0])
            best: dict[tuple[str, int, int], tuple[int, tuple[str, int, int] | None]] = {k: (0, None) for k in roots}
            if category not in NON_PROPAGATING:
                queue: deque[tuple[str, int, int]] = deque(
                    k for k in roots if self.roots[k][0] not in NON_PROPAGATING_ROOTS
                )
                while queue:
                    key = queue.popleft()
                    dist = best[key][0]
                    for caller, cost in reverse.get(key, ()):
                        new = dist + cost
                        if new > self.depth or caller in self.roots:
                            continue
                        old = best.get(caller)
                        if old is None or new < old[0]:
                            best[caller] = (new, key)
                            queue.appendleft(caller) if cost == 0 else queue.append(caller)
            for key, value in best.items():
                result.setdefault(key, {})[category] = value
        return result


def display(node: Node) -> str:
    kind, obj, _ctx = node
    try:
        if kind == "c":
            mapping = type.__dict__["__dict__"].__get__(obj)
            module = mapping.get("__module__")
            qualname = type.__dict__["__qualname__"].__get__(obj)
        else:
            module = getattr(obj, "__module__", None) if kind == "f" else instance_dict(obj).get("__module__")
            if kind == "b":
                module = object.__getattribute__(obj, "__module__") if hasattr(type(obj), "__module__") else None
            qualname = object.__getattribute__(obj, "__qualname__")
    except Exception:  # noqa: BLE001
        return repr(type(obj))
    return f"{module}.{qualname}" if module else str(qualname)


def class_members(cls: type) -> list[tuple[str, Any]]:
    """Methods a class has (own and inherited), by name, as static values."""
    out: dict[str, Any] = {}
    for klass in reversed(static_mro(cls)):
        if klass is object:
            continue
        try:
            items = list(type.__dict__["__dict__"].__get__(klass).items())
        except Exception:  # noqa: BLE001
            continue
        for name, value in items:
            if isinstance(name, str):
                out[name] = value
    return sorted(out.items())


def sink_entries(
    modules: dict[str, types.ModuleType],
) -> list[tuple[tuple[str, str], Node, type | None]]:
    """(key, node, owning class for method entries) for every candidate global in the domain."""
    out: list[tuple[tuple[str, str], Node, type | None]] = []
    for module_name, module in modules.items():
        for attr, value in module_items(module):
            if is_dunder(attr) or issubclass(type(value), types.ModuleType):
                continue
            node = to_node(value)
            if node is not None:
                out.append(((module_name, attr), node, None))
            if node is not None and node[0] == "c":
                owner: type | None = value
            elif node is None and in_domain(getattr(type(value), "__module__", "") or ""):
                owner = type(value)  # a module-level instance: its methods are reachable as attr.method
            else:
                owner = None
            if owner is None:
                continue
            for name, member in class_members(owner):
                if name in ("__init__", "__new__") and owner is value:
                    continue  # the class entry itself stands for its constructor
                method = to_node(member, owner)
                if method is None or method[0] not in ("f", "b"):
                    continue
                # Methods inherited from outside the domain (sympy under torch's symbolic classes) would
                # only repeat what that library does; the domain's own methods and the roots are listed.
                defined_in = getattr(method[1], "__module__", None) if method[0] == "f" else None
                if method[0] == "b" or (isinstance(defined_in, str) and in_domain(defined_in)):
                    out.append(((module_name, f"{attr}.{name}"), method, owner))
    return out


def build_sinks(modules: dict[str, types.ModuleType], depth: int) -> dict[tuple[str, str], tuple[str, str]]:
    walker = Walker(depth)
    walker.add_roots()
    entries = sink_entries(modules)
    log(f"sink walk: {len(entries)} candidate globals, {len(walker.roots)} root sinks")
    walker.explore(node for _key, node, _owner in entries)
    log(f"sink walk: {len(walker.edges)} functions walked")
    distances = walker.distances()
    out: dict[tuple[str, str], tuple[str, str]] = {}
    for key, node, _owner in entries:
        per_category = distances.get(node_key(node))
        if not per_category:
            continue
        category = next(c for c in CATEGORIES if c in per_category)
        out[key] = (category, sink_reason(walker, distances, node_key(node), category))
    return out


def sink_reason(walker: Walker, distances: dict[Any, dict[str, Any]], key: Any, category: str) -> str:
    root = walker.roots.get(key)
    if root is not None:
        return f"root sink {root[0]}: {root[2]}"
    path: list[str] = []
    current = distances[key][category][1]
    while current is not None and current not in walker.roots:
        name = display(walker.objects[current])
        if not path or path[-1] != name:
            path.append(name)
        current = distances[current][category][1]
    if current is None:
        return "reaches a sink"
    via = f" (via {' -> '.join(path)})" if path else ""
    return f"calls {walker.roots[current][0]}{via}"


# --------------------------------------------------------------------------------------------------
# Putting it together
# --------------------------------------------------------------------------------------------------


def generate(depth: int) -> dict[str, Any]:
    started = time.monotonic()
    versions = import_optional()
    import_stdlib()
    log(f"imported {len(sys.modules)} modules in {time.monotonic() - started:.1f}s")
    modules = domain_modules()
    springboards = build_springboards(modules)
    log(f"springboards: {len(springboards)} modules, {sum(map(len, springboards.values()))} attributes")
    safe = build_safe(springboards, versions)
    log(f"safe: {len(safe.reasons)} globals ({time.monotonic() - started:.1f}s)")
    modules = domain_modules()  # sampling may have imported more (numpy.random._pickle)
    sinks = build_sinks(modules, depth)
    log(f"sinks: {len(sinks)} globals ({time.monotonic() - started:.1f}s)")

    for module, qualname, category in EXPECTED_SINKS:
        got = sinks.get((module, qualname))
        if module.split(".")[0] in versions and not versions[module.split(".")[0]]:
            continue
        if module not in modules or resolve_dotted(modules[module], qualname) is MISSING:
            log(f"expected sink {module}.{qualname} does not exist in this environment")
        elif got is None or got[0] != category:
            log(f"expected sink {module}.{qualname} ({category}) came out as {got}")
    # Safe and a sink at once: a global only *seen* in a sample pickle loses its safe mark (CyclicLR pickles
    # builtins.getattr); one listed for what it is (allowlist, layer class) stays safe, the walk being an
    # over-approximation. Both are logged for review.
    for key in sorted(set(safe.reasons) & set(sinks)):
        if key in safe.structural:
            log(
                f"conflict: {key[0]}.{key[1]} is listed safe and walks to a {sinks[key][0]} sink "
                f"({sinks[key][1]}); kept as safe"
            )
            del sinks[key]
        else:
            log(f"conflict: {key[0]}.{key[1]} seen in a sample pickle is a {sinks[key][0]} sink; not safe")
            del safe.reasons[key]
    # A sink class already covers its methods (the scanner matches qualname prefixes).
    for module, qualname in sorted(sinks):
        head = qualname.rsplit(".", 1)[0]
        if "." in qualname and (module, head) in sinks and (module, head) not in safe.reasons:
            del sinks[(module, qualname)]

    log(f"final: {len(safe.reasons)} safe, {len(sinks)} sinks (sink classes cover their methods)")
    return {
        "generated_by": GENERATED_BY,
        "python": platform.python_version(),
        "numpy": versions.get("numpy"),
        "torch": versions.get("torch"),
        "springboards": springboards,
        "safe": [
            {"module": m, "qualname": q, "reason": "; ".join(safe.reasons[(m, q)])} for m, q in sorted(safe.reasons)
        ],
        "sinks": [
            {"module": m, "qualname": q, "category": sinks[(m, q)][0], "reason": sinks[(m, q)][1]}
            for m, q in sorted(sinks)
        ],
    }


def render(data: dict[str, Any]) -> str:
    """JSON with one springboard module and one safe/sink entry per line: small, diffable, reviewable."""

    def dump(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False)

    def block(rows: list[str], indent: str) -> list[str]:
        return [f"{indent}{row}{',' if i < len(rows) - 1 else ''}" for i, row in enumerate(rows)]

    lines = ["{"]
    lines += [f" {dump(key)}: {dump(data[key])}," for key in ("generated_by", "python", "numpy", "torch")]
    lines.append(' "springboards": {')
    lines += block([f"{dump(m)}: {dump(attrs)}" for m, attrs in data["springboards"].items()], "  ")
    lines.append(" },")
    for section, last in (("safe", False), ("sinks", True)):
        lines.append(f' "{section}": [')
        lines += block([dump(entry) for entry in data[section]], "  ")
        lines.append(" ]" if last else " ],")
    lines.append("}")
    text = "\n".join(lines) + "\n"
    if json.loads(text) != data:
        raise AssertionError("rendered JSON does not round-trip")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", "-o", help="write here instead of standard output")
    parser.add_argument("--depth", type=int, default=DEFAULT_DEPTH, help="call hops from a global to a root sink")
    args = parser.parse_args(argv)
    # Whatever an imported module prints must not end up in the JSON: point fd 1 at stderr while working.
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    started = time.monotonic()
    try:
        with contextlib.redirect_stdout(sys.stderr):
            data = generate(args.depth)
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
    text = render(data)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write(text)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    log(f"done in {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
