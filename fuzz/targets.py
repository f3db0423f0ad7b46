"""Fuzz targets shared by the atheris harness (fuzz/run.py) and the hypothesis fallback in the tests.

Each target takes raw bytes and may raise only the documented ScanError family (the whole-file target
may raise nothing at all). The whole-file target calls ``analyse_bytes``, which lets a scanner bug out as
an exception, where the public ``scan_bytes`` would turn it into an ``error`` report and hide it here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from picklewarden import DEFAULT_LIMITS, ScanError, _native
from picklewarden.containers import torchzip
from picklewarden.limits import Limits
from picklewarden.pickle.layout import scan_layout
from picklewarden.pickle.machine import run_pickle
from picklewarden.pickle.program import Program
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


def zip_lenient(data: bytes) -> None:
    """The lenient ZIP reading (any layout, refusal flags ignored) and numpy's npz view of the archive."""
    from picklewarden.containers.base import Context
    from picklewarden.containers.npz import numpy_view
    from picklewarden.containers.zip_lenient import open_any_zip

    try:
        archive = open_any_zip(data, LIMITS)
    except ScanError:
        return
    for entry in archive.all_entries[:8]:
        try:
            torchzip.read_plain(data, entry, LIMITS)
        except ScanError:
            pass
    numpy_view(data, archive, Context.root(LIMITS, "fuzz"), {})


def tar_sniff(data: bytes) -> None:
    """Differential: whatever ``tarfile.open`` reads a first member from, the tar sniff must accept."""
    import io
    import tarfile

    from picklewarden.containers.sniff import looks_like_tar

    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            opens = tar.firstmember is not None
    except (tarfile.TarError, EOFError, OSError, ValueError, UnicodeError, OverflowError):
        opens = False
    if opens and not looks_like_tar(data):
        raise AssertionError("tarfile reads a member from a file the tar sniff rejects")


def npy_header(data: bytes) -> None:
    """Differential: the ``.npy`` header rules against numpy's own parser (when numpy is installed).

    The first byte picks the version, the rest is the header text. Both must accept or reject alike,
    except that numpy may still reject a header whose ``descr`` is not a dtype (not evaluated here).
    """
    import struct
    import tokenize

    from picklewarden.containers.numpy_files import _VERSIONS, _Unreadable, parse_header

    version = sorted(_VERSIONS)[data[0] % 3] if data else (1, 0)
    raw = data[1:4096]
    try:
        ours = parse_header(raw, version)
    except _Unreadable:
        ours = None
    except (RecursionError, MemoryError):
        return  # the scan fails closed on these
    try:
        from numpy.lib import _format_impl
    except ImportError:
        return
    import io
    import warnings

    stream = io.BytesIO(struct.pack(_VERSIONS[version][0], len(raw)) + raw)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            shape, order, _ = _format_impl._read_array_header(stream, version, max_header_size=1 << 30)
    except (ValueError, TypeError, SyntaxError, OverflowError, tokenize.TokenError, RecursionError, MemoryError):
        if ours is None:
            return
        try:
            _format_impl.descr_to_dtype(ours["descr"])
        except (ValueError, TypeError, SyntaxError, OverflowError, KeyError, RecursionError):
            return  # numpy rejects the dtype itself: nothing runs, and the scan reads the pickle anyway
        raise AssertionError(f"numpy rejects a header picklewarden accepts: {raw[:200]!r}") from None
    if ours is None or (ours["shape"], ours["fortran_order"]) != (shape, order):
        raise AssertionError(f"numpy reads {shape!r}/{order!r}, picklewarden {ours!r}")


def whole_file(data: bytes) -> None:
    analyse_bytes(data, limits=LIMITS).report()


# -- the compiled core against the pure-Python reference ------------------------------------------------------
COMPILED = _native.speedups
"""The C extension when it is built (and not switched off); the agreement targets need it to mean anything."""


@contextmanager
def pure_python() -> Iterator[None]:
    """Run the pure-Python reference loops inside the block, whatever core is installed."""
    saved, _native.speedups = _native.speedups, None
    try:
        yield
    finally:
        _native.speedups = saved


def outcome(run: Callable[[], object]) -> object:
    """What a call returns, or the ScanError it raises (by type, text and offset: exceptions lack ==)."""
    try:
        return run()
    except ScanError as exc:
        return (type(exc), str(exc), getattr(exc, "offset", None))


def agree(run: Callable[[], object]) -> object:
    """``run`` under both cores; AssertionError (a fuzzing crash) where they differ."""
    with pure_python():
        reference = outcome(run)
    compiled = outcome(run)
    assert compiled == reference, f"the C core says {compiled!r}, the reference {reference!r}"
    return compiled


def _layout_facts(data: bytes, start: int, limits: Limits) -> object:
    lay = scan_layout(data, start, limits)
    error = None if lay.error is None else (type(lay.error), str(lay.error))
    return (lay.cut, lay.end, lay.opcodes, lay.imports, lay.calls, lay.builds, lay.persistent, lay.extensions,
            lay.protocol, lay.frame_end, error)  # fmt: skip


AGREEMENT_LIMITS = (
    LIMITS,
    LIMITS.replace(max_memo_index=200, max_opcodes=64),
    LIMITS.replace(max_pickle_bytes=100),
)
"""Limits the layout pass is compared under: each bound must stop both cores at the same opcode."""


def native_layout(data: bytes) -> None:
    # The first byte picks the limits and where the pickle starts, so the fuzzer explores both.
    if not data:
        return
    limits = AGREEMENT_LIMITS[data[0] % len(AGREEMENT_LIMITS)]
    start = 1 + (data[0] >> 4) % 4 if len(data) > 5 else 1
    agree(lambda: _layout_facts(data, min(start, len(data)), limits))


def native_zip(data: bytes) -> None:
    def directory() -> object:
        archive = torchzip.open_torch_zip(data, LIMITS)
        return (
            archive.entries,
            archive.order,
            archive.prefix,
            archive.anomalies,
            archive.all_entries,
            archive.zipfile_layout,
        )

    agree(directory)


def machine_facts(data: bytes, start: int, limits: Limits, *, lean: bool = True, file_like: bool = True) -> object:
    """Everything a run of the machine recorded, comparable across cores: each statement and elided call with
    its fields (stand-ins print as their node's id), the error, the end and the result."""
    from picklewarden.scanner import _plain_result

    program, _ = run_pickle(data, start, limits, plain=_plain_result, lean=lean, file_like=file_like)
    return program_facts(program)


def program_facts(program: Program) -> object:
    """A program's records, comparable across runs: stand-ins print as their node's id."""
    return (
        [canonical(s) for s in program.statements],
        [canonical(c) for c in program.elided],
        repr(program.error),
        program.complete,
        program.end,
        canonical(program.result),
    )


def canonical(value: object, depth: int = 0) -> str:
    """``repr`` with set members sorted: a stand-in class hashes by address, so a set holding one iterates
    in an order that differs from run to run."""
    if depth > 60:
        return "..."
    if isinstance(value, (set, frozenset)):
        return f"{type(value).__name__}({sorted(canonical(v, depth + 1) for v in value)})"
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__}({[canonical(v, depth + 1) for v in value]})"
    if isinstance(value, dict):
        return f"dict({[(canonical(k, depth + 1), canonical(v, depth + 1)) for k, v in value.items()]})"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = [canonical(getattr(value, f.name), depth + 1) for f in dataclasses.fields(value)]
        return f"{type(value).__name__}({fields})"
    return repr(value)


def native_machine(data: bytes) -> None:
    """The machine's compiled callbacks (persistent_load of a storage, an elided call) against the Python
    recorder, on the whole input (mutated pickles keep most of their seeds' persistent ids and calls). Its
    length picks the limits and the recording, so that no byte of the pickle is spent on choosing them."""
    size = len(data)
    limits = AGREEMENT_LIMITS[0 if size % 4 else 1 + size // 4 % 2]
    agree(lambda: machine_facts(data, 0, limits, lean=size % 3 != 0, file_like=size % 2 == 0))


def native_scan(data: bytes) -> None:
    """The whole analysis under both cores: every compiled pass (the layout, the ZIP walk and the archive-wide
    passes over its records, the machine's callbacks) where the scanner runs it, compared by the report."""
    agree(lambda: analyse_bytes(data, limits=LIMITS).report())


TARGETS: dict[str, Callable[[bytes], None]] = {
    "layout": layout,
    "machine": machine,
    "zip": zip_reader,
    "containers": containers,
    "zip-lenient": zip_lenient,
    "tar-sniff": tar_sniff,
    "npy-header": npy_header,
    "scan": whole_file,
    "native-layout": native_layout,
    "native-zip": native_zip,
    "native-machine": native_machine,
    "native-scan": native_scan,
}
