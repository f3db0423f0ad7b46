"""Renderers: pure functions from the result model to text. Only the CLI prints."""

from __future__ import annotations

import enum


class OutputFormat(enum.Enum):
    TEXT = "text"
    JSON = "json"
