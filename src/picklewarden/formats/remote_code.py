"""transformers' ``auto_map``: with ``trust_remote_code=True``, ``AutoModel.from_pretrained`` imports the
Python files it names from the repository (or from another repository, ``org/repo--module.Class``)."""

from __future__ import annotations

from typing import Any

from picklewarden.containers.base import Anomaly


def review(config: dict[str, Any], name: str) -> list[Anomaly]:
    auto_map = config.get("auto_map")
    if not isinstance(auto_map, dict) or not auto_map:
        return []
    files: dict[str, None] = {}
    for value in auto_map.values():
        for ref in value if isinstance(value, list) else [value]:
            if isinstance(ref, str) and "." in ref:
                repo, _, module = ref.rpartition("--")
                path = module.rsplit(".", 1)[0].replace(".", "/") + ".py"
                files[f"{repo}:{path}" if repo else path] = None
    if not files:
        return []
    listed = ", ".join(files)
    where = f"{name}: " if name else ""
    message = (
        f"{where}auto_map makes transformers import {listed} with trust_remote_code=True: that code runs with "
        "the user's rights"
    )
    evidence = "auto_map: " + ", ".join(f"{k} -> {v}" for k, v in auto_map.items())
    return [Anomaly("PW407", None, None, message, evidence=evidence[:2000])]
