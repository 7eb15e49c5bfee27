"""Brute-force detector: many failed logins from one source, and a login after them.

Windows are on event time, the time each failure happened according to its source (the
log line's stamp, the btmp record's ut_tv), never on when the agent read it: five
failures logged hours apart and read in one go after a restart are no burst, and five
logged within a minute are one however late they are read. Per source it keeps the times
of the newest `max_failures` failures, in time order (a late record is put in its
place). When they all fall within `window`, one `BruteForce` alert (low) is raised,
dated at the newest of them; the source raises no other until it has had no failure for
`window` seconds (event time). A login from a source whose `max_failures` failures before
it began within `success_window` raises `BruteForceSuccess` (high).

The runtime's clock only decides what is "late" (older than `window` when it arrived,
counted in the statistics) and when an idle source is forgotten.
"""

from __future__ import annotations

from collections import OrderedDict

from defender_agent.model import Record, rfc3339

TYPE_CHECKING = False  # typing costs ~0.5 MiB RSS at run time; only mypy needs it
if TYPE_CHECKING:
    from typing import Any

    from defender_agent.loop import Timer
    from defender_agent.plugins import Context

NAME = "brute_force"
MAX_USERS = 16  # users listed in one alert


class _Source:
    __slots__ = ("alerted", "burst", "failures", "last_seen", "service", "touched")

    def __init__(self) -> None:
        self.failures: list[tuple[float, str | None]] = []  # (event time, user), oldest first
        self.alerted = False
        self.burst = 0  # failures since the source was last quiet for a window
        self.last_seen = float("-inf")  # newest failure's event time
        self.touched = 0.0  # clock.monotonic() of the last failure: idle sources are pruned
        self.service = ""


class BruteForceDetector:
    name = NAME

    def __init__(
        self,
        ctx: Context,
        max_failures: int = 5,
        window: float = 60.0,
        success_window: float = 600.0,
        max_sources: int = 4096,
    ) -> None:
        self.ctx = ctx
        self.clock = ctx.clock
        self.max_failures = max_failures
        self.window = window
        self.success_window = success_window
        self.max_sources = max_sources
        self._sources: OrderedDict[str, _Source] = OrderedDict()
        self._prune_timer: Timer | None = None
        self.counts = {
            "failures": 0,
            "late": 0,
            "alerts": 0,
            "success_alerts": 0,
            "evicted": 0,
            "pruned": 0,
        }

    # --- plugin contract ----------------------------------------------------------
    def start(self) -> None:
        every = max(self.window, self.success_window)
        self._prune_timer = self.ctx.call_every(every, self._prune)

    def stop(self) -> None:
        if self._prune_timer is not None:
            self._prune_timer.cancel()

    def save_state(self) -> dict[str, Any]:
        return {}

    def statistics(self) -> dict[str, int]:
        return {**self.counts, "tracked": len(self._sources)}

    # --- events -------------------------------------------------------------------
    def process(self, record: Record) -> list[Record]:
        payload = record.payload
        event = payload.get("event")
        if event not in ("login-failed", "login") or record.time is None:
            return []
        service = str(payload.get("service") or "unknown")
        source = payload.get("source")
        key = str(source) if source else f"{service}/local"
        user = payload.get("user")
        if event == "login-failed":
            return self._failure(key, source, service, user, record.time)
        return self._success(key, source, service, user, record.time)

    def _state(self, key: str) -> _Source:
        state = self._sources.get(key)
        if state is None:
            state = self._sources[key] = _Source()
            while len(self._sources) > self.max_sources:
                self._sources.popitem(last=False)
                self.counts["evicted"] += 1
        else:
            self._sources.move_to_end(key)
        return state

    def _failure(self, key: str, source: Any, service: str, user: Any, when: float) -> list[Record]:
        self.counts["failures"] += 1
        if self.clock.time() - when > self.window:
            self.counts["late"] += 1  # from a backlog: it can only burst with its own kind
        state = self._state(key)
        state.touched = self.clock.monotonic()
        if when - state.last_seen > self.window:
            state.alerted = False  # quiet for a whole window: a new burst may alert again
            state.burst = 0
        state.burst += 1
        state.last_seen = max(state.last_seen, when)
        state.service = service
        failures = state.failures
        at = len(failures)
        while at and failures[at - 1][0] > when:  # late records are rare and near the end
            at -= 1
        failures.insert(at, (when, str(user) if user is not None else None))
        if len(failures) > self.max_failures:
            del failures[0]
        if state.alerted or len(failures) < self.max_failures:
            return []
        first, last = failures[0][0], failures[-1][0]
        if last - first > self.window:
            return []
        state.alerted = True
        self.counts["alerts"] += 1
        users = sorted({u for _t, u in failures if u is not None})[:MAX_USERS]
        where = source if source else f"local {service}"
        return [
            Record(
                "alert",
                {
                    "name": "BruteForce",
                    "severity": "low",
                    "description": (
                        f"{len(failures)} failed {service} logins from {where} within "
                        f"{last - first:.1f} s (users: {', '.join(users) or 'unknown'})"
                    ),
                    "source": source if source else None,
                    "users": users,
                    "count": len(failures),
                    "first_seen": rfc3339(first),
                    "last_seen": rfc3339(last),
                    "service": service,
                },
                last,
            )
        ]

    def _success(self, key: str, source: Any, service: str, user: Any, when: float) -> list[Record]:
        state = self._sources.get(key)
        if state is None:
            return []
        before = [t for t, _u in state.failures if t <= when]
        if len(before) < self.max_failures:
            return []
        first = before[-self.max_failures]
        if when - first > self.success_window:
            return []
        self.counts["success_alerts"] += 1
        users = sorted({u for _t, u in state.failures if u is not None})[:MAX_USERS]
        count = max(state.burst, len(before))
        del self._sources[key]  # one success alert per burst
        where = source if source else f"local {service}"
        return [
            Record(
                "alert",
                {
                    "name": "BruteForceSuccess",
                    "severity": "high",
                    "description": (
                        f"{user} logged in over {service} from {where} after {count} failed logins"
                    ),
                    "source": source if source else None,
                    "user": user,
                    "users": users,
                    "count": count,
                    "first_seen": rfc3339(first),
                    "last_seen": rfc3339(when),
                    "service": service,
                },
                when,
            )
        ]

    def _prune(self) -> None:
        """Forget sources idle (by the clock) longer than either window: nothing they
        remember can still join a burst or a BruteForceSuccess from live events."""
        idle = self.clock.monotonic() - max(self.window, self.success_window)
        stale = [key for key, state in self._sources.items() if state.touched < idle]
        for key in stale:
            del self._sources[key]
        self.counts["pruned"] += len(stale)


def create(ctx: Context, section: dict[str, Any], state: dict[str, Any]) -> BruteForceDetector:
    return BruteForceDetector(
        ctx,
        max_failures=int(section["max_failures"]),
        window=float(section["window"]),
        success_window=float(section["success_window"]),
        max_sources=int(section["max_sources"]),
    )


def describe(section: dict[str, Any]) -> list[str]:
    return [
        f"BruteForce: {section['max_failures']} failed logins from one source within "
        f"{section['window']:g} s (event time)",
        f"BruteForceSuccess: a login within {section['success_window']:g} s of such a burst",
    ]
