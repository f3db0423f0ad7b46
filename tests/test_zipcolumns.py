"""The whole-archive column passes (``containers/zipcolumns.py``) against their compiled versions.

``_speedups.ordered_spans`` (members in file order without overlapping) and ``_speedups.entry_flags`` (a
byte of flags per entry) must agree with the references ``zipcolumns._ordered_spans`` and
``zipcolumns._entry_flags`` wherever they answer; None (they cannot say) is allowed only for entries they do
not read: another class, a field that is not a plain int, str or bool, an end past 2**64. The views built
on them (numpy's, zipfile's, the storage check's) are compared with their slow ways on real archives.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from picklewarden import _native
from picklewarden.containers.torchzip import ZipEntry, open_torch_zip
from picklewarden.containers.zipcolumns import _entry_flags as entry_flags
from picklewarden.containers.zipcolumns import _ordered_spans as ordered_spans

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "fuzz"))
from targets import COMPILED, LIMITS, pure_python

_U64 = 2**64 - 1

offsets = st.sampled_from([0, 1, 30, 100, 4096, _U64 - 40, _U64]) | st.integers(0, 10_000)


def _entry(header: int, data: int, size: int, directory: bool) -> ZipEntry:
    return ZipEntry("archive/data/0", header, data, size, size, 0, 0, 0, directory=directory)


@st.composite
def spans(draw: st.DrawFn) -> list[ZipEntry]:
    """Entries mostly in file order (as torch.save writes them), some out of order, overlapping, empty,
    directories, or at the top of the 64-bit range."""
    entries, at = [], draw(st.integers(0, 50))
    for _ in range(draw(st.integers(0, 8))):
        at += draw(st.sampled_from([0, 1, 30, 64, 200])) - draw(st.sampled_from([0, 0, 0, 0, 1, 100]))
        header = draw(st.sampled_from([max(at, 0)]) | offsets)
        data = header + draw(st.sampled_from([30, 44, 64])) if draw(st.booleans()) else draw(offsets)
        entries.append(_entry(header, data, draw(offsets | st.sampled_from([0, 0, 10])), draw(st.booleans())))
    return entries


def _extension() -> Any:
    """The extension itself: PICKLEWARDEN_PURE_PYTHON only stops the scanner using it."""
    from picklewarden import _speedups  # type: ignore[attr-defined,import-not-found,unused-ignore]

    return _speedups


def _compiled(entries: list[ZipEntry], entry_type: type = ZipEntry) -> bool | None:
    return cast("bool | None", _extension().ordered_spans(entries, entry_type))


@settings(max_examples=500, deadline=None)
@given(entries=spans())
def test_the_compiled_overlap_test_agrees_with_the_reference(entries: list[ZipEntry]) -> None:
    found = _compiled(entries)
    fits = ordered_spans(entries)
    if found is None:  # only a value or an end past 2**64 here (the other ways are below): the reference decides
        assert any(
            max(e.header_offset, e.data_offset, e.compressed_size) > _U64
            or (not e.directory and e.compressed_size and e.data_offset + e.compressed_size > _U64)
            for e in entries
        )
    else:
        assert found is fits


def test_ordered_spans_on_written_layouts() -> None:
    in_order = [_entry(0, 40, 10, False), _entry(50, 90, 0, False), _entry(60, 100, 5, False)]
    assert _compiled(in_order) is True and ordered_spans(in_order)
    overlapping = [_entry(0, 40, 30, False), _entry(60, 100, 5, False)]
    assert _compiled(overlapping) is False and not ordered_spans(overlapping)
    # a directory's or an empty member's span holds nothing, so another may start inside it
    hollow = [_entry(0, 40, 30, True), _entry(10, 50, 0, False), _entry(20, 60, 5, False)]
    assert _compiled(hollow) is True and ordered_spans(hollow)
    unordered = [_entry(60, 100, 5, False), _entry(0, 40, 10, False)]
    assert _compiled(unordered) is False and not ordered_spans(unordered)
    assert _compiled([]) is True and ordered_spans([])


def test_ordered_spans_leaves_what_it_cannot_read_to_the_reference() -> None:
    class Other(ZipEntry):
        __slots__ = ()

    plain = _entry(0, 40, 10, False)
    assert _compiled([plain], Other) is None  # slots of a parent class: not read directly
    assert _compiled([plain, object()]) is None  # type: ignore[list-item]
    odd = ZipEntry.__new__(ZipEntry)
    for name in ZipEntry.__slots__:
        object.__setattr__(odd, name, getattr(plain, name))
    object.__setattr__(odd, "directory", 0)  # falsy but not a bool
    assert _compiled([odd]) is None
    object.__setattr__(odd, "directory", False)
    object.__setattr__(odd, "header_offset", -1)
    assert _compiled([odd]) is None
    with pytest.raises(TypeError):
        _compiled(42)  # type: ignore[arg-type]


def test_overlap_findings_agree_on_both_cores() -> None:
    """A stored member whose span runs into the next: the finding is the same whichever core answers."""
    import zipfile
    from io import BytesIO

    out = BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        archive.writestr("archive/data/0", b"\x00" * 64)
        archive.writestr("archive/data/1", b"\x00" * 64)
    data = bytearray(out.getvalue())
    record = data.rindex(b"archive/data/0") - 46  # its central-directory record (the name comes last there)
    assert data[record : record + 4] == b"PK\x01\x02"
    data[record + 20 : record + 28] = (200).to_bytes(4, "little") * 2  # runs into data/1's local header
    compiled = open_torch_zip(bytes(data), LIMITS).anomalies
    with pure_python():
        reference = open_torch_zip(bytes(data), LIMITS).anomalies
    assert compiled == reference
    assert "overlapping-entries" in {anomaly.code for anomaly in compiled}
    assert (COMPILED is None) == (os.environ.get(_native.PURE_PYTHON_ENV, "") not in ("", "0"))


names = st.sampled_from(
    [
        "archive/DATA.PKL",
        "archive/code/x_pkl",
        "l",
        "archive/data/0",
        "archive/data/",
        "archive/data.pkl",
        "archive/data/x.pkl",
        "Archive/data/1",
        "archive/dat\u0430/2",
        "archive/data/\udc80",
        "",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(st.tuples(names, st.booleans(), st.sampled_from([0, 0, 1, 6, 2**63, 2**64 - 1])), max_size=10),
    folder=st.sampled_from(["archive/data/", "archive/", "", "Archive/data/", "\udc80"]),
)
def test_entry_flags_agree(rows: list[tuple[str, bool, int]], folder: str) -> None:
    entries = [ZipEntry(name, 0, 30, size, size, 0, 0, 0, directory=directory) for name, directory, size in rows]
    found = _extension().entry_flags(entries, ZipEntry, folder)
    assert found == entry_flags(entries, folder)
    for flag, (name, directory, size) in zip(found, rows, strict=True):
        expected = name.startswith(folder) + 2 * directory + 4 * (size == 0) + 8 * name.endswith(".pkl")
        assert flag == expected + 16 * name.endswith(("l", "L"))


def test_entry_flags_leave_what_they_cannot_read_to_the_reference() -> None:
    plain = ZipEntry("archive/data/0", 0, 30, 1, 1, 0, 0, 0)
    assert _extension().entry_flags([plain, object()], ZipEntry, "archive/") is None
    odd = plain.replace()
    object.__setattr__(odd, "size", 1.0)
    assert _extension().entry_flags([odd], ZipEntry, "archive/") is None
    assert entry_flags([odd], "archive/") == bytes([1])


def _state_dict(count: int, *, extra: bool = False) -> bytes:
    """A torch.save-like archive: data.pkl, one stored storage per tensor, and maybe a stray member."""
    import zipfile
    from io import BytesIO

    out = BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        archive.writestr("archive/byteorder", b"little")
        for key in range(count):
            archive.writestr(f"archive/data/{key}", (b"\x93NUMPY" if key == count - 1 else b"\x00") * 8)
        if extra:
            archive.writestr("archive/data/9.pkl", b"N.")
            archive.writestr("archive/extra.txt", b"x")
        archive.writestr("archive/version", b"3\n")
    return out.getvalue()


@pytest.mark.parametrize("extra", [False, True])
def test_numpy_views_choice_of_entries_agrees_with_the_slow_way(extra: bool) -> None:
    """npz._worth_a_look finds peeked storages by binary search when members are in file order; the slow
    way (a membership test per entry) is what it must equal."""
    from picklewarden.containers import npz

    archive = open_torch_zip(_state_dict(300, extra=extra), LIMITS)
    assert archive.in_order()
    entries = archive.all_entries
    heads = {entries[i].header_offset: b"" for i in (3, 7, 150, len(entries) - 1)} | {1: b""}  # 1: no entry
    fast = list(npz._worth_a_look(archive, "archive/data/", heads))
    storage = [n.startswith("archive/data/") and not n.endswith(".pkl") for n in archive.order]
    slow = [e for e, s in zip(entries, storage, strict=True) if not s or e.header_offset in heads]
    assert fast == slow and len(slow) < len(entries)


def test_scans_of_an_archive_agree_on_both_cores(tmp_path: Path) -> None:
    """The storage check, the peek count, numpy's and zipfile's views read the flags: same report either way."""
    from picklewarden import scan_bytes

    data = _state_dict(300, extra=True)
    with pure_python():
        reference = scan_bytes(data)
    assert scan_bytes(data) == reference
    assert any(finding.rule == "PW306" for finding in reference.findings)
