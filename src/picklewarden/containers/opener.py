"""Dispatch on content to the reader that sees a file the way its loader does."""

from __future__ import annotations

from picklewarden.containers.base import Anomaly, Opened, PickleSource, Stacking
from picklewarden.containers.sniff import ZIP_LOCAL, looks_like_pickle, starts_like_pickle
from picklewarden.errors import ScanError
from picklewarden.limits import Limits

_HEAD = 64 * 1024


def sniff_format(head: bytes, limits: Limits) -> str | None:
    """The container format of a file from its first bytes, or None when it is not one we read."""
    from picklewarden.containers import torchzip

    if head[:4] == ZIP_LOCAL:
        return "zip"
    if looks_like_pickle(head, limits):
        return "pickle"
    if torchzip.looks_like_zip(head):
        return "zip"
    return None


def open_bytes(data: bytes, limits: Limits) -> Opened:
    """Find the pickle streams in a whole file's bytes (or an mmap of them).

    The order follows ``torch.load``: a file is a ZIP archive only when it starts with a local header;
    anything else is read as pickles (legacy format), so a pickle glued in front of an archive is what
    torch executes. A ZIP with junk in front is still opened (other loaders accept it), as an anomaly.
    """
    from picklewarden.containers import torchzip

    head = bytes(data[:_HEAD])
    if head[:4] == ZIP_LOCAL:
        return _open_zip(data, limits)
    if looks_like_pickle(head, limits):
        return Opened("pickle", [PickleSource("", bytes(data), Stacking.ALL, file_like=True)])
    if torchzip.looks_like_zip(data):
        return _open_zip(data, limits)
    if starts_like_pickle(head):
        # pickle.load does not sniff: it executes from the first byte. Read it the same way; the scanner
        # turns a stream that yields nothing into an error rather than a verdict.
        return Opened("pickle?", [PickleSource("", bytes(data), Stacking.ALL, file_like=True)])
    opened = Opened("unknown")
    opened.errors.append("unsupported format: not a pickle, PyTorch or ZIP file")
    return opened


def _open_zip(data: bytes, limits: Limits) -> Opened:
    from picklewarden.containers import torchzip

    try:
        archive = torchzip.open_torch_zip(data, limits)
    except ScanError as exc:
        opened = Opened("zip")
        opened.errors.append(f"unreadable ZIP archive: {exc}")
        return opened
    opened = Opened("torch-zip" if archive.record("data.pkl") is not None else "zip")
    opened.anomalies.extend(_anomaly(a) for a in archive.anomalies)
    # torch reads <prefix>/data.pkl; TorchScript archives add constants.pkl and other *.pkl records.
    for name in archive.order:
        entry = archive.entries.get(name)
        if entry is None or not name.endswith(".pkl"):
            continue
        try:
            payload, problems = torchzip.read_entry(data, entry, limits)
        except ScanError as exc:
            opened.errors.append(f"{name}: {exc}")
            continue
        opened.anomalies.extend(_anomaly(a) for a in problems)
        opened.sources.append(PickleSource(name, payload, Stacking.ONE, file_like=False))
    if not opened.sources and not opened.errors:
        opened.errors.append("ZIP archive holds no pickle members")
    return opened


def _anomaly(problem: object) -> Anomaly:
    code = getattr(problem, "code", "zip")
    return Anomaly(
        "PW310",
        getattr(problem, "member", None),
        getattr(problem, "offset", None),
        f"{code}: {getattr(problem, 'message', '')}",
    )
