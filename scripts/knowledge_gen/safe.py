"""Safe knowledge: globals that everyday checkpoints reference, found by pickling sample objects made here."""

from __future__ import annotations

import _compat_pickle
import io
import pickle
import pickletools
import re
import sys
import types
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from knowledge_gen.introspect import (
    MISSING,
    brief,
    canonicalise,
    guarded_import,
    log,
    module_items,
    resolve_dotted,
    split_dotted,
)

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
