#!/usr/bin/env python3
"""Write ``src/picklewarden/knowledge/data/compact/`` from the reviewed ``generated.json`` (see
``picklewarden/knowledge/compact.py``). ``gen_knowledge.py`` runs it after writing the source; run it by hand
after editing ``generated.json``::

    python scripts/compact_knowledge.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from picklewarden.knowledge import compact  # noqa: E402

DATA = ROOT / "src" / "picklewarden" / "knowledge" / "data"


def write(data: Path = DATA) -> None:
    """Split ``data/generated.json`` into ``data/compact/``, replacing the parts there."""
    source = json.loads((data / "generated.json").read_text("utf-8"))
    out = data / "compact"
    out.mkdir(exist_ok=True)
    for name, part in compact.split(source).items():
        (out / name).write_text(compact.render(part), encoding="utf-8")


if __name__ == "__main__":
    write()
