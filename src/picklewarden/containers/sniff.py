"""Recognise formats by their bytes."""

from __future__ import annotations

import pickle as _stdlib_pickle
import re

from picklewarden.limits import Limits
from picklewarden.pickle import opcodes as op
from picklewarden.pickle.layout import scan_layout

ZIP_LOCAL = b"PK\x03\x04"
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
    layout = scan_layout(head[:_SNIFF_BYTES], 0, limits.replace(max_opcodes=100_000), keep=True)
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


def starts_like_pickle(head: bytes) -> bool:
    """The first byte is an opcode: ``pickle.load`` would start executing this file."""
    return bool(head) and op.BY_CODE[head[0]] is not None
