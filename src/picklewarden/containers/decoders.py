"""Pure decoding functions a payload can be wrapped in, evaluated symbolically on constants from the pickle.

A pickle may build its inner payload at load time by calling pure functions on constants it carries:
``codecs.encode(s, 'rot13')``, ``base64.b85decode(b)``, ``operator.getitem(b, slice(None, None, -1))``,
``bytes(reversed(b))``, ``str.encode(s)``... This module knows, by exact canonical name, what each of those
returns, and computes it with bounded output. Nothing named by the pickle is called: every function here is
picklewarden's own re-implementation or a stdlib decoder applied to constant bytes.

:func:`apply` extends ``nested._apply`` (base64, hex, zlib, bz2, lzma, BytesIO stay there).
"""

from __future__ import annotations

import base64
import binascii
import codecs

from picklewarden._typing import TYPE_CHECKING
from picklewarden.pickle.machine import node_of
from picklewarden.pickle.program import CallResult, Global

if TYPE_CHECKING:
    from typing import Any

MAX_OUT = 64 * 1024 * 1024
"""The largest result any one step may produce."""

_ROT13 = frozenset({"rot13", "rot_13", "rot-13"})
_B85 = {
    "base64.b85decode": base64.b85decode,
    "base64.a85decode": base64.a85decode,
    "base64.b32decode": base64.b32decode,
    "base64.b32hexdecode": getattr(base64, "b32hexdecode", base64.b32decode),
    "base64.b16decode": base64.b16decode,
    "binascii.a2b_uu": binascii.a2b_uu,
    "binascii.a2b_qp": binascii.a2b_qp,
}
_PASS = frozenset({"builtins.bytes", "builtins.bytearray", "builtins.str", "builtins.memoryview"})


def _text(data: bytes) -> str:
    return data.decode("latin-1")


def _slice_of(value: Any) -> slice | None:
    """A ``slice`` the pickle built from constants (``builtins.slice(a, b, c)``), or None."""
    if isinstance(value, slice):
        return value
    node = node_of(value)
    if not isinstance(node, CallResult) or not isinstance(node.callee, Global):
        return None
    if (node.callee.module, node.callee.name) not in (("builtins", "slice"), ("__builtin__", "slice")):
        return None
    parts = node.args
    if not 1 <= len(parts) <= 3 or not all(p is None or type(p) is int for p in parts):
        return None
    return slice(*parts)


def apply(symbol: str, args: tuple[Any, ...], data: bytes) -> tuple[bytes, str] | None:
    """``(result, step name)`` of pure function ``symbol`` whose first argument evaluates to ``data``."""
    second = args[1] if len(args) > 1 else None
    if symbol in _PASS:
        return (data, "") if len(args) == 1 else None
    if symbol in ("codecs.encode", "codecs.decode", "_codecs.encode", "_codecs.decode"):
        codec = second.lower() if isinstance(second, str) else ""
        if codec in _ROT13:
            return codecs.encode(_text(data), "rot13").encode("latin-1"), "rot13"
        return None
    if symbol in ("builtins.str.encode", "builtins.bytes.decode", "builtins.bytearray.decode"):
        return data, ""  # text and bytes are the same latin-1 characters here
    if symbol in ("builtins.reversed", "builtins.list.reverse"):
        return data[::-1], "reversed"
    if symbol in ("operator.getitem", "_operator.getitem"):
        window = _slice_of(second)
        return (data[window], "slice") if window is not None else None
    decoder = _B85.get(symbol)
    if decoder is not None:
        try:
            out = decoder(data)
        except (ValueError, binascii.Error, TypeError):
            return None
        step = symbol.rsplit(".", 1)[-1].removesuffix("decode").removeprefix("a2b_") or "decode"
        return (out, step) if len(out) <= MAX_OUT else None
    return None
