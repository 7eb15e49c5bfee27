"""Aggregation: identical events within a period become one record with a hit count.

A device runs the same programs and opens the same connections all day; writing (or
sending) each one would cost storage and bandwidth out of proportion to what it says.
As the micro agent did, events of an aggregated collector are kept in a bounded table
keyed by what makes two of them "identical", and written once per period with `count`,
`first_seen` and `last_seen`:

- `process-exec`: the same executable, command line and user;
- `connection`: the same direction, protocol, family, addresses and remote port (and
  the local port of an inbound connection: an outbound one's ephemeral port is not part
  of what it is);
- `connection-attempt`: the same protocol, family, addresses and local port (the
  remote port is the scanner's ephemeral one).

Each collector has a priority (`high`, `medium`, `low`, or `none` for no aggregation)
that maps to a period (`[aggregation] high`/`medium`/`low`, 30 min, 2 h and 24 h by
default, like the micro agent's). Detectors are not affected: they see every raw event
at once, before aggregation; only what outputs write is shaped. A full table writes its
oldest entry early (counted), never drops it; stopping the agent writes everything.
"""

from __future__ import annotations

from collections import OrderedDict

from defender_agent.model import Record, rfc3339

TYPE_CHECKING = False  # typing costs ~0.5 MiB RSS at run time; only mypy needs it
if TYPE_CHECKING:
    from typing import Any, Callable

    from defender_agent.loop import Timer

    Key = tuple[Any, ...]
    KeyFn = Callable[[dict[str, Any]], Key]

PRIORITIES = ("high", "medium", "low")


def _process_key(p: dict[str, Any]) -> Key:
    return (p.get("executable"), p.get("cmdline"), p.get("user"))


def _connection_key(p: dict[str, Any]) -> Key:
    inbound = p.get("direction") == "in"
    return (
        p.get("direction"),
        p.get("protocol"),
        p.get("family"),
        p.get("local_address"),
        p.get("local_port") if inbound else 0,
        p.get("remote_address"),
        p.get("remote_port"),
    )


def _attempt_key(p: dict[str, Any]) -> Key:
    return (
        p.get("protocol"),
        p.get("family"),
        p.get("local_address"),
        p.get("local_port"),
        p.get("remote_address"),
    )


IDENTITY: dict[str, KeyFn] = {
    "process-exec": _process_key,
    "connection": _connection_key,
    "connection-attempt": _attempt_key,
}


class _Entry:
    __slots__ = ("count", "first", "last", "record")

    def __init__(self, record: Record, when: float) -> None:
        self.record = record
        self.count = 1
        self.first = when
        self.last = when


class Aggregator:
    """The tables of every priority level, and their flush timers."""

    def __init__(
        self,
        write: Callable[[Record], None],
        periods: dict[str, float],
        sections: dict[str, str],
        max_entries: int = 256,
    ) -> None:
        self.write = write  # hands a record to the outputs
        self.periods = periods  # priority -> seconds
        self.sections = sections  # collector section -> priority (absent: not aggregated)
        self.max_entries = max_entries
        self.tables: dict[str, OrderedDict[tuple[str, Key], _Entry]] = {
            level: OrderedDict() for level in PRIORITIES
        }
        self.timers: list[Timer] = []
        self.counts = {"aggregated": 0, "written": 0, "written-early-table-full": 0}

    def start(self, call_every: Callable[[float, Callable[[], None]], Timer]) -> None:
        for level in PRIORITIES:
            if level in self.sections.values():
                self.timers.append(call_every(self.periods[level], self._flusher(level)))

    def _flusher(self, level: str) -> Callable[[], None]:
        return lambda: self.flush(level)

    def stop(self) -> None:
        for timer in self.timers:
            timer.cancel()
        for level in PRIORITIES:
            self.flush(level)

    def add(self, section: str, record: Record) -> bool:
        """Take RECORD into its table; False when it is not aggregated (write it now)."""
        level = self.sections.get(section)
        if level is None or record.type != "event":
            return False
        identity = IDENTITY.get(str(record.payload.get("event")))
        if identity is None:
            return False
        key = (str(record.payload.get("event")), identity(record.payload))
        when = record.time if record.time is not None else 0.0
        table = self.tables[level]
        entry = table.get(key)
        if entry is not None:
            entry.count += 1
            entry.first = min(entry.first, when)
            entry.last = max(entry.last, when)
            self.counts["aggregated"] += 1
            return True
        if len(table) >= self.max_entries:
            _key, oldest = table.popitem(last=False)
            self.counts["written-early-table-full"] += 1
            self._write(oldest)
        table[key] = _Entry(record, when)
        return True

    def flush(self, level: str) -> None:
        table = self.tables[level]
        while table:
            _key, entry = table.popitem(last=False)
            self._write(entry)

    def _write(self, entry: _Entry) -> None:
        record = entry.record
        payload = dict(
            record.payload,
            count=entry.count,
            first_seen=rfc3339(entry.first),
            last_seen=rfc3339(entry.last),
        )
        self.counts["written"] += 1
        self.write(Record(record.type, payload, entry.first, record.observed))

    def statistics(self) -> dict[str, int]:
        return {**self.counts, **{f"{lv}-entries": len(t) for lv, t in self.tables.items()}}
