"""One guest per image profile: the agent's .deb in a quick Debian image.

The package and images are built through the same functions as `defender-tools
demo` (and cached by their inputs); DEFENDER_AGENT_DEB=path/to/agent.deb uses that
prebuilt package instead of building one from the working tree. Every test runs
once per profile (`standard`: systemd + OpenSSH, `embedded`: sysvinit + Dropbear);
each image is booted once, and every test gets it with the root SSH session
already open, so reading alerts never counts as a new login from the attacker's
address.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from defender_tools import guest_agent
from defender_tools.agent_package import build_agent_deb
from defender_tools.images.debian import PROFILES, ImageResult, Profile, build_image, image_dir_name
from defender_tools.qemu_runner import Guest, free_port
from defender_tools.scenarios.checks import service_active

ROOT = Path(__file__).resolve().parent.parent
BUILD = Path(os.environ.get("DEFENDER_BUILD_DIR", ROOT / "build"))
AGENT_DEB_ENV = "DEFENDER_AGENT_DEB"


@pytest.fixture(scope="session")
def agent_deb() -> Path:
    """The agent package: $DEFENDER_AGENT_DEB when set, else built once from the working
    tree for every image (byte-identical when the sources are)."""
    prebuilt = os.environ.get(AGENT_DEB_ENV, "").strip()
    if not prebuilt:
        return build_agent_deb(BUILD / "dist")
    path = Path(prebuilt).resolve()
    if not path.is_file():
        pytest.fail(f"{AGENT_DEB_ENV}={prebuilt}: no such file")
    return path


@pytest.fixture(scope="session", params=list(PROFILES), ids=list(PROFILES))
def profile(request: pytest.FixtureRequest) -> Profile:
    """Which image the test runs against; session scope boots each image once."""
    return PROFILES[request.param]


@pytest.fixture(scope="session")
def image(profile: Profile, agent_deb: Path) -> ImageResult:
    """The agent package installed in the profile's image (reused when unchanged)."""
    out = BUILD / "images" / image_dir_name(profile.name)
    return build_image(out, [agent_deb], profile=profile.name)


@pytest.fixture(scope="session")
def syslog_forward() -> tuple[str, int, int]:
    """(guest address, guest port, host port): a TCP connection the guest opens to the
    first two reaches a syslog collector a test runs on the host's 127.0.0.1 at the
    third (test_syslog_forward.py; free at session start)."""
    return "10.0.2.100", 514, free_port()


@pytest.fixture(scope="session")
def guest(
    image: ImageResult, profile: Profile, syslog_forward: tuple[str, int, int]
) -> Iterator[Guest]:
    """The booted image, its agent running, with the admin SSH session open.

    The guest's auth log is copied to BUILD/qemu-tests-PROFILE.auth.log at the end, so a
    failed story can be replayed against exactly what the SSH server wrote.
    """
    log = BUILD / f"qemu-tests-{profile.name}.serial.log"
    with Guest(image.conf, serial_log=log, guest_forwards=[syslog_forward]) as booted:
        print(f"\n{profile.name}: boot to SSH {booted.boot_seconds} s ({booted.accel})")
        active = service_active(guest_agent.wait_for_service(booted))
        assert active.passed, f"{profile.name} after boot: {active.line()}"
        try:
            yield booted
        finally:
            _rc, out, _err = booted.ssh(profile.auth_log_command)
            (BUILD / f"qemu-tests-{profile.name}.auth.log").write_text(out)
