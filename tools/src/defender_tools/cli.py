"""The `defender-tools` command line: one module per command, registered in COMMANDS.

A group command (`image`, `qemu`) is a module exposing `app` (a Typer group); a
single command (`demo`) is a module exposing `command()`. A reader finds a
command's code by its name.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Annotated

import typer

from defender_tools import __version__, bench, demo, image, pythons, qemu
from defender_tools.errors import UserError

PROG = "defender-tools"

# Every command, in help order.
COMMANDS: tuple[ModuleType, ...] = (image, qemu, demo, bench, pythons)

app = typer.Typer(
    name=PROG,
    help="Build quick QEMU images, boot them, attack them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for _module in COMMANDS:
    _name = _module.__name__.rsplit(".", 1)[-1]
    if hasattr(_module, "app"):
        app.add_typer(_module.app, name=_name)
    else:
        app.command(name=_name)(_module.command)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Build quick QEMU images, boot them, attack them."""


def main() -> None:
    """Console-script entry point: a UserError is one line on stderr and exit status 2."""
    try:
        app()
    except UserError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        sys.exit(130)
