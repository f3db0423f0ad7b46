"""What ``PyTorchStreamReader`` reads while opening an archive, and the records torch looks up by fixed name.

Checks of :class:`~picklewarden.containers.torchzip._Reader`, apart so that module stays readable:
``.data/serialization_id`` and the version record are read on opening (a failure there means torch
refuses the archive), and miniz's case-blind lookup finds torch's records under names that case-sensitive
readers miss.
"""

from __future__ import annotations

from picklewarden._typing import TYPE_CHECKING
from picklewarden.containers.zipentry import ZipEntry, _extract
from picklewarden.containers.zipindex import _stoull
from picklewarden.errors import LimitExceeded, ScanError

if TYPE_CHECKING:
    from picklewarden.containers.torchzip import TorchZip
    from picklewarden.containers.zipdir import DirectoryReader

_MIN_VERSION = 1
_MAX_VERSION = 10  # kMaxSupportedFileFormatVersion in torch 2.13
_VERSION_RECORD_CAP = 1 << 16

_TORCH_RECORDS = (
    "data.pkl",
    "constants.pkl",
    "version",
    ".data/version",
    "byteorder",
    ".format_version",
    ".storage_alignment",
    ".data/serialization_id",
)
"""Records torch.load and torch.jit.load look up by fixed name."""


def check_name_case(reader: DirectoryReader, archive: TorchZip) -> None:
    """torch finds its records whatever their case; case-sensitive readers (zipfile) do not."""
    for record in _TORCH_RECORDS:
        entry = archive.record(record)
        wanted = f"{archive.prefix}/{record}"
        if entry is not None and entry.name != wanted:
            reader.note(
                "name-case",
                entry.name,
                entry.header_offset,
                f"torch reads this member for {record!r} because miniz ignores ASCII case; case-sensitive readers "
                f"such as Python's zipfile find no {wanted!r}",
            )


def check_open_records(reader: DirectoryReader, archive: TorchZip) -> None:
    """What PyTorchStreamReader reads while opening: .data/serialization_id, then the version record."""
    serialization = archive.record(".data/serialization_id")
    if serialization is not None:
        problem = _try_read(reader, serialization)
        if problem is not None:
            reader.note(
                "torch-refuses",
                serialization.name,
                serialization.header_offset,
                f"torch reads .data/serialization_id while opening the archive and fails: {problem}",
            )
    version = archive.record(".data/version") or archive.record("version")
    if version is None:
        reader.note("bad-version", None, None, "the archive has no version record; torch refuses to open it")
        return
    try:
        text, _ = _extract(reader.data, version, _VERSION_RECORD_CAP)
    except LimitExceeded:
        reader.note(
            "bad-version",
            version.name,
            version.header_offset,
            f"the version record is {version.size} bytes; torch reads it all and parses a number from its start",
        )
        return
    except ScanError as exc:
        reader.note("bad-version", version.name, version.header_offset, f"torch cannot read the version record: {exc}")
        return
    value = _stoull(text)
    if value is None or not _MIN_VERSION <= value <= _MAX_VERSION:
        reader.note(
            "bad-version",
            version.name,
            version.header_offset,
            f"version {text[:40]!r} is not a number in {_MIN_VERSION}..{_MAX_VERSION}; torch 2.x refuses to open "
            "the archive",
        )


def _try_read(reader: DirectoryReader, entry: ZipEntry) -> str | None:
    """Why torch fails reading ``entry`` (None: it reads it, or only our size limit stops us)."""
    try:
        _extract(reader.data, entry, reader.limits.max_pickle_bytes)
    except LimitExceeded:
        return None
    except ScanError as exc:
        return str(exc)
    return None
