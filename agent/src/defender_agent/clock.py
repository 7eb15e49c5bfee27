"""The agent's clock: wall time for records, monotonic time for timers.

Everything in the agent that asks "what time is it" asks the runtime's clock, never the
`time` module (fail2ban's `MyTime` is the model). Tests and `replay` use ManualClock, so
windows of minutes are crossed by advancing a number, not by sleeping.
"""

from __future__ import annotations

import time as _time


class Clock:
    """The real clocks of the device."""

    __slots__ = ()

    virtual = False

    def time(self) -> float:
        """Wall-clock seconds since the epoch (what `observed` is stamped with)."""
        return _time.time()

    def monotonic(self) -> float:
        """Seconds that never jump (what timers and hold deadlines use)."""
        return _time.monotonic()


class ManualClock(Clock):
    """Virtual time that moves only when told to: advance() moves both clocks together,
    step() moves the wall clock alone (an NTP step, a wrong RTC corrected at boot)."""

    __slots__ = ("_mono", "_wall")

    virtual = True

    def __init__(self, start: float = 1_764_547_200.0) -> None:  # 2025-12-01T00:00:00Z
        self._wall = float(start)
        self._mono = 1000.0

    def time(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a monotonic clock cannot go back")
        self._wall += seconds
        self._mono += seconds

    def step(self, wall: float) -> None:
        self._wall = float(wall)
