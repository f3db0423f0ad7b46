"""torch's oldest checkpoint format: a tar archive of ``sys_info``, ``pickle``, ``storages`` and ``tensors``.

``torch.load(path, weights_only=False)`` still tries this format first for every file that is not a ZIP:
when ``tarfile.open`` accepts the file, ``legacy_load`` extracts ``storages`` and unpickles from it a count,
then per storage a ``(key, location, storage_type)`` pickle followed by raw data (an int64 element count
and the elements), then a list of storage views; then ``tensors``: a count, then per tensor a pickle
followed by a raw shape record; then the ``pickle`` member with persistent ids. Every one of those
pickles runs with the full unpickler, so each is scanned, found by following the raw records exactly as
torch skips them (:class:`StorageWalker`, :class:`TensorWalker`).

Also modelled: members found as ``getmember`` finds them (the last of a name), links resolved inside the
archive as ``extract``/``extractfile`` resolve them, and a symbolic link leaving the archive reported
(torch would unpickle the victim's own file). Not modelled: torch only tries the tar format for real
files at offset 0 (``fileno()``), which only adds a view here; on Python 3.12+ ``extract`` applies an
extraction filter whose refusal is a ``TarError``, after which torch unpickles the whole file from byte 0:
that view is scanned whenever the first bytes decode as a pickle (see
:func:`~picklewarden.containers.opener.open_bytes`).
"""

from __future__ import annotations

import functools
import struct

from picklewarden._typing import TYPE_CHECKING
from picklewarden.containers.archives import last_member, link_target, read_tar_member, tar_member_anomalies
from picklewarden.containers.base import Anomaly, Child, Context, Opened, PickleSource, Stacking, Step
from picklewarden.pickle.machine import node_of
from picklewarden.pickle.program import Global, Program

if TYPE_CHECKING:
    import tarfile  # only for types: the archive is opened by the caller
    from typing import Any

TORCH_MEMBERS = ("storages", "tensors", "pickle")
"""The members legacy_load reads, in the order it unpickles them."""

ELEMENT_SIZES: dict[str, int] = {
    "DoubleStorage": 8,
    "FloatStorage": 4,
    "HalfStorage": 2,
    "LongStorage": 8,
    "IntStorage": 4,
    "ShortStorage": 2,
    "CharStorage": 1,
    "ByteStorage": 1,
    "BoolStorage": 1,
    "BFloat16Storage": 2,
    "ComplexDoubleStorage": 16,
    "ComplexFloatStorage": 8,
    "QUInt8Storage": 1,
    "QInt8Storage": 1,
    "QInt32Storage": 4,
    "QUInt4x2Storage": 1,
    "QUInt2x4Storage": 1,
    "UntypedStorage": 1,
}
"""Element size of each torch storage class (``torch._utils._element_size(cls._dtype)``)."""

_STORAGE_MODULES = ("torch", "torch.cuda")


def element_size(value: Any) -> tuple[str, int | None]:
    """(name, element size) of a pickled storage class stand-in; size None when it is not a torch storage."""
    node = node_of(value)
    if not isinstance(node, Global):
        return (type(value).__name__, None)
    return _storage_size(node.module, node.name)


@functools.lru_cache(maxsize=256)
def _storage_size(module: str, qualname: str) -> tuple[str, int | None]:
    # Cached: a checkpoint names the same few storage classes once per tensor (hundreds of thousands).
    full = f"{module}.{qualname}"
    module, _, name = full.rpartition(".")
    if module in _STORAGE_MODULES and name in ELEMENT_SIZES:
        return full, ELEMENT_SIZES[name]
    return full, None


def _count(program: Program) -> int | None:
    result = program.result
    if type(result) is int or type(result) is bool:
        return int(result)
    return None


class _CountedWalker:
    """A member that starts with a pickled record count, followed by that many records."""

    what = "record"
    trailer = False
    """Whether one more pickle follows the records (the storage-views list)."""

    def __init__(self, data: bytes, member: str) -> None:
        self.data = data
        self.member = member
        self.left: int | None = None

    def __call__(self, program: Program, index: int) -> Step:
        end = program.end
        assert end is not None
        if self.left is not None:
            return self.record(program, end)
        count = _count(program)
        if count is None:
            message = f"the {self.what} count is not an integer; torch fails here"
            return Step(None, Anomaly("PW300", self.member, program.start, message))
        self.left = max(count, 0)
        return Step(end if self.left or self.trailer else None)

    def record(self, program: Program, end: int) -> Step:
        """The step after one record's pickle (which ends at ``end``), once the count is known."""
        raise NotImplementedError


class StorageWalker(_CountedWalker):
    """Follows the ``storages`` member: count, then (args pickle, int64 count, raw elements) per storage,
    then the storage-views pickle."""

    what = "storage"
    trailer = True

    def record(self, program: Program, end: int) -> Step:
        if self.left is None or self.left == 0:
            return Step(None)  # that was the storage-views list: torch reads nothing more from this member
        self.left -= 1
        result = program.result
        if type(result) is not tuple or len(result) != 3:
            return Step(
                None,
                Anomaly(
                    "PW300", self.member, program.start, "storage record is not (key, location, type); torch fails here"
                ),
            )
        name, size = element_size(result[2])
        if size is None:
            return Step(
                None, error=f"{self.member}: unknown storage type {name}; the pickles after it cannot be located"
            )
        header = self.data[end : end + 8]
        if len(header) < 8:
            return Step(None, Anomaly("PW300", self.member, end, "storage data is truncated; torch fails here"))
        (elements,) = struct.unpack("<q", header)
        following = end + 8 + elements * size
        if elements < 0 or following > len(self.data):
            return Step(
                None,
                Anomaly(
                    "PW300",
                    self.member,
                    end,
                    f"storage declares {elements} elements of {size} bytes, beyond the member; torch fails here",
                ),
            )
        return Step(following)


class TensorWalker(_CountedWalker):
    """Follows the ``tensors`` member: count, then (args pickle, raw shape record) per tensor."""

    what = "tensor"

    def record(self, program: Program, end: int) -> Step:
        assert self.left is not None
        self.left -= 1
        header = self.data[end : end + 4]
        if len(header) < 4:
            return Step(None, Anomaly("PW300", self.member, end, "tensor record is truncated; torch fails here"))
        (ndim,) = struct.unpack("<i", header)
        following = end + 8 + 16 * ndim + 8
        if ndim < 0 or following > len(self.data):
            return Step(None, Anomaly("PW300", self.member, end, f"tensor record with {ndim} dimensions is broken"))
        return Step(following if self.left else None)


def open_legacy_tar(ctx: Context, tar: tarfile.TarFile, members: list[tarfile.TarInfo], opened: Opened) -> Opened:
    """The pickles torch's legacy_load runs from a tar checkpoint (members already listed), plus any other
    member as a dormant child."""
    opened.format = "torch-legacy-tar"
    for member in members:
        opened.anomalies.extend(tar_member_anomalies(member))
    wanted: dict[str, tarfile.TarInfo] = {}
    used: set[int] = set()
    for name in (*TORCH_MEMBERS, "sys_info"):
        found = last_member(members, name)
        if found is not None:
            wanted[name] = found
        elif name != "sys_info":
            opened.anomalies.append(
                Anomaly("PW306", name, None, f"the archive has no {name!r} member; torch.load fails there")
            )
    for name, member in wanted.items():
        if member.issym() and name != "pickle":
            opened.anomalies.append(
                Anomaly(
                    "PW304",
                    name,
                    member.offset,
                    f"{name!r} is a symbolic link to {member.linkname!r}: torch extracts it and unpickles whatever "
                    "file that names on the victim's disk",
                )
            )
            opened.errors.append(f"{name}: torch would unpickle {member.linkname!r}, a file outside the archive")
            continue
        if member.issym() or member.islnk():
            # extractfile (``pickle``) and extract (the others) both resolve these inside the archive.
            target = link_target(members, member)
            if target is None:
                opened.anomalies.append(
                    Anomaly("PW306", name, member.offset, f"{name!r} links to a missing member; torch.load fails there")
                )
                continue
            member = target
            used.add(id(member))
        content = read_tar_member(tar, member, ctx)
        if isinstance(content, str):
            opened.errors.append(content)
            continue
        if name == "storages":
            source = PickleSource(name, content, Stacking.ONE, True, walker=StorageWalker(content, name))
        elif name == "tensors":
            source = PickleSource(name, content, Stacking.ONE, True, walker=TensorWalker(content, name))
        else:
            # ``pickle`` is read by torch; ``sys_info`` is not, but old tools printed it: scanned all the same.
            source = PickleSource(name, content, Stacking.ONE, True)
        opened.sources.append(source)
    used.update(id(member) for member in wanted.values())
    for member in members:
        if member.isreg() and id(member) not in used:
            content = read_tar_member(tar, member, ctx)
            if isinstance(content, str):
                opened.errors.append(content)
            else:
                opened.children.append(Child(member.name, content, dormant=True))
    return opened
