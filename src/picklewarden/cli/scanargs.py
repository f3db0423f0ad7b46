"""The options of ``scan`` as data, and a reader of plain ``scan`` command lines that needs no click.

click costs about a sixth of a one-file scan's start-up (it imports inspect, uuid, datetime, gettext...).
``cli/scan.py`` builds the click command from :data:`SCAN_OPTIONS`, and :func:`parse` reads the same table.
``parse`` reads a line only when click would read it the same way and accept it. Anything else returns None,
and click reads the line: help, ``--ray``, ``--``, bundled short options, a value that starts with ``-``, a
value click would reject, or a path click's checks would refuse. tests/test_cli_quick.py compares the two readers.
"""

from __future__ import annotations

import os
import stat

from picklewarden._typing import TYPE_CHECKING
from picklewarden.report import OutputFormat

if TYPE_CHECKING:
    from collections.abc import Sequence

COLOR_CHOICES = ("auto", "always", "never")
FAIL_ON_CHOICES = ("suspicious", "malicious")


class Option:
    """One option. ``kind``: flag, choice, jobs (an integer >= 1), text, file, output (a writable file), dir."""

    __slots__ = ("choices", "default", "dest", "flags", "help", "kind", "metavar", "multiple", "show_default")

    def __init__(
        self,
        dest: str,
        flags: tuple[str, ...],
        kind: str,
        help: str = "",
        *,
        default: object = None,
        choices: tuple[str, ...] = (),
        multiple: bool = False,
        metavar: str | None = None,
        show_default: bool = False,
    ) -> None:
        self.dest, self.flags, self.kind, self.help = dest, flags, kind, help
        self.default, self.choices, self.multiple = (False if kind == "flag" else default), choices, multiple
        self.metavar, self.show_default = metavar, show_default


POLICY_OPTIONS = (
    Option(
        "policy_file",
        ("--policy",),
        "file",
        "Policy file (picklewarden.toml or pyproject.toml). Default: found by walking up from the working directory.",
    ),
    Option("no_policy", ("--no-policy",), "flag", "Ignore any policy file: built-in defaults only."),
)

# In --help order; ``--ray`` (an option with an optional value) is declared in cli/scan.py after --manifest.
SCAN_OPTIONS = (
    Option(
        "fmt",
        ("--format",),
        "choice",
        "jsonl streams one JSON object per file as each finishes.",
        default=OutputFormat.TEXT.value,
        choices=tuple(f.value for f in OutputFormat),
        show_default=True,
    ),
    Option("output", ("--output", "-o"), "output", "Write the report here."),
    Option(
        "sarif_output",
        ("--sarif-output",),
        "output",
        "Also write a SARIF report to this file (e.g. text in the CI log, SARIF for the dashboard).",
    ),
    Option(
        "fail_on",
        ("--fail-on",),
        "choice",
        "Lowest verdict that makes the exit code 1 (default: the policy's fail_on, else suspicious).",
        choices=FAIL_ON_CHOICES,
    ),
    Option("quiet", ("--quiet", "-q"), "flag", "Text output: list only files that are not safe."),
    Option(
        "skip_non_models",
        ("--skip-non-models",),
        "flag",
        "Skip named files that are not pickles or model files (as in directories) instead of failing on them.",
    ),
    Option(
        "include",
        ("--include",),
        "text",
        "In directories, scan only files matching GLOB.",
        multiple=True,
        metavar="GLOB",
    ),
    Option(
        "exclude", ("--exclude",), "text", "In directories, skip files matching GLOB.", multiple=True, metavar="GLOB"
    ),
    Option(
        "jobs",
        ("--jobs", "-j"),
        "jobs",
        "Worker processes for many files (default: the CPUs available; a single file is scanned in-process).",
    ),
    Option(
        "cache_dir",
        ("--cache",),
        "dir",
        "Result cache directory: unchanged and duplicate files are not analysed again.",
    ),
    Option(
        "cache_mode",
        ("--cache-mode",),
        "choice",
        "content: key by SHA-256 (finds duplicates, reads every byte); stat: key by path and stat (reads nothing).",
        default="content",
        choices=("content", "stat"),
        show_default=True,
    ),
    Option(
        "limit_changes",
        ("--limit",),
        "text",
        "Change a resource limit (names and defaults: --show-policy); wins over the policy's [limits].",
        multiple=True,
        metavar="NAME=VALUE",
    ),
    Option(
        "manifest",
        ("--manifest",),
        "text",
        "Also scan every path or URL listed in this file (one per line), or under this URL prefix.",
        multiple=True,
        metavar="FILE|URL",
    ),
    *POLICY_OPTIONS,
    Option("show_policy", ("--show-policy",), "flag", "Print the effective policy and exit (paths not needed)."),
    Option("color", ("--color",), "choice", default="auto", choices=COLOR_CHOICES, show_default=True),
)

_BY_FLAG = {flag: option for option in SCAN_OPTIONS for flag in option.flags}


def parse(argv: Sequence[str]) -> dict[str, object] | None:
    """The keyword arguments of ``run_scan`` for a plain ``scan`` line, or None: click must read this line."""
    if not argv or argv[0] != "scan":
        return None
    values: dict[str, object] = {option.dest: option.default for option in SCAN_OPTIONS}
    many: dict[str, list[str]] = {option.dest: [] for option in SCAN_OPTIONS if option.multiple}
    paths: list[str] = []
    rest = iter(argv[1:])
    for arg in rest:
        if not arg.startswith("-"):
            paths.append(arg)
            continue
        name, eq, inline = arg.partition("=")
        option = _BY_FLAG.get(name)
        if option is None or (eq and (option.kind == "flag" or not name.startswith("--"))):
            return None  # help, --ray, "--", "-", bundled or attached short options, a value given to a flag
        if option.kind == "flag":
            values[option.dest] = True
            continue
        value = inline if eq else next(rest, None)
        if value is None or (not eq and value.startswith("-")):
            return None
        converted = _convert(option, value)
        if converted is None:
            return None
        if option.multiple:
            many[option.dest].append(value)
        else:
            values[option.dest] = converted
    values.update((dest, tuple(items)) for dest, items in many.items())
    values["paths"] = tuple(paths)
    values["ray_address"] = None
    return values


def _convert(option: Option, value: str) -> object | None:
    """The value as click converts it, or None where click might refuse it (click then says why)."""
    kind = option.kind
    if kind == "choice":
        return value if value in option.choices else None
    if kind == "jobs":
        return int(value) if value.isascii() and value.isdigit() and int(value) >= 1 else None
    if kind == "text":
        return value
    return value if _path_accepted(value, kind) else None


def _path_accepted(value: str, kind: str) -> bool:
    """click.Path's checks for a path that need not exist: an existing one must be of the right kind and
    readable (and writable for an output)."""
    try:
        mode = os.stat(value).st_mode
    except OSError:
        return True
    if (kind == "dir" and stat.S_ISREG(mode)) or (kind != "dir" and stat.S_ISDIR(mode)):
        return False
    return os.access(value, os.R_OK) and (kind != "output" or os.access(value, os.W_OK))
