"""What a container yields: pickle streams to analyse, plus anomalies seen in the container itself.

A container reader never runs a pickle itself. Formats that interleave pickles with raw data (legacy torch
tar members, joblib) hand the scanner a :data:`Walker` that says, from each finished pickle's result,
where the next pickle starts; archives and compressed streams hand it :class:`Child` files to open in turn.
"""

from __future__ import annotations

import bisect
import enum
import io
from collections.abc import Callable, Iterable, Sequence

from picklewarden._typing import TYPE_CHECKING, NamedTuple

Data = bytes
"""A whole file: ``bytes``, an ``mmap``, or any object with ``len()`` and contiguous slices returning bytes
(remote files fetched by range). Readers only ever take ``len(data)`` and ``data[a:b]``."""

if TYPE_CHECKING:
    from typing import Any

    from picklewarden.limits import Limits
    from picklewarden.model import Severity
    from picklewarden.pickle.program import Program


class Stacking(enum.Enum):
    """How many pickles a loader reads from one stream."""

    ONE = "one"
    """Exactly one pickle (torch's data.pkl): anything after STOP is ignored by the loader."""
    ALL = "all"
    """Read pickles back to back while they last (raw files: scan everything a loader could read)."""


class Anomaly(NamedTuple):
    """Something odd about the container. ``rule`` is a rule id in :mod:`picklewarden.rules`."""

    rule: str
    member: str | None
    offset: int | None
    message: str
    severity: Severity | None = None
    """Overrides the rule's default severity (e.g. ``INFO`` for a harmless variant)."""
    evidence: str = ""
    """What shows it (a config line, disassembled code), for formats that are not pickles."""
    symbol: str = ""
    """The canonical ``module.qualname`` involved, when one is."""


class Step(NamedTuple):
    """A walker's answer after one pickle: where the loader reads the next one, and what it noticed."""

    next: int | None
    """Offset of the next pickle in the same stream, or None when the loader reads no more pickles."""
    anomaly: Anomaly | None = None
    error: str | None = None
    """Why the rest of the stream cannot be followed (the scan is then incomplete)."""


Walker = Callable[["Program", int], Step]
"""``walker(program, index) -> Step``: called after pickle number ``index`` of a stream has run."""


class OffsetMap(NamedTuple):
    """Maps offsets in a spliced stream (raw data cut out) back to offsets in the original member."""

    spliced: tuple[int, ...]
    """Start of each kept segment in the spliced stream (ascending, first is 0)."""
    original: tuple[int, ...]
    """Start of the same segment in the original member."""

    def __call__(self, offset: int | None) -> int | None:
        if offset is None or not self.spliced:
            return offset
        index = max(0, bisect.bisect_right(self.spliced, offset) - 1)
        return self.original[index] + offset - self.spliced[index]


class PickleSource(NamedTuple):
    member: str
    """Member name within the container ('' for a bare stream)."""
    data: bytes
    stacking: Stacking
    file_like: bool
    """The victim's loader reads it from a file object (True) or a BytesIO of the member (False)."""
    start: int = 0
    """Offset of the first pickle within ``data``."""
    walker: Walker | None = None
    """Locates the pickles after the first one (overrides ``stacking``)."""
    vouched: frozenset[str] = frozenset()
    """Exact dotted names (or ``namespace.*``, see :func:`vouches`) that this container's loader resolves to
    its own inert machinery: findings about importing them or instantiating them without arguments (with
    any arguments for entries ending ``(*)``) are dropped. Every other use, and tampering, is judged."""
    origin: OffsetMap | None = None
    """Set when ``data`` is a spliced view of the member: maps finding offsets back to the member."""
    label: str = ""
    """What this view of the member is, when it is not the plain stream (e.g. ``joblib``)."""
    python: bool = False
    """The loader reads it with the pure-Python ``pickle._Unpickler`` (joblib.load), not the C one."""
    optional: bool = False
    """A speculative view (a tar header that may also be a pickle): dropped when it yields no statement."""


class Child(NamedTuple):
    """A file inside the container (archive member, decompressed stream) to open and analyse in turn."""

    member: str
    """Its name inside the container ('' when the container is a mere wrapper such as gzip)."""
    data: bytes
    dormant: bool = False
    """No loader of the outer file reads it as a model (e.g. pickle bytes sitting in a tensor storage):
    findings inside it are reported, but only what is plainly malicious keeps a threatening severity."""


ProgramCheck = Callable[[Sequence["Program"]], Iterable[Anomaly]]
"""A container check that needs the programs its pickles produced (e.g. storage consistency)."""


class Opened:
    """What a reader found in one container; the lists fill in as it reads."""

    __slots__ = ("anomalies", "checks", "children", "errors", "format", "notes", "sources", "wrapper")

    def __init__(self, format: str, sources: list[PickleSource] | None = None, *, wrapper: bool = False) -> None:
        self.format = format
        self.sources: list[PickleSource] = [] if sources is None else sources
        self.anomalies: list[Anomaly] = []
        self.errors: list[str] = []
        self.notes: list[str] = []
        self.children: list[Child] = []
        self.checks: list[ProgramCheck] = []
        self.wrapper = wrapper
        """A pure wrapper (compression): the format reported is ``<this>><inner format>``."""


class Budget:
    """Bytes that may still be decompressed or extracted for one scanned file, shared by all nesting."""

    def __init__(self, limits: Limits) -> None:
        self.left = limits.max_extracted_bytes

    def take(self, size: int) -> bool:
        """Reserve ``size`` bytes; False (and nothing reserved) when that would exceed the budget."""
        if size > self.left:
            return False
        self.left -= size
        return True


class Context(NamedTuple):
    """Where a container sits: how deep in other containers, and what budget is left for the file."""

    limits: Limits
    budget: Budget
    depth: int = 0
    ancestry: tuple[bytes, ...] = ()
    """Digests of the containers enclosing this one (a container inside itself is a cycle)."""
    name: str = ""
    """The file or member name, for extension hints only."""

    @classmethod
    def root(cls, limits: Limits, name: str = "") -> Context:
        return cls(limits, Budget(limits), name=name)

    def inside(self, data: Data, name: str) -> Context:
        """The context of a file found inside this one."""
        return Context(self.limits, self.budget, self.depth + 1, (*self.ancestry, digest(data)), name)


_FINGERPRINT_SPAN = 1 << 20


def digest(data: Data) -> bytes:
    """A fingerprint for cycle detection: size, head and tail. Cheap for gigabyte members; a collision only
    makes a file look like it contains itself, which is reported, never passed as safe."""
    import hashlib  # here: only nested containers need it, and loading OpenSSL costs milliseconds of start-up

    size = len(data)
    hasher = hashlib.sha256(size.to_bytes(8, "little"))
    hasher.update(data[:_FINGERPRINT_SPAN])
    hasher.update(data[max(0, size - _FINGERPRINT_SPAN) : size])
    return hasher.digest()


def join_member(outer: str, inner: str) -> str:
    """The member path of ``inner`` (a name inside the container ``outer``): ``outer!inner``."""
    if not outer:
        return inner
    if not inner:
        return outer
    return f"{outer}!{inner}"


def vouches(entry: str, symbol: str) -> bool:
    """True when the vouched-for ``entry`` covers ``symbol``: the exact dotted name a loader itself resolves
    to its own machinery, or ``namespace.*`` for a namespace the loader never imports from (TorchScript's
    ``__torch__.*`` classes). A class's attributes are never covered by the class: a pickle that reaches
    ``Wrapper.some_method`` calls something the loader does not."""
    if entry.endswith(".*"):
        return symbol.startswith(entry[:-1])
    return symbol == entry


def reader_of(data: Data) -> io.RawIOBase | io.BytesIO:
    """A seekable file over ``data``: a BytesIO over bytes (it shares them, and reads in C), else a
    :class:`BufferReader`, which copies only the slices read."""
    return io.BytesIO(data) if type(data) is bytes else BufferReader(data)


class BufferReader(io.RawIOBase):
    """A seekable read-only file over a whole file's data (tarfile, zipfile, py7zr): only the slices read are
    copied, so an mmap or a remote file is never read whole."""

    def __init__(self, data: Data) -> None:
        super().__init__()
        self._data = data
        self._size = len(data)
        self._pos = 0

    @property
    def size(self) -> int:
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            target = offset
        elif whence == io.SEEK_CUR:
            target = self._pos + offset
        elif whence == io.SEEK_END:
            target = self._size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if target < 0:
            raise OSError("negative seek position")
        self._pos = target
        return target

    def read(self, size: int | None = -1) -> bytes:
        # RawIOBase.read(n) would first allocate n bytes: a hostile size field must not decide that.
        end = self._size if size is None or size < 0 else min(self._size, self._pos + size)
        if end <= self._pos:
            return b""
        chunk = bytes(self._data[self._pos : end])
        self._pos = end
        return chunk

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer)
        chunk = self._data[self._pos : self._pos + len(view)] if self._pos < self._size else b""
        view[: len(chunk)] = chunk
        self._pos += len(chunk)
        return len(chunk)
