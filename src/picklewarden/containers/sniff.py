"""Recognise formats by their bytes."""

from __future__ import annotations

import pickle as _stdlib_pickle

from picklewarden.limits import Limits
from picklewarden.pickle import opcodes as op
from picklewarden.pickle.layout import scan_layout

ZIP_LOCAL = b"PK\x03\x04"
ZIP_END = b"PK\x05\x06"
_SNIFF_BYTES = 64 * 1024


def looks_like_pickle(head: bytes, limits: Limits) -> bool:
    """True when ``head`` (the file's first bytes) starts a pickle.

    Protocol 2+ pickles begin with PROTO. Protocols 0 and 1 have no magic, and many ASCII bytes are
    opcodes, so those must decode: reach STOP, or import a global with a plausible dotted name before
    the sample ends.
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
    for ins in layout.instructions:
        if ins.code in op.IMPORTS and ins.arg:
            names = ins.arg.decode("latin-1").split("\n")[:2]
            if all(part.replace(".", "").replace("_", "a").isalnum() for part in names if part):
                return True
    return False
