"""One guest for the whole QEMU session: the agent's .deb in a quick Debian image.

The package and image are built through the same functions as `defender-tools
demo` (and cached by their inputs), the guest is booted once, and every test
gets it with the root SSH session already open, so reading alerts never counts
as a new login from the attacker's address.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from defender_tools import guest_agent
from defender_tools.agent_package import build_agent_deb
from defender_tools.demo import wait_for_service
from defender_tools.images.debian import ImageResult, build_image
from defender_tools.qemu_runner import Guest

ROOT = Path(__file__).resolve().parent.parent
BUILD = Path(os.environ.get("DEFENDER_BUILD_DIR", ROOT / "build"))


@pytest.fixture(scope="session")
def image() -> ImageResult:
    """The agent package installed in the quick Debian image (reused when unchanged)."""
    deb = build_agent_deb(BUILD / "dist")
    return build_image(BUILD / "images" / "defender-debian", [deb])


@pytest.fixture(scope="session")
def guest(image: ImageResult) -> Iterator[Guest]:
    """The booted image, its agent running, with the admin SSH session open."""
    with Guest(image.conf, serial_log=BUILD / "qemu-tests.serial.log") as booted:
        print(f"\nboot to SSH: {booted.boot_seconds} s ({booted.accel})")
        state = wait_for_service(booted)
        assert state == "active", f"{guest_agent.SERVICE} is {state} after boot"
        yield booted
