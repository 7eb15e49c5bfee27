"""`defender-tools qemu boot`: boot any *.qemuboot.conf (Yocto's or ours) with SSH on loopback."""

from __future__ import annotations

import shlex
import signal
import subprocess
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from defender_tools.qemu_runner import Guest

app = typer.Typer(help="Boot images in QEMU.", no_args_is_help=True)


@app.command("boot")
def boot_command(
    conf: Annotated[Path, typer.Argument(help="The image's *.qemuboot.conf.")],
    ssh_port: Annotated[
        int | None, typer.Option("--ssh-port", help="Host port for SSH (default: a free one).")
    ] = None,
    mem: Annotated[str | None, typer.Option("--mem", help="Guest memory in MiB.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for SSH.")] = 300.0,
    log: Annotated[Path | None, typer.Option("--log", help="Serial console log file.")] = None,
    key: Annotated[Path | None, typer.Option("--key", help="Root's SSH private key.")] = None,
    foreground: Annotated[
        bool,
        typer.Option("--foreground", help="Run QEMU attached to this terminal (serial on stdio)."),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the QEMU command line and exit.")
    ] = False,
) -> None:
    """Boot CONF, wait for SSH, print the ssh command, keep running until Ctrl-C."""
    err = Console(stderr=True)
    guest = Guest(conf, ssh_port=ssh_port, mem=mem, serial_log=log, key=key, boot_timeout=timeout)
    if foreground:
        cmd = list(guest.command)
        # Serial on the terminal instead of the log file; Ctrl-A X quits.
        at = cmd.index("-chardev")
        cmd[at : at + 4] = ["-serial", "mon:stdio"]
        at = cmd.index("-qmp")  # the monitor is on the terminal instead
        del cmd[at : at + 2]
        if dry_run:
            typer.echo(shlex.join(cmd))
            return
        err.print(f"[bold]ssh:[/bold] {guest.ssh_command}   (Ctrl-A X quits QEMU)")
        raise typer.Exit(subprocess.call(cmd))
    if dry_run:
        typer.echo(shlex.join(guest.command))
        return
    stop = threading.Event()
    with err.status(f"booting {conf.name} ({guest.accel})"):
        guest.start()
        try:
            seconds = guest.wait_for_ssh()
        except BaseException:
            guest.shutdown(timeout=5)
            raise
    err.print(f"[green]SSH up after {seconds:.1f} s[/green]; serial log: {guest.serial_log}")
    typer.echo(guest.ssh_command)
    err.print("Ctrl-C shuts the guest down.")
    # Explicit handlers: a background job may have inherited SIGINT as ignored.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            guest.check_alive()
    finally:
        with err.status("shutting down"):
            guest.shutdown()
