"""``picklewarden.load``: what ``torch.load(weights_only=False)`` returns for benign files, refusal for the rest.

The reference is ``torch.load(..., weights_only=False)`` on benign files only; results are compared
recursively (types, tensors by dtype, shape, layout and bytes, objects by their attributes).
"""

from __future__ import annotations

import argparse
import collections
import datetime
import importlib.util
import io
import pathlib
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import picklewarden
from picklewarden.extract.errors import RestrictedLoadError, TorchNotInstalledError, UnsafeModelError
from tests.corpus import BENIGN, MALICIOUS, Sample, write

_HAVE_TORCH = importlib.util.find_spec("torch") is not None
_TORCH_BENIGN = [s for s in BENIGN if s.loader == "torch"]
# Whose classes benign samples name (a real project trusts its own model package the same way).
_TRUST_OWN_MODELS = ["tests._benign_models"]
_DEFAULTDICT_GAP = pytest.mark.xfail(
    strict=True,
    raises=RestrictedLoadError,
    reason="torch's weights_only unpickler refuses SETITEM on a defaultdict whatever is allowed; "
    "picklewarden.load never falls back to weights_only=False",
)


def _reference(path: Path) -> Any:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(path, weights_only=False)


def _load(path: Any, **kwargs: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantized and legacy-format deprecation notices
        return picklewarden.load(path, **kwargs)


def _same(a: Any, b: Any, where: str = "result") -> None:
    """Deep equality as a user of the loaded object would see it."""
    import numpy
    import torch

    assert type(a) is type(b), f"{where}: {type(a)} != {type(b)}"
    if isinstance(a, torch.Tensor):
        assert (a.dtype, a.shape, a.layout, a.requires_grad) == (b.dtype, b.shape, b.layout, b.requires_grad), where
        if a.is_quantized:
            assert torch.equal(a.int_repr(), b.int_repr()) and a.q_scale() == b.q_scale(), where
        elif a.layout != torch.strided:
            assert torch.equal(a.to_dense(), b.to_dense()), where
        else:
            assert (
                a.detach().reshape(-1).view(torch.uint8).tolist() == b.detach().reshape(-1).view(torch.uint8).tolist()
            )
        _same(a.__dict__, b.__dict__, f"{where}.__dict__")
    elif isinstance(a, numpy.ndarray):
        assert a.dtype == b.dtype and numpy.array_equal(a, b), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            _same(a[key], b[key], f"{where}[{key!r}]")
        if hasattr(a, "__dict__"):  # an OrderedDict's attributes: a state dict's _metadata
            _same(vars(a), vars(b), f"{where}.__dict__")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{index}]")
    elif isinstance(a, (torch.nn.Module, argparse.Namespace)) or (
        hasattr(a, "__dict__") and not isinstance(a, (type, pathlib.PurePath, datetime.date))
    ):
        _same(vars(a), vars(b), f"{where}.__dict__")
    else:
        assert a == b, where


def _materialise(sample: Sample, tmp_path: Path) -> tuple[Path, Path]:
    if sample.needs_torch and not _HAVE_TORCH:
        pytest.skip("building this sample needs torch")
    canary = tmp_path / "canary"
    return write(sample, tmp_path, canary), canary


# -- benign files: the same object torch.load(weights_only=False) returns ------------------------------------------
@pytest.mark.parametrize(
    "sample",
    [pytest.param(s, marks=_DEFAULTDICT_GAP) if s.id == "benign-torch-zip-tensor-zoo" else s for s in _TORCH_BENIGN],
    ids=lambda s: s.id,
)
def test_benign_corpus_loads_as_torch_loads_it(sample: Sample, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    path, canary = _materialise(sample, tmp_path)
    policy = _TRUST_OWN_MODELS if sample.expect == "suspicious" else None
    _same(_load(path, policy=policy), _reference(path))
    assert not canary.exists()


def test_everyday_checkpoint_objects_that_weights_only_rejects_are_loaded(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    import numpy

    checkpoint = {
        "model": torch.nn.Linear(2, 2).state_dict(),
        "args": argparse.Namespace(lr=0.1, layers=[1, 2]),
        "np_scalar": numpy.float64(1.5),
        "np_int": numpy.int64(7),
        "np_array": numpy.arange(6, dtype=numpy.float32).reshape(2, 3),
        "np_dtype": numpy.dtype("<u2"),
        "when": datetime.datetime(2025, 1, 2, 3, 4, 5),
        "path": pathlib.PurePosixPath("/data/run"),
        "counts": collections.Counter("abca"),
        "ordered": collections.OrderedDict(a=1),
        "set": {1, 2},
    }
    for legacy in (False, True):
        path = tmp_path / f"checkpoint-{legacy}.pt"
        torch.save(checkpoint, path, _use_new_zipfile_serialization=not legacy)
        with pytest.raises(Exception, match=r"weights_only|Unsupported global"):
            torch.load(path, weights_only=True)  # the gap picklewarden closes
        _same(_load(path), _reference(path))


def test_custom_model_class_needs_trust(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    sample = next(s for s in BENIGN if s.id == "benign-torch-full-model-custom-class")
    path, _ = _materialise(sample, tmp_path)
    with pytest.raises(UnsafeModelError, match=r"tests\._benign_models\.TinyNet") as refused:
        _load(path)
    assert refused.value.report.verdict.label == "suspicious"
    with pytest.raises(UnsafeModelError):
        _load(path, policy=["tests._benign"])  # a name prefix is not a package
    with pytest.raises(UnsafeModelError):
        _load(path, policy=["tests._benign_models.StandardScaler"])  # another class of the same module
    reference = _reference(path)
    policies: list[Any] = [["tests"], "tests._benign_models", ["tests._benign_models.TinyNet"], _Policy(("tests",))]
    if hasattr(picklewarden, "Policy"):  # policy files, once that work lands
        policies.append(picklewarden.Policy(trust=("tests._benign_models",)))
    for policy in policies:
        _same(_load(path, policy=policy), reference)


@dataclass(frozen=True)
class _Policy:
    """Stands for a policy object (picklewarden.Policy): anything with a ``trust`` list of names."""

    trust: tuple[str, ...]


def test_file_objects_and_bytes_load_too(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    sample = next(s for s in BENIGN if s.id == "benign-torch-zip-state-dict")
    path, _ = _materialise(sample, tmp_path)
    reference = _reference(path)
    with open(path, "rb") as handle:
        _same(_load(handle, map_location="cpu"), reference)
    _same(_load(path.read_bytes()), reference)
    _same(_load(str(path), map_location=lambda storage, _location: storage), reference)


class _ReadOnce(io.RawIOBase):
    """A file that can be read exactly once: a second read (a re-check or a re-load) would see other bytes."""

    def __init__(self, first: bytes, then: bytes) -> None:
        self.chunks = [first, then]

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        assert size == -1, "picklewarden must read the whole file in one go"
        return self.chunks.pop(0)


def test_the_bytes_scanned_are_the_bytes_loaded(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    benign = next(s for s in BENIGN if s.id == "benign-torch-zip-state-dict")
    malicious = next(s for s in MALICIOUS if s.id == "torch-zip-reduce-in-state-dict")
    benign_path, _ = _materialise(benign, tmp_path)
    malicious_path, canary = _materialise(malicious, tmp_path)
    loaded = _load(_ReadOnce(benign_path.read_bytes(), malicious_path.read_bytes()))
    _same(loaded, _reference(benign_path))
    assert not canary.exists()


# -- refusals --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sample", MALICIOUS, ids=lambda s: s.id)
def test_malicious_files_are_refused_and_never_run(sample: Sample, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    path, canary = _materialise(sample, tmp_path)
    with pytest.raises(UnsafeModelError) as refused:
        _load(path)
    assert refused.value.report.verdict.label == "malicious"
    with pytest.raises(UnsafeModelError):  # no trust lifts a malicious verdict
        _load(path, policy=["os", "posix", "builtins", "subprocess", "torch", "collections", "tests"])
    assert not canary.exists()


def test_options_that_would_undo_the_guarantees_are_refused(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    import pickle

    path = tmp_path / "w.pt"
    torch.save({"w": torch.ones(2)}, path)
    with pytest.raises(ValueError, match="weights_only"):
        _load(path, weights_only=False)
    with pytest.raises(ValueError, match="pickle_module"):
        _load(path, pickle_module=pickle)
    with pytest.raises(ValueError, match="mmap"):
        _load(path, mmap=True)
    assert torch.equal(_load(path, weights_only=True)["w"], torch.ones(2))


def test_restricted_unpickler_failures_never_suggest_unrestricted_loading(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    sample = next(s for s in BENIGN if s.id == "benign-torch-zip-tensor-zoo")
    path, _ = _materialise(sample, tmp_path)
    with pytest.raises(RestrictedLoadError, match="defaultdict") as failed:
        _load(path)
    assert "weights_only=False" not in str(failed.value) and "picklewarden.convert" in str(failed.value)


def test_callers_own_safe_globals_survive(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / "ns.pt"
    torch.save({"args": argparse.Namespace(a=1)}, path)
    torch.serialization.add_safe_globals([argparse.Namespace])
    try:
        _load(path)
        assert argparse.Namespace in torch.serialization.get_safe_globals()
    finally:
        torch.serialization.clear_safe_globals()
    _load(path)
    assert torch.serialization.get_safe_globals() == [], "nothing picklewarden allowed outlives the call"


def test_without_torch_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    with pytest.raises(TorchNotInstalledError, match=r"picklewarden\[torch\]") as missing:
        picklewarden.load(b"\x80\x02}q\x00.")
    assert isinstance(missing.value, ImportError)


def test_load_and_convert_are_exported_lazily() -> None:
    import subprocess

    code = (
        "import sys, picklewarden; assert 'picklewarden.extract.loading' not in sys.modules; "
        "assert callable(picklewarden.load) and callable(picklewarden.convert); "
        "assert 'torch' not in sys.modules; print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "ok", done.stderr
