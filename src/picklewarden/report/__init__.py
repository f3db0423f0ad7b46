"""Renderers: pure functions from the result model to text. Only the CLI prints."""

from __future__ import annotations

import enum


class OutputFormat(enum.Enum):
    """The closed set of ``scan --format`` choices."""

    TEXT = "text"
    JSON = "json"
    JSONL = "jsonl"
    SARIF = "sarif"
