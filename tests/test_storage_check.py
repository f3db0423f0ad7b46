"""The storage check's column-at-a-time path (``consistency._fitting_storages``) against its id-by-id path.

A torch.save archive (storage ids naming the ``data/`` entries one to one, in directory order, each of the
right size) is checked without a Python step per tensor; anything else runs the per-id check, which words
the findings. Both must report the same on every archive: the saved one, damaged ones (each of which the
fast path must refuse) and ones torch.save writes differently (shared storages, other orders).
"""

from __future__ import annotations

import io
import zipfile

import pytest

from picklewarden import scan_bytes
from picklewarden.containers import consistency
from picklewarden.model import FileReport
from tests.test_nested import _rezip

torch = pytest.importorskip("torch")


def _members(weights: dict[str, object]) -> dict[str, bytes]:
    buf = io.BytesIO()
    torch.save(weights, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def _saved() -> dict[str, bytes]:
    weights = {f"layer{i}": torch.full((i + 1,), float(i)) for i in range(12)}  # keys 0..11: "10" sorts before "2"
    weights["tied"] = weights["layer3"][:2]  # a view: a second id naming storage 3
    weights["ints"] = torch.zeros(3, dtype=torch.int64)
    return _members(weights)


def _untied() -> dict[str, bytes]:
    return _members({f"t{i}": torch.full((2,), float(i)) for i in range(12)})


def _data(members: dict[str, bytes]) -> list[str]:
    return [name for name in members if "/data/" in name]


def _cases() -> dict[str, tuple[dict[str, bytes], bool, bool]]:
    """name -> (members, whether the column path takes it, whether the check finds something)."""
    plain = _untied()
    first, second = _data(plain)[:2]
    head = first.rsplit("/", 1)[0]
    pickle_name = next(n for n in plain if n.endswith("data.pkl"))
    data_names = _data(plain)
    return {
        "as saved": (plain, True, False),
        "shared storages": (_saved(), False, False),
        "missing": ({k: v for k, v in plain.items() if k != first}, False, True),
        "short": ({**plain, first: plain[first][:-4]}, False, True),
        "long": ({**plain, second: plain[second] + b"\0" * 8}, False, True),
        "stray": ({**plain, head + "/99": b"\0" * 16}, False, True),
        "reversed": ({pickle_name: plain[pickle_name], **{n: plain[n] for n in reversed(data_names)}}, False, False),
        "case variant": ({**{k: v for k, v in plain.items() if k != first}, first.upper(): plain[first]}, False, False),
        "directory entry": ({**plain, head + "/": b""}, True, False),
        "odd entry": ({**plain, head.rsplit("/", 1)[0] + "/notes.txt": b"hi"}, True, True),
    }


def _scan(data: bytes, name: str) -> FileReport:
    return scan_bytes(data, f"{name}.pt")


@pytest.mark.parametrize("case", list(_cases()))
def test_both_paths_report_the_same(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    members, fast, finds = _cases()[case]
    data = _rezip(members)
    taken: list[bool] = []
    real = consistency._fitting_storages

    def spy(*args: object) -> bool:
        taken.append(real(*args))  # type: ignore[arg-type]
        return taken[-1]

    monkeypatch.setattr(consistency, "_fitting_storages", spy)
    report = _scan(data, case)
    assert taken == [fast]
    monkeypatch.setattr(consistency, "_fitting_storages", lambda *args: False)
    assert _scan(data, case) == report
    assert any(f.rule == "PW306" for f in report.findings) == finds
