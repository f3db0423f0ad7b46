"""``picklewarden.convert``: PyTorch checkpoint -> safetensors, without running the checkpoint.

The file is scanned first (the same analysis ``picklewarden scan`` makes); its pickle's *program*, recorded
by the inert machine, is then interpreted by :mod:`picklewarden.extract.tensors`, and the tensors' bytes
are copied from the storages torch would read (:mod:`picklewarden.extract.storage`). No pickle is executed,
nothing named by the file is imported, and torch is not needed.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable
from dataclasses import dataclass

from picklewarden.containers import torchzip
from picklewarden.containers.opener import open_bytes
from picklewarden.errors import LimitExceeded, ScanError
from picklewarden.extract import safetensors_format
from picklewarden.extract.errors import ConvertError, UnsafeModelError
from picklewarden.extract.refs import Flatten, PidLayout, Skipped, StorageTable, TensorRef, show
from picklewarden.extract.storage import LegacyStorage, NoStorage, StorageReader, ZipStorage, tensor_bytes
from picklewarden.extract.tensors import extract
from picklewarden.extract.trust import PolicyLike, Trust
from picklewarden.knowledge.resolve import classify, resolve
from picklewarden.limits import DEFAULT_LIMITS, Limits
from picklewarden.model import FileReport, Verdict
from picklewarden.pickle.program import Global, Program
from picklewarden.scanner import Analysis, analyse_opened

_LEGACY_PROTOCOL = 1001  # torch.serialization.PROTOCOL_VERSION; torch refuses legacy files with another


@dataclass(frozen=True)
class ConvertResult:
    """What :func:`convert` wrote, and what it left out."""

    source: str
    destination: str
    tensors: tuple[str, ...]
    """Tensor names in the order written."""
    metadata: tuple[str, ...]
    """Keys written to ``__metadata__`` (each value is the JSON text of a plain value from the file)."""
    skipped: tuple[Skipped, ...]
    """Everything found that was not converted, with the reason (objects, unsupported tensors...)."""
    flatten: Flatten
    """How tensor names were formed from the checkpoint's structure."""
    report: FileReport
    """The scan of the source file."""
    forced: bool = False
    """The scan found the file malicious and ``force=True`` converted it anyway (nothing in it ran)."""
    unknown_globals: tuple[str, ...] = ()
    """Globals the scanner does not know and the policy does not trust. Loading the original file would
    import them; the safetensors file needs none of them."""
    nbytes: int = 0
    """Size of the tensor data written (the header excluded)."""


def convert(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    force: bool = False,
    policy: PolicyLike = None,
    limits: Limits = DEFAULT_LIMITS,
) -> ConvertResult:
    """Write every dense tensor of the PyTorch file ``src`` to the safetensors file ``dst``.

    Handles state dicts, nested checkpoints (names joined with '.'), full-model pickles (names as
    ``state_dict()`` gives them), shared storages and views (each tensor written as its own contiguous
    copy), both torch formats (ZIP and legacy), and every dtype safetensors has. Plain values (None,
    bools, numbers, strings, lists and dicts of them) go to ``__metadata__`` as JSON text; everything else
    is listed in ``ConvertResult.skipped``.

    Raises :class:`UnsafeModelError` (carrying the scan report) when the scan finds the file malicious,
    unless ``force`` is set; even then nothing in the file is executed. Raises :class:`ConvertError` when
    the file cannot be converted (no pickle program, broken storage data, no tensors at all), and
    :class:`OSError` for I/O failures. ``dst`` is only ever replaced by a complete file.

    ``policy`` lists trusted names (see :mod:`picklewarden.extract.trust`); conversion imports nothing, so
    it only decides what ``unknown_globals`` reports.
    """
    source, destination = os.fspath(src), os.fspath(dst)
    trust = Trust.of(policy)
    with open(source, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size == 0:
            raise ConvertError(f"{source}: empty file")
        if size > limits.max_file_bytes:
            raise ConvertError(f"{source}: {size} bytes exceeds the {limits.max_file_bytes}-byte limit")
        # A read-only map: only the pickle members, the archive directory and the tensors' own bytes are read.
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            return _convert(mapped, source, destination, force, trust, limits)


def _convert(
    mapped: mmap.mmap, source: str, destination: str, force: bool, trust: Trust, limits: Limits
) -> ConvertResult:
    # open_bytes only slices its argument, which an mmap supports like bytes (as scanner.analyse_path relies on).
    analysis = analyse_opened(open_bytes(mapped, limits), source, limits)  # type: ignore[arg-type]
    report = analysis.report()
    forced = report.verdict is Verdict.MALICIOUS
    if forced and not force:
        raise UnsafeModelError(
            report, "the scan found it malicious; convert(force=True) converts it without running it"
        )
    located = _locate(analysis, mapped, limits)
    program = located.program
    storages = StorageTable(program, located.layout)
    reader = located.reader(storages)
    try:
        found = extract(program, storages, limits)
    except LimitExceeded as exc:
        raise ConvertError(f"{source}: {exc}") from exc
    if not found.tensors:
        reasons = "; ".join(f"{s.name}: {s.reason}" for s in found.skipped[:5])
        raise ConvertError(f"{source}: no tensor to convert" + (f" ({reasons})" if reasons else ""))
    planned = [_plan(name, tensor) for name, tensor in found.tensors]
    refs = [tensor for _, tensor in found.tensors]
    safetensors_format.write(destination, planned, dict(found.metadata), lambda i: tensor_bytes(reader, refs[i]))
    return ConvertResult(
        source=source,
        destination=destination,
        tensors=tuple(p.name for p in planned),
        metadata=tuple(name for name, _ in found.metadata),
        skipped=found.skipped,
        flatten=found.flatten,
        report=report,
        forced=forced,
        unknown_globals=_unknown(analysis, trust),
        nbytes=sum(p.nbytes for p in planned),
    )


def _plan(name: str, tensor: TensorRef) -> safetensors_format.Planned:
    dtype = tensor.dtype.safetensors
    if dtype is None:  # the walker already skipped these; kept as a guard for the writer's invariants
        raise ConvertError(f"{name}: {tensor.dtype.name} has no safetensors dtype")
    return safetensors_format.Planned(name, dtype, tensor.size, tensor.nbytes)


@dataclass(frozen=True)
class _Located:
    """The pickle torch.load returns the result of, and how to read its storages."""

    program: Program
    layout: PidLayout
    reader: Callable[[StorageTable], StorageReader]
    """Built from the pickle's storages: legacy data can only be walked knowing each storage's size."""


def _usable(program: Program, what: str) -> Program:
    if not program.complete:
        detail = f": {program.error}" if program.error is not None else ""
        raise ConvertError(f"{what} cannot be read to the end{detail}")
    return program


def _locate(analysis: Analysis, mapped: mmap.mmap, limits: Limits) -> _Located:
    """The pickle torch.load would return, and where its storages' bytes are."""
    programs = analysis.programs
    if analysis.format == "torch-zip":
        try:
            archive = torchzip.open_torch_zip(mapped, limits)
        except ScanError as exc:
            raise ConvertError(f"unreadable archive: {exc}") from None
        entry = archive.record("data.pkl")
        main = next((p for p in programs if entry is not None and p.member == entry.name and p.index == 0), None)
        if main is None:
            raise ConvertError("the archive's data.pkl could not be analysed: " + "; ".join(analysis.errors))
        zipped = ZipStorage(mapped, archive, limits)
        return _Located(_usable(main, entry.name if entry else "data.pkl"), PidLayout.ZIP, lambda _: zipped)
    if analysis.format == "torch-legacy":
        usable = [_usable(p, f"legacy pickle {p.index}") for p in programs[:5]]
        if len(usable) < 5:
            raise ConvertError(f"a legacy torch file has five pickles; only {len(usable)} could be read")
        _, protocol, _, main, keys = usable
        if protocol.result != _LEGACY_PROTOCOL or type(protocol.result) is not int:
            raise ConvertError(f"legacy protocol version {show(protocol.result)}; torch only reads {_LEGACY_PROTOCOL}")
        if type(keys.result) is not list or keys.end is None:
            raise ConvertError("the legacy storage-key pickle is not a list")
        start, names = keys.end, keys.result
        return _Located(main, PidLayout.LEGACY, lambda table: LegacyStorage(mapped, start, names, table.roots))
    if analysis.format == "pickle" and programs:
        return _Located(_usable(programs[0], "the pickle"), PidLayout.NONE, lambda _: NoStorage())
    problems = "; ".join(analysis.errors) or f"format {analysis.format!r} holds no PyTorch pickle"
    raise ConvertError(f"nothing to convert: {problems}")


def _unknown(analysis: Analysis, trust: Trust) -> tuple[str, ...]:
    names: dict[str, None] = {}
    for program in analysis.programs:
        for stmt in program.statements:
            if isinstance(stmt, Global):
                resolved = resolve(stmt.module, stmt.name, stmt.protocol)
                if classify(resolved) is None and not trust.trusts(resolved):
                    names[resolved.symbol] = None
    return tuple(names)
