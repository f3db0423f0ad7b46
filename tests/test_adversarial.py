"""Adversarial generator: random but valid wrappers around a known sink stay `malicious`, and still fire.

Hypothesis composes how the sink is named (text GLOBAL, STACK_GLOBAL fed by any string opcode, memo round
trips, Python-2 names, dotted springboards, import_module+getattr laundering), how it is called (REDUCE,
INST, OBJ), what surrounds it (benign noise, marks, frames, a discarded result) and how the stream ends
(clean, broken tail, stacked pickles). Each composition is checked twice: the scanner calls it malicious,
and CPython's real unpickler, in a subprocess, really creates the canary.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from picklewarden import Verdict, scan_bytes
from tests.asm import Asm

CANARY_NAME = "adversarial-canary"


@dataclass(frozen=True)
class Plan:
    proto: int
    naming: str
    string_op: str
    call: str
    noise: int
    discard: bool
    tail: str


def _string(asm: Asm, op: str, value: str) -> Asm:
    match op:
        case "short_binunicode":
            return asm.short_binunicode(value)
        case "binunicode":
            return asm.binunicode(value)
        case "binunicode8":
            return asm.binunicode8(value)
        case "unicode":
            return asm.unicode(value)
        case "string":
            return asm.string(value)
        case _:
            return asm.binstring(value)


def _push_callable(asm: Asm, plan: Plan, module: str, name: str) -> Asm:
    """Leave the sink callable on the stack, named the way the plan says."""
    match plan.naming:
        case "global":
            return asm.global_(module, name)
        case "stack_global":
            return _string(_string(asm, plan.string_op, module), plan.string_op, name).stack_global()
        case "memo":
            asm.global_(module, name).binput(7).pop()
            return asm.none().pop().binget(7)
        case "py2":
            return asm.global_("__builtin__", "exec") if plan.proto < 3 else asm.global_(module, name)
        case "dotted":
            return asm.global_("shutil", f"os.{name}") if module in ("os", "posix") else asm.global_(module, name)
        case _:  # laundering: getattr(import_module('os'), name)
            asm.global_("builtins", "getattr")
            asm.global_("importlib", "import_module").short_binunicode("os").tuple1().reduce()
            return asm.short_binunicode(name).tuple2().reduce()


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    proto = draw(st.integers(min_value=0, max_value=5))
    naming = draw(st.sampled_from(["global", "stack_global", "memo", "py2", "dotted", "launder"]))
    if naming == "dotted":
        proto = max(proto, 4)  # the unpickler walks dotted names only from protocol 4
    string_ops = ["short_binunicode", "binunicode", "binunicode8", "unicode", "string", "binstring"]
    return Plan(
        proto=proto,
        naming=naming,
        string_op=draw(st.sampled_from(string_ops)),
        call=draw(st.sampled_from(["reduce", "obj"] + (["inst"] if naming == "global" else []))),
        noise=draw(st.integers(min_value=0, max_value=4)),
        discard=draw(st.booleans()),
        tail=draw(st.sampled_from(["clean", "garbage", "truncated", "stacked"])),
    )


def build(plan: Plan, canary: Path) -> bytes:
    exec_source = f"open({str(canary)!r}, 'w').close()"
    if plan.naming == "py2":
        module, name, arg = "builtins", "exec", exec_source
    else:
        module, name, arg = "os", "system", f"touch {canary}"
    asm = Asm(proto=plan.proto if plan.proto >= 2 else None)
    for i in range(plan.noise):  # benign noise the payload hides in
        asm.mark().binint1(i).short_binunicode("w").list_().pop()
    if plan.call == "inst":
        asm.mark().short_binunicode(arg).inst(module, name)
    elif plan.call == "obj":
        asm.mark()
        _push_callable(asm, plan, module, name).short_binunicode(arg).obj()
    else:
        _push_callable(asm, plan, module, name).short_binunicode(arg).tuple1().reduce()
    if plan.discard:
        asm.pop().none()
    match plan.tail:
        case "garbage":
            asm.raw(b"\xff\xfe garbage")
        case "truncated":
            asm.raw(b"X\xff\xff\x00\x00abc")
        case "stacked":
            asm.stop().raw(Asm(proto=2).binint1(1).stop().bytes())
        case _:
            asm.stop()
    return asm.bytes()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=plans())
def test_random_compositions_stay_malicious_and_really_fire(
    plan: Plan, tmp_path_factory: pytest.TempPathFactory
) -> None:
    tmp_path = tmp_path_factory.mktemp("adversarial")  # fresh per example: canaries must not leak across
    canary = tmp_path / CANARY_NAME
    data = build(plan, canary)
    report = scan_bytes(data)
    assert report.verdict is Verdict.MALICIOUS, (plan, [(f.rule, f.message) for f in report.findings])
    assert not canary.exists()
    path = tmp_path / "sample.pkl"
    path.write_bytes(data)
    loader = f"import pickle\ntry:\n    pickle.load(open({str(path)!r}, 'rb'))\nexcept Exception:\n    pass\n"
    subprocess.run([sys.executable, "-c", loader], timeout=60, cwd=tmp_path, capture_output=True)
    assert canary.exists(), f"sample does not fire under pickle.load: {plan}"
