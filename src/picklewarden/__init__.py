"""picklewarden: find malicious code in pickles and PyTorch model files without executing them.

>>> import picklewarden
>>> report = picklewarden.scan("model.pt")          # doctest: +SKIP
>>> report.verdict                                   # doctest: +SKIP
<Verdict.SAFE: 0>
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from picklewarden.errors import LimitExceeded, MalformedPickle, ScanError, UnsupportedFormat
from picklewarden.limits import DEFAULT_LIMITS, Limits
from picklewarden.model import FileReport, Finding, Report, Severity, Verdict
from picklewarden.policy.config import Policy, PolicyError
from picklewarden.policy.config import resolve_policy as load_policy
from picklewarden.scanner import scan, scan_bytes, scan_path

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_LIMITS",
    "FileReport",
    "Finding",
    "LimitExceeded",
    "Limits",
    "MalformedPickle",
    "Policy",
    "PolicyError",
    "Report",
    "ScanError",
    "Severity",
    "UnsupportedFormat",
    "Verdict",
    "__version__",
    "load_policy",
    "scan",
    "scan_bytes",
    "scan_path",
]

if TYPE_CHECKING:  # the real signatures for type checkers; at run time __getattr__ imports them on first use
    from picklewarden.extract.converting import convert as convert
    from picklewarden.extract.loading import load as load


def __getattr__(name: str) -> object:
    """``load`` and ``convert``, imported on first use so ``import picklewarden`` stays light."""
    if name == "load":
        from picklewarden.extract.loading import load

        return load
    if name == "convert":
        from picklewarden.extract.converting import convert

        return convert
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
