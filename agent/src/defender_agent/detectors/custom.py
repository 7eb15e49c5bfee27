"""Custom alert rules: the device owner's own allowlists, denylists and ranges.

Each rule of `[[detectors.custom.rules]]` (checked by rules.py when the configuration
is read) watches one kind of event: programs run (process-exec), connections
(connection), logins and failed local logins (login, login-failed) and what listens
(listen snapshots). A rule raises its alert with its own name and severity. Repeats of
the same finding (the same program, address, user or port) within the rule's
`suppress` seconds of event time are counted, not raised again; a port still listening
raises once until it closes. The two counting rules count events by their event time
in each `window`, checked on the runtime clock at the end of every window, and raise
once when the count leaves [min, max] (again only after it came back).
"""

from __future__ import annotations

from collections import OrderedDict, deque

from defender_agent import rules as _rules
from defender_agent.model import Record

TYPE_CHECKING = False  # typing costs ~0.5 MiB RSS at run time; only mypy needs it
if TYPE_CHECKING:
    from typing import Any, Callable

    from defender_agent.loop import Timer
    from defender_agent.plugins import Context

NAME = "custom"
MAX_SUPPRESSED = 4096  # (rule, finding) pairs remembered for suppression
MAX_COUNTED = 100_000  # event times one counting rule keeps


class _Counter:
    """A counting rule's recent event times (sorted) and whether it is out of range."""

    __slots__ = ("keep", "out", "rule", "times")

    def __init__(self, rule: dict[str, Any]) -> None:
        self.rule = rule
        self.keep = MAX_COUNTED  # beyond it the count reads MAX_COUNTED (and is counted)
        self.times: deque[float] = deque()
        self.out = False

    def add(self, when: float) -> bool:
        """Remember an event time; False when the oldest had to be forgotten early."""
        horizon = when - self.rule["window"]
        while self.times and self.times[0] < horizon:
            self.times.popleft()
        self.times.append(when)
        if len(self.times) > self.keep:
            self.times.popleft()
            return False
        return True


class CustomRules:
    name = NAME

    def __init__(self, ctx: Context, rules: list[dict[str, Any]]) -> None:
        self.ctx = ctx
        self.rules = rules
        self.by_type: dict[str, list[dict[str, Any]]] = {}
        for rule in rules:
            self.by_type.setdefault(rule["type"], []).append(rule)
        self.counters = [
            _Counter(r)
            for r in rules
            if r["type"] in ("connections-out-of-range", "local-login-failures-out-of-range")
        ]
        self._suppressed: OrderedDict[tuple[str, Any], float] = OrderedDict()
        self._listening: dict[str, set[tuple[str, int]]] = {}  # rule -> ports alerted on
        self._timers: list[Timer] = []
        self._match: Callable[[str, str], bool] | None = None
        self.counts: dict[str, int] = {"alerts": 0, "suppressed": 0, "unknown-executable": 0}

    # --- plugin contract ----------------------------------------------------------
    def start(self) -> None:
        for counter in self.counters:
            self._timers.append(self.ctx.call_every(counter.rule["window"], self._checker(counter)))

    def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()

    def save_state(self) -> dict[str, Any]:
        return {}

    def statistics(self) -> dict[str, int]:
        return dict(self.counts)

    # --- events -------------------------------------------------------------------
    def process(self, record: Record) -> list[Record]:
        payload = record.payload
        event = payload.get("event")
        when = record.time if record.time is not None else self.ctx.clock.time()
        if event == "process-exec":
            return self._process(payload, when)
        if event == "connection":
            return self._connection(payload, when)
        if event == "login":
            return self._login(payload, when)
        if event == "login-failed":
            if payload.get("service") == "login" or not payload.get("source"):
                self._count_event("local-login-failures-out-of-range", when)
            return []
        if event == "listen":
            return self._listen(payload, when)
        return []

    def _process(self, payload: dict[str, Any], when: float) -> list[Record]:
        exe = payload.get("executable")
        rules = self.by_type.get("process-not-allowed", []) + self.by_type.get("process-denied", [])
        if not rules:
            return []
        if not isinstance(exe, str) or not exe:
            self.counts["unknown-executable"] += 1
            return []
        out = []
        for rule in rules:
            if rule["type"] == "process-not-allowed":
                hit = not any(self._glob(exe, p) for p in rule["allow"])
            else:
                hit = any(self._glob(exe, p) for p in rule["deny"])
            if hit:
                detail = {
                    "executable": exe,
                    "cmdline": payload.get("cmdline"),
                    "pid": payload.get("pid"),
                    "user": payload.get("user"),
                }
                verb = "is not allowed" if rule["type"] == "process-not-allowed" else "is denied"
                out += self._raise(rule, exe, when, f"{exe} ran and {verb}", detail)
        return out

    def _connection(self, payload: dict[str, Any], when: float) -> list[Record]:
        self._count_event("connections-out-of-range", when)
        direction = payload.get("direction")
        remote = payload.get("remote_address")
        if direction not in ("in", "out") or not isinstance(remote, str):
            return []
        protocol = str(payload.get("protocol") or "")
        port = payload.get("remote_port") if direction == "out" else payload.get("local_port")
        types = (
            ("outbound-not-allowed", "outbound-denied")
            if direction == "out"
            else ("inbound-not-allowed",)
        )
        out = []
        for kind in types:
            for rule in self.by_type.get(kind, []):
                if "ports" in rule and not (
                    isinstance(port, int) and _rules.port_listed(protocol, port, rule["ports"])
                ):
                    continue
                if kind == "outbound-denied":
                    inside = _rules.address_in(remote, rule["deny_cidrs"])
                    hit = inside is True
                else:
                    inside = _rules.address_in(remote, rule["allow_cidrs"])
                    hit = inside is False
                if not hit:
                    continue
                where = "to" if direction == "out" else "from"
                detail = {
                    "direction": direction,
                    "protocol": protocol,
                    "remote_address": remote,
                    "remote_port": payload.get("remote_port"),
                    "local_port": payload.get("local_port"),
                    "pid": payload.get("pid"),
                    "executable": payload.get("executable"),
                }
                text = f"{protocol} connection {where} {remote} port {port}"
                out += self._raise(rule, remote, when, text, detail)
        return out

    def _login(self, payload: dict[str, Any], when: float) -> list[Record]:
        user = payload.get("user")
        out = []
        for rule in self.by_type.get("login-not-allowed", []):
            if user not in rule["allow_users"]:
                detail = {
                    "user": user,
                    "source": payload.get("source"),
                    "service": payload.get("service"),
                }
                out += self._raise(rule, user, when, f"{user} logged in", detail)
        return out

    def _listen(self, payload: dict[str, Any], when: float) -> list[Record]:
        sockets = payload.get("sockets")
        if not isinstance(sockets, list):
            return []
        out = []
        for rule in self.by_type.get("listen-port-not-allowed", []):
            alerted = self._listening.setdefault(rule["name"], set())
            now: set[tuple[str, int]] = set()
            for sock in sockets:
                if not isinstance(sock, dict):
                    continue
                proto, port = str(sock.get("protocol") or ""), sock.get("port")
                if not isinstance(port, int) or _rules.port_listed(
                    proto, port, rule["allow_ports"]
                ):
                    continue
                now.add((proto, port))
                if (proto, port) in alerted:
                    continue
                detail = {
                    "protocol": proto,
                    "address": sock.get("address"),
                    "port": port,
                    "pid": sock.get("pid"),
                    "executable": sock.get("executable"),
                }
                text = f"{sock.get('executable') or 'a program'} listens on {proto} port {port}"
                out += self._raise(rule, None, when, text, detail)
            self._listening[rule["name"]] = now  # a port that closed may alert again
        return out

    # --- counting rules -------------------------------------------------------------
    def _count_event(self, kind: str, when: float) -> None:
        for counter in self.counters:
            if counter.rule["type"] == kind and not counter.add(when):
                self.counts["count-capped"] = self.counts.get("count-capped", 0) + 1

    def _checker(self, counter: _Counter) -> Callable[[], None]:
        return lambda: self._check(counter)

    def _check(self, counter: _Counter) -> None:
        rule = counter.rule
        now = self.ctx.clock.time()
        start = now - rule["window"]
        count = sum(1 for t in counter.times if start <= t <= now)
        low, high = rule.get("min"), rule.get("max")
        outside = (low is not None and count < low) or (high is not None and count > high)
        if not outside:
            counter.out = False
            return
        if counter.out:
            return
        counter.out = True
        bounds = f"[{'' if low is None else low}, {'' if high is None else high}]"
        what = (
            "connections" if rule["type"] == "connections-out-of-range" else "failed local logins"
        )
        detail = {"count": count, "min": low, "max": high, "window": rule["window"]}
        text = f"{count} {what} in {rule['window']:g} s, outside {bounds}"
        for alert in self._raise(rule, None, now, text, detail):
            self.ctx.emit(alert)

    # --- alerts -------------------------------------------------------------------
    def _raise(
        self, rule: dict[str, Any], finding: Any, when: float, text: str, detail: dict[str, Any]
    ) -> list[Record]:
        if finding is not None:
            key = (rule["name"], finding)
            last = self._suppressed.get(key)
            if last is not None and 0 <= when - last < rule["suppress"]:
                self.counts["suppressed"] += 1
                return []
            self._suppressed[key] = when
            self._suppressed.move_to_end(key)
            while len(self._suppressed) > MAX_SUPPRESSED:
                self._suppressed.popitem(last=False)
        self.counts["alerts"] += 1
        payload = {
            "name": rule["name"],
            "rule": rule["type"],
            "severity": rule["severity"],
            "description": rule["description"] or text,
            "finding": text,
            **detail,
        }
        return [Record("alert", payload, when)]

    def _glob(self, path: str, pattern: str) -> bool:
        if not any(c in pattern for c in "*?["):
            return path == pattern
        if self._match is None:
            from fnmatch import fnmatchcase  # only when a rule has a glob

            self._match = fnmatchcase
        return self._match(path, pattern)


def create(ctx: Context, section: dict[str, Any], state: dict[str, Any]) -> CustomRules:
    return CustomRules(ctx, section["rules"])


def describe(section: dict[str, Any]) -> list[str]:
    rules = section["rules"]
    if not rules:
        return ["no rules (add [[detectors.custom.rules]] tables: docs/alerts.md)"]
    lines = []
    for rule in rules:
        fields = [
            f"{k} {len(v) if isinstance(v, list) else v}"
            for k, v in rule.items()
            if k not in ("name", "type", "severity", "description")
        ]
        lines.append(
            f"rule {rule['name']!r}: {rule['type']}, {rule['severity']}; {', '.join(fields)}"
        )
    return lines
