"""Recognise formats by their bytes, with each loader's own acceptance rule where one exists.

* tar: ``tarfile``'s own parse of the first header (``TarInfo.frombuf``), what ``tarfile.open`` and torch's
  legacy loader require. Later headers and GNU/pax extension records are left to ``tarfile`` itself when
  the archive is opened.
* compression: the magic numbers joblib and the decompressors check.
* pickle: protocol 2+ has a magic; protocols 0 and 1 have none, so :func:`looks_like_pickle` is a
  heuristic for picking model files out of a directory (a real loader runs every file from byte 0: the
  opener and the scanner, not this sniff, decide what runs).
* ZIP: a cheap test; :mod:`~picklewarden.containers.torchzip` decides what torch opens.
"""

from __future__ import annotations

import functools
import pickle as _stdlib_pickle
import re

from picklewarden._typing import TYPE_CHECKING
from picklewarden.pickle import opcodes as op
from picklewarden.pickle.layout import scan_layout

if TYPE_CHECKING:
    from picklewarden.limits import Limits

ZIP_LOCAL = b"PK\x03\x04"
SEVEN_ZIP_MAGIC = b"7z\xbc\xaf\x27\x1c"
NPY_MAGIC = b"\x93NUMPY"
ZF_HEADER = 21
"""Length of joblib's own ``ZF0x...`` compressed-file header."""
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_TAR_BLOCK = 512
ZIP_END = b"PK\x05\x06"
_SNIFF_BYTES = 64 * 1024
_NAME = re.compile(r"[A-Za-z_][\w.]*")


def looks_like_pickle(head: bytes, limits: Limits) -> bool:
    """True when ``head`` (the file's first bytes) starts a pickle.

    Protocol 2+ pickles begin with PROTO. Protocols 0 and 1 have no magic, and many ASCII bytes are
    opcodes, so those must decode: reach STOP, keep decoding to the end of the sample, or import or call
    something before they break (text imports must name plausible identifiers).
    """
    if not head:
        return False
    if head[0] == op.PROTO:
        return len(head) > 1 and head[1] <= _stdlib_pickle.HIGHEST_PROTOCOL
    if op.BY_CODE[head[0]] is None:
        return False
    layout = scan_layout(head[:_SNIFF_BYTES], 0, _sniff_limits(limits), keep=True)
    if layout.end is not None:
        return True
    if len(head) >= _SNIFF_BYTES and layout.cut >= len(head) - 1024:
        return True  # still decoding cleanly where the sample ends
    assert layout.instructions is not None
    # A broken stream that already imports or calls is what a payload with a broken tail looks like.
    for ins in layout.instructions:
        if ins.code in op.IMPORTS and ins.arg:  # text GLOBAL/INST: names must look like names
            names = ins.arg.decode("latin-1").split("\n")[:2]
            if all(_NAME.fullmatch(part) for part in names):
                return True
        elif ins.code in op.IMPORTS or ins.code in op.CALLS:
            return True
    return False


@functools.lru_cache(maxsize=8)
def _sniff_limits(limits: Limits) -> Limits:
    """The bounds of a sniff's decode: made once per set of limits (nested payload checks sniff thousands of
    strings per pickle, and building a validated copy costs more than the decode of a short one)."""
    return limits.replace(max_opcodes=100_000)


def starts_like_pickle(head: bytes) -> bool:
    """The first byte is an opcode: ``pickle.load`` would start executing this file."""
    return bool(head) and op.BY_CODE[head[0]] is not None


# What int(text, 8) accepts besides digits: sign, "0o" prefix, underscores and ASCII whitespace (stripped).
_OCTAL_TEXT = frozenset(b"01234567+-_oO" + bytes(b for b in range(128) if chr(b).isspace()))


def may_be_tar_checksum(field: bytes) -> bool:
    """False only where ``tarfile`` refuses the header's checksum field itself (a necessary condition that
    spares importing tarfile for almost every file). ``tarfile.nti`` reads a field starting with 0x80 or
    0xff as base-256 (always a number), and any other field up to its first NUL as ASCII text for
    ``int(text.strip() or "0", 8)``: a byte that no such text may contain makes it raise."""
    if field[:1] in (b"\x80", b"\xff"):
        return True
    return _OCTAL_TEXT.issuperset(field.split(b"\0", 1)[0])


def looks_like_tar(head: bytes) -> bool:
    """The first block is a member header that ``tarfile`` accepts, so ``tarfile.open`` (and torch.load's
    legacy tar loader) read the file as a tar archive.

    Acceptance is ``tarfile``'s own: the header is parsed by ``TarInfo.frombuf``, the function
    ``TarFile.next`` calls for the first member. That takes every checksum encoding ``tarfile`` takes
    (octal text with spaces, a sign, underscores or an ``0o`` prefix, GNU base-256 and its negative form,
    signed and unsigned sums), and rejects what ``tarfile`` rejects. Parsing a header runs nothing.
    An all-zero first block opens as an empty archive, from which no loader reads anything: not a tar here.
    """
    if len(head) < _TAR_BLOCK or not may_be_tar_checksum(bytes(head[148:156])):
        return False
    import tarfile  # here: most files are no candidates, and tarfile (with shutil, pwd, grp) costs 2 ms

    try:
        tarfile.TarInfo.frombuf(bytes(head[:_TAR_BLOCK]), tarfile.ENCODING, "surrogateescape")
    except (tarfile.TarError, ValueError, OverflowError):
        return False
    return True


def compression_kind(head: bytes) -> str | None:
    """The compression format ``head`` starts with, or None. Checks follow the magic numbers the
    decompressors themselves require, and include every prefix joblib treats as compressed."""
    if head[:3] == b"\x1f\x8b\x08":
        return "gzip"
    if head[:3] == b"BZh" and head[3:4] in b"123456789" and len(head) >= 4:
        return "bz2"
    if head[:6] == b"\xfd7zXZ\x00":
        return "xz"
    if head[:2] == b"\x5d\x00":
        return "lzma"
    if len(head) >= 2 and head[0] == 0x78 and (head[0] << 8 | head[1]) % 31 == 0:
        return "zlib"
    if head[:4] == b"\x04\x22\x4d\x18":
        return "lz4"
    if head[:2] == b"ZF" and len(head) >= ZF_HEADER and head[2:4] == b"0x":
        return "joblib-zfile"
    if head[:4] == _ZSTD_MAGIC:
        return "zstd"
    return None


_EOCD_SIZE = 22
_EOCD_SEARCH = 0xFFFF + _EOCD_SIZE + 4096
"""How far from the end torch's reader looks for the end-of-central-directory record (see torchzip)."""


def looks_like_zip(data: bytes) -> bool:
    """True when ``data`` starts with a local header or has an end-of-central-directory record near its end
    (a cheap test; :mod:`picklewarden.containers.torchzip` decides what torch really opens)."""
    if bytes(data[:4]) == ZIP_LOCAL:
        return True
    size = len(data)
    if size < _EOCD_SIZE:
        return False
    start = max(0, size - _EOCD_SEARCH)
    return bytes(data[start:]).rfind(ZIP_END, 0, size - start - _EOCD_SIZE + 4) >= 0
