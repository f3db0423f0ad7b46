"""Archive bundles (tar, zip, 7z) holding model files: their members become children, scanned in turn.

Each format is read by the library its users extract it with (``tarfile`` - also what torch's legacy
loader uses -, ``zipfile`` - also what ``numpy.load`` uses for ``.npz`` -, ``py7zr`` when installed), over
a zero-copy view of the file. Member count, total extracted bytes and compression ratio are bounded
before anything is decompressed, and member names or links that would escape an extraction directory are
findings.

``zipfile`` refuses members that other readers take: a CRC mismatch (checked only once the member has
been read to its end, after a streaming unpickler has already run its first opcodes), a local-header name
that differs from the directory's, and encryption, strong-encryption or patch flags in the directory
(where stored data is plain all the same). Such members, and archives ``zipfile`` cannot open at all,
are read as the most lenient plausible reader takes them (torch's miniz reader, flags ignored for stored
data); the refusal is reported (PW310) and the bytes are scanned. Only bytes no reader can obtain
(deflated data that really is encrypted, an archive no reader finds entries in) leave an error.
Not modelled: bzip2 and LZMA members (zipfile reads them, torch does not; they are extracted with
zipfile when it can, else reported unreadable), and password-protected members read with a password.
"""

from __future__ import annotations

# zipfile decodes legacy member names with cp437 and imports that codec on first use. Import it with the
# package: an import in the middle of a scan looks, to an audit hook, like something the file made happen.
import encodings.cp437  # noqa: F401
import io
import lzma
import posixpath
import re
import struct
import zipfile
import zlib

from picklewarden._typing import TYPE_CHECKING
from picklewarden.containers.base import Anomaly, BufferReader, Child, Context, Data, Opened
from picklewarden.model import Severity

if TYPE_CHECKING:
    import tarfile  # imported where a file sniffed as tar is opened: a torch ZIP scan needs only ZIP_ERRORS
    from collections.abc import Iterator

_TAR_BLOCK = 512
_ZIP_EOCD = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP_EOCD_WINDOW = (1 << 16) + 22
_READ_CHUNK = 1 << 20
_DRIVE = re.compile(r"^[A-Za-z]:")
ZIP_ERRORS: tuple[type[BaseException], ...] = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    OSError,
    ValueError,
    EOFError,
    NotImplementedError,
    RuntimeError,
    struct.error,
    zlib.error,
    lzma.LZMAError,
)
"""What zipfile raises on hostile archives (it lets decompressor errors through unwrapped)."""


def escapes(name: str) -> str | None:
    """Why an archive member name would be written outside the extraction directory, or None."""
    normal = name.replace("\\", "/")
    if normal.startswith("/") or _DRIVE.match(normal):
        return "is an absolute path"
    if ".." in normal.split("/"):
        return "climbs out of the extraction directory with '..'"
    return None


# -- tar -----------------------------------------------------------------------------------------------


def open_tar(data: Data) -> tarfile.TarFile:
    """``tarfile`` over the data, as torch opens it (``mode='r:'``). Raises tarfile.TarError."""
    import tarfile

    return tarfile.open(fileobj=BufferReader(data), mode="r:")


def iter_tar(tar: tarfile.TarFile, ctx: Context, opened: Opened) -> Iterator[tarfile.TarInfo]:
    """Members in order, stopping (with a finding) at the member-count limit or a broken header."""
    import tarfile

    limit = ctx.limits.max_archive_members
    count = 0
    while True:
        try:
            member = tar.next()
        except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
            opened.errors.append(f"tar archive is broken after {count} members: {exc}")
            return
        if member is None:
            return
        count += 1
        if count > limit:
            opened.anomalies.append(
                Anomaly("PW301", None, None, f"the tar archive has more than {limit} members (max_archive_members)")
            )
            opened.errors.append(f"only the first {limit} tar members were read")
            return
        yield member


def tar_member_anomalies(member: tarfile.TarInfo) -> list[Anomaly]:
    """Findings about one tar member's name, link target and type."""
    found: list[Anomaly] = []
    why = escapes(member.name)
    if why is not None:
        found.append(Anomaly("PW304", member.name, member.offset, f"tar member name {why}"))
    if member.issym() or member.islnk():
        kind = "symbolic link" if member.issym() else "hard link"
        target = member.linkname
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(member.name), target))
        outside = target.startswith("/") or resolved == ".." or resolved.startswith("../")
        if outside:
            found.append(
                Anomaly(
                    "PW304",
                    member.name,
                    member.offset,
                    f"tar member is a {kind} to {target!r}, outside the archive: extracting it exposes or "
                    "overwrites that file",
                )
            )
    elif member.ischr() or member.isblk() or member.isfifo():
        found.append(
            Anomaly(
                "PW304",
                member.name,
                member.offset,
                "tar member is a device or FIFO node; extraction as root creates it",
                Severity.MEDIUM,
            )
        )
    return found


def _archive_size(tar: tarfile.TarFile) -> int:
    """Size of the archive behind ``tar`` (always opened over a :class:`BufferReader` here)."""
    fileobj = tar.fileobj
    return fileobj.size if isinstance(fileobj, BufferReader) else 1 << 62


def last_member(members: list[tarfile.TarInfo], name: str) -> tarfile.TarInfo | None:
    """``TarFile.getmember(name)`` over the members read so far: the last one with exactly that name.

    (``getmember`` itself would first load every member of the archive, past the member-count limit.)
    """
    name = name.rstrip("/")
    for member in reversed(members):
        if member.name == name:
            return member
    return None


def link_target(members: list[tarfile.TarInfo], link: tarfile.TarInfo) -> tarfile.TarInfo | None:
    """The member ``extractfile`` reads for a link (``TarFile._find_link_target``): for a symbolic link the
    last member anywhere with the resolved name, for a hard link the last such member before the link."""
    if link.issym():
        wanted = "/".join(part for part in (posixpath.dirname(link.name), link.linkname) if part)
        pool = members
    else:
        wanted = link.linkname
        pool = members[: members.index(link)] if link in members else members
    wanted = posixpath.normpath(wanted)
    for member in reversed(pool):
        if posixpath.normpath(member.name) == wanted:
            return member
    return None


def read_tar_member(tar: tarfile.TarFile, member: tarfile.TarInfo, ctx: Context) -> bytes | str:
    """The member's bytes as ``extractfile`` returns them, or why they cannot be read."""
    import tarfile

    if member.offset_data + member.size > _archive_size(tar):
        return f"tar member {member.name!r} ({member.size} bytes) runs past the end of the archive"
    if not ctx.budget.take(member.size):
        return (
            f"extracting {member.name!r} ({member.size} bytes) exceeds the remaining budget for this file "
            "(max_extracted_bytes)"
        )
    try:
        handle = tar.extractfile(member)
        if handle is None:
            return f"{member.name!r} has no content"
        return handle.read()
    except (tarfile.TarError, KeyError, EOFError, OSError, ValueError) as exc:
        return f"cannot read tar member {member.name!r}: {exc}"


def open_tar_bundle(ctx: Context, tar: tarfile.TarFile, members: list[tarfile.TarInfo], opened: Opened) -> None:
    """A tar archive of files (members already listed): every regular member becomes a child."""
    for member in members:
        opened.anomalies.extend(tar_member_anomalies(member))
        if not member.isreg():
            continue
        content = read_tar_member(tar, member, ctx)
        if isinstance(content, str):
            opened.errors.append(content)
            if "budget" in content:
                opened.anomalies.append(Anomaly("PW301", member.name, member.offset, content))
                break
            continue
        opened.children.append(Child(member.name, content))


# -- zip -----------------------------------------------------------------------------------------------


def zip_entry_count(data: Data) -> int | None:
    """Entries the end-of-central-directory record declares (ZIP64 aware), read before any parsing."""
    size = len(data)
    start = max(0, size - _ZIP_EOCD_WINDOW)
    tail = bytes(data[start:size])
    at = tail.rfind(_ZIP_EOCD)
    if at < 0 or at + 22 > len(tail):
        return None
    (total,) = struct.unpack_from("<H", tail, at + 10)
    locator = at - 20
    if total == 0xFFFF and locator >= 0 and tail[locator : locator + 4] == _ZIP64_LOCATOR:
        (record,) = struct.unpack_from("<Q", tail, locator + 8)
        body = bytes(data[record : record + 56])
        if len(body) == 56 and body[:4] == b"PK\x06\x06":
            (wide,) = struct.unpack_from("<Q", body, 32)
            return int(wide)
    return int(total)


def open_zip_bundle(data: Data, ctx: Context) -> Opened:
    """A ZIP of files read with Python's ``zipfile`` (as numpy, unzip-like tools and pandas read it).

    Labelled ``npz`` when every member is an ``.npy`` file, as ``numpy.savez`` writes.
    """
    opened = Opened("zip")
    limits = ctx.limits
    declared = zip_entry_count(data)
    if declared is not None and declared > limits.max_archive_members:
        opened.anomalies.append(
            Anomaly(
                "PW301",
                None,
                None,
                f"the ZIP archive declares {declared} entries, more than {limits.max_archive_members} "
                "(max_archive_members); it was not opened",
            )
        )
        opened.errors.append(f"ZIP archive with {declared} entries not read")
        return opened
    # here, not with the module: a torch checkpoint's scan imports this module but opens no ZIP bundle
    from picklewarden.containers.zip_lenient import Lenient, Refused

    try:
        archive = zipfile.ZipFile(BufferReader(data))
    except ZIP_ERRORS as exc:
        lenient = Lenient(data, ctx, opened)
        if not lenient.read_all(f"Python's zipfile cannot open the archive ({exc})"):
            opened.errors.append(f"unreadable ZIP archive: {exc}")
        return opened
    lenient = Lenient(data, ctx, opened)
    with archive:
        infos = archive.infolist()
        if infos and all(info.filename.endswith(".npy") for info in infos):
            opened.format = "npz"
        if len(infos) > limits.max_archive_members:
            opened.anomalies.append(
                Anomaly("PW301", None, None, f"the ZIP archive has {len(infos)} entries (max_archive_members)")
            )
            opened.errors.append(f"only the first {limits.max_archive_members} ZIP entries were read")
            infos = infos[: limits.max_archive_members]
        for index, info in enumerate(infos):
            why = escapes(info.filename)
            if why is not None:
                severity = Severity.MEDIUM if why.startswith("is an absolute") else None
                opened.anomalies.append(
                    Anomaly("PW304", info.filename, info.header_offset, f"ZIP member name {why}", severity)
                )
            if not info.filename or info.filename.endswith("/"):
                continue  # directories (and a nameless entry, which zipfile's is_dir() cannot even test)
            try:
                content = _read_zip_member(archive, info, ctx, opened)
            except Refused as refusal:
                content = lenient.read(info, index, len(archive.filelist), str(refusal))
            if content is not None:
                opened.children.append(Child(info.filename, content))
    return opened


def _read_zip_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, ctx: Context, opened: Opened) -> bytes | None:
    from picklewarden.containers.zip_lenient import Refused

    limits = ctx.limits
    name = info.filename
    if info.flag_bits & 0x1:
        raise Refused("zipfile wants a password: the member is flagged encrypted")
    ratio_cap = max(info.compress_size, 1) * limits.max_compression_ratio
    if info.file_size > limits.ratio_floor_bytes and info.file_size > ratio_cap:
        opened.anomalies.append(
            Anomaly(
                "PW305",
                name,
                info.header_offset,
                f"ZIP member declares {info.file_size} bytes from {info.compress_size} compressed bytes "
                f"(more than {limits.max_compression_ratio}:1): a decompression bomb; not extracted",
            )
        )
        opened.errors.append(f"{name}: not extracted (compression ratio)")
        return None
    cap = ctx.budget.left
    out = bytearray()
    try:
        with archive.open(info) as handle:
            while True:
                chunk = handle.read(min(_READ_CHUNK, cap - len(out) + 1))
                if not chunk:
                    break
                out += chunk
                if len(out) > cap:
                    opened.anomalies.append(
                        Anomaly(
                            "PW301",
                            name,
                            info.header_offset,
                            "extracting this member exceeds the remaining budget for this file (max_extracted_bytes)",
                        )
                    )
                    opened.errors.append(f"{name}: extraction stopped at the byte budget")
                    ctx.budget.take(cap)
                    return None
                if len(out) > limits.ratio_floor_bytes and len(out) > ratio_cap:
                    opened.anomalies.append(
                        Anomaly(
                            "PW305",
                            name,
                            info.header_offset,
                            f"ZIP member expands beyond {limits.max_compression_ratio}:1: a decompression bomb",
                        )
                    )
                    opened.errors.append(f"{name}: extraction stopped (compression ratio)")
                    ctx.budget.take(len(out))
                    return None
    except ZIP_ERRORS as exc:
        raise Refused(f"zipfile cannot extract it: {exc}") from None
    ctx.budget.take(len(out))
    return bytes(out)


# -- 7z ------------------------------------------------------------------------------------------------


def open_7z(data: Data, ctx: Context) -> Opened:
    """A 7z archive, through the optional ``py7zr`` package."""
    opened = Opened("7z")
    try:
        import py7zr  # type: ignore[import-not-found,import-untyped,unused-ignore]
        from py7zr.io import Py7zIO, WriterFactory  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        opened.errors.append(
            "7z archive cannot be read: the optional 'py7zr' package is not installed (pip install 'picklewarden[7z]')"
        )
        return opened
    limits = ctx.limits

    class _Sink(Py7zIO):  # type: ignore[misc,unused-ignore]  # Any when py7zr is absent
        """Collects one member in memory; py7zr's own max_extract_size stops bombs across members."""

        def __init__(self) -> None:
            self.buffer = io.BytesIO()

        def write(self, s: bytes | bytearray) -> int:
            return self.buffer.write(s)

        def read(self, size: int | None = None) -> bytes:
            return self.buffer.read(size)

        def seek(self, offset: int, whence: int = 0) -> int:
            return self.buffer.seek(offset, whence)

        def flush(self) -> None:
            return None

        def size(self) -> int:
            return self.buffer.getbuffer().nbytes

    class _Factory(WriterFactory):  # type: ignore[misc,unused-ignore]
        def __init__(self) -> None:
            self.products: dict[str, _Sink] = {}

        def create(self, filename: str) -> _Sink:
            sink = _Sink()
            self.products[filename] = sink
            return sink

    budget = ctx.budget.left
    try:
        with py7zr.SevenZipFile(io.BufferedReader(BufferReader(data)), mode="r", max_extract_size=budget) as archive:
            if archive.needs_password():
                opened.errors.append("7z archive is encrypted and cannot be read")
                return opened
            infos = archive.list()
            if len(infos) > limits.max_archive_members:
                opened.anomalies.append(
                    Anomaly("PW301", None, None, f"the 7z archive has {len(infos)} entries (max_archive_members)")
                )
                opened.errors.append("7z archive not extracted (member count)")
                return opened
            total = sum(int(info.uncompressed or 0) for info in infos)
            packed = max(len(data), 1)
            if total > limits.ratio_floor_bytes and total > packed * limits.max_compression_ratio:
                opened.anomalies.append(
                    Anomaly(
                        "PW305",
                        None,
                        None,
                        f"the 7z archive declares {total} bytes from {packed} (more than "
                        f"{limits.max_compression_ratio}:1): a decompression bomb; not extracted",
                    )
                )
                opened.errors.append("7z archive not extracted (compression ratio)")
                return opened
            if total > budget:
                opened.anomalies.append(
                    Anomaly("PW301", None, None, f"the 7z archive declares {total} bytes (max_extracted_bytes)")
                )
                opened.errors.append("7z archive not extracted (byte budget)")
                return opened
            for info in infos:
                why = escapes(info.filename)
                if why is not None:
                    opened.anomalies.append(Anomaly("PW304", info.filename, None, f"7z member name {why}"))
            if any(escapes(info.filename) for info in infos):
                opened.errors.append("7z archive with escaping member names not extracted")
                return opened
            factory = _Factory()
            archive.extractall(factory=factory)
    except Exception as exc:  # noqa: BLE001 - py7zr raises many unrelated types on hostile input
        opened.errors.append(f"unreadable 7z archive: {type(exc).__name__}: {exc}")
        return opened
    for info in infos:
        sink = factory.products.get(info.filename)
        if sink is None or info.is_directory:
            continue
        content = sink.buffer.getvalue()
        ctx.budget.take(len(content))
        opened.children.append(Child(info.filename, content))
    return opened
