"""The exceptions picklewarden raises. Everything it raises on bad input derives from :class:`ScanError`."""

from __future__ import annotations


class ScanError(Exception):
    """A file or stream could not be (fully) analysed."""


class MalformedPickle(ScanError):
    """The pickle stream is broken at ``offset``; everything before it was analysed."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(f"malformed pickle at offset {offset}: {reason}")
        self.offset = offset
        self.reason = reason


class UnsupportedFormat(ScanError):
    """The input is not a format picklewarden reads."""


class LimitExceeded(ScanError):
    """A resource bound from :class:`~picklewarden.limits.Limits` was reached."""

    def __init__(self, resource: str, limit: int, actual: int, offset: int | None = None) -> None:
        where = "" if offset is None else f" at offset {offset}"
        super().__init__(f"{resource} limit {limit} exceeded ({actual}){where}")
        self.resource = resource
        self.limit = limit
        self.actual = actual
        self.offset = offset
