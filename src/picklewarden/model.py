"""The result model shared by the library API and every output format."""

from __future__ import annotations

import enum

from picklewarden._typing import NamedTuple, assert_never


class Severity(enum.IntEnum):
    """How bad one finding is. Ordered: compare with ``<``/``>=``."""

    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @property
    def label(self) -> str:
        return self.name.lower()


class Verdict(enum.IntEnum):
    """A file's overall judgement. Ordered by how loudly it must be reported.

    ``ERROR`` ranks above ``SAFE`` but below ``SUSPICIOUS``: a file that could not be fully analysed is
    never clean, while any threat found in the part that could be read still decides the verdict.
    """

    SAFE = 0
    ERROR = 1
    SUSPICIOUS = 2
    MALICIOUS = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def from_severity(cls, severity: Severity) -> Verdict:
        match severity:
            case Severity.CRITICAL | Severity.HIGH:
                return cls.MALICIOUS
            case Severity.MEDIUM | Severity.LOW:
                return cls.SUSPICIOUS
            case Severity.INFO:
                return cls.SAFE
            case _:
                assert_never(severity)


# The records are NamedTuples, not dataclasses: Python 3.11 compiles each generated dataclass method at
# import, which every one-file scan pays for (see "Start-up" in docs/benchmarks.md). They stay immutable,
# compared and hashed by value; ``_replace`` and ``_asdict`` stand for dataclasses' functions.


class Indicator(NamedTuple):
    """One indicator of compromise pulled from a call's arguments."""

    kind: str
    """``command``, ``code``, ``url``, ``ip``, ``path``, ``base64``, ``hex``, ``zlib``, ``marshal`` or ``pickle``."""
    value: str
    """The indicator (decoded payloads are shown decoded, truncated to a readable length)."""


class Finding(NamedTuple):
    """One reason a file is not safe."""

    rule: str
    """Stable rule id, e.g. ``PW100`` (see ``picklewarden rules``)."""
    severity: Severity
    message: str
    """One sentence for a person: what the file does and why that matters."""
    member: str = ""
    """Container member the pickle came from ('' for a bare pickle file)."""
    offset: int | None = None
    """Byte offset within the member of the opcode that caused it, when known."""
    evidence: str = ""
    """The decompiled line(s) that show it."""
    symbol: str = ""
    """The canonical ``module.qualname`` involved, when one is."""
    indicators: tuple[Indicator, ...] = ()
    """What a responder needs from the call's arguments: commands, URLs, IPs, paths, decoded payloads."""
    policy: str = ""
    """Empty unless a policy changed this finding; then what it changed and which file said so."""

    def sort_key(self) -> tuple[int, str, int, str]:
        return (-self.severity, self.member, -1 if self.offset is None else self.offset, self.rule)


class FileReport(NamedTuple):
    """Everything picklewarden concluded about one file."""

    path: str
    """The path exactly as given (or as found under a given directory)."""
    format: str
    """Detected container format, e.g. ``pickle``, ``torch-zip``, ``torch-legacy``, or ``unknown``."""
    findings: tuple[Finding, ...] = ()
    errors: tuple[str, ...] = ()
    """Why (part of) the file could not be analysed. Non-empty means the scan was incomplete."""
    pickles: int = 0
    """Number of pickle streams analysed."""
    skipped: bool = False
    """Not a model file (directory walks only); not analysed and not judged."""
    location: str = ""
    """How people name the file when it sits in a Hugging Face cache: ``org/name:path/in/repo``."""
    revision: str = ""
    """The Hugging Face cache snapshot (commit) the file belongs to, when ``location`` is set."""
    notes: tuple[str, ...] = ()
    """Facts about the file that are not findings: formats found inside it, why it was skipped."""

    @property
    def verdict(self) -> Verdict:
        worst = Verdict.SAFE
        for finding in self.findings:
            worst = max(worst, Verdict.from_severity(finding.severity))
        if self.errors:
            worst = max(worst, Verdict.ERROR)
        return worst

    @property
    def max_severity(self) -> Severity | None:
        return max((f.severity for f in self.findings), default=None)


class Report(NamedTuple):
    """The result of one scan over one or more paths."""

    files: tuple[FileReport, ...] = ()

    @property
    def scanned(self) -> tuple[FileReport, ...]:
        return tuple(f for f in self.files if not f.skipped)

    @property
    def counts(self) -> dict[str, int]:
        counts = {v.label: 0 for v in Verdict}
        for f in self.scanned:
            counts[f.verdict.label] += 1
        return counts

    @property
    def verdict(self) -> Verdict:
        return max((f.verdict for f in self.scanned), default=Verdict.SAFE)

    def exit_code(self, fail_on: Verdict = Verdict.SUSPICIOUS) -> int:
        """0: nothing reached ``fail_on`` and all analysed; 1: something reached it; 2: incomplete."""
        if fail_on not in (Verdict.SUSPICIOUS, Verdict.MALICIOUS):
            raise ValueError("fail_on must be SUSPICIOUS or MALICIOUS")
        verdicts = [f.verdict for f in self.scanned]
        if any(v >= fail_on and v != Verdict.ERROR for v in verdicts):
            return 1
        if any(f.errors for f in self.scanned):
            return 2
        return 0
