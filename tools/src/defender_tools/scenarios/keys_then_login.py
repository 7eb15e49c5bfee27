"""Story (e): an ssh-agent offers wrong keys before the right one: no failure, no alert.

ssh-agent offers every key it holds; a user whose right key comes fifth leaves four or
five `Failed publickey` lines before `Accepted publickey`. That is a login, not an
attack: the agent must record no failed login for it.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

import paramiko

from defender_tools import guest_agent
from defender_tools.images.debian import Profile
from defender_tools.qemu_runner import Guest
from defender_tools.scenarios import checks
from defender_tools.scenarios.base import Check, Scenario, ScenarioResult
from defender_tools.scenarios.checks import SETTLE_S

FAILED = "login-failed"


@dataclass(frozen=True)
class KeysSeen:
    failures_before: int  # login-failed events before the story
    refused: int  # wrong keys the server refused
    accepted: bool  # the right key let root in
    failures_after: int


class KeysThenLogin(Scenario[KeysSeen]):
    """WRONG freshly made keys, then the image's root key, on one connection."""

    name = "wrong keys then the right one"

    def __init__(self, wrong: int = 4) -> None:
        self.wrong = wrong

    def describe(self) -> str:
        return f"{self.wrong} wrong public keys for root, then the right one"

    def observe(self, guest: Guest) -> KeysSeen:
        before = guest_agent.count_events(guest, FAILED, checks.ATTACKER_SOURCE)
        sock = socket.create_connection(("127.0.0.1", guest.ssh_port), timeout=30)
        transport = paramiko.Transport(sock)
        refused = 0
        accepted = False
        try:
            transport.start_client(timeout=30)
            for _ in range(self.wrong):
                try:
                    transport.auth_publickey("root", paramiko.ECDSAKey.generate())
                except paramiko.AuthenticationException:
                    refused += 1
            right = paramiko.Ed25519Key.from_private_key_file(str(guest.key))
            transport.auth_publickey("root", right)
            accepted = transport.is_authenticated()
        finally:
            transport.close()
        time.sleep(SETTLE_S + 1)
        return KeysSeen(
            before,
            refused,
            accepted,
            guest_agent.count_events(guest, FAILED, checks.ATTACKER_SOURCE),
        )

    def judge(self, seen: KeysSeen, profile: Profile) -> ScenarioResult:
        result = ScenarioResult(self.name)
        result.extend(
            [
                Check(
                    f"the server refused {self.wrong} wrong keys",
                    seen.refused == self.wrong,
                    f"{seen.refused} refused",
                ),
                checks.login_accepted("root", seen.accepted),
                Check(
                    "no failed login recorded",
                    seen.failures_after == seen.failures_before,
                    f"{seen.failures_after - seen.failures_before} new {FAILED} events",
                ),
            ]
        )
        return result
