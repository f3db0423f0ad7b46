"""Samples for the reader differentials of issue 12 on the container side: files that one loader reads
differently from another, each built with the real libraries. Malicious samples create a canary under the
loader named in their :class:`~tests.container_samples.Case`; ``tests/test_loader_views.py`` proves it in a
fresh interpreter, and that every benign twin loads there without touching anything.

Classes (issue 12): 1 numpy's npz view of any ZIP, 2 tar sniffing as ``tarfile`` accepts it, 4b npy
headers as numpy parses them, 7 damaged ZIPs (flags, CRC, local names).
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.container_samples import Case, Detonator, legacy_tar, legacy_tar_evil_main, touch
from tests.corpus import _zip_entries as _entries

# -- helpers -------------------------------------------------------------------------------------------


def _torch_save(obj: Any) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _np_save(array: Any) -> bytes:
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


def _object_npy(evil: Path | None, padding: int = 0) -> bytes:
    """An object-array ``.npy``: a Detonator (when ``evil``) ahead of ``padding`` bytes of plain data."""
    import numpy as np

    first: Any = Detonator(touch(evil)) if evil is not None else {"epoch": 3}
    return _np_save(np.array([first, b"\0" * padding, "label"], dtype=object))


def _rezip(data: bytes, replace: dict[str, bytes] | None = None, add: dict[str, bytes] | None = None) -> bytes:
    """The archive rewritten (stored, same order), with members replaced or added at the end."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            body = (replace or {}).get(info.filename, src.read(info))
            dst.writestr(zipfile.ZipInfo(info.filename, date_time=info.date_time), body)
        for name, body in (add or {}).items():
            dst.writestr(zipfile.ZipInfo(name), body)
    return out.getvalue()


def _prefix(data: bytes) -> str:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return z.namelist()[0].split("/", 1)[0]


Patch = Callable[[bytearray, int, int], None]


def _patch(data: bytes, suffix: str, *patches: Patch) -> bytes:
    out = bytearray(data)
    hits = [(central, local) for name, central, local in _entries(out) if name.endswith(suffix)]
    assert hits, f"no member ending in {suffix!r}"
    for central, local in hits:
        for patch in patches:
            patch(out, central, local)
    return bytes(out)


def _central_flags(bits: int) -> Patch:
    def patch(b: bytearray, central: int, _local: int) -> None:
        b[central + 8] |= bits

    return patch


def _local_flags(bits: int) -> Patch:
    def patch(b: bytearray, _central: int, local: int) -> None:
        b[local + 6] |= bits

    return patch


def _bad_crc(b: bytearray, central: int, local: int) -> None:
    b[central + 16] ^= 0xFF
    b[local + 14] ^= 0xFF


def _local_name(b: bytearray, _central: int, local: int) -> None:
    (name_len,) = struct.unpack_from("<H", b, local + 26)
    b[local + 30 + name_len - 1] ^= 0x20  # e.g. ".../data.pkl" -> ".../data.pkL" in the local header only


# -- class 1: numpy.load reads any ZIP as an npz -------------------------------------------------------


def torch_zip_with_npy_member(evil: bool) -> Callable[[Path], bytes]:
    def make(c: Path) -> bytes:
        import torch

        base = _torch_save({"w": torch.ones(3)})
        return _rezip(base, add={f"{_prefix(base)}/extra/stats.npy": _object_npy(c if evil else None)})

    return make


def torch_zip_data_pkl_is_npy(c: Path) -> bytes:
    """data.pkl starts with a NumPy header: torch fails at its first byte, numpy unpickles what follows."""
    import torch

    base = _torch_save({"w": torch.ones(3)})
    return _rezip(base, replace={f"{_prefix(base)}/data.pkl": _object_npy(c)})


# -- class 2: tar sniffing as tarfile accepts it -------------------------------------------------------


def _base256_checksum(tar: bytes) -> bytes:
    """The first header's checksum rewritten in GNU base-256 form, which tarfile (and so torch) accepts."""
    block = bytearray(tar[:512])
    block[148:156] = b" " * 8
    total = sum(block)
    block[148:156] = b"\x80" + total.to_bytes(7, "big")
    return bytes(block) + tar[512:]


def legacy_tar_base256(evil: bool) -> Callable[[Path], bytes]:
    def make(c: Path) -> bytes:
        return _base256_checksum(legacy_tar_evil_main(c) if evil else legacy_tar())

    return make


def tar_npy_polyglot(evil: bool) -> Callable[[Path], bytes]:
    """512 bytes that are both a tar header (tarfile accepts it: no NUL anywhere, octal fields padded with
    spaces) and an ``.npy`` header (numpy's literal_eval reads the dict, then a comment to the end of the
    block). tarfile sees one empty member and stops at the next block; numpy unpickles the bytes after it."""

    def make(c: Path) -> bytes:
        npy = _object_npy(c if evil else None)
        (length,) = struct.unpack_from("<H", npy, 8)
        payload = npy[10 + length :]
        block = bytearray(b" " * 512)
        start = b"\x93NUMPY\x01\x00" + struct.pack("<H", 502) + b"{'descr':'|O','fortran_order':False,'shape':(3,)}#"
        block[: len(start)] = start
        for at, field in ((100, b"0000644 "), (108, b"0000000 "), (116, b"0000000 "), (124, b"00000000000 ")):
            block[at : at + len(field)] = field
        block[136:148] = b"00000000000 "
        block[156:157] = b"0"
        block[148:156] = b"%07o " % (sum(block[:148]) + 256 + sum(block[156:]))
        tail = b"\0" * (-len(payload) % 512 + 1024)
        return bytes(block) + payload + tail

    return make


def tar_with_zip_appended(evil: bool) -> Callable[[Path], bytes]:
    """A benign legacy torch tar with a ZIP appended: torch.load reads the tar, zipfile (which corrects
    offsets for prepended bytes) reads the ZIP and its pickle."""

    def make(c: Path) -> bytes:
        from tests.container_samples import system_pickle

        inner = system_pickle(c) if evil else pickle.dumps({"lr": 0.1}, protocol=2)
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
            z.writestr("model.pkl", inner)
        return legacy_tar() + out.getvalue()

    return make


def tar_bundle_torch_last(_c: Path) -> bytes:
    """A plain tar bundle whose last member is a torch checkpoint: the checkpoint's end record lies near the
    end of the tar, but it is a member (scanned as one), not an appended archive."""
    import tarfile

    import torch

    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, body in (("README.md", b"# weights\n"), ("model.pt", _torch_save({"w": torch.arange(6.0)}))):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return out.getvalue()


# -- class 4b: npy headers as numpy parses them --------------------------------------------------------


def _with_header(npy: bytes, text: str) -> bytes:
    """``npy`` (version 1.0) with its header dict replaced by ``text``, padded as numpy pads."""
    (length,) = struct.unpack_from("<H", npy, 8)
    body = npy[10 + length :]
    header = text.encode("latin1")
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + body


def npy_unary_plus(evil: bool) -> Callable[[Path], bytes]:
    def make(c: Path) -> bytes:
        # ast.literal_eval reads "+3" as 3: numpy accepts the header and unpickles the object array after it.
        return _with_header(
            _object_npy(c if evil else None), "{'descr': '|O', 'fortran_order': False, 'shape': (+3,), }"
        )

    return make


# -- class 7: damaged ZIPs -----------------------------------------------------------------------------


def npz_bad_crc_payload_first(evil: bool, deflated: bool = False) -> Callable[[Path], bytes]:
    """zipfile checks a member's CRC only once it has read to the end: the pickle's first opcodes (past
    the unpickler's 128 KiB read-ahead) have run by then."""

    def make(c: Path) -> bytes:
        member = _object_npy(c if evil else None, padding=400_000)
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED if deflated else zipfile.ZIP_STORED) as z:
            z.writestr("w.npy", _np_save(list(range(3))))
            z.writestr("objects.npy", member)
        return _patch(out.getvalue(), "objects.npy", _bad_crc)

    return make


def npz_local_flags(c: Path) -> bytes:
    """Encryption, strong-encryption and patch bits in the object member's local header only: zipfile (like
    torch) takes the flags from the central directory, so numpy reads the member."""
    import numpy as np

    buf = io.BytesIO()
    np.savez(buf, w=np.ones(3), o=np.array([Detonator(touch(c))], dtype=object))
    return _patch(buf.getvalue(), "o.npy", _local_flags(0x61))


def central_flags(bits: int, torch_zip: bool) -> Callable[[Path], bytes]:
    """A stored pickle member flagged in the central directory: torch and zipfile both refuse it, yet the
    bytes are a plain pickle any reader ignoring the flag takes. No common loader fires: not in the table."""

    def make(c: Path) -> bytes:
        if torch_zip:
            return _patch(_torch_save({"w": Detonator(touch(c))}), "/data.pkl", _central_flags(bits))
        import numpy as np

        buf = io.BytesIO()
        np.savez(buf, o=np.array([Detonator(touch(c))], dtype=object))
        return _patch(buf.getvalue(), "o.npy", _central_flags(bits))

    return make


def torch_zip_local_damage(evil: bool) -> Callable[[Path], bytes]:
    """data.pkl with encryption, strong-encryption and patch bits in its local header, a wrong CRC and a
    different local name: torch ignores all of it and unpickles the member."""

    def make(c: Path) -> bytes:
        import torch

        state: dict[str, Any] = {"w": torch.ones(2)}
        if evil:
            state["x"] = Detonator(touch(c))
        return _patch(_torch_save(state), "/data.pkl", _local_flags(0x61), _bad_crc, _local_name)

    return make


# -- the table -----------------------------------------------------------------------------------------

_NP = ("numpy",)
_T = ("torch",)
_TN = ("torch", "numpy")

BENIGN: list[Case] = [
    Case("npz-view-npy-member-benign", "with_stats.pt", "numpy", "safe", torch_zip_with_npy_member(False), _TN),
    Case("tar-npy-polyglot-benign", "poly.npy", "numpy", "safe", tar_npy_polyglot(False), _NP),
    Case("tar-with-zip-appended-benign", "tar_zip.pth", "zip", "safe", tar_with_zip_appended(False), _T),
    Case("tar-bundle-torch-member-last", "bundle.tar", "tar", "safe", tar_bundle_torch_last, _T),
    Case("tar-base256-checksum-benign", "old_b256.pth", "torch", "safe", legacy_tar_base256(False), _T),
    Case("npy-unary-plus-shape-benign", "plus.npy", "numpy", "safe", npy_unary_plus(False), _NP),
    Case("zip-local-damage-benign", "damaged.pt", "torch", "suspicious", torch_zip_local_damage(False), _T),
]  # fmt: skip

MALICIOUS: list[Case] = [
    Case("npz-view-torch-zip-npy-member", "evil_stats.pt", "numpy", "malicious", torch_zip_with_npy_member(True), _TN),
    Case("npz-view-data-pkl-is-npy", "evil_npyhead.pt", "numpy", "malicious", torch_zip_data_pkl_is_npy, _TN),
    Case("tar-npy-polyglot", "evil_poly.npy", "numpy", "malicious", tar_npy_polyglot(True), _NP),
    Case("tar-with-zip-appended", "evil_tar_zip.pth", "zip", "malicious", tar_with_zip_appended(True), _T),
    Case("tar-base256-checksum", "evil_b256.pth", "torch", "malicious", legacy_tar_base256(True), _T),
    Case("npy-unary-plus-shape", "evil_plus.npy", "numpy", "malicious", npy_unary_plus(True), _NP),
    Case("npz-bad-crc-payload-first", "evil_crc.npz", "numpy", "malicious", npz_bad_crc_payload_first(True), _NP),
    Case("npz-deflated-bad-crc-payload-first", "evil_crc_z.npz", "numpy", "malicious",
         npz_bad_crc_payload_first(True, deflated=True), _NP),
    Case("npz-local-flags", "evil_flags.npz", "numpy", "malicious", npz_local_flags, _NP),
    Case("torch-zip-local-damage", "evil_damaged.pt", "torch", "malicious", torch_zip_local_damage(True), _T),
]  # fmt: skip

ALL: list[Case] = BENIGN + MALICIOUS
