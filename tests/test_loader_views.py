"""Issue 12, container side: every view a real loader takes of a file is judged.

Each sample in ``tests/loader_view_samples.py`` is loaded by its real loader in a fresh interpreter (the
malicious ones create their canary, the benign twins load cleanly), then scanned. Differential tests hold
the tar sniffing to ``tarfile`` and the ``.npy`` header parsing to numpy's own.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import tarfile
import tokenize
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tests.test_containers as harness
from picklewarden import Verdict, scan, scan_bytes
from picklewarden.containers.numpy_files import _VERSIONS, _Unreadable, parse_header
from picklewarden.containers.sniff import looks_like_tar, may_be_tar_checksum
from tests.container_samples import Case, write
from tests.loader_view_samples import ALL, MALICIOUS, _entries, central_flags

# -- every sample under its real loader, and its verdict -----------------------------------------------------


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, harness.Outcome]:
    base = tmp_path_factory.mktemp("views")
    jobs: list[harness.Job] = []
    for case in ALL:
        workdir = base / case.id
        workdir.mkdir()
        canary = workdir / "canary"
        jobs.append((case.id, write(case, workdir, canary), canary, case.loader))
    return harness._run_loader(jobs, frozenset(c.id for c in MALICIOUS))


@pytest.mark.parametrize("case", ALL, ids=lambda c: c.id)
def test_sample_behaves_as_claimed_under_its_real_loader(case: Case, outcomes: dict[str, harness.Outcome]) -> None:
    out = outcomes[case.id]
    detail = f"{case.id} under {case.loader}: exit {out.returncode}, canary {out.fired}\n{out.stderr}"
    # a malicious sample must fire (the loader may fail afterwards); a benign twin must load and touch nothing
    wanted = (out.returncode, True) if case.expect == "malicious" else (0, False)
    assert (out.returncode, out.fired) == wanted, detail


@pytest.mark.parametrize("case", ALL, ids=lambda c: c.id)
def test_scan_verdict(case: Case, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    (report,) = scan(write(case, tmp_path, canary)).files
    shown = [(f.rule, f.severity.label, f.member, f.message) for f in report.findings]
    assert report.verdict.label == case.expect, (shown, report.errors)
    assert not canary.exists(), "scanning must never run the payload"
    if case.expect != "malicious":
        assert report.errors == (), report.errors
        assert not any(f.rule.startswith("PW1") for f in report.findings), shown


def _scan(case_id: str, tmp_path: Path) -> tuple[list[tuple[str, str | None, str]], tuple[str, ...], tuple[str, ...]]:
    case = next(c for c in ALL if c.id == case_id)
    (report,) = scan(write(case, tmp_path, tmp_path / "canary")).files
    return [(f.rule, f.member, f.message) for f in report.findings], report.notes, report.errors


def test_npz_view_names_the_member_numpy_unpickles(tmp_path: Path) -> None:
    found, notes, _ = _scan("npz-view-torch-zip-npy-member", tmp_path)
    assert any(rule == "PW100" and member and "extra/stats.npy" in member for rule, member, _ in found), found
    assert any("numpy.load reads the archive as an npz" in note for note in notes)


def test_damage_is_reported_beside_the_content(tmp_path: Path) -> None:
    found, _, errors = _scan("npz-bad-crc-payload-first", tmp_path)
    rules = {rule for rule, _, _ in found}
    assert {"PW100", "PW310"} <= rules and errors == ()
    assert any("bad-crc" in message for rule, _, message in found if rule == "PW310")


@pytest.mark.parametrize("torch_zip", [False, True], ids=["npz", "torch-zip"])
@pytest.mark.parametrize("bits", [0x01, 0x20, 0x40], ids=["encrypted", "patch", "strong"])
def test_stored_member_with_refusal_flags_is_scanned_not_given_up(tmp_path: Path, bits: int, torch_zip: bool) -> None:
    """No common loader reads these (torch and zipfile both refuse the directory's flag), but the stored
    bytes are a plain pickle: the scan reads them, reports the flag, and does not fail closed."""
    report = scan_bytes(central_flags(bits, torch_zip)(tmp_path / "canary"), "locked.bin")
    assert report.verdict is Verdict.MALICIOUS and report.errors == (), report
    assert any(f.rule == "PW310" and "flags-ignored" in f.message for f in report.findings)


def test_member_no_reader_can_obtain_is_an_error() -> None:
    """Deflated data flagged encrypted that does not inflate: nobody gets the bytes, so the scan fails closed."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("model.pkl", pickle.dumps({"a": 1}) * 50)
    data = bytearray(buf.getvalue())
    for _name, central, local in _entries(data):
        data[central + 8] |= 1
        (name_len,) = struct.unpack_from("<H", data, local + 26)
        start = local + 30 + name_len
        data[start : start + 8] = bytes(x ^ 0x5A for x in data[start : start + 8])  # "encrypted" for real
    report = scan_bytes(bytes(data), "locked.zip")
    assert report.verdict is Verdict.ERROR, report


# -- class 10a: a directory walk judges text files by what pickle.load does with them -------------------


TEXTS = {
    "README": b"Nothing here yet. See the paper.\n",
    "requirements.txt": b"torch==2.0\nnumpy>=1.20\n",
    "notes.txt": b"Please read the notes before training.\n",
    "VERSION": b"I think 1.0\n",
    "LICENSE": b"MIT License\n\nCopyright (c) 2024\n",
    "todo.md": b"(1) retrain\n(2) publish\n",
}


def test_walk_skips_text_that_pickle_load_rejects_at_once(tmp_path: Path) -> None:
    for name, text in TEXTS.items():
        with pytest.raises((pickle.UnpicklingError, ValueError, EOFError)):  # the real loader fails on each ...
            pickle.loads(text)
        (tmp_path / name).write_bytes(text)
    evil = tmp_path / "payload.txt"  # ... while a protocol-0 payload named like text is still found
    evil.write_bytes(b"cposix\nsystem\n(S'true'\ntR.")
    reports = {Path(r.path).name: r for r in scan(tmp_path).files}
    assert all(reports[name].skipped for name in TEXTS), {n: r.verdict for n, r in reports.items()}
    assert reports["payload.txt"].verdict is Verdict.MALICIOUS


def test_walk_still_reads_a_payload_behind_64k_of_plain_protocol_0(tmp_path: Path) -> None:
    padding = pickle.dumps(list(range(20_000)), protocol=0)[:-1] + b"0"  # a list, then POP it
    assert len(padding) > 64 * 1024
    (tmp_path / "data.txt").write_bytes(padding + b"cposix\nsystem\n(S'true'\ntR.")
    (report,) = scan(tmp_path).files
    assert report.verdict is Verdict.MALICIOUS


def test_explicit_text_file_is_not_passed_as_safe(tmp_path: Path) -> None:
    path = tmp_path / "README"
    path.write_bytes(TEXTS["README"])
    (report,) = scan(str(path)).files
    assert not report.skipped and report.verdict is not Verdict.SAFE


# -- differential: tar sniffing against tarfile ----------------------------------------------------------


def _tarfile_opens(data: bytes) -> bool:
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            return tar.firstmember is not None or bool(tar.getmembers())
    except (tarfile.TarError, ValueError, EOFError, OSError):
        return False


def _header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    return info.tobuf(tarfile.USTAR_FORMAT)


_CHECKSUM_FORMS = st.sampled_from(["octal", "base256", "plus", "spaces", "underscore", "0o", "signed", "garbage"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40),
    size=st.integers(0, 2000),
    form=_CHECKSUM_FORMS,
    delta=st.sampled_from([0, 0, 0, 1, -1, 256]),
    flips=st.lists(st.tuples(st.integers(0, 511), st.integers(0, 255)), max_size=3),
)
def test_tar_sniffing_accepts_exactly_what_tarfile_opens(
    name: str, size: int, form: str, delta: int, flips: list[tuple[int, int]]
) -> None:
    block = bytearray(_header(name, size))
    for at, value in flips:
        if not 148 <= at < 156:
            block[at] = value
    block[148:156] = b" " * 8
    unsigned = sum(block) + delta
    signed = sum(x - 256 if x > 127 else x for x in block) + delta
    field = {
        "octal": b"%06o\0 " % unsigned,
        "base256": b"\x80" + unsigned.to_bytes(7, "big"),
        "plus": b"+%06o\0" % unsigned,
        "spaces": b" %06o " % unsigned,
        "underscore": (b"%07o" % unsigned)[:3] + b"_" + (b"%07o" % unsigned)[3:],
        "0o": b"0o%05o\0" % unsigned,
        "signed": (b"%07o\0" % signed) if signed >= 0 else b"\xff" + (signed % (1 << 56)).to_bytes(7, "big"),
        "garbage": b"12z4567\0",
    }[form]
    block[148:156] = field[:8].ljust(8, b"\0")
    data = bytes(block) + b"\0" * (512 * ((size + 511) // 512) + 1024)
    assert looks_like_tar(data) == _tarfile_opens(data), (form, delta, bytes(block[148:156]))


_SPACE = st.text(st.sampled_from(" \t\n\x0b\x0c\r\x1c\x1d\x1e\x1f"), max_size=2)
_OCTAL_FIELDS = st.tuples(
    _SPACE,
    st.sampled_from(["", "+", "-"]),
    st.sampled_from(["", "0o", "0O"]),
    st.lists(st.text(st.sampled_from("01234567"), min_size=1, max_size=3), min_size=1, max_size=3),
    _SPACE,
    st.binary(max_size=8),
).map(lambda p: (p[0] + p[1] + p[2] + "_".join(p[3]) + p[4]).encode() + b"\0" + p[5])
"""Checksum fields int(text, 8) takes in every spelling (whitespace, sign, prefix, underscores), then anything."""


@settings(max_examples=1000, deadline=None)
@given(field=st.binary(min_size=8, max_size=8) | _OCTAL_FIELDS.map(lambda f: f[:8].ljust(8, b"\0")))
def test_tar_precheck_refuses_only_checksum_fields_tarfile_refuses(field: bytes) -> None:
    """The check that spares importing tarfile is a necessary condition of tarfile's own field parse."""
    try:
        tarfile.nti(field)  # type: ignore[attr-defined]
    except tarfile.InvalidHeaderError:
        return  # tarfile refuses the header: either answer of the pre-check is right
    assert may_be_tar_checksum(field), field


def test_tar_with_base256_checksum_was_missed_by_the_old_rule() -> None:
    block = bytearray(_header("storages", 0))
    block[148:156] = b" " * 8
    block[148:156] = b"\x80" + sum(block).to_bytes(7, "big")
    data = bytes(block) + b"\0" * 1024
    assert _tarfile_opens(data) and looks_like_tar(data)


# -- differential: npy headers against numpy's parser ------------------------------------------------------

_SHAPE_ITEMS = st.sampled_from(["3", "+3", "-1", "0x10", "3L", "True", "1_0", "3.0", "(3,)", "2**4", "+ 2", "--2"])
_DESCRS = st.sampled_from(["'|O'", "'<f8'", "'O'", "[('a', '|O')]", "'<i4'", "('|O', (2,))", "'object'", "1"])
_ORDERS = st.sampled_from(["False", "True", "0", "None", "+False"])
_KEYSETS = st.sampled_from(
    [("descr", "fortran_order", "shape"), ("descr", "shape"), ("descr", "fortran_order", "shape", "x")]
)


@st.composite
def _header_texts(draw: st.DrawFn) -> str:
    items = draw(st.lists(_SHAPE_ITEMS, max_size=3))
    shape = "(" + ", ".join(items) + ("," if len(items) == 1 and draw(st.booleans()) else "") + ")"
    if draw(st.integers(0, 9)) == 0:
        shape = "[" + ", ".join(items) + "]"
    values = {"descr": draw(_DESCRS), "fortran_order": draw(_ORDERS), "shape": shape, "x": "1"}
    body = ", ".join(f"'{key}': {values[key]}" for key in draw(_KEYSETS))
    text = "{" + body + draw(st.sampled_from(["", ", ", ",}"]))[:2] + "}"
    return draw(st.sampled_from(["", " ", "\t"])) + text + draw(st.sampled_from(["", " " * 5, "\n", " #c\n"]))


def _numpy_reads(raw: bytes, version: tuple[int, int]) -> dict[str, object] | None:
    from numpy.lib import _format_impl

    stream = io.BytesIO(struct.pack(_VERSIONS[version][0], len(raw)) + raw)
    try:
        shape, order, dtype = _format_impl._read_array_header(stream, version, max_header_size=1 << 30)
    except (ValueError, TypeError, SyntaxError, OverflowError, tokenize.TokenError):
        return None  # numpy.load fails on the header
    return {"shape": shape, "fortran_order": order, "hasobject": dtype.hasobject}


@settings(max_examples=400, deadline=None)
@given(text=_header_texts(), version=st.sampled_from(sorted(_VERSIONS)))
def test_npy_header_parsing_matches_numpy(text: str, version: tuple[int, int]) -> None:
    import warnings

    raw = text.encode("latin1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy warns about Python-2 headers
        theirs = _numpy_reads(raw, version)
    try:
        ours = parse_header(raw, version)
    except _Unreadable:
        ours = None
    if theirs is None or ours is None:
        # numpy may still reject a header we accept when the dtype itself is invalid: never the reverse.
        assert ours is not None or theirs is None, (text, theirs)
        return
    assert ours["shape"] == theirs["shape"] and ours["fortran_order"] == theirs["fortran_order"], text


def test_unary_plus_header_was_an_error_before() -> None:
    header = parse_header(b"{'descr': '|O', 'fortran_order': False, 'shape': (+3,), }", (1, 0))
    assert header["shape"] == (3,)


def test_environment_keeps_loader_libraries() -> None:
    """The samples need numpy and torch: they are test dependencies, never skipped."""
    import numpy  # noqa: F401
    import torch  # noqa: F401

    assert os.environ.get("PYTHONHASHSEED", "") != "unset"


# -- differential: the literal reader against ast.literal_eval itself --------------------------------------

_ATOMS = st.sampled_from(
    [
        "3", "+3", "-3", "- 3", "--3", "+-3", "-(3)", "(-3)", "((3))", "0x1F", "0o17", "0b101", "1_000", "0_7", "007",
        "00", "1.5", "-.5e3", "1e5", "3j", "1+2j", "-1-2.5j", "2j+1", "1+2", "(1)+2j", "True", "False", "None",
        "-True", "...", "'a'", "b'a'", "'a' 'b'", "'a' b'b'", "r'\\d'", "'\\x41\\n'", "'\\q'", "u'x'", "f'x'",
        "'\\N{BULLET}'", "b'\\x00\\101'", "'''t'''", "set()", "set(1)", "x", "3L", "1__0", "'é'",
    ]
)  # fmt: skip


def _literal_texts() -> st.SearchStrategy[str]:
    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        items = st.lists(inner, max_size=3)
        sep = st.sampled_from([", ", ",", " ,\n ", ", # c\n"])
        return st.one_of(
            st.tuples(items, sep, st.booleans()).map(lambda t: "(" + t[1].join(t[0]) + ("," if t[2] else "") + ")"),
            st.tuples(items, sep).map(lambda t: "[" + t[1].join(t[0]) + "]"),
            st.tuples(items, sep).map(lambda t: "{" + t[1].join(t[0]) + "}"),
            st.tuples(st.lists(st.tuples(inner, inner), max_size=3), sep).map(
                lambda t: "{" + t[1].join(f"{k}: {v}" for k, v in t[0]) + "}"
            ),
            st.tuples(inner, inner).map(lambda t: f"{t[0]}, {t[1]}"),
        )

    core = st.recursive(_ATOMS, extend, max_leaves=8)
    return st.tuples(
        st.sampled_from(["", " ", "\t", "\n", "  "]), core, st.sampled_from(["", "\n", " # end", ","])
    ).map("".join)


@settings(max_examples=600, deadline=None)
@given(text=_literal_texts())
def test_literal_reader_matches_ast_literal_eval(text: str) -> None:
    import ast
    import warnings

    from picklewarden.containers.pyliteral import NotLiteral, literal_eval

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid escape sequences warn
        try:
            theirs: object = ast.literal_eval(text)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            theirs = NotLiteral
    try:
        ours: object = literal_eval(text)
    except NotLiteral:
        ours = NotLiteral
    assert repr(ours) == repr(theirs), text


def test_scanning_every_view_executes_and_compiles_nothing(tmp_path: Path) -> None:
    """The new readers (npz view, npy headers, lenient ZIP members, tar polyglots) run under the project's
    audit hook: no import, compile, exec, process or written file while the malicious samples are scanned."""

    import tests.test_never_execute as audit
    from tests.loader_view_samples import BENIGN

    canary = tmp_path / "canary"
    evil, warm = tmp_path / "evil", tmp_path / "warm"
    evil.mkdir()
    warm.mkdir()
    paths = [write(case, evil, canary) for case in MALICIOUS]
    for bits in (0x01, 0x20):
        path = evil / f"flags{bits}.npz"
        path.write_bytes(central_flags(bits, False)(canary))
        paths.append(path)
    for case in BENIGN:
        write(case, warm, canary)
    stdout, violations = audit._harness("scan", "none", warm, tmp_path / "log", paths, tmp_path)
    assert violations == []
    verdicts = json.loads(stdout.split("BEGIN\nVERDICTS", 1)[1].split("\n", 1)[0])
    assert verdicts.count("malicious") == len(paths), verdicts
    assert not canary.exists()


def test_a_huge_npy_header_is_not_parsed_but_the_pickle_behind_it_is(tmp_path: Path) -> None:
    """numpy.load(allow_pickle=True) has no header limit: a megabyte-sized header is skipped quickly here, and
    the pickle after it is still judged."""
    from tests.loader_view_samples import _object_npy

    npy = _object_npy(tmp_path / "canary")
    (length,) = struct.unpack_from("<H", npy, 8)
    header = b"{'descr': '|O', 'fortran_order': False, 'shape': (3,), }" + b" " * 200_000 + b"\n"
    data = b"\x93NUMPY\x02\x00" + struct.pack("<I", len(header)) + header + npy[10 + length :]
    report = scan_bytes(data, "big_header.npy")
    assert report.verdict is Verdict.MALICIOUS, report
    path = tmp_path / "big_header.npy"
    path.write_bytes(data)
    assert harness._load(path, "numpy", tmp_path / "canary", fires=True).fired, "numpy.load must run it"
