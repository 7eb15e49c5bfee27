"""The agent runs as a service and stays small."""

from __future__ import annotations

import pytest
from defender_tools import guest_agent
from defender_tools.qemu_runner import Guest
from defender_tools.scenarios.checks import service_active

RSS_CEILING_MIB = 32.0

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(1200)]


def test_agent_service_is_active_and_small(guest: Guest) -> None:
    active = service_active(guest_agent.service_state(guest))
    assert active.passed, active.line()

    memory = guest_agent.agent_memory(guest)

    print(f"\nagent pid {memory.pid}: VmRSS {memory.rss_mib} MiB, Pss {memory.pss_mib} MiB")
    assert 0 < memory.rss_mib < RSS_CEILING_MIB
    assert 0 < memory.pss_mib <= memory.rss_mib
