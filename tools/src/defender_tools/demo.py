"""`defender-tools demo`: package the agent, boot it in QEMU, brute-force SSH, show the alert."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from defender_tools import guest_agent
from defender_tools.agent_package import build_agent_deb
from defender_tools.images.debian import DEFAULT_PROFILE, build_image, get_profile, image_dir_name
from defender_tools.qemu_runner import Guest
from defender_tools.scenarios import Check, PasswordGuessing, ScenarioResult
from defender_tools.scenarios.checks import service_active


@dataclass
class DemoResult:
    """Everything the demo measured; the checks (the service's and the scenario's) decide."""

    timings: dict[str, float] = field(default_factory=dict)
    memory: guest_agent.AgentMemory | None = None
    service: Check | None = None
    scenario: ScenarioResult | None = None

    @property
    def alert(self) -> dict[str, Any] | None:
        return self.scenario.alert if self.scenario else None

    @property
    def checks(self) -> list[Check]:
        own = [self.service] if self.service else []
        return own + (self.scenario.checks if self.scenario else [])

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(check.passed for check in self.checks)


def _boot(image_conf: Path, result: DemoResult, say: Console) -> Guest:
    with say.status("booting the guest"):
        guest = Guest(image_conf)
        guest.start()
        try:
            result.timings["boot to SSH s"] = guest.wait_for_ssh()
        except BaseException:
            guest.shutdown(timeout=5)
            raise
    say.print(f"guest up ({guest.accel}), admin session open: {guest.ssh_command}")
    return guest


def run_demo(
    image_dir: Path,
    dist_dir: Path,
    deb: Path | None,
    scenario: PasswordGuessing,
    say: Console,
    profile: str = DEFAULT_PROFILE,
) -> DemoResult:
    result = DemoResult()
    started = time.monotonic()
    with say.status("building the agent package"):
        t = time.monotonic()
        package = deb or build_agent_deb(dist_dir)
        result.timings["package build s"] = round(time.monotonic() - t, 1)
    say.print(f"package: {package}")
    with say.status("building the image (cached when inputs are unchanged)") as status:
        image = build_image(
            image_dir, [package], progress=lambda m: status.update(m), profile=profile
        )
    result.timings["image build s" + (" (cached)" if image.cached else "")] = image.seconds
    say.print(f"image: {image.conf} ({'cached' if image.cached else 'built'})")
    guest = _boot(image.conf, result, say)
    try:
        result.service = service_active(guest_agent.wait_for_service(guest))
        with say.status(scenario.describe()):
            result.scenario = scenario.run(guest, get_profile(profile))
        result.timings.update(result.scenario.timings)
        result.memory = guest_agent.agent_memory(guest)
    finally:
        with say.status("shutting the guest down"):
            t = time.monotonic()
            guest.shutdown()
            result.timings["shutdown s"] = round(time.monotonic() - t, 1)
    result.timings["demo total s"] = round(time.monotonic() - started, 1)
    return result


def _report(result: DemoResult, say: Console) -> None:
    if result.alert is not None:
        say.print_json(data=result.alert)
    table = Table(title="Defender demo", show_header=False)
    for key, value in result.timings.items():
        table.add_row(key, f"{value}")
    if result.memory is not None:
        m = result.memory
        table.add_row("agent VmRSS MiB", f"{m.rss_mib}")
        table.add_row("agent Pss MiB", f"{m.pss_mib}")
        table.add_row("agent VmHWM MiB", f"{round(m.hwm_kib / 1024, 1)}")
    for check in result.checks:
        failed = f"[red]FAIL[/red] {escape(check.detail)}".rstrip()
        table.add_row(escape(check.name), "[green]PASS[/green]" if check.passed else failed)
    say.print(table)
    verdict = "[bold green]PASS[/bold green]" if result.passed else "[bold red]FAIL[/bold red]"
    say.print(f"demo: {verdict}")


def command(
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Image directory (its name is the image name) "
            "[default: build/images/defender-debian, -embedded for that profile].",
        ),
    ] = None,
    dist: Annotated[Path, typer.Option("--dist", help="Where the .deb is built.")] = Path(
        "build/dist"
    ),
    deb: Annotated[
        Path | None, typer.Option("--deb", help="Use this agent .deb instead of building one.")
    ] = None,
    user: Annotated[str, typer.Option(help="User name the attacker guesses for.")] = "admin",
    attempts: Annotated[int, typer.Option(help="Failed password attempts.", min=1)] = 8,
    profile: Annotated[
        str, typer.Option(help="Image profile: standard (systemd, OpenSSH) or embedded.")
    ] = DEFAULT_PROFILE,
) -> None:
    """Build the agent .deb and a QEMU image, boot it, brute-force SSH, show the alert."""
    say = Console()
    scenario = PasswordGuessing(user, attempts)  # refuses too few attempts
    default_dir = Path("build/images") / image_dir_name(profile)  # also checks the name
    image_dir = out or default_dir
    result = run_demo(image_dir, dist, deb, scenario, say, profile)
    _report(result, say)
    if not result.passed:
        raise typer.Exit(1)
