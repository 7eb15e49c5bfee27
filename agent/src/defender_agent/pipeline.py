"""The pipeline: a bounded queue from collectors to detectors (raw events) and outputs.

emit() stamps `observed` (and `time`, when the source had none) from the clock, counts the
record against its source and queues it; drain() writes every record to every output (or
hands it to the aggregator, when its collector's events are aggregated), then gives each
event to every detector in emit order and writes the alerts they raise.
"""

from __future__ import annotations

from collections import deque

from defender_agent import log as _log

TYPE_CHECKING = False  # typing costs ~0.5 MiB RSS at run time; only mypy needs it
if TYPE_CHECKING:
    from typing import Any

    from defender_agent.aggregate import Aggregator
    from defender_agent.clock import Clock
    from defender_agent.model import Record
    from defender_agent.plugins import Detector, Output

log = _log.get(__name__)

QUEUE_MAX = 4096


class Counts:
    __slots__ = ("dropped", "emitted", "errors")

    def __init__(self) -> None:
        self.emitted = 0
        self.dropped = 0
        self.errors = 0

    def as_dict(self) -> dict[str, int]:
        return {"emitted": self.emitted, "dropped": self.dropped, "errors": self.errors}


class Pipeline:
    def __init__(self, clock: Clock, device_id: str, queue_max: int = QUEUE_MAX) -> None:
        self.clock = clock
        self.device_id = device_id
        self.queue_max = queue_max
        self.detectors: list[tuple[str, Detector]] = []
        self.outputs: list[tuple[str, Output]] = []
        self.counts: dict[str, Counts] = {}
        self._queue: deque[tuple[str, Record]] = deque()
        self.aggregator: Aggregator | None = None
        self._draining = False
        self.alerted = False  # an alert was written since the agent last looked
        self._serialize = True

    def __len__(self) -> int:
        return len(self._queue)

    def count(self, section: str) -> Counts:
        counts = self.counts.get(section)
        if counts is None:
            counts = self.counts[section] = Counts()
        return counts

    def emit(self, section: str, record: Record) -> bool:
        """Queue a record from `section`; False (and counted) when the queue is full."""
        counts = self.count(section)
        if record.observed is None:
            record.observed = self.clock.time()
        if record.time is None:
            record.time = record.observed
        if len(self._queue) >= self.queue_max and not self._draining:
            self.drain()  # a burst (one 1 MiB read) bigger than the queue: pass it on now
        if len(self._queue) >= self.queue_max:
            counts.dropped += 1
            return False
        counts.emitted += 1
        self._queue.append((section, record))
        return True

    def drain(self) -> None:
        if self._draining:
            return
        self._draining = True
        try:
            while self._queue:
                section, record = self._queue.popleft()
                if self.aggregator is None or not self.aggregator.add(section, record):
                    self._write(record)
                if record.type == "event":
                    for section, detector in self.detectors:
                        self._detect(section, detector, record)
        finally:
            self._draining = False

    def _detect(self, section: str, detector: Detector, record: Record) -> None:
        try:
            alerts = detector.process(record)
        except Exception:  # a detector bug must not stop collection
            self.count(section).errors += 1
            log.exception("%s failed", section)
            return
        for alert in alerts:
            self.alerted = True
            self.count(section).emitted += 1
            if alert.observed is None:
                alert.observed = self.clock.time()
            if alert.time is None:
                alert.time = record.time
            self._write(alert)

    def add_output(self, section: str, output: Output) -> None:
        self.outputs.append((section, output))
        self._serialize = any(getattr(o, "needs_line", True) for _s, o in self.outputs)

    def write(self, record: Record) -> None:
        """Hand a record to every output now (the aggregator's flushes)."""
        self._write(record)

    def _write(self, record: Record) -> None:
        # Serialised once for every output; skipped when none wants the line (replay).
        line = record.to_json(self.device_id) if self._serialize else ""
        for section, output in self.outputs:
            try:
                output.write(record, line)
            except Exception:  # an output bug must not stop the others
                self.count(section).errors += 1
                log.exception("%s failed", section)

    def statistics(self) -> dict[str, Any]:
        return {"max": self.queue_max, "length": len(self._queue)}
