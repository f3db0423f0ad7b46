"""NumPy ``.npy`` files (and, through the ZIP reader, the ``.npy`` members of ``.npz`` archives).

An ``.npy`` file is a magic string, a version, a header length and a Python-literal header dict
(``descr``, ``fortran_order``, ``shape``). When the dtype holds objects, ``numpy.load(allow_pickle=True)``
calls ``pickle.load`` on the bytes right after the header; otherwise the rest is raw numbers, which are
never read here. The header is parsed as numpy parses it (``ast.literal_eval``, with its Python-2 long
fallback), only the dtype description decides, and anything not positively numeric is treated as
possibly holding objects.
"""

from __future__ import annotations

import io
import re
import struct
import tokenize
from typing import Any, Literal

from picklewarden.containers.base import Anomaly, Context, Data, Opened, PickleSource, Stacking
from picklewarden.model import Severity

_KEYS = {"descr", "fortran_order", "shape"}
_ENDIAN = "<>|="
_NUMERIC_CODE = re.compile(r"[?bBhHiIlLqQpPefdgFDGSUVac]\d*|[Mm]8?(?:\[\d*[A-Za-z]+\])?")
_NUMERIC_NAMES = frozenset(
    "bool bool_ int8 int16 int32 int64 uint8 uint16 uint32 uint64 intp uintp byte ubyte short ushort intc uintc "
    "int_ uint long ulong longlong ulonglong float16 float32 float64 float128 half single double longdouble "
    "float_ complex64 complex128 complex256 csingle cdouble clongdouble complex_ str str_ bytes bytes_ void "
    "unicode string datetime64 timedelta64 float int complex".split()
)
_OBJECT_CODES = frozenset({"O", "O4", "O8", "object", "object_"})

Kind = Literal["numeric", "object", "unknown"]


def classify_descr(descr: Any, depth: int = 0) -> Kind:
    """Whether an ``.npy`` ``descr`` (as ``numpy.lib.format.descr_to_dtype`` takes it) holds Python objects."""
    if depth > 32:
        return "unknown"
    if isinstance(descr, str):
        code = descr.lstrip(_ENDIAN) if descr[:1] in _ENDIAN else descr
        if code in _OBJECT_CODES:
            return "object"
        if code in _NUMERIC_NAMES or (_NUMERIC_CODE.fullmatch(code) and "O" not in code):
            return "numeric"
        return "unknown"
    if isinstance(descr, tuple) and len(descr) == 2:
        return classify_descr(descr[0], depth + 1)
    if isinstance(descr, list):
        kinds: set[Kind] = set()
        for field in descr:
            if not isinstance(field, tuple) or len(field) not in (2, 3):
                return "unknown"
            kinds.add(classify_descr(field[1], depth + 1))
        if "object" in kinds:
            return "object"
        return "unknown" if "unknown" in kinds else "numeric"
    return "unknown"


class _NotLiteral(ValueError):
    """The header is not a literal this parser reads (numpy's ``safe_eval`` may or may not)."""


_SKIP = frozenset({tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT})
_CLOSING = {"{": "}", "(": ")", "[": "]"}
_MAX_NESTING = 64


def _string(text: str) -> str | bytes:
    quote = text.lstrip("rRbBuU")[:3]
    quote = quote if quote in ('"""', "'''") else quote[:1]
    prefix = text[: len(text) - len(text.lstrip("rRbBuU"))].lower()
    body = text[len(prefix) + len(quote) : len(text) - len(quote)]
    if "\\" in body and "r" not in prefix:
        if not body.isascii():
            raise _NotLiteral("escaped non-ASCII string")
        body = body.encode("ascii").decode("unicode_escape")
    return body.encode("latin-1") if "b" in prefix else body


def _literal(text: str) -> Any:
    """The Python literal numpy's ``safe_eval`` reads from an ``.npy`` header (dicts, tuples, lists, strings,
    ints, True/False/None, Python 2 ``10L`` longs), parsed from tokens.

    ``ast.literal_eval`` would first compile the attacker's text; this never does.
    """
    tokens = [t for t in tokenize.generate_tokens(io.StringIO(text).readline) if t.type not in _SKIP]
    position = 0

    def value(depth: int) -> Any:
        nonlocal position
        if depth > _MAX_NESTING or position >= len(tokens):
            raise _NotLiteral("header nests too deep or ends early")
        token = tokens[position]
        position += 1
        kind, string = token.type, token.string
        if kind == tokenize.STRING:
            parts = [_string(string)]
            while position < len(tokens) and tokens[position].type == tokenize.STRING:
                parts.append(_string(tokens[position].string))
                position += 1
            if all(isinstance(p, str) for p in parts):
                return "".join(p for p in parts if isinstance(p, str))
            if all(isinstance(p, bytes) for p in parts):
                return b"".join(p for p in parts if isinstance(p, bytes))
            raise _NotLiteral("mixed bytes and str literals")
        if kind == tokenize.NUMBER or (kind == tokenize.OP and string == "-"):
            negative = string == "-"
            if negative:
                if position >= len(tokens) or tokens[position].type != tokenize.NUMBER:
                    raise _NotLiteral("'-' without a number")
                string = tokens[position].string
                position += 1
            if position < len(tokens) and tokens[position].string in ("L", "l"):
                position += 1  # Python 2 long, as numpy's header filter drops it
            try:
                number = int(string, 0)
            except ValueError:
                raise _NotLiteral(f"number {string!r}") from None
            return -number if negative else number
        if kind == tokenize.NAME and string in ("True", "False", "None"):
            return {"True": True, "False": False, "None": None}[string]
        if kind == tokenize.OP and string in _CLOSING:
            return container(string, depth)
        raise _NotLiteral(f"unexpected {string!r}")

    def container(opening: str, depth: int) -> Any:
        nonlocal position
        closing = _CLOSING[opening]
        items: list[Any] = []
        comma = False
        while True:
            if position >= len(tokens):
                raise _NotLiteral("unclosed bracket")
            if tokens[position].string == closing:
                position += 1
                break
            item = value(depth + 1)
            if opening == "{":
                if position >= len(tokens) or tokens[position].string != ":":
                    raise _NotLiteral("dict entry without ':'")
                position += 1
                item = (item, value(depth + 1))
            items.append(item)
            if position < len(tokens) and tokens[position].string == ",":
                position += 1
                comma = True
            elif position < len(tokens) and tokens[position].string != closing:
                raise _NotLiteral("missing ','")
        if opening == "{":
            try:
                return dict(items)
            except TypeError:
                raise _NotLiteral("unhashable dict key") from None
        if opening == "[":
            return items
        return items[0] if len(items) == 1 and not comma else tuple(items)

    result = value(0)
    if position != len(tokens) - 1 or tokens[-1].type != tokenize.ENDMARKER:
        raise _NotLiteral("text after the literal")
    return result


def open_npy(data: Data, ctx: Context, member: str = "") -> Opened:
    """What ``numpy.load`` reads from an ``.npy`` file: nothing but a header, or a pickle after it."""
    opened = Opened("npy")
    view = bytes(data[:12])
    if len(view) < 10:
        opened.anomalies.append(
            Anomaly("PW300", member or None, 0, "truncated .npy header; numpy fails", Severity.INFO)
        )
        return opened
    major, minor = view[6], view[7]
    if major == 1:
        (length,) = struct.unpack_from("<H", view, 8)
        start = 10
    elif major in (2, 3):
        if len(view) < 12:
            opened.anomalies.append(Anomaly("PW300", member or None, 0, "truncated .npy header", Severity.INFO))
            return opened
        (length,) = struct.unpack_from("<I", view, 8)
        start = 12
    else:
        opened.anomalies.append(
            Anomaly(
                "PW300", member or None, 6, f".npy version {major}.{minor}: numpy refuses to read it", Severity.INFO
            )
        )
        return opened
    if length > ctx.limits.max_header_bytes:
        opened.anomalies.append(
            Anomaly("PW301", member or None, 8, f".npy header of {length} bytes exceeds max_header_bytes")
        )
        opened.errors.append(".npy header too large to parse")
        return opened
    raw = bytes(data[start : start + length])
    end = start + length
    if len(raw) < length:
        opened.anomalies.append(Anomaly("PW300", member or None, start, ".npy header is truncated; numpy fails"))
        return opened
    try:
        header = _literal(raw.decode("utf-8" if major == 3 else "latin1"))
    except (_NotLiteral, tokenize.TokenError, SyntaxError, UnicodeError) as exc:
        # numpy's own parser may read what ours does not: never conclude "numpy fails, so nothing runs".
        opened.errors.append(f".npy header could not be read: {exc}")
        return opened
    if not isinstance(header, dict) or set(header) != _KEYS:
        opened.anomalies.append(
            Anomaly("PW300", member or None, start, ".npy header lacks descr/fortran_order/shape; numpy fails")
        )
        return opened
    kind = classify_descr(header["descr"])
    if kind == "numeric":
        opened.notes.append(f"numeric array {header['descr']!r} of shape {header['shape']!r}: data not read")
        return opened
    opened.format = "npy-object"
    whole = bytes(data[: len(data)])
    source = PickleSource(member, whole, Stacking.ONE, file_like=True, start=end, label="npy")
    if kind == "object":
        opened.sources.append(source)
        return opened
    # A dtype spelling we do not know: numpy might still see objects in it, so read the rest as numpy would then.
    opened.anomalies.append(
        Anomaly(
            "PW300",
            member or None,
            start,
            f"unrecognised .npy dtype {header['descr']!r}: the data is scanned as a pickle in case numpy reads one",
            Severity.INFO,
        )
    )
    opened.sources.append(PickleSource(member, whole, Stacking.ONE, True, start=end, optional=True))
    return opened
