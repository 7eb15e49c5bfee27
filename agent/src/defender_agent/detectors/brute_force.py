"""Brute-force detector: many failed logins from one source, and a login after them.

Per source address it keeps the times of the last `max_failures` failures. When they all
fall within `window`, one `BruteForce` alert (low) is raised; the source stays quiet
(no more alerts) until it has sent no failure for `window` seconds. A login from a source
with `max_failures` failures within `success_window` before it raises
`BruteForceSuccess` (high). Times come from the events, so tests drive it exactly.
"""

from __future__ import annotations

from collections import OrderedDict, deque

from defender_agent.model import Record, rfc3339

TYPE_CHECKING = False  # typing costs ~0.5 MiB RSS at run time; only mypy needs it
if TYPE_CHECKING:
    from typing import Any

MAX_USERS = 16  # users listed in one alert


class _Source:
    __slots__ = ("alerted", "burst", "failures", "last_seen", "service")

    def __init__(self, max_failures: int) -> None:
        self.failures: deque[tuple[float, str | None]] = deque(maxlen=max_failures)
        self.alerted = False
        self.burst = 0  # failures since the source was last quiet for a window
        self.last_seen = 0.0
        self.service = ""


class BruteForceDetector:
    name = "brute_force"

    def __init__(
        self,
        max_failures: int = 5,
        window: float = 60.0,
        success_window: float = 600.0,
        max_sources: int = 4096,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self.success_window = success_window
        self.max_sources = max_sources
        self._sources: OrderedDict[str, _Source] = OrderedDict()
        self._now = 0.0
        self.counts = {"failures": 0, "alerts": 0, "success_alerts": 0, "evicted": 0}

    def statistics(self) -> dict[str, int]:
        return {**self.counts, "tracked": len(self._sources)}

    def process(self, record: Record) -> list[Record]:
        payload = record.payload
        event = payload.get("event")
        if event not in ("login-failed", "login"):
            return []
        # never let time run backwards (clock steps): failures stay ordered
        self._now = now = max(self._now, record.time)
        service = str(payload.get("service") or "unknown")
        source = payload.get("source")
        key = str(source) if source else f"{service}/local"
        if event == "login-failed":
            return self._failure(key, source, service, payload.get("user"), now)
        return self._success(key, source, service, payload.get("user"), now)

    def _state(self, key: str) -> _Source:
        state = self._sources.get(key)
        if state is None:
            state = self._sources[key] = _Source(self.max_failures)
            while len(self._sources) > self.max_sources:
                self._sources.popitem(last=False)
                self.counts["evicted"] += 1
        else:
            self._sources.move_to_end(key)
        return state

    def _failure(self, key: str, source: Any, service: str, user: Any, now: float) -> list[Record]:
        self.counts["failures"] += 1
        state = self._state(key)
        if now - state.last_seen > self.window:
            state.alerted = False  # quiet for a whole window: a new burst may alert again
            state.burst = 0
        state.burst += 1
        state.failures.append((now, str(user) if user is not None else None))
        state.last_seen = now
        state.service = service
        if state.alerted or len(state.failures) < self.max_failures:
            return []
        first = state.failures[0][0]
        if now - first > self.window:
            return []
        state.alerted = True
        self.counts["alerts"] += 1
        users = sorted({u for _t, u in state.failures if u is not None})[:MAX_USERS]
        where = source if source else f"local {service}"
        return [
            Record(
                "alert",
                {
                    "name": "BruteForce",
                    "severity": "low",
                    "description": (
                        f"{len(state.failures)} failed {service} logins from {where} within "
                        f"{now - first:.1f} s (users: {', '.join(users) or 'unknown'})"
                    ),
                    "source": source if source else None,
                    "users": users,
                    "count": len(state.failures),
                    "first_seen": rfc3339(first),
                    "last_seen": rfc3339(now),
                    "service": service,
                },
                now,
            )
        ]

    def _success(self, key: str, source: Any, service: str, user: Any, now: float) -> list[Record]:
        state = self._sources.get(key)
        if state is None or len(state.failures) < self.max_failures:
            return []
        first = state.failures[0][0]
        if now - first > self.success_window:
            return []
        self.counts["success_alerts"] += 1
        users = sorted({u for _t, u in state.failures if u is not None})[:MAX_USERS]
        count = max(state.burst, len(state.failures))
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
                    "last_seen": rfc3339(now),
                    "service": service,
                },
                now,
            )
        ]


def create(section: dict[str, Any]) -> BruteForceDetector:
    return BruteForceDetector(
        max_failures=int(section["max_failures"]),
        window=float(section["window"]),
        success_window=float(section["success_window"]),
        max_sources=int(section["max_sources"]),
    )
