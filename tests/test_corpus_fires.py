"""Honesty checks for the corpus: malicious samples really run code, benign samples really load.

Each sample is loaded the way a victim would, in its own fresh interpreter (``sys.executable -c``, cwd a
temporary directory, 60 s timeout). The subprocesses for all selected samples are started together from one
module-scoped fixture, a few at a time, so the file stays well under two minutes even though every torch
sample pays for ``import torch``.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import struct
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.asm import Asm
from tests.corpus import ALL, BENIGN, MALICIOUS, Sample, write
from tests.loader_run import run_loader

TIMEOUT = 60.0
CANARY_GRACE = 5.0
"""Some payloads (``subprocess.Popen``, ``os.popen``) start a child that may outlive the loader briefly."""

LOADER = r"""
import sys
path, loader = sys.argv[1], sys.argv[2]
try:
    if loader == "torch":
        import torch
        torch.load(path, weights_only=False)
    else:
        import pickle
        with open(path, "rb") as f:
            pickle.load(f)
except BaseException as exc:
    print(f"LOAD FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
    sys.exit(3)
"""


@dataclass(frozen=True)
class Outcome:
    returncode: int | None
    """Exit status of the loader; None if it timed out or the sample could not be built."""
    fired: bool
    stderr: str


def _needs_torch(sample: Sample) -> bool:
    return sample.needs_torch or sample.loader == "torch"


def _torch_importable() -> bool:
    try:
        import torch  # noqa: F401 - building torch samples imports it anyway
    except ImportError:
        return False
    return True


def _run(sample: Sample, workdir: Path) -> Outcome:
    workdir.mkdir(parents=True)
    canary = workdir / "canary"
    try:
        path = write(sample, workdir, canary)
    except Exception as exc:  # noqa: BLE001 - reported by the test that owns this sample
        return Outcome(None, False, f"building the sample failed: {type(exc).__name__}: {exc}")
    returncode, stderr = run_loader(LOADER, path, sample.loader, workdir, TIMEOUT)
    if sample.expect == "malicious":
        deadline = time.monotonic() + CANARY_GRACE
        while not canary.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    return Outcome(returncode, canary.exists(), stderr)


@pytest.fixture(scope="module")
def outcomes(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """Load every sample selected in this module (each in its own interpreter), in parallel."""
    wanted = [
        item.callspec.params["sample"]
        for item in request.session.items
        if isinstance(item, pytest.Function)
        and item.module is sys.modules[__name__]
        and hasattr(item, "callspec")
        and "sample" in item.callspec.params
    ]
    have_torch = _torch_importable()
    todo = [s for s in ALL if s in wanted and (have_torch or not _needs_torch(s))]
    base = tmp_path_factory.mktemp("corpus")
    workers = max(2, min(6, (os.cpu_count() or 2) + 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {s.id: pool.submit(_run, s, base / s.id) for s in todo}
        return {sid: f.result() for sid, f in futures.items()}


@pytest.mark.parametrize("sample", MALICIOUS, ids=lambda s: s.id)
def test_malicious_sample_fires(sample: Sample, outcomes: dict[str, Outcome]) -> None:
    if _needs_torch(sample):
        pytest.importorskip("torch")
    out = outcomes[sample.id]
    assert out.returncode is not None, f"{sample.id}: loader timed out or sample not built\n{out.stderr}"
    assert out.fired, f"{sample.id}: canary not created (rc={out.returncode})\n{out.stderr}"


@pytest.mark.parametrize("sample", BENIGN, ids=lambda s: s.id)
def test_benign_sample_loads_cleanly(sample: Sample, outcomes: dict[str, Outcome]) -> None:
    if _needs_torch(sample):
        pytest.importorskip("torch")
    out = outcomes[sample.id]
    assert out.returncode == 0, f"{sample.id}: load failed (rc={out.returncode})\n{out.stderr}"
    assert not out.fired, f"{sample.id}: benign sample created its canary"


# -- the table itself ----------------------------------------------------------------------------------------
FAMILIES = {
    "sink:process",
    "sink:code",
    "sink:file",
    "sink:network",
    "sink:nested",
    "reach:import",
    "reach:dotted",
    "reach:py2-names",
    "reach:ext",
    "reach:launder",
    "reach:opcode",
    "diff:memo",
    "diff:string-global",
    "diff:frame",
    "diff:broken-tail",
    "diff:multi-pickle",
    "container:legacy",
    "container:zip",
    "container:renamed",
}


def test_table_is_well_formed() -> None:
    assert len({s.id for s in ALL}) == len(ALL), "duplicate sample ids"
    assert len({s.filename for s in ALL}) == len(ALL), "duplicate file names"
    for s in ALL:
        assert s.loader in {"pickle", "torch"}, s.id
        assert s.expect in {"malicious", "suspicious", "safe"}, s.id
        assert s.filename.rsplit(".", 1)[-1] in {"pkl", "pt", "pth", "bin", "ckpt"}, s.id
    for s in MALICIOUS:
        assert s.expect == "malicious" and s.family in FAMILIES, s.id
    assert {s.family for s in MALICIOUS} == FAMILIES, "every THREATS.md family has a verified sample"
    for s in BENIGN:
        assert s.expect != "malicious" and s.family.startswith("benign:"), s.id


def test_payloads_depend_on_canary(tmp_path: Path) -> None:
    """Malicious bytes mention the canary (so a test can tell which sample fired) - checked on pickle samples."""
    for s in MALICIOUS:
        if _needs_torch(s):
            continue
        assert s.make(tmp_path / "a") != s.make(tmp_path / "b"), s.id


def test_assembler_covers_every_opcode() -> None:
    renamed = {
        "INT": "int_",
        "FLOAT": "float_",
        "GLOBAL": "global_",
        "LIST": "list_",
        "TUPLE": "tuple_",
        "DICT": "dict_",
    }
    for op in pickletools.opcodes:
        assert callable(getattr(Asm, renamed.get(op.name, op.name.lower()), None)), op.name


def test_assembler_auto_frame_matches_pickletools() -> None:
    data = Asm(proto=4).short_binunicode("a").short_binunicode("b").tuple2().stop().bytes()
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(data)]
    assert ops[:2] == [("PROTO", 4), ("FRAME", len(data) - 11)]
    pickletools.dis(data, out=io.StringIO())  # also validates stack discipline


# -- the differentials the corpus claims are real -------------------------------------------------------------
def _sample(sample_id: str) -> Sample:
    return next(s for s in ALL if s.id == sample_id)


def test_frame_spill_splits_c_and_python_unpicklers(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    data = _sample("FRAME-argument-spills-past-frame").make(canary)
    with pytest.raises(pickle.UnpicklingError, match="frame"):
        pickle._Unpickler(io.BytesIO(data)).load()  # pure Python refuses before REDUCE; _pickle runs it
    assert not canary.exists()


def test_zip_variants_carry_the_anomaly_they_are_named_for(tmp_path: Path) -> None:
    pytest.importorskip("torch")

    def build(sample_id: str) -> bytes:
        return _sample(sample_id).make(tmp_path / "canary")

    def read_all(data: bytes) -> None:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            for info in z.infolist():
                z.read(info)

    with pytest.raises(zipfile.BadZipFile, match="CRC"):
        read_all(build("torch-zip-bad-crc-CVE-2025-10156"))
    with pytest.raises(zipfile.BadZipFile, match="differ"):
        read_all(build("torch-zip-local-name-mismatch-CVE-2025-1944"))

    flagged = build("torch-zip-local-encrypted-flag-CVE-2025-1945-variant")
    with zipfile.ZipFile(io.BytesIO(flagged)) as z:
        info = z.getinfo(next(n for n in z.namelist() if n.endswith("/data.pkl")))
        (local_flags,) = struct.unpack_from("<H", flagged, info.header_offset + 6)
        assert local_flags & 0x1 and not info.flag_bits & 0x1

    with zipfile.ZipFile(io.BytesIO(build("torch-zip-duplicate-data-pkl-last-wins"))) as z:
        assert sum(n.endswith("/data.pkl") for n in z.namelist()) == 2
    with zipfile.ZipFile(io.BytesIO(build("torch-zip-odd-prefix-folder"))) as z:
        assert all(n.startswith("resnet50_final_v2/") for n in z.namelist())

    prepended = build("torch-zip-pickle-prepended")
    assert not prepended.startswith(b"PK\x03\x04") and zipfile.is_zipfile(io.BytesIO(prepended))
