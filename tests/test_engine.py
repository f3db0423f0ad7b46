"""The pickle machine reads exactly what CPython reads, and stays bounded on hostile input."""

from __future__ import annotations

import collections
import io
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from picklewarden import DEFAULT_LIMITS, Verdict, scan_bytes
from picklewarden.pickle.machine import node_of, run_pickle
from picklewarden.pickle.names import remap
from picklewarden.pickle.program import CallResult, Global

_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | st.binary()
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=5), inner, max_size=5)
        | st.frozensets(st.integers(), max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=150, deadline=None)
@given(value=_values, protocol=st.integers(min_value=0, max_value=5))
def test_plain_data_is_rebuilt_exactly_as_cpython_rebuilds_it(value: object, protocol: int) -> None:
    data = pickle.dumps(value, protocol=protocol)
    program, _ = run_pickle(data, 0, DEFAULT_LIMITS)
    assert program.complete and program.error is None
    assert _concrete(program.result) == pickle.loads(data)  # our own bytes: the reference reading
    assert program.end == len(data)


# Old protocols spell bytes, sets and frozensets as calls of these globals; rebuild them to compare.
_REBUILD = {
    ("_codecs", "encode"): lambda text, encoding: text.encode(encoding),
    ("builtins", "bytes"): bytes,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
}


def _concrete(value: object) -> object:
    node = node_of(value)
    if isinstance(node, CallResult) and isinstance(node.callee, Global):
        callee = node.callee
        module, name, _ = remap(callee.module, callee.name, callee.protocol)
        return _REBUILD[(module, name)](*(_concrete(a) for a in node.args))
    if isinstance(value, list):
        return [_concrete(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_concrete(v) for v in value)
    if isinstance(value, dict):
        return {_concrete(k): _concrete(v) for k, v in value.items()}
    if isinstance(value, frozenset):
        return frozenset(_concrete(v) for v in value)
    return value


def _globals_in(data: bytes) -> list[tuple[str, str]]:
    """Globals CPython's unpickler looks up, in order (our own benign bytes, so a real load is fine)."""
    seen: list[tuple[str, str]] = []

    class Tracer(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> object:
            seen.append((module, name))
            return super().find_class(module, name)

    Tracer(io.BytesIO(data)).load()
    return seen


@pytest.mark.parametrize("protocol", range(6))
def test_every_global_the_stream_names_is_imported_in_order(protocol: int) -> None:
    value = {"od": collections.OrderedDict(a=1), "dd": collections.defaultdict(list), "c": complex(1, 2)}
    data = pickle.dumps(value, protocol=protocol)
    program, _ = run_pickle(data, 0, DEFAULT_LIMITS)
    seen = [(g.module, g.name) for g in program.statements if isinstance(g, Global)]
    # The C unpickler memoizes nothing for GLOBAL lookups itself: one find_class per import opcode.
    assert seen == _globals_in(data)
    offsets = [g.offset for g in program.statements if isinstance(g, Global)]
    assert all(offset is not None and data[offset] in b"c\x93" for offset in offsets)


@pytest.mark.parametrize(
    ("name", "data", "resource"),
    [
        ("memo-bomb", b"\x80\x02K\x01r\xff\xff\xff\x7f.", "memo index"),
        ("huge-bytes8-length", b"\x80\x04\x8e" + (2**63 - 1).to_bytes(8, "little") + b"xx.", None),
        ("frame-past-end", b"\x80\x04\x95" + (2**40).to_bytes(8, "little") + b"K\x01.", None),
        ("negative-binstring", b"\x80\x02T\xff\xff\xff\xffabc.", None),
    ],
)
def test_hostile_lengths_are_findings_not_allocations(name: str, data: bytes, resource: str | None) -> None:
    report = scan_bytes(data)
    assert report.verdict is not Verdict.SAFE
    rules = {f.rule for f in report.findings}
    assert ("PW301" if resource else "PW300") in rules


def test_opcode_limit_turns_into_a_finding() -> None:
    data = b"\x80\x04" + b"N0" * 5000 + b"N."
    limits = DEFAULT_LIMITS.replace(max_opcodes=1000)
    from picklewarden.scanner import analyse_bytes

    analysis = analyse_bytes(data, limits=limits)
    assert any(f.rule == "PW301" and "opcodes" in f.message for f in analysis.findings)
    assert analysis.report().verdict is not Verdict.SAFE


def test_deep_nesting_is_read_without_recursion() -> None:
    depth = 200_000
    data = b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b"."
    report = scan_bytes(data)
    assert report.errors == ()
    assert all(f.rule == "PW302" for f in report.findings) or not report.findings


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="max_opcodes"):
        DEFAULT_LIMITS.replace(max_opcodes=0)


def test_billion_laughs_through_the_memo_stays_bounded() -> None:
    """Each level is a list of ten references to the previous one: 10**40 leaves, a few hundred bytes."""
    data = bytearray(b"\x80\x02X\x03\x00\x00\x00lolq\x00")
    for level in range(1, 41):
        data += b"(" + b"h" + bytes([level - 1]) + (b"h" + bytes([level - 1])) * 9 + b"lq" + bytes([level])
    # a call of an unknown global (outside the closed stdlib/numpy/torch world) whose argument is the whole structure
    data += b"cmylib\nshow\n(h\x28tR."
    from picklewarden.scanner import analyse_bytes

    analysis = analyse_bytes(bytes(data))
    report = analysis.report()
    assert report.verdict is Verdict.SUSPICIOUS  # an unknown callable is called, nothing worse
    cap = DEFAULT_LIMITS.max_render_chars + 4  # each rendered statement is capped (plus an ellipsis marker)
    calls = [f for f in report.findings if f.rule == "PW201"]
    assert calls and all(len(line) <= cap for f in calls for line in f.evidence.splitlines())
    assert len("\n".join(line for _, line in analysis.judges[0].decompiler.lines())) < 100_000


def test_time_limit_is_a_finding(monkeypatch: pytest.MonkeyPatch) -> None:
    import picklewarden.pickle.layout as layout_module

    ticks = iter(range(0, 10**9, 1000))
    monkeypatch.setattr(layout_module.time, "monotonic", lambda: float(next(ticks)))
    report = scan_bytes(b"\x80\x04" + b"N0" * 70_000 + b"N.")
    assert any(f.rule == "PW301" and "seconds" in f.message for f in report.findings)
    assert report.verdict is not Verdict.SAFE


def test_a_set_of_stand_ins_reads_the_same_in_every_scan() -> None:
    """A set iterates in hash order and a stand-in hashes by its address: the evidence lists the members in
    an order of their own, or the same file gives a different report each time (31 of 40 scans differed)."""
    members = b"".join(b"cbuiltins\nlen\n(X\x01\x00\x00\x00" + bytes([97 + i]) + b"tR" for i in range(6))
    data = b"\x80\x04cposix\nsystem\n(" + members + b"K\x05K\x90M\x00\x01\x91\x85R."
    evidence = {next(f.evidence for f in scan_bytes(data).findings if f.rule == "PW100") for _ in range(40)}
    assert len(evidence) == 1
    assert evidence.pop().endswith("system(frozenset({5, 144, 256, _var2, _var4, _var6, _var8, _var10, _var12}))")
