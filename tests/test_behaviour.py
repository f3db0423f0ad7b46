"""Judged by behaviour, not by name (issue 13): what helpers wrap, what getattr reaches, what nested bytes
hold, which file an old joblib wrapper reads.

Benign values are real objects pickled by Python itself and really loaded back. Malicious variants fire a
canary under their real loader (or under the use the loaded value is made for) in a fresh interpreter.
"""

from __future__ import annotations

import array
import collections
import datetime
import functools
import io
import ipaddress
import itertools
import operator
import os
import pickle
import platform
import random
import subprocess
import sys
import time
import types
import zoneinfo
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from picklewarden import Verdict, scan, scan_bytes
from tests.asm import Asm
from tests.corpus import _sh

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parent.parent


def _scheduler_over(factor: Callable[[int], float]) -> Any:
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return {"optimizer": optimizer.state_dict(), "scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, factor)}


def _weight_norm() -> Any:
    with pytest.warns(FutureWarning):
        return torch.nn.utils.weight_norm(torch.nn.Linear(3, 2))


BENIGN: dict[str, Callable[[], Any]] = {
    # helpers built and never called, or wrapping a safe callable
    "defaultdict-of-partial-defaultdict": lambda: collections.defaultdict(
        functools.partial(collections.defaultdict, int), {"a": collections.defaultdict(int, {"b": 1})}
    ),
    "partial-pow": lambda: functools.partial(pow, 0.95),
    "itemgetter": lambda: {"key": operator.itemgetter(1, 2)},
    "attrgetter": lambda: operator.attrgetter("a.b"),
    "methodcaller": lambda: operator.methodcaller("strip", " "),
    "LambdaLR-over-partial-pow": lambda: _scheduler_over(functools.partial(pow, 0.95)),
    "NoneType": lambda: [type(None), type(...), type(NotImplemented)],
    # getattr of a literal attribute on a known global
    "zoneinfo-datetime": lambda: datetime.datetime(2024, 5, 1, 12, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")),
    "torch.tanh": lambda: {"activation": torch.tanh, "other": torch.sigmoid},
    "F.gelu-F.silu": lambda: [torch.nn.functional.gelu, torch.nn.functional.silu, torch.nn.functional.relu],
    "SimpleNamespace": lambda: types.SimpleNamespace(lr=0.1, layers=[64, 64], name="run"),
    # nested torch files written by pickle.dumps(tensor)
    "pickled-tensor": lambda: torch.arange(6.0).reshape(2, 3),
    "pickled-module": lambda: torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.GELU(), torch.nn.Linear(4, 1)),
    # stdlib value types
    "array": lambda: array.array("d", [1.0, 2.5]),
    "ipaddress": lambda: [ipaddress.ip_address("10.0.0.1"), ipaddress.ip_network("fd00::/8")],
    "ChainMap": lambda: collections.ChainMap({"a": 1}, {"b": 2}),
    "exceptions": lambda: [ValueError("bad"), KeyError("k"), RuntimeError("r", 3)],
    "struct_time": lambda: time.gmtime(0),
    "random.Random": lambda: random.Random(7),
    # judged member by member (the closed world's sinks: io.open, FileIO; itertools.starmap, ...), not by module
    "io-buffers": lambda: [io.BytesIO(b"abc"), io.StringIO("text")],
    "itertools": lambda: [itertools.count(5), itertools.cycle("ab"), itertools.repeat(3, 2)],
    "uname_result": platform.uname,
    # numpy values
    "numpy-types": lambda: [np.float64, np.int32, np.dtype("f4"), np.matrix([[1, 2]]), np.float16(2.0)],
    "numpy-random": lambda: [np.random.RandomState(0), np.random.default_rng(1)],
    # torch utility objects
    "PackedSequence": lambda: torch.nn.utils.rnn.pack_sequence([torch.ones(3), torch.ones(2)]),
    "TensorDataset": lambda: torch.utils.data.TensorDataset(torch.ones(4, 2), torch.zeros(4)),
    "AveragedModel": lambda: torch.optim.swa_utils.AveragedModel(torch.nn.Linear(2, 2)),
    "weight-norm": _weight_norm,
    "spectral-norm": lambda: torch.nn.utils.spectral_norm(torch.nn.Linear(3, 2)),
    "distributions": lambda: [torch.distributions.Normal(0.0, 1.0), torch.distributions.Categorical(torch.ones(3))],
    "GradScaler": lambda: torch.amp.GradScaler("cpu"),
}


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("name", sorted(BENIGN))
def test_benign_value_loads_and_is_safe(name: str, protocol: int) -> None:
    data = pickle.dumps(BENIGN[name](), protocol=protocol)
    pickle.loads(data)  # the real loader accepts it
    report = scan_bytes(data)
    assert report.verdict is Verdict.SAFE, [(f.rule, f.message) for f in report.findings if f.severity]
    assert report.errors == ()


# -- malicious variants: each fires where a victim uses it -------------------------------------------------
USE = r"""
import pickle, sys
obj = pickle.load(open(sys.argv[1], "rb"))
if sys.argv[2] == "call":
    obj["lr_lambda"](0)  # what LambdaLR.step() does with the factor it was given
"""


def _fires(path: Path, use: str, canary: Path) -> bool:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", USE, str(path), use], cwd=path.parent, env=env, timeout=60, check=False)
    return canary.exists()


def _dormant_partial(canary: Path) -> bytes:
    """{'lr_lambda': partial(subprocess.call, argv)}: nothing runs while loading; the scheduler's
    ``lr_lambda(epoch)`` runs ``subprocess.call(argv, epoch)`` (the epoch lands in ``bufsize``)."""
    return (
        Asm(2)
        .empty_dict()
        .text("lr_lambda")
        .global_("functools", "partial")
        .global_("subprocess", "call")
        .empty_list()
        .text("touch")
        .append()
        .text(str(canary))
        .append()
        .tuple2()
        .reduce()
        .setitem()
        .stop()
        .bytes()
    )


def test_partial_of_a_sink_is_malicious_even_if_never_called(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    path = tmp_path / "schedule.pkl"
    path.write_bytes(_dormant_partial(canary))
    report = scan(path).files[0]
    assert report.verdict is Verdict.MALICIOUS
    assert any(f.rule == "PW100" and "partial" in f.message for f in report.findings)
    assert not _fires(path, "load", canary), "loading alone runs nothing"
    assert _fires(path, "call", canary), "calling the loaded factor runs the command"


def test_partial_of_an_unknown_callable_is_unknown_not_malicious() -> None:
    data = Asm(2).global_("functools", "partial").global_("mypkg.sched", "warmup").tuple1().reduce().stop().bytes()
    report = scan_bytes(data)
    assert report.verdict is Verdict.SUSPICIOUS
    assert [f.symbol for f in report.findings if f.severity] == ["mypkg.sched.warmup"]


def test_getattr_with_a_computed_name_stays_indirection() -> None:
    data = (
        Asm(2)
        .global_("builtins", "getattr")
        .global_("zoneinfo", "ZoneInfo")
        .global_("mypkg", "name_of")
        .empty_tuple()
        .reduce()
        .tuple2()
        .reduce()
        .stop()
        .bytes()
    )
    assert any(f.rule == "PW106" for f in scan_bytes(data).findings)


def test_getters_naming_introspection_attributes_stay_indirection() -> None:
    data = Asm(2).global_("operator", "attrgetter").text("__globals__").tuple1().reduce().stop().bytes()
    assert scan_bytes(data).verdict is Verdict.MALICIOUS


def test_type_with_three_arguments_stays_indirection() -> None:
    data = Asm(2).global_("builtins", "type").text("X").empty_tuple().empty_dict().tuple3().reduce().stop().bytes()
    assert pickle.loads(data).__name__ == "X"
    assert scan_bytes(data).verdict is Verdict.MALICIOUS


# -- nested payloads: the inner verdict decides when every byte was seen -------------------------------------
def test_pickle_loads_of_a_benign_literal_is_safe() -> None:
    inner = pickle.dumps({"epoch": 3}, protocol=2)
    data = Asm(2).global_("pickle", "loads").binbytes(inner).tuple1().reduce().stop().bytes()
    assert pickle.loads(data) == {"epoch": 3}
    report = scan_bytes(data)
    assert report.verdict is Verdict.SAFE, [(f.rule, f.message) for f in report.findings]


def test_pickled_tensor_notes_the_nested_load_it_saw_through() -> None:
    report = scan_bytes(pickle.dumps(torch.ones(2), protocol=4))
    rules = {f.rule: f for f in report.findings}
    assert "scanned" in rules["PW103"].message and not rules["PW103"].severity
    assert not rules["PW308"].severity  # the inner torch file was opened and scanned


def test_nested_load_of_a_hostile_literal_stays_malicious(tmp_path: Path) -> None:
    inner = Asm(2).global_("posix", "system").text("true").tuple1().reduce().stop().bytes()
    data = Asm(2).global_("pickle", "loads").binbytes(inner).tuple1().reduce().stop().bytes()
    assert scan_bytes(data).verdict is Verdict.MALICIOUS


# -- joblib < 0.10 array wrappers ---------------------------------------------------------------------------
JOBLIB_LOAD = "import joblib, sys; print(joblib.load(sys.argv[1]))"


def _old_joblib(directory: Path, filename: str) -> Path:
    from joblib.numpy_pickle_compat import NDArrayWrapper

    path = directory / "model.pkl"
    with path.open("wb") as f:
        pickle.dump({"coef": NDArrayWrapper(filename, np.ndarray)}, f, protocol=2)
    return path


def _joblib_load(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "ignore", "-c", JOBLIB_LOAD, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_old_joblib_wrapper_reading_a_sibling_is_suspicious(tmp_path: Path) -> None:
    np.save(tmp_path / "model.pkl_01.npy", np.arange(3))
    path = _old_joblib(tmp_path, "model.pkl_01.npy")
    assert "array([0, 1, 2])" in _joblib_load(path).stdout
    report = scan(path).files[0]
    assert report.verdict is Verdict.SUSPICIOUS
    assert [f.rule for f in report.findings if f.severity] == ["PW103"]


def test_old_joblib_wrapper_leaving_the_directory_is_malicious(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    # numpy.load(allow_pickle=True) unpickles a file that is a plain pickle: here one that fires the canary.
    hostile = Asm(2).global_("posix", "system").text(f"touch {canary}").tuple1().reduce().stop().bytes()
    (tmp_path / "weights.npy").write_bytes(hostile)
    inner = tmp_path / "model"
    inner.mkdir()
    path = _old_joblib(inner, "../weights.npy")
    report = scan(path).files[0]
    assert report.verdict is Verdict.MALICIOUS
    assert not canary.exists()
    _joblib_load(path)
    assert canary.exists()


def test_hand_entries_name_real_members_of_the_installed_packages() -> None:
    """A misspelt entry would silently allow nothing (or, for a sink, miss it)."""
    import importlib
    import importlib.util

    from picklewarden.knowledge.tables import ECOSYSTEM_SINKS, TORCH_C_SINKS
    from picklewarden.knowledge.values import HAND_SAFE

    checked = 0
    for module, qualname in sorted({*HAND_SAFE, *TORCH_C_SINKS, *ECOSYSTEM_SINKS}):
        if importlib.util.find_spec(module.partition(".")[0]) is None:
            continue
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
        checked += 1
    assert checked >= 300


def test_pandas_read_pickle_of_a_file_is_a_nested_load(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    inner = tmp_path / "inner.pkl"
    inner.write_bytes(Asm(proto=2).global_("os", "system").text(_sh(canary)).tuple1().reduce().stop().bytes())
    outer = tmp_path / "outer.pkl"
    outer.write_bytes(Asm(proto=2).global_("pandas", "read_pickle").text(str(inner)).tuple1().reduce().stop().bytes())
    run = [sys.executable, "-c", "import pickle, sys; pickle.load(open(sys.argv[1], 'rb'))", str(outer)]
    subprocess.run(run, check=True, capture_output=True, timeout=120)
    assert canary.exists()  # pandas.read_pickle really runs the file it names
    report = scan_bytes(outer.read_bytes())
    assert report.verdict is Verdict.MALICIOUS and [f.rule for f in report.findings] == ["PW103"]


def test_joblib_own_pre_0_10_pickles_are_suspicious_not_malicious() -> None:
    """The old-format files joblib ships for its own compatibility tests (sibling .npy files beside them)."""
    import joblib

    data = Path(joblib.__file__).parent / "test" / "data"
    old = sorted(data.glob("joblib_0.9.2_pickle_py3*.pkl"))  # py27 ones need a latin-1 decode
    assert old, "joblib ships its 0.9.2 pickles"
    for path in old:
        with pytest.warns(DeprecationWarning, match="less than 0.10"):
            joblib.load(path)  # really loads, reading its sibling .npy files
        report = scan(path).files[0]
        assert report.verdict is Verdict.SUSPICIOUS, (path.name, [(f.rule, f.message) for f in report.findings])
        assert {f.rule for f in report.findings if f.severity} == {"PW103"}
