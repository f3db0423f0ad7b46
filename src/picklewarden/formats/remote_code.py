"""transformers' ``auto_map``: with ``trust_remote_code=True``, ``AutoModel.from_pretrained`` imports the
Python files it names from the repository (or from another repository, ``org/repo--module.Class``).

When the config sits in a directory, the named files beside it are parsed with ``ast`` (never imported) and
what they reach that picklewarden knows to be dangerous (processes, code execution, network, files) is
listed as evidence: ordinary modelling code is not malicious, so this informs the review rather than
deciding it.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator

from picklewarden._typing import TYPE_CHECKING
from picklewarden.containers.base import Anomaly
from picklewarden.formats import callables
from picklewarden.model import Severity

if TYPE_CHECKING:
    from typing import Any, Final

_MAX_SOURCE: Final = 4 * 1024 * 1024
_MAX_LINES: Final = 40


def review(config: dict[str, Any], name: str, folder: str = "") -> list[Anomaly]:
    """The finding for ``auto_map`` in the config ``name``; ``folder`` (the directory holding it on disk,
    empty inside archives) is where the named sources are looked for."""
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
    where = f"{os.path.basename(name)}: " if name else ""
    message = (
        f"{where}auto_map makes transformers import {listed} with trust_remote_code=True: that code runs with "
        "the user's rights"
    )
    evidence = "auto_map: " + ", ".join(f"{k} -> {v}" for k, v in auto_map.items())
    seen = [line for path in files if ":" not in path for line in _source_review(folder, path)]
    if seen:
        evidence += "\nwhat those files reach:\n" + "\n".join(seen[:_MAX_LINES])
    # The config runs nothing by itself: the user opts in with trust_remote_code=True, and the named files
    # are judged as files of their own. So the listing is information, unless the files beside it reach
    # dangerous names, or the code lives in another repository that this scan cannot see.
    elsewhere = any(":" in path for path in files)
    severity = None if seen or elsewhere else Severity.INFO
    return [Anomaly("PW407", None, None, message, severity=severity, evidence=evidence[:6000])]


def _source_review(folder: str, relative: str) -> list[str]:
    """Dangerous names a repository source file reaches, by line (empty when it is absent or unreadable)."""
    if not folder or ".." in relative.split("/"):
        return []
    path = os.path.join(folder, relative)
    try:
        if not os.path.isfile(path) or os.path.islink(path) or os.path.getsize(path) > _MAX_SOURCE:
            return []
        with open(path, encoding="utf-8", errors="replace") as handle:
            tree = ast.parse(handle.read(), relative)
    except (OSError, SyntaxError, ValueError, RecursionError):
        return [f"{relative}: could not be parsed"]
    out: list[str] = []
    for lineno, dotted, how in _reached(tree):
        judged = callables.judge(dotted)
        if judged.dangerous and judged.known is not None:
            out.append(f"{relative}:{lineno}: {how} {judged.resolved.symbol} ({judged.known.reason})")
    return out


def _reached(tree: ast.AST) -> Iterator[tuple[int, str, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, f"{alias.name}.<module>", "imports"
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}", "imports"
        elif isinstance(node, ast.Call):
            dotted = _dotted(node.func)
            if dotted:
                yield node.lineno, dotted, "calls"


def _dotted(node: ast.expr) -> str:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""
