"""``picklewarden.convert``: every tensor torch.load would return, in safetensors, without running the file.

The reference is always torch itself: each file is loaded with ``torch.load(weights_only=False)`` (benign
files only), flattened by the naming rules convert documents, and compared with what the ``safetensors``
library reads back from convert's output, tensor by tensor: name, dtype, shape and bytes.
"""

from __future__ import annotations

import collections
import importlib.util
import io
import json
import struct
import subprocess
import sys
import textwrap
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import picklewarden
from picklewarden import DEFAULT_LIMITS
from picklewarden.extract import storage
from picklewarden.extract.errors import ConvertError, UnsafeModelError
from picklewarden.extract.refs import Flatten
from tests.corpus import BENIGN, MALICIOUS, Sample, write

_HAVE_TORCH = importlib.util.find_spec("torch") is not None
_TORCH_BENIGN = [s for s in BENIGN if s.loader == "torch"]


# -- references ------------------------------------------------------------------------------------------------
def _torch_load(path: Path) -> Any:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantized and legacy-format deprecation notices
        return torch.load(path, weights_only=False)


def _writable(tensor: Any) -> bool:
    """Dense tensors of a dtype safetensors has: what convert must write."""
    import torch

    unsupported = {torch.complex128, torch.complex32, getattr(torch, "float4_e2m1fn_x2", None)}
    return tensor.layout == torch.strided and not tensor.is_quantized and tensor.dtype not in unsupported


def _expected(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Tensors of a torch.load result, named as convert documents: dicts and lists joined with '.',
    modules by state_dict()."""
    import torch

    out: dict[str, Any] = {}
    if isinstance(obj, torch.nn.Module):
        out.update({prefix + name: t for name, t in obj.state_dict().items() if _writable(t)})
    elif isinstance(obj, torch.Tensor):
        if _writable(obj):
            out[prefix[:-1] or "tensor"] = obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            out.update(_expected(value, f"{prefix}{key}."))
    elif isinstance(obj, (list, tuple)) and not isinstance(obj, torch.Size):
        for index, value in enumerate(obj):
            out.update(_expected(value, f"{prefix}{index}."))
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        out.update(_expected(vars(obj), prefix))  # tensors held by other objects are kept, by attribute
    return out


def _raw(tensor: Any) -> bytes:
    import torch

    flat = tensor.detach().contiguous().reshape(-1)
    return bytes(flat.view(torch.uint8).numpy().tobytes()) if flat.numel() else b""


def _assert_converted(out: Path, expected: dict[str, Any]) -> None:
    from safetensors.torch import load_file

    got = load_file(out)
    assert set(got) == set(expected), (sorted(set(got) - set(expected)), sorted(set(expected) - set(got)))
    for name, tensor in expected.items():
        assert got[name].dtype == tensor.dtype, name
        assert tuple(got[name].shape) == tuple(tensor.shape), name
        assert _raw(got[name]) == _raw(tensor), name


def _header(out: Path) -> dict[str, Any]:
    data = out.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    assert length % 8 == 0, "the header is padded so that tensor data starts aligned"
    header: dict[str, Any] = json.loads(data[8 : 8 + length])
    ends = sorted(v["data_offsets"] for k, v in header.items() if k != "__metadata__")
    assert [b for b, _ in ends] == [0, *(e for _, e in ends[:-1])], "data is covered back to back"
    assert 8 + length + (ends[-1][1] if ends else 0) == len(data)
    return header


def _torch_file(obj: object, tmp_path: Path, *, legacy: bool = False, name: str = "model.pt") -> Path:
    import torch

    path = tmp_path / name
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
    path.write_bytes(buf.getvalue())
    return path


def _round_trip(obj: object, tmp_path: Path, *, legacy: bool = False) -> picklewarden.extract.converting.ConvertResult:
    path = _torch_file(obj, tmp_path, legacy=legacy)
    out = tmp_path / "model.safetensors"
    result = picklewarden.convert(path, out)
    _assert_converted(out, _expected(_torch_load(path)))
    _header(out)
    assert result.tensors and result.report.verdict.label in ("safe", "suspicious")
    return result


# -- the corpus ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sample", _TORCH_BENIGN, ids=lambda s: s.id)
def test_benign_corpus_converts_to_what_torch_loads(sample: Sample, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    path = write(sample, tmp_path, tmp_path / "canary")
    out = tmp_path / "out.safetensors"
    result = picklewarden.convert(path, out)
    _assert_converted(out, _expected(_torch_load(path)))
    assert list(result.tensors) == [name for name in _header(out) if name != "__metadata__"]


def test_training_checkpoint_flattens_with_dots_and_keeps_plain_metadata(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    from safetensors import safe_open

    sample = next(s for s in BENIGN if s.id == "benign-torch-zip-training-checkpoint")
    path = write(sample, tmp_path, tmp_path / "canary")
    out = tmp_path / "out.safetensors"
    result = picklewarden.convert(path, out)
    assert result.flatten is Flatten.NESTED
    assert "model.0.weight" in result.tensors and "optimizer.state.0.momentum_buffer" in result.tensors
    with safe_open(str(out), "pt") as f:
        metadata = f.metadata()
    assert json.loads(metadata["epoch"]) == 3
    groups = json.loads(metadata["optimizer.param_groups"])
    assert groups[0]["lr"] == 0.1 and groups[0]["params"] == [0, 1, 2, 3, 4, 5]
    skipped = {s.name: s.reason for s in result.skipped}
    assert {"args", "np", "when", "path"} <= skipped.keys()
    assert "argparse.Namespace" in skipped["args"]


def test_tensor_zoo_lists_what_safetensors_cannot_hold(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    sample = next(s for s in BENIGN if s.id == "benign-torch-zip-tensor-zoo")
    path = write(sample, tmp_path, tmp_path / "canary")
    result = picklewarden.convert(path, tmp_path / "out.safetensors")
    skipped = {s.name: s.reason for s in result.skipped}
    assert "sparse" in skipped["sparse"] and "quantized" in skipped["quantized"]
    assert set(result.tensors) == {"bf16", "ordered.w"}
    assert set(result.metadata) == {"size", "counts.k"}


# -- dtypes, views, structures -----------------------------------------------------------------------------------
def _every_dtype(legacy: bool) -> dict[str, Any]:
    import torch

    torch.manual_seed(0)
    raw = torch.randint(0, 256, (48,), dtype=torch.uint8)  # arbitrary bit patterns, NaNs included
    out: dict[str, Any] = {"bool": torch.tensor([True, False, True])}
    dtypes = [
        torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16,
        torch.int8, torch.uint8, torch.complex64,
    ]  # fmt: skip
    if not legacy:
        # Saved as untyped storages (_rebuild_tensor_v3), which torch 2.13's legacy loader cannot read back.
        dtypes += [torch.uint16, torch.uint32, torch.uint64, torch.float8_e4m3fn, torch.float8_e5m2]
        dtypes += [torch.float8_e4m3fnuz, torch.float8_e5m2fnuz]
    for dtype in dtypes:
        out[str(dtype).removeprefix("torch.")] = raw.view(dtype).reshape(2, -1).clone()
    out["scalar"] = torch.tensor(3.5)
    out["empty"] = torch.zeros(0, 3)
    return out


def _views(legacy: bool = False) -> dict[str, Any]:
    import torch

    torch.manual_seed(1)
    a = torch.randn(4, 5)
    cube = torch.arange(60, dtype=torch.int32).reshape(3, 4, 5)
    return {
        "a": a,
        "row": a[1],
        "column": a[:, 2],
        "transposed": a.t(),
        "stepped": a[1:4, ::2],
        "element": a[2, 3],
        "nothing": a[:0],
        "expanded": torch.randn(3, 1).expand(3, 4),
        "broadcast": torch.tensor(2.5).expand(2, 3),
        "permuted": cube.permute(2, 0, 1),
        "narrowed": cube.narrow(1, 1, 2),
        "diagonal": a.diagonal(),
        "tail": a.reshape(-1)[7:],
        "bf16_t": torch.randn(3, 2).to(torch.bfloat16).t(),
        **({} if legacy else {"fp8_t": torch.randn(4, 3).to(torch.float8_e4m3fn).t()}),
    }


def _nested(legacy: bool = False) -> dict[str, Any]:
    import torch
    from torch import nn

    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    return {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "epoch": 7,
        "cfg": {"lr": 1e-3, "name": "tiny", "layers": [3, 4, 2], "flag": True, "none": None},
        "history": [torch.ones(2), torch.zeros(3)],
        "parameter": nn.Parameter(torch.randn(2, 2)),
        "ordered": collections.OrderedDict(inner=collections.OrderedDict(w=torch.randn(2))),
    }


def _full_model(legacy: bool = False) -> Any:
    import torch
    from torch import nn

    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Linear(3, 3, bias=False), nn.BatchNorm1d(3), nn.Linear(3, 3), nn.Sequential(nn.Linear(3, 1))
    )
    model[2].weight = model[0].weight  # tied weights: both names, as in state_dict()
    model[1].register_buffer("scratch", torch.ones(3), persistent=False)  # not in state_dict()
    return model


_CASES: dict[str, Callable[[bool], Any]] = {
    "every-dtype": _every_dtype,
    "shared-storages-and-views": _views,
    "nested-checkpoint": _nested,
    "full-model": _full_model,
}


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("case", sorted(_CASES))
def test_own_checkpoints_convert_to_what_torch_loads(case: str, legacy: bool, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    result = _round_trip(_CASES[case](legacy), tmp_path, legacy=legacy)
    expected_flatten = {"full-model": Flatten.MODULE, "nested-checkpoint": Flatten.NESTED}
    assert result.flatten is expected_flatten.get(case, Flatten.FLAT)


def test_views_gather_without_numpy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    monkeypatch.setattr(storage, "USE_NUMPY", False)
    _round_trip(_views(), tmp_path)


def test_full_model_names_match_state_dict(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    model = _full_model()
    result = picklewarden.convert(_torch_file(model, tmp_path), tmp_path / "out.safetensors")
    assert list(result.tensors) == list(model.state_dict())
    assert "1.scratch" not in result.tensors


def test_nested_checkpoint_metadata_is_json_of_plain_values(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    out = tmp_path / "out.safetensors"
    picklewarden.convert(_torch_file(_nested(), tmp_path), out)
    metadata = _header(out)["__metadata__"]
    assert all(isinstance(v, str) for v in metadata.values())
    decoded = {k: json.loads(v) for k, v in metadata.items()}
    assert decoded["epoch"] == 7 and decoded["cfg.layers"] == [3, 4, 2] and decoded["cfg.name"] == "tiny"
    assert decoded["cfg.flag"] is True and decoded["cfg.none"] is None and decoded["cfg.lr"] == 1e-3


def test_float8_e8m0_is_written_with_its_safetensors_name(tmp_path: Path) -> None:
    # safetensors.torch cannot load F8_E8M0 yet, so read the raw format with the safetensors core instead.
    torch = pytest.importorskip("torch")
    safetensors = pytest.importorskip("safetensors")
    scales = torch.tensor([1, 2, 127, 200], dtype=torch.uint8).view(torch.float8_e8m0fnu)
    out = tmp_path / "out.safetensors"
    picklewarden.convert(_torch_file({"scales": scales.reshape(2, 2).t()}, tmp_path), out)
    ((name, view),) = safetensors.deserialize(out.read_bytes())
    assert (name, view["dtype"], view["shape"]) == ("scales", "F8_E8M0", [2, 2])
    assert bytes(view["data"]) == bytes([1, 127, 2, 200])


def test_dtypes_safetensors_lacks_are_listed_and_skipped(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    obj = {
        "ok": torch.ones(2),
        "c128": torch.ones(2, dtype=torch.complex128),
        "conj": torch.ones(2, dtype=torch.complex64).conj(),
    }
    result = picklewarden.convert(_torch_file(obj, tmp_path), tmp_path / "out.safetensors")
    assert result.tensors == ("ok",)
    skipped = {s.name: s.reason for s in result.skipped}
    assert "complex" in skipped["c128"] and "conj" in skipped["conj"]


# -- containers torch tolerates -----------------------------------------------------------------------------------
def _rezip(data: bytes, change: Callable[[str, bytes], bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(buf, "w", compression) as target:
        for info in source.infolist():
            target.writestr(info.filename, change(info.filename, source.read(info)))
    return buf.getvalue()


def test_big_endian_archive_is_byteswapped_like_torch_does(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    import torch

    a = torch.randn(3, 4)
    original = _torch_file({"a": a, "t": a.t(), "row": a[1]}, tmp_path).read_bytes()

    def swap(name: str, payload: bytes) -> bytes:
        if name.endswith("/byteorder"):
            return b"big"
        if "/data/" in name:  # one float32 storage: swap every 4 bytes
            return b"".join(payload[i : i + 4][::-1] for i in range(0, len(payload), 4))
        return payload

    path = tmp_path / "big.pt"
    path.write_bytes(_rezip(original, swap))
    out = tmp_path / "big.safetensors"
    picklewarden.convert(path, out)
    loaded = _torch_load(path)
    assert torch.equal(loaded["a"], a), "torch itself swaps the data back"
    _assert_converted(out, _expected(loaded))


def test_deflated_storage_records_are_inflated(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    original = _torch_file(_views(), tmp_path).read_bytes()
    path = tmp_path / "deflated.pt"
    path.write_bytes(_rezip(original, lambda _n, payload: payload, zipfile.ZIP_DEFLATED))
    out = tmp_path / "out.safetensors"
    picklewarden.convert(path, out)
    _assert_converted(out, _expected(_torch_load(path)))


# -- files that cannot be converted ---------------------------------------------------------------------------------
def test_missing_storage_record_fails_and_writes_nothing(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    original = _torch_file({"w": torch.ones(4)}, tmp_path).read_bytes()
    buf = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(original)) as source, zipfile.ZipFile(buf, "w") as target:
        for info in source.infolist():
            if "/data/" not in info.filename:
                target.writestr(info.filename, source.read(info))
    path = tmp_path / "broken.pt"
    path.write_bytes(buf.getvalue())
    out = tmp_path / "out.safetensors"
    with pytest.raises(ConvertError, match="no record"):
        picklewarden.convert(path, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.pt", "model.pt"], "no output, no temporary file"


class _OutOfBounds:
    """Pickles as a tensor rebuild whose size reaches past its (real, 4-element) storage."""

    def __reduce__(self) -> tuple[Any, ...]:
        import torch

        storage = torch.storage.TypedStorage(4, dtype=torch.float32)
        return (torch._utils._rebuild_tensor_v2, (storage, 2, (10,), (1,), False, collections.OrderedDict()))


def test_tensor_reaching_past_its_storage_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    path = _torch_file({"bad": _OutOfBounds()}, tmp_path)
    with pytest.raises(ConvertError, match="needs 12 elements"):
        picklewarden.convert(path, tmp_path / "out.safetensors")
    with pytest.raises(RuntimeError):  # torch agrees the file is broken
        _torch_load(path)


class _Wrapped:
    """Pickles as a Parameter of a Parameter of ... a tensor: nesting a hostile file can make unbounded."""

    def __init__(self, depth: int) -> None:
        self.depth = depth

    def __reduce__(self) -> tuple[Any, ...]:
        import torch

        inner = _Wrapped(self.depth - 1) if self.depth > 1 else torch.ones(2)
        return (torch._utils._rebuild_parameter, (inner, False, collections.OrderedDict()))


def test_hostile_structures_stay_bounded(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    cyclic: dict[str, Any] = {"w": torch.ones(3)}
    cyclic["self"] = cyclic
    result = picklewarden.convert(
        _torch_file({"deep": _Wrapped(400), "ok": torch.zeros(1), "cyclic": cyclic}, tmp_path),
        tmp_path / "out.safetensors",
    )
    assert set(result.tensors) == {"ok", "cyclic.w"}
    skipped = {s.name: s.reason for s in result.skipped}
    assert "nested" in skipped["deep"] and "contains itself" in skipped["cyclic.self"]

    shared: list[Any] = [torch.ones(1)]
    for _ in range(40):
        shared = [shared, shared]  # 2**40 paths through a 40-node graph
    path = _torch_file({"laughs": shared}, tmp_path, name="laughs.pt")
    with pytest.raises(ConvertError, match="converted entries limit"):
        picklewarden.convert(
            path, tmp_path / "laughs.safetensors", limits=DEFAULT_LIMITS.replace(max_program_statements=10_000)
        )


def test_text_that_utf8_cannot_hold_never_breaks_the_header(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    from safetensors import safe_open

    obj = {"lone\ud800": torch.ones(1), "café": torch.ones(2), "note": "x\udfffy", "é": "ü"}
    out = tmp_path / "out.safetensors"
    result = picklewarden.convert(_torch_file(obj, tmp_path), out)
    assert result.tensors == ("café",) and [s.name for s in result.skipped] == ["lone\ud800"]
    with safe_open(str(out), "pt") as f:
        assert {k: json.loads(v) for k, v in f.metadata().items()} == {"note": "x\udfffy", "é": "ü"}


def test_pickle_without_tensors_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "plain.pkl"
    path.write_bytes(b"\x80\x02}q\x00X\x01\x00\x00\x00aq\x01K\x01s.")  # {"a": 1}
    with pytest.raises(ConvertError, match="no tensor"):
        picklewarden.convert(path, tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


# -- malicious files ------------------------------------------------------------------------------------------------
def _materialise(sample: Sample, tmp_path: Path) -> tuple[Path, Path]:
    if sample.needs_torch and not _HAVE_TORCH:
        pytest.skip("building this sample needs torch")
    canary = tmp_path / "canary"
    return write(sample, tmp_path, canary), canary


@pytest.mark.parametrize("sample", MALICIOUS, ids=lambda s: s.id)
def test_malicious_files_are_refused_and_never_run(sample: Sample, tmp_path: Path) -> None:
    path, canary = _materialise(sample, tmp_path)
    out = tmp_path / "out.safetensors"
    with pytest.raises(UnsafeModelError) as refused:
        picklewarden.convert(path, out)
    assert refused.value.report.verdict.label == "malicious"
    assert refused.value.report.findings
    assert not out.exists()
    try:  # force converts what it can; either way nothing in the file runs
        result = picklewarden.convert(path, out, force=True)
    except ConvertError:
        assert not out.exists()
    else:
        assert result.forced and result.report.verdict.label == "malicious"
        assert out.exists()
    assert not canary.exists()


def test_forced_conversion_keeps_the_weights_and_skips_the_payload(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    sample = next(s for s in MALICIOUS if s.id == "torch-zip-reduce-in-state-dict")
    path, canary = _materialise(sample, tmp_path)
    result = picklewarden.convert(path, tmp_path / "out.safetensors", force=True)
    assert "0.weight" in result.tensors and "4.bias_init" not in result.tensors
    assert any(s.name == "4.bias_init" and "posix.system" in s.reason for s in result.skipped)
    assert not canary.exists()


_HARNESS = textwrap.dedent(
    """
    import os, sys
    import picklewarden
    from picklewarden.extract.errors import ConvertError

    out_dir = os.path.abspath(sys.argv[1])
    # picklewarden's own lazy imports first (the scanner's, for every container kind, then convert's).
    picklewarden.scan(sys.argv[3:])
    picklewarden.convert(sys.argv[2], os.path.join(out_dir, "warm.safetensors"))

    violations = []
    BLOCKED = ("os.system", "os.exec", "os.spawn", "os.posix_spawn", "os.fork", "os.forkpty", "subprocess.Popen",
               "pty.spawn", "socket.connect", "ctypes.dlopen", "exec", "compile", "import", "webbrowser.open",
               "shutil.rmtree", "os.remove")

    def hook(event, args):
        if event in BLOCKED:
            violations.append((event, repr(args)[:200]))
        elif event == "open" and _writes(args) and not _ours(args[0]):
            violations.append((event, repr(args)[:200]))

    def _ours(target):  # the output directory, or a descriptor (fdopen) opened there a moment before
        return isinstance(target, int) or str(target).startswith(out_dir + os.sep)

    def _writes(args):
        mode, flags = (args[1] or "r"), (args[2] or 0)
        return any(c in str(mode) for c in "wax+") or flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)

    sys.addaudithook(hook)
    for index, path in enumerate(sys.argv[3:]):
        try:
            picklewarden.convert(path, os.path.join(out_dir, f"{index}.safetensors"), force=True)
        except ConvertError:
            pass
    print("VIOLATIONS", violations)
    sys.exit(1 if violations else 0)
    """
)


def test_forced_conversion_of_the_malicious_corpus_executes_and_imports_nothing(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    canary = tmp_path / "canary"
    paths = [write(s, corpus, canary) for s in MALICIOUS]
    warm = _torch_file(_views(), tmp_path, name="warm.pt")
    done = subprocess.run(
        [sys.executable, "-c", _HARNESS, str(out), str(warm), *map(str, paths)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "VIOLATIONS []" in done.stdout
    assert not canary.exists()
