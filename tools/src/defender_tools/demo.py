"""`defender-tools demo`: package the agent, boot it in QEMU, brute-force SSH, show the alert."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from defender_tools import guest_agent
from defender_tools.agent_package import build_agent_deb
from defender_tools.errors import UserError
from defender_tools.images.debian import (
    DEFAULT_PROFILE,
    Profile,
    build_image,
    get_profile,
    image_dir_name,
)
from defender_tools.qemu_runner import Guest
from defender_tools.scenarios.ssh_brute_force import iter_failed_password_attempts

ATTACKER_SOURCE = "10.0.2.2"  # QEMU user networking: every host connection comes from here
MAX_FAILURES = 5  # the agent's default brute-force threshold: the 5th failure crosses it
LATENCY_LIMIT = 10.0  # seconds from the last attempt to a visible alert


@dataclass
class DemoResult:
    """Everything the demo measured; `checks` decide pass or fail."""

    timings: dict[str, float] = field(default_factory=dict)
    alert: dict[str, Any] | None = None
    memory: guest_agent.AgentMemory | None = None
    checks: dict[str, bool] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(self.checks.values())


def wait_for_service(guest: Guest, timeout: float = 60.0) -> str:
    """The agent must be following the logs before the attack starts."""
    deadline = time.monotonic() + timeout
    state = guest_agent.service_state(guest)
    while state != "active" and time.monotonic() < deadline:
        time.sleep(0.5)
        state = guest_agent.service_state(guest)
    return state


def run_demo(
    image_dir: Path,
    dist_dir: Path,
    deb: Path | None,
    user: str,
    attempts: int,
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

    with say.status("booting the guest"):
        guest = Guest(image.conf)
        guest.start()
        try:
            result.timings["boot to SSH s"] = guest.wait_for_ssh()
        except BaseException:
            guest.shutdown(timeout=5)
            raise
    try:
        say.print(f"guest up ({guest.accel}), admin session open: {guest.ssh_command}")
        state = wait_for_service(guest)
        result.checks["agent service active"] = state == "active"
        before = guest_agent.named(guest_agent.alerts(guest), "BruteForce")
        with say.status(f"{attempts} failed SSH password logins as {user!r}, watching alerts"):
            attack = iter_failed_password_attempts(guest.ssh_port, user, attempts)
            stamps, alert, seen = guest_agent.watch_attack(guest, "BruteForce", attack)
        result.timings["attack s"] = round(stamps[-1] - stamps[0], 1)
        result.checks["BruteForce alert appeared"] = alert is not None
        if alert is not None:
            _check_alert(result, guest, alert, seen, stamps, user, before, get_profile(profile))
        result.memory = guest_agent.agent_memory(guest)
    finally:
        with say.status("shutting the guest down"):
            t = time.monotonic()
            guest.shutdown()
            result.timings["shutdown s"] = round(time.monotonic() - t, 1)
    result.timings["demo total s"] = round(time.monotonic() - started, 1)
    return result


def _check_alert(
    result: DemoResult,
    guest: Guest,
    alert: dict[str, Any],
    seen: float,
    stamps: list[float],
    user: str,
    before: list[dict[str, Any]],
    profile: Profile,
) -> None:
    """What a user expects of the alert, recorded as named checks with timings."""
    result.alert = alert
    payload = alert.get("payload", {})
    # Negative: the alert was already visible before the attacker gave up.
    result.timings["alert seen vs last attempt s (< 0: before it)"] = round(seen - stamps[-1], 2)
    crossing = stamps[min(MAX_FAILURES, len(stamps)) - 1]
    result.timings[f"alert seen after attempt {MAX_FAILURES} (crossing) s"] = round(
        seen - crossing, 2
    )
    all_alerts = guest_agent.alerts(guest)
    result.checks["no BruteForce before the attack"] = not before
    result.checks["exactly one BruteForce alert"] = (
        len(guest_agent.named(all_alerts, "BruteForce")) == 1
    )
    result.checks[f"source is {ATTACKER_SOURCE}"] = payload.get("source") == ATTACKER_SOURCE
    result.checks[f"service is {profile.ssh_service}"] = (
        payload.get("service") == profile.ssh_service
    )
    users = payload.get("users") or []
    if profile.logs_unknown_user_names:
        result.checks[f"{user!r} in users"] = user in users
    else:
        # Dropbear logs no name for a nonexistent user, so only an existing one can be named.
        result.checks[f"users is [{user!r}] or [] (unknown names are not logged)"] = users in (
            [user],
            [],
        )
    result.checks["no BruteForceSuccess"] = not guest_agent.named(all_alerts, "BruteForceSuccess")
    # Sooner would mean one attempt was counted twice (e.g. its btmp record and its log line).
    result.checks[f"alert not before failed attempt {MAX_FAILURES}"] = (
        seen > stamps[MAX_FAILURES - 2]
    )
    result.checks[f"alert within {LATENCY_LIMIT:.0f} s of the last attempt"] = (
        seen - stamps[-1] <= LATENCY_LIMIT
    )


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
    for check, ok in result.checks.items():
        table.add_row(check, "[green]PASS[/green]" if ok else "[red]FAIL[/red]")
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
    if attempts < MAX_FAILURES:
        raise UserError(
            f"--attempts {attempts}: needs at least {MAX_FAILURES} to cross the threshold"
        )
    default_dir = Path("build/images") / image_dir_name(profile)  # also checks the name
    image_dir = out or default_dir
    result = run_demo(image_dir, dist, deb, user, attempts, say, profile)
    _report(result, say)
    if not result.passed:
        raise typer.Exit(1)
