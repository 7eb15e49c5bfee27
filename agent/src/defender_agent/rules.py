"""Custom alert rules: their types, their fields, and the check of each rule in agent.toml.

A rule is a table in `[[detectors.custom.rules]]` with a `name`, a `type`, a `severity`
(low/medium/high, default medium), an optional `description`, and the fields of its
type (RULE_TYPES). `parse()` turns the list from the TOML file into checked rules or
raises ValueError with one line naming the rule and what is wrong; config.py reports it
like any other bad key. The custom detector (detectors/custom.py) applies them.
"""

from __future__ import annotations

from defender_agent.linux import inet

TYPE_CHECKING = False  # typing costs ~0.5 MiB RSS at run time; only mypy needs it
if TYPE_CHECKING:
    from typing import Any

SEVERITIES = ("low", "medium", "high")
MAX_RULES = 256
MAX_ITEMS = 1024  # entries of one allow/deny list
MAX_WINDOW = 86400.0

# type -> (required fields, optional fields, what it watches)
RULE_TYPES: dict[str, tuple[tuple[str, ...], tuple[str, ...], str]] = {
    "process-not-allowed": (
        ("allow",),
        (),
        "a program runs whose executable matches none of `allow` (paths or globs)",
    ),
    "process-denied": (
        ("deny",),
        (),
        "a program runs whose executable matches one of `deny` (paths or globs)",
    ),
    "outbound-not-allowed": (
        ("allow_cidrs",),
        ("ports",),
        "an outbound connection goes to an address outside `allow_cidrs`",
    ),
    "outbound-denied": (
        ("deny_cidrs",),
        ("ports",),
        "an outbound connection goes to an address inside `deny_cidrs`",
    ),
    "inbound-not-allowed": (
        ("allow_cidrs",),
        ("ports",),
        "an inbound connection comes from an address outside `allow_cidrs`",
    ),
    "connections-out-of-range": (
        ("window",),
        ("min", "max"),
        "the number of new connections in each `window` seconds is below `min` or above `max`",
    ),
    "local-login-failures-out-of-range": (
        ("window",),
        ("min", "max"),
        "failed local logins (console, serial, login(1)) in each `window` seconds are "
        "below `min` or above `max`",
    ),
    "login-not-allowed": (
        ("allow_users",),
        (),
        "a user logs in who is not in `allow_users`",
    ),
    "listen-port-not-allowed": (
        ("allow_ports",),
        (),
        "a program listens on a port not in `allow_ports` (`22`, `tcp/22`, `udp/53`)",
    ),
}
COMMON = ("name", "type", "severity", "description", "suppress")


def parse(value: Any) -> list[dict[str, Any]]:
    """The rules of agent.toml, checked and normalised. Raises ValueError (one line)."""
    if not isinstance(value, list):
        raise ValueError("expected a list of rule tables ([[detectors.custom.rules]])")
    if len(value) > MAX_RULES:
        raise ValueError(f"{len(value)} rules: at most {MAX_RULES}")
    out: list[dict[str, Any]] = []
    names: set[str] = set()
    for index, raw in enumerate(value, 1):
        if not isinstance(raw, dict):
            raise ValueError(f"rule {index}: expected a table")
        label = f"rule {index}" + (f" {raw['name']!r}" if isinstance(raw.get("name"), str) else "")
        try:
            rule = _rule(raw)
        except ValueError as exc:
            raise ValueError(f"{label}: {exc}") from None
        if rule["name"] in names:
            raise ValueError(f"{label}: the name is used by an earlier rule")
        names.add(rule["name"])
        out.append(rule)
    return out


def _rule(raw: dict[str, Any]) -> dict[str, Any]:
    kind = raw.get("type")
    if not isinstance(kind, str) or kind not in RULE_TYPES:
        raise ValueError(f"type: expected one of {', '.join(RULE_TYPES)}, got {kind!r}")
    required, optional, _doc = RULE_TYPES[kind]
    for field in raw:
        if field not in COMMON + required + optional:
            raise ValueError(f"{field}: not a field of a {kind} rule")
    for field in ("name", *required):
        if field not in raw:
            raise ValueError(f"{field}: missing")
    name = raw["name"]
    if not isinstance(name, str) or not 0 < len(name) <= 64 or not name.isprintable():
        raise ValueError("name: expected 1 to 64 printable characters")
    severity = raw.get("severity", "medium")
    if severity not in SEVERITIES:
        raise ValueError(f"severity: expected one of {', '.join(SEVERITIES)}, got {severity!r}")
    description = raw.get("description", "")
    if not isinstance(description, str) or len(description) > 500:
        raise ValueError("description: expected a string of at most 500 characters")
    rule: dict[str, Any] = {
        "name": name,
        "type": kind,
        "severity": severity,
        "description": description,
        "suppress": _number(raw, "suppress", 600.0, 0.0, MAX_WINDOW),
    }
    for field in required + optional:
        if field in raw:
            rule[field] = _FIELDS[field](raw[field], field)
    if "min" in rule and "max" in rule and rule["min"] > rule["max"]:
        raise ValueError("min is above max")
    if "window" in rule and "min" not in rule and "max" not in rule:
        raise ValueError("needs min, max or both")
    return rule


def _number(raw: dict[str, Any], field: str, default: float, low: float, high: float) -> float:
    value = raw.get(field, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise ValueError(f"{field}: expected a number, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{field}: expected {low:g} to {high:g}, got {value:g}")
    return float(value)


def _strings(value: Any, field: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{field}: expected a list of non-empty strings")
    if len(value) > MAX_ITEMS:
        raise ValueError(f"{field}: at most {MAX_ITEMS} entries")
    if any("\0" in v for v in value):
        raise ValueError(f"{field}: must not contain a NUL character")
    return list(value)


def _cidrs(value: Any, field: str) -> list[tuple[int, int, int]]:
    """CIDRs as (family, network, prefix length); a bare address is a /32 or /128."""
    out = []
    for text in _strings(value, field):
        try:
            out.append(cidr(text))
        except ValueError as exc:
            raise ValueError(f"{field}: {text!r}: {exc}") from None
    return out


def cidr(text: str) -> tuple[int, int, int]:
    address, _, length = text.partition("/")
    raw = inet.pton(address)
    family = 4 if len(raw) == 4 else 6
    bits = 32 if family == 4 else 128
    prefix = bits if not length else int(length) if length.isdigit() else -1
    if not 0 <= prefix <= bits:
        raise ValueError(f"prefix length must be 0 to {bits}")
    number = int.from_bytes(raw, "big")
    if number & ((1 << (bits - prefix)) - 1):
        raise ValueError("host bits are set (write the network address)")
    return family, number, prefix


def address_in(text: str, cidrs: list[tuple[int, int, int]]) -> bool | None:
    """Whether an address is in one of CIDRS; None when it is not an address."""
    try:
        raw = inet.pton(text)
    except ValueError:
        return None
    family = 4 if len(raw) == 4 else 6
    bits = 32 if family == 4 else 128
    number = int.from_bytes(raw, "big")
    for fam, network, prefix in cidrs:
        if fam == family and number >> (bits - prefix) == network >> (bits - prefix):
            return True
    return False


def _ports(value: Any, field: str) -> list[tuple[str, int]]:
    """Ports as (protocol or "", port): 22 and "22" match both tcp and udp."""
    if not isinstance(value, list) or len(value) > MAX_ITEMS:
        raise ValueError(f'{field}: expected a list of ports (22, "tcp/22", "udp/53")')
    out = []
    for item in value:
        proto, _, number = str(item).rpartition("/") if isinstance(item, str) else ("", "", item)
        if isinstance(number, str):
            number = int(number) if number.isdigit() else -1
        if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number <= 65535:
            raise ValueError(f"{field}: {item!r} is not a port")
        if proto not in ("", "tcp", "udp"):
            raise ValueError(f"{field}: {item!r}: protocol must be tcp or udp")
        out.append((proto, number))
    return out


def _count(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10**9:
        raise ValueError(f"{field}: expected a whole number of 0 or more, got {value!r}")
    return value


def _window(value: Any, field: str) -> float:
    return _number({field: value}, field, 0.0, 1.0, MAX_WINDOW)


_FIELDS = {
    "allow": _strings,
    "deny": _strings,
    "allow_cidrs": _cidrs,
    "deny_cidrs": _cidrs,
    "allow_users": _strings,
    "allow_ports": _ports,
    "ports": _ports,
    "min": _count,
    "max": _count,
    "window": _window,
}


def port_listed(protocol: str, port: int, ports: list[tuple[str, int]]) -> bool:
    return any(p == port and proto in ("", protocol) for proto, p in ports)
