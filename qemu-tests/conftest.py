"""One guest per image profile: the agent's .deb in a quick Debian image.

The package and images are built through the same functions as `defender-tools
demo` (and cached by their inputs). Every test runs once per profile
(`standard`: systemd + OpenSSH, `embedded`: sysvinit + Dropbear); each image is
booted once, and every test gets it with the root SSH session already open, so
reading alerts never counts as a new login from the attacker's address.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from defender_tools.agent_package import build_agent_deb
from defender_tools.demo import wait_for_service
from defender_tools.images.debian import PROFILES, ImageResult, Profile, build_image, image_dir_name
from defender_tools.qemu_runner import Guest

ROOT = Path(__file__).resolve().parent.parent
BUILD = Path(os.environ.get("DEFENDER_BUILD_DIR", ROOT / "build"))


@pytest.fixture(scope="session")
def agent_deb() -> Path:
    """The agent package, built once for every image (byte-identical when sources are)."""
    return build_agent_deb(BUILD / "dist")


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
def guest(image: ImageResult, profile: Profile) -> Iterator[Guest]:
    """The booted image, its agent running, with the admin SSH session open.

    The guest's auth log is copied to BUILD/qemu-tests-PROFILE.auth.log at the end, so a
    failed story can be replayed against exactly what the SSH server wrote.
    """
    log = BUILD / f"qemu-tests-{profile.name}.serial.log"
    with Guest(image.conf, serial_log=log) as booted:
        print(f"\n{profile.name}: boot to SSH {booted.boot_seconds} s ({booted.accel})")
        state = wait_for_service(booted)
        assert state == "active", f"{profile.name}: the agent service is {state} after boot"
        try:
            yield booted
        finally:
            _rc, out, _err = booted.ssh("cat /var/log/auth.log")
            (BUILD / f"qemu-tests-{profile.name}.auth.log").write_text(out)
