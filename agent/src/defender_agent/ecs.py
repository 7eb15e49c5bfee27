"""Records in Elastic Common Schema (ECS) field names, for outputs with `format = "ecs"`.

Filebeat, Fluent Bit, Vector and Logstash ingest these without a parser of their own:
`@timestamp`, `event.kind/category/type/action`, `source.*`, `destination.*`, `user.name`,
`process.*`, `host.*`, `rule.name`, `event.severity`. The record's own payload rides
along unchanged under `defender.payload` (a custom field set, outside ECS names), so
nothing a `defender/1` reader gets is lost. docs/events.md lists every field; the test
checks each name and type against the ECS definitions (agent/tests/data/ecs_fields.csv).

Untrusted strings (user names, command lines) are copied as the collectors capped them;
an address goes to `*.ip` only when it parses as one (ECS `ip` fields reject anything
else), to `*.address` always.
"""

from __future__ import annotations

import json

from defender_agent import __version__
from defender_agent.linux import inet
from defender_agent.model import SCHEMA, rfc3339

TYPE_CHECKING = False  # typing costs ~0.5 MiB RSS at run time; only mypy needs it
if TYPE_CHECKING:
    from typing import Any

    from defender_agent.model import Record

ECS_VERSION = "8.17.0"

# Alert severities as event.severity numbers: Elastic Security's rule severity scale
# (low 21, medium 47, high 73, critical 99).
SEVERITY = {"low": 21, "medium": 47, "high": 73, "critical": 99}

# payload `event` -> (event.kind, event.category, event.type, event.outcome or None)
_EVENTS: dict[str, tuple[str, list[str], list[str], str | None]] = {
    "login-failed": ("event", ["authentication"], ["start"], "failure"),
    "login": ("event", ["authentication", "session"], ["start"], "success"),
    "logout": ("event", ["session"], ["end"], None),
    "process-exec": ("event", ["process"], ["start"], None),
    "process-exit": ("event", ["process"], ["end"], None),
    "connection": ("event", ["network"], ["connection", "start"], None),
    "connection-attempt": ("event", ["network"], ["connection", "denied"], "failure"),
    "listen": ("state", ["network"], ["info"], None),
    "system-information": ("state", ["host"], ["info"], None),
}
_OTHER: dict[str, tuple[str, list[str], list[str], str | None]] = {
    "alert": ("alert", ["intrusion_detection"], ["info"], None),
    "heartbeat": ("metric", ["host"], ["info"], None),
    "statistics": ("metric", ["host"], ["info"], None),
    "recommendation": ("event", ["configuration"], ["info"], None),
}
_DIRECTION = {"in": "inbound", "out": "outbound"}


def _ip(text: Any) -> str | None:
    if not isinstance(text, str):
        return None
    try:
        inet.pton(text)
    except ValueError:
        return None
    return text


def _endpoint(address: Any, port: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(address, str) and address:
        out["address"] = address
        ip = _ip(address)
        if ip is not None:
            out["ip"] = ip
        else:
            out["domain"] = address  # sshd with UseDNS logs the client's name
    if isinstance(port, int) and not isinstance(port, bool):
        out["port"] = port
    return out


def _put(target: dict[str, Any], key: str, value: Any) -> None:
    if value is not None and value != "" and value != []:
        target[key] = value


def _process(payload: dict[str, Any]) -> dict[str, Any]:
    process: dict[str, Any] = {}
    _put(process, "pid", payload.get("pid"))
    exe = payload.get("executable")
    if isinstance(exe, str) and exe:
        process["executable"] = exe
        process["name"] = exe.rsplit("/", 1)[-1]
    elif isinstance(payload.get("service"), str):
        process["name"] = payload["service"]  # a login event: the server that logged it
    _put(process, "command_line", payload.get("cmdline"))
    _put(process, "working_directory", payload.get("cwd"))
    _put(process, "exit_code", payload.get("exit_code"))
    start = payload.get("start_time")
    if isinstance(start, (int, float)) and not isinstance(start, bool):
        process["start"] = rfc3339(float(start))
    parent: dict[str, Any] = {}
    _put(parent, "pid", payload.get("ppid"))
    _put(parent, "executable", payload.get("parent_executable"))
    _put(parent, "command_line", payload.get("parent_cmdline"))
    if parent:
        process["parent"] = parent
    return process


def _network(payload: dict[str, Any], doc: dict[str, Any]) -> None:
    """source/destination by who opened it: the remote end of an inbound connection is
    the source, the local end of an outbound one."""
    remote = _endpoint(payload.get("remote_address"), payload.get("remote_port"))
    local = _endpoint(
        payload.get("local_address", payload.get("address")),
        payload.get("local_port", payload.get("port")),
    )
    direction = payload.get("direction")
    if payload.get("event") == "connection-attempt":
        direction = "in"
    if direction == "out":
        src, dst = local, remote
    else:
        src, dst = remote, local
    if src:
        doc["source"] = src
    if dst:
        doc["destination"] = dst
    network: dict[str, Any] = {}
    _put(network, "transport", payload.get("protocol"))
    family = payload.get("family")
    if family in (4, 6):
        network["type"] = f"ipv{family}"
    if isinstance(direction, str):
        network["direction"] = _DIRECTION.get(direction, "unknown")
    if network:
        doc["network"] = network
    if isinstance(payload.get("interface"), str):
        doc["observer"] = {"ingress": {"interface": {"name": payload["interface"]}}}


def _host(payload: dict[str, Any], device_id: str, hostname: str) -> dict[str, Any]:
    host: dict[str, Any] = {"id": device_id, "name": hostname, "hostname": hostname}
    if payload.get("event") != "system-information":
        return host
    _put(host, "architecture", payload.get("arch"))
    os_info: dict[str, Any] = {"type": "linux", "family": "linux"}
    _put(os_info, "kernel", payload.get("kernel"))
    raw_os = payload.get("os")
    if isinstance(raw_os, dict):
        _put(os_info, "platform", raw_os.get("id"))
        _put(os_info, "name", raw_os.get("name"))
        _put(os_info, "version", raw_os.get("version"))
        _put(os_info, "full", raw_os.get("pretty_name"))
    host["os"] = os_info
    ips: list[str] = []
    macs: list[str] = []
    for nic in payload.get("nics") or []:
        if not isinstance(nic, dict):
            continue
        for key in ("ipv4", "ipv6"):
            for address in nic.get(key) or []:
                ip = _ip(str(address).split("/", 1)[0])
                if ip is not None:
                    ips.append(ip)
        mac = nic.get("mac")
        if isinstance(mac, str) and mac:
            macs.append(mac.upper().replace(":", "-"))  # ECS: RFC 7042, upper case, dashes
    _put(host, "ip", ips)
    _put(host, "mac", macs)
    return host


def to_ecs(record: Record, device_id: str, hostname: str) -> dict[str, Any]:
    """The record as one ECS document (nested objects, as Elasticsearch stores them)."""
    observed = record.observed if record.observed is not None else 0.0
    when = record.time if record.time is not None else observed
    payload = record.payload
    action = str(payload.get("event") or payload.get("name") or record.type)
    if record.type == "event":
        kind, category, types, outcome = _EVENTS.get(action, ("event", [], ["info"], None))
    else:
        kind, category, types, outcome = _OTHER[record.type]
    event: dict[str, Any] = {
        "kind": kind,
        "type": types,
        "action": action,
        "module": "defender",
        "dataset": f"defender.{record.type}",
        "created": rfc3339(observed),
    }
    if category:
        event["category"] = category
    if outcome is not None:
        event["outcome"] = outcome
    doc: dict[str, Any] = {
        "@timestamp": rfc3339(when),
        "ecs": {"version": ECS_VERSION},
        "event": event,
        "host": _host(payload, device_id, hostname),
        "agent": {"type": "defender-agent", "version": __version__},
    }
    if record.type in ("event", "alert"):
        _fields(record.type, payload, doc, event)
    doc["defender"] = {"schema": SCHEMA, "type": record.type, "payload": payload}
    return doc


def _fields(kind: str, payload: dict[str, Any], doc: dict[str, Any], event: dict[str, Any]) -> None:
    """The ECS fields of an event or an alert: both carry the same payload key names."""
    if kind == "alert":
        severity = payload.get("severity")
        if severity in SEVERITY:
            event["severity"] = SEVERITY[severity]
        rule: dict[str, Any] = {}
        _put(rule, "name", payload.get("name"))
        _put(rule, "description", payload.get("description"))
        _put(rule, "category", payload.get("rule"))  # a custom rule's type
        doc["rule"] = rule
        _put(doc, "message", payload.get("description"))
    for key, field in (("first_seen", "start"), ("last_seen", "end")):
        _put(event, field, payload.get(key))
    if any(k in payload for k in ("remote_address", "local_address", "direction")):
        _network(payload, doc)
    elif isinstance(payload.get("source"), str):
        doc["source"] = _endpoint(payload["source"], payload.get("port"))
    user = payload.get("user")
    if isinstance(user, str) and user:
        doc["user"] = {"name": user}
    if isinstance(payload.get("uid"), int):
        doc.setdefault("user", {})["id"] = str(payload["uid"])
    if isinstance(payload.get("euid"), int) and payload.get("euid") != payload.get("uid"):
        doc.setdefault("user", {})["effective"] = {"id": str(payload["euid"])}
    process = _process(payload) if payload.get("event") != "listen" else {}
    if process:
        doc["process"] = process
    related: dict[str, Any] = {}
    users = payload.get("users")
    if isinstance(users, list) and users:
        related["user"] = [str(u) for u in users]
    ips = [
        ip for ip in (_ip(doc.get(k, {}).get("address")) for k in ("source", "destination")) if ip
    ]
    _put(related, "ip", list(dict.fromkeys(ips)))
    if related:
        doc["related"] = related


def ecs_json(record: Record, device_id: str, hostname: str) -> str:
    """One line, like Record.to_json: ASCII-safe, no newline."""
    return json.dumps(to_ecs(record, device_id, hostname), separators=(",", ":"))
