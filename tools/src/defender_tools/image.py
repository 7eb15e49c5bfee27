"""`defender-tools image debian`: a quick x86_64 test image from Debian packages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from defender_tools.images import debian

app = typer.Typer(help="Build QEMU test images.", no_args_is_help=True)


@app.command("debian")
def debian_command(
    out: Annotated[
        Path, typer.Option("--out", help="Output directory; its name is the image NAME.")
    ],
    package: Annotated[
        list[Path] | None,
        typer.Option("--package", help="A .deb to install in the image (repeatable)."),
    ] = None,
    suite: Annotated[str, typer.Option(help="Debian suite.")] = debian.DEFAULT_SUITE,
    profile: Annotated[
        str,
        typer.Option(help="standard (systemd, OpenSSH) or embedded (sysvinit, Dropbear, acpid)."),
    ] = debian.DEFAULT_PROFILE,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Assemble a bootable image (initramfs + Debian kernel + qemuboot.conf); cached by inputs."""
    err = Console(stderr=True)
    with err.status("building image") as status:
        result = debian.build_image(
            out,
            package or [],
            suite=suite,
            progress=lambda msg: status.update(msg),
            profile=profile,
        )
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
        return
    state = "cached" if result.cached else f"built in {result.seconds:.0f} s"
    err.print(f"[green]image {result.name}[/green] {state}")
    typer.echo(result.conf)
