"""Dispatch on content to the reader that sees a file the way its loader does.

The order is the loaders' own: ``torch.load`` takes a file for a ZIP only when it starts with a local
header, otherwise tries ``tarfile`` (its legacy tar format), otherwise unpickles from byte 0; joblib looks
for compression magic first; ``numpy.load`` checks for ZIP and ``.npy`` magic before falling back to
``pickle.load``. Where one file is two formats at once (a pickle glued before a ZIP, a tar header that is
also a pickle), every view a loader could take is scanned.
"""

from __future__ import annotations

import mmap
import tarfile
import zlib

from picklewarden.containers.base import Anomaly, Child, Context, Opened, PickleSource, Stacking, digest
from picklewarden.containers.sniff import (
    NPY_MAGIC,
    SEVEN_ZIP_MAGIC,
    ZIP_LOCAL,
    compression_kind,
    looks_like_pickle,
    looks_like_tar,
    looks_like_zip,
    starts_like_pickle,
)
from picklewarden.errors import LimitExceeded, ScanError
from picklewarden.limits import Limits

_HEAD = 64 * 1024
UNSUPPORTED = "unsupported format: not a pickle, PyTorch, NumPy, joblib, archive or compressed file"


def sniff_format(head: bytes, limits: Limits) -> str | None:
    """The container format of a file from its first bytes, or None when it is not one we read.

    Used to pick model files out of a directory walk, so weak magic numbers are confirmed by decoding
    the first bytes.
    """

    if head[:4] == ZIP_LOCAL:
        return "zip"
    if looks_like_tar(head):
        return "tar"
    kind = compression_kind(head)
    if kind is not None and _plausible(kind, head):
        return kind
    if head[:6] == SEVEN_ZIP_MAGIC:
        return "7z"
    if head[:6] == NPY_MAGIC:
        return "npy"
    if looks_like_pickle(head, limits):
        return "pickle"
    if looks_like_zip(head):
        return "zip"
    from picklewarden.formats import sniff

    return sniff(head)


def _plausible(kind: str, head: bytes) -> bool:
    """Weak magic numbers (zlib's two bytes, lzma's header) must also start a valid stream."""
    if kind == "zlib":
        try:
            zlib.decompressobj().decompress(head[:4096], 64)
        except zlib.error:
            return False
    elif kind == "lzma":
        import lzma

        try:
            lzma.LZMADecompressor(lzma.FORMAT_ALONE, memlimit=1 << 28).decompress(head[:4096], 64)
        except lzma.LZMAError:
            return False
    return True


def open_bytes(data: bytes, limits: Limits, context: Context | None = None) -> Opened:
    """Find the pickle streams in a whole file's bytes (or an mmap of them), and the files inside it.

    ``context`` places the data inside other containers (depth, byte budget, ancestry); None for a file.
    """
    ctx = context if context is not None else Context.root(limits)
    if ctx.depth > limits.max_nesting_depth:
        return _refused(
            "nesting",
            f"containers nested deeper than {limits.max_nesting_depth} levels (max_nesting_depth): not opened",
        )
    if ctx.ancestry and digest(data) in ctx.ancestry:
        return _refused("cycle", "the container holds a copy of one that encloses it (a cycle): not opened again")
    head = bytes(data[:_HEAD])
    if head[:4] == ZIP_LOCAL:
        return _open_zip(data, ctx)
    if looks_like_tar(head):
        opened = _open_tar(data, head, ctx)
        if opened is not None:
            return opened
    kind = compression_kind(head)
    if kind is not None:
        opened = _open_compressed(kind, data, ctx)
        if opened is not None:
            return opened
    if head[:6] == SEVEN_ZIP_MAGIC:
        from picklewarden.containers import archives

        return archives.open_7z(data, ctx)
    if head[:6] == NPY_MAGIC:
        from picklewarden.containers.numpy_files import open_npy

        return open_npy(data, ctx)
    from picklewarden.formats import open_format

    other = open_format(data, head, ctx)
    if other is not None:
        return other
    if looks_like_pickle(head, limits):
        return _with_zip_view(
            Opened("pickle", [PickleSource("", _whole(data), Stacking.ALL, file_like=True)]), data, ctx
        )

    if looks_like_zip(data):
        return _open_zip(data, ctx)
    if starts_like_pickle(head):
        # pickle.load does not sniff: it executes from the first byte. Read it the same way; the scanner
        # turns a stream that yields nothing into an error rather than a verdict.
        return Opened("pickle?", [PickleSource("", _whole(data), Stacking.ALL, file_like=True)])
    opened = Opened("unknown")
    if ctx.depth == 0:
        opened.errors.append(UNSUPPORTED)
    return opened


def _whole(data: bytes) -> bytes:
    """The whole stream for the machine: bytes and mmaps as they are (no copy: a mapped 4 GB legacy
    checkpoint costs the pages its pickles touch), anything else (a remote file's ranged view) read once."""
    if isinstance(data, (bytes, bytearray, mmap.mmap)):
        return data
    return bytes(data)


def _refused(what: str, message: str) -> Opened:
    opened = Opened(what)
    opened.anomalies.append(Anomaly("PW301", None, None, message))
    opened.errors.append(message)
    return opened


def _with_zip_view(opened: Opened, data: bytes, ctx: Context) -> Opened:
    """A pickle followed by a ZIP: torch.load runs the pickle, torch.jit.load and zip tools read the ZIP."""
    if not looks_like_zip(data):
        return opened
    from picklewarden.containers import torchzip

    try:
        torchzip.open_torch_zip(data, ctx.limits)
    except ScanError:
        return opened  # raw tensor bytes that merely contain an end-of-directory signature
    behind = _open_zip(data, ctx)
    opened.sources.extend(behind.sources)
    opened.anomalies.extend(behind.anomalies)
    opened.children.extend(behind.children)
    opened.checks.extend(behind.checks)
    opened.notes.append(f"a {behind.format} archive follows the pickle")
    return opened


def _open_compressed(kind: str, data: bytes, ctx: Context) -> Opened | None:
    """A compressed stream (the decoded content becomes a child), or None when it does not decode at all."""
    from picklewarden.containers import compression

    decoded = compression.decompress(kind, data, ctx)
    if decoded.error is not None and not decoded.data and not decoded.anomalies:
        if decoded.error.startswith("not a valid"):
            return None  # a magic number by coincidence: let the other readers look
    opened = Opened(kind, wrapper=True)
    opened.anomalies.extend(decoded.anomalies)
    if decoded.error is not None:
        opened.errors.append(decoded.error)
    if decoded.data:
        opened.children.append(Child("", decoded.data))
    return opened


def _open_tar(data: bytes, head: bytes, ctx: Context) -> Opened | None:
    from picklewarden.containers import archives
    from picklewarden.containers.legacy_tar import TORCH_MEMBERS, open_legacy_tar

    try:
        tar = archives.open_tar(data)
    except (tarfile.TarError, EOFError, OSError, ValueError):
        return None
    opened = Opened("tar")
    members = list(archives.iter_tar(tar, ctx, opened))
    if any(member.name in TORCH_MEMBERS for member in members):
        opened = open_legacy_tar(ctx, tar, members, opened)
    else:
        archives.open_tar_bundle(ctx, tar, members, opened)
    if looks_like_pickle(head, ctx.limits):
        # A tar header can also be a pickle: torch.load sees the tar, pickle.load runs the header.
        opened.sources.append(PickleSource("", _whole(data), Stacking.ALL, True, optional=True, label="pickle view"))
    return opened


def _is_pickle_record(name: str) -> bool:
    # miniz finds records ignoring ASCII case: torch reads DATA.PKL for data.pkl.
    folded = name.lower()
    return folded.endswith(".pkl") or folded.endswith("_pkl")


def _open_zip(data: bytes, ctx: Context) -> Opened:
    from picklewarden.containers import archives, consistency, npz, torchscript, torchzip
    from picklewarden.containers.zipentry import to_anomaly

    limits = ctx.limits
    try:
        archive = torchzip.open_torch_zip(data, limits)
    except LimitExceeded as exc:
        opened = Opened("zip")
        opened.anomalies.append(Anomaly("PW301", None, None, str(exc)))
        opened.errors.append(f"ZIP archive not read: {exc}")
        return opened
    except ScanError:
        # torch cannot open it, so torch never loads it; zip tools (and numpy) may.
        return archives.open_zip_bundle(data, ctx)
    if archive.record("data.pkl") is None and archive.record("constants.pkl") is None:
        return archives.open_zip_bundle(data, ctx)
    scripted = archive.record("constants.pkl") is not None
    opened = Opened("torchscript" if scripted else "torch-zip")
    opened.anomalies.extend(to_anomaly(a) for a in archive.anomalies)
    vouched = torchscript.VOUCHED if scripted else frozenset()
    read: dict[str, bytes] = {}
    reported = {a.member or consistency.ARCHIVE_WIDE for a in archive.anomalies}
    # torch reads <prefix>/data.pkl; TorchScript archives add constants.pkl and the code's debug pickles.
    for name in dict.fromkeys(archive.order):
        entry = archive.entries.get(name)
        if entry is None or not _is_pickle_record(name):
            continue
        try:
            payload, problems = torchzip.read_plain(data, entry, limits)
        except ScanError as exc:
            opened.errors.append(f"{name}: {exc}")
            continue
        opened.anomalies.extend(to_anomaly(a) for a in problems)
        reported.update(a.member or consistency.ARCHIVE_WIDE for a in problems)
        opened.sources.append(PickleSource(name, payload, Stacking.ONE, file_like=False, vouched=vouched))
        read[name] = payload
    for entry in archive.all_entries:
        # Duplicates torch does not pick are what Python's zipfile (and zip-based tools) pick: scan them too.
        chosen = archive.entries.get(entry.name)
        if chosen is None or chosen is entry or not _is_pickle_record(entry.name):
            continue
        try:
            payload, _ = torchzip.read_plain(data, entry, limits)
        except ScanError:
            continue
        label = f"{entry.name} (duplicate entry #{entry.index})"
        opened.sources.append(PickleSource(label, payload, Stacking.ONE, file_like=False, vouched=vouched))
    if not opened.sources and not opened.errors:
        opened.errors.append("ZIP archive holds no pickle members")
    if scripted:
        found, errors = torchscript.review_archive(data, archive, limits)
        opened.anomalies.extend(found)
        opened.errors.extend(errors)
    opened.checks.append(consistency.storage_check(archive))
    heads = {entry.header_offset: read[name] for name in read if (entry := archive.entries.get(name)) is not None}
    found, payloads, unpeeked = consistency.storage_payloads(data, archive, ctx, heads)
    if unpeeked:
        opened.notes.append(f"{unpeeked} storages were not checked for hidden pickles (peek budget spent)")
    opened.anomalies.extend(found)
    opened.children.extend(payloads)
    # numpy.load reads any ZIP as an npz: members starting with a NumPy header are arrays it may unpickle.
    numpy_view = npz.numpy_view(data, archive, ctx, heads)
    opened.sources.extend(numpy_view.sources)
    opened.anomalies.extend(numpy_view.anomalies)
    opened.errors.extend(numpy_view.errors)
    opened.notes.extend(numpy_view.notes)
    opened.anomalies.extend(consistency.zipfile_differential(data, archive, read, reported))
    return opened
