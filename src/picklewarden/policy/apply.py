"""Apply a :class:`~picklewarden.policy.config.Policy` to findings: a pure post-processing step.

Rules judge every global the same way for everyone; a policy then adjusts the result for one project:

* PW200/PW201 findings (unknown globals) whose ``symbol`` is trusted are dropped;
* PW100-PW108 findings (known sinks) are never touched by ``trust``; only ``[override] allow_dangerous``
  accepts them, and then they stay in the report with severity ``info`` and a ``policy`` note;
* ``[severity]`` overrides change a finding's severity and say so in its ``policy`` note.

Names match by dotted components, never by string prefix: ``acme`` trusts ``acme.nn.Block`` but not
``acme_evil.Block``.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from picklewarden.globs import glob_regex
from picklewarden.model import FileReport, Finding, Report, Severity
from picklewarden.policy.config import SINK_RULES, UNKNOWN_RULES, Policy


def covers(entry: str, symbol: str) -> bool:
    """True when the dotted ``entry`` names ``symbol`` itself or something ``symbol`` lives in.

    ``acme_models`` covers ``acme_models.nn.Block`` (a package covers its submodules and their contents);
    ``mylib.nn.Block`` covers itself and names nested in it (``mylib.nn.Block.Config``). Component-wise,
    so ``acme`` never covers ``acme_models``.
    """
    return bool(symbol) and (symbol == entry or symbol.startswith(entry + "."))


def match(entries: tuple[str, ...], symbol: str) -> str | None:
    """The first entry that covers ``symbol``, or None."""
    return next((e for e in entries if covers(e, symbol)), None)


def ignored(policy: Policy, path: str) -> str | None:
    """The ``ignore`` pattern that excludes ``path``, or None.

    Patterns containing ``/`` match the path relative to the policy's directory (or as given when it lies
    elsewhere); patterns without one match the file name in any directory, like ``.gitignore``.
    """
    if not policy.ignore:
        return None
    relative = PurePosixPath(Path(path).as_posix())
    if policy.root:
        try:
            relative = PurePosixPath(Path(os.path.abspath(path)).relative_to(policy.root).as_posix())
        except ValueError:
            pass
    text = str(relative).removeprefix("./")
    for pattern in policy.ignore:
        subject = text if "/" in pattern.rstrip("/") else relative.name
        if glob_regex(pattern.removeprefix("./")).match(subject):
            return pattern
    return None


def _note(policy: Policy, what: str) -> str:
    return f"{what} ({policy.source or 'policy'})"


def apply_finding(policy: Policy, finding: Finding) -> Finding | None:
    """The finding as the policy sees it, or None when the policy drops it."""
    if finding.rule in UNKNOWN_RULES:
        entry = match(policy.trust, finding.symbol)
        if entry is not None:
            return None
    notes = [finding.policy] if finding.policy else []
    severity = finding.severity
    if finding.rule in SINK_RULES:
        accepted = match(policy.dangerous_globals, finding.symbol)
        if accepted is not None:
            notes.append(
                _note(
                    policy,
                    f"DANGEROUS OVERRIDE: {finding.symbol} accepted by allow_dangerous {accepted!r}, "
                    f"severity {severity.label} -> info",
                )
            )
            return finding._replace(severity=Severity.INFO, policy="; ".join(notes))
    override = policy.severity_map.get(finding.rule)
    if override is not None and override != severity:
        loud = "DANGEROUS OVERRIDE: " if finding.rule in SINK_RULES and override < severity else ""
        notes.append(_note(policy, f"{loud}severity {severity.label} -> {override.label} by [severity]"))
        return finding._replace(severity=override, policy="; ".join(notes))
    return finding


def apply_file(policy: Policy, report: FileReport) -> FileReport:
    """``report`` with the policy's trust and overrides applied. Errors are never changed."""
    if not (policy.trust or policy.severity or policy.allow_dangerous) or report.skipped:
        return report
    findings = [f for f in (apply_finding(policy, f) for f in report.findings) if f is not None]
    findings.sort(key=Finding.sort_key)
    return report._replace(findings=tuple(findings))


def apply(policy: Policy, report: Report) -> Report:
    """A whole report with the policy applied to every file (``ignore`` applies when scanning)."""
    return Report(tuple(apply_file(policy, f) for f in report.files))
