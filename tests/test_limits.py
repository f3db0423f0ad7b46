"""Every resource limit, hit by a crafted input: a finding (or, for the two presentation bounds, visibly
shortened evidence), a verdict that is never ``safe``, and no crash.

The table is checked against :class:`picklewarden.Limits` itself, so a limit added without a case here
fails the suite. The large-scale versions (gigabyte bombs, 100k-entry archives, a million nested lists,
memo bombs) live beside the readers they attack; these cases use small limits on small inputs.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from picklewarden import Limits, Verdict, scan_bytes
from picklewarden.model import FileReport
from tests.asm import Asm

GOOD = pickle.dumps({"weights": [1.5, 2.5], "name": "x" * 40}, protocol=4)


def _unknown_call(argument_asm: Callable[[Asm], Asm]) -> bytes:
    return argument_asm(Asm(2).global_("acme_lib", "build")).tuple1().reduce().stop().bytes()


def _nested_lists(depth: int) -> Callable[[Asm], Asm]:
    def build(asm: Asm) -> Asm:
        for _ in range(depth):
            asm.raw(b"]")
        for _ in range(depth - 1):
            asm.raw(b"a")
        return asm

    return build


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buf.getvalue()


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _npy_header(padding: int) -> bytes:
    header = b"{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }" + b" " * padding + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + b"\0" * 8


def _nested_gzip(levels: int) -> bytes:
    data = GOOD
    for _ in range(levels):
        data = gzip.compress(data)
    return data


def _embedded_pickles(count: int) -> bytes:
    return pickle.dumps([pickle.dumps(OrderedDict(i=i), protocol=2) for i in range(count)], protocol=2)


@dataclass(frozen=True)
class Case:
    data: bytes
    name: str
    limits: dict[str, int]
    expect: str
    """Text that the report must contain (a finding's message or an error)."""
    finding: bool = True
    """False for presentation bounds: the evidence is shortened, no finding is raised."""


ZEROS = gzip.compress(b"\0" * (4 << 20))  # 4 MiB of zeros in about 4 KiB

CASES: dict[str, Case] = {
    "max_file_bytes": Case(GOOD, "a.pkl", {"max_file_bytes": 10}, "exceeds the 10-byte limit"),
    "max_pickle_bytes": Case(GOOD, "a.pkl", {"max_pickle_bytes": 20}, "pickle bytes limit 20 exceeded"),
    "max_opcodes": Case(b"\x80\x02" + b"N0" * 100 + b"N.", "a.pkl", {"max_opcodes": 50}, "opcodes limit 50"),
    "max_memo_index": Case(b"\x80\x02K\x01r\x88\x13\x00\x00.", "a.pkl", {"max_memo_index": 1000}, "memo index limit"),
    "max_pickles_per_stream": Case(
        b"".join(pickle.dumps(i, protocol=2) for i in range(10)), "a.pkl", {"max_pickles_per_stream": 3},
        "more than 3 pickles",
    ),
    "max_members": Case(
        _zip({"archive/data.pkl": GOOD, **{f"archive/data/{i}": b"\0" * 4 for i in range(10)}}), "m.pt",
        {"max_members": 5}, "members",
    ),
    "max_render_depth": Case(_unknown_call(_nested_lists(40)), "a.pkl", {"max_render_depth": 5}, "...",
                             finding=False),
    "max_render_chars": Case(_unknown_call(lambda a: a.text("y" * 500)), "a.pkl", {"max_render_chars": 60}, "...",
                             finding=False),
    "max_program_statements": Case(
        pickle.dumps([OrderedDict(a=i) for i in range(30)], protocol=2),
        "a.pkl", {"max_program_statements": 10}, "program statements limit 10",
    ),
    "max_nesting_depth": Case(_nested_gzip(5), "a.pkl.gz", {"max_nesting_depth": 2}, "nested deeper"),
    "max_archive_members": Case(
        _tar({f"m{i}.pkl": GOOD for i in range(6)}), "bundle.tar", {"max_archive_members": 2}, "members",
    ),
    "max_extracted_bytes": Case(ZEROS, "z.pkl.gz", {"max_extracted_bytes": 1 << 20}, "PW30"),
    "max_compression_ratio": Case(ZEROS, "z.pkl.gz", {"max_compression_ratio": 10, "ratio_floor_bytes": 1024},
                                  "expands more than 10:1"),
    "ratio_floor_bytes": Case(ZEROS, "z.pkl.gz", {"max_compression_ratio": 500, "ratio_floor_bytes": 64 << 10},
                              "expands more than 500:1"),
    "max_nested_payloads": Case(_embedded_pickles(6), "a.pkl", {"max_nested_payloads": 2},
                                "more than 2 embedded payloads"),
    "max_header_bytes": Case(_npy_header(200), "a.npy", {"max_header_bytes": 64}, "exceeds max_header_bytes"),
    "max_code_bytes": Case(
        _zip({"archive/data.pkl": GOOD, "archive/constants.pkl": pickle.dumps((), protocol=2),
              "archive/code/__torch__/m.py": b"def forward(self):\n    return 1\n" * 200}),
        "scripted.pt", {"max_code_bytes": 100}, "max_code_bytes",
    ),
    "max_seconds": Case(b"\x80\x04" + b"N0" * 70_000 + b"N.", "a.pkl", {"max_seconds": 1}, "seconds limit"),
}  # fmt: skip


def test_every_limit_has_a_case() -> None:
    assert set(CASES) == set(Limits._fields)


def _text(report: FileReport) -> str:
    parts = [f"{f.rule} {f.message}\n{f.evidence}" for f in report.findings]
    return "\n".join([*parts, *report.errors])


@pytest.mark.parametrize("name", sorted(CASES))
def test_limit_is_hit_without_a_crash(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    case = CASES[name]
    if name == "max_seconds":  # a clock that jumps a second per reading: the limit, not the machine, decides
        import picklewarden.pickle.layout as layout_module

        ticks = iter(range(10**9))
        monkeypatch.setattr(layout_module.time, "monotonic", lambda: float(next(ticks)))
    limits = Limits().replace(**case.limits)
    report = scan_bytes(case.data, case.name, limits)
    assert case.expect in _text(report), _text(report)
    if case.finding:
        assert report.verdict is not Verdict.SAFE
        assert report.errors or any(f.rule.startswith("PW30") for f in report.findings)
        # The same input within the default limits is not flagged for this limit.
        default = scan_bytes(case.data, case.name)
        assert _text(default).count(case.expect) < _text(report).count(case.expect)
    else:
        shortened = [f.evidence for f in report.findings if "..." in f.evidence]
        full = [f.evidence for f in scan_bytes(case.data, case.name).findings if f.rule == shortened_rule(report)]
        assert shortened and len(shortened[0]) < len(full[0])


def shortened_rule(report: FileReport) -> str:
    return next(f.rule for f in report.findings if "..." in f.evidence)
