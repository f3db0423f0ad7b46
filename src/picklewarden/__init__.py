"""picklewarden: find malicious code in pickles and PyTorch model files without executing them.

>>> import picklewarden
>>> report = picklewarden.scan("model.pt")          # doctest: +SKIP
>>> report.verdict                                   # doctest: +SKIP
<Verdict.SAFE: 0>
"""

from __future__ import annotations

from picklewarden.errors import LimitExceeded, MalformedPickle, ScanError, UnsupportedFormat
from picklewarden.limits import DEFAULT_LIMITS, Limits
from picklewarden.model import FileReport, Finding, Report, Severity, Verdict
from picklewarden.scanner import scan, scan_bytes, scan_path

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_LIMITS",
    "FileReport",
    "Finding",
    "LimitExceeded",
    "Limits",
    "MalformedPickle",
    "Report",
    "ScanError",
    "Severity",
    "UnsupportedFormat",
    "Verdict",
    "__version__",
    "scan",
    "scan_bytes",
    "scan_path",
]
