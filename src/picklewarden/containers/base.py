"""What a container yields: pickle streams to analyse, plus anomalies seen in the container itself."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Stacking(enum.Enum):
    """How many pickles a loader reads from one stream."""

    ONE = "one"
    """Exactly one pickle (torch's data.pkl): anything after STOP is ignored by the loader."""
    ALL = "all"
    """Read pickles back to back while they last (raw files: scan everything a loader could read)."""


@dataclass(frozen=True)
class Anomaly:
    """Something odd about the container. ``code`` maps to a rule in :mod:`picklewarden.rules`."""

    rule: str
    member: str | None
    offset: int | None
    message: str


@dataclass(frozen=True)
class PickleSource:
    member: str
    """Member name within the container ('' for a bare stream)."""
    data: bytes
    stacking: Stacking
    file_like: bool
    """The victim's loader reads it from a file object (True) or a BytesIO of the member (False)."""


@dataclass
class Opened:
    format: str
    sources: list[PickleSource] = field(default_factory=list)
    anomalies: list[Anomaly] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
