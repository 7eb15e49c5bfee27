"""Records: the one JSON-lines format every output writes and `alerts` reads.

A record has two times. `time` is when the thing it describes happened, taken from its
source (the log line's timestamp, the utmp record's tv_sec); `observed` is when the agent
saw it. The pipeline stamps `observed` on emit, and `time` too when the source had none.

Plain classes with __slots__ instead of dataclasses: importing dataclasses pulls in
`inspect`, which costs about 2 MiB of RSS on a small device.
"""

from __future__ import annotations

import json
import time as _time

from defender_agent import __version__

TYPE_CHECKING = False  # typing costs ~0.5 MiB RSS at run time; only mypy needs it
if TYPE_CHECKING:
    from typing import Any

SCHEMA = "defender/1"
RECORD_TYPES = ("event", "alert", "recommendation", "statistics", "heartbeat")


def rfc3339(ts: float) -> str:
    """UTC, millisecond precision, 'Z' suffix: sorts the same as a string and as a time."""
    whole = int(ts // 1)
    millis = round((ts - whole) * 1000)
    if millis >= 1000:
        whole += 1
        millis -= 1000
    tm = _time.gmtime(whole)
    return (
        f"{tm.tm_year:04d}-{tm.tm_mon:02d}-{tm.tm_mday:02d}T"
        f"{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d}.{millis:03d}Z"
    )


class Record:
    """One event, alert, recommendation, statistics or heartbeat record."""

    __slots__ = ("observed", "payload", "time", "type")

    def __init__(
        self,
        type: str,
        payload: dict[str, Any],
        time: float | None = None,
        observed: float | None = None,
    ) -> None:
        if type not in RECORD_TYPES:
            raise ValueError(f"unknown record type {type!r}")
        self.type = type
        self.payload = payload
        self.time = time
        self.observed = observed

    def to_dict(self, device_id: str) -> dict[str, Any]:
        observed = _time.time() if self.observed is None else self.observed
        return {
            "schema": SCHEMA,
            "type": self.type,
            "device_id": device_id,
            "agent_version": __version__,
            "time": rfc3339(observed if self.time is None else self.time),
            "observed": rfc3339(observed),
            "payload": self.payload,
        }

    def to_json(self, device_id: str) -> str:
        """One line, no trailing newline, ASCII-safe so any reader can split on b'\\n'."""
        return json.dumps(self.to_dict(device_id), separators=(",", ":"), sort_keys=False)

    def __repr__(self) -> str:
        return (
            f"Record({self.type!r}, {self.payload!r}, time={self.time!r}, "
            f"observed={self.observed!r})"
        )


def login_event(
    event: str,
    *,
    user: str | None,
    source: str | None,
    port: int | None,
    service: str,
    pid: int | None,
    tty: str | None,
    origin: str,
    time: float | None = None,
    observed: float | None = None,
) -> Record:
    """Build a login event record with exactly the contract's payload keys."""
    return Record(
        "event",
        {
            "event": event,
            "user": user,
            "source": source,
            "port": port,
            "service": service,
            "pid": pid,
            "tty": tty,
            "origin": origin,
        },
        time,
        observed,
    )
