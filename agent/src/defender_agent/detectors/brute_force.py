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
# What a tracked source costs in memory, measured with tracemalloc on CPython 3.11:
# a _Source with its key and list, and each remembered failure (a tuple and its float)
# without the characters of its user name. Used to keep the table under `max_bytes`.
COST_SOURCE = 400
COST_FAILURE = 120
COST_TIME = 32  # a float in the slow rule's list
MAX_RAISED = 256  # incidents remembered (and saved) so a restart never raises one twice
MAX_SAVED_SOURCES = 64  # most recently active sources whose windows survive a restart


class _Source:
    __slots__ = (
        "alerted",
        "burst",
        "cost",
        "enum_alerted",
        "failures",
        "fast_at",
        "last_seen",
        "names",
        "service",
        "slow",
        "slow_alerted",
        "touched",
    )

    def __init__(self, key: str) -> None:
        self.cost = COST_SOURCE + len(key)
        self.slow: list[float] = []  # newest `slow_max_failures` failure times, in order
        self.slow_alerted = False
        self.fast_at: float | None = None  # event time of this incident's BruteForce
        self.names: dict[str, float] = {}  # user name -> newest failure time (enumeration)
        self.enum_alerted = False
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
        max_bytes: int = 1 << 20,
        slow_max_failures: int = 10,
        slow_window: float = 600.0,
        enumeration_users: int = 5,
        enumeration_window: float = 600.0,
    ) -> None:
        self.ctx = ctx
        self.clock = ctx.clock
        self.max_failures = max_failures
        self.window = window
        self.success_window = success_window
        self.max_sources = max_sources
        self.max_bytes = max_bytes
        self.slow_max_failures = slow_max_failures
        self.slow_window = slow_window
        self.enumeration_users = enumeration_users
        self.enumeration_window = enumeration_window
        self._bytes = 0
        self._sources: OrderedDict[str, _Source] = OrderedDict()
        self._prune_timer: Timer | None = None
        # "<alert name> <source key>" -> event time of the last alert raised for it
        self._raised: OrderedDict[str, float] = OrderedDict()
        self.counts = {
            "failures": 0,
            "late": 0,
            "alerts": 0,
            "success_alerts": 0,
            "evicted": 0,
            "pruned": 0,
            "replayed": 0,
            "slow_alerts": 0,
            "slow_within_fast": 0,
            "enumeration_alerts": 0,
        }

    # --- plugin contract ----------------------------------------------------------
    def start(self) -> None:
        every = self._longest()
        self._prune_timer = self.ctx.call_every(every, self._prune)

    def stop(self) -> None:
        if self._prune_timer is not None:
            self._prune_timer.cancel()

    def save_state(self) -> dict[str, Any]:
        """The incidents already raised (after a crash the agent re-reads up to a second
        of input, and must not raise their alerts again), and the windows of the most
        recently active sources: an attacker's count must not start again at zero
        because the agent restarted (a slow attacker's ten failures take five minutes)."""
        sources = []
        for key in list(reversed(self._sources))[:MAX_SAVED_SOURCES]:
            st = self._sources[key]
            sources.append(
                [
                    key,
                    st.service,
                    st.last_seen,
                    st.burst,
                    [st.alerted, st.slow_alerted, st.enum_alerted],
                    st.fast_at,
                    [[t, u] for t, u in st.failures],
                    list(st.slow),
                    [[n, t] for n, t in st.names.items()],
                ]
            )
        return {
            "raised": [[key, when] for key, when in self._raised.items()],
            "sources": sources[::-1],  # oldest first: restored in activity order
        }

    def restore(self, state: dict[str, Any]) -> None:
        raised = state.get("raised")
        if isinstance(raised, list):
            for item in raised[-MAX_RAISED:]:
                if (
                    isinstance(item, list)
                    and len(item) == 2
                    and isinstance(item[0], str)
                    and isinstance(item[1], (int, float))
                ):
                    self._remember(item[0], float(item[1]))
        sources = state.get("sources")
        if isinstance(sources, list):
            for item in sources[-MAX_SAVED_SOURCES:]:
                try:
                    self._restore_source(item)
                except (TypeError, ValueError, IndexError, KeyError):
                    continue  # a damaged entry: that source starts afresh

    def _restore_source(self, item: Any) -> None:
        key, service, last_seen, burst, flags, fast_at, failures, slow, names = item
        if not isinstance(key, str) or not isinstance(service, str) or len(key) > 300:
            return
        st = _Source(key)
        st.service = service[:64]
        st.last_seen = float(last_seen)
        st.burst = int(burst)
        st.alerted, st.slow_alerted, st.enum_alerted = (bool(f) for f in flags[:3])
        st.fast_at = None if fast_at is None else float(fast_at)
        for t, u in failures[-self.max_failures :]:
            user = None if u is None else str(u)[:256]
            st.failures.append((float(t), user))
            st.cost += COST_FAILURE + (len(user) if user else 0)
        st.failures.sort(key=lambda f: f[0])
        st.slow = sorted(float(t) for t in slow[-max(self.slow_max_failures, 0) :])
        st.cost += COST_TIME * len(st.slow)
        for n, t in names[-max(self.enumeration_users, 0) :]:
            st.names[str(n)[:256]] = float(t)
            st.cost += COST_FAILURE + len(str(n)[:256])
        st.touched = self.clock.monotonic()
        self._forget(key)
        self._sources[key] = st
        self._bytes += st.cost
        self._bound()

    def _remember(self, incident: str, when: float) -> None:
        self._raised[incident] = when
        self._raised.move_to_end(incident)
        while len(self._raised) > MAX_RAISED:
            self._raised.popitem(last=False)

    def statistics(self) -> dict[str, int]:
        return {**self.counts, "tracked": len(self._sources), "bytes": self._bytes}

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
            state = self._sources[key] = _Source(key)
            self._bytes += state.cost
        else:
            self._sources.move_to_end(key)
        return state

    def _forget(self, key: str) -> None:
        state = self._sources.pop(key, None)
        if state is not None:
            self._bytes -= state.cost

    def _bound(self) -> None:
        """Evict the least recently active sources beyond max_sources or max_bytes."""
        while len(self._sources) > 1 and (
            len(self._sources) > self.max_sources or self._bytes > self.max_bytes
        ):
            _key, state = self._sources.popitem(last=False)
            self._bytes -= state.cost
            self.counts["evicted"] += 1

    def _failure(self, key: str, source: Any, service: str, user: Any, when: float) -> list[Record]:
        self.counts["failures"] += 1
        if self.clock.time() - when > self.window:
            self.counts["late"] += 1  # from a backlog: it can only burst with its own kind
        state = self._state(key)
        state.touched = self.clock.monotonic()
        quiet = when - state.last_seen
        if quiet > self.window:
            state.alerted = False  # quiet for a whole window: a new burst may alert again
            state.burst = 0
        if quiet > self.slow_window:
            state.slow_alerted = False
            state.fast_at = None
        if quiet > self.enumeration_window:
            state.enum_alerted = False
        state.burst += 1
        state.last_seen = max(state.last_seen, when)
        alerts = self._slow(key, state, source, service, when)
        alerts += self._enumeration(key, state, source, service, user, when)
        return self._fast(key, state, source, service, user, when) + alerts

    def _fast(
        self, key: str, state: _Source, source: Any, service: str, user: Any, when: float
    ) -> list[Record]:
        state.service = service
        failures = state.failures
        at = len(failures)
        while at and failures[at - 1][0] > when:  # late records are rare and near the end
            at -= 1
        name = str(user) if user is not None else None
        failures.insert(at, (when, name))
        added = COST_FAILURE + (len(name) if name else 0)
        state.cost += added
        self._bytes += added
        if len(failures) > self.max_failures:
            _t, old = failures.pop(0)
            removed = COST_FAILURE + (len(old) if old else 0)
            state.cost -= removed
            self._bytes -= removed
        self._bound()
        if state.alerted or len(failures) < self.max_failures:
            return []
        first, last = failures[0][0], failures[-1][0]
        if last - first > self.window:
            return []
        state.alerted = True
        state.fast_at = last
        incident = f"BruteForce {key}"
        raised = self._raised.get(incident)
        if raised is not None and last <= raised + self.window:
            self.counts["replayed"] += 1  # raised before a restart: the same incident
            return []
        self._remember(incident, last)
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

    def _slow(
        self, key: str, state: _Source, source: Any, service: str, when: float
    ) -> list[Record]:
        """BruteForceSlow: `slow_max_failures` within `slow_window`, the attacker who keeps
        under the fast rule (one guess every 30 s never makes 5 in a minute)."""
        if self.slow_max_failures <= 0:
            return []
        times = state.slow
        at = len(times)
        while at and times[at - 1] > when:
            at -= 1
        times.insert(at, when)
        state.cost += COST_TIME
        self._bytes += COST_TIME
        if len(times) > self.slow_max_failures:
            del times[0]
            state.cost -= COST_TIME
            self._bytes -= COST_TIME
        if state.slow_alerted or len(times) < self.slow_max_failures:
            return []
        first, last = times[0], times[-1]
        if last - first > self.slow_window:
            return []
        state.slow_alerted = True
        if state.fast_at is not None and last - state.fast_at <= self.slow_window:
            self.counts["slow_within_fast"] += 1  # the fast alert already told this story
            return []
        incident = f"BruteForceSlow {key}"
        raised = self._raised.get(incident)
        if raised is not None and last <= raised + self.slow_window:
            self.counts["replayed"] += 1
            return []
        self._remember(incident, last)
        self.counts["slow_alerts"] += 1
        where = source if source else f"local {service}"
        return [
            Record(
                "alert",
                {
                    "name": "BruteForceSlow",
                    "severity": "low",
                    "description": (
                        f"{len(times)} failed {service} logins from {where} within "
                        f"{last - first:.0f} s, spaced to stay under the fast threshold"
                    ),
                    "source": source if source else None,
                    "count": len(times),
                    "first_seen": rfc3339(first),
                    "last_seen": rfc3339(last),
                    "service": service,
                },
                last,
            )
        ]

    def _enumeration(
        self, key: str, state: _Source, source: Any, service: str, user: Any, when: float
    ) -> list[Record]:
        """UserEnumeration: `enumeration_users` distinct user names from one source within
        `enumeration_window` (name lists; a person who mistypes tries one or two)."""
        if self.enumeration_users <= 0 or user is None:
            return []
        names = state.names
        name = str(user)
        if name not in names:
            state.cost += COST_FAILURE + len(name)
            self._bytes += COST_FAILURE + len(name)
        names[name] = max(names.get(name, when), when)
        horizon = when - self.enumeration_window
        for old in [n for n, t in names.items() if t < horizon]:
            del names[old]
            state.cost -= COST_FAILURE + len(old)
            self._bytes -= COST_FAILURE + len(old)
        while len(names) > self.enumeration_users:  # only the newest count; memory bounded
            oldest = min(names, key=names.__getitem__)
            del names[oldest]
            state.cost -= COST_FAILURE + len(oldest)
            self._bytes -= COST_FAILURE + len(oldest)
        if state.enum_alerted or len(names) < self.enumeration_users:
            return []
        state.enum_alerted = True
        first, last = min(names.values()), max(names.values())
        incident = f"UserEnumeration {key}"
        raised = self._raised.get(incident)
        if raised is not None and last <= raised + self.enumeration_window:
            self.counts["replayed"] += 1
            return []
        self._remember(incident, last)
        self.counts["enumeration_alerts"] += 1
        users = sorted(names)[:MAX_USERS]
        where = source if source else f"local {service}"
        return [
            Record(
                "alert",
                {
                    "name": "UserEnumeration",
                    "severity": "medium",
                    "description": (
                        f"{len(names)} user names tried over {service} from {where} within "
                        f"{last - first:.0f} s (users: {', '.join(users)})"
                    ),
                    "source": source if source else None,
                    "users": users,
                    "count": len(names),
                    "first_seen": rfc3339(first),
                    "last_seen": rfc3339(last),
                    "service": service,
                },
                last,
            )
        ]

    def _longest(self) -> float:
        return max(self.window, self.success_window, self.slow_window, self.enumeration_window)

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
        incident = f"BruteForceSuccess {key}"
        raised = self._raised.get(incident)
        if raised is not None and when <= raised:
            self.counts["replayed"] += 1
            return []
        self._remember(incident, when)
        self.counts["success_alerts"] += 1
        users = sorted({u for _t, u in state.failures if u is not None})[:MAX_USERS]
        count = max(state.burst, len(before))
        self._forget(key)  # one success alert per burst
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
        idle = self.clock.monotonic() - self._longest()
        stale = [key for key, state in self._sources.items() if state.touched < idle]
        for key in stale:
            self._forget(key)
        self.counts["pruned"] += len(stale)


def create(ctx: Context, section: dict[str, Any], state: dict[str, Any]) -> BruteForceDetector:
    detector = BruteForceDetector(
        ctx,
        max_failures=int(section["max_failures"]),
        window=float(section["window"]),
        success_window=float(section["success_window"]),
        max_sources=int(section["max_sources"]),
        max_bytes=int(section["max_bytes"]),
        slow_max_failures=int(section["slow_max_failures"]),
        slow_window=float(section["slow_window"]),
        enumeration_users=int(section["enumeration_users"]),
        enumeration_window=float(section["enumeration_window"]),
    )
    detector.restore(state)
    return detector


def describe(section: dict[str, Any]) -> list[str]:
    return [
        f"BruteForce: {section['max_failures']} failed logins from one source within "
        f"{section['window']:g} s (event time)",
        f"BruteForceSlow: {section['slow_max_failures']} failed logins from one source "
        f"within {section['slow_window']:g} s (0 = off)",
        f"UserEnumeration: {section['enumeration_users']} user names from one source "
        f"within {section['enumeration_window']:g} s (0 = off)",
        f"BruteForceSuccess: a login within {section['success_window']:g} s of such a burst",
    ]
