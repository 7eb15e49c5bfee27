"""Incidents: one alert per incident, updated rather than repeated.

The threat detectors (crypto miners, botnets, port scans, reverse shells, threat lists,
download-then-run) find the same thing many times: a miner's every connection to its
pool, a scanner's every SYN. Each finding names its incident with a key the detector
chooses (the scanning source, the miner's pid and executable). The first finding of an
incident raises its alert: `id`, `name`, `severity`, `description`, `remediation`, the
evidence fields, `first_seen`, `last_seen` and `count`. Findings of the same incident
after that are counted into it; when its count has grown and `update_every` seconds of
event time have passed since it was last written, the alert is written again with the
same `id`, `update: true` and the new count, `last_seen` and evidence. An incident with no
finding for `quiet` seconds of event time is over: the next finding is a new incident
with a new id.

Time is the events' own (the detector never reads a clock), so replays and tests give
the same alerts. Memory is bounded: at most `max_incidents` are remembered, the one
seen least recently forgotten first (`incidents-forgotten` in the statistics).

Not a plugin: a detector module uses it (`detectors/` registers only plugins).
"""

from __future__ import annotations

from collections import OrderedDict

from defender_agent.model import Record, rfc3339

TYPE_CHECKING = False  # typing costs ~0.5 MiB RSS at run time; only mypy needs it
if TYPE_CHECKING:
    from typing import Any

MAX_KEY = 256  # characters of an incident key kept (keys hold attacker-chosen text)


class _Incident:
    __slots__ = ("count", "first", "id", "last", "written", "written_count")

    def __init__(self, ident: str, when: float) -> None:
        self.id = ident
        self.first = when
        self.last = when
        self.count = 1
        self.written = when  # event time the alert was last written
        self.written_count = 1


class Incidents:
    """The open incidents of one detector."""

    def __init__(
        self, quiet: float = 600.0, update_every: float = 60.0, max_incidents: int = 1024
    ) -> None:
        self.quiet = quiet
        self.update_every = update_every
        self.max_incidents = max_incidents
        self._open: OrderedDict[tuple[str, str], _Incident] = OrderedDict()
        self.counts = {"alerts": 0, "updates": 0, "findings": 0, "incidents-forgotten": 0}

    def __len__(self) -> int:
        return len(self._open)

    def is_open(self, name: str, key: str, when: float) -> bool:
        """Whether a finding at `when` would belong to an incident already raised."""
        incident = self._open.get((name, key[:MAX_KEY]))
        return incident is not None and when - incident.last <= self.quiet

    def found(
        self,
        name: str,
        key: str,
        when: float,
        severity: str,
        description: str,
        remediation: str,
        evidence: dict[str, Any],
    ) -> list[Record]:
        """A finding at event time `when`: the alert to write (a new incident, or an
        update that is due), or nothing (counted into the open incident)."""
        self.counts["findings"] += 1
        ident = (name, key[:MAX_KEY])
        incident = self._open.get(ident)
        if incident is not None and when - incident.last > self.quiet:
            incident = None  # over: this is a new one
        if incident is None:
            incident = _Incident(_make_id(name, ident[1], when), when)
            self._open[ident] = incident
            self._open.move_to_end(ident)
            while len(self._open) > self.max_incidents:
                self._open.popitem(last=False)
                self.counts["incidents-forgotten"] += 1
            self.counts["alerts"] += 1
            return [self._alert(name, incident, severity, description, remediation, evidence)]
        incident.count += 1
        incident.first = min(incident.first, when)
        incident.last = max(incident.last, when)
        self._open.move_to_end(ident)
        if incident.count > incident.written_count and when - incident.written >= self.update_every:
            incident.written = when
            incident.written_count = incident.count
            self.counts["updates"] += 1
            alert = self._alert(name, incident, severity, description, remediation, evidence)
            alert.payload["update"] = True
            return [alert]
        return []

    def prune(self, now: float) -> None:
        """Forget the incidents over by `now` (event time)."""
        over = [k for k, i in self._open.items() if now - i.last > self.quiet]
        for key in over:
            del self._open[key]

    def _alert(
        self,
        name: str,
        incident: _Incident,
        severity: str,
        description: str,
        remediation: str,
        evidence: dict[str, Any],
    ) -> Record:
        payload: dict[str, Any] = {
            "id": incident.id,
            "name": name,
            "severity": severity,
            "description": description,
            "remediation": remediation,
            **evidence,
            "count": incident.count,
            "first_seen": rfc3339(incident.first),
            "last_seen": rfc3339(incident.last),
        }
        return Record("alert", payload, incident.last)


def _make_id(name: str, key: str, when: float) -> str:
    """Stable for the same incident (name, key, first time): a replay makes the same ids."""
    digest = 0x811C9DC5  # FNV-1a, 32 bits: no module (zlib is not in every python3 split)
    for byte in f"{name}\0{key}".encode("utf-8", "backslashreplace"):
        digest = ((digest ^ byte) * 0x01000193) & 0xFFFFFFFF
    return f"{name}-{int(when * 1000):x}-{digest:08x}"
