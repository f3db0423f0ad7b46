"""Hostile containers built to exhaust a scanner finish fast with a verdict that is never ``safe``; missing
optional decompressors are errors; damaged containers still yield what a streaming loader would run."""

from __future__ import annotations

import bz2
import gzip
import io
import struct
import sys
import tarfile
import time
import zipfile
import zlib
from pathlib import Path

import pytest

from picklewarden import FileReport, Limits, Verdict, scan_bytes
from picklewarden.containers.base import Context, digest
from picklewarden.containers.opener import open_bytes
from tests.asm import Asm
from tests.container_samples import system_pickle

FAST = 10.0
"""Seconds any limit case may take (each takes well under one on a laptop)."""


def _timed(data: bytes, name: str, limits: Limits | None = None) -> tuple[float, FileReport]:
    start = time.monotonic()
    report = scan_bytes(data, name, limits or Limits())
    return time.monotonic() - start, report


def _rules(report: FileReport) -> set[str]:
    return {f.rule for f in report.findings}


def _bz2_bomb() -> bytes:
    """~2 KB that decompress to ~1 GiB: 23 concatenated bz2 streams of 45 MiB of zeros each."""
    return bz2.compress(b"\0" * (45 << 20)) * 23


def _deflate_gigabyte() -> bytes:
    """A raw deflate stream of 1 GiB of zeros, about 1 MiB long (full-flushed blocks repeated)."""
    block = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = block.compress(b"\0" * (1 << 20)) + block.flush(zlib.Z_FULL_FLUSH)
    return chunk * 1024 + zlib.compressobj(9, zlib.DEFLATED, -15).flush(zlib.Z_FINISH)


def test_bz2_bomb_of_a_kilobyte_or_two_stops_at_the_ratio_limit() -> None:
    bomb = _bz2_bomb()
    assert len(bomb) < 4096
    elapsed, report = _timed(bomb, "weights.pkl.bz2")
    assert elapsed < FAST
    assert "PW305" in _rules(report)
    assert report.verdict >= Verdict.SUSPICIOUS


def test_gzip_gigabyte_bomb_stops_at_the_ratio_limit() -> None:
    stream = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + _deflate_gigabyte() + struct.pack("<II", 0, 1 << 30)
    elapsed, report = _timed(stream, "model.pt.gz")
    assert elapsed < FAST
    assert "PW305" in _rules(report)
    assert report.errors


def test_zip_bomb_member_is_not_extracted() -> None:
    deflated = _deflate_gigabyte()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("small.txt", b"hello")
    # Hand-built entry: 1 GiB declared from ~1 MiB of deflate data.
    info = zipfile.ZipInfo("model.pkl")
    info.compress_type = zipfile.ZIP_DEFLATED
    raw = buf.getvalue()
    local = struct.pack(
        "<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 8, 0, 0, 0, len(deflated), 1 << 30, len(info.filename), 0
    )
    central = struct.pack(
        "<4sHHHHHHIIIHHHHHII",
        b"PK\x01\x02", 20, 20, 0, 8, 0, 0, 0, len(deflated), 1 << 30, len(info.filename), 0, 0, 0, 0, 0, 0,
    )  # fmt: skip
    body = local + info.filename.encode() + deflated
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 1, 1, len(central) + len(info.filename), len(body), 0)
    bomb = body + central + info.filename.encode() + end
    assert raw  # (the helper archive above only checks zipfile is importable and working)
    elapsed, report = _timed(bomb, "bundle.zip")
    assert elapsed < FAST
    assert "PW305" in _rules(report)
    assert report.verdict >= Verdict.SUSPICIOUS


def test_hundred_thousand_entry_zip_is_refused_quickly() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as archive:
        for index in range(100_000):
            archive.writestr(zipfile.ZipInfo(f"f{index}"), b"")
    elapsed, report = _timed(buf.getvalue(), "many.zip")
    assert elapsed < FAST
    assert "PW301" in _rules(report)
    assert report.errors and report.verdict is not Verdict.SAFE


def _zip_of(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr(name, data)
    return buf.getvalue()


def test_deeply_nested_archives_stop_at_the_depth_limit() -> None:
    data = system_pickle(Path("/nonexistent/canary"))
    for level in range(12):
        data = _zip_of(f"level{level}.zip", data)
    elapsed, report = _timed(data, "russian_doll.zip")
    assert elapsed < FAST
    assert "PW301" in _rules(report)
    assert any("nested deeper" in f.message for f in report.findings)
    assert report.verdict is not Verdict.SAFE


def test_payload_inside_the_depth_limit_is_found() -> None:
    data = system_pickle(Path("/nonexistent/canary"))
    for level in range(3):
        data = gzip.compress(_zip_of(f"level{level}.pkl", data))
    (_, report) = _timed(data, "nested.gz")
    assert report.verdict is Verdict.MALICIOUS


def test_a_container_inside_itself_is_a_cycle() -> None:
    limits = Limits()
    outer = _zip_of("same.zip", b"x")
    ctx = Context.root(limits).inside(outer, "same.zip")
    assert ctx.ancestry == (digest(outer),)
    opened = open_bytes(outer, limits, ctx)
    assert opened.errors and [a.rule for a in opened.anomalies] == ["PW301"]
    assert "cycle" in opened.anomalies[0].message


def test_tar_member_count_limit() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for index in range(20):
            info = tarfile.TarInfo(f"f{index}.txt")
            tar.addfile(info, io.BytesIO(b""))
    _, report = _timed(buf.getvalue(), "many.tar", Limits(max_archive_members=5))
    assert "PW301" in _rules(report) and report.errors


def test_extraction_budget_is_shared_by_the_whole_file() -> None:
    data = gzip.compress(b"\0" * (3 << 20))
    _, report = _timed(data, "zeros.gz", Limits(max_extracted_bytes=1 << 20))
    assert "PW301" in _rules(report) and report.errors


def test_missing_lz4_is_an_error_not_a_verdict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lz4", None)
    monkeypatch.setitem(sys.modules, "lz4.frame", None)
    _, report = _timed(b"\x04\x22\x4d\x18" + b"\x00" * 32, "model.joblib")
    assert report.verdict is Verdict.ERROR
    assert any("lz4" in e and "install" in e for e in report.errors)


def test_missing_py7zr_is_an_error_not_a_verdict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "py7zr", None)
    _, report = _timed(b"7z\xbc\xaf\x27\x1c" + b"\x00" * 32, "bundle.7z")
    assert report.verdict is Verdict.ERROR
    assert any("py7zr" in e for e in report.errors)


def test_corrupt_gzip_tail_still_shows_the_payload_before_it() -> None:
    stream = bytearray(gzip.compress(system_pickle(Path("/nonexistent/canary")) + b"\x00" * 4096))
    stream[-30:-8] = b"\xff" * 22  # damage the end of the deflate data
    _, report = _timed(bytes(stream), "broken.pkl.gz")
    assert report.verdict is Verdict.MALICIOUS
    assert "PW300" in _rules(report)


def test_mutated_containers_never_raise() -> None:
    """Flip bytes all over real containers: every scan returns a report (findings or errors), never raises."""
    import random

    from tests.container_samples import npy_object, zip_bundle

    rng = random.Random(3)
    seeds = [zip_bundle(False)(Path("c")), gzip.compress(system_pickle(Path("c"))), _tar_sample()]
    try:
        seeds.append(npy_object(Path("c")))
    except ImportError:
        pass
    deadline = time.monotonic() + 8.0
    count = 0
    while time.monotonic() < deadline and count < 300:
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.3:
            del data[rng.randrange(len(data)) :]
        scan_bytes(bytes(data), "mutant.bin")  # must return, whatever the bytes
        count += 1
    assert count >= 50


def _tar_sample() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        payload = system_pickle(Path("c"))
        info = tarfile.TarInfo("model.pkl")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


@pytest.mark.parametrize("opcode", ["BYTEARRAY8", "BINBYTES8", "BINUNICODE8"])
def test_joblib_walk_never_allocates_from_a_length_field(opcode: str) -> None:
    """joblib's pure-Python reader takes lengths at their word; the walk that mirrors it must not."""
    from tests.asm import OP

    data = (
        Asm(4).short_binunicode("joblib.numpy_pickle").short_binunicode("NumpyArrayWrapper").stack_global().pop()
        .raw(OP[opcode] + struct.pack("<Q", 1 << 60)).raw(b"x" * 64).bytes()
    )  # fmt: skip
    elapsed, report = _timed(data, "model.joblib")
    assert elapsed < FAST and report.verdict is not Verdict.SAFE


def test_tar_member_larger_than_the_archive_is_not_read() -> None:
    header = tarfile.TarInfo("model.pkl")
    header.size = 1_500_000_000
    block = header.tobuf(tarfile.USTAR_FORMAT)
    elapsed, report = _timed(block + system_pickle(Path("/nonexistent/c")), "model.tar")
    assert elapsed < FAST
    assert any("runs past the end" in e for e in report.errors)
