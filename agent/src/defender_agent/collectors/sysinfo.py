"""System-information collector: one `system-information` event at start, then every
`interval` seconds: host, OS, kernel, hardware (DMI), memory and network interfaces.

Everything comes from /proc, /sys and ioctl(SIOCGIFADDR): no external commands, so it
works on a busybox-only device and inside the hardened service sandbox. The ioctl socket
comes from the C module `_socket`, not `socket`: socket.py converts its constants to
enums at import, which costs ~1.5 MiB of RSS for the agent's whole life.
"""

from __future__ import annotations

import os
import struct

from defender_agent import __version__
from defender_agent import log as _log
from defender_agent.linux import inet
from defender_agent.model import Record

TYPE_CHECKING = False  # typing costs ~0.5 MiB RSS at run time; only mypy needs it
if TYPE_CHECKING:
    from typing import Any

    from defender_agent.loop import Timer
    from defender_agent.plugins import Context

log = _log.get(__name__)

NAME = "sysinfo"
SIOCGIFADDR = 0x8915  # <linux/sockios.h>
_DMI_FIELDS = (
    "sys_vendor",
    "product_name",
    "product_version",
    "board_vendor",
    "board_name",
    "bios_vendor",
    "bios_version",
)
_ARPHRD = {
    1: "ethernet",
    772: "loopback",
    768: "tunnel",
    776: "sit",
    65534: "none",
    801: "wifi",
    280: "can",
    519: "ppp",
}


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read().strip()
    except OSError:
        return None


def os_release(path: str = "/etc/os-release") -> dict[str, str]:
    """Parse os-release(5): KEY=value lines, values optionally quoted."""
    text = _read(path) or _read("/usr/lib/os-release") or ""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def memory_total_kib(path: str = "/proc/meminfo") -> int | None:
    for line in (_read(path) or "").splitlines():
        if line.startswith("MemTotal:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1])
    return None


def ipv6_addresses(path: str = "/proc/net/if_inet6") -> dict[str, list[str]]:
    """/proc/net/if_inet6: 32 hex digits, ifindex, prefix length, scope, flags, name."""
    out: dict[str, list[str]] = {}
    for line in (_read(path) or "").splitlines():
        parts = line.split()
        if len(parts) != 6 or len(parts[0]) != 32:
            continue
        try:
            raw = bytes.fromhex(parts[0])
            addr = inet.ntop6(raw)
            prefix = int(parts[2], 16)
        except ValueError:
            continue
        out.setdefault(parts[5], []).append(f"{addr}/{prefix}")
    return out


def ipv4_address(name: str) -> str | None:
    """SIOCGIFADDR: the primary IPv4 address of one interface (None when it has none)."""
    import _socket
    import fcntl

    try:
        sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    except OSError:
        return None
    try:
        req = struct.pack("16s16x", name.encode()[:15])
        res = fcntl.ioctl(sock.fileno(), SIOCGIFADDR, req)
    except OSError:
        return None
    finally:
        sock.close()
    return inet.ntop4(res[20:24])


def interfaces(sys_net: str = "/sys/class/net") -> list[dict[str, Any]]:
    try:
        names = sorted(os.listdir(sys_net))
    except OSError:
        import _socket

        names = sorted(name for _i, name in _socket.if_nameindex())
    v6 = ipv6_addresses()
    nics = []
    for name in names:
        base = os.path.join(sys_net, name)
        type_text = _read(os.path.join(base, "type"))
        kind = _ARPHRD.get(int(type_text), type_text) if type_text and type_text.isdigit() else None
        if os.path.isdir(os.path.join(base, "wireless")):
            kind = "wifi"
        driver = None
        try:
            driver = os.path.basename(os.readlink(os.path.join(base, "device", "driver")))
        except OSError:
            pass
        ipv4 = ipv4_address(name)
        nics.append(
            {
                "name": name,
                "type": kind,
                "mac": _read(os.path.join(base, "address")),
                "state": _read(os.path.join(base, "operstate")),
                "driver": driver,
                "vendor": _read(os.path.join(base, "device", "vendor")),
                "ipv4": [ipv4] if ipv4 else [],
                "ipv6": v6.get(name, []),
            }
        )
    return nics


def dmi(base: str = "/sys/class/dmi/id") -> dict[str, str]:
    out = {}
    for field in _DMI_FIELDS:
        value = _read(os.path.join(base, field))
        if value:
            out[field] = value
    model = _read("/proc/device-tree/model") or _read("/sys/firmware/devicetree/base/model")
    if model:
        out["device_tree_model"] = model.rstrip("\0")
    return out


def collect() -> dict[str, Any]:
    """The system-information payload."""
    rel = os_release()
    uname = os.uname()
    return {
        "event": "system-information",
        "hostname": uname.nodename,
        "os": {
            "id": rel.get("ID"),
            "name": rel.get("NAME"),
            "version": rel.get("VERSION_ID"),
            "pretty_name": rel.get("PRETTY_NAME"),
        },
        "kernel": uname.release,
        "arch": uname.machine,
        "cpu_count": os.cpu_count(),
        "memory_total_kib": memory_total_kib(),
        "hardware": dmi(),
        "nics": interfaces(),
        "agent": {"type": "defender-agent", "version": __version__},
    }


class SysinfoCollector:
    name = NAME

    def __init__(self, ctx: Context, section: dict[str, Any]) -> None:
        self.ctx = ctx
        self.interval = float(section["interval"])
        self.counts: dict[str, int] = {}
        self._timer: Timer | None = None

    def start(self) -> None:
        self._timer = self.ctx.call_every(self.interval, self.report, first=0.0)

    def report(self) -> None:
        try:
            payload = collect()
        except Exception:  # a surprising /sys must not kill the agent
            log.exception("system information failed")
            self.counts["collect-error"] = self.counts.get("collect-error", 0) + 1
            return
        self.ctx.emit(Record("event", payload))

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def save_state(self) -> dict[str, Any]:
        return {}

    def statistics(self) -> dict[str, int]:
        return dict(self.counts)


def create(ctx: Context, section: dict[str, Any], state: dict[str, Any]) -> SysinfoCollector:
    return SysinfoCollector(ctx, section)


def describe(section: dict[str, Any]) -> list[str]:
    dmi_state = "present" if os.path.isdir("/sys/class/dmi/id") else "absent"
    return [
        f"backend: timer every {section['interval']:g} s",
        f"sources: /etc/os-release, /proc, /sys/class/net, DMI {dmi_state}",
    ]
