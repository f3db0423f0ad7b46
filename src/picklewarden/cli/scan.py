"""``picklewarden scan`` as a click command, built from the option table in :mod:`picklewarden.cli.scanargs`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from picklewarden.cli.common import cli, click_errors, click_option, leave
from picklewarden.cli.scanargs import SCAN_OPTIONS
from picklewarden.cli.scanrun import run_scan

_RAY = click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value="local",
    default=None,
    metavar="[ADDRESS]",
    help="Scan the paths and manifests on a Ray cluster: 'auto', 'ray://head:10001', or none/'local' to join "
    "RAY_ADDRESS or start a local one.",
)


def _scan(**options: Any) -> None:
    """Scan files, directories and URLs. Exit 0 clean, 1 threshold reached, 2 incomplete or usage error."""
    with click_errors():
        code = run_scan(**options)
    leave(code)


def _command() -> click.Command:
    decorators: list[Callable[[Any], Any]] = [click.argument("paths", nargs=-1)]
    for option in SCAN_OPTIONS:
        decorators.append(click_option(option))
        if option.dest == "manifest":
            decorators.append(_RAY)
    command: Any = _scan
    for decorator in reversed(decorators):
        command = decorator(command)
    return cli.command("scan")(command)


scan = _command()
