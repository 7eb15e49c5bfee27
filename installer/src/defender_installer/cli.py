"""The `defender-installer` command line: one module per command, listed in COMMANDS."""

import functools
from collections.abc import Callable
from types import ModuleType
from typing import Annotated, Any

import typer

from defender_installer import __version__, build
from defender_installer.errors import UserError

# Every command, in help order. A command `x` lives in defender_installer/x.py and
# exposes `command()`; its docstring is the help text.
COMMANDS: tuple[ModuleType, ...] = (build,)

PROG = "defender-installer"

app = typer.Typer(
    name=PROG,
    help="Build Defender agent packages and put them on devices.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _user_errors_as_one_line(function: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a UserError into one line on stderr and exit code 2; bugs keep their traceback."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except UserError as exc:
            typer.echo(f"{PROG}: error: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper


for _module in COMMANDS:
    app.command(name=_module.__name__.rsplit(".", 1)[-1])(_user_errors_as_one_line(_module.command))


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
    """Build Defender agent packages and put them on devices."""


def main() -> None:
    """Console-script entry point."""
    app()
