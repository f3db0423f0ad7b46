"""What the commands share without click: the two kinds of problem, writing to the terminal, colour, the policy.

A plain ``scan`` runs without importing click (see :mod:`picklewarden.cli.scanargs`), so everything its body
needs lives here. The click commands turn the problems into click's exceptions (``common.click_errors``).
"""

from __future__ import annotations

import os
import re
import sys

from picklewarden._typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any, TextIO

    from picklewarden.policy.config import Policy


EXITS_WITHOUT_TEARDOWN = False
"""Set by the console script, which leaves with ``os._exit``: what is still alive then is never freed, so a
scan may keep its last file's analysis instead of freeing it (see ``scan_parallel(hold_last=...)``)."""


class UsageProblem(Exception):
    """A usage error, raised before any output: click reports it with the command's usage, exit 2."""


class ConfigProblem(Exception):
    """An invalid policy file or an unwritable output: ``picklewarden: error: ...`` on stderr, exit 2."""


# The escape sequences click.echo strips from text that is not meant to be coloured.
_ANSI = r"\033\[[;?0-9]*[a-zA-Z]"


def echo(message: str, *, err: bool = False, nl: bool = True, color: bool | None = None) -> None:
    """click.echo's contract for text: write and flush; without colour (None: unless a terminal), strip ANSI."""
    stream = sys.stderr if err else sys.stdout
    text = message + "\n" if nl else message
    if "\x1b" in text and (not _isatty(stream) if color is None else not color):
        text = re.sub(_ANSI, "", text)  # compiled only when needed: rarely
    stream.write(text)
    stream.flush()


def _isatty(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def warn(message: str) -> None:
    echo(f"picklewarden: warning: {message}", err=True)


def error(message: str) -> None:
    echo(f"picklewarden: error: {message}", err=True)


def use_color(choice: str, stream: Any) -> bool:
    if choice == "always":
        return True
    if choice == "never" or os.environ.get("NO_COLOR"):
        return False
    return _isatty(stream) and os.environ.get("TERM") != "dumb"


def terminal_width() -> int:
    import shutil

    return max(40, shutil.get_terminal_size((100, 24)).columns)


def effective_policy(policy_file: str | None, no_policy: bool, fail_on: str | None) -> Policy:
    """The effective policy: ``--policy FILE`` or the discovered file (unless ``--no-policy``), then flags."""
    from picklewarden.policy.config import DEFAULT_POLICY, FAIL_ON, PolicyError, resolve_policy

    if no_policy and policy_file is not None:
        raise UsageProblem("--policy and --no-policy contradict each other")
    try:
        policy = DEFAULT_POLICY if no_policy else resolve_policy(policy_file)
    except PolicyError as exc:
        raise ConfigProblem(str(exc)) from exc
    return policy.with_fail_on(None if fail_on is None else FAIL_ON[fail_on])


def announce(policy: Policy) -> None:
    """Policy warnings go to stderr on every run: a dangerous override must never be silent."""
    for warning in policy.warnings:
        warn(f"policy {policy.source}: {warning}")


def open_output(path: str) -> TextIO:
    """Open an output file before any work, so an unwritable path fails at once, not after the scan."""
    try:
        return open(path, "w", encoding="utf-8")
    except OSError as exc:
        raise ConfigProblem(f"cannot write {path}: {exc.strerror or exc}") from exc


def emit(text: str, stream: TextIO | None = None, *, color: bool = False) -> None:
    """Write to stdout (or ``stream``). A reader that went away (``| head``) is not an error of the scan:
    the rest of the output is dropped and the exit code still says what the scan found."""
    try:
        if stream is None:
            echo(text, nl=False, color=color)
        else:
            stream.write(text)
            stream.flush()
    except BrokenPipeError:
        if stream is None or stream is sys.stdout:
            # Point fd 1 at /dev/null so the final flush (and anything later) succeeds quietly.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        else:
            raise
