"""Element types of torch storages and tensors, and their safetensors names, as data.

Keyed by the names a pickle writes (``torch.float32`` as a global, ``torch.FloatStorage`` as a storage
class); nothing is imported from torch. Sizes and safetensors names follow torch 2.x and the safetensors
format specification; dtypes without a safetensors equivalent carry the reason they are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class DType:
    """One element type."""

    name: str
    """torch's canonical attribute name, e.g. ``float32``."""
    itemsize: int
    """Bytes per element as stored."""
    safetensors: str | None
    """The safetensors ``dtype`` string, or None when safetensors cannot hold it."""
    swap: int
    """Byte-swap unit for big-endian data: the itemsize, or half of it for complex numbers."""
    unsupported: str = ""
    """Why there is no safetensors equivalent (empty when there is one)."""


def _dtype(name: str, itemsize: int, safetensors: str | None, swap: int = 0, unsupported: str = "") -> DType:
    return DType(name, itemsize, safetensors, swap or itemsize, unsupported)


_QUANTIZED = "quantized dtypes have no safetensors equivalent (their scale and zero point live outside the data)"
_BITS = "raw bit dtypes have no safetensors equivalent"

DTYPES: Final[dict[str, DType]] = {
    d.name: d
    for d in (
        _dtype("float64", 8, "F64"),
        _dtype("float32", 4, "F32"),
        _dtype("float16", 2, "F16"),
        _dtype("bfloat16", 2, "BF16"),
        _dtype("int64", 8, "I64"),
        _dtype("int32", 4, "I32"),
        _dtype("int16", 2, "I16"),
        _dtype("int8", 1, "I8"),
        _dtype("uint8", 1, "U8"),
        _dtype("uint16", 2, "U16"),
        _dtype("uint32", 4, "U32"),
        _dtype("uint64", 8, "U64"),
        _dtype("bool", 1, "BOOL"),
        _dtype("float8_e4m3fn", 1, "F8_E4M3"),
        _dtype("float8_e5m2", 1, "F8_E5M2"),
        _dtype("float8_e4m3fnuz", 1, "F8_E4M3FNUZ"),
        _dtype("float8_e5m2fnuz", 1, "F8_E5M2FNUZ"),
        _dtype("float8_e8m0fnu", 1, "F8_E8M0"),
        _dtype("complex64", 8, "C64", 4),
        _dtype("complex128", 16, None, 8, "safetensors has no 128-bit complex dtype"),
        _dtype("complex32", 4, None, 2, "safetensors has no 32-bit complex dtype"),
        # safetensors' F4 counts 4-bit elements while torch counts packed pairs, and the nibble order is not
        # pinned down by either specification: refusing beats silently swapping every pair.
        _dtype("float4_e2m1fn_x2", 1, None, 1, "packed float4 pairs have no unambiguous safetensors layout"),
        _dtype("qint8", 1, None, 1, _QUANTIZED),
        _dtype("quint8", 1, None, 1, _QUANTIZED),
        _dtype("qint32", 4, None, 4, _QUANTIZED),
        _dtype("quint4x2", 1, None, 1, _QUANTIZED),
        _dtype("quint2x4", 1, None, 1, _QUANTIZED),
        _dtype("bits8", 1, None, 1, _BITS),
        _dtype("bits16", 2, None, 2, _BITS),
        _dtype("bits1x8", 1, None, 1, _BITS),
        _dtype("bits2x4", 1, None, 1, _BITS),
        _dtype("bits4x2", 1, None, 1, _BITS),
    )
}

UINT8: Final[DType] = DTYPES["uint8"]

# torch's dtype aliases are module attributes too, so a file may name a dtype either way.
_ALIASES: Final[dict[str, str]] = {
    "float": "float32",
    "double": "float64",
    "half": "float16",
    "long": "int64",
    "int": "int32",
    "short": "int16",
    "cfloat": "complex64",
    "cdouble": "complex128",
    "chalf": "complex32",
}

# Legacy typed storage classes (torch.<Name>Storage, and torch.cuda.<Name>Storage in old legacy files).
_STORAGE_CLASSES: Final[dict[str, str]] = {
    "DoubleStorage": "float64",
    "FloatStorage": "float32",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
    "ComplexDoubleStorage": "complex128",
    "ComplexFloatStorage": "complex64",
    "QInt8Storage": "qint8",
    "QUInt8Storage": "quint8",
    "QInt32Storage": "qint32",
    "QUInt4x2Storage": "quint4x2",
    "QUInt2x4Storage": "quint2x4",
}

# Untyped storages hold bytes; torch reads them as a uint8 typed storage, and v3 rebuilds pass the dtype.
_UNTYPED: Final[frozenset[tuple[str, str]]] = frozenset(
    {("torch", "UntypedStorage"), ("torch.storage", "UntypedStorage"), ("torch", "ByteStorage")}
)


def dtype_global(module: str, qualname: str) -> DType | None:
    """The dtype a global such as ``torch.float32`` names, or None when it names none."""
    if module != "torch":
        return None
    return DTYPES.get(_ALIASES.get(qualname, qualname))


def storage_dtype(module: str, qualname: str) -> DType | None:
    """The element type of a storage class global (``torch.FloatStorage``), or None when it is not one."""
    if (module, qualname) in _UNTYPED:
        return UINT8
    if module not in ("torch", "torch.cuda"):
        return None
    name = _STORAGE_CLASSES.get(qualname)
    return None if name is None else DTYPES[name]
