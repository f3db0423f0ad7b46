"""Issue 12, engine and code side: each view a loader takes of a file, checked against that loader.

- Every sample of :mod:`tests.engine_samples` runs under its real loader in a fresh interpreter (the
  hostile ones create a canary file, the benign ones load), and scans as claimed.
- The pure-Python view is differential-tested against ``pickle._Unpickler`` itself on random and mutated
  pickles (hypothesis): the same imports, calls and BUILDs in the same order, stopping at the same point.
- Unit checks for the code reviewer, the GraphModule judgement, vouching, EXT codes and storages.
"""

from __future__ import annotations

import collections
import copyreg
import datetime
import functools
import importlib.util
import io
import math
import pickle
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from picklewarden import DEFAULT_LIMITS, scan
from picklewarden.codereview import dangerous, fx_review
from picklewarden.model import Severity
from picklewarden.pickle import opcodes as op
from picklewarden.pickle.program import CallHow, CallResult, Global, Mutation, Op
from picklewarden.pickle.pymachine import run_pickle_python
from picklewarden.scanner import analyse_bytes
from tests.asm import Asm
from tests.container_samples import Case, _joblib, write
from tests.engine_samples import ALL, MALICIOUS
from tests.test_containers import Outcome, _run_loader


def _have(case: Case) -> bool:
    return all(importlib.util.find_spec(name) is not None for name in case.needs)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    base = tmp_path_factory.mktemp("engine-views")
    jobs = []
    for case in ALL:
        if not _have(case):
            continue
        workdir = base / case.id
        workdir.mkdir()
        canary = workdir / "canary"
        jobs.append((case.id, write(case, workdir, canary), canary, case.loader))
    return _run_loader(jobs, frozenset(case.id for case in MALICIOUS))


@pytest.mark.parametrize("case", ALL, ids=lambda c: c.id)
def test_sample_behaves_as_claimed_under_its_real_loader(case: Case, outcomes: dict[str, Outcome]) -> None:
    for name in case.needs:
        pytest.importorskip(name)
    out = outcomes[case.id]
    if case.expect == "malicious":
        assert out.fired, f"{case.id}: the payload did not run under {case.loader}\n{out.stderr}"
    else:
        assert out.returncode == 0, f"{case.id}: {case.loader} failed to load a benign sample\n{out.stderr}"
        assert not out.fired


@pytest.mark.parametrize("case", ALL, ids=lambda c: c.id)
def test_scan_verdict(case: Case, tmp_path: Path) -> None:
    for name in case.needs:
        pytest.importorskip(name)
    canary = tmp_path / "canary"
    (report,) = scan(write(case, tmp_path, canary)).files
    shown = [(f.rule, f.severity.label, f.message) for f in report.findings]
    assert report.verdict.label == case.expect, (shown, report.errors)
    assert not canary.exists()
    if case.expect == "safe":
        assert report.errors == () and all(f.severity is Severity.INFO for f in report.findings), shown


# -- what each view reports --------------------------------------------------------------------------------


def _findings(data: bytes) -> list[tuple[str, str]]:
    return [(f.rule, f.message) for f in analyse_bytes(data).findings]


def test_python_view_names_where_the_unpicklers_part(tmp_path: Path) -> None:
    found = _findings(Asm(2).op("FLOAT", b"1_0\n").pop().global_("posix", "system").text("id").tuple1().reduce()
                      .stop().bytes())  # fmt: skip
    rules = [rule for rule, _ in found]
    assert "PW309" in rules and "PW300" in rules
    assert any(rule == "PW100" and "pickle._Unpickler" in message for rule, message in found)


def test_a_literal_only_python_accepts_without_a_payload_is_no_threat() -> None:
    report = analyse_bytes(Asm(2).op("FLOAT", b"1_0\n").stop().bytes()).report()
    assert {f.rule for f in report.findings} == {"PW300"}  # pickle.load fails; joblib.load reads 10.0


def test_legacy_whole_module_save_is_read_to_the_end() -> None:
    pytest.importorskip("torch")
    from tests.engine_samples import legacy_sequential

    analysis = analyse_bytes(legacy_sequential(Path("unused")))
    assert analysis.format == "torch-legacy"
    assert len(analysis.programs) == 5 and all(p.complete and p.error is None for p in analysis.programs)
    module_calls = [
        s
        for s in analysis.programs[3].statements
        if isinstance(s, CallResult) and isinstance(s.callee, Global) and s.callee.name == "Sequential"
    ]
    assert module_calls and module_calls[0].how is CallHow.NEW  # the class from the 'module' persistent id


def test_frozen_torchscript_storages_live_in_constants() -> None:
    torch = pytest.importorskip("torch")
    module = torch.jit.freeze(torch.jit.script(torch.nn.Sequential(torch.nn.Linear(3, 4)).eval()))
    buf = io.BytesIO()
    torch.jit.save(module, buf)
    report = analyse_bytes(buf.getvalue()).report()
    assert not [f for f in report.findings if f.rule == "PW306"] and report.verdict.label == "safe"


def test_a_missing_constants_storage_is_still_reported() -> None:
    torch = pytest.importorskip("torch")
    from tests.engine_samples import _rewrite_zip

    module = torch.jit.freeze(torch.jit.script(torch.nn.Sequential(torch.nn.Linear(3, 4)).eval()))
    buf = io.BytesIO()
    torch.jit.save(module, buf)
    broken = _rewrite_zip(buf.getvalue(), rename=lambda n: n.replace("/constants/0", "/constants/x"))
    messages = [f.message for f in analyse_bytes(broken).findings if f.rule == "PW306"]
    assert any("no constants/0 entry" in m for m in messages), messages


# -- vouching ---------------------------------------------------------------------------------------------


def _wrapper_method_call() -> bytes:
    """A canonical joblib array, then a call of one of the wrapper class's methods."""
    pytest.importorskip("joblib")
    np = pytest.importorskip("numpy")
    data = _joblib({"a": np.arange(3.0)})
    assert data.endswith(b".")
    extra = Asm(4, framed=False).pop().short_binunicode("joblib.numpy_pickle").short_binunicode(
        "NumpyArrayWrapper.read_mmap").stack_global().none().none().tuple2().reduce().stop().bytes()  # fmt: skip
    return data[:-1] + extra[2:]


def test_a_method_of_a_vouched_class_is_a_call_like_any_other() -> None:
    found = analyse_bytes(_wrapper_method_call()).findings
    symbols = {f.symbol for f in found}
    assert "joblib.numpy_pickle.NumpyArrayWrapper.read_mmap" in symbols, symbols  # judged by what it is
    assert not any(f.symbol == "joblib.numpy_pickle.NumpyArrayWrapper" for f in found)


def test_the_wrapper_called_with_arguments_is_not_vouched() -> None:
    pytest.importorskip("joblib")
    np = pytest.importorskip("numpy")
    data = _joblib({"a": np.arange(3.0)})
    extra = Asm(4, framed=False).pop().short_binunicode("joblib.numpy_pickle").short_binunicode(
        "NumpyArrayWrapper").stack_global().none().tuple1().reduce().stop().bytes()  # fmt: skip
    found = analyse_bytes(data[:-1] + extra[2:]).findings
    assert any(f.symbol == "joblib.numpy_pickle.NumpyArrayWrapper" for f in found)


def test_a_look_alike_wrapper_class_is_not_vouched() -> None:
    found = analyse_bytes(
        Asm(2)
        .global_("evil_pkg.numpy_pickle", "NumpyArrayWrapper")
        .empty_tuple()
        .newobj()
        .empty_dict()
        .build()
        .stop()
        .bytes()
    ).findings
    assert any(f.symbol == "evil_pkg.numpy_pickle.NumpyArrayWrapper" for f in found)


# -- EXT codes ----------------------------------------------------------------------------------------------


def test_python_view_resolves_ext_codes_without_touching_copyregs_cache() -> None:
    copyreg.add_extension("posix", "system", 0x7A51)
    try:
        data = Asm(2).op("EXT2", (0x7A51).to_bytes(2, "little")).text("id").tuple1().reduce().stop().bytes()
        program = run_pickle_python(data, 0, DEFAULT_LIMITS)
        assert [(g.module, g.name) for g in program.globals] == [("posix", "system")]
        assert program.extensions == [(2, 0x7A51)] and program.complete
        assert 0x7A51 not in copyreg._extension_cache  # type: ignore[attr-defined]
    finally:
        copyreg.remove_extension("posix", "system", 0x7A51)


# -- the code reviewer -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("def f(self, x):\n    (torch.save)(x, 'p')\n", "torch.save"),
        ("def f(self, x):\n    s = torch.save\n    s(x, 'p')\n", "torch.save"),
        ("def f(self, x):\n    getattr(torch, 'from_file')('p', False, 4)\n", "torch.from_file"),
        ("def f(self, x):\n    return torch.ops.aten.save\n", "torch.ops.aten.save"),
        ("def f(self, x):\n    ops.aten.from_file('p')\n", "ops.aten.from_file"),
        ("import torch as t\ndef f(self, x):\n    t.save(x, 'p')\n", "torch.save"),
        ("from torch import save as keep\ndef f(self, x):\n    keep(x, 'p')\n", "torch.save"),
        ("def f(self, x):\n    torch.jit.load('m.pt')\n", "torch.jit.load"),
        ("import os\ndef f(self):\n    os.system('id')\n", "os.system"),
        ("def f(self):\n    torch.ops.vendor.op()\n", "torch.ops.vendor.op"),
    ],
)
def test_reviewer_resolves_every_spelling(source: str, name: str) -> None:
    issues = dangerous(source)
    assert issues is not None and name in {i.name for i in issues}, issues
    assert all(i.text for i in issues)


def test_reviewer_leaves_parameters_and_torch_ops_alone() -> None:
    source = "def forward(self, input, open):\n    return torch.relu(input) + open.save(input)\n"
    assert dangerous(source) == []


def _fx_function(x):  # type: ignore[no-untyped-def]  # fx would render string annotations into its code
    import torch

    y = torch.flatten(x, 1)[:, :4]
    return torch.nn.functional.softmax(y * 2.0 + y.sum(), dim=-1), y.shape[0], math.pi


def test_fx_generated_code_passes_review() -> None:
    torch = pytest.importorskip("torch")
    nn = torch.nn
    models = (
        _fx_function,
        nn.Sequential(nn.Linear(3, 4), nn.ReLU()),
        nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.ModuleList([nn.Linear(4, 4)])[0], nn.Softmax(-1)),
    )
    for model in models:
        traced = torch.fx.symbolic_trace(model)
        _reducer, (body, import_block) = traced.__reduce__()
        assert fx_review(import_block + body["_code"]) == [], import_block + body["_code"]


@pytest.mark.parametrize(
    "extra",
    [
        "import subprocess\n",
        "from os import system\n",
        "x = eval('1')\n",
        "class C:\n    pass\n",
        "y = (lambda: 0)()\n",
        "z = torch.__class__\n",
        "try:\n    pass\nexcept Exception:\n    pass\n",
    ],
)
def test_anything_fx_does_not_generate_is_a_finding(extra: str) -> None:
    issues = fx_review("import torch\n" + extra + "def forward(self, x):\n    return torch.relu(x)\n")
    assert issues, extra


def test_unparseable_fx_code_keeps_the_code_execution_finding() -> None:
    pytest.importorskip("torch")
    found = analyse_bytes(
        Asm(2)
        .global_("torch.fx.graph_module", "reduce_graph_module")
        .empty_dict()
        .text("_code")
        .text("def (")
        .setitem()
        .text("import torch\n")
        .tuple2()
        .reduce()
        .stop()
        .bytes()
    ).findings
    assert any(f.rule == "PW101" for f in found)


# -- the pure-Python view against pickle._Unpickler -------------------------------------------------------


class _RefMeta(type):
    """Reference stand-ins for the differential: classes (as ours), logging what the unpickler does."""

    _log: list[tuple[str, ...]]

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        cls._log.append(("call",))
        return _ref(cls._log)

    def __setstate__(cls, state: Any) -> None:
        cls._log.append(("build",))

    def __setitem__(cls, key: Any, value: Any) -> None:
        pass

    def __setattr__(cls, name: str, value: Any) -> None:
        pass

    def append(cls, value: Any) -> None:
        pass

    def extend(cls, values: Any) -> None:
        list(values)

    def add(cls, value: Any) -> None:
        pass


class _RefBase(metaclass=_RefMeta):
    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        cls._log.append(("call",))
        return _ref(cls._log)


def _ref(log: list[tuple[str, ...]]) -> Any:
    return _RefMeta("ref", (_RefBase,), {"_log": log})


class _Reference(pickle._Unpickler):
    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data), fix_imports=True, encoding="latin1")
        self.log: list[tuple[str, ...]] = []
        # The library's BYTEARRAY8 allocates the length first; past the end it only ever reads to EOF.
        self.dispatch = dict(pickle._Unpickler.dispatch)  # type: ignore[misc]
        self.dispatch[pickle.BYTEARRAY8[0]] = _Reference._bytearray8

    def _bytearray8(self) -> None:
        length = int.from_bytes(self.read(8), "little")
        if length > 1 << 20:
            raise pickle.UnpicklingError("too long for this test")
        buf = bytearray(length)
        self.readinto(buf)
        self.append(buf)

    def find_class(self, module: str, name: str) -> Any:
        self.log.append(("import", module, name))
        return _ref(self.log)


def _reference(data: bytes) -> tuple[list[tuple[str, ...]], bool]:
    ref = _Reference(data)
    try:
        ref.load()
    except Exception:  # noqa: BLE001 - how far it got is what is compared
        return ref.log, False
    return ref.log, True


def _ours(data: bytes) -> tuple[list[tuple[str, ...]], bool]:
    program = run_pickle_python(data, 0, DEFAULT_LIMITS)
    events: list[tuple[str, ...]] = []
    for stmt in program.statements:
        if isinstance(stmt, Global):
            events.append(("import", stmt.module, stmt.name))
            at = stmt.offset
            assert at is not None and (data[at] in op.IMPORTS or at in dict(program.extensions))
        elif isinstance(stmt, CallResult) and stmt.how is not CallHow.SETSTATE:
            events.append(("call",))
            assert stmt.offset is not None and data[stmt.offset] in op.CALLS
        elif isinstance(stmt, Mutation) and stmt.op is Op.BUILD:
            events.append(("build",))
            assert stmt.offset is not None and data[stmt.offset] == op.BUILD
    return events, program.complete


_SNIPPETS = [
    b"F1_0\n0",
    b"I1_000\n0",
    b"L1_0L\n0",
    b"I010\n0",
    b"F 2.5 \n0",
    b"p4294967295\n",
    b"r\xf0\xff\xff\xff",
    b"\x82\x05",
    b"cos\nsystem\n]S'x'\naR0",
    b"cbuiltins\nlen\n(]tR0",
    b"(dp0\nS'a'\nI1\nS'b'\ns0",
]

_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8) | st.binary(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=4), inner, max_size=3)
        | st.builds(collections.OrderedDict, st.dictionaries(st.text(max_size=3), inner, max_size=2))
    ),
    max_leaves=12,
)
_with_globals = st.sampled_from(
    [
        collections.OrderedDict(a=1),
        datetime.date(2024, 1, 2),
        functools.partial(print, 1),
        collections.Counter("aab"),
        {1: datetime.timedelta(days=1)},
    ]
)


@st.composite
def _pickles(draw: st.DrawFn) -> bytes:
    value = draw(st.one_of(_values, _with_globals, st.tuples(_values, _with_globals)))
    data = bytearray(pickle.dumps(value, protocol=draw(st.integers(0, 5))))
    for _ in range(draw(st.integers(0, 3))):
        pos = draw(st.integers(0, len(data)))
        kind = draw(st.integers(0, 3))
        if kind == 0 and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif kind == 1:
            data[pos:pos] = draw(st.sampled_from(_SNIPPETS))
        elif kind == 2:
            del data[pos : pos + draw(st.integers(1, 4))]
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=3))
    return bytes(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_pickles())
def test_python_view_matches_pickle_unpickler(data: bytes) -> None:
    theirs, their_end = _reference(data)
    ours, our_end = _ours(data)
    assert ours == theirs, data
    assert our_end == their_end, data


# -- the C machine against CPython on a stream that needs a class from a persistent id -------------------


class _TorchLegacyReference(pickle.Unpickler):
    """The C unpickler with inert globals and torch's legacy persistent_load ('module' ids return the class)."""

    def __init__(self, stream: io.BufferedReader) -> None:
        super().__init__(stream, encoding="latin1")
        self.log: list[tuple[str, ...]] = []

    def find_class(self, module: str, name: str) -> Any:
        self.log.append(("import", module, name))
        return _ref(self.log)

    def persistent_load(self, pid: Any) -> Any:
        return pid[1] if pid[0] == "module" else _ref(self.log)


def test_legacy_whole_module_pickles_match_cpython() -> None:
    pytest.importorskip("torch")
    from tests.engine_samples import legacy_sequential

    data = legacy_sequential(Path("unused"))
    stream = io.BufferedReader(io.BytesIO(data))  # type: ignore[arg-type]
    analysis = analyse_bytes(data)
    for program in analysis.programs:
        reference = _TorchLegacyReference(stream)
        reference.load()  # CPython reads every one of the five pickles to its STOP
        ours = [
            ("import", s.module, s.name) if isinstance(s, Global) else ("call",) if isinstance(s, CallResult)
            else ("build",)
            for s in program.all_statements()  # the lean recording's elided calls put back in place
            if isinstance(s, (Global, CallResult)) or (isinstance(s, Mutation) and s.op is Op.BUILD)
        ]  # fmt: skip
        assert ours == reference.log and program.complete and program.end == stream.tell()


@pytest.mark.parametrize("make", ["fx_traced_benign", "legacy_sequential"])
def test_traced_and_legacy_whole_models_convert_to_their_state_dict(make: str, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    from picklewarden.extract.converting import convert
    from tests import engine_samples

    src, dst = tmp_path / "model.pt", tmp_path / "model.safetensors"
    src.write_bytes(getattr(engine_samples, make)(tmp_path / "canary"))
    convert(src, dst)
    expected = torch.load(src, weights_only=False).state_dict()
    written = safetensors_torch.load_file(str(dst))
    assert written.keys() == expected.keys()
    assert all(torch.equal(written[name], expected[name]) for name in expected)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_pickles())
def test_scanner_sees_every_import_joblib_load_reaches(data: bytes) -> None:
    """Whatever ``pickle._Unpickler`` imports from a raw stream, the scan's C view or its pure-Python view
    names in the same order (the pure-Python view is only skipped where it cannot get further)."""
    theirs = [event[1:] for event in _reference(data)[0] if event[0] == "import"]
    analysis = analyse_bytes(data)
    if not analysis.programs:
        assert analysis.report().verdict.label != "safe"
        return
    views = [analysis.programs[0], *(p for p in analysis.programs if p.reader)]
    assert any([(g.module, g.name) for g in view.globals][: len(theirs)] == theirs for view in views), data


def test_a_plain_judged_callable_that_returns_a_class_is_followed_like_cpython() -> None:
    """enum.Enum is a known-safe reconstructor, yet its functional API returns a class, which NEWOBJ then
    instantiates: CPython reads on to the payload, and so must the machine (no cheap stand-in refused)."""
    enum_member = Asm(2).global_("enum", "Enum").text("Color").text("RED").tuple2().reduce()
    tail = enum_member.binint1(1).tuple1().newobj().pop().global_("posix", "system").text("id").tuple1().reduce()
    data = tail.stop().bytes()
    assert pickle.loads(data.replace(b"posix\nsystem", b"builtins\nlen")) == 2  # CPython reads to STOP
    analysis = analyse_bytes(data)
    assert analysis.programs[0].complete and analysis.programs[0].error is None
    assert any(f.rule == "PW100" for f in analysis.findings)


def test_joblib_walk_resolves_ext_codes_without_touching_copyregs_cache() -> None:
    pytest.importorskip("joblib")
    np = pytest.importorskip("numpy")
    data = _joblib({"a": np.arange(3.0)})
    extra = Asm(2).pop().op("EXT2", (0x7A52).to_bytes(2, "little")).text("id").tuple1().reduce().stop().bytes()
    copyreg.add_extension("posix", "system", 0x7A52)
    try:
        report = analyse_bytes(data[:-1] + extra[2:]).report()
        assert 0x7A52 not in copyreg._extension_cache  # type: ignore[attr-defined]
    finally:
        copyreg.remove_extension("posix", "system", 0x7A52)
    assert report.format == "joblib" and {"PW108", "PW100"} <= {f.rule for f in report.findings}
