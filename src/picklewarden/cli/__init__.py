"""Command line: argv -> options -> library call -> render -> exit code. Only this package prints.

Exit codes (the contract in README): 0 nothing reached ``--fail-on`` and every file was analysed; 1 some file
reached it; 2 usage or policy error, or a file could not be analysed and nothing reached the threshold.
Heavy imports happen only where needed: a plain ``scan`` line runs without click (cli/scanargs.py), the
commands import rich and the scanner inside their bodies, so ``picklewarden --version`` stays instant.
"""

from __future__ import annotations

import errno
import gc
import os
import sys

from picklewarden._typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import NoReturn

    import click

__all__ = ["cli", "main", "run"]

_GEN0_THRESHOLD = 20_000
"""The console script's youngest-generation threshold (CPython's default is 700): see :func:`run`."""


def __getattr__(name: str) -> click.Group:
    if name == "cli":
        return _click_group()
    raise AttributeError(name)


def _click_group() -> click.Group:
    """The click command group, with every command registered (imported only when click reads a line)."""
    from picklewarden.cli import commands, scan  # noqa: F401  (they register the commands)
    from picklewarden.cli.common import cli

    return cli


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code (click's usage errors exit 2, as the contract requires)."""
    args = list(sys.argv[1:] if argv is None else argv)
    plain = _plain_scan(args)
    if plain is not None:
        return plain
    try:
        _click_group().main(args=args, prog_name="picklewarden", standalone_mode=True)
    except SystemExit as exit_:
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else 2)
    return 0


def _plain_scan(args: list[str]) -> int | None:
    """A plain ``scan`` line without click, as click's standalone mode would run it; None: click runs it."""
    from picklewarden.cli.scanargs import parse

    options = parse(args)
    if options is None:
        return None
    from picklewarden.cli.console import ConfigProblem, UsageProblem, echo, error
    from picklewarden.cli.scanrun import run_scan

    try:
        return run_scan(**options)  # type: ignore[arg-type]
    except UsageProblem:
        return None  # raised before any output: click reads the line again and reports it with the usage
    except ConfigProblem as exc:
        error(str(exc))
        return 2
    except KeyboardInterrupt:
        echo("Aborted!", err=True)
        return 1
    except OSError as exc:
        if exc.errno != errno.EPIPE:
            raise
        return 1


def run() -> NoReturn:
    """The console script: :func:`main`, then leave without tearing down the interpreter.

    A scan of a large checkpoint leaves a million small objects behind; freeing them one by one at exit
    took 4 s of a 20 s run on a 500k-tensor state dict. Every file is written and closed, and pools and
    clusters are shut down, before :func:`main` returns, so only the buffered standard streams need flushing.
    """
    from picklewarden.cli import console

    # Start-up builds modules, classes and tables that all live until exit, and the default threshold
    # (a collection every 700 allocations) walked them about twenty times: 2 ms of a 45 ms one-file scan.
    # A scan pauses the collector anyway (machine.gc_paused); between files cycles are still collected.
    gc.set_threshold(_GEN0_THRESHOLD, *gc.get_threshold()[1:])
    console.EXITS_WITHOUT_TEARDOWN = True
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = code or 2  # a closed or broken pipe: the report did not arrive
    os._exit(code)
