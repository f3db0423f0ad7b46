"""A result cache: a file whose result is already known is not analysed again.

A :class:`FileReport` is a pure function of the bytes of the file, the scanner's code and data, the
:class:`~picklewarden.limits.Limits`, the :class:`~picklewarden.policy.config.Policy`, the file's extension
(a disguised extension is a finding) and whether the file was named or found in a directory (found files
that are not models are skipped). The cache key is a SHA-256 over exactly those, so a hit is the report a
fresh scan would produce, with only ``path`` changed.

Two ways to identify the bytes (:class:`CacheMode`):

``CONTENT`` (default) hashes the whole file. Identical files anywhere (a hub holds many copies of popular
checkpoints) are analysed once, and a file rewritten with the same bytes is still a hit. The price is
reading every byte: a scan alone reads only the ZIP directory and the pickles, so for a multi-gigabyte
checkpoint hashing costs more than scanning (SHA-256 runs at ~1-2 GB/s here). Use it where duplicates
are common or where the pickles are large (a 500k-tensor state dict takes seconds to analyse).

``STAT`` keys on ``(path, size, mtime_ns, ctime_ns, inode, device)`` and reads nothing: unchanged files
are skipped for the cost of one ``stat``, but duplicates at other paths are analysed again. ``ctime`` is
part of the key because a process that can write a file can also set its ``mtime`` back; the kernel
updates ``ctime`` on every write and ``utime`` call.

Entries are JSON files named by their key under ``directory``. Whoever can write there decides what the
scanner reports (a forged entry makes a malicious file look safe), so the directory is created with mode
0700 and must not be shared with anyone less trusted than the files' reviewers. Reports that carry errors
(an unreadable file, an internal error, a limit) are never stored: they may be transient.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import json
import os
import tempfile
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from picklewarden.limits import DEFAULT_LIMITS, Limits
from picklewarden.model import FileReport, Finding, Indicator

if TYPE_CHECKING:
    from picklewarden.policy.config import Policy

_FORMAT = 1
"""Version of the entry layout on disk; bumping it orphans old entries."""


class CacheMode(enum.Enum):
    """How the cache recognises a file it has seen (see the module documentation for the trade-off)."""

    CONTENT = "content"
    """SHA-256 of the whole file: duplicates anywhere are hits; reads every byte once."""
    STAT = "stat"
    """Path and ``stat`` identity: reads nothing; only the same unchanged file is a hit."""


@dataclass(frozen=True)
class ResultCache:
    """Stores and answers file reports under ``directory``. Safe to share between processes: entries are
    written atomically and a damaged entry is a miss. Picklable, so worker processes can use it."""

    directory: str
    mode: CacheMode = CacheMode.CONTENT

    def __post_init__(self) -> None:
        if not self.directory:
            raise ValueError("the cache needs a directory")
        if not isinstance(self.mode, CacheMode):
            raise ValueError(f"cache mode must be a CacheMode, got {self.mode!r}")

    # -- the scan entry point ------------------------------------------------------------------------

    def scan_path(
        self, path: str, limits: Limits = DEFAULT_LIMITS, *, explicit: bool = True, policy: Policy | None = None
    ) -> FileReport:
        """:func:`picklewarden.filescan.scan_path`, answered from the cache when the result is known."""
        from picklewarden import filescan

        if _ignored(policy, path):
            return filescan.scan_path(path, limits, explicit=explicit, policy=policy)  # skipped, costs nothing
        try:
            key, before = self.key(path, limits, explicit=explicit, policy=policy)
        except OSError:
            return filescan.scan_path(path, limits, explicit=explicit, policy=policy)  # it reports why
        cached = self.get(key)
        if cached is not None:
            return cached._replace(path=path)
        report = filescan.scan_path(path, limits, explicit=explicit, policy=policy)
        if not report.errors and _unchanged(before, path):
            # A file rewritten while it was scanned must not store a result under the old bytes' key.
            self.put(key, report)
        return report

    # -- keys ------------------------------------------------------------------------------------------

    def key(
        self, path: str, limits: Limits = DEFAULT_LIMITS, *, explicit: bool = True, policy: Policy | None = None
    ) -> tuple[str, os.stat_result]:
        """(cache key, the file's stat when it was identified). Raises OSError when the file cannot be read."""
        if self.mode is CacheMode.CONTENT:
            from picklewarden.files import open_regular

            with open_regular(path) as handle:
                stat = os.fstat(handle.fileno())
                identity = "sha256:" + content_digest(handle)
        else:
            stat = os.stat(path)
            identity = "stat:" + json.dumps(
                [os.path.abspath(path), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev]
            )
        return _key(identity, path, limits, explicit, policy), stat

    def identity_key(
        self,
        identity: str,
        name: str,
        limits: Limits = DEFAULT_LIMITS,
        *,
        explicit: bool = True,
        policy: Policy | None = None,
    ) -> str:
        """The key for bytes named by ``identity`` rather than hashed here (a remote store's content hash
        or version id, see :func:`picklewarden.remote.scan_url`); ``name`` gives the extension."""
        return _key(identity, name, limits, explicit, policy)

    # -- storage ---------------------------------------------------------------------------------------

    def get(self, key: str) -> FileReport | None:
        """The stored report for ``key``, or None (also for an entry that is damaged or from another layout)."""
        try:
            with open(self._entry(key), encoding="utf-8") as handle:
                entry = json.load(handle)
            if entry.get("key") != key or entry.get("format") != _FORMAT:
                return None
            report = decode(entry["report"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        return report

    def put(self, key: str, report: FileReport) -> None:
        """Store ``report`` under ``key`` (atomically: readers see the old entry, or the whole new one).
        Failing to write is not an error: the cache only saves time."""
        target = self._entry(key)
        try:
            # exist_ok: workers race to create the first directories (a lost race must not drop the entry).
            # mkdir gives the mode to the last component only.
            Path(self.directory).mkdir(mode=0o700, parents=True, exist_ok=True)
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            text = json.dumps({"format": _FORMAT, "key": key, "report": encode(report)}, ensure_ascii=True)
            fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".json")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    handle.write(text)
                os.replace(temporary, target)
            except BaseException:
                os.unlink(temporary)
                raise
        except OSError:
            return

    def _entry(self, key: str) -> Path:
        return Path(self.directory, f"v{_FORMAT}", key[:2], key + ".json")


def content_digest(handle: BinaryIO) -> str:
    """Hex SHA-256 of everything readable from ``handle``, in 1 MiB blocks (hashlib.file_digest is 3.11+;
    hashing large blocks releases the GIL, so worker threads or processes hash in parallel)."""
    digest = hashlib.sha256()
    block = bytearray(1 << 20)
    view = memoryview(block)
    while count := handle.readinto(view):  # type: ignore[attr-defined]
        digest.update(view[:count])
    return digest.hexdigest()


def _key(identity: str, path: str, limits: Limits, explicit: bool, policy: Policy | None) -> str:
    from picklewarden.containers.hints import extension

    material = {
        "identity": identity,
        "code": code_fingerprint(),
        "limits": limits._asdict(),
        "policy": policy_fingerprint(policy),
        # The only ways the path reaches a report: an extension that disagrees with the content is a
        # finding, and a file found in a directory that is not a model is skipped.
        "extension": extension(path),
        "explicit": explicit,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


@functools.cache
def code_fingerprint() -> str:
    """The picklewarden build: its version, the report model's shape, and the size and modification time of
    every source and data file of the package (so an edited rule or knowledge table invalidates entries
    even when the version number did not change)."""
    from picklewarden import __version__

    package = Path(__file__).resolve().parent
    files = []
    for file in sorted(package.rglob("*")):
        if file.suffix in (".py", ".json", ".toml") and "__pycache__" not in file.parts:
            stat = file.stat()
            files.append([file.relative_to(package).as_posix(), stat.st_size, stat.st_mtime_ns])
    shape = {cls.__name__: repr(typing.get_type_hints(cls)) for cls in (FileReport, Finding, Indicator)}
    material = json.dumps({"version": __version__, "shape": shape, "files": files}, sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()


def policy_fingerprint(policy: Policy | None) -> Any:
    """Everything in ``policy`` that can change a report, as JSON data (None for no policy)."""
    if policy is None:
        return None
    return {name: _plain(value) for name, value in policy._asdict().items() if name != "warnings"}


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if _is_record(type(value)):
        return {name: _plain(getattr(value, name)) for name in _names(type(value))}
    if isinstance(value, (tuple, list)):
        return [_plain(item) for item in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"cannot fingerprint a {type(value).__name__}")


def _ignored(policy: Policy | None, path: str) -> bool:
    if policy is None or not policy.ignore:
        return False
    from picklewarden.policy.apply import ignored

    return ignored(policy, path) is not None


def _unchanged(before: os.stat_result, path: str) -> bool:
    try:
        after = os.stat(path)
    except OSError:
        return False
    fields = ("st_size", "st_mtime_ns", "st_ctime_ns", "st_ino", "st_dev")
    return all(getattr(before, name) == getattr(after, name) for name in fields)


# -- FileReport <-> JSON ------------------------------------------------------------------------------
# Generic over the model's records, frozen dataclasses and NamedTuples (driven by their type hints), so a
# field added to the model is stored without touching this module; the model's shape is part of every key,
# so entries written before the field existed are never read back with the field's default.


def encode(report: FileReport) -> dict[str, Any]:
    """``report`` as JSON data, losslessly (every field, not just the public JSON report's)."""
    data = _plain(report)
    assert isinstance(data, dict)
    return data


def decode(data: Any) -> FileReport:
    """The report :func:`encode` produced. Raises ValueError/TypeError on anything else."""
    report = _decode(FileReport, data)
    assert isinstance(report, FileReport)
    return report


def _decode(hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is not type(None):
                try:
                    return _decode(option, value)
                except (TypeError, ValueError) as exc:
                    errors.append(exc)
        raise TypeError(f"{value!r} matches none of {hint}: {errors}")
    if origin is tuple:
        item, ellipsis = typing.get_args(hint)
        if ellipsis is not Ellipsis or not isinstance(value, list):
            raise TypeError(f"expected a list for {hint}")
        return tuple(_decode(item, element) for element in value)
    if isinstance(hint, type) and _is_record(hint):
        if not isinstance(value, dict):
            raise TypeError(f"expected an object for {hint.__name__}")
        hints = _hints(hint)
        unknown = value.keys() - hints.keys()
        if unknown:
            raise ValueError(f"unknown fields {sorted(unknown)} for {hint.__name__}")
        return hint(**{name: _decode(hints[name], item) for name, item in value.items()})
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint(value)
    if hint in (str, int, bool, float) and type(value) is hint:
        return value
    raise TypeError(f"expected {hint}, got {type(value).__name__}")


def _is_record(cls: type) -> bool:
    """The model's records: frozen dataclasses and NamedTuples (see picklewarden.model)."""
    return dataclasses.is_dataclass(cls) or (issubclass(cls, tuple) and hasattr(cls, "_fields"))


def _names(cls: type) -> tuple[str, ...]:
    """The fields a record's constructor takes, in order."""
    if dataclasses.is_dataclass(cls):
        return tuple(f.name for f in dataclasses.fields(cls) if f.init)
    return tuple(cls._fields)  # type: ignore[attr-defined]


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {name: hints[name] for name in _names(cls)}
