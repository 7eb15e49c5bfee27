"""The agent runs as a service and stays small."""

from __future__ import annotations

import pytest
from defender_tools import guest_agent
from defender_tools.images.debian import Profile
from defender_tools.qemu_runner import Guest
from defender_tools.scenarios.checks import service_active

RSS_CEILING_MIB = 32.0

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(1200)]


def test_agent_service_is_active_and_small(guest: Guest) -> None:
    active = service_active(guest_agent.service_state(guest))
    assert active.passed, active.line()

    memory = guest_agent.agent_memory(guest)

    print(f"\nagent pid {memory.pid}: VmRSS {memory.rss_mib} MiB, Pss {memory.pss_mib} MiB")
    for pid, name, rss, pss in memory.children:
        print(f"  child {name} pid {pid}: Rss {rss / 1024:.1f} MiB, Pss {pss / 1024:.1f} MiB")
    print(f"  agent and children: Pss {memory.total_pss_mib} MiB")
    assert 0 < memory.rss_mib < RSS_CEILING_MIB
    assert 0 < memory.pss_mib <= memory.rss_mib
    assert memory.total_pss_mib < RSS_CEILING_MIB


# systemd-analyze security: 0 is locked down, 10 is root, free. 1.1 with login and sysinfo
# alone, 1.8 with the process and network drop-ins, 2.1 once the network drop-in added
# CAP_NET_RAW and AF_PACKET for connection attempts (measured; docs/security.md). The
# issue's bound is 4.3, this version's own figure is the bound here: any loosening shows.
SECURITY_EXPOSURE_MAX = 2.1


# What the process and network collectors' unit drop-ins grant (agent/packaging/systemd/):
# CAP_DAC_READ_SEARCH (2), CAP_NET_ADMIN (12), CAP_NET_RAW (13), CAP_SYS_PTRACE (19). The
# image's package has every collector; the sysvinit script reads the same drop-ins and
# grants the same through setpriv.
DROPIN_CAPABILITIES = 1 << 2 | 1 << 12 | 1 << 13 | 1 << 19
NICE = -5  # the unit's Nice= and the init script's: ahead of ordinary work (a fork storm)


def test_agent_runs_as_its_own_user_with_only_its_collectors_capabilities(
    guest: Guest, profile: Profile
) -> None:
    who = guest_agent.agent_identity(guest)
    print(
        f"\nagent runs as {who.user} {who.uids}, groups {', '.join(who.groups)}, "
        f"CapEff {who.cap_effective:#x}"
    )
    assert who.user == "defender-agent" and len(set(who.uids)) == 1
    assert {"adm", "utmp"} <= set(who.groups)  # what reads the auth logs and btmp
    if profile.auth_messages == "journal":
        assert "systemd-journal" in who.groups  # what reads the journal
    assert who.cap_effective == DROPIN_CAPABILITIES
    assert who.cap_permitted == DROPIN_CAPABILITIES
    pid = guest_agent.agent_memory(guest).pid
    nice = guest.run(f"cut -d')' -f2 /proc/{pid}/stat").split()[16]  # field 19
    assert int(nice) == NICE


def test_systemd_unit_exposure_is_low(guest: Guest) -> None:
    found = guest_agent.security_exposure(guest)
    if found is None:
        pytest.skip(
            "systemd-analyze rates systemd units only; this sysvinit image's privilege drop "
            "(setpriv from the init script) is checked by test_agent_runs_as_its_own_user_"
            "with_only_its_collectors_capabilities"
        )
    exposure, report = found
    print(f"\nsystemd-analyze security: overall exposure {exposure}")
    assert exposure <= SECURITY_EXPOSURE_MAX, report
