"""The event loop: epoll + a timer heap, no busy polling.

Collectors register file descriptors and timers and call `emit()`; records go through a
bounded queue to every detector (raw events) and then, with the detectors' alerts, to
the outputs. The loop sleeps until the next timer or a ready fd.

It uses select.epoll directly rather than `selectors` (the agent is Linux-only, and
selectors' ABCs and namedtuples are RSS the service carries for its whole life), and
no `threading`. Kernels built without CONFIG_EPOLL (an embedded option) get poll(2).
"""

from __future__ import annotations

import heapq
import os
import select
import signal
import time
from collections import deque

from defender_agent import log as _log
from defender_agent.model import Record

TYPE_CHECKING = False  # typing costs ~0.5 MiB RSS at run time; only mypy needs it
if TYPE_CHECKING:
    from typing import Any, Callable, Protocol

log = _log.get(__name__)

QUEUE_MAX = 4096
STATE_SAVE_INTERVAL = 30.0
OUTPUT_RETRY_INTERVAL = 5.0


if TYPE_CHECKING:  # the interfaces the runtime relies on

    class Collector(Protocol):
        name: str

        def start(self) -> None: ...
        def stop(self) -> None: ...
        def save_state(self) -> dict[str, Any]: ...
        def skipped(self) -> dict[str, int]: ...

    class Detector(Protocol):
        name: str

        def process(self, record: Record) -> list[Record]: ...
        def statistics(self) -> dict[str, int]: ...

    class Output(Protocol):
        name: str

        def write(self, record: Record, line: str) -> None: ...
        def retry(self) -> None: ...
        def reopen(self) -> None: ...
        def close(self) -> None: ...
        def statistics(self) -> dict[str, int]: ...


class Timer:
    """A scheduled callback; cancel() makes the heap skip it. `owner` is the collector
    (or "agent") whose code registered it: its failures are counted there."""

    __slots__ = ("callback", "cancelled", "deadline", "interval", "owner")

    def __init__(
        self,
        deadline: float,
        interval: float | None,
        callback: Callable[[], None],
        owner: str = "agent",
    ):
        self.deadline = deadline
        self.interval = interval
        self.callback = callback
        self.cancelled = False
        self.owner = owner

    def cancel(self) -> None:
        self.cancelled = True

    def __lt__(self, other: Timer) -> bool:
        return self.deadline < other.deadline


class _Counts:
    __slots__ = ("dropped", "emitted", "errors")

    def __init__(self) -> None:
        self.emitted = 0
        self.dropped = 0
        self.errors = 0


def new_poller() -> tuple[Any, bool]:
    """(poller, takes milliseconds): epoll, or poll(2) where the kernel has no epoll."""
    try:
        return select.epoll(), False
    except (AttributeError, OSError):  # ENOSYS on CONFIG_EPOLL=n kernels
        return select.poll(), True


class Runtime:
    """Owns the selector, timers, queue, collectors, detectors and outputs."""

    def __init__(self, device_id: str, queue_max: int = QUEUE_MAX) -> None:
        self.device_id = device_id
        self._epoll, self._poll_ms = new_poller()
        self._readers: dict[int, tuple[Callable[[], None], str]] = {}
        self._owner = "agent"  # whose code runs now; what it registers is its own
        self.collectors: list[Collector] = []
        self.detectors: list[Detector] = []
        self.outputs: list[Output] = []
        self.on_save_state: Callable[[], None] | None = None
        self._timers: list[Timer] = []
        self._queue: deque[tuple[str, Record]] = deque()
        self._queue_max = queue_max
        self._counts: dict[str, _Counts] = {}
        self._stopping = False
        self._draining = False
        self._reopen = False
        self._wakeup_r = -1
        self._wakeup_w = -1
        self._started = time.monotonic()

    # --- registration -------------------------------------------------------------
    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        if fd in self._readers:
            raise KeyError(f"fd {fd} is already registered")
        self._epoll.register(fd, select.POLLIN)  # == EPOLLIN
        self._readers[fd] = (callback, self._owner)

    def remove_reader(self, fd: int) -> None:
        if self._readers.pop(fd, None) is None:
            return
        try:
            self._epoll.unregister(fd)
        except (OSError, ValueError, KeyError):
            pass  # already closed: the kernel dropped it from the epoll set

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(time.monotonic() + max(0.0, delay), None, callback, self._owner)
        heapq.heappush(self._timers, timer)
        return timer

    def call_every(
        self, interval: float, callback: Callable[[], None], first: float | None = None
    ) -> Timer:
        start = interval if first is None else first
        timer = Timer(time.monotonic() + start, interval, callback, self._owner)
        heapq.heappush(self._timers, timer)
        return timer

    def _call(self, owner: str, callback: Callable[[], None]) -> None:
        """Run a callback as `owner`; a bug in it is logged and counted, never fatal."""
        previous, self._owner = self._owner, owner
        try:
            callback()
        except Exception:
            self._counts.setdefault(owner, _Counts()).errors += 1
            log.exception("%s failed", owner)
        finally:
            self._owner = previous

    # --- pipeline -----------------------------------------------------------------
    def emit(self, source: str, record: Record) -> bool:
        """Queue a record from `source`; False (and counted) when the queue is full."""
        counts = self._counts.setdefault(source, _Counts())
        if len(self._queue) >= self._queue_max and not self._draining:
            self._drain()  # a burst (one 1 MiB read) bigger than the queue: pass it on now
        if len(self._queue) >= self._queue_max:
            counts.dropped += 1
            return False
        counts.emitted += 1
        self._queue.append((source, record))
        return True

    def _drain(self) -> None:
        self._draining = True
        try:
            self._drain_queue()
        finally:
            self._draining = False

    def _drain_queue(self) -> None:
        while self._queue:
            _source, record = self._queue.popleft()
            out = [record]
            if record.type == "event":
                for detector in self.detectors:
                    try:
                        out.extend(detector.process(record))
                    except Exception:  # a detector bug must not stop collection
                        log.exception("detector %s failed", detector.name)
            for rec in out:
                self._write(rec)

    def _write(self, record: Record) -> None:
        line = record.to_json(self.device_id)
        for output in self.outputs:
            output.write(record, line)

    # --- periodic records ---------------------------------------------------------
    def heartbeat(self) -> None:
        self.emit(
            "agent", Record("heartbeat", {"uptime": round(self.uptime(), 3), "pid": os.getpid()})
        )

    def uptime(self) -> float:
        return time.monotonic() - self._started

    def statistics_payload(self) -> dict[str, Any]:
        collectors: dict[str, Any] = {}
        for collector in self.collectors:
            counts = self._counts.get(collector.name, _Counts())
            collectors[collector.name] = {
                "emitted": counts.emitted,
                "dropped": counts.dropped,
                "errors": counts.errors,
                "skipped": collector.skipped(),
            }
        return {
            "uptime": round(self.uptime(), 3),
            "queue": {"max": self._queue_max, "length": len(self._queue)},
            "collectors": collectors,
            "detectors": {d.name: d.statistics() for d in self.detectors},
            "outputs": {o.name: o.statistics() for o in self.outputs},
        }

    def statistics(self) -> None:
        self.emit("agent", Record("statistics", self.statistics_payload()))

    def save_state(self) -> None:
        if self.on_save_state is not None:
            self.on_save_state()

    def _retry_outputs(self) -> None:
        for output in self.outputs:
            output.retry()

    # --- loop ---------------------------------------------------------------------
    def start(self, heartbeat_interval: float, statistics_interval: float) -> None:
        self.call_every(heartbeat_interval, self.heartbeat, first=0.0)
        self.call_every(statistics_interval, self.statistics)
        self.call_every(STATE_SAVE_INTERVAL, self.save_state)
        self.call_every(OUTPUT_RETRY_INTERVAL, self._retry_outputs)
        for collector in self.collectors:
            self._call(collector.name, collector.start)

    def install_signals(self) -> None:
        """SIGTERM/SIGINT stop, SIGHUP reopens outputs; a wakeup pipe breaks epoll.

        Outside the main thread (tests) there are no signals to handle: set_wakeup_fd
        refuses with ValueError and this does nothing.
        """
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        try:
            signal.set_wakeup_fd(w)
        except ValueError:
            os.close(r)
            os.close(w)
            return
        self._wakeup_r = r
        self._wakeup_w = w
        self.add_reader(r, self._drain_wakeup)

        def stop(_sig: int, _frame: object) -> None:
            self._stopping = True

        def hup(_sig: int, _frame: object) -> None:
            self._reopen = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, hup)

    def _drain_wakeup(self) -> None:
        try:
            while os.read(self._wakeup_r, 512):
                pass
        except BlockingIOError:
            pass

    def stop(self) -> None:
        self._stopping = True

    def run_once(self, max_wait: float | None = None) -> None:
        """Wait for one batch of fd readiness or timers, handle it, drain the queue."""
        now = time.monotonic()
        while self._timers and self._timers[0].cancelled:
            heapq.heappop(self._timers)
        timeout = None if not self._timers else max(0.0, self._timers[0].deadline - now)
        if self._queue:
            timeout = 0.0
        if max_wait is not None:
            timeout = max_wait if timeout is None else min(timeout, max_wait)
        if timeout is None:
            wait: float = -1
        elif self._poll_ms:
            wait = -(-timeout * 1000 // 1)  # poll(2) takes ms: round up, never spin
        else:
            wait = timeout
        for fd, _events in self._epoll.poll(wait):
            reader = self._readers.get(fd)
            if reader is not None:  # an earlier callback may have removed it
                self._call(reader[1], reader[0])
        self._run_timers()
        self._drain()
        if self._reopen:
            self._reopen = False
            for output in self.outputs:
                output.reopen()

    def _run_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0].deadline <= now:
            timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            if timer.interval is not None:
                timer.deadline = max(timer.deadline + timer.interval, now)
                heapq.heappush(self._timers, timer)
            self._call(timer.owner, timer.callback)

    def run(self, duration: float | None = None) -> None:
        """Loop until stop() / a signal (or `duration` seconds), then shut down cleanly."""
        end = None if duration is None else time.monotonic() + duration
        while not self._stopping:
            if end is not None:
                left = end - time.monotonic()
                if left <= 0:
                    break
                self.run_once(left)
            else:
                self.run_once()
        self.shutdown()

    def shutdown(self) -> None:
        """Stop collectors (they flush held events), drain, save state, close outputs."""
        for collector in self.collectors:
            try:
                collector.stop()
            except Exception:
                log.exception("collector %s failed to stop", collector.name)
        self._drain()
        self.save_state()
        for output in self.outputs:
            output.close()
        if self._wakeup_r >= 0:
            signal.set_wakeup_fd(-1)
            self.remove_reader(self._wakeup_r)
            os.close(self._wakeup_r)
            os.close(self._wakeup_w)
            self._wakeup_r = self._wakeup_w = -1
        if not self._poll_ms:
            self._epoll.close()
