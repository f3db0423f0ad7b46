"""Every container, benign and hostile: the scan verdict, and proof that each sample behaves as claimed under
the real loader (``tests/container_samples.py``).

Loader runs happen in fresh interpreters, one per loader (every sample a loader handles is loaded in turn
inside it, each in its own try block), started together from one module-scoped fixture: torch's import
cost is paid a few times, not once per file.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from picklewarden import Severity, Verdict, scan
from tests.container_samples import ALL, LOADERS, MALICIOUS, MEMBER_LOADER, Case, joblib_array_bytes_are_opcodes, write

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 60.0


def _have(case: Case) -> bool:
    return all(importlib.util.find_spec(name) is not None for name in case.needs)


def _require(case: Case) -> None:
    for name in case.needs:
        pytest.importorskip(name)


@dataclass(frozen=True)
class Outcome:
    returncode: int | None
    """0 when the loader returned, 3 when it raised, None when the interpreter timed out or the build failed."""
    fired: bool
    stderr: str


_RUNNER = """
import json
results = {}
for case_id, path, code in JOBS:
    try:
        exec(compile(code, case_id, "exec"), {**globals(), "path": path})
        results[case_id] = [0, ""]
    except BaseException as exc:
        results[case_id] = [3, f"{type(exc).__name__}: {exc}"[-2000:]]
print("RESULTS" + json.dumps(results))
"""


Job = tuple[str, Path, Path, str]
"""(case id, sample path, canary, loader name)."""


def _run_loader(jobs: list[Job], firing: frozenset[str] = frozenset()) -> dict[str, Outcome]:
    """Load samples one after the other in one fresh interpreter (torch is imported once, not per file)."""
    listed = [(case_id, str(path), LOADERS[loader]) for case_id, path, _, loader in jobs]
    code = f"{MEMBER_LOADER}\nJOBS = {listed!r}\n{_RUNNER}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code],
            cwd=jobs[0][1].parent,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        stdout, stderr = proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        stdout, stderr = "", f"timed out: {exc.stderr!r}"
    line = next((x for x in stdout.splitlines() if x.startswith("RESULTS")), "RESULTS{}")
    results: dict[str, list[Any]] = json.loads(line[len("RESULTS") :])
    deadline = time.monotonic() + 2.0  # children of os.system may outlive the call by a moment
    while time.monotonic() < deadline and not all(c.exists() for case_id, _, c, _ in jobs if case_id in firing):
        time.sleep(0.05)
    outcomes = {}
    for case_id, _, canary, _ in jobs:
        code_and_error = results.get(case_id)
        if code_and_error is None:
            outcomes[case_id] = Outcome(None, canary.exists(), stderr[-2000:])
        else:
            outcomes[case_id] = Outcome(code_and_error[0], canary.exists(), code_and_error[1])
    return outcomes


def _load(path: Path, loader: str, canary: Path, *, fires: bool) -> Outcome:
    return _run_loader([("sample", path, canary, loader)], frozenset({"sample"} if fires else ()))["sample"]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    base = tmp_path_factory.mktemp("containers")
    groups: dict[bool, list[Job]] = {}
    done: dict[str, Outcome] = {}
    for case in ALL:
        if not _have(case):
            continue
        workdir = base / case.id
        workdir.mkdir()
        canary = workdir / "canary"
        try:
            path = write(case, workdir, canary)
        except Exception as exc:  # noqa: BLE001 - reported by the test that owns this case
            done[case.id] = Outcome(None, False, f"building the sample failed: {type(exc).__name__}: {exc}")
            continue
        heavy = "torch" in case.needs or case.loader.startswith("torch")
        groups.setdefault(heavy, []).append((case.id, path, canary, case.loader))
    firing = frozenset(case.id for case in MALICIOUS if case.fires)
    with ThreadPoolExecutor(max_workers=max(2, min(8, os.cpu_count() or 2))) as pool:
        for result in pool.map(lambda jobs: _run_loader(jobs, firing), groups.values()):
            done.update(result)
    return done


@pytest.mark.parametrize("case", ALL, ids=lambda c: c.id)
def test_sample_behaves_as_claimed_under_its_real_loader(case: Case, outcomes: dict[str, Outcome]) -> None:
    _require(case)
    out = outcomes[case.id]
    if case.expect == "malicious" and case.fires:
        assert out.fired, f"{case.id}: the payload did not run under {case.loader}\n{out.stderr}"
    else:
        assert out.returncode == 0, f"{case.id}: {case.loader} failed to load a benign sample\n{out.stderr}"
        assert not out.fired


@pytest.mark.parametrize("case", ALL, ids=lambda c: c.id)
def test_scan_verdict(case: Case, tmp_path: Path) -> None:
    _require(case)
    canary = tmp_path / "canary"
    path = write(case, tmp_path, canary)
    (report,) = scan(path).files
    shown = [(f.rule, f.severity.label, f.member, f.message) for f in report.findings]
    assert report.verdict.label == case.expect, (shown, report.errors)
    assert not canary.exists(), "scanning must never run the payload"
    if case.expect == "safe":
        assert report.errors == ()
        assert all(f.severity is Severity.INFO for f in report.findings), shown
    else:
        threats = [f for f in report.findings if f.severity >= Severity.HIGH]
        assert threats and all(t.rule.startswith(("PW1", "PW3")) for t in threats)


def _scan(case_id: str, tmp_path: Path) -> tuple[Path, list[tuple[str, str, str]], str]:
    case = next(c for c in ALL if c.id == case_id)
    _require(case)
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = write(case, tmp_path, tmp_path / "canary")
    (report,) = scan(path).files
    return path, [(f.rule, f.member, f.message) for f in report.findings], report.format


def test_legacy_tar_scans_every_pickle_torch_runs(tmp_path: Path) -> None:
    _, found, fmt = _scan("torch-legacy-tar-tensor-record", tmp_path)
    assert fmt == "torch-legacy-tar"
    assert ("PW100", "tensors") in {(rule, member) for rule, member, _ in found}
    _, found, _ = _scan("torch-legacy-tar-storage-count", tmp_path / "b")
    assert ("PW100", "storages") in {(rule, member) for rule, member, _ in found}


def test_legacy_tar_benign_reads_all_seven_pickles(tmp_path: Path) -> None:
    case = next(c for c in ALL if c.id == "torch-legacy-tar")
    _require(case)
    (report,) = scan(write(case, tmp_path, tmp_path / "c")).files
    # storages: count, record, views; tensors: count, record; pickle; sys_info
    assert report.pickles == 7 and report.verdict is Verdict.SAFE


def test_torchscript_lists_code_and_flags_file_writes(tmp_path: Path) -> None:
    _, found, fmt = _scan("torchscript", tmp_path)
    assert fmt == "torchscript"
    assert [rule for rule, _, _ in found] == ["PW311"]
    assert "code/__torch__" in found[0][2]
    _, found, _ = _scan("torchscript-setstate-aten-save", tmp_path / "evil")
    writes = [message for rule, _, message in found if rule == "PW312"]
    assert writes and "__setstate__" in writes[0] and "torch.jit.load" in writes[0]


def test_joblib_reads_around_array_bytes(tmp_path: Path) -> None:
    _, found, fmt = _scan("joblib-plain-after-array", tmp_path)
    assert fmt == "joblib"
    assert {rule for rule, _, _ in found} == {"PW100"}, "array bytes must neither break the stream nor be judged"


def test_joblib_array_bytes_that_are_opcodes_are_a_differential(tmp_path: Path) -> None:
    """joblib.load skips the array bytes; pickle.load runs them. Both facts are checked for real."""
    pytest.importorskip("joblib")
    canary = tmp_path / "canary"
    path = tmp_path / "sample.pkl"
    path.write_bytes(joblib_array_bytes_are_opcodes(canary))
    assert not _load(path, "joblib", canary, fires=False).fired
    assert _load(path, "pickle", canary, fires=True).fired
    (report,) = scan(path).files
    assert report.format == "joblib"
    assert [f.rule for f in report.findings if f.severity >= Severity.HIGH] == ["PW309"]


def test_nested_payload_paths_name_the_nesting(tmp_path: Path) -> None:
    _, found, _ = _scan("nested-torch-storage-load-from-bytes", tmp_path)
    assert ("PW100", "#arg0>torch-zip!archive/data.pkl") in {(r, m) for r, m, _ in found}
    _, found, _ = _scan("nested-numpy-load-bytesio-partial", tmp_path / "b")
    assert ("PW100", "#arg0>npy-object") in {(r, m) for r, m, _ in found}


def test_bundles_name_members(tmp_path: Path) -> None:
    _, found, fmt = _scan("tar-gz-bundle-torch-reduce", tmp_path)
    assert fmt == "gzip>tar"
    assert ("PW100", "model/pytorch_model.bin!archive/data.pkl") in {(r, m) for r, m, _ in found}
    _, found, _ = _scan("zip-bundle-pickle", tmp_path / "z")
    assert ("PW100", "weights/scaler.pkl") in {(r, m) for r, m, _ in found}


def test_every_malicious_case_is_verified_by_a_loader() -> None:
    assert all(case.fires for case in MALICIOUS)
