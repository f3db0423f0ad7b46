"""Readers of last resort for ZIP archives that Python's ``zipfile`` (or torch) refuses in part.

``zipfile`` refuses members that other readers take (a CRC mismatch, a local name differing from the
directory's, encryption or patch flags in the directory over plain stored data) and whole archives whose
directory it cannot find where it looks. There the bytes the most lenient plausible reader takes are
scanned: the entries as torch's miniz reader lists them (:func:`open_any_zip`, any folder layout), the
member read with its refusal flags ignored (:func:`~picklewarden.containers.zipentry.read_plain`). The
refusal is reported as a finding; only bytes no reader can obtain leave an error (fail closed).
"""

from __future__ import annotations

import types
import zipfile

from picklewarden.containers.base import Anomaly, Child, Context, Data, Opened
from picklewarden.containers.torchzip import TorchZip, _Reader
from picklewarden.containers.zipdir import Walk
from picklewarden.containers.zipentry import Buffer, ZipEntry, read_plain, to_anomaly
from picklewarden.errors import ScanError
from picklewarden.limits import Limits


def open_any_zip(data: Buffer, limits: Limits) -> TorchZip:
    """Every entry of a ZIP as torch's miniz reader finds it, whatever its folder layout (npz files, bundles).

    For readers of last resort: when Python's ``zipfile`` refuses an archive or a member that miniz
    reads, the bytes miniz would take are what a lenient reader gets. ``entries`` keeps the *last* entry
    of each exact name, as ``zipfile`` does; ``prefix`` is empty. Raises like :func:`open_torch_zip`.
    """
    return _AnyReader(data, limits).run()


class _AnyReader(_Reader):
    """The directory without torch's own expectations (a prefix folder, a version record)."""

    read_every_local_header = True

    def finish(self, walk: Walk) -> TorchZip:
        entries = [self.make_entry(raw) for raw in walk.raws]  # no entry is built in C: local headers are read
        self.check_overlaps(entries)
        return TorchZip(
            entries=types.MappingProxyType({entry.name: entry for entry in entries}),
            order=tuple(entry.name for entry in entries),
            prefix="",
            anomalies=self.summarise(),
            all_entries=tuple(entries),
        )


class Refused(Exception):
    """Python's zipfile refuses a member (flags, CRC, local header): other readers may not."""


class Lenient:
    """Members as the most lenient plausible reader takes them, where ``zipfile`` refuses: the entry
    as torch's miniz reader finds it, its stored bytes whatever the encryption or patch flags say
    (:func:`~picklewarden.containers.zipentry.read_plain`). What was refused and why is reported, and the
    bytes are scanned; only bytes no reader can obtain leave an error (fail closed)."""

    def __init__(self, data: Data, ctx: Context, opened: Opened) -> None:
        self.data = data
        self.ctx = ctx
        self.opened = opened
        self._directory: TorchZip | str | None = None

    def directory(self) -> TorchZip | str:
        if self._directory is None:
            try:
                self._directory = open_any_zip(self.data, self.ctx.limits)
            except ScanError as exc:
                self._directory = f"no reader finds its entries either: {exc}"
        return self._directory

    def read(self, info: zipfile.ZipInfo, index: int, count: int, why: str) -> bytes | None:
        """Member ``index`` of the ``count`` entries zipfile listed."""
        directory = self.directory()
        if isinstance(directory, str):
            self.opened.errors.append(f"{info.filename}: {why}; {directory}")
            return None
        entries = directory.all_entries
        # The same central directory lists the same entries in the same order (names may decode differently:
        # zipfile uses cp437 without the UTF-8 flag); otherwise look the name up.
        entry: ZipEntry | None = entries[index] if len(entries) == count else None
        if entry is None:
            entry = next((e for e in reversed(entries) if e.name == info.orig_filename), None)
        if entry is None:
            self.opened.errors.append(f"{info.filename}: {why}; no other reader finds it")
            return None
        return self._take(entry, why)

    def read_all(self, why: str) -> bool:
        directory = self.directory()
        if isinstance(directory, str):
            return False
        self.opened.anomalies.extend(to_anomaly(a) for a in directory.anomalies)
        for entry in directory.all_entries[: self.ctx.limits.max_archive_members]:
            if entry.directory or not entry.name:
                continue
            content = self._take(entry, why)
            if content is not None:
                self.opened.children.append(Child(entry.name, content))
        return True

    def _take(self, entry: ZipEntry, why: str) -> bytes | None:
        try:
            content, problems = read_plain(self.data, entry, self.ctx.limits)
        except ScanError as exc:
            self.opened.errors.append(f"{entry.name}: {why}, and no reader can obtain its bytes: {exc}")
            return None
        if not self.ctx.budget.take(len(content)):
            self.opened.errors.append(f"{entry.name}: not extracted (max_extracted_bytes)")
            return None
        self.opened.anomalies.append(
            Anomaly(
                "PW310",
                entry.name,
                entry.header_offset,
                f"{why}; torch's ZIP reader and other lenient readers take its bytes, which were scanned",
            )
        )
        self.opened.anomalies.extend(to_anomaly(a) for a in problems)
        return content
