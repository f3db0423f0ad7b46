"""The generated knowledge split into parts, so that a scan parses only the parts its lookups reach.

``data/generated.json`` stays the reviewed source of truth (written by ``scripts/gen_knowledge.py``); this
module derives ``data/compact/*.json`` from it (``scripts/compact_knowledge.py`` writes them, and a test checks
that the shipped files equal what :func:`split` makes of the source). Parsing the whole 721 kB source took ~7 ms
of a ~100 ms scan of a one-tensor checkpoint, whose globals need only the index and the safe list (~70 kB):
the springboards (70% of the source) are read only for dotted names, the module list only for names that
no table knows.
"""

from __future__ import annotations

import json

from picklewarden._typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any, Final

INDEX: Final = "index.json"
"""``closed``, ``effects`` and ``versions``: small, read by every lookup."""
SAFE: Final = "safe.json"
"""``{module: {qualname: reason}}``: read by the first lookup that no hand table answers."""
WORLD: Final = "world.json"
"""``modules`` and ``failures``: the closed world's membership, read for names that no table knows."""
SPRINGBOARDS: Final = "springboards.json"
"""Module attributes that are modules, read only to resolve a dotted name."""


def split(source: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The compact parts (file name -> JSON object) of the parsed ``generated.json``."""
    safe: dict[str, dict[str, str]] = {}
    for entry in source.get("safe", []):
        safe.setdefault(entry["module"], {})[entry["qualname"]] = entry["reason"]
    versions = ", ".join(f"{k} {source[k]}" for k in ("python", "numpy", "torch") if source.get(k))
    return {
        INDEX: {
            "generated_by": source.get("generated_by", ""),
            "closed": sorted(source.get("closed", ())),
            "effects": source.get("import_effects", {}),
            "versions": versions,
        },
        SAFE: safe,
        WORLD: {"modules": sorted(source.get("modules", ())), "failures": sorted(source.get("import_failures", {}))},
        SPRINGBOARDS: source.get("springboards", {}),
    }


def render(part: dict[str, Any]) -> str:
    """One part as written to disk: compact separators (these files are read, not reviewed), sorted keys."""
    return json.dumps(part, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"
