"""Judge a callable named in a config (Hydra ``_target_``, a Keras ``module``/``class_name``, a YAML python
tag) exactly as a global in a pickle: resolved and classified with :mod:`picklewarden.knowledge`.

A dotted name in a config does not say where the module ends: Hydra's ``_locate`` and Keras import the
longest importable prefix and walk the rest as attributes. Every split is therefore judged, and the worst
answer wins: ``os.path.join`` and ``os.system`` are read as the loader reaches them, whatever the split.
"""

from __future__ import annotations

from dataclasses import dataclass

from picklewarden.containers.base import Anomaly
from picklewarden.knowledge.resolve import Resolved, classify, resolve
from picklewarden.knowledge.tables import Category, Knowledge
from picklewarden.model import Severity

_PROTOCOL = 4
"""Configs name callables with dotted paths, as protocol-4 STACK_GLOBAL does (no Python-2 remapping)."""


@dataclass(frozen=True)
class Judged:
    """What is known about one named callable."""

    name: str
    """As written in the config."""
    resolved: Resolved
    known: Knowledge | None
    """None when picklewarden knows nothing about it."""

    @property
    def dangerous(self) -> bool:
        return self.known is not None and self.known.category is not Category.SAFE

    @property
    def safe(self) -> bool:
        return self.known is not None and self.known.category is Category.SAFE


_SEVERITY_ORDER = {
    Category.PROCESS: 0,
    Category.CODE: 1,
    Category.IMPORT: 2,
    Category.DESERIALIZE: 3,
    Category.FILE: 4,
    Category.NETWORK: 5,
    Category.INDIRECTION: 6,
    Category.TAMPER: 7,
}


def judge(name: str) -> Judged:
    """Resolve and classify ``name`` (``pkg.mod.Class`` or ``pkg.mod:Class``) under every module split."""
    text = name.strip().replace(":", ".")
    parts = [p for p in text.split(".") if p]
    if len(parts) < 2:
        # A bare name is looked up where Python finds bare names: the builtins (``eval``, ``exec``).
        parts = ["builtins", *parts] if parts else ["builtins", "<empty>"]
    best: Judged | None = None
    safe: Judged | None = None
    for cut in range(1, len(parts)):
        resolved = resolve(".".join(parts[:cut]), ".".join(parts[cut:]), _PROTOCOL)
        known = classify(resolved)
        candidate = Judged(name, resolved, known)
        if candidate.dangerous:
            assert known is not None
            if best is None or _rank(known) < _rank(best.known):
                best = candidate
        elif candidate.safe and safe is None:
            safe = candidate
    if best is not None:
        return best
    if safe is not None:
        return safe
    return Judged(name, resolve(parts[0], ".".join(parts[1:]), _PROTOCOL), None)


def _rank(known: Knowledge | None) -> int:
    return 99 if known is None else _SEVERITY_ORDER.get(known.category, 50)


def anomaly(
    judged: Judged,
    *,
    how: str,
    where: str,
    member: str | None,
    evidence: str,
    unknown_rule: str = "PW402",
    unknown_severity: Severity | None = None,
) -> Anomaly | None:
    """The finding for a config that makes its loader ``how`` (``calls``, ``imports``) ``judged``; None when
    the callable is known safe. Unknown callables go to ``unknown_rule`` (a listing by default)."""
    from picklewarden.rules import RULE_FOR_CATEGORY  # rules sit after containers: imported when judging

    display = judged.resolved.display
    if judged.safe:
        return None
    if judged.known is not None:
        rule = RULE_FOR_CATEGORY[judged.known.category]
        message = f"{where} {how} {display}: {judged.known.reason}"
        return Anomaly(rule, member, None, message, evidence=evidence, symbol=judged.resolved.symbol)
    message = f"{where} {how} {display}, which picklewarden does not know: review the package it comes from"
    return Anomaly(
        unknown_rule, member, None, message, unknown_severity, evidence=evidence, symbol=judged.resolved.symbol
    )
