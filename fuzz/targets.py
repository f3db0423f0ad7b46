"""Fuzz targets shared by the atheris harness (fuzz/run.py) and the hypothesis fallback in the tests.

Each target takes raw bytes and may raise only the documented ScanError family (the whole-file target
may raise nothing at all). The whole-file target calls ``analyse_bytes``, which lets a scanner bug out as
an exception, where the public ``scan_bytes`` would turn it into an ``error`` report and hide it here.
"""

from __future__ import annotations

from collections.abc import Callable

from picklewarden import DEFAULT_LIMITS, ScanError
from picklewarden.containers import torchzip
from picklewarden.pickle.layout import scan_layout
from picklewarden.pickle.machine import run_pickle
from picklewarden.rules import ProgramJudge
from picklewarden.scanner import analyse_bytes

# Small bounds keep each input fast; the bounds themselves are part of what is exercised.
LIMITS = DEFAULT_LIMITS.replace(
    max_opcodes=200_000,
    max_memo_index=100_000,
    max_program_statements=50_000,
    max_members=1_000,
    max_pickle_bytes=1 << 22,
)


def layout(data: bytes) -> None:
    scan_layout(data, 0, LIMITS, keep=True)


def machine(data: bytes) -> None:
    program, _ = run_pickle(data, 0, LIMITS)
    judge = ProgramJudge(program, LIMITS)
    list(judge.findings())
    judge.decompiler.lines()


def zip_reader(data: bytes) -> None:
    try:
        archive = torchzip.open_torch_zip(data, LIMITS)
    except ScanError:
        return
    for entry in list(archive.entries.values())[:8]:
        try:
            torchzip.read_entry(data, entry, LIMITS)
        except ScanError:
            pass


def containers(data: bytes) -> None:
    """Every container reader (tar, npy/npz, joblib, compressed streams, bundles, torch archives) as the
    scanner dispatches to them by content, without running the pickles they find; then the joblib walk."""
    from picklewarden.containers.base import Context
    from picklewarden.containers.joblib_files import joblib_view
    from picklewarden.containers.opener import open_bytes

    opened = open_bytes(data, LIMITS, Context.root(LIMITS, "fuzz"))
    for child in opened.children[:8]:
        open_bytes(child.data, LIMITS, Context.root(LIMITS, "fuzz-child"))
    for source in opened.sources[:4]:
        joblib_view(source, LIMITS)


def whole_file(data: bytes) -> None:
    analyse_bytes(data, limits=LIMITS).report()


TARGETS: dict[str, Callable[[bytes], None]] = {
    "layout": layout,
    "machine": machine,
    "zip": zip_reader,
    "containers": containers,
    "scan": whole_file,
}
