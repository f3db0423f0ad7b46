"""The compiled storage fit (``_speedups.fit_storages``) against its column-at-a-time reference.

``consistency._fitting_storages`` asks the compiled core, pickle by pickle, whether the storage ids name the
``data/`` entries in order with the sizes their elements need; ``_fitting_storages_by_column`` is the
reference. Both are run on every archive scanned here -- real torch.save checkpoints of random dtypes and
shapes, then damaged (a storage cut, grown, dropped, renamed, moved, an id's count changed) -- and must
give the same answer; the report must not depend on which one ran.
"""

from __future__ import annotations

import io
import zipfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from picklewarden import _native, scan_bytes
from picklewarden.containers import consistency
from tests.test_nested import _rezip

torch = pytest.importorskip("torch")

_DTYPES = ["float32", "int64", "float16", "bool", "uint8", "float64", "complex64"]


def _members(tensors: list[tuple[str, int]]) -> dict[str, bytes]:
    weights = {f"t{i}": torch.zeros(numel, dtype=getattr(torch, dtype)) for i, (dtype, numel) in enumerate(tensors)}
    buf = io.BytesIO()
    torch.save(weights, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def _damaged(members: dict[str, bytes], how: str, which: int) -> dict[str, bytes]:
    data = [name for name in members if "/data/" in name]
    if how == "none" or not data:
        return members
    target = data[which % len(data)]
    changed = dict(members)
    if how == "cut":
        changed[target] = members[target][:-1]
    elif how == "grow":
        changed[target] = members[target] + b"\0"
    elif how == "drop":
        del changed[target]
    elif how == "rename":
        changed[target + "x"] = changed.pop(target)
    elif how == "move":  # to the end of the directory: names and sizes still match, the order does not
        changed[target] = changed.pop(target)
    elif how == "count":  # the pickle's count for storage 0: BININT1/BININT2 after its location string
        pickle_name = next(name for name in members if name.endswith("data.pkl"))
        changed[pickle_name] = members[pickle_name].replace(b"cpuq", b"cpuX", 1)
    return changed


def _compare_both_ways(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    answers: list[bool] = []
    real = consistency._fitting_storages

    def both(*args: object) -> bool:
        compiled = real(*args)  # type: ignore[arg-type]
        reference = consistency._fitting_storages_by_column(*args)  # type: ignore[arg-type]
        assert compiled == reference
        answers.append(compiled)
        return compiled

    monkeypatch.setattr(consistency, "_fitting_storages", both)
    return answers


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    tensors=st.lists(st.tuples(st.sampled_from(_DTYPES), st.integers(0, 5)), min_size=1, max_size=6),
    how=st.sampled_from(["none", "cut", "grow", "drop", "rename", "move", "count"]),
    which=st.integers(0, 5),
)
def test_the_compiled_fit_agrees_with_the_reference(
    tensors: list[tuple[str, int]], how: str, which: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _rezip(_damaged(_members(tensors), how, which))
    with monkeypatch.context() as patched:
        answers = _compare_both_ways(patched)
        report = scan_bytes(data, "fit.pt")
    assert len(answers) == 1
    if how == "none" and all(numel for _, numel in tensors):
        assert answers == [True]  # as torch.save wrote it (empty tensors share no data entry)
    saved, _native.speedups = _native.speedups, None
    try:
        assert scan_bytes(data, "fit.pt") == report  # the pure-Python core: same findings
    finally:
        _native.speedups = saved


def test_fit_storages_refuses_what_it_cannot_read() -> None:
    from picklewarden import _speedups  # type: ignore[attr-defined,import-not-found,unused-ignore]
    from picklewarden.containers.zipentry import ZipEntry
    from picklewarden.pickle.program import Persistent

    entry = ZipEntry("a/data/0", 0, 30, 8, 8, 0, 0, 0)
    ids = [Persistent(0, 0, ("storage", int, "0", "cpu", 2))]
    fit = _speedups.fit_storages
    assert fit(ids, lambda cls: 4, "a/data/", ["a/data/0"], [entry], 0, ZipEntry) is True
    assert fit(ids, lambda cls: 4, "a/data/", ["a/data/1"], [entry], 0, ZipEntry) is False
    assert fit(ids, lambda cls: 2, "a/data/", ["a/data/0"], [entry], 0, ZipEntry) is False
    assert fit(ids, lambda cls: None, "a/data/", ["a/data/0"], [entry], 0, ZipEntry) is False
    assert fit(ids, lambda cls: 4, "a/data/", ["a/data/0"], [entry], 1, ZipEntry) is False  # past the files
    assert fit(ids, lambda cls: 2**62, "a/data/", ["a/data/0"], [entry], 0, ZipEntry) is None  # overflows
    assert fit(ids, lambda cls: 4.0, "a/data/", ["a/data/0"], [entry], 0, ZipEntry) is None
    assert fit(ids, lambda cls: 4, "a/data/", ["a/data/0"], [object()], 0, ZipEntry) is None
    odd = [Persistent(0, 0, ("storage", int, "0", "cpu", True))]  # a bool count: not a plain id
    assert fit(odd, lambda cls: 4, "a/data/", ["a/data/0"], [entry], 0, ZipEntry) is False
    with pytest.raises(ZeroDivisionError):
        fit(ids, lambda cls: 1 // 0, "a/data/", ["a/data/0"], [entry], 0, ZipEntry)
