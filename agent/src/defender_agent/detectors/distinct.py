"""Distinct things per key within a window of event time, in bounded memory.

The scan detectors ask one question many times a second: how many distinct ports has
this source probed, how many distinct hosts has this process tried on port 23, within
the last `window` seconds? Per key the newest sighting of each item is kept in order of
sighting, so the ones that left the window fall off the front. A key keeps at most
`keep` items (the caller passes its threshold): the newest `keep` distinct items tell
whether `keep` of them fall within the window, and a flood of items costs no more.

Memory is bounded twice: at most `max_keys` keys and `max_items` items in all; beyond
either the least recently active key is forgotten first (`keys-evicted` in counts).
Time is the events' own: a sighting older than its key's window when it arrives adds
nothing (`late`), and prune() forgets keys idle for a window of the newest event time.

DistinctDetector is the plugin contract the scan detectors (port_scan, botnet) share
around their window: one DistinctWindow and one Incidents, a timer that prunes both on
the newest event time, and the statistics of both beside the detector's own counts.

Not a plugin: detector modules use it (`detectors/` registers only plugins).
"""

from __future__ import annotations

from collections import OrderedDict

from defender_agent.detectors.incidents import Incidents

TYPE_CHECKING = False  # typing costs ~0.5 MiB RSS at run time; only mypy needs it
if TYPE_CHECKING:
    from typing import Any

    from defender_agent.loop import Timer
    from defender_agent.plugins import Context

QUIET = 600.0  # seconds without a finding that end a scan incident
UPDATE_EVERY = 60.0  # seconds between updates of an open scan incident's alert
MAX_INCIDENTS = 256


class _Seen:
    __slots__ = ("items", "newest")

    def __init__(self) -> None:
        self.items: dict[Any, float] = {}  # item -> newest sighting, oldest first
        self.newest = float("-inf")


class DistinctWindow:
    """Distinct items per key within `window` seconds of event time."""

    def __init__(self, window: float, max_keys: int = 1024, max_items: int = 8192) -> None:
        self.window = window
        self.max_keys = max_keys
        self.max_items = max_items
        self._keys: OrderedDict[str, _Seen] = OrderedDict()
        self._items = 0
        self._newest = float("-inf")
        self.counts = {"keys-evicted": 0, "late": 0, "pruned": 0}

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def newest(self) -> float:
        """The newest event time added (-inf before the first)."""
        return self._newest

    @property
    def items(self) -> int:
        """Items remembered over all keys."""
        return self._items

    def add(self, key: str, item: Any, when: float, keep: int) -> int:
        """Note a sighting of `item` for `key` at `when`; return how many distinct items
        the key has within the window ending at its newest sighting (at most `keep`)."""
        seen = self._keys.get(key)
        if seen is None:
            seen = self._keys[key] = _Seen()
        else:
            self._keys.move_to_end(key)
        items = seen.items
        if when < seen.newest - self.window:
            self.counts["late"] += 1  # older than the window: cannot join it
            return len(items)
        before = items.pop(item, None)
        if before is not None:
            self._items -= 1
            when = max(when, before)
        items[item] = when
        self._items += 1
        if when > seen.newest:
            seen.newest = when
            self._newest = max(self._newest, when)
        horizon = seen.newest - self.window
        while items:
            first = next(iter(items))
            if items[first] >= horizon and len(items) <= keep:
                break
            del items[first]
            self._items -= 1
        while len(self._keys) > 1 and (
            len(self._keys) > self.max_keys or self._items > self.max_items
        ):
            oldest = next(iter(self._keys))
            if oldest == key:  # the key being added to is the newest: never the victim
                break
            self._items -= len(self._keys.pop(oldest).items)
            self.counts["keys-evicted"] += 1
        return len(items)

    def seen(self, key: str) -> list[tuple[Any, float]]:
        """The key's items within its window, oldest sighting first."""
        entry = self._keys.get(key)
        return list(entry.items.items()) if entry is not None else []

    def forget(self, key: str) -> None:
        entry = self._keys.pop(key, None)
        if entry is not None:
            self._items -= len(entry.items)

    def prune(self) -> None:
        """Forget the keys with no sighting within a window of the newest event time."""
        horizon = self._newest - self.window
        idle = [k for k, s in self._keys.items() if s.newest < horizon]
        for key in idle:
            self.forget(key)
        self.counts["pruned"] += len(idle)


class DistinctDetector:
    """start, stop, save_state and statistics of a detector that counts distinct items
    per key in a DistinctWindow (`seen`) and raises its alerts through Incidents
    (`incidents`); the subclass fills `counts` and reads the events."""

    def __init__(self, ctx: Context, window: float, max_keys: int, max_items: int) -> None:
        self.ctx = ctx
        self.seen = DistinctWindow(window, max_keys, max_items)
        self.incidents = Incidents(
            quiet=QUIET, update_every=UPDATE_EVERY, max_incidents=MAX_INCIDENTS
        )
        self._timer: Timer | None = None
        self.counts: dict[str, int] = {}

    def start(self) -> None:
        self._timer = self.ctx.call_every(max(self.seen.window, 60.0), self._prune)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def save_state(self) -> dict[str, Any]:
        return {}

    def statistics(self) -> dict[str, int]:
        return {
            **self.counts,
            **self.seen.counts,
            **self.incidents.counts,
            "tracked": len(self.seen),
            "items": self.seen.items,
            "open-incidents": len(self.incidents),
        }

    def _prune(self) -> None:
        self.seen.prune()
        self.incidents.prune(self.seen.newest)
