"""Compressed streams (gzip, bz2, xz, lzma, zlib, lz4, joblib's old ZF files), recognised by magic bytes and
decompressed in bounded steps.

joblib picks its decompressor from the first bytes alone, and ``pandas.read_pickle`` or a plain
``pickle.load(gzip.open(...))`` unpickle whatever comes out, so a compressed pickle is as dangerous as a
bare one. Every decompression here stops at the file's remaining byte budget and, past a floor, at a
maximum expansion ratio (a bomb is reported, never followed). A corrupt or truncated stream still yields
the bytes before the damage: a streaming loader has already unpickled them when it fails.
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from picklewarden.containers.base import Anomaly, Context, Data
from picklewarden.containers.sniff import ZF_HEADER
from picklewarden.model import Severity

_CHUNK = 64 << 10
"""Input fed per step: the ratio is checked against input fed so far, so a bomb overshoots the limit by
at most this many bytes times the ratio before it is caught."""
_STEP_OUT = 8 << 20
_LZMA_MEMLIMIT = 512 << 20
"""liblzma sizes its dictionary from the header; a hostile header must not make us allocate gigabytes."""


@dataclass(frozen=True)
class Decompressed:
    data: bytes
    """Everything decoded before the end, the damage or the limit."""
    anomalies: tuple[Anomaly, ...] = ()
    error: str | None = None
    """Set when decoding stopped before the end of the stream (the scan of this file is incomplete)."""


class _Decoder(Protocol):
    @property
    def eof(self) -> bool: ...

    @property
    def unused_data(self) -> bytes: ...

    @property
    def needs_input(self) -> bool: ...

    def decompress(self, data: bytes, max_length: int = -1) -> bytes: ...


class _ZlibDecoder:
    """zlib's decompressobj behind the bz2/lzma interface (pending input lives in ``unconsumed_tail``)."""

    def __init__(self, wbits: int) -> None:
        self._inflater = zlib.decompressobj(wbits)

    @property
    def eof(self) -> bool:
        return self._inflater.eof

    @property
    def unused_data(self) -> bytes:
        return self._inflater.unused_data

    @property
    def needs_input(self) -> bool:
        return not self._inflater.unconsumed_tail

    def decompress(self, data: bytes, max_length: int = -1) -> bytes:
        pending = self._inflater.unconsumed_tail + data
        return self._inflater.decompress(pending, max(max_length, 0))


def _factory(kind: str) -> Callable[[], _Decoder] | str:
    """A decoder factory for ``kind``, or the reason it cannot be decoded here."""
    match kind:
        case "gzip":
            return lambda: _ZlibDecoder(31)
        case "zlib" | "joblib-zfile":
            return lambda: _ZlibDecoder(15)
        case "bz2":
            return bz2.BZ2Decompressor
        case "xz":
            return lambda: lzma.LZMADecompressor(lzma.FORMAT_XZ, memlimit=_LZMA_MEMLIMIT)
        case "lzma":
            return lambda: lzma.LZMADecompressor(lzma.FORMAT_ALONE, memlimit=_LZMA_MEMLIMIT)
        case "lz4":
            try:
                import lz4.frame  # type: ignore[import-not-found,import-untyped,unused-ignore]
            except ImportError:
                return (
                    "lz4-compressed data cannot be read: the 'lz4' package, a dependency of picklewarden, is missing "
                    "(reinstall picklewarden, or pip install lz4)"
                )
            return lz4.frame.LZ4FrameDecompressor  # type: ignore[no-any-return]
        case _:
            return f"{kind}-compressed data is not supported"


_MAGIC_AGAIN = {"gzip": b"\x1f\x8b", "bz2": b"BZh", "xz": b"\xfd7zXZ\x00", "lz4": b"\x04\x22\x4d\x18"}
"""Formats whose readers (gzip.open, bz2.open, lzma.open, lz4.frame) continue into concatenated streams."""


def decompress(kind: str, data: Data, ctx: Context) -> Decompressed:
    """Decode ``data`` (a whole ``kind`` stream) within the file's budget and the ratio limit."""
    factory = _factory(kind)
    if isinstance(factory, str):
        return Decompressed(b"", error=factory)
    view: Data = data
    position = ZF_HEADER if kind == "joblib-zfile" else 0
    end = len(data)
    limits = ctx.limits
    out = bytearray()
    anomalies: list[Anomaly] = []
    fed = 0
    decoder = factory()
    streams = 1
    cap = ctx.budget.left

    def stop(rule: str, message: str, severity: Severity | None = None) -> Decompressed:
        anomalies.append(Anomaly(rule, None, position, message, severity))
        ctx.budget.take(len(out))
        return Decompressed(bytes(out), tuple(anomalies), message)

    while True:
        try:
            if decoder.needs_input:
                if position >= end:
                    break
                chunk = bytes(view[position : min(end, position + _CHUNK)])
                position += len(chunk)
                fed += len(chunk)
            else:
                chunk = b""
            room = cap - len(out)
            out += decoder.decompress(chunk, min(_STEP_OUT, room + 1))
        except (zlib.error, OSError, EOFError, lzma.LZMAError, ValueError, RuntimeError) as exc:
            detail = f"{kind} stream is corrupt after {len(out)} decoded bytes ({exc})"
            if len(out) == 0 and streams == 1:
                return Decompressed(b"", (), f"not a valid {kind} stream: {exc}")
            anomalies.append(
                Anomaly(
                    "PW300",
                    None,
                    position,
                    f"{detail}; a streaming loader fails here, after unpickling what came before",
                )
            )
            break
        if len(out) > cap:
            del out[cap:]
            return stop(
                "PW301",
                f"decompressing {kind} data exceeds the remaining {cap}-byte budget for this file "
                "(limit max_extracted_bytes); decompression stopped",
            )
        if len(out) > limits.ratio_floor_bytes and len(out) > max(fed, 1) * limits.max_compression_ratio:
            return stop(
                "PW305",
                f"{kind} data expands more than {limits.max_compression_ratio}:1 ({fed} compressed bytes "
                f"gave over {len(out)} bytes): a decompression bomb; decompression stopped",
            )
        if decoder.eof:
            rest = (decoder.unused_data or b"") + bytes(view[position:end])  # lz4 says None
            again = _MAGIC_AGAIN.get(kind)
            if again is not None and rest.startswith(again):
                # Concatenated streams: Python's readers keep going, so everything they return is read.
                decoder = factory()
                view, position, end = rest, 0, len(rest)
                streams += 1
                continue
            if rest.strip(b"\x00"):
                anomalies.append(
                    Anomaly(
                        "PW302",
                        None,
                        None,
                        f"{len(rest)} bytes follow the end of the {kind} stream; readers ignore or reject them",
                    )
                )
            break
    if not decoder.eof and not any(a.rule == "PW300" for a in anomalies):
        anomalies.append(
            Anomaly(
                "PW300",
                None,
                position,
                f"{kind} stream is truncated after {len(out)} decoded bytes; a streaming loader fails there, after "
                "unpickling what came before",
            )
        )
    ctx.budget.take(len(out))
    return Decompressed(bytes(out), tuple(anomalies))
