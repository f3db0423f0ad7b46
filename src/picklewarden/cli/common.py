"""What every command shares: the command group, policy options, colour, stderr warnings, exit."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

import click

from picklewarden import __version__
from picklewarden._native import core_name

if TYPE_CHECKING:
    from picklewarden.policy.config import Policy

COLOR_CHOICES = ("auto", "always", "never")


class ConfigError(click.ClickException):
    """A policy file is invalid: exit 2, like any other usage error."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"picklewarden: error: {self.format_message()}", err=True)


def warn(message: str) -> None:
    click.echo(f"picklewarden: warning: {message}", err=True)


def use_color(choice: str, stream: Any) -> bool:
    if choice == "always":
        return True
    if choice == "never" or os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and os.environ.get("TERM") != "dumb"


def terminal_width() -> int:
    import shutil

    return max(40, shutil.get_terminal_size((100, 24)).columns)


def effective_policy(policy_file: str | None, no_policy: bool, fail_on: str | None) -> Policy:
    """The effective policy: ``--policy FILE`` or the discovered file (unless ``--no-policy``), then flags."""
    from picklewarden.policy.config import DEFAULT_POLICY, FAIL_ON, PolicyError, resolve_policy

    if no_policy and policy_file is not None:
        raise click.UsageError("--policy and --no-policy contradict each other")
    try:
        policy = DEFAULT_POLICY if no_policy else resolve_policy(policy_file)
    except PolicyError as exc:
        raise ConfigError(str(exc)) from exc
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
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from exc


def emit(text: str, stream: TextIO | None = None, *, color: bool = False) -> None:
    """Write to stdout (or ``stream``). A reader that went away (``| head``) is not an error of the scan:
    the rest of the output is dropped and the exit code still says what the scan found."""
    try:
        if stream is None:
            click.echo(text, nl=False, color=color)
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


def leave(code: int) -> NoReturn:
    sys.exit(code)


class _Commands(click.Group):
    """The command group. ``serve`` lives with the gateway and is imported only when asked for (by name, or
    to list the commands): a scan should not pay for the gateway's option module and what it imports."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), "serve"})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name == "serve" and cmd_name not in self.commands:
            from picklewarden.server.serve import serve

            self.add_command(serve, "serve")
        return super().get_command(ctx, cmd_name)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="picklewarden", message=f"%(prog)s, version %(version)s, {core_name()}")
def cli() -> None:
    """Find malicious code in pickles and PyTorch model files without executing them."""


_policy_options = [
    click.option(
        "--policy",
        "policy_file",
        type=click.Path(dir_okay=False),
        help="Policy file (picklewarden.toml or pyproject.toml). Default: found by walking up from the "
        "working directory.",
    ),
    click.option("--no-policy", is_flag=True, help="Ignore any policy file: built-in defaults only."),
]


def with_policy_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(_policy_options):
        func = option(func)
    return func
