"""The compiled overlap test (``_speedups.ordered_spans``) against its pure-Python reference.

``torchzip._Reader.check_overlaps`` asks the compiled core whether the members lie in file order without
overlapping; ``torchzip.ordered_spans`` is the reference. They must agree wherever the compiled answer is
True or False; None (it cannot say) is allowed only for entries it does not read: another class, a field
that is not a plain int or bool, an end past 2**64.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from picklewarden import _native
from picklewarden.containers.torchzip import ZipEntry, open_torch_zip, ordered_spans

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


def _compiled(entries: list[ZipEntry], entry_type: type = ZipEntry) -> bool | None:
    """The compiled answer, from the extension itself: PICKLEWARDEN_PURE_PYTHON only stops the scanner using it."""
    from picklewarden import _speedups  # type: ignore[attr-defined,import-not-found,unused-ignore]

    return cast("bool | None", _speedups.ordered_spans(entries, entry_type))


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
