"""What a test or the demo asks the agent inside a booted guest, over the admin session."""

from __future__ import annotations

import json
import shlex
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from defender_tools.qemu_runner import Guest, GuestError

SERVICE = "defender-agent.service"
INIT_SCRIPT = "/etc/init.d/defender-agent"
PIDFILE = "/run/defender-agent.pid"  # written by the sysvinit script (start-stop-daemon -m)

# systemd when it is PID 1 (its runtime dir exists), else the sysvinit script's status.
_STATE_SCRIPT = f"""
if [ -d /run/systemd/system ]; then systemctl is-active {SERVICE}; exit 0; fi
if {INIT_SCRIPT} status >/dev/null 2>&1; then echo active; else echo inactive; fi
"""

# The same detection, to start or stop the service ({action} is filled in per call).
_CONTROL_SCRIPT = f"""
if [ -d /run/systemd/system ]; then exec systemctl {{action}} {SERVICE}; fi
exec {INIT_SCRIPT} {{action}}
"""

_MEMORY_SCRIPT = f"""
pid=""
if [ -d /run/systemd/system ]; then
    pid=$(systemctl show -p MainPID --value {SERVICE} 2>/dev/null)
elif [ -r {PIDFILE} ]; then
    pid=$(cat {PIDFILE})
fi
if [ -z "$pid" ] || [ "$pid" = 0 ]; then pid=$(pgrep -o -f 'defender[-_]agent'); fi
test -n "$pid" || exit 3
echo "Pid: $pid"
grep -E '^(VmRSS|VmHWM):' /proc/$pid/status
grep -E '^(Rss|Pss):' /proc/$pid/smaps_rollup
for c in $(cat /proc/$pid/task/*/children 2>/dev/null); do
    mem=$(awk '/^Rss:/ {{r = $2}} /^Pss:/ {{p = $2}} END {{print r, p}}' /proc/$c/smaps_rollup)
    echo "Child: $c $(cat /proc/$c/comm) $mem"
done
"""


_IDENTITY_SCRIPT = (
    _MEMORY_SCRIPT.split('echo "Pid: $pid"')[0]
    + """echo "Pid: $pid"
grep -E '^(Uid|Gid|Groups|CapEff|CapPrm|CapBnd):' /proc/$pid/status
for g in $(awk '/^Groups:/ {for (i = 2; i <= NF; i++) print $i}' /proc/$pid/status); do
    echo "Group: $(awk -F: -v gid="$g" '$3 == gid {print $1}' /etc/group)"
done
uid=$(awk '/^Uid:/ {print $2}' /proc/$pid/status)
echo "User: $(awk -F: -v uid="$uid" '$3 == uid {print $1}' /etc/passwd)"
"""
)


@dataclass(frozen=True)
class AgentIdentity:
    """Who the running agent is: user, groups and capabilities (hex masks)."""

    user: str
    uids: tuple[int, ...]
    groups: tuple[str, ...]
    cap_effective: int
    cap_permitted: int


def agent_identity(guest: Guest) -> AgentIdentity:
    """The agent process's credentials, from /proc/PID/status and the guest's databases."""
    rc, out, err = guest.ssh(_IDENTITY_SCRIPT)
    if rc != 0:
        raise GuestError(f"agent process not found in the guest ({rc}): {err.strip()}")
    fields: dict[str, list[str]] = {}
    for line in out.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), []).append(value.strip())
    return AgentIdentity(
        user=fields.get("User", [""])[0],
        uids=tuple(int(x) for x in fields["Uid"][0].split()),
        groups=tuple(g for g in fields.get("Group", []) if g),
        cap_effective=int(fields["CapEff"][0], 16),
        cap_permitted=int(fields["CapPrm"][0], 16),
    )


def security_exposure(guest: Guest) -> tuple[float, str] | None:
    """systemd-analyze's overall exposure of the agent's unit (None without systemd)."""
    rc, out, _err = guest.ssh(
        f"[ -d /run/systemd/system ] || exit 3; systemd-analyze security --no-pager {SERVICE}"
    )
    if rc == 3:
        return None
    for line in out.splitlines():
        if line.startswith("→ Overall exposure level"):
            words = line.split(":", 1)[1].split()
            return float(words[0]), out
    raise GuestError(f"systemd-analyze security printed no exposure level: {out[-500:]}")


@dataclass(frozen=True)
class AgentMemory:
    """Resident memory of the agent process, in KiB, and of its children (journalctl
    where the agent follows the journal): (pid, name, Rss, Pss) each."""

    pid: int
    rss_kib: int
    hwm_kib: int
    pss_kib: int
    children: tuple[tuple[int, str, int, int], ...] = ()

    @property
    def total_pss_mib(self) -> float:
        """What the agent costs the device: its Pss and its children's."""
        return round((self.pss_kib + sum(c[3] for c in self.children)) / 1024, 1)

    @property
    def rss_mib(self) -> float:
        return round(self.rss_kib / 1024, 1)

    @property
    def pss_mib(self) -> float:
        return round(self.pss_kib / 1024, 1)


def parse_records(text: str) -> list[dict[str, Any]]:
    """`alerts --json` output: one JSON object per line (a JSON array is accepted too)."""
    text = text.strip()
    if not text:
        return []
    if text.startswith("["):
        data = json.loads(text)
        return [r for r in data if isinstance(r, dict)]
    records = []
    for line in text.splitlines():
        line = line.strip()
        if line:
            record = json.loads(line)
            if isinstance(record, dict):
                records.append(record)
    return records


def alerts(guest: Guest, since: str | None = None) -> list[dict[str, Any]]:
    """The agent's alerts, as the device's own CLI reports them."""
    cmd = "defender-agent alerts --json"
    if since:
        cmd += f" --since {shlex.quote(since)}"
    rc, out, err = guest.ssh(cmd)
    if rc != 0:
        raise GuestError(f"`{cmd}` failed ({rc}): {err.strip() or out.strip()}")
    try:
        return parse_records(out)
    except ValueError as exc:
        raise GuestError(f"`{cmd}` printed something that is not JSON: {exc}") from exc


def named(records: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [r for r in records if r.get("payload", {}).get("name") == name]


def wait_for_alert(
    guest: Guest, name: str, timeout: float = 30.0, interval: float = 0.25, known: int = 0
) -> tuple[dict[str, Any] | None, float]:
    """Poll until there are more than KNOWN alerts NAME; return the first new one and the
    host time it was first seen, or (None, 0.0) when none came within TIMEOUT."""
    deadline = time.monotonic() + timeout
    while True:
        found = named(alerts(guest), name)
        if len(found) > known:
            return found[known], time.time()
        if time.monotonic() > deadline:
            return None, 0.0
        time.sleep(interval)


EVENTS = "/var/lib/defender-agent/events.jsonl"


def last_event_time(guest: Guest, event: str, source: str) -> float | None:
    """Epoch `time` of the newest EVENT from SOURCE in the agent's events file, if any."""
    pattern = shlex.quote(f'"event":"{event}"')
    cmd = f"cat {EVENTS}.3 {EVENTS}.2 {EVENTS}.1 {EVENTS} 2>/dev/null | grep -F {pattern}"
    _rc, out, _err = guest.ssh(cmd)
    newest: float | None = None
    for record in parse_records(out):
        if record.get("payload", {}).get("source") != source:
            continue
        stamp = str(record.get("time", ""))
        try:
            when = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        except ValueError:
            continue
        newest = max(newest or 0.0, when.timestamp())
    return newest


def events(guest: Guest, event: str) -> list[dict[str, Any]]:
    """The payloads of every EVENT record the agent's events file (and its backups) hold."""
    pattern = shlex.quote(f'"event":"{event}"')
    cmd = f"cat {EVENTS}.3 {EVENTS}.2 {EVENTS}.1 {EVENTS} 2>/dev/null | grep -F {pattern}"
    _rc, out, _err = guest.ssh(cmd)
    payloads = []
    for record in parse_records(out):
        payload = record.get("payload")
        if isinstance(payload, dict) and payload.get("event") == event:
            payloads.append(payload)
    return payloads


def count_events(guest: Guest, event: str, source: str | None = None) -> int:
    """How many EVENT records (from SOURCE, if given) the agent's events file and its
    backups hold."""
    pattern = shlex.quote(f'"event":"{event}"')
    cmd = f"cat {EVENTS}.3 {EVENTS}.2 {EVENTS}.1 {EVENTS} 2>/dev/null | grep -F {pattern}"
    if source is not None:
        field = f'"source":"{source}"'
        cmd += f" | grep -F {shlex.quote(field)}"
    cmd += " | grep -c ."
    _rc, out, _err = guest.ssh(cmd)
    return int(out.strip() or 0)


def guest_time(guest: Guest) -> float | None:
    """The guest's own clock (epoch seconds), None when it cannot be read. A guest under
    TCG can fall seconds behind the host's clock on a busy machine: compare what the agent
    stamps with this, not with the host's time."""
    _rc, out, _err = guest.ssh("date +%s.%N")
    try:
        return float(out.strip())
    except ValueError:
        return None


def service_state(guest: Guest) -> str:
    """The agent service's state: systemd's ActiveState, or active/inactive under sysvinit."""
    _rc, out, _err = guest.ssh(_STATE_SCRIPT)
    return out.strip()


def wait_for_service(guest: Guest, timeout: float = 60.0, want: str = "active") -> str:
    """Poll the service until it is WANT (the agent must follow the logs before an attack)."""
    deadline = time.monotonic() + timeout
    state = service_state(guest)
    while state != want and time.monotonic() < deadline:
        time.sleep(0.5)
        state = service_state(guest)
    return state


def _control_service(guest: Guest, action: str) -> None:
    guest.run(_CONTROL_SCRIPT.format(action=action))


def stop_service(guest: Guest) -> None:
    """`systemctl stop` under systemd, the init script's `stop` under sysvinit."""
    _control_service(guest, "stop")


def start_service(guest: Guest) -> None:
    """`systemctl start` under systemd, the init script's `start` under sysvinit."""
    _control_service(guest, "start")


def user_exists(guest: Guest, user: str) -> bool:
    """Whether USER has an account in the guest (SSH servers log unknown users differently)."""
    rc, _out, _err = guest.ssh(f"id -u {shlex.quote(user)}")
    return rc == 0


def agent_memory(guest: Guest) -> AgentMemory:
    """VmRSS/VmHWM from /proc/PID/status and Pss from smaps_rollup of the running agent."""
    rc, out, err = guest.ssh(_MEMORY_SCRIPT)
    if rc != 0:
        raise GuestError(f"agent process not found in the guest ({rc}): {err.strip()}")
    fields: dict[str, int] = {}
    children = []
    for line in out.splitlines():
        key, _, value = line.partition(":")
        words = value.split()
        if key == "Child" and len(words) == 4 and words[2].isdigit() and words[3].isdigit():
            children.append((int(words[0]), words[1], int(words[2]), int(words[3])))
        elif words and words[0].isdigit():
            fields[key.strip()] = int(words[0])
    return AgentMemory(
        pid=fields["Pid"],
        rss_kib=fields.get("VmRSS", 0),
        hwm_kib=fields.get("VmHWM", 0),
        pss_kib=fields.get("Pss", 0),
        children=tuple(children),
    )


def watch_attack(
    guest: Guest, name: str, attack: Iterator[float], timeout: float = 60.0
) -> tuple[list[float], dict[str, Any] | None, float]:
    """Run ATTACK (yielding a host time per attempt) in a thread while polling for alert NAME.

    Polling during the attack shows WHEN the alert appears relative to each attempt.
    Returns the attempt times, the first alert NAME (None if none came within TIMEOUT
    after the attack ended) and the host time it was first seen.
    """
    stamps: list[float] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            for stamp in attack:
                stamps.append(stamp)
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=run, name=f"attack-{name}", daemon=True)
    thread.start()
    alert: dict[str, Any] | None = None
    seen = 0.0
    deadline: float | None = None
    while alert is None:
        found = named(alerts(guest), name)
        if found:
            alert, seen = found[0], time.time()
        elif not thread.is_alive():
            deadline = deadline or time.monotonic() + timeout
            if time.monotonic() > deadline:
                break
        time.sleep(0.1)
    thread.join()
    if failure:
        raise failure[0]
    return stamps, alert, seen
