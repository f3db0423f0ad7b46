"""Indicators for responders: commands, URLs, IPs, paths and decoded inner payloads in call arguments.

Decoding is bounded and never executes anything: base64/hex/zlib are decoded with size caps, and
marshalled code and inner pickles are only recognised by their headers (never loaded).
"""

from __future__ import annotations

import base64
import binascii
import itertools
import re
import zlib

from picklewarden._typing import TYPE_CHECKING
from picklewarden.model import Indicator
from picklewarden.pickle.machine import node_of

if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

# Pattern texts, compiled by ``re`` (and kept in its cache) on first use: most scans have no finding to
# describe, and compiling these at import cost ~1 ms of every start-up.
_URL = r"\b(?:https?|ftp|wss?|s3|gs|file)://[^\s'\"<>]{1,500}"  # with re.IGNORECASE
_IPV4 = r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])"
_PATH = r"(?:(?<=\s)|^|(?<=[>'\"=]))(/(?:[\w.~+-]+/?)+|~/[\w./+-]*|[A-Za-z]:\\[\w\\. -]+)"
# ASCII only: in a str pattern \s also matches Unicode spaces (U+0085...), which base64 then rejects.
_B64 = r"[A-Za-z0-9+/\s]{16,}={0,2}"  # with re.ASCII
_HEX = r"(?:[0-9a-fA-F]{2}){8,}"  # with re.ASCII
_MAX_TEXT = 200
_MAX_DECODED = 1 << 20
_MAX_STRINGS = 64
_MAX_VISITS = 4096


def _short(text: str) -> str:
    return text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT] + "..."


def strings_in(value: Any) -> Iterator[str | bytes]:
    """str/bytes found in an argument structure (not inside other calls' arguments).

    Iterative with a visit budget: shared references make a memo "billion laughs" structure tiny in
    memory but astronomically large to walk.
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    budget = _MAX_VISITS
    while stack and budget > 0:
        item, depth = stack.pop()
        budget -= 1
        if depth > 8 or node_of(item) is not None:
            continue
        if isinstance(item, (str, bytes, bytearray)):
            yield bytes(item) if isinstance(item, bytearray) else item
        elif isinstance(item, (list, tuple, set, frozenset)):
            children = list(itertools.islice(item, _MAX_STRINGS))
            stack.extend((child, depth + 1) for child in reversed(children))
        elif isinstance(item, dict):
            for key, child in reversed(list(itertools.islice(item.items(), _MAX_STRINGS))):
                stack.append((child, depth + 1))
                stack.append((key, depth + 1))


def _decoded_layers(raw: bytes) -> Iterator[Indicator]:
    """Recognise wrapped payloads one layer at a time (bounded)."""
    data = raw
    for _ in range(4):
        if (data[:1] == b"\x80" and len(data) > 1 and data[1] <= 5) or data[:2] in (b"cos", b"cposix", b"(d"):
            yield Indicator("pickle", f"inner pickle of {len(data)} bytes")
            return
        if data[:1] in (b"\xe3", b"c") and len(data) > 16 and b"\x00" in data[:8]:
            yield Indicator("marshal", f"marshalled code object of {len(data)} bytes")
            return
        if data[:1] == b"\x78" and len(data) > 2:
            try:
                inflater = zlib.decompressobj()
                out = inflater.decompress(data, _MAX_DECODED)
            except zlib.error:
                return
            yield Indicator("zlib", _printable(out))
            data = out
            continue
        text = data.decode("latin-1").strip()
        if re.fullmatch(_HEX, text, re.ASCII):
            data = binascii.unhexlify(text)
            yield Indicator("hex", _printable(data))
            continue
        if re.fullmatch(_B64, text, re.ASCII) and len(text) % 4 == 0:
            try:
                out = base64.b64decode(text, validate=False)
            except ValueError:  # binascii.Error, and anything else a decoder refuses: not a payload
                return
            yield Indicator("base64", _printable(out))
            data = out
            continue
        return


def _printable(data: bytes) -> str:
    text = data[:_MAX_TEXT].decode("utf-8", "replace").replace("\ufffd", ".")
    text = "".join(ch if ch.isprintable() or ch in "\n\t" else "." for ch in text)
    return text + ("..." if len(data) > _MAX_TEXT else "")


def extract(args: tuple[Any, ...], *, command: bool) -> tuple[Indicator, ...]:
    """Indicators in one call's arguments. ``command``: the callee runs its string argument as a command."""
    found: dict[tuple[str, str], Indicator] = {}

    def add(indicator: Indicator) -> None:
        found.setdefault((indicator.kind, indicator.value), indicator)

    first = args[0] if args else None
    if command and isinstance(first, (list, tuple)) and all(isinstance(a, str) for a in first):
        add(Indicator("command", _short(" ".join(first))))  # argv form: subprocess.call(["sh", "-c", ...])
    elif command and isinstance(first, (str, bytes)) and first.strip():
        add(Indicator("command", _short(first.decode("latin-1") if isinstance(first, bytes) else first)))
    for i, item in enumerate(strings_in(args)):
        if i >= _MAX_STRINGS:
            break
        text = item.decode("latin-1") if isinstance(item, bytes) else item
        for match in re.finditer(_URL, text, re.IGNORECASE):
            add(Indicator("url", _short(match.group(0))))
        for match in re.finditer(_IPV4, text):
            if all(int(octet) <= 255 for octet in match.group(0).split(".")):
                add(Indicator("ip", match.group(0)))
        for match in re.finditer(_PATH, text):
            if len(match.group(1)) > 1:
                add(Indicator("path", _short(match.group(1))))
        raw = item if isinstance(item, bytes) else item.encode("latin-1", "replace")
        if len(raw) >= 16:
            for indicator in _decoded_layers(raw[: _MAX_DECODED * 2]):
                add(indicator)
    return tuple(found.values())
