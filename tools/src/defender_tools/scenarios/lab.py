"""Attackers inside the guest, on addresses of their own.

Every connection from the host arrives from QEMU's user-network gateway, 10.0.2.2, so
stories played from the host share one source. An attacker that needs an address of
its own (one that runs for minutes alongside the other stories, or one that must not
inherit their history) runs inside the guest instead: a dummy interface carries
documentation-range addresses (RFC 5737), the SSH client binds one of them and connects
to the guest's own server on another, and sshd/Dropbear see a source nobody else uses.
No packet leaves the guest.

The client is OpenSSH's `ssh` in both images (the embedded one carries it for this only),
with the password from an askpass helper: one password per connection
(NumberOfPasswordPrompts=1), as a scanner tries them.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from defender_tools.qemu_runner import Guest

INTERFACE = "dfn-lab"
TARGET = "198.51.100.1"  # the guest's servers, as the lab's attackers reach them
ASKPASS = "/run/dfn-askpass"
RUN_DIR = "/run/dfn-lab"

_SETUP = f"""set -e
if ! ip link show {INTERFACE} >/dev/null 2>&1; then
    ip link add {INTERFACE} type dummy
fi
ip link set {INTERFACE} up
ip addr replace {TARGET}/32 dev {INTERFACE}
printf '#!/bin/sh\\nprintf "%%s\\\\n" "$DFN_PASSWORD"\\n' > {ASKPASS}
chmod 0755 {ASKPASS}
mkdir -p {RUN_DIR}
"""


class LabError(RuntimeError):
    """The guest could not be set up for an in-guest attacker."""


def prepare(guest: Guest, *sources: str) -> None:
    """The dummy interface with TARGET and SOURCES, and the askpass helper (idempotent)."""
    script = _SETUP + "".join(f"ip addr replace {s}/32 dev {INTERFACE}\n" for s in sources)
    rc, out, err = guest.ssh(script)
    if rc != 0:
        raise LabError(f"lab setup failed ({rc}): {err.strip() or out.strip()}")


def password_attempt(source: str, user: str, password: str, port: int = 22) -> str:
    """A shell command: one SSH password login as USER from SOURCE; exit 0 if let in."""
    options = [
        f"BindAddress={source}",
        "StrictHostKeyChecking=no",
        "UserKnownHostsFile=/dev/null",
        "GlobalKnownHostsFile=/dev/null",
        "LogLevel=QUIET",
        "PubkeyAuthentication=no",
        "PreferredAuthentications=password,keyboard-interactive",
        "NumberOfPasswordPrompts=1",
        "ConnectTimeout=30",
    ]
    args = " ".join(f"-o {shlex.quote(o)}" for o in options)
    return (
        f"env DFN_PASSWORD={shlex.quote(password)} SSH_ASKPASS={ASKPASS} "
        f"SSH_ASKPASS_REQUIRE=force DISPLAY=none "
        f"ssh -n {args} -p {port} {shlex.quote(user)}@{TARGET} true"
    )


@dataclass(frozen=True)
class Attempt:
    """One attempt of a background attacker: guest time it started, the client's status."""

    started: float
    status: int


def start_background(guest: Guest, name: str, commands: list[str], interval: float) -> None:
    """Run COMMANDS in the guest, one starting every INTERVAL seconds, detached from the
    SSH session; each start time and exit status goes to RUN_DIR/NAME.log, then `done`."""
    log = f"{RUN_DIR}/{name}.log"
    body = [f": > {log}"]
    for i, command in enumerate(commands):
        if i:
            body.append(f"sleep_until $(( start + {round(i * interval)} ))")
        body.append(f't=$(date +%s.%N); {command}; echo "$t $?" >> {log}')
    body.append(f"echo done >> {log}")
    script = (
        'sleep_until() { while [ "$(date +%s)" -lt "$1" ]; do sleep 0.2; done; }\n'
        "start=$(date +%s)\n" + "\n".join(body) + "\n"
    )
    launcher = f"nohup sh -c {shlex.quote(script)} >{RUN_DIR}/{name}.out 2>&1 </dev/null &"
    rc, out, err = guest.ssh(launcher)
    if rc != 0:
        raise LabError(f"cannot start {name} ({rc}): {err.strip() or out.strip()}")


def background_progress(guest: Guest, name: str) -> tuple[list[Attempt], bool]:
    """The attempts a background attacker has made so far, and whether it is done."""
    rc, out, _err = guest.ssh(f"cat {RUN_DIR}/{name}.log 2>/dev/null")
    attempts, done = [], False
    for line in out.splitlines() if rc == 0 else []:
        words = line.split()
        if words == ["done"]:
            done = True
        elif len(words) == 2 and words[1].isdigit():
            try:
                attempts.append(Attempt(float(words[0]), int(words[1])))
            except ValueError:
                continue
    return attempts, done
