"""Payloads hidden inside a pickle's values: bytes handed to another deserializer, or bytes that simply are a
pickle, archive or array file once base64, hex or compression is peeled off.

Two kinds are found in a :class:`~picklewarden.pickle.program.Program`:

* **handed**: an argument of a call to a deserializer (``pickle.loads``, ``torch.load``, torch's
  ``_load_from_bytes``, ``numpy.load``, ``joblib.load``, ...). The argument is evaluated statically through
  the decoders a payload is usually wrapped in (``base64.b64decode``, ``zlib.decompress``,
  ``bytes.fromhex``, ``codecs.decode``, ``io.BytesIO``, protocol 2's ``_codecs.encode``...). What comes out
  runs while the outer file loads.
* **dormant**: any other bytes or string value that decodes to a whole pickle that imports something, a
  ZIP or an ``.npy`` file. Loading the outer file does not run it; whoever later unpickles that field does.

Every decoding step is bounded (output size and layers); nothing is ever executed.
"""

from __future__ import annotations

import base64
import binascii
import bz2
import lzma
import re
import zlib
from collections.abc import Callable, Iterator
from itertools import chain, islice

from picklewarden._typing import TYPE_CHECKING, NamedTuple
from picklewarden.containers import decoders
from picklewarden.containers.sniff import looks_like_pickle
from picklewarden.pickle.layout import scan_layout
from picklewarden.pickle.machine import node_of
from picklewarden.pickle.program import CallResult, ElidedCall, Global, Mutation, Program

if TYPE_CHECKING:
    from typing import Any

    from picklewarden.limits import Limits

Resolver = Callable[[Global], str]
"""The canonical ``module.qualname`` of a global (the rules' resolution, passed in by the scanner)."""

PICKLE_LOADERS: frozenset[str] = frozenset(
    {
        "pickle.loads",
        "pickle.load",
        "pickle._loads",
        "pickle._load",
        "pickle.Unpickler",
        "pickle._Unpickler",
        "_pickle.loads",
        "_pickle.load",
        "_pickle.Unpickler",
        "dill.loads",
        "dill.load",
        "dill._dill.loads",
        "dill._dill.load",
        "cloudpickle.loads",
        "cloudpickle.load",
    }
)
"""Deserializers that unpickle their input from its first byte."""

SNIFFING_LOADERS: frozenset[str] = frozenset(
    {
        "torch.load",
        "torch.serialization.load",
        "torch.serialization._load",
        "torch.serialization._legacy_load",
        "torch.storage._load_from_bytes",
        "numpy.load",
        "numpy.lib.npyio.load",
        "numpy.lib._npyio_impl.load",
        "joblib.load",
        "joblib.numpy_pickle.load",
        "pandas.read_pickle",
        "pandas.io.pickle.read_pickle",
    }
)
"""Deserializers that look at their input's format first (ZIP, .npy, compression) and may unpickle it."""

WHOLE_LOADERS: frozenset[str] = frozenset(
    {"pickle.loads", "pickle._loads", "_pickle.loads", "torch.storage._load_from_bytes"}
)
"""Deserializers that read nothing but the bytes they are handed (``_load_from_bytes`` is how
``pickle.dumps(tensor)`` stores a storage): when those bytes are all in the file, the nested scan sees
everything the loader runs."""
_WHOLE_KEYWORDS = frozenset({"fix_imports", "encoding", "errors"})

_MAX_OUT = 64 * 1024 * 1024
_MAX_LAYERS = 4
_MIN_DORMANT = 16
_MAX_VALUES = 20_000
_B64 = re.compile(rb"[A-Za-z0-9+/_-]+={0,2}")
_HEX = re.compile(rb"(?:[0-9a-fA-F]{2})+")
_HEX_CODECS = frozenset({"hex", "hex_codec", "hex-codec"})
_B64_CODECS = frozenset({"base64", "base64_codec", "base_64", "base64-codec"})
_ZLIB_CODECS = frozenset({"zlib", "zlib_codec", "zip"})
_BZ2_CODECS = frozenset({"bz2", "bz2_codec"})


class Payload(NamedTuple):
    label: str
    """Where it was found and how it was decoded, e.g. ``#arg0>base64>zlib``."""
    data: bytes
    handed: bool
    """True when a deserializer receives it while the outer file loads."""
    as_pickle: bool
    """The deserializer unpickles from byte 0 (no format sniffing): scan it as a pickle whatever it looks like."""
    offset: int | None
    via: str
    """The deserializer's name ('' for dormant payloads)."""
    whole: bool = False
    """The deserializer reads only these bytes (a :data:`WHOLE_LOADERS` call with just this argument), so
    the nested scan decides what the call does."""


class _Decoded:
    __slots__ = ("data", "leaf", "steps")

    def __init__(self, data: bytes, steps: tuple[str, ...], leaf: bytes | None = None) -> None:
        self.data = data
        self.steps = steps
        self.leaf = data if leaf is None else leaf
        """The literal bytes the decoding started from."""


def _bounded_inflate(data: bytes, wbits: int) -> bytes | None:
    try:
        inflater = zlib.decompressobj(wbits)
        out = inflater.decompress(data, _MAX_OUT)
    except zlib.error:
        return None
    return out if inflater.eof else None


def _bounded(decoder: bz2.BZ2Decompressor | lzma.LZMADecompressor, data: bytes) -> bytes | None:
    try:
        out = decoder.decompress(data, _MAX_OUT)
    except (OSError, EOFError, lzma.LZMAError, ValueError):
        return None
    return out if decoder.eof else None


def _b64(text: bytes) -> bytes | None:
    compact = b"".join(text.split())
    if not compact or not _B64.fullmatch(compact):
        return None
    try:
        return base64.b64decode(
            compact + b"=" * (-len(compact) % 4), altchars=b"-_" if b"-" in compact or b"_" in compact else None
        )
    except (binascii.Error, ValueError):
        return None


def _hex(text: bytes) -> bytes | None:
    compact = b"".join(text.split())
    if not compact or not _HEX.fullmatch(compact):
        return None
    return binascii.unhexlify(compact)


def _as_bytes(value: bytes | str) -> bytes:
    if isinstance(value, bytes):
        return value
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogatepass")


def _text_arg(args: tuple[Any, ...], index: int, default: str) -> str:
    value = args[index] if len(args) > index else default
    return value.lower() if isinstance(value, str) else default


def _apply(symbol: str, args: tuple[Any, ...], inner: _Decoded) -> _Decoded | None:
    """The output of decoder ``symbol`` on ``inner`` (its first argument), or None when unknown or invalid."""
    data = inner.data
    out: bytes | None
    step = symbol.rsplit(".", 1)[-1]
    if symbol in ("io.BytesIO", "_io.BytesIO", "builtins.bytes", "builtins.bytearray", "builtins.memoryview"):
        return inner
    if symbol in ("_codecs.encode", "codecs.encode") and _text_arg(args, 1, "utf-8") in ("latin1", "latin-1"):
        return inner  # protocol 2 spells bytes as _codecs.encode(text, 'latin1'): text is already latin-1 here
    if symbol == "zlib.decompress":
        wbits = args[1] if len(args) > 1 and type(args[1]) is int else 15
        out, step = _bounded_inflate(data, wbits), "zlib"
    elif symbol == "gzip.decompress":
        out, step = _bounded_inflate(data, 31), "gzip"
    elif symbol == "bz2.decompress":
        out, step = _bounded(bz2.BZ2Decompressor(), data), "bz2"
    elif symbol == "lzma.decompress":
        out, step = _bounded(lzma.LZMADecompressor(memlimit=512 << 20), data), "lzma"
    elif symbol in (
        "base64.b64decode",
        "base64.standard_b64decode",
        "base64.urlsafe_b64decode",
        "base64.decodebytes",
        "base64.decodestring",
        "binascii.a2b_base64",
    ):
        out, step = _b64(data), "base64"
    elif symbol in ("binascii.unhexlify", "binascii.a2b_hex", "builtins.bytes.fromhex", "builtins.bytearray.fromhex"):
        out, step = _hex(data), "hex"
    elif symbol in ("codecs.decode", "_codecs.decode"):
        codec = _text_arg(args, 1, "utf-8")
        if codec in _HEX_CODECS:
            out, step = _hex(data), "hex"
        elif codec in _B64_CODECS:
            out, step = _b64(data), "base64"
        elif codec in _ZLIB_CODECS:
            out, step = _bounded_inflate(data, 15), "zlib"
        elif codec in _BZ2_CODECS:
            out, step = _bounded(bz2.BZ2Decompressor(), data), "bz2"
        else:
            out, step = decoders.apply(symbol, args, data) or (None, "")
    else:
        other = decoders.apply(symbol, args, data)
        if other is None:
            return None
        out, step = other
        if not step:
            return inner
    if out is None:
        return None
    return _Decoded(out, (*inner.steps, step), inner.leaf)


def evaluate(value: Any, symbol_of: Resolver, depth: int = 0) -> _Decoded | None:
    """The bytes a value holds once known decoders applied to it are run (statically), or None."""
    if isinstance(value, (bytes, bytearray, str)):
        return _Decoded(_as_bytes(bytes(value) if isinstance(value, bytearray) else value), ())
    if depth >= _MAX_LAYERS * 2:
        return None
    node = node_of(value)
    if not isinstance(node, CallResult) or not isinstance(node.callee, Global) or not node.args:
        return None
    inner = evaluate(node.args[0], symbol_of, depth + 1)
    if inner is None:
        return None
    return _apply(symbol_of(node.callee), node.args, inner)


# -- recognising payloads in plain values ---------------------------------------------------------------


def _whole_pickle(data: bytes, limits: Limits) -> bool:
    if b"\n" not in data and b"\x93" not in data:
        # Importing takes GLOBAL or INST (newline-ended names) or STACK_GLOBAL: text with neither, such as
        # the thousands of keys of a state dict, is no pickle that imports, and is not decoded to see.
        return False
    if not looks_like_pickle(data[: 64 * 1024], limits):
        return False
    layout = scan_layout(data, 0, limits.replace(max_opcodes=min(limits.max_opcodes, 1_000_000)))
    return layout.end is not None and bool(layout.imports)


def _zip(data: bytes) -> bool:
    return data[:4] == b"PK\x03\x04" and b"PK\x05\x06" in data[-(1 << 16) - 22 :]


def sniff(data: bytes, limits: Limits, steps: tuple[str, ...] = ()) -> _Decoded | None:
    """``data`` (after peeling encodings and compression) when it is a pickle, ZIP or .npy file, else None."""
    if len(steps) > _MAX_LAYERS:
        return None
    if data[:6] == b"\x93NUMPY" or _zip(data) or _whole_pickle(data, limits):
        return _Decoded(data, steps)
    out: bytes | None = None
    step = ""
    if data[:3] == b"\x1f\x8b\x08":
        out, step = _bounded_inflate(data, 31), "gzip"
    elif data[:1] == b"\x78" and len(data) > 1 and (data[0] << 8 | data[1]) % 31 == 0:
        out, step = _bounded_inflate(data, 15), "zlib"
    elif data[:3] == b"BZh":
        out, step = _bounded(bz2.BZ2Decompressor(), data), "bz2"
    elif data[:6] == b"\xfd7zXZ\x00":
        out, step = _bounded(lzma.LZMADecompressor(memlimit=512 << 20), data), "xz"
    elif len(data) >= 24:
        # Peek before decoding: a megabyte of raw tensor bytes must not be split and matched as text.
        head = b"".join(data[:96].split())[:64]
        if _HEX.fullmatch(head[: len(head) // 2 * 2]):
            out, step = _hex(data), "hex"
        elif _B64.fullmatch(head):
            out, step = _b64(data), "base64"
    if not out:
        return None
    return sniff(out, limits, (*steps, step))


def _values(root: Any, limit: int, budget: list[int], seen: set[int]) -> Iterator[Any]:
    """str/bytes inside a value, and call results that may be decoders (containers walked once each, up to
    ``limit`` deep, stand-ins not entered). ``budget[0]`` counts every value visited: shared references
    (a billion-laughs structure) must not turn the walk exponential."""
    pending: list[tuple[Any, int]] = [(root, 0)]
    while pending:
        value, depth = pending.pop()
        budget[0] -= 1
        if budget[0] < 0:
            return
        if isinstance(value, (bytes, bytearray, str)):
            if len(value) >= _MIN_DORMANT:
                yield bytes(value) if isinstance(value, bytearray) else value
        elif isinstance(node_of(value), CallResult):
            yield value
        elif isinstance(value, (list, tuple, set, frozenset, dict)):
            if id(value) in seen or depth >= limit:
                continue
            seen.add(id(value))
            # Only the first budget[0] items can still be visited (they are popped first): a state dict's
            # 100k entries are not all queued to look at a few thousand.
            flat = chain.from_iterable(value.items()) if isinstance(value, dict) else value
            items = list(islice(flat, max(budget[0], 0)))
            items.reverse()
            pending += [(item, depth + 1) for item in items]


def payloads(
    program: Program, symbol_of: Resolver, limits: Limits, called: Callable[[CallResult], str | None] | None = None
) -> list[Payload]:
    """Every payload in ``program``, handed ones first, at most ``limits.max_nested_payloads`` plus one (so
    the caller can tell that the limit was hit).

    ``called`` names what a call of a non-global finally invokes (``functools.partial(pickle.loads)``...),
    when that is known.
    """
    found: list[Payload] = []
    seen: set[int] = set()
    cap = limits.max_nested_payloads + 1
    loaders: dict[int, str | None] = {}  # Global id -> its symbol when it is a deserializer: one look-up per global
    for stmt in program.kinds().others:
        if len(found) >= cap:
            return found
        if not isinstance(stmt, CallResult):
            continue
        callee = stmt.callee
        symbol: str | None
        if isinstance(callee, Global):
            symbol = loaders.get(callee.id, "")
            if symbol == "":
                symbol = loaders[callee.id] = _loader(symbol_of(callee))
        else:
            symbol = _loader(called(stmt)) if called is not None else None
        if symbol is None:
            continue
        pickles = symbol in PICKLE_LOADERS
        whole = symbol in WHOLE_LOADERS and len(stmt.args) == 1 and set(stmt.kwargs or ()) <= _WHOLE_KEYWORDS
        arguments: list[tuple[str, Any]] = [(f"arg{index}", v) for index, v in enumerate(stmt.args)]
        arguments += [(name, v) for name, v in (stmt.kwargs or {}).items() if name in ("file", "f", "data", "b")]
        for where, arg in arguments:
            decoded = evaluate(arg, symbol_of)
            if decoded is None or (not decoded.steps and not pickles and not whole and not sniff(decoded.data, limits)):
                continue  # a path or other plain text handed to a sniffing loader: nothing to scan here
            seen.update((hash(decoded.data), hash(decoded.leaf)))
            label = f"#{where}" + "".join(f">{s}" for s in decoded.steps)
            found.append(Payload(label, decoded.data, True, pickles, stmt.offset, symbol, whole))
    budget = [_MAX_VALUES]
    walked: set[int] = set()
    for place, offset, value in _placed(program):
        if budget[0] <= 0:
            break  # value budget spent: the rest is not walked (payloads handed to loaders were found above)
        if type(value) in _SCALARS:
            continue  # most arguments of a state dict's rebuild calls: nothing can hide in them
        for raw in _values(value, limits.max_render_depth, budget, walked):
            if len(found) >= cap:
                return found
            if isinstance(raw, (bytes, str)):
                data = _as_bytes(raw)
                steps: tuple[str, ...] = ()
            else:
                evaluated = evaluate(raw, symbol_of)
                if evaluated is None or not evaluated.steps:
                    continue
                data, steps = evaluated.data, evaluated.steps
            if hash(data) in seen:
                continue
            decoded = sniff(data, limits, steps)
            if decoded is None:
                continue
            seen.add(hash(data))
            label = place + "".join(f">{s}" for s in decoded.steps)
            found.append(Payload(label, decoded.data, False, False, offset, ""))
    return found


def _loader(symbol: str | None) -> str | None:
    """``symbol`` when it names a deserializer, else None."""
    return symbol if symbol in PICKLE_LOADERS or symbol in SNIFFING_LOADERS else None


_SCALARS = frozenset({int, float, bool, complex, type(None)})


def _placed(program: Program) -> Iterator[tuple[str, int | None, Any]]:
    """(label, offset, value) for the values a pickle places somewhere: call arguments, states, items, result.

    Not the arguments of an elided call (kept as a statement or not): they are numbers, tuples and stand-ins
    of storages and of other such calls only, none of which holds text or evaluates to any (see
    :func:`picklewarden.pickle.standins.inert`), so walking them could only spend the value budget."""
    for stmt in program.kinds().others:  # persistent ids place nothing
        if type(stmt) is ElidedCall:
            continue
        if isinstance(stmt, CallResult):
            for index, arg in enumerate(stmt.args):
                yield f"#arg{index}", stmt.offset, arg
            for name, arg in (stmt.kwargs or {}).items():
                yield f"#{name}", stmt.offset, arg
        elif isinstance(stmt, Mutation):
            yield f"#{stmt.op.value}", stmt.offset, stmt.value
    yield "#result", None, program.result
