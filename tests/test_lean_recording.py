"""The lean recording (issue 16, "record less"): calls of known-safe reconstructors whose arguments are inert are
kept out of the program's statements, and nothing a rule, a report or ``show`` sees may change.

Each case compares a scan in the default (lean) recording with one in the full recording ``show`` uses: the
same report (verdict, findings, rule ids, offsets, evidence), the same statements once the elided calls are
put back, and the same decompiled listing. The hostile cases hide something in or behind a safe
reconstructor's call, where skipping the call would lose it.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from picklewarden import DEFAULT_LIMITS, Verdict, scanner
from picklewarden.cli import main
from picklewarden.limits import Limits
from picklewarden.pickle.program import CallResult, ElidedCall, Global, Program, Statement
from picklewarden.scanner import Analysis, analyse_bytes
from tests import container_samples, corpus
from tests.asm import Asm
from tests.loader_run import run_loader

_HAVE_TORCH = importlib.util.find_spec("torch") is not None
_LOAD_PICKLE = "import pickle, sys\nwith open(sys.argv[1], 'rb') as f:\n    pickle.load(f)\n"

Push = Callable[[Asm], Asm]


def _key(stmt: Statement) -> tuple[str, int | None, int | None]:
    return type(stmt).__name__, getattr(stmt, "id", None), stmt.offset


def _both(data: bytes, limits: Limits = DEFAULT_LIMITS) -> tuple[Analysis, Analysis]:
    """(lean, full) analyses of ``data``, checked to say exactly the same."""
    lean = analyse_bytes(data, limits=limits)
    full = analyse_bytes(data, limits=limits, full=True)
    assert lean.report() == full.report()
    assert len(lean.programs) == len(full.programs)
    for ours, theirs in zip(lean.programs, full.programs, strict=True):
        assert not theirs.elided
        assert [_key(s) for s in ours.all_statements()] == [_key(s) for s in theirs.statements]
        assert (repr(ours.error), ours.complete, ours.end) == (repr(theirs.error), theirs.complete, theirs.end)
    for ours_judge, their_judge in zip(lean.judges, full.judges, strict=True):
        assert ours_judge.decompiler.lines() == their_judge.decompiler.lines()
    return lean, full


def _storage(asm: Asm) -> Asm:
    """A torch storage persistent id, as torch.save writes it: ('storage', torch.FloatStorage, '0', 'cpu', 2)."""
    asm.mark().text("storage").global_("torch", "FloatStorage").text("0").text("cpu").binint1(2).tuple_()
    return asm.binpersid()


def _ordered_dict(asm: Asm) -> Asm:
    return asm.global_("collections", "OrderedDict").empty_tuple().reduce()


def _rebuild(asm: Asm, *extra: Push) -> Asm:
    """Push ``torch._utils._rebuild_tensor_v2(storage, 0, (2,), (1,), False, OrderedDict(), *extra)``."""
    asm.global_("torch._utils", "_rebuild_tensor_v2").mark()
    _storage(asm).binint1(0).binint1(2).tuple1().binint1(1).tuple1().newfalse()
    _ordered_dict(asm)
    for push in extra:
        push(asm)
    return asm.tuple_().reduce()


def _state_dict(*extra: Push, tensors: int = 1) -> bytes:
    asm = Asm(2).empty_dict()
    for index in range(tensors):
        asm.text(f"layer{index}.weight")
        _rebuild(asm, *extra)
        asm.setitem()
    return asm.stop().bytes()


def _rebuild_calls(program: Program) -> list[CallResult]:
    return [
        s
        for s in program.statements
        if isinstance(s, CallResult) and isinstance(s.callee, Global) and s.callee.name == "_rebuild_tensor_v2"
    ]


def test_a_tensor_rebuild_is_only_counted() -> None:
    lean, full = _both(_state_dict(tensors=3))
    (program,) = lean.programs
    assert not [s for s in program.statements if isinstance(s, CallResult)]
    assert program.elided_counts() == {("collections", "OrderedDict"): 3, ("torch._utils", "_rebuild_tensor_v2"): 3}
    assert len(full.programs[0].calls) == len(program.calls) == 6
    assert lean.report().verdict is Verdict.SAFE


_NOT_INERT: dict[str, Push] = {
    "bytes": lambda a: a.short_binbytes(b"\x80\x02cposix\nsystem\n"),
    "text": lambda a: a.text("cpu"),
    "list, which the stream can fill later": lambda a: a.empty_list(),
    "dict": lambda a: a.empty_dict(),
    "int wider than 64 bits": lambda a: a.long1(1 << 70),
    "a global": lambda a: a.global_("builtins", "len"),
    "a call of an unknown global": lambda a: a.global_("mymodule", "helper").empty_tuple().reduce(),
    "a tuple nested too deep": lambda a: a.binint1(0).tuple1().tuple1().tuple1().tuple1().tuple1().tuple1(),
    "a tuple holding bytes": lambda a: a.binint1(0).short_binbytes(b"x").tuple2(),
}


@pytest.mark.parametrize("push", _NOT_INERT.values(), ids=_NOT_INERT.keys())
def test_an_argument_that_is_not_inert_keeps_the_call(push: Push) -> None:
    lean, _ = _both(_state_dict(push))
    (program,) = lean.programs
    (call,) = _rebuild_calls(program)
    assert type(call) is CallResult and len(call.args) == 7
    assert [c.callee.name for c in program.elided] == ["OrderedDict"]  # its own inert call still is not kept


def test_inert_arguments_of_every_kind_are_elided() -> None:
    extras: list[Push] = [
        lambda a: a.none(),
        lambda a: a.binfloat(0.5),
        lambda a: a.long1(-(1 << 62)),
        lambda a: a.binint1(1).binint1(2).tuple2().newtrue().tuple2(),  # ((1, 2), True)
        _ordered_dict,  # the stand-in of another elided call
        _storage,
    ]
    lean, _ = _both(_state_dict(*extras))
    assert not _rebuild_calls(lean.programs[0])
    assert len(lean.programs[0].elided) == 3  # two OrderedDict() and the rebuild


def test_keyword_arguments_keep_the_call() -> None:
    data = Asm(4).global_("collections", "OrderedDict").empty_tuple().empty_dict().text("a").binint1(1)
    lean, _ = _both(data.setitem().newobj_ex().stop().bytes())
    (program,) = lean.programs
    assert not program.elided
    assert [s.kwargs for s in program.statements if isinstance(s, CallResult)] == [{"a": 1}]


_LATER: dict[str, Push] = {
    "BUILD": lambda a: a.empty_dict().text("k").binint1(1).setitem().build(),
    "SETITEM": lambda a: a.text("k").short_binbytes(b"v").setitem(),
    "APPEND": lambda a: a.binint1(1).append(),
    "a call of the result": lambda a: a.empty_tuple().reduce(),
}


@pytest.mark.parametrize("then", _LATER.values(), ids=_LATER.keys())
def test_a_result_the_stream_operates_on_is_put_back_in_place(then: Push) -> None:
    asm = Asm(2).empty_list()
    _rebuild(asm).append()  # elided, and stays so
    _ordered_dict(asm)
    then(asm)
    lean, _ = _both(asm.append().stop().bytes())
    (program,) = lean.programs
    kept = [s for s in program.statements if type(s) is ElidedCall]
    assert [c.callee.name for c in kept] == ["OrderedDict"]
    assert [c.callee.name for c in program.elided] == ["OrderedDict", "_rebuild_tensor_v2"]


def test_a_planted_setstate_on_an_elided_result_is_kept_and_judged() -> None:
    # argparse.Namespace() (known safe, no arguments) is elided until BUILD plants exec as its __setstate__.
    lean, _ = _both(corpus._build_setstate_injection(Path("canary")))
    (program,) = lean.programs
    assert not program.elided
    namespace = next(s for s in program.statements if isinstance(s, CallResult))
    assert type(namespace) is ElidedCall and namespace.callee.name == "Namespace"
    assert lean.report().verdict is Verdict.MALICIOUS
    assert {"PW101", "PW106"} <= {f.rule for f in lean.findings}


def test_a_pickle_in_bytes_among_reconstructor_arguments_is_found(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    inner = container_samples.system_pickle(canary)
    inner_path = tmp_path / "inner.pkl"
    inner_path.write_bytes(inner)
    returncode, stderr = run_loader(_LOAD_PICKLE, inner_path, "pickle", tmp_path, 60.0)
    assert returncode == 0 and canary.exists(), stderr  # the hidden bytes really are a working payload
    canary.unlink()
    lean, _ = _both(_state_dict(lambda a: a.binbytes(inner)))
    assert "PW308" in {f.rule for f in lean.findings}
    assert lean.report().verdict is Verdict.MALICIOUS  # dormant, but a sink keeps its weight
    assert not canary.exists()


@pytest.mark.skipif(not _HAVE_TORCH, reason="the sample is made with torch.save")
def test_a_sink_among_a_real_rebuild_calls_arguments_keeps_it() -> None:
    sample = next(s for s in corpus.MALICIOUS if s.id == "torch-zip-sink-in-safe-rebuild-args")
    lean, _ = _both(sample.make(Path("canary")))
    (program,) = lean.programs
    hidden = [c for c in _rebuild_calls(program) if len(c.args) == 7]
    assert len(hidden) == 1 and program.elided  # the model's own tensors are elided, the hostile one is not
    system = [f for f in lean.findings if f.symbol == "posix.system"]
    assert system and lean.report().verdict is Verdict.MALICIOUS


def test_elided_calls_count_against_the_statement_limit() -> None:
    limits = DEFAULT_LIMITS.replace(max_program_statements=50)
    lean, _ = _both(_state_dict(tensors=20), limits)
    (program,) = lean.programs
    assert program.error is not None and "program statements" in str(program.error)
    assert program.recorded == 50 and program.elided


def _corpus_cases() -> list[tuple[str, Callable[[Path], bytes], tuple[str, ...]]]:
    cases = [(s.id, s.make, ("torch",) if s.needs_torch else ()) for s in corpus.ALL]
    cases += [(c.id, c.make, c.needs) for c in container_samples.ALL]
    return cases


def test_every_corpus_sample_gets_the_same_report_in_both_recordings(tmp_path: Path) -> None:
    elided = 0
    for name, make, needs in _corpus_cases():
        for module in needs:
            pytest.importorskip(module)
        lean, _ = _both(make(tmp_path / "canary"))
        elided += sum(len(p.elided) for p in lean.programs)
        assert not (tmp_path / "canary").exists(), name
    assert elided >= 100  # the comparison covered real elisions


def test_show_lists_every_call_from_a_full_recording(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "weights.pkl"
    path.write_bytes(_state_dict(tensors=3))
    analysed: list[Analysis] = []

    def spy(*args: Any, **kwargs: Any) -> Analysis:
        analysed.append(real(*args, **kwargs))
        return analysed[-1]

    real = scanner.analyse_path
    monkeypatch.setattr(scanner, "analyse_path", spy)
    assert main(["show", str(path)]) == 0
    out = capsys.readouterr().out
    assert len(re.findall(r"= _rebuild_tensor_v2(?:_\d+)?\(", out)) == 3
    assert len(re.findall(r"= OrderedDict(?:_\d+)?\(\)", out)) == 3
    assert analysed and not [p for a in analysed for p in a.programs if p.elided]
