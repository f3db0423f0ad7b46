"""Container samples: for every container picklewarden reads, benign files written by the real library and
hostile ones whose payload (creating a *canary* file) is proven to run under that library's own loader.

Each :class:`Case` names the loader a victim would use (``LOADERS``: ``numpy.load(allow_pickle=True)``,
``joblib.load``, ``torch.load(weights_only=False)``, ``torch.jit.load``, ``pickle.load``, or extracting a
bundle with tarfile/zipfile/py7zr and loading its members). ``tests/test_containers.py`` runs every case
under its loader in a fresh interpreter and scans it. Optional libraries are imported only when a case is
built; cases list what they need so they are skipped cleanly without it.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import pickle
import shlex
import struct
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.asm import Asm


@dataclass(frozen=True)
class Case:
    id: str
    filename: str
    loader: str
    """Key of :data:`LOADERS`."""
    expect: str
    """``safe`` | ``suspicious`` | ``malicious`` (the scan verdict)."""
    make: Callable[[Path], bytes]
    """``make(canary) -> file bytes``; a malicious payload creates ``canary`` when the loader runs."""
    needs: tuple[str, ...] = ()
    """Importable modules needed to build and load the case (numpy, joblib, torch, lz4, py7zr)."""
    fires: bool = True
    """For malicious cases: the loader runs the payload (False documents a loader that refuses it)."""


# -- payloads ------------------------------------------------------------------------------------------


def touch(canary: Path) -> str:
    return f"touch {shlex.quote(str(canary))}"


class Detonator:
    """What an attacker's object pickles to: ``os.system('touch <canary>')`` on load."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (self.command,))


def system_pickle(canary: Path, proto: int = 2) -> bytes:
    return Asm(proto).global_("posix", "system").text(touch(canary)).tuple1().reduce().stop().bytes()


# -- numpy ---------------------------------------------------------------------------------------------


def _np_save(array: Any) -> bytes:
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


def npy_numeric(_c: Path) -> bytes:
    import numpy as np

    return _np_save(np.arange(24, dtype=np.float32).reshape(2, 3, 4))


def npy_structured(_c: Path) -> bytes:
    import numpy as np

    return _np_save(np.zeros(3, dtype=[("x", "<i4"), ("y", "<f8", (2,)), ("s", "U4")]))


def npy_object(_c: Path) -> bytes:
    import collections

    import numpy as np

    return _np_save(np.array([{"a": 1}, "text", 3.5, collections.OrderedDict(k=[1, 2])], dtype=object))


def npy_object_evil(c: Path) -> bytes:
    import numpy as np

    return _np_save(np.array([1, Detonator(touch(c))], dtype=object))


def _npz(arrays: dict[str, Any], compressed: bool = False) -> bytes:
    import numpy as np

    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


def npz_numeric(_c: Path) -> bytes:
    import numpy as np

    return _npz({"w": np.ones((3, 3)), "b": np.arange(3)})


def npz_object_compressed(_c: Path) -> bytes:
    import numpy as np

    return _npz({"w": np.ones(3), "names": np.array(["a", None, 2], dtype=object)}, compressed=True)


def npz_evil(c: Path) -> bytes:
    import numpy as np

    return _npz({"w": np.ones(3), "o": np.array([Detonator(touch(c))], dtype=object)}, compressed=True)


# -- joblib --------------------------------------------------------------------------------------------


def _joblib(value: Any, compress: Any = 0) -> bytes:
    import joblib

    buf = io.BytesIO()
    joblib.dump(value, buf, compress=compress)
    return buf.getvalue()


def _estimator_like() -> dict[str, Any]:
    import numpy as np

    return {
        "coef": np.linspace(0, 1, 40).reshape(4, 10),
        "fortran": np.asfortranarray(np.arange(12, dtype=np.int16).reshape(3, 4)),
        "scalar0d": np.array(3.5),
        "empty": np.zeros((0, 5)),
        "labels": np.array(["cat", "dog"]),
        "objects": np.array([None, "x", 1], dtype=object),
        "records": np.zeros(2, dtype=[("a", "<i8"), ("b", "<f4")]),
        "bools": np.array([True, False]),
        "params": {"alpha": 0.1, "layers": (4, 10)},
    }


def joblib_benign(compress: Any) -> Callable[[Path], bytes]:
    def make(_c: Path) -> bytes:
        return _joblib(_estimator_like(), compress)

    return make


def joblib_evil(compress: Any) -> Callable[[Path], bytes]:
    def make(c: Path) -> bytes:
        import numpy as np

        # The payload sits after an array, where a reader that does not skip array bytes goes astray.
        return _joblib({"w": np.arange(50.0), "hook": Detonator(touch(c))}, compress)

    return make


def joblib_object_array_evil(c: Path) -> bytes:
    import numpy as np

    return _joblib({"w": np.ones(8), "o": np.array([Detonator(touch(c)), 2], dtype=object)})


class _NoTell(io.BufferedIOBase):
    """A write-only file without tell(): joblib then writes arrays without alignment padding."""

    def __init__(self) -> None:
        super().__init__()
        self.buffer = io.BytesIO()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        return self.buffer.write(data)

    def tell(self) -> int:
        raise io.UnsupportedOperation("tell")


def joblib_array_bytes_are_opcodes(c: Path) -> bytes:
    """A parser differential: the array's raw bytes are a pickle payload. joblib.load skips them as data;
    pickle.load (what a joblib-unaware tool runs on a .pkl) executes them."""
    import joblib
    import numpy as np

    out = _NoTell()
    joblib.dump({"a": np.frombuffer(system_pickle(c), dtype=np.uint8)}, out)
    return out.buffer.getvalue()


# -- torch legacy tar ----------------------------------------------------------------------------------


def legacy_tar(
    storages_head: bytes | None = None, pickle_member: bytes | None = None, tensor_args: bytes | None = None
) -> bytes:
    """A torch < 0.4 tar checkpoint holding ``{"weight": <2x3 float tensor>}``, written the way that
    torch's ``_save`` wrote it (modern torch can only read the format). Parts may be replaced by payloads."""
    import torch

    values = struct.pack("<6f", *range(6))
    storages = io.BytesIO()
    storages.write(storages_head if storages_head is not None else pickle.dumps(1, protocol=2))
    pickle.dump(("0", "cpu", torch.FloatStorage), storages, protocol=2)
    storages.write(struct.pack("<q", 6) + values)
    pickle.dump([], storages, protocol=2)
    tensors = io.BytesIO()
    pickle.dump(1, tensors, protocol=2)
    tensors.write(tensor_args if tensor_args is not None else pickle.dumps((7, "0", torch.FloatTensor), protocol=2))
    tensors.write(struct.pack("<i", 2) + b"\0" * 4 + struct.pack("<qq", 2, 3) + struct.pack("<qq", 3, 1))
    tensors.write(struct.pack("<q", 0))

    marker = object()

    class _Pickler(pickle.Pickler):
        def persistent_id(self, obj: Any) -> str | None:
            return "7" if obj is marker else None

    main = io.BytesIO()
    _Pickler(main, protocol=2).dump({"weight": marker})
    sys_info = pickle.dumps(
        {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}},
        protocol=2,
    )
    parts = {
        "sys_info": sys_info,
        "pickle": pickle_member if pickle_member is not None else main.getvalue(),
        "storages": storages.getvalue(),
        "tensors": tensors.getvalue(),
    }
    return _tar(parts.items())


def _tar(members: Any, mode: str = "w") -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=mode, format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def legacy_tar_benign(_c: Path) -> bytes:
    return legacy_tar()


def legacy_tar_evil_storage_count(c: Path) -> bytes:
    # The very first pickle torch runs: the payload, then the real count so loading carries on.
    head = Asm(2).global_("posix", "system").text(touch(c)).tuple1().reduce().pop().binint1(1).stop().bytes()
    return legacy_tar(storages_head=head)


def legacy_tar_evil_tensor_args(c: Path) -> bytes:
    import torch

    args = pickle.dumps((7, "0", torch.FloatTensor), protocol=2)
    payload = Asm(2).global_("posix", "system").text(touch(c)).tuple1().reduce().pop().bytes()
    return legacy_tar(tensor_args=args[:2] + payload + args[2:])


def legacy_tar_evil_main(c: Path) -> bytes:
    return legacy_tar(pickle_member=pickle.dumps({"weight": Detonator(touch(c))}, protocol=2))


# -- TorchScript ---------------------------------------------------------------------------------------


def _script_save(module: Any) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buf)
    return buf.getvalue()


def torchscript_benign(_c: Path) -> bytes:
    import torch

    torch.manual_seed(0)
    return _script_save(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1)))


def torchscript_setstate_writes_file(c: Path) -> bytes:
    """TorchScript's torch.save (aten::save) in a scripted __setstate__: torch.jit.load writes the file."""
    import torch

    from tests._script_modules import make_file_writer

    module = make_file_writer(str(c))
    assert isinstance(module, torch.nn.Module)
    return _script_save(module)


# -- compressed pickles and bundles --------------------------------------------------------------------


def _benign_pickle() -> bytes:
    import collections

    return pickle.dumps({"epoch": 3, "history": collections.OrderedDict(loss=[0.5, 0.25]), "blob": b"\x00" * 64})


def compressed(kind: str, evil: bool) -> Callable[[Path], bytes]:
    def make(c: Path) -> bytes:
        data = system_pickle(c) if evil else _benign_pickle()
        match kind:
            case "gzip":
                return gzip.compress(data)
            case "bz2":
                return bz2.compress(data)
            case "xz":
                return lzma.compress(data)
            case _:
                raise ValueError(kind)

    return make


def _torch_state_dict(evil: Path | None = None) -> bytes:
    import torch

    torch.manual_seed(0)
    state: dict[str, Any] = dict(torch.nn.Linear(4, 2).state_dict())
    if evil is not None:
        state["hook"] = Detonator(touch(evil))
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def tar_gz_bundle(evil: bool) -> Callable[[Path], bytes]:
    def make(c: Path) -> bytes:
        members = [
            ("model/README.md", b"# a model\n"),
            ("model/pytorch_model.bin", _torch_state_dict(c if evil else None)),
            ("model/extra.npy", npy_numeric(c)),
        ]
        return _tar(members, "w:gz")

    return make


def zip_bundle(evil: bool) -> Callable[[Path], bytes]:
    def make(c: Path) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("config.json", '{"layers": 2}')
            z.writestr("weights/scaler.pkl", system_pickle(c) if evil else _benign_pickle())
        return buf.getvalue()

    return make


def seven_zip_bundle(evil: bool) -> Callable[[Path], bytes]:
    def make(c: Path) -> bytes:
        import py7zr

        buf = io.BytesIO()
        with py7zr.SevenZipFile(buf, "w") as z:
            z.writestr(b'{"v": 1}', "meta.json")
            z.writestr(system_pickle(c) if evil else _benign_pickle(), "model.pkl")
        return buf.getvalue()

    return make


# -- nested payloads -----------------------------------------------------------------------------------


def nested_torch_load_from_bytes(c: Path) -> bytes:
    """torch.storage._load_from_bytes(b) is torch.load(BytesIO(b)): a whole torch.save file inside a pickle."""
    inner = _torch_state_dict(c)
    return Asm(2).global_("torch.storage", "_load_from_bytes").binbytes(inner).tuple1().reduce().stop().bytes()


def nested_numpy_load_bytesio(c: Path) -> bytes:
    """functools.partial(numpy.load, allow_pickle=True)(io.BytesIO(<.npy with a hostile object array>))."""
    npy = npy_object_evil(c)
    return (
        Asm(2)
        .global_("functools", "partial").global_("numpy", "load").tuple1().reduce()
        .mark().global_("numpy", "load").empty_tuple().empty_dict().text("allow_pickle").newtrue().setitem()
        .none().tuple_().build()
        .global_("io", "BytesIO").binbytes(npy).tuple1().reduce().tuple1().reduce()
        .stop().bytes()
    )  # fmt: skip


def nested_dormant_benign(_c: Path) -> bytes:
    import collections

    inner = pickle.dumps(collections.OrderedDict(a=1), protocol=2)
    return pickle.dumps({"cached": inner, "n": 1}, protocol=4)


# -- the table -----------------------------------------------------------------------------------------

_NP = ("numpy",)
_JL = ("numpy", "joblib")
_T = ("torch",)

BENIGN: list[Case] = [
    Case("npy-numeric", "weights.npy", "numpy", "safe", npy_numeric, _NP),
    Case("npy-structured", "records.npy", "numpy", "safe", npy_structured, _NP),
    Case("npy-object-plain-values", "objects.npy", "numpy", "safe", npy_object, _NP),
    Case("npz-numeric", "arrays.npz", "numpy", "safe", npz_numeric, _NP),
    Case("npz-compressed-object", "mixed.npz", "numpy", "safe", npz_object_compressed, _NP),
    Case("joblib-plain", "model.joblib", "joblib", "safe", joblib_benign(0), _JL),
    *[
        Case(f"joblib-{kind}", f"model_{kind}.joblib", "joblib", "safe", joblib_benign((kind, 3)), _JL + extra)
        for kind, extra in (("zlib", ()), ("gzip", ()), ("bz2", ()), ("lzma", ()), ("xz", ()), ("lz4", ("lz4",)))
    ],
    Case("torch-legacy-tar", "old_checkpoint.pth", "torch", "safe", legacy_tar_benign, _T),
    Case("torchscript", "scripted.pt", "torch.jit", "safe", torchscript_benign, _T),
    *[Case(f"{kind}-pickle", f"state.pkl.{ext}", "joblib", "safe", compressed(kind, False), ("joblib",))
      for kind, ext in (("gzip", "gz"), ("bz2", "bz2"), ("xz", "xz"))],
    Case("tar-gz-bundle", "model.tar.gz", "tar", "safe", tar_gz_bundle(False), _T + _NP),
    Case("zip-bundle", "bundle.zip", "zip", "safe", zip_bundle(False)),
    Case("7z-bundle", "bundle.7z", "7z", "safe", seven_zip_bundle(False), ("py7zr",)),
    Case("nested-dormant-benign-pickle", "cache.pkl", "pickle", "safe", nested_dormant_benign),
]  # fmt: skip

MALICIOUS: list[Case] = [
    Case("npy-object-array-reduce", "evil.npy", "numpy", "malicious", npy_object_evil, _NP),
    Case("npz-object-member-reduce", "evil.npz", "numpy", "malicious", npz_evil, _NP),
    Case("joblib-plain-after-array", "evil.joblib", "joblib", "malicious", joblib_evil(0), _JL),
    *[
        Case(f"joblib-{kind}-after-array", f"evil_{kind}.pkl", "joblib", "malicious", joblib_evil((kind, 3)),
             _JL + extra)
        for kind, extra in (("zlib", ()), ("gzip", ()), ("bz2", ()), ("lzma", ()), ("xz", ()), ("lz4", ("lz4",)))
    ],
    Case("joblib-object-array-pickle", "evil_objects.joblib", "joblib", "malicious", joblib_object_array_evil, _JL),
    Case("joblib-array-bytes-run-under-pickle-load", "looks_like_joblib.pkl", "pickle", "malicious",
         joblib_array_bytes_are_opcodes, _JL),
    Case("torch-legacy-tar-storage-count", "evil_legacy.pth", "torch", "malicious", legacy_tar_evil_storage_count, _T),
    Case("torch-legacy-tar-tensor-record", "evil_legacy_t.pt", "torch", "malicious", legacy_tar_evil_tensor_args, _T),
    Case("torch-legacy-tar-main-pickle", "evil_legacy_main.pt", "torch", "malicious", legacy_tar_evil_main, _T),
    Case("torchscript-setstate-aten-save", "evil_scripted.pt", "torch.jit", "malicious",
         torchscript_setstate_writes_file, _T),
    *[Case(f"{kind}-pickle-system", f"evil.pkl.{ext}", "joblib", "malicious", compressed(kind, True), ("joblib",))
      for kind, ext in (("gzip", "gz"), ("bz2", "bz2"), ("xz", "xz"))],
    Case("tar-gz-bundle-torch-reduce", "evil_model.tar.gz", "tar", "malicious", tar_gz_bundle(True), _T + _NP),
    Case("zip-bundle-pickle", "evil_bundle.zip", "zip", "malicious", zip_bundle(True)),
    Case("7z-bundle-pickle", "evil_bundle.7z", "7z", "malicious", seven_zip_bundle(True), ("py7zr",)),
    Case("nested-torch-storage-load-from-bytes", "nested_torch.pkl", "pickle", "malicious",
         nested_torch_load_from_bytes, _T),
    Case("nested-numpy-load-bytesio-partial", "nested_numpy.pkl", "pickle", "malicious", nested_numpy_load_bytesio,
         _NP),
]  # fmt: skip

ALL: list[Case] = BENIGN + MALICIOUS

LOADERS: dict[str, str] = {
    "numpy": "import numpy as np\nr = np.load(path, allow_pickle=True)\nif hasattr(r, 'files'):\n"
    "    [r[k] for k in r.files]",
    "joblib": "import joblib\njoblib.load(path)",
    "torch": "import torch\ntorch.load(path, weights_only=False)",
    "torch.jit": "import torch\ntorch.jit.load(path)",
    "pickle": "import pickle\nwith open(path, 'rb') as f:\n    pickle.load(f)",
    "tar": "import tarfile\nwith tarfile.open(path) as t:\n    for m in t.getmembers():\n        if m.isfile():\n"
    "            member(t.extractfile(m).read(), m.name)",
    "zip": "import zipfile\nwith zipfile.ZipFile(path) as z:\n    for n in z.namelist():\n        member(z.read(n), n)",
    "7z": "import py7zr, tempfile, pathlib\nwith tempfile.TemporaryDirectory() as d:\n"
    "    py7zr.SevenZipFile(path).extractall(d)\n    for p in sorted(pathlib.Path(d).rglob('*')):\n"
    "        if p.is_file():\n            member(p.read_bytes(), p.name)",
}
"""Loader code per case; ``path`` is the sample and ``member(data, name)`` loads one extracted file."""

MEMBER_LOADER = """
def member(data, name):
    import io, pickle
    if name.endswith(('.json', '.md')):
        return
    if name.endswith('.npy'):
        import numpy as np
        return np.load(io.BytesIO(data), allow_pickle=True)
    if data[:4] == b'PK\\x03\\x04':
        import torch
        return torch.load(io.BytesIO(data), weights_only=False)
    return pickle.loads(data)
"""


def write(case: Case, directory: Path, canary: Path) -> Path:
    path = directory / case.filename
    path.write_bytes(case.make(canary))
    return path
