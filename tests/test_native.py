"""The compiled core (picklewarden/_speedups.c) against the pure-Python reference it replaces.

Both cores run on the same inputs and must agree exactly: the layout pass on well-formed and mutated pickles
under several limits, the central-directory walk on generated directories (ZIP64 extras, sentinels, slack),
and whole scans of the corpus, findings included. fuzz/targets.py holds the comparison (its ``native-*``
targets also run under tests/test_fuzz.py's random and mutated inputs, and under atheris).
``PICKLEWARDEN_PURE_PYTHON=1`` runs the whole suite on the reference alone.
"""

from __future__ import annotations

import mmap
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from io import BytesIO
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from picklewarden import _native, scan_bytes
from picklewarden.containers.zipdir import DirectoryReader
from picklewarden.pickle.layout import scan_layout

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "fuzz"))
from targets import AGREEMENT_LIMITS, COMPILED, LIMITS, _layout_facts, agree, native_zip, pure_python

from tests.corpus import ALL, write

ROOT = Path(__file__).resolve().parent.parent


def test_the_compiled_core_is_built_and_reported() -> None:
    if os.environ.get(_native.PURE_PYTHON_ENV, "") not in ("", "0"):
        assert COMPILED is None and "pure-Python" in _native.core_name()
        return
    assert COMPILED is not None, "the C extension did not build: `pip install -e .` prints why"
    version = subprocess.run(
        [sys.executable, "-m", "picklewarden", "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert "compiled C core" in version
    forced = subprocess.run(
        [sys.executable, "-m", "picklewarden", "--version"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, _native.PURE_PYTHON_ENV: "1"},
    ).stdout
    assert "pure-Python core" in forced


def test_the_c_source_is_not_newer_than_the_built_module() -> None:
    """An editable install compiles once; a C edit without a re-install would test a stale module."""
    if COMPILED is None or COMPILED.__file__ is None or "site-packages" in COMPILED.__file__:
        return
    for name in ("_speedups.c", "_speedups_machine.h"):
        source = ROOT / "src" / "picklewarden" / name
        assert Path(COMPILED.__file__).stat().st_mtime >= source.stat().st_mtime, "re-run `pip install -e .`"


# -- the layout pass ------------------------------------------------------------------------------------------
leaves = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
leaves = leaves | st.binary(max_size=300)
values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=5), inner, max_size=6)
    | st.tuples(inner, inner) | st.frozensets(st.integers(), max_size=4),
    max_leaves=40,
)  # fmt: skip


@st.composite
def pickles(draw: st.DrawFn) -> bytes:
    """A real pickle of random data at a random protocol, then a few byte-level mutations."""
    data = bytearray(pickle.dumps(draw(values), protocol=draw(st.integers(0, 5))))
    for _ in range(draw(st.integers(0, 4))):
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        match draw(st.sampled_from(["flip", "insert", "truncate"])):
            case "flip" if data:
                data[pos] = draw(st.integers(0, 255))
            case "insert":
                data[pos:pos] = draw(st.binary(min_size=1, max_size=9))
            case _:
                del data[pos:]
    return bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=pickles(), limits=st.sampled_from(AGREEMENT_LIMITS), start=st.integers(0, 3))
def test_layout_agrees_on_pickles_and_mutations(data: bytes, limits: object, start: int) -> None:
    prefix = b"\x00" * start  # the pass may begin anywhere in a buffer (a legacy file's later pickles)
    agree(lambda: _layout_facts(prefix + data, start, limits))  # type: ignore[arg-type]


def test_layout_agrees_across_chunks_and_on_a_mapped_file(tmp_path: Path) -> None:
    """More opcodes than one chunk of the compiled loop, read from an mmap as the scanner does."""
    data = pickle.dumps([{"k": i, "v": (i, str(i))} for i in range(40_000)], protocol=4)
    path = tmp_path / "big.pkl"
    path.write_bytes(data)
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        facts = agree(lambda: _layout_facts(mapped, 0, LIMITS.replace(max_opcodes=1_000_000)))
        cut_short = agree(lambda: _layout_facts(mapped, 0, LIMITS.replace(max_opcodes=70_000)))
    assert facts[1] == len(data) and facts[2] > 0x10000  # type: ignore[index]
    assert cut_short[2] == 70_001 and "opcodes" in str(cut_short[-1])  # type: ignore[index]


@pytest.mark.parametrize(
    "data",
    [
        b"\x80\x06K\x01.",  # protocol above the highest
        b"(lp0\np99999999999999999999\n.",  # text PUT past the memo limit
        b"(lp0\np1_0\n.",  # int() accepts underscores: the C core must too
        b"(lp0\npx\n.",  # text PUT that is no integer
        b"\x95\xff\xff\xff\xff\xff\xff\xff\xffN.",  # FRAME far past the end
        b"\x8e\xff\xff\xff\xff\xff\xff\xff\xff",  # BINBYTES8 with a 2**64-1 length
        b"X\xff\xff\xff\xff",  # BINUNICODE with a 4 GiB length
        b"B\x00\x00\x00\x80",  # BINBYTES: a signed length, negative
        b"\x82\x01\x83\x01\x02\x84\xff\xff\xff\xff.",  # EXT1/2/4, EXT4 signed
        b"cos\nsystem\n(S'x'\ntR\x88\x89Q\x94b.",
    ],
)
def test_layout_agrees_on_edge_cases(data: bytes) -> None:
    for limits in AGREEMENT_LIMITS:
        agree(lambda limits=limits: _layout_facts(data, 0, limits))


def test_keep_mode_uses_the_reference_and_matches_the_fast_pass() -> None:
    data = pickle.dumps({"a": [1, 2, (3, 4)]}, protocol=2)
    kept = scan_layout(data, 0, LIMITS, keep=True)
    fast = scan_layout(data, 0, LIMITS)
    assert kept.instructions and (kept.cut, kept.end, kept.opcodes) == (fast.cut, fast.end, fast.opcodes)


# -- the central directory ------------------------------------------------------------------------------------
_U32 = 0xFFFFFFFF
sizes = st.sampled_from([0, 1, 30, 1000, _U32]) | st.integers(0, _U32)


@st.composite
def extras(draw: st.DrawFn) -> bytes:
    """Extra fields: ZIP64 (id 1) with 0-3 values, other ids, and truncated or overlong ones."""
    out = b""
    for _ in range(draw(st.integers(0, 3))):
        field_id = draw(st.sampled_from([1, 1, 0x5455, 7, 0x7075]))
        body = b"".join(struct.pack("<Q", draw(st.integers(0, 2**64 - 1))) for _ in range(draw(st.integers(0, 3))))
        size = len(body) + draw(st.sampled_from([0, 0, 0, 1, -1, 8]))
        out += struct.pack("<HH", field_id, max(size, 0)) + body
    return out + draw(st.sampled_from([b"", b"", b"\x01", b"\x01\x00\x10"]))


@st.composite
def directories(draw: st.DrawFn) -> tuple[bytes, int, int, int]:
    """A file whose central directory holds random records (and maybe slack): (file, offset, size, total)."""
    body = draw(st.binary(min_size=0, max_size=64)) * draw(st.integers(1, 40))
    records = b""
    count = draw(st.integers(1, 6))
    for _ in range(count):
        name = draw(
            st.sampled_from([b"archive/data.pkl", b"archive/data/0", b"a/b\x00c", b"x/", b"a\\b", b"a/\xe4"])
        ) + draw(st.binary(max_size=3))
        extra = draw(extras())
        method, flags, time = draw(st.sampled_from([0, 8, 12])), draw(st.sampled_from([0, 8, 0x2000, 0x800])), 0
        disk = draw(st.sampled_from([0, 0, 0, 1, 2, 0xFFFF]))
        records += struct.pack(
            "<4sHHHHHHIIIHHHHHII",
            b"PK\x01\x02",
            20,
            draw(st.sampled_from([20, 45, 63, 64, 0x0114])),  # zipfile refuses versions above 63
            flags,
            method,
            time,
            0,
            draw(st.integers(0, _U32)),
            draw(sizes),
            draw(sizes),
            len(name),
            len(extra),
            draw(st.sampled_from([0, 0, 5])),
            disk,
            0,
            draw(st.integers(0, _U32)),
            draw(sizes),
        )
        records += name + extra + b"c" * 5  # room for a comment the record may declare
    slack = draw(st.sampled_from([b"", b"PK\x01\x02" + b"\x00" * 42, b"\x00\x00\x00"]))
    total = count + draw(st.sampled_from([0, 0, 1]))  # one more than there are: the walk runs out
    cut = draw(st.integers(0, 8))
    directory = (records + slack)[: len(records + slack) - cut]
    return body + directory, len(body), len(directory), total


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=directories(), disk=st.sampled_from([0, 1]))
def test_central_directory_agrees(case: tuple[bytes, int, int, int], disk: int) -> None:
    data, offset, size, total = case

    def walk() -> object:
        reader = DirectoryReader(data, LIMITS)
        return reader.read_central_directory(offset, size, total, disk), reader.summarise()

    agree(walk)
    agree(lambda: DirectoryReader(memoryview(data)[::1], LIMITS).read_central_directory(offset, size, total, disk))


def _torch_like(members: list[tuple[str, bytes]]) -> bytes:
    out = BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in members:
            archive.writestr(name, data)
    return out.getvalue()


@pytest.mark.parametrize(
    "members",
    [
        [("archive/data.pkl", b"\x80\x02}q\x00."), ("archive/version", b"3\n"), ("archive/data/0", b"\0" * 64)],
        [("archive/data.pkl", b"N."), ("archive/DATA.pkl", b"\x80\x02cos\nsystem\n."), ("archive/version", b"3")],
        [("archive/data.pkl", b"N."), ("other/x", b""), ("archive/.data/version", b"99")],
    ],
)
def test_torch_archives_agree(members: list[tuple[str, bytes]]) -> None:
    native_zip(_torch_like(members))


def test_a_zip64_directory_agrees() -> None:
    """zipfile writes ZIP64 end records and extras when forced; torch reads them, and so must both cores."""
    out = BytesIO()
    with zipfile.ZipFile(out, "w", allowZip64=True) as archive:
        for name, data in [("archive/data.pkl", b"N."), ("archive/version", b"3")]:
            with archive.open(name, "w", force_zip64=True) as member:
                member.write(data)
    native_zip(out.getvalue())


# -- whole scans of the corpus --------------------------------------------------------------------------------
@pytest.mark.parametrize("sample", ALL, ids=[sample.id for sample in ALL])
def test_corpus_reports_agree(sample: object, tmp_path: Path) -> None:
    data = write(sample, tmp_path, tmp_path / "canary").read_bytes()  # type: ignore[arg-type]
    with pure_python():
        reference = scan_bytes(data)
    compiled = scan_bytes(data)
    assert compiled == reference  # findings with their evidence, errors, notes
    assert compiled.verdict.name == sample.expect.upper() or sample.expect != "malicious"  # type: ignore[attr-defined]


def test_a_failed_c_build_still_installs_the_pure_python_package(tmp_path: Path) -> None:
    """hatch_build.py: a compiler that fails (here LDSHARED=false) leaves a pure-Python wheel, not an error."""
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        env={**os.environ, "LDSHARED": "false"},
        timeout=600,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("picklewarden-*.whl")
    assert wheel.name.endswith("-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert "picklewarden/_native.py" in names and not [n for n in names if n.endswith((".so", ".pyd"))]


def test_cpython_differential_holds_on_the_pure_python_core() -> None:
    """tests/test_differential.py runs on the installed (compiled) core; here one seed of it on the reference."""
    from tests.test_differential import test_scanner_sees_every_import_and_call_cpython_reaches as differential

    with pure_python():
        differential(0)


def test_fuzz_targets_hold_on_the_pure_python_core() -> None:
    """tests/test_fuzz.py's targets (random and mutated inputs) on the reference; the compiled core runs there."""
    from tests.test_fuzz import test_targets_raise_only_scan_errors as targets

    with pure_python():
        for name in ("layout", "zip", "machine"):
            targets(name)


def test_entries_the_compiled_walk_builds_are_ordinary_entries() -> None:
    """Plain tensor records' entries are built in C: equal, hashable, frozen and replaceable like any other."""
    from picklewarden.containers.torchzip import open_torch_zip
    from picklewarden.containers.zipentry import _ENTRY_FIELDS

    assert (COMPILED is None) == (os.environ.get(_native.PURE_PYTHON_ENV, "") not in ("", "0"))
    data = _torch_like([("archive/data.pkl", b"\x80\x02}q\x00."), ("archive/data/0", b"\x00" * 8)])
    archive = open_torch_zip(data, LIMITS)
    built = archive.record("data/0")
    with pure_python():
        reference = open_torch_zip(data, LIMITS).record("data/0")
    assert built is not None and not built.local_read

    def fields(entry: object) -> dict[str, object]:
        return {name: getattr(entry, name) for name in _ENTRY_FIELDS}

    assert built == reference and fields(built) == fields(reference)
    # A plain member record's entry is built in C too, its local header read for the exact data offset.
    member = archive.record("data.pkl")
    with pure_python():
        member_reference = open_torch_zip(data, LIMITS).record("data.pkl")
    assert member is not None and member.local_read and fields(member) == fields(member_reference)
    rebuilt = built.replace()
    assert rebuilt == built and hash(rebuilt) == hash(built) and repr(rebuilt) == repr(built)
    assert fields(rebuilt) == fields(built) and set(_ENTRY_FIELDS) == set(type(built).__slots__)
    with pytest.raises(AttributeError):
        built.size = 1  # type: ignore[misc]


# -- searching a buffer in place ---------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(
    data=st.binary(max_size=200).map(lambda b: b.replace(b"Q", b"PK\x05\x06")),
    needle=st.sampled_from([b"PK\x05\x06", b"P", b"", b"\x05\x06\x00"]),
    start=st.integers(0, 220),
    end=st.integers(0, 220),
)
def test_find_bytes_is_bytes_find(data: bytes, needle: bytes, start: int, end: int) -> None:
    if COMPILED is None:
        assert os.environ.get(_native.PURE_PYTHON_ENV, "") not in ("", "0")
        return
    assert COMPILED.find_bytes(data, needle, start, end) == data.find(needle, start, end)


def test_find_bytes_searches_a_mapped_file_in_place(tmp_path: Path) -> None:
    path = tmp_path / "tail"
    path.write_bytes(b"\x00" * 70_000 + b"PK\x05\x06" + b"\x00" * 30)
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        expected = mapped.find(b"PK\x05\x06", 10, 70_010)
        assert expected == 70_000
        if COMPILED is not None:
            assert COMPILED.find_bytes(mapped, b"PK\x05\x06", 10, 70_010) == expected
            assert COMPILED.find_bytes(mapped, b"PK\x05\x06", 10, 70_003) == -1
            with pytest.raises(ValueError):
                COMPILED.find_bytes(mapped, b"PK", -1, 5)


def test_a_second_end_record_is_noted_by_both_cores() -> None:
    from picklewarden.containers.torchzip import open_torch_zip

    planted = b"\x80\x02}q\x00." + b"PK\x05\x06" + b"\x00" * 18  # an end-of-directory signature inside a member
    data = _torch_like([("archive/data.pkl", planted), ("archive/data/0", b"\x00" * 8)])
    notes = []
    for forced in (False, True):
        if forced:
            with pure_python():
                archive = open_torch_zip(data, LIMITS)
        else:
            archive = open_torch_zip(data, LIMITS)
        notes.append(sorted(a.code for a in archive.anomalies))
    assert "multiple-eocd" in notes[0] and notes[0] == notes[1]
