"""The compact parts the scanner reads (``knowledge/data/compact/``) are fresh and say what ``generated.json``,
the reviewed source, says."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from picklewarden.knowledge import compact
from picklewarden.knowledge.tables import Category, Generated, Knowledge, Sinks

DATA = Path(__file__).resolve().parent.parent / "src" / "picklewarden" / "knowledge" / "data"


def source() -> dict[str, Any]:
    return dict(json.loads((DATA / "generated.json").read_text("utf-8")))


def test_the_shipped_parts_are_what_the_script_makes_of_the_source() -> None:
    expected = {name: compact.render(part) for name, part in compact.split(source()).items()}
    shipped = {path.name: path.read_text("utf-8") for path in (DATA / "compact").iterdir()}
    stale = sorted(name for name in expected if shipped.get(name) != expected[name])
    assert not stale, f"run scripts/compact_knowledge.py: {stale} differ from generated.json"
    assert set(shipped) == set(expected)


def test_the_loaded_tables_equal_the_source() -> None:
    raw = source()
    loaded = Generated(DATA / "compact", Sinks(DATA / "generated_sinks.json"))
    assert loaded.safe == {(e["module"], e["qualname"]): e["reason"] for e in raw["safe"]}
    assert len(loaded.safe) == len(raw["safe"]) > 100  # no entry lost to a duplicate key
    assert loaded.springboards == raw["springboards"]
    assert loaded.closed == frozenset(raw["closed"])
    assert loaded.modules == frozenset(raw["modules"])
    assert loaded.failures == frozenset(raw["import_failures"])
    assert loaded.effects == {m: Knowledge(Category(c), r) for m, (c, r) in raw["import_effects"].items()}
    assert loaded.versions == f"python {raw['python']}, numpy {raw['numpy']}, torch {raw['torch']}"


def test_a_missing_part_reads_as_empty(tmp_path: Path) -> None:
    empty = Generated(tmp_path, Sinks(tmp_path / "absent.json"))
    assert (empty.safe, empty.springboards, empty.closed, empty.modules, empty.effects, empty.versions) == (
        {},
        {},
        frozenset(),
        frozenset(),
        {},
        "",
    )
    assert empty.sinks.get(("os", "system")) is None
