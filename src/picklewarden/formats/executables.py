"""Executables posing as models: native binaries, scripts, and llamafiles (Actually Portable Executables:
a shell script, a Windows PE and a ZIP of weights in one file)."""

from __future__ import annotations

import struct

from picklewarden._typing import TYPE_CHECKING
from picklewarden.containers.base import Anomaly, Data, Opened
from picklewarden.model import Severity

if TYPE_CHECKING:
    from typing import Final

_APE: Final = (b"MZqFpD='", b"jartsr='")
"""The first bytes of an Actually Portable Executable (llamafile): a PE header that is also a shell line."""
_MACHO: Final = (b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf", b"\xce\xfa\xed\xfe", b"\xcf\xfa\xed\xfe")


def kind(head: bytes) -> str | None:
    """What executable ``head`` starts, or None."""
    if head.startswith(_APE):
        return "llamafile"
    if head.startswith(b"\x7fELF"):
        return "ELF executable"
    if head.startswith(_MACHO):
        return "Mach-O executable"
    if head.startswith(b"\xca\xfe\xba\xbe") and len(head) >= 8:
        # Also Java's class-file magic: a universal binary declares a handful of architectures.
        (count,) = struct.unpack_from(">I", head, 4)
        if 0 < count < 20:
            return "Mach-O universal executable"
    if head.startswith(b"MZ") and len(head) >= 64:
        (pe,) = struct.unpack_from("<I", head, 0x3C)
        if pe + 4 <= len(head) and head[pe : pe + 4] == b"PE\x00\x00":
            return "PE (Windows) executable"
    if head.startswith(b"#!"):
        return "script"
    return None


def open_executable(data: Data, what: str) -> Opened:
    opened = Opened("llamafile" if what == "llamafile" else "executable")
    if what == "llamafile":
        message = (
            "a llamafile: an executable (shell script, PE and ZIP in one) bundling llama.cpp with weights; "
            "running it runs its code. The weights inside are scanned"
        )
        opened.anomalies.append(Anomaly("PW406", None, None, message, Severity.MEDIUM))
        return opened
    line = bytes(data[:200]).split(b"\n", 1)[0].decode("latin-1") if what == "script" else ""
    article = "an" if what[0] in "AEIOU" else "a"
    message = f"the file is {article} {what}, not a model: running it runs its code"
    opened.anomalies.append(Anomaly("PW406", None, None, message, evidence=line))
    return opened
