"""Dispatch on content to the readers that see a file the way each loader does, and judge every view.

One file can be several formats at once, and each loader picks its own. Every view a loader in scope could
take is scanned, so a payload is found whichever loader the victim uses.

Loaders and the decisions modelled here (the readers model the rest; see their modules):

* ``torch.load`` (torch 2.13, ``weights_only=False``): a file starting with ``PK\\x03\\x04`` is a ZIP
  (:mod:`~picklewarden.containers.torchzip`); otherwise a real file at offset 0 is tried as a tar
  (``tarfile.open(mode="r:")``: :func:`~picklewarden.containers.sniff.looks_like_tar` is tarfile's own first
  header parse), and on ``TarError`` is unpickled from byte 0 (legacy stacked pickles). Not modelled: a
  file-like object without ``fileno()`` skips the tar attempt (the tar view is scanned all the same, which
  only adds a view); ``mmap=True`` and ``weights_only=True`` (the restricted unpickler refuses what is
  flagged here anyway).
* ``torch.jit.load``: the ZIP wherever its end record is (``legacy-fallback`` files included).
* ``pickle.load`` / ``pandas.read_pickle`` after decompression: executes from byte 0, no sniffing. A view
  of the file as a pickle is added beside any container view whenever its first byte is an opcode; it
  is dropped (with a note) only when the unpickler imported and called nothing before stopping.
* ``numpy.load(allow_pickle=True)``: ``PK\\x03\\x04``/``PK\\x05\\x06`` means npz (members starting with the
  NumPy magic are arrays, whatever their names: :mod:`~picklewarden.containers.npz`), ``\\x93NUMPY`` means
  npy (:mod:`~picklewarden.containers.numpy_files`), anything else is ``pickle.load``. A tar header that
  is also an npy header gets both views.
* ``joblib.load``: compression magic first (:func:`~picklewarden.containers.sniff.compression_kind`), then
  its unpickler (:mod:`~picklewarden.containers.joblib_files`); a tar header that also starts a
  compressed stream gets both views.
* ``tarfile``/``zipfile``/``py7zr`` users extracting bundles (:mod:`~picklewarden.containers.archives`):
  members become children; a ZIP that is also a tar gets both views; members ``zipfile`` refuses are
  read as lenient readers take them.

Not modelled: formats sniffed by file name alone (no loader in scope does), and loaders outside the list.
"""

from __future__ import annotations

import mmap
import zlib
from itertools import compress

from picklewarden._typing import TYPE_CHECKING
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

if TYPE_CHECKING:
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
        opened = _open_zip(data, ctx)
        if looks_like_tar(head):  # a ZIP/tar polyglot: torch and numpy read the ZIP, tar tools the tar
            tar = _open_tar(data, head, ctx)
            if tar is not None:
                _merge(opened, tar[0], "the file is also a tar archive, which tarfile-based tools read")
        return opened
    if looks_like_tar(head):
        tar_view = _open_tar(data, head, ctx)
        if tar_view is not None:
            return _with_magic_views(*tar_view, data, head, ctx)
    kind = compression_kind(head)
    if kind is not None:
        decoded = _open_compressed(kind, data, ctx)
        if decoded is not None:
            return decoded
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
        opened = _open_zip(data, ctx)
        if starts_like_pickle(head):
            # torch.load and pickle.load run the file from byte 0 whatever follows: judged when it does anything.
            opened.sources.append(
                PickleSource("", _whole(data), Stacking.ALL, True, optional=True, label="pickle view")
            )
        return opened
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


def _merge(opened: Opened, other: Opened, note: str) -> None:
    """Add another loader's view of the same bytes to ``opened``."""
    opened.sources.extend(other.sources)
    opened.anomalies.extend(other.anomalies)
    opened.children.extend(other.children)
    opened.checks.extend(other.checks)
    opened.errors.extend(other.errors)
    opened.notes.extend(other.notes)
    opened.notes.append(note)


def _with_magic_views(opened: Opened, tar_end: int, data: bytes, head: bytes, ctx: Context) -> Opened:
    """A tar header is 512 bytes of mostly free text, so it can also start with another format's magic:
    numpy.load reads an ``.npy`` there, joblib a compressed stream. Those loaders' views are judged too, and
    a ZIP appended after the tar's last member (``tar_end``)."""
    if head[:6] == NPY_MAGIC:
        from picklewarden.containers.numpy_files import open_npy

        _merge(opened, open_npy(data, ctx), "the tar header is also a NumPy header, which numpy.load reads")
    kind = compression_kind(head)
    if kind is not None and _plausible(kind, head):
        other = _open_compressed(kind, data, ctx)
        if other is not None and other.children:
            _merge(opened, other, f"the tar archive is also a {kind} stream, which joblib.load decompresses")
    # A ZIP appended to a tar: torch.load reads the tar, torch.jit.load and zip tools the ZIP.
    return _with_zip_view(opened, data, ctx, after=tar_end)


def _with_zip_view(opened: Opened, data: bytes, ctx: Context, after: int = 0) -> Opened:
    """A pickle (or tar) followed by a ZIP: torch.load reads the front, torch.jit.load and zip tools the ZIP.

    A ZIP that only ``zipfile`` finds (it corrects for prepended bytes) counts when it starts at or after
    ``after``: a ZIP stored as a tar member is that member's business, not an appended archive."""
    if not looks_like_zip(data):
        return opened
    from picklewarden.containers import torchzip

    try:
        torchzip.open_torch_zip(data, ctx.limits)
    except ScanError:
        # torch's reader cannot: zipfile corrects offsets for prepended bytes, and zip tools read what it reads.
        from picklewarden.containers import archives

        if _zipfile_start(data) < after:
            return opened
        bundle = archives.open_zip_bundle(data, ctx)
        if bundle.children and not bundle.errors:
            _merge(opened, bundle, f"a ZIP archive follows the {opened.format}; zipfile-based tools read it")
        return opened  # else raw tensor bytes that merely contain an end-of-directory signature
    behind = _open_zip(data, ctx)
    _merge(opened, behind, f"a {behind.format} archive follows the {opened.format}")
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


def _zipfile_start(data: bytes) -> int:
    """Where ``zipfile`` places the first member of the ZIP it finds at the end of ``data`` (-1: none)."""
    import zipfile

    from picklewarden.containers.archives import ZIP_ERRORS
    from picklewarden.containers.base import BufferReader

    try:
        with zipfile.ZipFile(BufferReader(data)) as archive:
            return min((info.header_offset for info in archive.infolist()), default=-1)
    except ZIP_ERRORS:
        return -1


def _open_tar(data: bytes, head: bytes, ctx: Context) -> tuple[Opened, int] | None:
    """The tar view, and the offset just past its last member's data."""
    import tarfile

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
    return opened, max((m.offset_data + m.size for m in members), default=0)


def _is_pickle_record(name: str) -> bool:
    # miniz finds records ignoring ASCII case: torch reads DATA.PKL for data.pkl.
    folded = name.lower()
    return folded.endswith(".pkl") or folded.endswith("_pkl")


def _open_zip(data: bytes, ctx: Context) -> Opened:
    from picklewarden.containers import archives, consistency, npz, torchzip
    from picklewarden.containers.zipcolumns import FLAG_ENDS_IN_L, mask
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
    if scripted:  # imported here: the TorchScript reader pulls in the code reviewer, which torch.save never needs
        from picklewarden.containers import torchscript

        vouched = torchscript.VOUCHED
    else:
        vouched = frozenset()
    read: dict[str, bytes] = {}
    reported = {a.member or consistency.ARCHIVE_WIDE for a in archive.anomalies}
    # torch reads <prefix>/data.pkl; TorchScript archives add constants.pkl and the code's debug pickles.
    # Every name _is_pickle_record accepts ends in "l" or "L" (no other character lowercases to "l"): a
    # flag of the archive's, found without a Python call per tensor name.
    maybe_pickles = mask(archive.data_flags(), FLAG_ENDS_IN_L)
    for name in dict.fromkeys(compress(archive.order, maybe_pickles)):
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
    for entry in compress(archive.all_entries, maybe_pickles):
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
        opened.notes.append(
            f"{unpeeked} storages were not checked for hidden pickles or NumPy headers (peek budget spent)"
        )
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
