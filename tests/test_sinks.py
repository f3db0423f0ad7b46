"""Issue 14: an exploit through a gadget picklewarden once did not know is malicious, its benign twin safe.

Each sample of ``tests/sink_samples.py`` is first proven under its real loader, in its own interpreter in a
temporary directory (malicious ones create their canary; twins load cleanly and create nothing), then
scanned.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import picklewarden
from picklewarden.model import Verdict
from tests.sink_samples import CASES, Case, second_stage

ROOT = Path(__file__).resolve().parent.parent
LOADER = r"""
import pickle, sys
path, loader, second = sys.argv[1:4]
if loader == "torch":
    import torch
    torch.load(path, weights_only=False)
else:
    with open(path, "rb") as f:
        try:
            pickle.load(f)
        except Exception as exc:  # a payload may run and then make the load fail (get_type_hints)
            print(f"load raised after running: {type(exc).__name__}: {exc}", file=sys.stderr)
    if loader == "then-default":
        import torch
        try:
            torch.load(second)  # torch's default: weights_only=True
        except Exception as exc:
            print(f"weights-only load refused: {type(exc).__name__}", file=sys.stderr)
"""


def _run(case: Case, workdir: Path) -> tuple[int, bool, str]:
    workdir.mkdir(parents=True)
    canary = workdir / case.canary_name
    path = workdir / "sample.bin"
    path.write_bytes(case.make(canary))
    second = workdir / "second.pt"
    second.write_bytes(second_stage(canary))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", LOADER, str(path), case.loader, str(second)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return proc.returncode, canary.exists(), proc.stderr[-2000:]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, bool, str]]:
    base = tmp_path_factory.mktemp("sinks")
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {case.id: pool.submit(_run, case, base / case.id) for case in CASES}
        return {cid: f.result() for cid, f in futures.items()}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_sample_behaves_under_its_real_loader(case: Case, outcomes: dict[str, tuple[int, bool, str]]) -> None:
    returncode, fired, stderr = outcomes[case.id]
    if case.expect == "malicious":
        assert fired, f"{case.id}: canary not created (rc={returncode})\n{stderr}"
    else:
        assert returncode == 0, f"{case.id}: twin failed to load\n{stderr}"
        assert not fired, f"{case.id}: twin created the canary"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_sample_verdict(case: Case, tmp_path: Path) -> None:
    report = picklewarden.scan_bytes(case.make(tmp_path / case.canary_name), f"{case.id}.bin")
    described = "\n".join(f"{f.rule} {f.severity.name} {f.symbol}: {f.message}" for f in report.findings)
    if case.expect == "safe":
        assert report.verdict is Verdict.SAFE, described
        return
    assert report.verdict is Verdict.MALICIOUS, described
    assert any(
        f.symbol == case.symbol and Verdict.from_severity(f.severity) is Verdict.MALICIOUS for f in report.findings
    ), described


def test_every_gadget_class_has_a_malicious_sample_and_a_twin() -> None:
    classes = {c.gadget_class for c in CASES}
    assert classes == {"native", "unimported", "depth", "names", "tamper", "persistent", "hidden"}
    for name in classes:
        expects = {c.expect for c in CASES if c.gadget_class == name}
        assert expects == {"malicious", "safe"}, name


def test_tampering_is_pw107() -> None:
    for case in CASES:
        if case.gadget_class == "tamper" and case.expect == "malicious":
            report = picklewarden.scan_bytes(case.make(Path("/nonexistent/canary")), "t.bin")
            assert any(f.rule == "PW107" and f.symbol == case.symbol for f in report.findings), case.id


def test_hidden_inner_payload_is_decoded_and_scanned() -> None:
    case = next(c for c in CASES if c.id == "hidden-rot13-b85-zlib")
    report = picklewarden.scan_bytes(case.make(Path("/tmp/pw-canary")), "h.bin")
    inner = [f for f in report.findings if "rot13" in f.member and f.symbol == "os.system"]
    assert inner, "\n".join(f"{f.rule} {f.member} {f.symbol}" for f in report.findings)
    assert any("touch /tmp/pw-canary" in i.value for f in inner for i in f.indicators)


def test_new_sink_messages_say_how_the_effect_is_reached() -> None:
    case = next(c for c in CASES if c.id == "names-get-type-hints")
    report = picklewarden.scan_bytes(case.make(Path("/tmp/c")), "t.bin")
    message = next(f.message for f in report.findings if f.symbol == "typing.get_type_hints")
    assert "builtins.eval" in message and "ForwardRef._evaluate" in message, message


@pytest.mark.parametrize(
    ("module", "name", "category"),
    [
        # re-exports judged as their canonical definition
        ("types", "FunctionType", "code"),
        ("types", "CodeType", "code"),
        ("torch.distributed", "FileStore", "file"),
        ("functools", "partial", "indirection"),
        ("operator", "attrgetter", "indirection"),
        # per callable, not per module (issue 13): these modules are no longer blanket sinks
        ("types", "SimpleNamespace", "safe"),
        ("operator", "itemgetter", "safe"),
        ("torch._C._nn", "gelu", "safe"),
        # mutating module state through a dotted name
        ("copyreg", "dispatch_table.update", "tamper"),
        ("torch.serialization", "_package_registry.append", "tamper"),
        # ...but a class's own method only acts on the object it is handed
        ("collections", "ChainMap.__setitem__", "safe"),
        ("torch", "add", "safe"),
        # a module whose import runs a program
        ("venv.__main__", "main", "code"),
        # the closed world: analysed and reaching no sink
        ("colorsys", "rgb_to_hls", "safe"),
        ("torch.utils.file_baton", "FileBaton", "safe"),
        ("torch.utils.file_baton", "FileBaton.try_acquire", "file"),
    ],
)
def test_classification(module: str, name: str, category: str) -> None:
    from picklewarden.knowledge.resolve import classify, resolve

    known = classify(resolve(module, name, 4))
    assert known is not None and known.category.value == category, (module, name, known)


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("mylib.models", "Net"),  # outside the analysed packages
        ("test.test_os", "TestCase"),  # the stdlib's test suites are not analysed (only test.support)
        ("torch._native.ops.scatter_add._ptx", "kernel"),  # failed to import at generation time (no triton)
        ("torch.utils.bottleneck", "main"),  # not in the analysed torch version: not taken as analysed
    ],
)
def test_unknown_outside_the_closed_world(module: str, name: str) -> None:
    from picklewarden.knowledge.resolve import classify, resolve

    assert classify(resolve(module, name, 4)) is None


def test_decoded_source_is_an_indicator() -> None:
    case = next(c for c in CASES if c.id == "hidden-exec-rot13")
    report = picklewarden.scan_bytes(case.make(Path("/tmp/pw-canary")), "e.bin")
    shown = [i for f in report.findings if f.symbol == "builtins.exec" for i in f.indicators if i.kind == "code"]
    assert [i.value for i in shown] == ["open('/tmp/pw-canary', 'w').close()"], report.findings
