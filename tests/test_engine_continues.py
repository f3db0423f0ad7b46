"""The stand-in machine reads on wherever CPython reads on past a pure builtin's result (issue 12, class 9).

Each hostile sample puts a call result where the C unpickler demands a real value (REDUCE/NEWOBJ arguments
must be a tuple, STACK_GLOBAL's names an exact str), and the payload after that point. Each malicious
sample is verified to fire under real ``pickle.load`` in a subprocess (the corpus canary harness); each
benign twin really loads. The scanner must read every one to its STOP, find the payload at its offset, and
judge a name it could not compute as a dynamic import (PW102): the pickler never computes a name.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from picklewarden import DEFAULT_LIMITS
from picklewarden.pickle.program import Global
from picklewarden.pickle.pure import UNRESOLVED_MODULE, callee_entry, evaluate, is_unset
from picklewarden.pickle.pymachine import run_pickle_python
from picklewarden.scanner import analyse_bytes
from tests.asm import Asm
from tests.corpus import Sample, _sh
from tests.test_corpus_fires import _run


def _tuple_of(asm: Asm, *items: str) -> Asm:
    """``builtins.tuple([items...])`` on the stack: a real tuple only if the builtin really runs."""
    asm.global_("builtins", "tuple").empty_list()
    for item in items:
        asm.text(item).append()
    return asm.tuple1().reduce()


def _sink(asm: Asm, c: Path | None) -> Asm:
    """The payload: os.system(touch canary), or a harmless OrderedDict() in a benign twin."""
    if c is None:
        return asm.global_("collections", "OrderedDict").empty_tuple().reduce().pop()
    return asm.global_("os", "system").text(_sh(c)).tuple1().reduce().pop()


def _reduce_args_from_tuple(c: Path | None) -> bytes:
    # collections.OrderedDict(*tuple([[]])): the stand-in machine used to stop here ("argument list must be
    # a tuple"), never reading the payload after it.
    asm = Asm(proto=2).global_("collections", "OrderedDict")
    asm.global_("builtins", "tuple").empty_list().empty_list().append().tuple1().reduce().reduce().pop()
    return _sink(asm, c).none().stop().bytes()


def _reduce_args_unresolved_tuple(c: Path | None) -> bytes:
    # collections.OrderedDict(*tuple(collections.OrderedDict())): the inner result is a stand-in, so tuple's
    # value is unknown; a real-tuple stand-in must still let REDUCE through.
    asm = Asm(proto=2).global_("collections", "OrderedDict").global_("builtins", "tuple")
    asm.global_("collections", "OrderedDict").empty_tuple().reduce().tuple1().reduce().reduce().pop()
    return _sink(asm, c).none().stop().bytes()


def _newobj_ex_kwargs_from_dict(c: Path | None) -> bytes:
    # OrderedDict.__new__(OrderedDict, *(), **dict([])): NEWOBJ_EX demands a real dict of keywords.
    asm = Asm(proto=4).global_("collections", "OrderedDict").empty_tuple()
    asm.global_("builtins", "dict").empty_list().tuple1().reduce().newobj_ex().pop()
    return _sink(asm, c).none().stop().bytes()


def _newobj_ex_kwargs_unresolved(c: Path | None) -> bytes:
    # OrderedDict.__new__(OrderedDict, *(), **dict(OrderedDict())): the dict's value is not computed.
    asm = Asm(proto=4).global_("collections", "OrderedDict").empty_tuple().global_("builtins", "dict")
    asm.global_("collections", "OrderedDict").empty_tuple().reduce().tuple1().reduce().newobj_ex().pop()
    return _sink(asm, c).none().stop().bytes()


def _stack_global_joined(c: Path | None) -> bytes:
    # getattr(str, "join")("", ["o", "s"]) builds the module name of the payload's STACK_GLOBAL.
    asm = Asm(proto=4).global_("builtins", "getattr").global_("builtins", "str").text("join").tuple2().reduce()
    asm.text("").empty_list().text("o").append().text("s").append().tuple2().reduce()
    if c is None:
        return asm.pop().none().stop().bytes()
    return asm.text("system").stack_global().text(_sh(c)).tuple1().reduce().pop().none().stop().bytes()


def _stack_global_replaced(c: Path | None) -> bytes:
    # builtins.str.replace("colXlections", "X", "") == "collections", a module name STACK_GLOBAL takes.
    asm = Asm(proto=4).global_("builtins", "str.replace").text("colXlections").text("X").text("").tuple3().reduce()
    asm.text("OrderedDict").stack_global().empty_tuple().reduce().pop()
    return _sink(asm, c).none().stop().bytes()


def _stack_global_unresolved(c: Path | None) -> bytes:
    # bytes.decode(base64.b64decode("b3M=")) == "os": b64decode is not evaluated, so the module name is
    # unknown; os.getcwd() through it runs nothing visible, the payload after it does.
    asm = Asm(proto=4).global_("builtins", "bytes.decode")
    asm.global_("base64", "b64decode").text("b3M=").tuple1().reduce().tuple1().reduce()
    asm.text("getcwd").stack_global().empty_tuple().reduce().pop()
    return _sink(asm, c).none().stop().bytes()


CASES = {
    "reduce-args-tuple": _reduce_args_from_tuple,
    "reduce-args-unresolved-tuple": _reduce_args_unresolved_tuple,
    "newobj-ex-kwargs-dict": _newobj_ex_kwargs_from_dict,
    "newobj-ex-kwargs-unresolved": _newobj_ex_kwargs_unresolved,
    "stack-global-joined": _stack_global_joined,
    "stack-global-replaced": _stack_global_replaced,
    "stack-global-unresolved": _stack_global_unresolved,
}
SAMPLES = [
    Sample(
        f"{name}-{kind}",
        "diff:engine",
        f"{name}-{kind}.pkl",
        "pickle",
        kind,
        lambda c, m=make, k=kind: m(c if k == "malicious" else None),
    )
    for name, make in CASES.items()
    for kind in ("malicious", "safe")
]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    base = tmp_path_factory.mktemp("continues")
    return {s.id: _run(s, base / s.id) for s in SAMPLES}


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.id)
def test_real_pickle_load(sample: Sample, outcomes: dict[str, object]) -> None:
    out = outcomes[sample.id]
    assert getattr(out, "returncode") == 0, getattr(out, "stderr")  # noqa: B009 - Outcome is the harness's
    assert getattr(out, "fired") is (sample.expect == "malicious")  # noqa: B009


@pytest.mark.parametrize("name", CASES)
def test_payload_after_the_point_is_found(name: str, tmp_path: Path) -> None:
    data = CASES[name](tmp_path / "canary")
    analysis = analyse_bytes(data)
    program = analysis.programs[0]
    assert program.complete and program.error is None and program.end == len(data)
    sinks = [f for f in analysis.findings if f.rule.startswith("PW1") and "system" in f.message]
    assert sinks, [(f.rule, f.message) for f in analysis.findings]
    sink = next(g for g in program.statements if isinstance(g, Global) and g.name == "system")
    assert sink.offset is not None and data[sink.offset : sink.offset + 1] in (b"c", b"\x93")
    assert any(f.offset is not None for f in sinks)
    assert analysis.report().verdict.label == "malicious"


@pytest.mark.parametrize("name", CASES)
def test_benign_twin_reads_to_the_end(name: str) -> None:
    data = CASES[name](None)
    analysis = analyse_bytes(data)
    program = analysis.programs[0]
    assert program.complete and program.error is None and program.end == len(data)
    label = analysis.report().verdict.label
    unresolved = [g for g in program.statements if isinstance(g, Global) and g.module == UNRESOLVED_MODULE]
    # A name computed by a call the machine could not evaluate is a dynamic import: no table can vouch for
    # what the victim imports there, and no pickler writes one.
    assert label == ("malicious" if unresolved else "safe"), [(f.rule, f.message) for f in analysis.findings]
    assert bool(unresolved) is any(f.rule == "PW102" for f in analysis.findings)


def test_computed_values_are_real_and_unresolved_names_are_marked(tmp_path: Path) -> None:
    joined = analyse_bytes(_stack_global_joined(tmp_path / "c")).programs[0]
    assert [(g.module, g.name) for g in joined.statements if isinstance(g, Global)][-1] == ("os", "system")
    opaque = analyse_bytes(_stack_global_unresolved(None)).programs[0]
    names = [(g.module, g.name) for g in opaque.statements if isinstance(g, Global)]
    assert (UNRESOLVED_MODULE, "<unresolved>.getcwd") in names
    calls = opaque.calls  # OrderedDict() is elided from the statements (a known-safe call, no arguments)
    assert len(calls) == 4  # b64decode, decode, the unresolved global's call, OrderedDict


def test_text_results_are_bounded_before_they_are_computed() -> None:
    # A memoized '' repeated 500k times joined by a 500k-character separator is 250 GB from a 1.5 MB pickle.
    join = callee_entry(Global(0, None, "builtins", "str.join", 4, "GLOBAL"), lambda v: None)
    assert join is not None and is_unset(evaluate(join[0], None, ("x" * 500_000, [""] * 500_000), None))
    replace = callee_entry(Global(0, None, "builtins", "str.replace", 4, "GLOBAL"), lambda v: None)
    assert replace is not None and evaluate(replace[0], None, ("oXs", "X", ""), None) == "os"
    assert is_unset(evaluate(replace[0], None, ("a" * 100_000, "a", "b" * 100_000), None))


@pytest.mark.parametrize("name", CASES)
def test_pure_python_reader_reads_on_too(name: str, tmp_path: Path) -> None:
    # joblib's pickle._Unpickler makes the same demands (exact str names, tuple arguments).
    data = CASES[name](tmp_path / "canary")
    program = run_pickle_python(data, 0, DEFAULT_LIMITS)
    assert program.complete and program.end == len(data)
    assert [(g.module, g.name) for g in program.globals][-1] == ("os", "system")


# -- differential: CPython with the real reviewed builtins reads to the end => the machine does too -----------
_REAL_BUILTINS_TRACER = """
import builtins, io, json, pickle, sys
REAL = {"tuple", "list", "getattr", "str", "bytes", "str.join", "str.upper", "bytes.decode"}

class Inert:
    def __init__(self, log):
        self.log = log
    def __call__(self, *args):
        self.log.append(["call"])
        return Inert(self.log)

class Tracer(pickle.Unpickler):
    def find_class(self, module, name):
        self.log.append(["import", module, name])
        if module == "builtins" and name in REAL:
            value = builtins
            for part in name.split("."):
                value = getattr(value, part)
            return value
        return Inert(self.log)

out = []
for blob in json.load(sys.stdin):
    tracer = Tracer(io.BytesIO(bytes.fromhex(blob)))
    tracer.log = []
    try:
        tracer.load()
        tracer.log.append(["end"])
    except Exception as exc:
        tracer.log.append(["error", type(exc).__name__])
    out.append(tracer.log)
json.dump(out, sys.stdout)
"""


def _block(asm: Asm, rng: random.Random) -> Asm:
    """One statement that leaves the stack as it found it, through a pure builtin or plainly."""
    module, name = rng.choice(["mod", "pkg.sub"]), rng.choice(["f", "g"])
    kind = rng.randrange(6)
    if kind == 0:  # mod.f(*tuple([...]))
        asm.global_(module, name).global_("builtins", "tuple").empty_list().text("a").append().tuple1()
        return asm.reduce().reduce().pop()
    if kind == 1:  # STACK_GLOBAL(getattr(str, 'join')('', [...]), name)
        asm.global_("builtins", "getattr").global_("builtins", "str").text("join").tuple2().reduce().text("")
        asm.empty_list()
        for part in (module[:1], module[1:]):
            asm.text(part).append()
        return asm.tuple2().reduce().text(name).stack_global().empty_tuple().reduce().pop()
    if kind == 2:  # STACK_GLOBAL(bytes.decode(b'...'), str.upper('...')): a dotted builtin name
        asm.global_("builtins", "bytes.decode").short_binbytes(module.encode()).tuple1().reduce()
        asm.global_("builtins", "str.upper").text(name).tuple1().reduce()
        return asm.stack_global().empty_tuple().reduce().pop()
    if kind == 3:  # mod.f(*list([...])): both machines refuse a list as arguments
        asm.global_(module, name).global_("builtins", "list").empty_list().tuple1().reduce()
        return asm.reduce().pop()
    if kind == 4:  # getattr('', 'join') bound to a real str
        asm.global_("builtins", "getattr").text("-").text("join").tuple2().reduce()
        asm.empty_list().text(module).append().tuple1().reduce().text(name).stack_global().pop()
        return asm
    return asm.global_(module, name).text("x").tuple1().reduce().pop()


def test_reads_on_wherever_cpython_reads_on() -> None:
    rng = random.Random(12)
    blobs = []
    for _ in range(120):
        asm = Asm(proto=4)
        for _ in range(rng.randint(1, 5)):
            _block(asm, rng)
        blobs.append(asm.none().stop().bytes())
    done = subprocess.run(
        [sys.executable, "-c", _REAL_BUILTINS_TRACER],
        input=json.dumps([b.hex() for b in blobs]),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    ended = 0
    for blob, log in zip(blobs, json.loads(done.stdout), strict=True):
        for reader in ("c", "python"):
            if reader == "c":
                program = analyse_bytes(blob).programs[0]
            else:
                program = run_pickle_python(blob, 0, DEFAULT_LIMITS)
            ours = [[g.module, g.name] for g in program.statements if isinstance(g, Global)]
            theirs = [e[1:] for e in log if e[0] == "import"]
            assert ours[: len(theirs)] == theirs, (reader, blob)
            if log[-1] == ["end"]:
                assert program.complete and program.end == len(blob), (reader, blob, program.error)
        ended += log[-1] == ["end"]
    assert 20 <= ended < len(blobs), ended  # both outcomes occur, so the comparison compares something
