"""NumPy ``.npy`` files (and, through :mod:`~picklewarden.containers.npz` and the ZIP readers, the arrays of npz
archives), as ``numpy.load(allow_pickle=True)`` reads them (numpy 2.x ``format.read_array``).

An ``.npy`` file is a magic string, a version, a header length and a Python-literal header dict
(``descr``, ``fortran_order``, ``shape``). When the dtype holds objects, numpy calls ``pickle.load`` on the
bytes right after the header; otherwise the rest is raw numbers, which are never read here.

Modelled: the versions numpy accepts (1.0, 2.0, 3.0 exactly) and their length fields and encodings; the
header read with ``ast.literal_eval``'s rules, without compiling it (:mod:`~picklewarden.containers.pyliteral`),
after the Python-2 ``L`` filter for versions up to 2.0; numpy's checks of the dict (exact keys, a tuple of
ints for ``shape``, a bool for ``fortran_order``) and the int64 element count; no header size limit
(``allow_pickle=True`` lifts it; :attr:`Limits.max_header_bytes` bounds the scan, failing closed). Where
numpy fails on the header nothing runs (an info finding), but the bytes after it are still run as a pickle
and kept if they do anything, in case numpy's parser reads a header this one does not.

Not modelled exactly: ``descr_to_dtype``. The dtype is classified from its description (object,
numeric, or unknown), and a spelling not known to be numeric (``'i4,O'``, a title, an odd alias) is read
as a possible pickle too. ``mmap_mode`` (numpy refuses object arrays there) and the ``encoding`` /
``fix_imports`` pickle options are not distinguished.
"""

from __future__ import annotations

import io
import re
import struct
import tokenize

from picklewarden._typing import TYPE_CHECKING
from picklewarden.containers.base import Anomaly, Context, Data, Opened, PickleSource, Stacking
from picklewarden.containers.pyliteral import NotLiteral, literal_eval
from picklewarden.model import Severity

if TYPE_CHECKING:
    from typing import Any, Literal

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

if TYPE_CHECKING:
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


_VERSIONS = {(1, 0): ("<H", "latin1"), (2, 0): ("<I", "latin1"), (3, 0): ("<I", "utf8")}
"""numpy's ``_header_size_info``: the versions ``_check_version`` accepts, their length field and encoding."""
_INT64 = 1 << 63
_PARSE_CAP = 64 * 1024
"""Headers longer than this are not tokenized (a megabyte of brackets costs seconds); the data after them is
still scanned as a possible pickle."""


class _Unreadable(ValueError):
    """numpy's own header parser raises here too: ``numpy.load`` fails before it reads any data."""


def _filter_header(text: str) -> str:
    """numpy's ``_filter_header``: drop the ``L`` after a number (headers Python 2 wrote), by tokens."""
    tokens = []
    after_number = False
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if after_number and token.type == tokenize.NAME and token.string == "L":
            continue
        tokens.append(token)
        after_number = token.type == tokenize.NUMBER
    return str(tokenize.untokenize(tokens))


def parse_header(raw: bytes, version: tuple[int, int]) -> dict[str, Any]:
    """The header dict exactly as numpy's ``_read_array_header`` reads it from ``raw`` (its bytes).

    numpy evaluates the text with ``ast.literal_eval``; :func:`~picklewarden.containers.pyliteral.literal_eval`
    reads the same literals without compiling the text (a unary ``+`` in a shape, ``0x`` numbers, nested
    tuples, comments). numpy retries a version 1.0 or 2.0 header that does not parse after dropping the
    Python 2 ``L`` suffixes; a number directly followed by ``L`` never parses, so filtering first gives the
    same result. Raises :class:`_Unreadable` wherever numpy raises (or this reader cannot follow it).
    """
    try:
        text = raw.decode(_VERSIONS[version][1])
    except UnicodeDecodeError as exc:
        raise _Unreadable(f"header is not {_VERSIONS[version][1]}: {exc}") from None
    try:
        filtered = _filter_header(text) if version <= (2, 0) else text
    except (ValueError, tokenize.TokenError, SyntaxError):
        # The tokenizer fails on the text, or untokenize cannot rebuild it (a bare CR, a NUL). numpy filters
        # only after the plain text failed to parse, and then fails here: reading the plain text agrees.
        filtered = text
    try:
        header = literal_eval(filtered)
    except (NotLiteral, tokenize.TokenError, SyntaxError) as exc:
        raise _Unreadable(f"header is not a literal numpy reads: {exc}") from None
    if not isinstance(header, dict) or header.keys() != _KEYS:
        raise _Unreadable("header is not a dict of exactly descr/fortran_order/shape")
    shape = header["shape"]
    if not isinstance(shape, tuple) or not all(isinstance(x, int) for x in shape):
        raise _Unreadable(f"shape {shape!r} is not a tuple of ints")
    if not all(-_INT64 <= x < _INT64 for x in shape):
        raise _Unreadable(f"shape {shape!r} does not fit int64 (numpy's element count overflows)")
    if not isinstance(header["fortran_order"], bool):
        raise _Unreadable(f"fortran_order {header['fortran_order']!r} is not a bool")
    return header


def open_npy(data: Data, ctx: Context, member: str = "") -> Opened:
    """What ``numpy.load`` reads from an ``.npy`` file: nothing but a header, or a pickle after it."""
    opened = Opened("npy")
    view = bytes(data[:12])
    if len(view) < 10:
        opened.anomalies.append(
            Anomaly("PW300", member or None, 0, "truncated .npy header; numpy fails", Severity.INFO)
        )
        return opened
    version = (view[6], view[7])
    if version not in _VERSIONS:
        opened.anomalies.append(
            Anomaly(
                "PW300",
                member or None,
                6,
                f".npy version {version[0]}.{version[1]}: numpy refuses to read it",
                Severity.INFO,
            )
        )
        return opened
    length_format = _VERSIONS[version][0]
    start = 6 + 2 + struct.calcsize(length_format)
    if len(view) < start:
        opened.anomalies.append(Anomaly("PW300", member or None, 0, "truncated .npy header", Severity.INFO))
        return opened
    (length,) = struct.unpack_from(length_format, view, 8)
    if length > ctx.limits.max_header_bytes:
        # numpy.load(allow_pickle=True) has no header limit: a pickle may follow, so the scan is incomplete.
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
        if length > _PARSE_CAP:
            raise _Unreadable(f"a {length}-byte header is not parsed (numpy writes well under {_PARSE_CAP} bytes)")
        header = parse_header(raw, version)
    except _Unreadable as exc:
        # numpy fails here too (or might not, for a header too large to parse), so nothing is known to run;
        # the bytes after the header are still run as a pickle, and kept if they do anything.
        message = (
            f"numpy.load fails on this .npy header: {exc}"
            if length <= _PARSE_CAP
            else f"{exc}; the data after it is scanned in case numpy reads a pickle there"
        )
        opened.anomalies.append(Anomaly("PW300", member or None, start, message, Severity.INFO))
        if len(data) > end:
            opened.sources.append(
                PickleSource(
                    member, bytes(data[: len(data)]), Stacking.ONE, True, start=end, optional=True, label="npy view"
                )
            )
        return opened
    kind = classify_descr(header["descr"])
    if kind == "numeric":
        opened.notes.append(f"numeric array {header['descr']!r} of shape {header['shape']!r}: data not read")
        return opened
    opened.format = "npy-object"
    if len(data) - end > ctx.limits.max_pickle_bytes:
        message = f"the .npy data after the header exceeds max_pickle_bytes ({ctx.limits.max_pickle_bytes})"
        opened.anomalies.append(Anomaly("PW301", member or None, end, message))
        opened.errors.append(f"{member or '.npy'}: pickle not read: {message}")
        return opened
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
