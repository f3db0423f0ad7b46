"""Policy files: what a project trusts, how loud each rule is, which paths to skip, when CI fails.

A policy is found the way ruff and pytest find their configuration: walking up from the working directory,
the first ``picklewarden.toml``, or ``pyproject.toml`` with a ``[tool.picklewarden]`` table, wins (in one
directory ``picklewarden.toml`` is preferred). ``--policy FILE`` names one explicitly. Keys:

.. code-block:: toml

    trust = ["acme_models", "mylib.nn.Block"]   # unknown globals to accept: packages or single globals
    ignore = ["tests/fixtures/**", "*.ckpt"]      # paths not scanned at all (globs, relative to this file)
    fail_on = "malicious"                         # like --fail-on (the command line wins)

    [severity]                                    # change a rule's severity
    PW200 = "info"

    [override]                                    # the only way to weaken a known-dangerous finding
    allow_dangerous = ["PW104", "numpy.load"]     # rule ids whose severity may be lowered; globals to accept

    [limits]                                      # resource bounds (picklewarden.limits.Limits; --limit wins)
    max_seconds = 60

A policy can only widen trust for names picklewarden does not know: ``trust`` never touches a finding of a
known sink (rules PW100-PW108), and lowering such a rule or accepting such a global needs ``allow_dangerous``,
which every output format reports loudly. Unknown keys are errors: a typo in a security policy must not be
silently ignored. Limits can be raised or lowered freely: hitting any limit is a finding that is never
``safe``, so a hostile policy file cannot hide a payload that way.
"""

from __future__ import annotations

import sys
from pathlib import Path

from picklewarden._typing import TYPE_CHECKING, NamedTuple
from picklewarden.limits import DEFAULT_LIMITS, Limits
from picklewarden.model import Severity, Verdict
from picklewarden.rules import BY_ID

if TYPE_CHECKING:
    import os
    from collections.abc import Mapping
    from typing import Any, Final

POLICY_FILE: Final = "picklewarden.toml"
PYPROJECT: Final = "pyproject.toml"

_FORMAT_SINK_RULES: Final = frozenset({"PW400", "PW403", "PW404", "PW406"})
"""Rules of other formats that mean code runs or files escape: Keras Lambda bytecode, template injection,
ONNX external data leaving the model directory, executables."""
SINK_RULES: Final[frozenset[str]] = (
    frozenset(rule_id for rule_id in BY_ID if rule_id.startswith("PW1")) | _FORMAT_SINK_RULES
)
"""Rules for known code-execution sinks and ways to reach them (the PW1xx series, and the other formats'
equivalents): a policy weakens these only explicitly."""
UNKNOWN_RULES: Final[frozenset[str]] = frozenset({"PW200", "PW201"})
"""Rules about globals picklewarden does not know: the only findings ``trust`` removes."""

FAIL_ON: Final[dict[str, Verdict]] = {"suspicious": Verdict.SUSPICIOUS, "malicious": Verdict.MALICIOUS}
_SEVERITIES: Final[dict[str, Severity]] = {s.label: s for s in Severity}
_TOP_KEYS: Final = frozenset({"trust", "ignore", "fail_on", "severity", "override", "limits"})
_OVERRIDE_KEYS: Final = frozenset({"allow_dangerous"})


class PolicyError(ValueError):
    """A policy file is missing, unreadable or invalid. The message names the file and the key."""


class Policy(NamedTuple):
    """The effective policy. ``Policy()`` is the built-in default: trust nothing extra, change nothing.

    Immutable and compared without :attr:`warnings`. A NamedTuple, not a dataclass: Python 3.11 compiles each
    generated dataclass method at import, which every scan pays for (see "Start-up" in docs/benchmarks.md).
    """

    trust: tuple[str, ...] = ()
    """Dotted names of packages or single globals whose *unknown-global* findings (PW200/PW201) are dropped."""
    severity: tuple[tuple[str, Severity], ...] = ()
    """``(rule id, severity)`` overrides, in file order."""
    ignore: tuple[str, ...] = ()
    """Path globs (``*``, ``?``, ``[...]``, ``**``) of files not to scan, relative to :attr:`root`."""
    fail_on: Verdict | None = None
    """Lowest verdict that fails the run, or None for the default (the command line's ``--fail-on`` wins)."""
    allow_dangerous: tuple[str, ...] = ()
    """Sink rule ids whose severity may be lowered, and dotted globals whose sink findings are accepted."""
    source: str = ""
    """The file this came from ('' for the built-in default); ``[tool.picklewarden]`` is noted for pyproject."""
    root: str = ""
    """Directory that relative ``ignore`` globs are matched from ('' means the working directory)."""
    limits: tuple[tuple[str, int], ...] = ()
    """``(limit name, value)`` changes to :class:`~picklewarden.limits.Limits` (the command line's ``--limit`` wins)."""
    warnings: tuple[str, ...] = ()
    """Things a person should know about this policy (entries that have no effect, dangerous overrides).
    Not compared: the last field, left out of :meth:`compared`."""

    def compared(self) -> tuple[Any, ...]:
        """Every field that can change a report (all but :attr:`warnings`), as equality and hashing see them."""
        return self[:-1]

    def __eq__(self, other: object) -> bool:
        return type(other) is Policy and self.compared() == other.compared()

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash(self.compared())

    @property
    def severity_map(self) -> dict[str, Severity]:
        return dict(self.severity)

    @property
    def dangerous_rules(self) -> frozenset[str]:
        """Sink rule ids listed in ``allow_dangerous``."""
        return frozenset(e for e in self.allow_dangerous if e in SINK_RULES)

    @property
    def dangerous_globals(self) -> tuple[str, ...]:
        """Dotted globals listed in ``allow_dangerous``."""
        return tuple(e for e in self.allow_dangerous if e not in SINK_RULES)

    @property
    def overrides_dangerous(self) -> bool:
        """True when this policy can weaken a finding of a known sink (always reported loudly)."""
        return bool(self.allow_dangerous)

    def apply_limits(self, base: Limits = DEFAULT_LIMITS) -> Limits:
        """``base`` with this policy's ``[limits]`` applied."""
        return base.replace(**dict(self.limits)) if self.limits else base

    def with_fail_on(self, fail_on: Verdict | None) -> Policy:
        """This policy with the command line's ``--fail-on`` applied (None keeps the policy's own)."""
        return self if fail_on is None else self._replace(fail_on=fail_on)

    @property
    def effective_fail_on(self) -> Verdict:
        return Verdict.SUSPICIOUS if self.fail_on is None else self.fail_on


DEFAULT_POLICY: Final = Policy()


# -- finding the file -----------------------------------------------------------------------------------
def _toml(text: str) -> dict[str, Any]:
    """Parse TOML; the parser is imported here because most runs find no policy file to parse.

    Raises ValueError (TOMLDecodeError is one) on invalid TOML."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on Python 3.10 only
        import tomli as tomllib
    return tomllib.loads(text)


def _has_tool_table(pyproject: Path) -> bool:
    try:
        text = pyproject.read_text("utf-8")
        # Without the name (nor an escape that could spell it in a quoted key) there is no table: skip parsing.
        if "picklewarden" not in text and "\\u" not in text.lower():
            return False
        data = _toml(text)
    except (OSError, ValueError) as exc:
        raise PolicyError(f"{pyproject}: cannot read: {exc}") from exc
    tool = data.get("tool")
    return isinstance(tool, dict) and "picklewarden" in tool


def discover(start: str | os.PathLike[str] | None = None) -> Path | None:
    """The policy file that applies to ``start`` (default: the working directory), or None.

    Each directory from ``start`` up to the filesystem root is tried in turn: its ``picklewarden.toml``,
    then its ``pyproject.toml`` if that has a ``[tool.picklewarden]`` table. The nearest one wins.
    """
    here = Path(start if start is not None else Path.cwd()).resolve()
    for directory in (here, *here.parents):
        candidate = directory / POLICY_FILE
        if candidate.is_file():
            return candidate
        candidate = directory / PYPROJECT
        if candidate.is_file() and _has_tool_table(candidate):
            return candidate
    return None


def load(path: str | os.PathLike[str]) -> Policy:
    """Read and validate one policy file (``picklewarden.toml`` or a ``pyproject.toml``)."""
    file = Path(path)
    try:
        data = _toml(file.read_text("utf-8"))
    except FileNotFoundError as exc:
        raise PolicyError(f"{file}: no such policy file") from exc
    except (OSError, ValueError) as exc:
        raise PolicyError(f"{file}: cannot read: {exc}") from exc
    source = str(file)
    if file.name == PYPROJECT:
        tool = data.get("tool", {})
        table = tool.get("picklewarden") if isinstance(tool, dict) else None
        if not isinstance(table, dict):
            raise PolicyError(f"{file}: no [tool.picklewarden] table")
        data, source = table, f"{file} [tool.picklewarden]"
    return parse(data, source=source, root=str(file.resolve().parent))


def resolve_policy(explicit: str | os.PathLike[str] | None = None, *, start: str | None = None) -> Policy:
    """The policy a run uses: ``explicit`` if given, else the discovered file, else the default."""
    if explicit is not None:
        return load(explicit)
    found = discover(start)
    return DEFAULT_POLICY if found is None else load(found)


# -- validation -----------------------------------------------------------------------------------------
def _dotted(text: str) -> bool:
    return bool(text) and all(part.isidentifier() for part in text.split("."))


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PolicyError(f"{where} must be a list of strings")
    return tuple(value)


def _check_keys(table: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise PolicyError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(sorted(allowed))}"
        )


def parse(data: Mapping[str, Any], *, source: str = "<policy>", root: str = "") -> Policy:
    """Validate a policy table (already parsed from TOML). Raises :class:`PolicyError` naming the key."""
    _check_keys(data, _TOP_KEYS, source)
    warnings: list[str] = []

    trust = _strings(data.get("trust", []), f"{source}: trust")
    for entry in trust:
        if not _dotted(entry):
            raise PolicyError(
                f"{source}: trust entry {entry!r} is not a dotted Python name (no wildcards: a package name "
                "already covers its submodules)"
            )
        known = _known_danger(entry)
        if known:
            warnings.append(
                f"trust entry {entry!r} names a known-dangerous global ({known}); trust only applies to globals "
                "picklewarden does not know, so it has no effect there (see [override] allow_dangerous)"
            )

    ignore = _strings(data.get("ignore", []), f"{source}: ignore")
    for pattern in ignore:
        if not pattern or "\x00" in pattern:
            raise PolicyError(f"{source}: ignore pattern {pattern!r} is empty or invalid")

    fail_on: Verdict | None = None
    if "fail_on" in data:
        raw = data["fail_on"]
        if not isinstance(raw, str) or raw not in FAIL_ON:
            raise PolicyError(f"{source}: fail_on must be one of {', '.join(sorted(FAIL_ON))}, got {raw!r}")
        fail_on = FAIL_ON[raw]

    override = data.get("override", {})
    if not isinstance(override, dict):
        raise PolicyError(f"{source}: [override] must be a table")
    _check_keys(override, _OVERRIDE_KEYS, f"{source}: [override]")
    allow = _strings(override.get("allow_dangerous", []), f"{source}: override.allow_dangerous")
    for entry in allow:
        if entry in BY_ID and entry not in SINK_RULES:
            raise PolicyError(
                f"{source}: allow_dangerous entry {entry!r} is not a known-sink rule (PW100-PW108); "
                "change its severity in [severity] directly"
            )
        if entry not in SINK_RULES and not _dotted(entry):
            raise PolicyError(f"{source}: allow_dangerous entry {entry!r} is neither a rule id nor a dotted name")

    severity_table = data.get("severity", {})
    if not isinstance(severity_table, dict):
        raise PolicyError(f"{source}: [severity] must be a table of rule id = severity")
    severity: list[tuple[str, Severity]] = []
    for rule_id, label in severity_table.items():
        rule = BY_ID.get(rule_id)
        if rule is None:
            raise PolicyError(f"{source}: [severity] names unknown rule {rule_id!r}; see `picklewarden rules`")
        if not isinstance(label, str) or label not in _SEVERITIES:
            raise PolicyError(f"{source}: [severity] {rule_id} must be one of {', '.join(_SEVERITIES)}, got {label!r}")
        level = _SEVERITIES[label]
        if rule_id in SINK_RULES and level < rule.severity and rule_id not in allow:
            raise PolicyError(
                f"{source}: [severity] lowers {rule_id} ({rule.name}), a known-dangerous rule, from "
                f"{rule.severity.label} to {label}; list {rule_id!r} in [override] allow_dangerous to do this "
                "deliberately"
            )
        severity.append((rule_id, level))

    limits = parse_limits(data.get("limits", {}), f"{source}: [limits]")

    lowered = [r for r, s in severity if r in SINK_RULES and s < BY_ID[r].severity]
    if lowered:
        warnings.append(f"DANGEROUS OVERRIDE: severity of known-sink rule(s) {', '.join(lowered)} lowered")
    accepted = [e for e in allow if e not in SINK_RULES]
    if accepted:
        warnings.append(
            f"DANGEROUS OVERRIDE: findings of known-dangerous global(s) {', '.join(accepted)} are accepted "
            "(reported with severity info)"
        )
    return Policy(
        trust=trust,
        severity=tuple(severity),
        ignore=ignore,
        fail_on=fail_on,
        allow_dangerous=allow,
        source=source,
        root=root,
        limits=limits,
        warnings=tuple(warnings),
    )


def parse_limits(table: Any, where: str) -> tuple[tuple[str, int], ...]:
    """Validate ``name = value`` limit changes (a policy's ``[limits]`` or the command line's ``--limit``)."""
    if not isinstance(table, dict):
        raise PolicyError(f"{where} must be a table of limit name = positive integer")
    names = set(Limits._fields)
    changes: list[tuple[str, int]] = []
    for name, value in table.items():
        if name not in names:
            raise PolicyError(f"{where}: unknown limit {name!r}; known: {', '.join(sorted(names))}")
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise PolicyError(f"{where}: {name} must be a positive integer, got {value!r}")
        changes.append((name, value))
    return tuple(changes)


def _known_danger(entry: str) -> str:
    """The knowledge reason when some reading of ``entry`` as ``module.qualname`` is a known non-safe global."""
    from picklewarden.knowledge.resolve import classify, resolve
    from picklewarden.knowledge.tables import Category

    parts = entry.split(".")
    for cut in range(len(parts), 0, -1):
        # A placeholder attribute makes a bare module name classify by its module entry alone.
        qualname = ".".join(parts[cut:]) or "__picklewarden_module__"
        known = classify(resolve(".".join(parts[:cut]), qualname, 4))
        if known is not None and known.category is not Category.SAFE:
            return f"{known.category.value}: {known.reason}"
    return ""


# -- showing it -----------------------------------------------------------------------------------------
def _toml_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(ch if ch.isprintable() else f"\\u{ord(ch):04x}" for ch in escaped) + '"'


def _toml_list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(_toml_string(v) for v in values) + "]"


def to_toml(policy: Policy) -> str:
    """The effective policy as a ``picklewarden.toml`` a person could copy, with where it came from."""
    origin = policy.source or "built-in defaults (no policy file found)"
    lines = [f"# effective picklewarden policy, from: {origin}"]
    if policy.root:
        lines.append(f"# ignore globs are relative to: {policy.root}")
    for warning in policy.warnings:
        lines.append(f"# WARNING: {warning}")
    lines.append(f"trust = {_toml_list(policy.trust)}")
    lines.append(f"ignore = {_toml_list(policy.ignore)}")
    fail_on = policy.effective_fail_on.label
    lines.append(f"fail_on = {_toml_string(fail_on)}" + ("" if policy.fail_on is not None else "  # default"))
    lines.append("")
    lines.append("[severity]")
    overrides = policy.severity_map
    for rule in BY_ID.values():
        level = overrides.get(rule.id)
        if level is None:
            lines.append(f"# {rule.id} = {_toml_string(rule.severity.label)}  # default ({rule.name})")
        else:
            lines.append(f"{rule.id} = {_toml_string(level.label)}  # default {rule.severity.label} ({rule.name})")
    lines.append("")
    lines.append("[override]")
    lines.append(f"allow_dangerous = {_toml_list(policy.allow_dangerous)}")
    lines.append("")
    lines.append("[limits]")
    changed = dict(policy.limits)
    for name, default in DEFAULT_LIMITS._asdict().items():
        if name in changed:
            lines.append(f"{name} = {changed[name]}  # default {default}")
        else:
            lines.append(f"# {name} = {default}  # default")
    return "\n".join(lines) + "\n"
