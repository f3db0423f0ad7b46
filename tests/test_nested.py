"""Nested payloads, torch archive consistency, TorchScript code review and extension hints."""

from __future__ import annotations

import base64
import binascii
import io
import pickle
import zipfile
import zlib
from pathlib import Path

import pytest

from picklewarden import FileReport, Limits, Severity, Verdict, scan_bytes
from picklewarden.containers.torchscript import review_code
from tests.asm import Asm
from tests.container_samples import system_pickle

CANARY = Path("/nonexistent/canary")


def _rules(report: FileReport) -> set[tuple[str, str]]:
    return {(f.rule, f.member) for f in report.findings}


def _loads(arg: Asm) -> bytes:
    return Asm(2).global_("pickle", "loads").raw(arg.bytes()).tuple1().reduce().stop().bytes()


@pytest.mark.parametrize(
    ("wrap", "path"),
    [
        (lambda p: Asm().binbytes(p), "#arg0>pickle"),
        (
            lambda p: Asm().global_("zlib", "decompress").binbytes(zlib.compress(p)).tuple1().reduce(),
            "#arg0>zlib>pickle",
        ),
        (
            lambda p: Asm().global_("base64", "b64decode").text(base64.b64encode(p).decode()).tuple1().reduce(),
            "#arg0>base64>pickle",
        ),
        (
            lambda p: (
                Asm().global_("codecs", "decode").text(binascii.hexlify(p).decode()).text("hex").tuple2().reduce()
            ),
            "#arg0>hex>pickle",
        ),
        (
            lambda p: Asm().global_("_codecs", "encode").text(p.decode("latin-1")).text("latin1").tuple2().reduce(),
            "#arg0>pickle",
        ),
    ],
    ids=["bytes", "zlib", "base64", "hex", "protocol2-latin1"],
)
def test_payload_handed_to_pickle_loads_is_decoded_and_scanned(wrap: object, path: str) -> None:
    report = scan_bytes(_loads(wrap(system_pickle(CANARY))), "outer.pkl")  # type: ignore[operator]
    assert ("PW100", path) in _rules(report)
    inner = next(f for f in report.findings if f.member == path)
    assert inner.severity is Severity.CRITICAL and inner.evidence


def test_dormant_payload_keeps_threats_and_quiets_the_rest() -> None:
    evil = base64.b64encode(system_pickle(CANARY)).decode()
    unknown = pickle.dumps(Path("x"), protocol=2).hex()  # an inner pickle importing something
    report = scan_bytes(pickle.dumps({"cfg": evil, "note": unknown}, protocol=4), "ckpt.pkl")
    assert report.verdict is Verdict.MALICIOUS
    threat = next(f for f in report.findings if f.rule == "PW100")
    assert threat.member.endswith(">base64>pickle") and threat.message.startswith("(dormant")
    assert all(f.severity in (Severity.INFO, Severity.CRITICAL) for f in report.findings)


def test_benign_embedded_pickle_is_safe_and_noted() -> None:
    import collections

    inner = pickle.dumps(collections.OrderedDict(a=1), protocol=2)
    report = scan_bytes(pickle.dumps({"cache": inner}), "x.pkl")
    assert report.verdict is Verdict.SAFE
    assert [f.rule for f in report.findings] == ["PW308"]


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_an_embedded_pickle_is_noted_whatever_opcode_imports(protocol: int) -> None:
    # GLOBAL (protocols 0-3: newline-ended names) or STACK_GLOBAL (4+, no newline): both are looked at.
    import collections

    inner = pickle.dumps(collections.OrderedDict(a=1), protocol=protocol)
    report = scan_bytes(pickle.dumps({"cache": inner, "layer0.weight.bias": "no pickle here"}), "x.pkl")
    assert [f.rule for f in report.findings] == ["PW308"] and report.verdict is Verdict.SAFE


def test_nested_payload_depth_is_bounded() -> None:
    data = system_pickle(CANARY)
    for _ in range(12):
        data = _loads(Asm().binbytes(data))
    report = scan_bytes(data, "deep.pkl")
    assert report.verdict is Verdict.MALICIOUS  # the outer pickle.loads calls already are
    assert any(f.rule == "PW301" and "nested deeper" in f.message for f in report.findings)
    assert report.errors


def test_payload_limit_per_pickle() -> None:
    blobs = [pickle.dumps(Path(f"p{i}"), protocol=2) for i in range(10)]
    report = scan_bytes(pickle.dumps(blobs), "many.pkl", Limits(max_nested_payloads=3))
    assert sum(f.rule == "PW308" for f in report.findings) == 3


# -- torch archive consistency ---------------------------------------------------------------------------


def _torch_zip() -> dict[str, bytes]:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    buf = io.BytesIO()
    torch.save({"w": torch.ones(4), "b": torch.zeros(2, dtype=torch.int64)}, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def _rezip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buf.getvalue()


def _storage(members: dict[str, bytes], index: int) -> str:
    return sorted(n for n in members if "/data/" in n)[index]


def test_consistent_archive_has_no_storage_findings() -> None:
    report = scan_bytes(_rezip(_torch_zip()), "ok.pt")
    assert not [f for f in report.findings if f.rule in ("PW306", "PW307")]
    assert report.verdict is Verdict.SAFE


def test_missing_short_long_and_stray_storages() -> None:
    members = _torch_zip()
    first, second = _storage(members, 0), _storage(members, 1)
    cases = {
        "missing": {k: v for k, v in members.items() if k != first},
        "short": {**members, first: members[first][:-4]},
        "long": {**members, second: members[second] + b"\0" * 8},
        "stray": {**members, first.rsplit("/", 1)[0] + "/99": b"\0" * 16},
    }
    expected = {"missing": "no data/", "short": "reads past", "long": "no tensor uses", "stray": "not referenced"}
    for case, archive in cases.items():
        report = scan_bytes(_rezip(archive), f"{case}.pt")
        messages = [f.message for f in report.findings if f.rule == "PW306"]
        assert any(expected[case] in m for m in messages), (case, messages)
        assert report.verdict is Verdict.SUSPICIOUS


def test_storage_holding_a_pickle_is_scanned() -> None:
    members = _torch_zip()
    first = _storage(members, 0)
    payload = system_pickle(CANARY)
    report = scan_bytes(_rezip({**members, first: payload}), "staged.pt")
    assert ("PW307", first) in _rules(report)
    threat = next(f for f in report.findings if f.rule == "PW100")
    assert threat.member == first and threat.message.startswith("(dormant")
    assert report.verdict is Verdict.MALICIOUS


def test_zipfile_differential_is_reported() -> None:
    from picklewarden.containers.consistency import zipfile_differential
    from picklewarden.containers.torchzip import open_torch_zip

    data = _rezip(_torch_zip())
    archive = open_torch_zip(data, Limits())
    name = next(n for n in archive.order if n.endswith("data.pkl"))
    found = zipfile_differential(data, archive, {name: b"not what zipfile reads"}, set())
    assert [a.rule for a in found] == ["PW309"]
    assert zipfile_differential(data, archive, {name: b"x"}, {name}) == []


# -- TorchScript code --------------------------------------------------------------------------------------


def test_torchscript_review_finds_file_ops_and_foreign_operators() -> None:
    source = (
        "class M(Module):\n"
        "  def forward(self, x: Tensor) -> Tensor:\n"
        "    y = ops.my_vendor.fused(x)\n"
        "    z = ops.aten.relu(y)\n"
        "    ops._c10d_functional.all_reduce(z, 'sum', '0')\n"
        "    return torch.from_file('/etc/shadow', False, 4)\n"
        "  def __setstate__(self, state: Tuple[Tensor]) -> None:\n"
        "    torch.save(state[0], '/home/u/.bashrc')\n"
    )
    found = {(a.rule, a.message.split(" (")[0]) for a in review_code("code/m.py", source)}
    assert found == {
        ("PW313", "TorchScript calls ops.my_vendor.fused"),
        ("PW313", "TorchScript calls ops._c10d_functional.all_reduce"),
        ("PW312", "TorchScript calls torch.from_file"),
        ("PW312", "TorchScript calls torch.save"),
    }
    at_load = [a for a in review_code("code/m.py", source) if "torch.jit.load" in a.message]
    assert len(at_load) == 1 and "__setstate__" in at_load[0].message


def test_torchscript_review_falls_back_to_patterns() -> None:
    found = review_code("code/m.py", "def f(x:\n    torch.save(x, 'p')  ((\n")
    assert [a.rule for a in found] == ["PW312"]


# -- extensions --------------------------------------------------------------------------------------------


def test_extension_that_promises_plain_data_is_a_finding() -> None:
    report = scan_bytes(pickle.dumps({"a": 1}), "model.safetensors")
    assert [(f.rule, f.severity) for f in report.findings] == [("PW303", Severity.LOW)]
    assert report.verdict is Verdict.SUSPICIOUS


def test_harmless_extension_mismatch_is_info() -> None:
    report = scan_bytes(pickle.dumps({"a": 1}), "weights.gz")
    assert [(f.rule, f.severity) for f in report.findings] == [("PW303", Severity.INFO)]
    assert report.verdict is Verdict.SAFE
    assert scan_bytes(pickle.dumps({"a": 1}), "weights.pt").findings == ()


def test_npy_named_file_holding_a_pickle() -> None:
    report = scan_bytes(pickle.dumps([1, 2]), "array.npy")
    assert [f.rule for f in report.findings] == ["PW303"] and report.verdict is Verdict.SUSPICIOUS
