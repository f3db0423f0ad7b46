"""Model files for the scale tests (parallel, cache, remote, distributed), written by hand.

``make_checkpoint`` writes a PyTorch ZIP checkpoint the way ``torch.save`` lays it out (``archive/`` prefix,
64-byte aligned stored members, version and serialization id records) without torch; its storage member
can be a hole, so a "1 GB" checkpoint costs no disk. ``make_tree`` writes a small directory of benign,
malicious, broken and non-model files.
"""

from __future__ import annotations

import contextlib
import http.server
import re
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.asm import Asm

GIB = 1 << 30


def _state_dict_pickle(numel: int, payload: bool) -> bytes:
    """data.pkl of ``{"w": tensor}`` as torch.save writes it (protocol 2, persistent storage id)."""
    asm = Asm(proto=2).empty_dict().binput(0).mark().binunicode("w")
    asm.global_("torch._utils", "_rebuild_tensor_v2").mark()
    asm.mark().binunicode("storage").global_("torch", "FloatStorage").binunicode("0").binunicode("cpu")
    asm.binint(numel).tuple_().binpersid()
    asm.binint1(0).binint(numel).tuple1().binint1(1).tuple1().newfalse()
    asm.global_("collections", "OrderedDict").empty_tuple().reduce().tuple_().reduce()
    if payload:  # a classic: the state dict also runs a command
        asm.binunicode("x").global_("os", "system").binunicode("echo pwned").tuple1().reduce()
    return asm.setitems().stop().bytes()


@dataclass
class _Zip:
    out: Path
    entries: list[tuple[bytes, int, int, int]] = field(default_factory=list)  # name, offset, size, crc
    position: int = 0

    def add(self, name: str, data: bytes | None = None, *, hole: int = 0) -> None:
        """A stored member; ``hole`` bytes of zeros are skipped over (left sparse) instead of written."""
        raw = name.encode()
        size = hole if data is None else len(data)
        crc = _zeros_crc(hole) if data is None else zlib.crc32(data)
        # torch pads with an "FB" extra field so that every member's data starts 64-byte aligned.
        unpadded = self.position + 30 + len(raw) + 4
        extra = b"FB" + struct.pack("<H", -unpadded % 64) + bytes(-unpadded % 64)
        header = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 0, 0, 0x21, crc, size, size, len(raw), len(extra))
        with self.out.open("r+b" if self.position else "wb") as handle:
            handle.seek(self.position)
            handle.write(header + raw + extra)
            if data is not None:
                handle.write(data)
        self.entries.append((raw, self.position, size, crc))
        self.position += len(header) + len(raw) + len(extra) + size

    def close(self) -> None:
        directory = b""
        for raw, offset, size, crc in self.entries:
            directory += struct.pack(
                "<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, 0, 0, 0x21, crc, size, size, len(raw), 0, 0, 0, 0, 0,
                offset,
            ) + raw  # fmt: skip
        count = len(self.entries)
        end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, count, count, len(directory), self.position, 0)
        with self.out.open("r+b") as handle:
            handle.seek(self.position)
            handle.write(directory + end)


def _zeros_crc(length: int) -> int:
    crc, chunk = 0, bytes(1 << 24)
    while length:
        step = min(length, len(chunk))
        crc = zlib.crc32(chunk[:step], crc)
        length -= step
    return crc


def make_checkpoint(out: Path, *, storage: int, payload: bool = False) -> int:
    """A torch ZIP checkpoint whose only tensor has ``storage`` bytes. Returns the pickle's size."""
    pickle = _state_dict_pickle(storage // 4, payload)
    archive = _Zip(out)
    archive.add("archive/data.pkl", pickle)
    archive.add("archive/byteorder", b"little")
    archive.add("archive/data/0", hole=storage)
    archive.add("archive/version", b"3\n")
    archive.add("archive/.data/serialization_id", b"1234567890")
    archive.close()
    return len(pickle)


def malicious_pickle(command: str = "echo picklewarden-test") -> bytes:
    return Asm(proto=2).global_("os", "system").binunicode(command).tuple1().reduce().stop().bytes()


def make_tree(root: Path) -> list[Path]:
    """A directory of files a scan must tell apart. Returns the files written."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "sub").mkdir(exist_ok=True)
    files = []
    for index in range(6):
        path = root / f"model-{index}.pt"
        make_checkpoint(path, storage=256, payload=index % 3 == 0)
        files.append(path)
    for index in range(3):
        path = root / "sub" / f"evil-{index}.pkl"
        path.write_bytes(malicious_pickle(f"echo {index}"))
        files.append(path)
    (root / "sub" / "copy-of-evil-0.pkl").write_bytes(malicious_pickle("echo 0"))  # a duplicate by content
    (root / "broken.pkl").write_bytes(malicious_pickle()[:-3])
    (root / "notes.txt").write_text("not a model\n")
    (root / "data.npy").write_bytes(malicious_pickle())  # a pickle disguised by its extension
    files += [root / "sub" / "copy-of-evil-0.pkl", root / "broken.pkl", root / "notes.txt", root / "data.npy"]
    return files


# -- an HTTP server that honours Range and counts what it sends ------------------------------------------------


class RangeServer(http.server.ThreadingHTTPServer):
    """Serves files under ``root``, honouring ``Range: bytes=a-b``, and counts the body bytes it sends."""

    daemon_threads = True

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root
        self.sent = 0
        self.requests = 0
        self.lock = threading.Lock()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{name}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: RangeServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _target(self) -> Path | None:
        path = self.server.root / self.path.lstrip("/")
        return path if path.is_file() else None

    def do_HEAD(self) -> None:
        target = self._target()
        if target is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(target.stat().st_size))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()

    def do_GET(self) -> None:
        target = self._target()
        if target is None:
            self.send_error(404)
            return
        size = target.stat().st_size
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if match is None:
            start, end, status = 0, size - 1, 200
        else:
            start = int(match.group(1))
            end = min(int(match.group(2)) if match.group(2) else size - 1, size - 1)
            status = 206
        self.send_response(status)
        self.send_header("Content-Length", str(end - start + 1))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        with target.open("rb") as handle:
            handle.seek(start)
            remaining = end - start + 1
            while remaining:
                chunk = handle.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                with self.server.lock:  # counted before it is sent, so a client never sees more than this
                    self.server.sent += len(chunk)
                self.wfile.write(chunk)
                remaining -= len(chunk)
        with self.server.lock:
            self.server.requests += 1


@contextlib.contextmanager
def serve(root: Path) -> Iterator[RangeServer]:
    """An HTTP server for the files under ``root`` on 127.0.0.1, for the duration of the block."""
    httpd = RangeServer(root)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()


def _url(server: RangeServer, name: str) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/{name}"
