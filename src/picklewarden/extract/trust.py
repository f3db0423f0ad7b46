"""The caller's trust: which globals the scan did not know, but the caller vouches for.

For now a policy is just a list of names (a colleague is building full policy files). An entry is a module,
trusting that module and its submodules by package hierarchy (``"mylab.models"`` trusts
``mylab.models.resnet.ResNet``, not ``mylab.models_old.X``), or an exact ``module.qualname`` (which also
covers names nested in it, such as a class's inner classes). Names are
compared with the scanner's canonical resolution of each global (Python-2 names remapped, springboards
followed), never with the raw text in the file.

Trust only ever lifts *unknown* globals. A global the scanner knows to be dangerous stays dangerous whatever
the policy says, and so does a malformed stream or archive.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from picklewarden.knowledge.resolve import Resolved


@runtime_checkable
class SupportsTrust(Protocol):
    """Anything with a ``trust`` attribute listing trusted names (the future policy object)."""

    @property
    def trust(self) -> Iterable[str]: ...


PolicyLike = SupportsTrust | Iterable[str] | None
"""What ``load``/``convert`` accept as ``policy``: None, a list of trusted names, or an object with ``trust``."""


@dataclass(frozen=True, slots=True)
class Trust:
    """A validated set of trusted names."""

    entries: frozenset[str] = frozenset()

    @classmethod
    def of(cls, policy: PolicyLike) -> Trust:
        if policy is None:
            return cls()
        if isinstance(policy, Trust):
            return policy
        names: Iterable[str]
        if isinstance(policy, str):
            names = (policy,)  # a lone string is one name, not an iterable of one-letter names
        elif isinstance(policy, SupportsTrust):
            names = policy.trust
            if isinstance(names, str):
                names = (names,)
        else:
            names = policy
        entries = []
        for name in names:
            if not isinstance(name, str) or not name or any(not part for part in name.split(".")):
                raise ValueError(f"policy trust entries must be dotted names like 'pkg.module', got {name!r}")
            entries.append(name)
        return cls(frozenset(entries))

    def trusts(self, resolved: Resolved) -> bool:
        """True when an entry is the global's ``module.qualname`` or a dotted prefix of it (a package,
        module or enclosing class)."""
        if resolved.introspection is not None:
            return False  # a walk through __globals__ & co. reaches anything: no name can vouch for that
        pieces = resolved.symbol.split(".")
        return any(".".join(pieces[:i]) in self.entries for i in range(1, len(pieces) + 1))
