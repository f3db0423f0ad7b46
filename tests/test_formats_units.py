"""Non-pickle format readers: bounded on hostile input, honest without their optional libraries, and quiet
about text files in a directory walk."""

from __future__ import annotations

import json
import marshal
import struct
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import picklewarden
from picklewarden.formats import bytecode
from picklewarden.model import Verdict
from tests import format_samples


def test_gguf_with_impossible_counts_is_a_finding_not_a_crash() -> None:
    data = b"GGUF" + struct.pack("<IQQ", 3, 1 << 60, 1 << 60)
    report = picklewarden.scan_bytes(data, "x.gguf")
    assert report.format == "gguf" and [f.rule for f in report.findings] == ["PW408"]


def test_gguf_string_longer_than_the_file_is_bounded() -> None:
    data = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1 << 62) + b"key"
    report = picklewarden.scan_bytes(data, "x.gguf")
    assert "PW408" in {f.rule for f in report.findings}


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_behind_magic_numbers_never_crash(tail: bytes) -> None:
    for head in (b"GGUF\x03\x00\x00\x00", struct.pack("<Q", len(tail)) + b"{", b"\x08\x07:"):
        report = picklewarden.scan_bytes(head + tail, "fuzz.bin")
        assert not any(e.startswith("internal error") for e in report.errors), report.errors


def test_marshal_reader_rejects_malformed_code_without_loading_it() -> None:
    raw = marshal.dumps((lambda: __import__("os")).__code__)
    code = bytecode.decode(raw)
    assert "__import__" in code.names
    for cut in (1, 10, len(raw) // 2, len(raw) - 1):
        with pytest.raises(bytecode.MarshalError):
            bytecode.decode(raw[:cut])
    with pytest.raises(bytecode.MarshalError):
        bytecode.decode(b"r\x05\x00\x00\x00")  # a reference to nothing


def test_yaml_alias_bomb_is_walked_once(tmp_path: Path) -> None:
    lines = ["a0: &a0 [_target_, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 30)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    report = picklewarden.scan_path(str(path))
    assert report.verdict is Verdict.SAFE and report.format == "yaml"


def test_hdf5_without_h5py_is_an_error_never_safe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "model.h5"
    format_samples.keras_lambda(path, tmp_path / "canary")
    monkeypatch.setitem(sys.modules, "h5py", None)
    report = picklewarden.scan_path(str(path))
    assert report.verdict is Verdict.ERROR and "h5py" in report.errors[0]


def test_template_without_jinja2_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "chat.gguf"
    format_samples.gguf_benign(path, tmp_path / "canary")
    monkeypatch.setitem(sys.modules, "jinja2", None)
    report = picklewarden.scan_path(str(path))
    assert report.verdict is Verdict.ERROR and "jinja2" in report.errors[0]


def test_directory_walk_flags_remote_code_and_skips_text(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("# A model\n\nSee python/ for the code. Load it with transformers.\n")
    (tmp_path / "notes.txt").write_text("trained for 3 epochs\n")
    format_samples.config_auto_map(tmp_path / "config.json", tmp_path / "canary")
    (tmp_path / "modeling_x.py").write_text("import torch\nimport subprocess\n\nsubprocess.run(['id'])\n")
    format_samples.safetensors_benign(tmp_path / "model.safetensors", tmp_path / "canary")
    format_samples.gguf_ssti(tmp_path / "evil.gguf", tmp_path / "canary")
    format_samples.onnx_torch_export(tmp_path / "model.onnx", tmp_path / "canary")
    report = picklewarden.scan(str(tmp_path))
    verdicts = {Path(f.path).name: f.verdict for f in report.scanned}
    assert verdicts == {
        "config.json": Verdict.SUSPICIOUS,
        "model.safetensors": Verdict.SAFE,
        "evil.gguf": Verdict.MALICIOUS,
        "model.onnx": Verdict.SAFE,
    }
    (config,) = (f for f in report.scanned if f.path.endswith("config.json"))
    assert "modeling_x.py" in config.findings[0].message
    assert "modeling_x.py:4: calls subprocess.run" in config.findings[0].evidence


def test_keras_config_names_a_keras_api_that_is_not_a_layer(tmp_path: Path) -> None:
    config = {
        "module": "keras",
        "class_name": "Sequential",
        "config": {"layers": [{"module": "keras.utils", "class_name": "get_file", "config": {}}]},
    }
    report = picklewarden.scan_bytes(json.dumps(config).encode(), "config.json")
    assert report.verdict is Verdict.MALICIOUS and {f.rule for f in report.findings} == {"PW105"}


def test_explicit_formats_say_they_are_not_pickles(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    format_samples.safetensors_benign(path, tmp_path / "canary")
    report = picklewarden.scan_path(str(path))
    assert report.verdict is Verdict.SAFE and report.format == "safetensors"
    assert any("never unpickle" in note for note in report.notes)


def test_native_executables_are_flagged(tmp_path: Path) -> None:
    elf = Path(sys.executable).resolve().read_bytes()[: 1 << 16]
    pe = bytearray(b"MZ" + bytes(62) + bytes(64) + b"PE\x00\x00" + bytes(64))
    struct.pack_into("<I", pe, 0x3C, 128)
    for name, data in (("model.bin", elf), ("model.pt", bytes(pe)), ("w.bin", b"\xcf\xfa\xed\xfe" + bytes(60))):
        report = picklewarden.scan_bytes(data, name)
        assert report.verdict is Verdict.MALICIOUS and {f.rule for f in report.findings} == {"PW406"}, name


def test_llamafile_is_recognised_and_its_weights_scanned(tmp_path: Path) -> None:
    import io
    import zipfile

    weights = tmp_path / "evil.gguf"
    format_samples.gguf_ssti(weights, tmp_path / "canary")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("model.gguf", weights.read_bytes())
    data = b"MZqFpD='\n" + b"exec sh -c 'echo llamafile'\n" + bytes(200) + buffer.getvalue()
    report = picklewarden.scan_bytes(data, "model.llamafile")
    rules = {f.rule for f in report.findings}
    assert report.format.startswith("llamafile") and {"PW406", "PW403"} <= rules, (report.format, rules)


def test_interpolated_target_is_suspicious() -> None:
    report = picklewarden.scan_bytes(b"cls: os.system\nmodel:\n  _target_: ${cls}\n", "conf.yaml")
    assert report.verdict is Verdict.SUSPICIOUS and [f.rule for f in report.findings] == ["PW402"]


def test_tf_keras_2_lambda_shape_in_h5(tmp_path: Path) -> None:
    import base64

    import h5py

    code = base64.b64encode(marshal.dumps((lambda x: __import__("os").system("id") or x).__code__)).decode()
    layer = {"class_name": "Lambda", "config": {"function": [code, None, None], "function_type": "lambda"}}
    config = {"class_name": "Sequential", "config": {"layers": [layer]}}
    path = tmp_path / "legacy.h5"
    with h5py.File(path, "w") as handle:
        handle.attrs["model_config"] = json.dumps(config)
    report = picklewarden.scan_path(str(path))
    (lam,) = (f for f in report.findings if f.rule == "PW400")
    assert report.verdict is Verdict.MALICIOUS and "LOAD_GLOBAL __import__" in lam.evidence


def test_scanning_the_format_samples_executes_and_imports_nothing(tmp_path: Path) -> None:
    """The audit-hook harness of test_never_execute, over every malicious format sample (benign twins warm up
    the lazily imported readers: PyYAML, jinja2, h5py)."""
    from tests.test_never_execute import _harness

    canary = tmp_path / "canary"
    bad, warm = tmp_path / "bad", tmp_path / "warm"
    paths = []
    for case in format_samples.CASES:
        folder = bad if case.expect == "malicious" else warm
        path = folder / case.id / case.filename
        path.parent.mkdir(parents=True)
        case.make(path, canary)
        if folder is bad:
            paths.append(path)
    stdout, violations = _harness("scan", "none", warm, tmp_path / "log", paths, tmp_path)
    assert violations == []
    verdicts = json.loads(stdout.split("BEGIN\nVERDICTS", 1)[1].split("\n", 1)[0])
    assert verdicts.count("malicious") == len(paths) >= 10
    assert not canary.exists()


def test_scripts_named_as_scripts_are_not_flagged() -> None:
    assert picklewarden.scan_bytes(b"#!/usr/bin/env python\nprint(1)\n", "train.py").format == "unknown"
    report = picklewarden.scan_bytes(b"#!/bin/sh\nid\n", "pytorch_model.bin")
    assert report.verdict is Verdict.MALICIOUS and report.findings[0].rule == "PW406"


def test_new_rules_are_listed_with_cwe_and_carried_by_sarif(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from picklewarden.cli import main

    assert main(["rules"]) == 0
    listed = capsys.readouterr().out
    assert all(f"PW40{i}" in listed for i in range(9))
    assert main(["explain", "PW403"]) == 0
    assert "CWE-1336" in capsys.readouterr().out
    path = tmp_path / "evil.gguf"
    format_samples.gguf_ssti(path, tmp_path / "canary")
    main(["scan", "--format", "sarif", str(path)])
    log = json.loads(capsys.readouterr().out)
    rules = {r["id"]: r for r in log["runs"][0]["tool"]["driver"]["rules"]}
    assert rules["PW403"]["properties"]["tags"] == ["security", "external/cwe/cwe-1336"]
    assert {r["ruleId"] for r in log["runs"][0]["results"]} == {"PW403"}


def test_a_yaml_named_pickle_is_also_judged_as_a_pickle() -> None:
    report = picklewarden.scan_bytes(b"cos\nsystem\n(S'id'\ntR.", "config.yaml")
    assert report.verdict is Verdict.MALICIOUS and report.findings[0].rule == "PW100"


def test_gguf_tensor_offsets_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "ok.gguf"
    format_samples.gguf_benign(path, tmp_path / "canary")
    data = bytearray(path.read_bytes())
    assert picklewarden.scan_bytes(bytes(data), "ok.gguf").verdict is Verdict.SAFE
    at = data.index(b"token_embd.weight") + len("token_embd.weight") + 4 + 2 * 8 + 4
    struct.pack_into("<Q", data, at, 1 << 40)
    report = picklewarden.scan_bytes(bytes(data), "bad.gguf")
    assert [f.rule for f in report.findings] == ["PW408"] and "past the end" in report.findings[0].message


def test_broken_onnx_named_onnx_is_malformed_not_unsupported() -> None:
    report = picklewarden.scan_bytes(b"\x08\x07\x3a\xff\xff\xff\x0f", "model.onnx")
    assert report.format == "onnx" and [f.rule for f in report.findings] == ["PW408"]


def test_bytecode_listing_is_bounded_when_references_repeat_a_code_object() -> None:
    inner = marshal.dumps((lambda: 1).__code__)
    # A code object whose constants are one nested code object referenced 5000 times (FLAG_REF + 'r').
    outer = bytearray(marshal.dumps((lambda: lambda: 1).__code__))
    code = bytecode.decode(bytes(outer))
    assert bytecode.listing(code)[0].startswith("code object")
    many = b")\x01" + b"\xe3" + inner[1:]  # a tuple holding a referenced code object
    refs = b"(" + struct.pack("<i", 5000) + b"\xe3" + inner[1:] + b"r\x00\x00\x00\x00" * 4999
    assert isinstance(bytecode._Reader(many).read(), tuple)
    values = bytecode._Reader(refs).read()
    assert isinstance(values, tuple) and len(values) == 5000 and len({id(v) for v in values}) == 1
    lines = bytecode.listing(bytecode.Code("<outer>", "f.py", b"", values, (), "3.11+"))
    assert sum(line.lstrip().startswith("code object") for line in lines) == 2 and len(lines) < 20
