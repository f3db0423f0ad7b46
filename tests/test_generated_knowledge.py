"""The reviewed data written by ``scripts/gen_knowledge.py`` is well-formed and holds what the scanner relies on.

Reads the JSON file only: neither torch nor numpy (nor the generator) is needed. Checks on torch/numpy entries
are skipped when the file was generated without that package.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).resolve().parent / ".." / "src" / "picklewarden" / "knowledge" / "data" / "generated.json"
SINKS = DATA.with_name("generated_sinks.json")
CATEGORIES = frozenset({"process", "code", "file", "network", "import", "deserialize", "tamper", "indirection"})
TOP_KEYS = {
    "generated_by",
    "python",
    "numpy",
    "torch",
    "platform",
    "closed",
    "counts",
    "modules",
    "import_failures",
    "import_effects",
    "springboards",
    "safe",
    "sink_reasons",
    "sinks",
}
DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
SINK_REASON = re.compile(r"^(root sink \S+: .+|native sink \S+: .+|calls \S+( \(via \S+( -> \S+)*\))?)$")


@cache
def data() -> dict[str, Any]:
    """Both files, merged: the main one and the sink table the scanner reads only when it needs it."""
    with DATA.open(encoding="utf-8") as handle:
        loaded = json.load(handle)
    with SINKS.open(encoding="utf-8") as handle:
        sinks = json.load(handle)
    assert isinstance(loaded, dict) and isinstance(sinks, dict)
    assert set(sinks) == {"generated_by", "sink_reasons", "sinks"}
    assert sinks["generated_by"] == loaded["generated_by"]
    return {**loaded, **sinks}


def sink_entries() -> list[dict[str, str]]:
    """The sinks as flat entries (the file groups them by module and shares their reasons)."""
    reasons = data()["sink_reasons"]
    return [
        {"module": module, "qualname": qualname, "category": category, "reason": reasons[at]}
        for module, entries in data()["sinks"].items()
        for qualname, (category, at) in entries.items()
    ]


def section_entries(section: str) -> list[dict[str, str]]:
    return sink_entries() if section == "sinks" else list(data()[section])


def keys(section: str) -> list[tuple[str, str]]:
    return [(entry["module"], entry["qualname"]) for entry in section_entries(section)]


def requires(package: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(data().get(package) is None, reason=f"generated without {package}")


def test_top_level_schema() -> None:
    raw = data()
    assert set(raw) == TOP_KEYS
    assert raw["generated_by"] == "scripts/gen_knowledge.py"
    assert isinstance(raw["python"], str)
    assert re.match(r"^3\.\d+\.\d+", raw["python"])
    for package in ("numpy", "torch"):
        assert raw[package] is None or (isinstance(raw[package], str) and raw[package])
    assert isinstance(raw["springboards"], dict)
    assert isinstance(raw["safe"], list)
    assert isinstance(raw["sinks"], dict)
    assert isinstance(raw["sink_reasons"], list)
    assert raw["platform"] and isinstance(raw["closed"], list) and {"os", "numpy", "torch"} <= set(raw["closed"])
    assert isinstance(raw["import_failures"], dict) and isinstance(raw["import_effects"], dict)


def test_springboards_schema_and_order() -> None:
    springboards = data()["springboards"]
    assert list(springboards) == sorted(springboards)
    assert springboards, "no springboards at all"
    for module, attrs in springboards.items():
        assert DOTTED.match(module), module
        assert isinstance(attrs, dict) and attrs, module
        assert list(attrs) == sorted(attrs), module
        for attr, target in attrs.items():
            assert DOTTED.match(attr) and "." not in attr, (module, attr)
            assert not (attr.startswith("__") and attr.endswith("__")), (module, attr)
            assert isinstance(target, str) and DOTTED.match(target), (module, attr, target)


@pytest.mark.parametrize("section", ["safe", "sinks"])
def test_entries_schema(section: str) -> None:
    expected = {"module", "qualname", "reason"} | ({"category"} if section == "sinks" else set())
    for entry in section_entries(section):
        assert isinstance(entry, dict) and set(entry) == expected, entry
        assert isinstance(entry["module"], str) and DOTTED.match(entry["module"]), entry
        assert isinstance(entry["qualname"], str) and DOTTED.match(entry["qualname"]), entry
        assert isinstance(entry["reason"], str) and entry["reason"].strip(), entry
        if section == "sinks":
            assert entry["category"] in CATEGORIES, entry
            assert SINK_REASON.match(entry["reason"]), entry


@pytest.mark.parametrize("section", ["safe", "sinks"])
def test_entries_sorted_and_unique(section: str) -> None:
    found = keys(section)
    assert found == sorted(found), f"{section} is not sorted by (module, qualname)"
    assert len(found) == len(set(found)), f"{section} has duplicate globals"


def test_nothing_is_both_safe_and_a_sink() -> None:
    both = set(keys("safe")) & set(keys("sinks"))
    assert not both, sorted(both)


def test_known_springboards() -> None:
    springboards = data()["springboards"]
    assert springboards["shutil"]["os"] == "os"
    assert springboards["subprocess"]["os"] == "os"


@requires("torch")
def test_known_torch_springboards() -> None:
    springboards = data()["springboards"]
    assert springboards["torch.serialization"]["os"] == "os"
    assert springboards["torch.serialization"]["pickle"] == "pickle"
    assert springboards["torch"]["serialization"] == "torch.serialization"
    # torch pickles memory formats as ("torch._utils", "torch.channels_last"): the scanner needs this hop.
    assert springboards["torch._utils"]["torch"] == "torch"


def test_known_safe_stdlib() -> None:
    safe = set(keys("safe"))
    for key in [
        ("collections", "OrderedDict"),
        ("collections", "defaultdict"),
        ("argparse", "Namespace"),
        ("copyreg", "_reconstructor"),
        ("_codecs", "encode"),
        ("datetime", "datetime"),
        ("pathlib", "PosixPath"),
    ]:
        assert key in safe, key


@requires("torch")
def test_known_safe_torch() -> None:
    safe = set(keys("safe"))
    for key in [
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_parameter"),
        ("torch", "float16"),
        ("torch", "Size"),
        ("torch", "device"),
        ("torch", "FloatStorage"),
        ("torch", "channels_last"),
        ("torch.serialization", "_get_layout"),
        ("torch.nn.modules.linear", "Linear"),
        ("torch.optim.adam", "Adam"),
        ("torch.optim.lr_scheduler", "StepLR"),
    ]:
        assert key in safe, key


@requires("numpy")
def test_known_safe_numpy() -> None:
    safe = set(keys("safe"))
    assert ("numpy", "dtype") in safe
    assert ("numpy", "ndarray") in safe
    assert {("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "_reconstruct")} & safe


def test_dangerous_globals_are_never_safe() -> None:
    safe = set(keys("safe"))
    for key in [
        ("builtins", "eval"),
        ("builtins", "exec"),
        ("builtins", "getattr"),
        ("builtins", "__import__"),
        ("os", "system"),
        ("posix", "system"),
        ("subprocess", "Popen"),
        ("torch.storage", "_load_from_bytes"),
        ("torch", "load"),
    ]:
        assert key not in safe, key


def sink_category(module: str, qualname: str) -> str | None:
    found = data()["sinks"].get(module, {}).get(qualname)
    return str(found[0]) if found else None


@pytest.mark.parametrize(
    ("module", "qualname", "category"),
    [
        ("uuid", "_get_command_stdout", "process"),
        ("os", "system", "process"),
        ("subprocess", "Popen", "process"),
        ("pydoc", "pipepager", "process"),
        ("imaplib", "IMAP4_stream", "process"),
        ("builtins", "eval", "code"),
        ("builtins", "exec", "code"),
        ("importlib", "import_module", "import"),
        ("pickle", "loads", "deserialize"),
        ("socket", "create_connection", "network"),
        ("builtins", "open", "file"),
        ("pathlib", "Path.write_text", "file"),
    ],
)
def test_known_stdlib_sinks(module: str, qualname: str, category: str) -> None:
    assert sink_category(module, qualname) == category


@requires("torch")
@pytest.mark.parametrize(
    ("module", "qualname", "category"),
    [
        ("torch.storage", "_load_from_bytes", "deserialize"),
        ("torch", "load", "deserialize"),
        ("torch.fx.graph_module", "_forward_from_src", "code"),
    ],
)
def test_known_torch_sinks(module: str, qualname: str, category: str) -> None:
    assert sink_category(module, qualname) == category


@requires("numpy")
def test_known_numpy_sinks() -> None:
    assert sink_category("numpy.testing._private.utils", "runstring") == "code"
    assert sink_category("numpy", "load") == "deserialize"
