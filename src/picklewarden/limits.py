"""Every resource bound picklewarden applies, in one frozen object.

Hostile files are built to exhaust scanners; each bound here turns such an attempt into a finding with a
verdict that is never ``safe``, instead of a crash, a hang or an out-of-memory kill.
"""

from __future__ import annotations

from picklewarden._typing import NamedTuple

# A NamedTuple, not a dataclass: Python 3.11 compiles each generated dataclass method at import, which every
# one-file scan pays for (see "Start-up" in docs/benchmarks.md). Fields are ``_fields``, ``asdict`` is
# ``_asdict()``; :class:`Limits` adds the validation.


class _Bounds(NamedTuple):
    """The fields of :class:`Limits`, with their defaults."""

    max_file_bytes: int = 16 * 1024**3
    """Largest file accepted at all (only pickle members and directories are ever read from it)."""
    max_pickle_bytes: int = 2 * 1024**3
    """Largest single pickle stream handed to the unpickler."""
    max_opcodes: int = 50_000_000
    """Opcodes decoded per pickle stream."""
    max_memo_index: int = 10_000_000
    """Largest memo index a PUT may name (the C unpickler allocates the memo up to twice this index)."""
    max_pickles_per_stream: int = 64
    """Pickles read back to back from one stream (legacy torch files hold five)."""
    max_members: int = 2_000_000
    """Entries read from one archive directory."""
    max_render_depth: int = 64
    """Nesting depth rendered in decompiled output and walked in result graphs."""
    max_render_chars: int = 2_000
    """Characters of decompiled evidence kept per finding."""
    max_program_statements: int = 5_000_000
    """Statements recorded per pickle before recording stops (a limit finding is raised)."""
    max_nesting_depth: int = 8
    """Containers followed inside containers (archives, compressed streams, nested payloads) from one file."""
    max_archive_members: int = 10_000
    """Members read from one archive bundle (tar, zip, 7z); torch's own archives use ``max_members``."""
    max_extracted_bytes: int = 2 * 1024**3
    """Bytes decompressed or extracted for one scanned file in total, across all nesting (held in memory)."""
    max_compression_ratio: int = 1_000
    """Output/input ratio of a decompression, enforced once its output exceeds ``ratio_floor_bytes``."""
    ratio_floor_bytes: int = 16 * 1024**2
    """Output size below which any compression ratio is accepted (small, highly regular data is normal)."""
    max_nested_payloads: int = 256
    """Embedded payloads (pickles in bytes, encoded or compressed) decoded and scanned per pickle."""
    max_header_bytes: int = 1024**2
    """Largest text header parsed (numpy ``.npy``); loaders that unpickle accept any size, we refuse more."""
    max_code_bytes: int = 64 * 1024**2
    """Largest TorchScript source file reviewed; a larger one is an error (its calls were not seen)."""
    max_seconds: int = 300
    """Wall time per pickle stream; checked between opcodes and between recorded statements."""


class Limits(_Bounds):
    """Resource bounds for one scanned file. All values are inclusive maxima and must be positive."""

    __slots__ = ()

    def __new__(cls, *args: int, **kwargs: int) -> Limits:
        self = super().__new__(cls, *args, **kwargs)
        for name, value in zip(self._fields, self, strict=True):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"limit {name} must be a positive integer, got {value!r}")
        return self

    def replace(self, **changes: int) -> Limits:
        """A copy with some bounds changed (validated like the original)."""
        return Limits(**{**self._asdict(), **changes})

    _replace = replace  # the tuple's own would skip the validation


DEFAULT_LIMITS = Limits()
