"""What the click commands share: the command group, the policy options, click's view of the problems, exit."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NoReturn

import click

from picklewarden import __version__
from picklewarden._native import core_name
from picklewarden.cli import console
from picklewarden.cli.console import ConfigProblem, UsageProblem, error
from picklewarden.cli.scanargs import POLICY_OPTIONS, Option

if TYPE_CHECKING:
    from picklewarden.policy.config import Policy


class ConfigError(click.ClickException):
    """A policy file is invalid: exit 2, like any other usage error."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        error(self.format_message())


@contextlib.contextmanager
def click_errors() -> Iterator[None]:
    """The click-free code's problems as click's exceptions, which click reports and turns into exit 2."""
    try:
        yield
    except UsageProblem as exc:
        raise click.UsageError(str(exc)) from exc
    except ConfigProblem as exc:
        raise ConfigError(str(exc)) from exc


def effective_policy(policy_file: str | None, no_policy: bool, fail_on: str | None) -> Policy:
    with click_errors():
        return console.effective_policy(policy_file, no_policy, fail_on)


def leave(code: int) -> NoReturn:
    sys.exit(code)


def click_option(option: Option) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The click declaration of an option of the table in :mod:`picklewarden.cli.scanargs`."""
    kwargs: dict[str, Any] = {"help": option.help or None, "multiple": option.multiple, "metavar": option.metavar}
    match option.kind:
        case "flag":
            kwargs["is_flag"] = True
        case "choice":
            kwargs["type"] = click.Choice(option.choices)
        case "jobs":
            kwargs["type"] = click.IntRange(min=1)
        case "file":
            kwargs["type"] = click.Path(dir_okay=False)
        case "output":
            kwargs["type"] = click.Path(dir_okay=False, writable=True)
        case "dir":
            kwargs["type"] = click.Path(file_okay=False)
    if option.kind != "flag":
        kwargs["default"] = option.default
        kwargs["show_default"] = option.show_default
    return click.option(*option.flags, option.dest, **kwargs)


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


def with_policy_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(POLICY_OPTIONS):
        func = click_option(option)(func)
    return func
