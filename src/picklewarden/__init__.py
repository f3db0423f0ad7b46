"""picklewarden: find malicious code in pickles and PyTorch model files without executing them.

>>> import picklewarden
>>> report = picklewarden.scan("model.pt")          # doctest: +SKIP
>>> report.verdict                                   # doctest: +SKIP
<Verdict.SAFE: 0>
"""

from __future__ import annotations

from picklewarden._typing import TYPE_CHECKING
from picklewarden.errors import LimitExceeded, MalformedPickle, ScanError, UnsupportedFormat
from picklewarden.limits import DEFAULT_LIMITS, Limits
from picklewarden.model import FileReport, Finding, Report, Severity, Verdict

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
    from picklewarden.filescan import scan as scan
    from picklewarden.filescan import scan_bytes as scan_bytes
    from picklewarden.filescan import scan_path as scan_path
    from picklewarden.policy.config import Policy as Policy
    from picklewarden.policy.config import PolicyError as PolicyError
    from picklewarden.policy.config import resolve_policy as load_policy

# Imported on first use: the scanner and the policy loader pull in every container reader and the rules
# (~100 ms), which ``picklewarden --version`` and a process that only reads reports never need.
_LAZY = {
    "load": ("picklewarden.extract.loading", "load"),
    "convert": ("picklewarden.extract.converting", "convert"),
    "Policy": ("picklewarden.policy.config", "Policy"),
    "PolicyError": ("picklewarden.policy.config", "PolicyError"),
    "load_policy": ("picklewarden.policy.config", "resolve_policy"),
    "scan": ("picklewarden.filescan", "scan"),
    "scan_bytes": ("picklewarden.filescan", "scan_bytes"),
    "scan_path": ("picklewarden.filescan", "scan_path"),
}


def __getattr__(name: str) -> object:
    """The names in ``_LAZY``, imported on first use so ``import picklewarden`` stays light."""
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(target[0]), target[1])
    globals()[name] = value
    return value
