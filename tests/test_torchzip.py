"""torchzip reads PyTorch ZIP checkpoints as torch does: every mutation is checked against torch itself.

Archives are built from two benign ``torch.save`` checkpoints, ``A`` ({"a": ...}) and ``B`` ({"b": ...}),
whose ``data.pkl`` members have the same length, so one can stand in for the other. Each case's bytes
are handed to a single subprocess that runs ``torch.load(weights_only=True)`` and torch's own
``PyTorchFileReader.get_record("data.pkl")`` on it, and the reader under test must return the very
bytes torch read (or fail where torch fails) and report the expected anomaly codes.
"""

from __future__ import annotations

import io
import json
import mmap
import random
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from picklewarden.containers.torchzip import (
    ZIP_MAGIC,
    TorchZip,
    ZipEntry,
    data_start,
    looks_like_zip,
    open_torch_zip,
    read_entry,
)
from picklewarden.errors import LimitExceeded, ScanError, UnsupportedFormat
from picklewarden.limits import Limits

LIMITS = Limits()

# ----------------------------------------------------------------------------------------------------
# a ZIP writer that can lie in every field


@dataclass
class Member:
    name: bytes
    payload: bytes
    """Bytes stored in the archive (already compressed when method is 8)."""
    plain: bytes | None = None
    """Uncompressed content, for the CRC and size defaults (defaults to payload)."""
    method: int = 0
    flags: int = 0x0808  # data descriptor + UTF-8, as torch writes
    crc: int | None = None
    compressed_size: int | None = None
    size: int | None = None
    mod_time: int = 0
    external_attr: int = 0
    local_name: bytes | None = None
    local_flags: int | None = None
    local_method: int | None = None
    local_extra: bytes = b""
    central_extra: bytes = b""
    local_signature: bytes = ZIP_MAGIC
    header_offset: int | None = None
    """Override for the central directory's local-header offset."""
    descriptor: bool = True


@dataclass
class Layout:
    junk: bytes = b""
    absolute_offsets: bool = True
    """With junk, write offsets counted from the file start (True) or from the archive start (False)."""
    comment: bytes = b""
    trailing: bytes = b""
    zip64: bool = True
    zip64_signature: bytes = b"PK\x06\x06"
    zip64_fields: dict[str, int] = field(default_factory=dict)
    eocd_fields: dict[str, int] = field(default_factory=dict)
    declared_entries: int | None = None
    cd_padding: bytes = b""


def build(members: list[Member], layout: Layout | None = None) -> bytes:
    lay = layout or Layout()
    out = bytearray(lay.junk)
    shift = 0 if lay.absolute_offsets else len(lay.junk)
    central = bytearray()
    for m in members:
        plain = m.payload if m.plain is None else m.plain
        crc = zlib.crc32(plain) if m.crc is None else m.crc
        csize = len(m.payload) if m.compressed_size is None else m.compressed_size
        usize = len(plain) if m.size is None else m.size
        here = len(out)
        lname = m.name if m.local_name is None else m.local_name
        lflags = m.flags if m.local_flags is None else m.local_flags
        lmethod = m.method if m.local_method is None else m.local_method
        sizes = (0, 0, 0) if m.descriptor else (crc, csize & 0xFFFFFFFF, usize & 0xFFFFFFFF)
        out += m.local_signature + struct.pack(
            "<HHHHHIIIHH", 20, lflags, lmethod, m.mod_time, 0, *sizes, len(lname), len(m.local_extra)
        )
        out += lname + m.local_extra + m.payload
        if m.descriptor:
            out += struct.pack("<IIII", 0x08074B50, crc, csize & 0xFFFFFFFF, usize & 0xFFFFFFFF)
        offset = here - shift if m.header_offset is None else m.header_offset
        central += b"PK\x01\x02" + struct.pack(
            "<HHHHHHIIIHHHHHII",
            0x031E,
            45,
            m.flags,
            m.method,
            m.mod_time,
            0,
            crc,
            csize,
            usize,
            len(m.name),
            len(m.central_extra),
            0,
            0,
            0,
            m.external_attr,
            offset,
        )
        central += m.name + m.central_extra
    central += lay.cd_padding
    cd_offset = len(out) - shift
    out += central
    count = len(members) if lay.declared_entries is None else lay.declared_entries
    if lay.zip64:
        z = {"disk": 0, "cd_disk": 0, "on_disk": count, "total": count, "size": len(central), "offset": cd_offset}
        z.update(lay.zip64_fields)
        record_at = len(out) - shift
        out += lay.zip64_signature + struct.pack(
            "<QHHIIQQQQ", 44, 0x031E, 45, z["disk"], z["cd_disk"], z["on_disk"], z["total"], z["size"], z["offset"]
        )
        out += struct.pack("<IIQI", 0x07064B50, 0, record_at, z.get("disks", 1))
    e = {
        "disk": 0,
        "cd_disk": 0,
        "on_disk": min(count, 0xFFFF),
        "total": min(count, 0xFFFF),
        "size": len(central),
        "offset": cd_offset,
    }
    e.update(lay.eocd_fields)
    out += b"PK\x05\x06" + struct.pack(
        "<HHHHIIH", e["disk"], e["cd_disk"], e["on_disk"], e["total"], e["size"], e["offset"], len(lay.comment)
    )
    return bytes(out + lay.comment + lay.trailing)


# ----------------------------------------------------------------------------------------------------
# the two benign checkpoints everything is built from


@dataclass(frozen=True)
class Sample:
    original: bytes
    """torch.save's own bytes for A."""
    members: tuple[tuple[bytes, bytes], ...]
    """A's members (name, content) in torch's order."""
    pickles: dict[str, bytes]
    """data.pkl of A and of B."""

    def fresh(self) -> list[Member]:
        return [Member(name, content) for name, content in self.members]

    def find(self, members: list[Member], suffix: bytes) -> Member:
        return next(m for m in members if m.name.endswith(b"/" + suffix))


def _torch_save(obj: dict[str, Any]) -> bytes:
    torch = pytest.importorskip("torch")
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def sample() -> Sample:
    torch = pytest.importorskip("torch")
    a = _torch_save({"a": torch.arange(3, dtype=torch.float32)})
    b = _torch_save({"b": torch.arange(3, dtype=torch.float32)})
    with zipfile.ZipFile(io.BytesIO(a)) as za, zipfile.ZipFile(io.BytesIO(b)) as zb:
        members = tuple((info.filename.encode(), za.read(info)) for info in za.infolist())
        pickles = {"A": za.read("archive/data.pkl"), "B": zb.read("archive/data.pkl")}
    assert len(pickles["A"]) == len(pickles["B"]) and pickles["A"] != pickles["B"]
    return Sample(a, members, pickles)


# ----------------------------------------------------------------------------------------------------
# mutations


def _rebuilt(s: Sample) -> bytes:
    return build(s.fresh())


def _set(suffix: bytes, **changes: Any) -> Callable[[Sample], bytes]:
    def make(s: Sample) -> bytes:
        members = s.fresh()
        member = s.find(members, suffix)
        for key, value in changes.items():
            setattr(member, key, value)
        return build(members)

    return make


def _layout(**changes: Any) -> Callable[[Sample], bytes]:
    return lambda s: build(s.fresh(), Layout(**changes))


def _duplicate(position: int, name: bytes = b"archive/data.pkl") -> Callable[[Sample], bytes]:
    def make(s: Sample) -> bytes:
        members = s.fresh()
        members.insert(position if position >= 0 else len(members), Member(name, s.pickles["B"]))
        return build(members)

    return make


def _deflated(size_delta: int = 0, cut: int = 0, tail: bytes = b"") -> Callable[[Sample], bytes]:
    def make(s: Sample) -> bytes:
        members = s.fresh()
        pkl = s.find(members, b"data.pkl")
        raw = zlib.compress(pkl.payload, 9)[2:-4]
        pkl.plain, pkl.method = pkl.payload, 8
        pkl.payload = (raw[: len(raw) - cut] if cut else raw) + tail
        pkl.size = len(pkl.plain) + size_delta
        return build(members)

    return make


def _junk(junk: bytes, absolute: bool) -> Callable[[Sample], bytes]:
    return lambda s: build(s.fresh(), Layout(junk=junk, absolute_offsets=absolute))


def _version(text: bytes | None) -> Callable[[Sample], bytes]:
    def make(s: Sample) -> bytes:
        members = s.fresh()
        version = s.find(members, b"version")
        if text is None:
            members.remove(version)
        else:
            version.payload = text
        return build(members)

    return make


def _zip64_sizes(s: Sample) -> bytes:
    members = s.fresh()
    pkl = s.find(members, b"data.pkl")
    n = len(pkl.payload)
    pkl.compressed_size = pkl.size = 0xFFFFFFFF
    pkl.central_extra = struct.pack("<HHI", 0x5455, 4, 0) + struct.pack("<HHQQ", 1, 16, n, n)
    return build(members)


def _zip64_short(s: Sample) -> bytes:
    """Both sizes say "see ZIP64" but the ZIP64 field only holds one of them."""
    members = s.fresh()
    pkl = s.find(members, b"data.pkl")
    pkl.compressed_size = pkl.size = 0xFFFFFFFF
    pkl.central_extra = struct.pack("<HHQ", 1, 8, len(pkl.payload))
    return build(members)


def _alias(s: Sample) -> bytes:
    """A second central-directory entry pointing at data.pkl's local header."""
    data = build(s.fresh())
    archive = open_torch_zip(data, LIMITS)
    pkl = archive.record("data.pkl")
    assert pkl is not None
    members = s.fresh()
    members.append(Member(b"archive/alias", s.pickles["A"], header_offset=pkl.header_offset))
    return build(members)


def _claims(total: int, *, zip64: bool) -> Callable[[Sample], bytes]:
    if zip64:
        return _layout(zip64_fields={"total": total, "on_disk": total})
    return _layout(zip64=False, eocd_fields={"total": total, "on_disk": total}, cd_padding=bytes(46 * total))


def _resized(delta: int, mod_time: int) -> Callable[[Sample], bytes]:
    """Stored data.pkl whose uncompressed size differs from its compressed size."""

    def make(s: Sample) -> bytes:
        members = s.fresh()
        pkl = s.find(members, b"data.pkl")
        pkl.mod_time, pkl.size = mod_time, len(pkl.payload) + delta
        return build(members)

    return make


def _hide_last(s: Sample) -> bytes:
    """The end record declares one entry fewer than the central directory holds."""
    members = s.fresh()
    return build(members, Layout(declared_entries=len(members) - 1))


def _bad_local_signature(s: Sample) -> bytes:
    """data.pkl (moved last, so the file still starts with a local header) has a broken local signature."""
    members = s.fresh()
    pkl = s.find(members, b"data.pkl")
    members.remove(pkl)
    pkl.local_signature = b"PK\x07\x08"
    return build([*members, pkl])


def _eocd_in_comment(s: Sample) -> bytes:
    """The real end record counts a trailing duplicate (B); a second one in its comment does not."""
    members = [*s.fresh(), Member(b"archive/data.pkl", s.pickles["B"])]
    plain = build(members, Layout(zip64=False))
    cd_size, cd_offset = struct.unpack_from("<II", plain, len(plain) - 10)
    fake = b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, len(members) - 1, len(members) - 1, cd_size, cd_offset, 0)
    return build(members, Layout(zip64=False, comment=fake))


def _truncated(s: Sample) -> bytes:
    return s.original[: len(s.original) // 2]


def _member_cut(s: Sample) -> bytes:
    """The central directory promises more of data.pkl than the file holds."""
    members = s.fresh()
    s.find(members, b"data.pkl").header_offset = 10**6
    return build(members)


@dataclass(frozen=True)
class Case:
    id: str
    make: Callable[[Sample], bytes]
    load: str
    """What torch.load(weights_only=True) does: "A"/"B" (returns that state dict), an exception name, or FAILS."""
    record: str | None
    """data.pkl bytes torch's reader returns: "A", "B", "garbage" (uninitialised memory) or None (it fails)."""
    codes: frozenset[str] = frozenset()
    open_error: type[ScanError] | None = None
    read_error: bool = False


def _c(
    id: str,
    make: Callable[[Sample], bytes],
    load: str,
    record: str | None,
    codes: set[str] | None = None,
    open_error: type[ScanError] | None = None,
    read_error: bool = False,
) -> Case:
    return Case(id, make, load, record, frozenset(codes or ()), open_error, read_error)


RT = "RuntimeError"
FAILS = "any exception"  # unpickling uninitialised memory fails in whatever way the garbage dictates
CASES: list[Case] = [
    _c("torch-save-original", lambda s: s.original, "A", "A"),
    _c("rebuilt", _rebuilt, "A", "A"),
    # CRC-32: never verified by torch
    _c("bad-crc", _set(b"data.pkl", crc=0x12345678), "A", "A", {"bad-crc"}),
    _c("zero-crc", _set(b"data.pkl", crc=0), "A", "A", {"bad-crc"}),
    # general-purpose flags: torch uses the central directory's
    _c("encrypted-central", _set(b"data.pkl", flags=0x0809), RT, None, {"flag-bits"}, read_error=True),
    _c("encrypted-local-only", _set(b"data.pkl", local_flags=0x0809), "A", "A", {"local-header-mismatch"}),
    _c("strong-encryption", _set(b"data.pkl", flags=0x0848), RT, None, {"flag-bits"}, read_error=True),
    _c("patch-data", _set(b"data.pkl", flags=0x0828), RT, None, {"flag-bits"}, read_error=True),
    _c("masked-headers", _set(b"data.pkl", flags=0x2808), RT, None, open_error=ScanError),
    _c("no-descriptor-no-flags", _set(b"data.pkl", flags=0, descriptor=False), "A", "A"),
    _c("odd-flag-bits", _set(b"data.pkl", flags=0x4918), "A", "A", {"flag-bits"}),
    # local header: only its lengths matter
    _c("local-name-mismatch", _set(b"data.pkl", local_name=b"archive/evil.pkl"), "A", "A", {"local-name-mismatch"}),
    _c(
        "local-name-longer",
        _set(b"data.pkl", local_name=b"archive/data.pkl" + b"x" * 40),
        "A",
        "A",
        {"local-name-mismatch"},
    ),
    _c("local-extra", _set(b"data.pkl", local_extra=b"FB\x0b\x00" + b"Z" * 11), "A", "A"),
    _c("local-method-deflate", _set(b"data.pkl", local_method=8), "A", "A", {"local-header-mismatch"}),
    _c("central-extra-corrupt", _set(b"data.pkl", central_extra=b"FB\x09\x00ZZ"), "A", "A", {"zipfile-rejects"}),
    _c("bad-local-signature", _bad_local_signature, RT, None, {"bad-local-header"}, read_error=True),
    # duplicate names: miniz's heap sort + binary search decides, not position
    _c("duplicate-last", _duplicate(-1), "B", "B", {"duplicate-entry"}),
    _c("duplicate-second", _duplicate(1), "B", "B", {"duplicate-entry"}),
    _c("duplicate-first", _duplicate(0), "A", "A", {"duplicate-entry"}),
    _c("duplicate-case-variant", _duplicate(-1, b"archive/DATA.PKL"), "B", "B", {"duplicate-entry", "name-case"}),
    _c("name-case-only", _set(b"data.pkl", name=b"archive/Data.Pkl"), "A", "A", {"name-case"}),
    _c("nul-in-duplicate-name", _duplicate(-1, b"archive/data.pkl\x00x"), "A", "A", {"nul-in-name"}),
    # prepended bytes: torch.load needs PK\3\4 at 0, miniz uses absolute offsets
    _c("junk-prefix", _junk(b"J" * 100, True), "UnpicklingError", "A", {"legacy-fallback", "prefix-data"}),
    _c("junk-prefix-local-magic", _junk(ZIP_MAGIC + b"J" * 96, True), "A", "A", {"prefix-data"}),
    _c("junk-prefix-relative-offsets", _junk(ZIP_MAGIC + b"J" * 96, False), RT, None, open_error=ScanError),
    # end of central directory and ZIP64
    _c("no-zip64", _layout(zip64=False), "A", "A"),
    _c("zip64-extra-sizes", _zip64_sizes, "A", "A"),
    _c(
        "zip64-extra-too-short",
        _zip64_short,
        RT,
        None,
        {"bad-zip64-extra", "truncated", "overlapping-entries"},
        read_error=True,
    ),
    _c(
        "zip64-sizes-without-extra",
        _set(b"data.pkl", compressed_size=0xFFFFFFFF, size=0xFFFFFFFF),
        RT,
        None,
        {"truncated", "overlapping-entries"},
        read_error=True,
    ),
    _c("zip64-bad-signature", _layout(zip64_signature=b"PK\x06\x09"), "A", "A", {"zip64-ignored", "zipfile-rejects"}),
    _c("zip64-count-disagrees", _layout(eocd_fields={"total": 3, "on_disk": 3}), "A", "A", {"zip64-mismatch"}),
    _c("claims-2**32-entries", _claims(2**32, zip64=True), RT, None, open_error=ScanError),
    _c("claims-2**32-1-entries", _claims(2**32 - 1, zip64=True), RT, None, open_error=ScanError),
    _c("claims-65535-entries", _claims(0xFFFF, zip64=False), RT, None, open_error=ScanError),
    _c("hidden-last-entry", _hide_last, "A", "A", {"cd-slack"}),
    _c("comment", _layout(comment=b"hello"), "A", "A"),
    _c("comment-65000", _layout(comment=b"c" * 65000), "A", "A"),
    _c("comment-in-miniz-bug-zone", _layout(comment=b"c" * 60000), "OSError", None, open_error=ScanError),
    _c("eocd-in-comment", _eocd_in_comment, "A", "A", {"multiple-eocd", "cd-slack", "zipfile-rejects"}),
    _c("trailing-bytes", _layout(trailing=b"T" * 10), "A", "A", {"trailing-data"}),
    _c("eocd-too-far-back", _layout(trailing=b"T" * 70000), RT, None, open_error=UnsupportedFormat),
    # compression: torch writes stored members but reads deflate
    _c("deflated", _deflated(), "A", "A", {"compressed-pickle"}),
    _c("deflated-slack", _deflated(tail=b"JUNK"), "A", "A", {"compressed-pickle", "deflate-slack"}),
    _c(
        "deflated-size-too-small",
        _deflated(size_delta=-1),
        "EOFError",
        "A-1",
        {"compressed-pickle", "size-mismatch", "bad-crc"},
    ),
    _c("deflated-size-too-big", _deflated(size_delta=1), RT, None, {"compressed-pickle"}, read_error=True),
    _c("deflated-truncated", _deflated(cut=5), FAILS, "garbage", {"compressed-pickle"}, read_error=True),
    _c(
        "deflated-garbage",
        _set(b"data.pkl", method=8, payload=b"\xff" * 50, plain=b"x" * 162, size=162),
        FAILS,
        "garbage",
        {"compressed-pickle"},
        read_error=True,
    ),
    _c("method-bzip2", _set(b"data.pkl", method=12), RT, None, {"unsupported-method"}, read_error=True),
    # stored sizes: torch reads the uncompressed size
    _c("stored-size-larger", _resized(+10, mod_time=1), "A", "A+10", {"size-mismatch", "bad-crc"}),
    _c("stored-size-smaller", _resized(-12, mod_time=1), "EOFError", "A-12", {"size-mismatch", "bad-crc"}),
    _c("stored-size-mismatch-time-0", _resized(-12, mod_time=0), RT, None, open_error=ScanError),
    _c(
        "directory-attribute",
        _set(b"data.pkl", external_attr=0x10),
        FAILS,
        "garbage",
        {"uninitialized-read"},
        read_error=True,
    ),
    # torch's own checks around miniz
    _c("outside-prefix", lambda s: build([*s.fresh(), Member(b"other/x", b"x")]), RT, "A", {"outside-prefix"}),
    _c("version-missing", _version(None), RT, None, {"bad-version"}),
    _c("version-11", _version(b"11"), RT, None, {"bad-version"}),
    _c("version-not-a-number", _version(b"abc"), RT, None, {"bad-version"}),
    _c("version-spaces-and-junk", _version(b" \t3junk"), "A", "A"),
    _c("serialization-id-encrypted", _set(b"serialization_id", flags=0x0809), RT, None, {"flag-bits", "torch-refuses"}),
    # structure
    _c("alias-entry", _alias, "A", "A", {"overlapping-entries", "local-name-mismatch"}),
    _c("truncated-archive", _truncated, RT, None, open_error=ScanError),
    _c("member-past-end", _member_cut, RT, None, open_error=ScanError),
]


# ----------------------------------------------------------------------------------------------------
# torch as the oracle, in one subprocess for all cases

_ORACLE = r"""
import json, sys, torch
results = {}
for path in sys.argv[1:]:
    seen = {}
    try:
        with open(path, "rb") as handle:
            reader = torch._C.PyTorchFileReader(handle)
            try:
                seen["record"] = reader.get_record("data.pkl").hex()
            except Exception as exc:
                seen["record_error"] = str(exc)[:300]
            del reader
    except Exception as exc:
        seen["reader_error"] = type(exc).__name__ + ": " + str(exc)[:300]
    try:
        loaded = torch.load(path, weights_only=True)
        seen["load"] = "".join(sorted(loaded)).upper()
    except Exception as exc:
        seen["load"] = type(exc).__name__
        seen["load_error"] = str(exc)[:300]
    results[path] = seen
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def built(sample: Sample) -> dict[str, bytes]:
    return {case.id: case.make(sample) for case in CASES}


@pytest.fixture(scope="module")
def oracle(built: dict[str, bytes], tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    folder = tmp_path_factory.mktemp("torchzip")
    paths = {}
    for case_id, data in built.items():
        path = folder / f"{case_id}.pt"
        path.write_bytes(data)
        paths[str(path)] = case_id
    done = subprocess.run(
        [sys.executable, "-c", _ORACLE, *paths], capture_output=True, text=True, timeout=600, check=True
    )
    return {paths[path]: seen for path, seen in json.loads(done.stdout).items()}


def _expected_bytes(sample: Sample, spec: str) -> bytes:
    """ "A", "B", "A+10" (A then the next 10 file bytes), "A-12" (A without its last 12 bytes)."""
    base = sample.pickles[spec[0]]
    if "-" in spec:
        return base[: len(base) - int(spec.split("-")[1])]
    return base


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_reads_what_torch_reads(case: Case, sample: Sample, built: dict[str, bytes], oracle: dict[str, Any]) -> None:
    data, seen = built[case.id], oracle[case.id]

    # what torch does with it
    if case.load == FAILS:
        assert "load_error" in seen, seen
    else:
        assert seen["load"] == case.load, seen
    if case.record is None:
        assert "record" not in seen, seen
    else:
        assert "record" in seen, seen
        torch_bytes = bytes.fromhex(seen["record"])
        if case.record != "garbage":
            expected = _expected_bytes(sample, case.record)
            assert torch_bytes[: len(expected)] == expected
            if "+" not in case.record:
                assert torch_bytes == expected

    # what the reader says
    if case.open_error is not None:
        assert "reader_error" in seen, seen
        with pytest.raises(case.open_error):
            open_torch_zip(data, LIMITS)
        return
    archive = open_torch_zip(data, LIMITS)
    codes = {anomaly.code for anomaly in archive.anomalies}
    entry = archive.record("data.pkl")
    assert entry is not None
    if "record_error" in seen or case.record == "garbage":
        assert case.read_error  # torch fails, or reads uninitialised memory: no bytes to agree on
    if case.read_error:
        with pytest.raises(ScanError):
            read_entry(data, entry, LIMITS)
    else:
        payload, problems = read_entry(data, entry, LIMITS)
        codes |= {anomaly.code for anomaly in problems}
        if "record" in seen:
            assert payload == bytes.fromhex(seen["record"])
        else:  # torch refused the archive before reading data.pkl
            assert "reader_error" in seen
            assert codes & {"bad-version", "torch-refuses"}
            assert payload == sample.pickles["A"]
    assert codes == case.codes, [a.message for a in archive.anomalies]
    for anomaly in archive.anomalies:
        assert anomaly.code and anomaly.message

    # the claims about Python's zipfile hold
    via_zipfile = _zipfile_read(data, f"{archive.prefix}/data.pkl")
    if "zipfile-rejects" in codes:
        assert via_zipfile is None
    if not codes and "record" in seen:
        assert via_zipfile == bytes.fromhex(seen["record"])


def _zipfile_read(data: bytes, name: str) -> bytes | None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return archive.read(name)
    except (zipfile.BadZipFile, KeyError, RuntimeError, OSError, ValueError, EOFError, zlib.error, struct.error):
        return None


# ----------------------------------------------------------------------------------------------------
# details


def test_directory_fields(sample: Sample) -> None:
    data = build(sample.fresh())
    archive = open_torch_zip(data, LIMITS)
    assert archive.prefix == "archive"
    assert archive.order == tuple(name.decode() for name, _ in sample.members)
    assert set(archive.entries) == set(archive.order)
    entry = archive.record("data.pkl")
    assert entry is not None and entry is archive.entries["archive/data.pkl"]
    assert entry.method == 0 and entry.flags == 0x0808 and entry.crc32 == zlib.crc32(sample.pickles["A"])
    assert entry.size == entry.compressed_size == len(sample.pickles["A"])
    assert data[entry.data_offset : entry.data_offset + entry.size] == sample.pickles["A"]
    assert archive.record("DATA.PKL") is entry  # miniz ignores ASCII case
    assert archive.record("missing") is None
    assert archive.anomalies == ()


def test_data_offset_uses_local_lengths(sample: Sample) -> None:
    members = sample.fresh()
    pkl = sample.find(members, b"data.pkl")
    pkl.local_name = b"n"
    pkl.local_extra = b"\x00" * 33
    archive = open_torch_zip(build(members), LIMITS)
    entry = archive.record("data.pkl")
    assert entry is not None
    assert entry.data_offset == entry.header_offset + 30 + 1 + 33


def test_original_torch_file_offsets_match_torch(sample: Sample) -> None:
    torch = pytest.importorskip("torch")
    archive = open_torch_zip(sample.original, LIMITS)
    reader = torch._C.PyTorchFileReader(io.BytesIO(sample.original))
    for name in ("data.pkl", "data/0", "version", "byteorder"):
        entry = archive.record(name)
        assert entry is not None
        assert data_start(sample.original, entry) == reader.get_record_offset(name)
        assert entry.header_offset == reader.get_record_header_offset(name)
        # Tensor data's local header is read only on demand (its offset is a lower bound until then).
        assert entry.local_read == (name != "data/0")
        assert entry.data_offset <= reader.get_record_offset(name)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_deflated_members_are_read(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    module_path = tmp_path / "tiny_module.py"
    module_path.write_text("import torch\nclass M(torch.nn.Module):\n    def forward(self, x):\n        return x + 1\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import tiny_module  # type: ignore[import-not-found]

        buffer = io.BytesIO()
        torch.jit.save(torch.jit.script(tiny_module.M()), buffer)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("tiny_module", None)
    data = buffer.getvalue()
    archive = open_torch_zip(data, LIMITS)
    reader = torch._C.PyTorchFileReader(io.BytesIO(data))
    deflated = [e for e in archive.all_entries if e.method == 8]
    assert deflated, "torch.jit.save compresses code and debug records"
    for entry in archive.all_entries:
        name = entry.name.split("/", 1)[1]
        payload, problems = read_entry(data, entry, LIMITS)
        assert payload == reader.get_record(name)
        assert problems == ()
    assert "compressed-pickle" not in {a.code for a in archive.anomalies}


_LOOKUP_ORACLE = r"""
import json, sys, torch
names = json.loads(sys.argv[1])
results = {}
for path in sys.argv[2:]:
    try:
        with open(path, "rb") as handle:
            reader = torch._C.PyTorchFileReader(handle)
            found = {}
            for name in names:
                try:
                    found[name] = reader.get_record(name).decode()
                except Exception:
                    found[name] = None
            del reader
        results[path] = found
    except Exception as exc:
        results[path] = {"__open__": str(exc)[:200]}
print(json.dumps(results))
"""


def test_duplicate_resolution_matches_torch(tmp_path: Path) -> None:
    """Random archives full of duplicate and case-variant names: every lookup lands where torch's does."""
    pytest.importorskip("torch")
    rng = random.Random(20240601)
    pool = ["data.pkl", "DATA.pkl", "Data.Pkl", "data/0", "data/1", "byteorder", "x", "data.pk", "data.pkl0", "Version"]
    lookups = ["version", "data.pkl", "DATA.PKL", "data/0", "data/1", "byteorder", "x", "data.pk", "data.pkl0"]
    paths: list[str] = []
    for number in range(150):
        members = [Member(b"arc/version", b"3\n")]
        for index in range(rng.randint(2, 40)):
            name = rng.choice(pool)
            content = f"{rng.randint(0, 12)}\n#{number}-{index}" if name == "Version" else f"#{number}-{index}"
            members.append(Member(b"arc/" + name.encode(), content.encode()))
        rng.shuffle(members)
        path = tmp_path / f"dup{number}.pt"
        path.write_bytes(build(members))
        paths.append(str(path))
    done = subprocess.run(
        [sys.executable, "-c", _LOOKUP_ORACLE, json.dumps(lookups), *paths],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    refused = 0
    for path, found in json.loads(done.stdout).items():
        data = Path(path).read_bytes()
        archive = open_torch_zip(data, LIMITS)
        codes = {anomaly.code for anomaly in archive.anomalies}
        if "__open__" in found:
            refused += 1
            assert "bad-version" in codes, (path, found)
            continue
        assert "bad-version" not in codes
        for name in lookups:
            entry = archive.record(name)
            ours = None if entry is None else read_entry(data, entry, LIMITS)[0].decode()
            assert ours == found[name], (path, name)
    assert 0 < refused < len(paths)


def test_mmap_and_memoryview(sample: Sample, tmp_path: Path) -> None:
    path = tmp_path / "a.pt"
    path.write_bytes(build(sample.fresh(), Layout(junk=ZIP_MAGIC + b"J" * 20)))
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        for data in (mapped, memoryview(path.read_bytes())):
            assert looks_like_zip(data)
            archive = open_torch_zip(data, LIMITS)
            entry = archive.record("data.pkl")
            assert entry is not None
            assert read_entry(data, entry, LIMITS)[0] == sample.pickles["A"]


class _CountingBuffer:
    """A read-only buffer that counts the bytes sliced out of it."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.read = 0

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: slice) -> bytes:
        chunk = self.data[index]
        self.read += len(chunk)
        return chunk


def test_cost_does_not_grow_with_tensor_data() -> None:
    torch = pytest.importorskip("torch")
    data = _torch_save({"big": torch.zeros(8 * 1024 * 1024, dtype=torch.uint8), "small": torch.ones(3)})
    counting = _CountingBuffer(data)
    archive = open_torch_zip(counting, LIMITS)  # type: ignore[arg-type]
    entry = archive.record("data.pkl")
    assert entry is not None
    read_entry(counting, entry, LIMITS)  # type: ignore[arg-type]
    assert counting.read < 256 * 1024, counting.read


def test_member_limit() -> None:
    torch = pytest.importorskip("torch")
    data = _torch_save({"a": torch.zeros(1)})
    with pytest.raises(LimitExceeded) as raised:
        open_torch_zip(data, LIMITS.replace(max_members=3))
    assert raised.value.limit == 3


def test_pickle_size_limit(sample: Sample) -> None:
    data = build(sample.fresh())
    archive = open_torch_zip(data, LIMITS)
    entry = archive.record("data.pkl")
    assert entry is not None
    with pytest.raises(LimitExceeded):
        read_entry(data, entry, LIMITS.replace(max_pickle_bytes=10))
    assert read_entry(data, entry, LIMITS.replace(max_pickle_bytes=entry.size))[0] == sample.pickles["A"]


@pytest.mark.parametrize("total", [2**32, 2**32 - 1, 0xFFFF])
def test_huge_entry_claims_fail_fast(sample: Sample, total: int) -> None:
    data = _claims(total, zip64=total > 0xFFFF)(sample)
    started = time.monotonic()
    with pytest.raises(ScanError):
        open_torch_zip(data, LIMITS)
    with pytest.raises(ScanError):
        open_torch_zip(data, LIMITS.replace(max_members=100))
    assert time.monotonic() - started < 2


def test_deflate_bomb_is_bounded(sample: Sample) -> None:
    """A member claiming a small size but inflating to a lot: only size + 1 bytes are ever produced."""
    members = sample.fresh()
    pkl = sample.find(members, b"data.pkl")
    bomb = zlib.compress(b"\x00" * (64 * 1024 * 1024), 9)[2:-4]
    pkl.payload, pkl.plain, pkl.method, pkl.size = bomb, sample.pickles["A"], 8, len(sample.pickles["A"])
    data = build(members)
    entry = open_torch_zip(data, LIMITS).record("data.pkl")
    assert entry is not None
    started = time.monotonic()
    payload, problems = read_entry(data, entry, LIMITS)
    assert payload == b"\x00" * entry.size  # torch keeps what fits in its buffer
    assert {p.code for p in problems} == {"size-mismatch", "bad-crc"}
    assert time.monotonic() - started < 2


def test_empty_and_malformed_inputs() -> None:
    for data in (b"", b"PK", b"PK\x05\x06", bytes(100)):
        with pytest.raises(ScanError):
            open_torch_zip(data, LIMITS)
    empty = b"PK\x05\x06" + bytes(18)
    with pytest.raises(ScanError, match="does not contain any files"):
        open_torch_zip(empty, LIMITS)


def test_first_entry_must_be_in_a_folder(sample: Sample) -> None:
    members = [Member(b"noslash", b"x"), *sample.fresh()]
    with pytest.raises(ScanError, match="not in a folder"):
        open_torch_zip(build(members), LIMITS)


def test_looks_like_zip(sample: Sample) -> None:
    assert looks_like_zip(sample.original)
    assert looks_like_zip(build(sample.fresh(), Layout(junk=b"\x80\x02N." * 100)))
    assert not looks_like_zip(b"\x80\x02}q\x00.")
    assert not looks_like_zip(b"")
    assert not looks_like_zip(bytes(10_000))


def test_results_are_frozen(sample: Sample) -> None:
    archive = open_torch_zip(sample.original, LIMITS)
    assert isinstance(archive, TorchZip)
    entry = archive.record("data.pkl")
    assert isinstance(entry, ZipEntry)
    with pytest.raises(AttributeError):
        entry.size = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        archive.entries["x"] = entry  # type: ignore[index]
    assert entry.replace(size=1).size == 1
