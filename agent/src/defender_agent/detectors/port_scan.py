"""Port-scan detector: one source probing many ports of this device, or this device
probing many ports of one host or many hosts on one port.

Inbound, a probe is a SYN to a closed port (`connection-attempt`) or a connection
accepted on an open one (`connection`, direction `in`): a connect scan (nmap -sT) leaves
both, a SYN scan (nmap -sS, masscan) the attempts, a client the few ports it uses.
`in_ports` distinct ports from one source within `window` seconds raise `PortScan`
(CrowdSec's port-scan scenario counts distinct ports the same way; scanlogd and Snort
too). Outbound
(`connection`, direction `out`, any state) the device is the scanner: `out_ports`
distinct ports of one host, or `out_hosts` distinct hosts on one port. Addresses in
`ignore_addresses` (loopback by default: local services talking to each other) are not
counted, nor outbound flows of protocols outside `out_protocols` (TCP by default: a DNS
resolver or an NTP client asks many servers on 53 and 123 over UDP).

Windows are on event time. One alert per incident (detectors/incidents.py): every probe
of a source (or target, or port) whose incident is open is counted into it, and the alert
is written again with the new count at most once a minute; ten quiet minutes end it
(detectors/distinct.py's DistinctDetector, shared with the botnet detector).
"""

from __future__ import annotations

from defender_agent import rules
from defender_agent.detectors.distinct import DistinctDetector

TYPE_CHECKING = False  # typing costs ~0.5 MiB RSS at run time; only mypy needs it
if TYPE_CHECKING:
    from typing import Any

    from defender_agent.model import Record
    from defender_agent.plugins import Context

NAME = "port_scan"
ALERT = "PortScan"
SEVERITY = "medium"
MAX_ADDRESS = 64  # characters: the longest IPv6 text is 45; anything longer is not one
MAX_LISTED = 16  # ports or hosts listed in one alert

REMEDIATE_IN = (
    "If the source is not a scanner you run (a vulnerability scanner, an inventory "
    "tool), block it at the firewall; close or firewall the services it found open."
)
REMEDIATE_OUT = (
    "This device is scanning others: find the program (pid, executable) that opened the "
    "connections, stop it, and find out how it got there."
)


class PortScanDetector(DistinctDetector):
    name = NAME

    def __init__(
        self,
        ctx: Context,
        in_ports: int = 15,
        out_ports: int = 15,
        out_hosts: int = 100,
        window: float = 60.0,
        out_protocols: tuple[str, ...] = ("tcp",),
        ignore_addresses: list[tuple[int, int, int]] | None = None,
        max_keys: int = 1024,
        max_items: int = 16384,
    ) -> None:
        super().__init__(ctx, window, max_keys, max_items)
        self.in_ports = in_ports
        self.out_ports = out_ports
        self.out_hosts = out_hosts
        self.window = window
        self.out_protocols = out_protocols
        self.ignore = ignore_addresses if ignore_addresses is not None else []
        self.counts = {
            "probes-in": 0,
            "probes-out": 0,
            "ignored": 0,
            "other-protocol": 0,
            "malformed": 0,
        }

    # --- plugin contract: DistinctDetector's -------------------------------------
    # --- events -------------------------------------------------------------------
    def process(self, record: Record) -> list[Record]:
        payload = record.payload
        event = payload.get("event")
        if event == "connection-attempt":
            direction = "in"
        elif event == "connection":
            given = payload.get("direction")
            if given not in ("in", "out"):
                return []  # "unknown": a look that could not read every listener
            direction = str(given)
            if direction == "out" and payload.get("protocol") not in self.out_protocols:
                self.counts["other-protocol"] += 1  # DNS and NTP to many servers: not scans
                return []
        else:
            return []
        when = record.time
        remote = payload.get("remote_address")
        port = payload.get("local_port" if direction == "in" else "remote_port")
        if (
            when is None
            or not isinstance(remote, str)
            or not 0 < len(remote) <= MAX_ADDRESS
            or isinstance(port, bool)
            or not isinstance(port, int)
            or not 0 <= port <= 65535
        ):
            self.counts["malformed"] += 1
            return []
        if self.ignore and rules.address_in(remote, self.ignore):
            self.counts["ignored"] += 1
            return []
        if direction == "in":
            self.counts["probes-in"] += 1
            return self._inbound(remote, port, when)
        self.counts["probes-out"] += 1
        return self._outbound(remote, port, when, payload)

    def _inbound(self, source: str, port: int, when: float) -> list[Record]:
        if self.in_ports <= 0:
            return []
        key = f"in {source}"
        crossed = self._count(key, port, when, self.in_ports)
        if crossed is None:
            return []
        n, ports, span = crossed
        description = (
            f"{source} probed {n} ports of this device within {span:.1f} s ({_show(ports)})"
        )
        evidence = {
            "direction": "in",
            "source": source,
            "ports": ports,
            "distinct_ports": n,
        }
        return self.incidents.found(ALERT, key, when, SEVERITY, description, REMEDIATE_IN, evidence)

    def _outbound(
        self, target: str, port: int, when: float, payload: dict[str, Any]
    ) -> list[Record]:
        process = {"pid": _int(payload.get("pid")), "executable": _text(payload.get("executable"))}
        out: list[Record] = []
        if self.out_ports > 0:
            key = f"out-ports {target}"
            crossed = self._count(key, port, when, self.out_ports)
            if crossed is not None:
                n, ports, span = crossed
                description = (
                    f"this device probed {n} ports of {target} within {span:.1f} s ({_show(ports)})"
                )
                evidence = {
                    "direction": "out",
                    "target": target,
                    "ports": ports,
                    "distinct_ports": n,
                    **process,
                }
                out += self.incidents.found(
                    ALERT, key, when, SEVERITY, description, REMEDIATE_OUT, evidence
                )
        if self.out_hosts > 0:
            key = f"out-hosts {port}"
            crossed = self._count(key, target, when, self.out_hosts)
            if crossed is not None:
                n, hosts, span = crossed
                description = (
                    f"this device connected to {n} hosts on port {port} within {span:.1f} s"
                )
                evidence = {
                    "direction": "out",
                    "port": port,
                    "targets": hosts,
                    "distinct_targets": n,
                    **process,
                }
                out += self.incidents.found(
                    ALERT, key, when, SEVERITY, description, REMEDIATE_OUT, evidence
                )
        return out

    def _count(
        self, key: str, item: Any, when: float, threshold: int
    ) -> tuple[int, list[Any], float] | None:
        """Count `item` for `key`; None unless the key reached `threshold` distinct items
        or its incident is open, else (distinct items, the newest of them (at most
        MAX_LISTED, sorted), the seconds its window spans)."""
        n = self.seen.add(key, item, when, threshold)
        if n < threshold and not self.incidents.is_open(ALERT, key, when):
            return None
        seen = self.seen.seen(key)
        if not seen:
            return n, [], 0.0
        span = seen[-1][1] - min(t for _i, t in seen)
        return n, sorted(i for i, _t in seen[-MAX_LISTED:]), max(span, 0.0)


def _show(items: list[Any]) -> str:
    return ", ".join(str(i) for i in items)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: Any, limit: int = 4096) -> str | None:
    return value[:limit] if isinstance(value, str) else None


def _cidrs(values: list[str], where: str) -> list[tuple[int, int, int]]:
    out = []
    for text in values:
        try:
            out.append(rules.cidr(text))
        except ValueError as exc:
            from defender_agent.config import ConfigError

            raise ConfigError(f"{where}: {text!r}: {exc}") from None
    return out


def _protocols(values: list[str]) -> tuple[str, ...]:
    for value in values:
        if value not in ("tcp", "udp"):
            from defender_agent.config import ConfigError

            raise ConfigError(f"detectors.{NAME}.out_protocols: {value!r}: expected tcp or udp")
    return tuple(values)


def create(ctx: Context, section: dict[str, Any], state: dict[str, Any]) -> PortScanDetector:
    return PortScanDetector(
        ctx,
        in_ports=int(section["in_ports"]),
        out_ports=int(section["out_ports"]),
        out_hosts=int(section["out_hosts"]),
        window=float(section["window"]),
        out_protocols=_protocols(list(section["out_protocols"])),
        ignore_addresses=_cidrs(
            list(section["ignore_addresses"]), f"detectors.{NAME}.ignore_addresses"
        ),
        max_keys=int(section["max_keys"]),
        max_items=int(section["max_items"]),
    )


def describe(section: dict[str, Any]) -> list[str]:
    _protocols(list(section["out_protocols"]))
    _cidrs(list(section["ignore_addresses"]), f"detectors.{NAME}.ignore_addresses")
    window = float(section["window"])

    def rule(n: int, what: str) -> str:
        return f"{what}: {n} within {window:g} s (event time)" if n > 0 else f"{what}: off"

    ignored = ", ".join(section["ignore_addresses"]) or "none"
    return [
        rule(
            int(section["in_ports"]), "PortScan in: distinct ports of this device from one source"
        ),
        rule(int(section["out_ports"]), "PortScan out: distinct ports of one host"),
        rule(int(section["out_hosts"]), "PortScan out: distinct hosts on one port"),
        f"outbound protocols counted: {', '.join(section['out_protocols']) or 'none'}",
        f"not counted: {ignored}",
    ]
