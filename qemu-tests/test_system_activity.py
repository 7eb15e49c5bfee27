"""Processes, connections, listeners and the owner's custom rules, in the booted guest.

Runs after the SSH stories (file order): it gives the agent a configuration of its own
(no aggregation, one rule of every type), restarts it, plays the story of
`defender_tools.scenarios.system_activity` inside the guest and restores both.
"""

from __future__ import annotations

import pytest
from defender_tools.images.debian import Profile
from defender_tools.qemu_runner import Guest
from defender_tools.scenarios.system_activity import SystemActivity

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(600)]


def test_processes_connections_listeners_and_custom_rules(guest: Guest, profile: Profile) -> None:
    result = SystemActivity().run(guest, profile)
    print(f"\n{profile.name}: {result.report()}")
    assert result.passed, result.failures()
