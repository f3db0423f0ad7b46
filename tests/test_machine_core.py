"""The machine's compiled callbacks (``_speedups_machine.h``) against the Python recorder they replace.

With the C core, a storage's ``persistent_load`` and the call of an elided reconstructor (once per tensor
in a state dict) run in C; every other case, and the first call of each callee, runs the Python methods.
``PICKLEWARDEN_PURE_PYTHON=1`` (or ``pure_python()``) runs the Python recorder alone, which is the
reference: both must record the same statements, elided calls, errors and results, and give the same
reports. The ``native-machine`` fuzz target (fuzz/targets.py) makes the same comparison on random and
mutated pickles, here through tests/test_fuzz.py and under atheris with ``fuzz/run.py native-machine``.
"""

from __future__ import annotations

import gc
import io
import pickle
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from picklewarden import DEFAULT_LIMITS
from picklewarden.limits import Limits
from picklewarden.pickle import machine, stream
from picklewarden.pickle.layout import Layout, scan_layout
from picklewarden.pickle.program import CallHow, ElidedCall, Global, Persistent, Program
from picklewarden.pickle.standins import Value, inert, value_standin
from picklewarden.scanner import analyse_bytes
from tests import engine_samples
from tests.asm import Asm
from tests.test_lean_recording import (
    _LATER,
    _NOT_INERT,
    _corpus_cases,
    _ordered_dict,
    _rebuild,
    _state_dict,
    _storage,
)
from tests.test_native import pickles

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "fuzz"))
from targets import COMPILED, agree, machine_facts, program_facts, pure_python


def _compiled() -> bool:
    """Whether the compiled callbacks are in use; on a pure-Python run (no skip: CI fails skips), that the
    machine then has no compiled recorder at all."""
    if COMPILED is None:
        assert machine._FastRecorder is None and "pure-Python" in machine._native.core_name()
        return False
    return True


def _facts(data: bytes) -> object:
    """The whole analysis as both cores must give it: the report and every program's records."""
    analysis = analyse_bytes(data)
    programs = [program_facts(p) for p in analysis.programs]
    return analysis.report(), programs


def _samples() -> list[tuple[str, Callable[[Path], bytes], tuple[str, ...]]]:
    return _corpus_cases() + [(c.id, c.make, c.needs) for c in engine_samples.ALL]


def test_every_sample_is_recorded_alike_by_both_cores(tmp_path: Path) -> None:
    elided = 0
    for name, make, needs in _samples():
        for module in needs:
            pytest.importorskip(module)
        data = make(tmp_path / "canary")
        agree(lambda data=data: _facts(data))  # type: ignore[misc]
        elided += sum(len(p.elided) for p in analyse_bytes(data).programs)
        assert not (tmp_path / "canary").exists(), name
    assert elided >= 100  # the comparison covered real elisions


_EXTRAS: dict[str, Callable[[Asm], Asm]] = {
    **_NOT_INERT,
    "none": lambda a: a.none(),
    "float": lambda a: a.binfloat(0.5),
    "the lowest 64-bit int": lambda a: a.long1(-(1 << 63)),
    "one past the highest 64-bit int": lambda a: a.long1(1 << 63),
    "nested tuple with a bool": lambda a: a.binint1(1).binint1(2).tuple2().newtrue().tuple2(),
    "a tuple four levels deep": lambda a: a.binint1(0).tuple1().tuple1().tuple1().tuple1(),
    "another elided call": _ordered_dict,
    "a storage": _storage,
}


@pytest.mark.parametrize("push", _EXTRAS.values(), ids=_EXTRAS.keys())
@pytest.mark.parametrize("lean", [True, False], ids=["lean", "full"])
def test_state_dicts_with_every_kind_of_argument_agree(push: Callable[[Asm], Asm], lean: bool) -> None:
    data = _state_dict(push, tensors=3)
    for limits in (DEFAULT_LIMITS, DEFAULT_LIMITS.replace(max_program_statements=7)):
        agree(lambda limits=limits: machine_facts(data, 0, limits, lean=lean))  # type: ignore[misc]


def test_the_unpicklers_own_errors_read_the_same() -> None:
    """Found by the native-machine target: READONLY_BUFFER on a stand-in class fails with a message naming
    the stand-in's metaclass, which the compiled one must share with the Python one."""
    data = Asm(5).global_("types", "FunctionType").readonly_buffer().stop().bytes()
    facts = agree(lambda: machine_facts(data, 0, DEFAULT_LIMITS))
    assert "required, not " in str(facts) and "FastStandin" not in str(facts)


@pytest.mark.parametrize("then", _LATER.values(), ids=_LATER.keys())
def test_results_the_stream_operates_on_agree(then: Callable[[Asm], Asm]) -> None:
    asm = Asm(2).empty_list()
    _rebuild(asm).append()
    _ordered_dict(asm)
    then(asm)
    data = asm.append().stop().bytes()
    agree(lambda: machine_facts(data, 0, DEFAULT_LIMITS))
    agree(lambda: _facts(data))


def test_other_persistent_ids_and_a_broken_tail_agree() -> None:
    asm = Asm(2).empty_list()
    asm.mark().text("module").global_("torch.nn", "Linear").tuple2().binpersid().append()  # legacy whole-module id
    asm.binint1(7).binpersid().append()  # not a tuple
    asm.mark().text("storage").tuple_().binpersid().append()  # too short for a storage, still a storage id
    asm.mark().short_binbytes(b"storage").binint1(1).tuple2().binpersid().append()  # bytes, not text
    _rebuild(asm).append()
    data = asm.bytes() + b"\xff"  # no STOP: an invalid opcode after the payload
    for lean in (True, False):
        agree(lambda lean=lean: machine_facts(data, 0, DEFAULT_LIMITS, lean=lean))  # type: ignore[misc]


def test_the_python_recorder_runs_only_for_the_first_call_of_each_callee(monkeypatch: pytest.MonkeyPatch) -> None:
    """Per tensor, nothing but C: the Python methods see each callee once (to decide it is elided)."""
    if not _compiled():
        return
    seen: list[str] = []
    real_call, real_persistent = machine.Recorder.call, machine.Recorder.persistent_load

    def call(self: machine.Recorder, callee: Any, *rest: Any) -> Any:
        seen.append(getattr(callee, "name", "?"))
        return real_call(self, callee, *rest)

    def persistent_load(self: machine.Recorder, pid: Any) -> Any:
        seen.append("persistent_load")
        return real_persistent(self, pid)

    monkeypatch.setattr(machine.Recorder, "call", call)
    monkeypatch.setattr(machine.Recorder, "persistent_load", persistent_load)
    # As torch.save writes it: each global imported once and fetched from the memo for every tensor.
    asm = Asm(2).global_("torch._utils", "_rebuild_tensor_v2").binput(0).pop()
    asm.global_("collections", "OrderedDict").binput(1).pop().global_("torch", "FloatStorage").binput(2).pop()
    asm.empty_dict()
    for index in range(50):
        asm.text(f"t{index}").binget(0).mark()
        asm.mark().text("storage").binget(2).text(str(index)).text("cpu").binint1(2).tuple_().binpersid()
        asm.binint1(0).binint1(2).tuple1().binint1(1).tuple1().newfalse().binget(1).empty_tuple().reduce()
        asm.tuple_().reduce().setitem()
    program = machine_facts(asm.stop().bytes(), 0, DEFAULT_LIMITS)
    assert sorted(seen) == ["OrderedDict", "_rebuild_tensor_v2"]
    assert len(program[1]) == 100  # type: ignore[index]


def _fast_recorder(lean: bool = True) -> tuple[Any, Global]:
    assert machine._FastRecorder is not None
    program = Program(member="", start=0, index=0)
    recorder = machine._FastRecorder(program, Layout(start=0, cut=0), 0, DEFAULT_LIMITS, lambda c: True, lean=lean)
    callee = Global(recorder._new_id(), 0, "collections", "OrderedDict", 2, "GLOBAL")
    recorder.elide_by_callee[callee.id] = True
    return recorder, callee


_scalars = (
    st.integers(-(1 << 65), 1 << 65)
    | st.sampled_from([-(1 << 63), (1 << 63) - 1, 1 << 63, -(1 << 63) - 1])
    | st.floats()
    | st.booleans()
    | st.none()
    | st.text(max_size=3)
    | st.binary(max_size=3)
    | st.sampled_from(["elided", "storage", "global", "call"])  # stand-ins of each kind of node (see below)
)
_arguments = st.lists(st.recursive(_scalars, lambda inner: st.tuples(inner) | st.tuples(inner, inner), max_leaves=8))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=_arguments)
def test_the_compiled_inertness_check_is_the_python_one(values: list[Any]) -> None:
    if not _compiled():
        return
    recorder, callee = _fast_recorder()
    nodes = {
        "elided": ElidedCall(90, None, callee, (), None, CallHow.CALL, "REDUCE", 0),
        "storage": Persistent(91, None, ("storage",)),
        "global": callee,
        "call": machine.CallResult(92, None, callee, (), None, CallHow.CALL, "REDUCE"),
    }

    def standins(value: Any) -> Any:
        if type(value) is tuple:
            return tuple(map(standins, value))
        return value_standin(nodes[value], recorder) if type(value) is str and value in nodes else value

    args = tuple(map(standins, values))
    made = recorder.fast_call(callee, args)
    assert (made is not None) == inert(args, 0)
    if made is not None:
        (call,) = recorder.elided
        assert made._pw_node is call and call.args is args and call.callee is callee


def test_the_compiled_call_leaves_everything_else_to_python() -> None:
    if not _compiled():
        return
    recorder, callee = _fast_recorder()
    assert recorder.fast_call(Global(50, 0, "a", "b", 2, "GLOBAL"), ()) is None  # not asked about yet
    recorder.elide_by_callee[callee.id] = False
    assert recorder.fast_call(callee, ()) is None
    full, full_callee = _fast_recorder(lean=False)
    assert full.fast_call(full_callee, ()) is None  # a full recording keeps the statement
    assert (recorder.n_calls, recorder.next_id, recorder.elided, full.elided) == (0, 1, [], [])


def test_a_scan_is_freed_without_the_cyclic_collector() -> None:
    """Stand-in classes are in reference cycles with their recorder: released after the run, the program
    does not wait for a collection (which walks every object it holds)."""
    data = _state_dict(tensors=20)
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        analysis = analyse_bytes(data)
        assert analysis.programs and analysis.report().pickles == 1
        del analysis
        assert not [o for o in gc.get_objects() if type(o) is Program]
    finally:
        if was:
            gc.enable()
    assert gc.get_freeze_count() == 0


def test_the_collector_is_restored_after_a_scan_and_host_freezes_are_kept() -> None:
    assert gc.isenabled()
    gc.freeze()  # as a host that forks workers does
    try:
        frozen = gc.get_freeze_count()
        analyse_bytes(_state_dict(tensors=3))
        assert gc.isenabled() and gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
    analyse_bytes(_state_dict(tensors=3))
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_limits_abort_both_cores_at_the_same_statement() -> None:
    data = _state_dict(tensors=40)
    for most in (1, 2, 3, 50, 119, 120, 121):
        limits: Limits = DEFAULT_LIMITS.replace(max_program_statements=most)
        agree(lambda limits=limits: machine_facts(data, 0, limits))  # type: ignore[misc]
    with pure_python():
        assert "program statements" in str(machine_facts(data, 0, DEFAULT_LIMITS.replace(max_program_statements=50)))


# -- the machine's BytesIO peeks (pickle/stream.py) -------------------------------------------------------------
def _read_alike(data: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine reading ``data`` as torch's zip loader does, through a plain BytesIO and a peeking one."""
    runs = []
    for kind in (io.BytesIO, stream.PeekingBytesIO):
        monkeypatch.setattr(stream, "BYTES_STREAM", kind)
        for lean in (True, False):
            runs.append(machine_facts(data, 0, DEFAULT_LIMITS, lean=lean, file_like=False))
    assert runs[:2] == runs[2:]


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(data=pickles())
def test_a_peeking_bytesio_reads_what_a_plain_one_does(data: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    _read_alike(data, monkeypatch)


_PREFETCH = 8192 * 16  # _pickle.c's PREFETCH: what the unpickler asks peek for


@pytest.mark.parametrize("cut", [None, _PREFETCH - 3, _PREFETCH, _PREFETCH + 5, 2 * _PREFETCH + 1])
@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_reads_across_the_prefetch_boundary_agree(
    cut: int | None, protocol: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lines, counted arguments, frames and large buffers (read into place) that straddle a peeked chunk,
    whole and cut short there."""
    value = [("x" * 1000 + str(i), i, b"\0" * 700) for i in range(400)] + [b"\1" * (3 * _PREFETCH)]
    data = pickle.dumps(value, protocol=protocol)
    assert len(data) > 2 * _PREFETCH + 10
    _read_alike(data[:cut], monkeypatch)
    _read_alike(_state_dict(tensors=3000)[:cut], monkeypatch)


def _framed(*frames: bytes, tail: bytes = b"") -> bytes:
    return b"\x80\x04" + b"".join(b"\x95" + struct.pack("<Q", len(f)) + f for f in frames) + tail


_FRAME_CASES = {
    "STOP inside a frame, junk after it": _framed(b"N.N\x86\x94"),
    "an argument spilling past its frame": _framed(b"C\x05he", tail=b"llo."),
    "a text line spilling past its frame": _framed(b"I12", tail=b"3\n."),
    "STOP in the second of two frames": _framed(b"K\x01", b"K\x02\x86.K\x03"),
    "an empty frame": _framed(b"", tail=b"N."),
    "a frame longer than the stream": b"\x80\x04\x95" + struct.pack("<Q", 99) + b"N.",
    "BINBYTES8 read into place across a frame": _framed(b"\x8e" + struct.pack("<Q", 9) + b"abc", tail=b"defghi."),
    "a persistent id and a call in a frame, STOP after it": _framed(
        b"\x8c\x05torch\x8c\x0bFloatStorage\x93(\x8c\x07storage\x94h\x00\x8c\x010\x8c\x03cpuK\x02t\x94Q", tail=b"."
    ),
}


@pytest.mark.parametrize("data", _FRAME_CASES.values(), ids=_FRAME_CASES.keys())
def test_frames_read_alike_through_both_streams(data: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    _read_alike(data, monkeypatch)
    for cut in range(3, len(data)):
        _read_alike(data[:cut], monkeypatch)


def test_why_a_stream_that_runs_a_frame_is_not_peeked() -> None:
    """The reason the machine checks the layout for frames: through a peeking stream, a line running past its
    frame's end reads on; through torch's BytesIO it is read again from the frame's end."""
    data = _FRAME_CASES["a text line spilling past its frame"]
    assert pickle.Unpickler(io.BytesIO(data)).load() == 3
    assert pickle.Unpickler(stream.PeekingBytesIO(data)).load() == 123
    assert scan_layout(data, 0, DEFAULT_LIMITS).frame_end == 14
    assert scan_layout(_state_dict(tensors=3), 0, DEFAULT_LIMITS).frame_end == 0


def test_record_classes_the_c_side_cannot_fill_leave_the_python_recorder(monkeypatch: pytest.MonkeyPatch) -> None:
    """configure() refuses classes whose fields are not the object slots it fills (it checks each class's
    own descriptors: Python 3.10 gives a dataclass subclass its own copies of inherited slots); the machine
    then records in Python rather than failing to import."""
    if not _compiled():
        return

    class Refusing:
        def __getattr__(self, name: str) -> Any:
            return getattr(COMPILED, name)

        def configure(self, *args: object) -> None:
            raise TypeError("id is not an object slot")

    monkeypatch.setattr(machine._native, "speedups", Refusing())
    assert machine._fast_recorder() is None
    with pytest.raises(TypeError, match="not an object slot"):
        COMPILED.configure(Value, Persistent, Persistent, Global, CallHow.CALL, machine._OPNAMES, None)
    # Refused whole: the last configuration still records (and records alike).
    agree(lambda: machine_facts(_state_dict(tensors=5), 0, DEFAULT_LIMITS))
