"""Python's zipfile shown only the directory records that decide what it reads (containers/zipfile_view.py)
reports the same PW309 differential as zipfile reading the whole archive.

Every mutated archive of test_torchzip.py, and mutations aimed at what the cut-down directory leaves out
(duplicate names, names zipfile decodes or cuts differently, records zipfile refuses, overlapping or
unordered members, a member running into the directory, comments, prefixed and trailing bytes), is
compared both ways, with the bytes torch reads and with bytes that differ from them.
"""

from __future__ import annotations

import struct
import zipfile
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from picklewarden.containers import zipfile_view
from picklewarden.containers.consistency import zipfile_differential
from picklewarden.containers.torchzip import TorchZip, open_torch_zip, read_plain
from picklewarden.containers.zipfile_view import zipfile_source
from picklewarden.errors import ScanError
from tests.test_torchzip import CASES, LIMITS, Layout, Member, Sample, build, sample

__all__ = ["sample"]  # the fixture, imported for pytest


@pytest.fixture(autouse=True)
def _cut_small_archives(monkeypatch: pytest.MonkeyPatch) -> None:
    """These archives have a handful of records: cut them down too, as a state dict's would be."""
    monkeypatch.setattr(zipfile_view, "SPLICE_FROM", 0)


def test_a_small_archive_is_read_whole(sample: Sample, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zipfile_view, "SPLICE_FROM", 64)
    data = sample.original
    archive = open_torch_zip(data, LIMITS)
    assert len(archive.all_entries) < 64
    assert zipfile_source(data, archive, ["archive/data.pkl"]) is data


def _torch_reads(data: bytes, archive: TorchZip) -> dict[str, bytes]:
    """The pickle records torch reads, as the opener reads them."""
    read: dict[str, bytes] = {}
    for name in dict.fromkeys(archive.order):
        entry = archive.entries.get(name)
        if entry is None or not name.lower().endswith(".pkl"):
            continue
        try:
            read[name] = read_plain(data, entry, LIMITS)[0]
        except ScanError:
            continue
    return read


def _compare(data: bytes) -> bool | None:
    """Assert both ways agree; whether the cut-down directory was used (None: torch cannot open it)."""
    try:
        archive = open_torch_zip(data, LIMITS)
    except ScanError:
        return None
    read = _torch_reads(data, archive)
    variants = [read, {name: payload + b"." for name, payload in read.items()}, {**read, "archive/none.pkl": b"x"}]
    for wanted in variants:
        for reported in (set(), set(list(wanted)[:1])):
            fast = zipfile_differential(data, archive, wanted, reported)
            whole = zipfile_differential(data, archive, wanted, reported, whole=True)
            assert fast == whole, (fast, whole)
    return zipfile_source(data, archive, list(read)) is not data


def test_every_torchzip_mutation_agrees(sample: Sample) -> None:
    spliced = [case.id for case in CASES if _compare(case.make(sample))]
    # torch.save's own file, bad CRCs, local-header tricks, flags, deflate, duplicates... take the short way
    assert {"torch-save-original", "rebuilt", "bad-crc", "local-name-mismatch", "duplicate-last"} <= set(spliced)
    assert len(spliced) >= 25, spliced


def _moved_last(s: Sample) -> bytes:
    members = s.fresh()
    pkl = s.find(members, b"data.pkl")
    members.remove(pkl)
    return build([*members, pkl])


def _with(*extra: Member, at: int = -1, layout: Layout | None = None) -> Callable[[Sample], bytes]:
    def make(s: Sample) -> bytes:
        members = s.fresh()
        for member in extra:
            members.insert(at if at >= 0 else len(members), member)
        return build(members, layout)

    return make


def _pickle_changed(**changes: object) -> Callable[[Sample], bytes]:
    def make(s: Sample) -> bytes:
        members = s.fresh()
        pkl = s.find(members, b"data.pkl")
        for key, value in changes.items():
            setattr(pkl, key, value)
        return build(members)

    return make


def _record_patched(suffix: bytes, at: int, value: bytes) -> Callable[[Sample], bytes]:
    """The central-directory record of the member named ``...suffix`` with bytes ``at`` replaced."""

    def make(s: Sample) -> bytes:
        data = bytearray(build(s.fresh()))
        position = data.rfind(b"PK\x05\x06")
        cd_offset = struct.unpack_from("<I", data, position + 16)[0]
        while data[cd_offset : cd_offset + 4] == b"PK\x01\x02":
            name_len, extra_len, comment_len = struct.unpack_from("<HHH", data, cd_offset + 28)
            if bytes(data[cd_offset + 46 : cd_offset + 46 + name_len]).endswith(suffix):
                data[cd_offset + at : cd_offset + at + len(value)] = value
                return bytes(data)
            cd_offset += 46 + name_len + extra_len + comment_len
        raise AssertionError(suffix)

    return make


def _unicode_path(target: bytes) -> bytes:
    """An Info-ZIP Unicode path extra field (zipfile 3.12+ takes the name from it)."""
    import zlib

    body = struct.pack("<BI", 1, zlib.crc32(b"archive/other.pkl")) + target
    return struct.pack("<HH", 0x7075, len(body)) + body


def _pickle_last_long(s: Sample) -> bytes:
    """data.pkl moved last, its compressed size running into the central directory."""
    members = s.fresh()
    pkl = s.find(members, b"data.pkl")
    members.remove(pkl)
    pkl.compressed_size, pkl.mod_time = len(pkl.payload) + 60, 1
    return build([*members, pkl])


PKL = b"archive/data.pkl"
MUTATIONS: dict[str, tuple[Callable[[Sample], bytes], bool]] = {
    # name -> (archive, whether the cut-down directory is expected)
    "pickle-last-record": (_moved_last, True),
    "exact-duplicate-first": (lambda s: _with(Member(PKL, s.pickles["B"]), at=0)(s), True),
    "exact-duplicate-twice": (lambda s: _with(Member(PKL, s.pickles["B"]), Member(PKL, b"junk"))(s), True),
    "duplicate-bad-crc": (lambda s: _with(Member(PKL, s.pickles["B"], crc=1))(s), True),
    "duplicate-deflate-garbage": (
        lambda s: _with(Member(PKL, b"\xff" * 9, method=8, plain=b"x" * 9), at=0)(s),
        True,
    ),
    "pickle-into-next-header": (_pickle_changed(compressed_size=200, mod_time=1), True),
    "pickle-into-directory": (_pickle_last_long, False),
    "cp437-name-duplicate": (lambda s: _with(Member(b"archive/data.pk\x8c", b"x", flags=0))(s), False),
    "utf8-name-duplicate": (lambda s: _with(Member("archive/dätä.pkl".encode(), s.pickles["B"]))(s), False),
    "nul-cut-duplicate": (lambda s: _with(Member(PKL + b"\x00x", s.pickles["B"]))(s), False),
    "backslash-duplicate": (lambda s: _with(Member(b"archive\\data.pkl", s.pickles["B"]))(s), False),
    "unicode-path-extra": (
        lambda s: _with(Member(b"archive/other.pkl", s.pickles["B"], central_extra=_unicode_path(PKL)))(s),
        False,
    ),
    "zip64-extra-elsewhere": (
        lambda s: _with(Member(b"archive/data/9", b"x", central_extra=struct.pack("<HHQ", 1, 8, 1)))(s),
        False,
    ),
    "corrupt-extra-elsewhere": (
        lambda s: _with(Member(b"archive/data/9", b"x", central_extra=b"ab\x09\x00"))(s),
        False,
    ),
    "version-64-elsewhere": (_record_patched(b"version", 6, b"\x40"), False),
    "version-63-elsewhere": (_record_patched(b"version", 6, b"\x3f"), True),
    "version-64-pickle": (_record_patched(b"data.pkl", 6, b"\x40"), False),
    "extra-like-zip64-locator": (
        lambda s: _with(Member(b"archive/data/9", b"x", central_extra=b"zz\x14\x00" + b"PK\x06\x07" + bytes(16)))(s),
        True,
    ),
    "comment": (lambda s: build(s.fresh(), Layout(comment=b"hello")), True),
    "no-zip64": (lambda s: build(s.fresh(), Layout(zip64=False)), True),
    "trailing": (lambda s: build(s.fresh(), Layout(trailing=b"T" * 10)), True),
    "prefixed-relative": (
        lambda s: build(s.fresh(), Layout(junk=b"PK\x03\x04" + b"J" * 96, absolute_offsets=False)),
        False,
    ),
    "prefixed-absolute": (lambda s: build(s.fresh(), Layout(junk=b"PK\x03\x04" + b"J" * 96)), True),
    "directory-slack": (lambda s: build(s.fresh(), Layout(cd_padding=b"\x00" * 3)), False),
    "local-name-differs": (_pickle_changed(local_name=b"archive/DATA.pkl"), True),
    "local-utf8-flag-only": (_pickle_changed(local_flags=0x0008), True),
    "encrypted-in-directory": (_pickle_changed(flags=0x0809), True),
    "patch-flag": (_pickle_changed(flags=0x0828), True),
}


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_mutations_aimed_at_the_cut_agree(name: str, sample: Sample) -> None:
    make, expect_cut = MUTATIONS[name]
    data = make(sample)
    used = _compare(data)
    if name in ("prefixed-relative",):
        assert used is None  # torch cannot open it: nothing to compare
        return
    assert used is expect_cut


def test_the_cut_reads_with_zipfile_itself(sample: Sample) -> None:
    """The cut-down archive is one zipfile opens and lists only the kept records."""
    data = _with(Member(PKL, sample.pickles["B"]), at=0)(sample)
    archive = open_torch_zip(data, LIMITS)
    source = zipfile_source(data, archive, ["archive/data.pkl"])
    assert source is not data
    from picklewarden.containers.base import BufferReader

    with zipfile.ZipFile(BufferReader(source)) as handle:
        names = handle.namelist()
        assert names.count("archive/data.pkl") == 2 and len(names) < len(archive.order)
        assert handle.read("archive/data.pkl") == sample.pickles["A"]  # last entry wins, as in the whole archive
    with zipfile.ZipFile(BufferReader(data)) as handle:
        assert handle.read("archive/data.pkl") == sample.pickles["A"]


def _npy_object_array() -> bytes:
    """An object-dtype .npy: numpy.load(allow_pickle=True) unpickles what follows the header."""
    header = b"{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    header += b" " * (63 - len(header) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\x80\x02]q\x00N\x85q\x01."


def test_numpy_view_passes_over_the_same_storages_as_a_full_walk(
    sample: Sample, monkeypatch: pytest.MonkeyPatch
) -> None:
    """npz.numpy_view skips unpeeked storages by name, without a Python step per entry: it looks at the
    same members as walking every entry, with and without entries sharing a local header."""
    from picklewarden import DEFAULT_LIMITS
    from picklewarden.containers import npz
    from picklewarden.containers.base import Context

    npy = _npy_object_array()
    archives = [
        sample.original,
        _with(Member(b"archive/data/7", npy), Member(b"archive/extra/n", npy), Member(b"archive/x.pkl", npy))(sample),
        next(case.make(sample) for case in CASES if case.id == "alias-entry"),
    ]
    found: list[int] = []
    for data in archives:
        archive = open_torch_zip(data, LIMITS)
        storages = [e for e in archive.all_entries if e.name.startswith("archive/data/")]
        for heads in ({}, {storages[0].header_offset: npy}, {e.header_offset: npy for e in storages}):
            ctx = Context.root(DEFAULT_LIMITS)
            quick = npz.numpy_view(data, archive, ctx, heads)
            with monkeypatch.context() as patched:
                patched.setattr(npz, "_worth_a_look", lambda archive, prefix, heads: archive.all_entries)
                full = npz.numpy_view(data, archive, Context.root(DEFAULT_LIMITS), heads)
            assert (quick.notes, quick.errors, quick.anomalies) == (full.notes, full.errors, full.anomalies)
            assert [s.member for s in quick.sources] == [s.member for s in full.sources]
            found.append(len(quick.sources))
    # the planted arrays: outside data/ always looked at; the storage only when it was peeked at
    assert found[3:6] == [2, 2, 3] and found[:3] == [0, 0, 0]


_patches = st.lists(
    st.tuples(
        st.integers(min_value=0),
        st.sampled_from([b"\xff\xff", b"\x00\x00", b"\x40\x00", b"\\\\", b"PK", b"\x75\x70", b"\x01\x00"])
        | st.binary(min_size=1, max_size=2),
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(patches=_patches)
def test_mutated_checkpoints_agree(sample: Sample, patches: list[tuple[int, bytes]]) -> None:
    """Bytes overwritten anywhere in torch.save's own archive (names, versions, extra fields, offsets, the
    end records): both ways report the same, whether or not the cut is taken."""
    data = bytearray(sample.original)
    for at, value in patches:
        position = at % len(data)
        data[position : position + len(value)] = value
    _compare(bytes(data))
