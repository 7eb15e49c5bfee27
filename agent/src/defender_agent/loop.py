"""The event loop: epoll (poll(2) where the kernel has none), a timer heap and signals.

Plugins register file descriptors and timers through their Context; the loop sleeps
until the next timer or a ready descriptor. Nothing busy-polls. A callback that raises
is counted against its owner (the plugin that registered it) and logged, never fatal.

It uses select.epoll directly rather than `selectors` (the agent is Linux-only, and
selectors' ABCs and namedtuples are RSS the service carries for its whole life), and
no `threading`. Time comes from the clock it is given, so tests run it on virtual time.
"""

from __future__ import annotations

import heapq
import os
import select
import signal

from defender_agent import log as _log

TYPE_CHECKING = False  # typing costs ~0.5 MiB RSS at run time; only mypy needs it
if TYPE_CHECKING:
    from typing import Any, Callable

    from defender_agent.clock import Clock

log = _log.get(__name__)


class Timer:
    """A scheduled callback; cancel() makes the heap skip it. `owner` is the plugin whose
    code registered it: its failures are counted there."""

    __slots__ = ("callback", "cancelled", "deadline", "interval", "owner", "seq")

    def __init__(
        self,
        deadline: float,
        interval: float | None,
        callback: Callable[[], None],
        owner: str,
        seq: int = 0,
    ) -> None:
        self.deadline = deadline
        self.seq = seq  # equal deadlines fire in the order they were set
        self.interval = interval
        self.callback = callback
        self.cancelled = False
        self.owner = owner

    def cancel(self) -> None:
        self.cancelled = True

    def __lt__(self, other: Timer) -> bool:
        if self.deadline == other.deadline:
            return self.seq < other.seq
        return self.deadline < other.deadline


def new_poller() -> tuple[Any, bool]:
    """(poller, takes milliseconds): epoll, or poll(2) where the kernel has no epoll."""
    try:
        return select.epoll(), False
    except (AttributeError, OSError):  # ENOSYS on CONFIG_EPOLL=n kernels
        return select.poll(), True


class EventLoop:
    """File descriptors, timers and signals; `on_error(owner)` hears of failed callbacks."""

    def __init__(self, clock: Clock, on_error: Callable[[str], None] | None = None) -> None:
        self.clock = clock
        self.on_error = on_error
        self._poller, self._poll_ms = new_poller()
        self._readers: dict[int, tuple[Callable[[], None], str]] = {}
        self._timers: list[Timer] = []
        self._seq = 0
        self.calls = 0  # callbacks run: what has not moved has changed nothing
        self.stopping = False
        self.reopen_requested = False
        self._wakeup_r = -1
        self._wakeup_w = -1

    @property
    def backend(self) -> str:
        return "poll" if self._poll_ms else "epoll"

    # --- registration -------------------------------------------------------------
    def add_reader(self, fd: int, callback: Callable[[], None], owner: str = "agent") -> None:
        if fd in self._readers:
            raise KeyError(f"fd {fd} is already registered")
        self._poller.register(fd, select.POLLIN)  # == EPOLLIN
        self._readers[fd] = (callback, owner)

    def remove_reader(self, fd: int) -> None:
        if self._readers.pop(fd, None) is None:
            return
        try:
            self._poller.unregister(fd)
        except (OSError, ValueError, KeyError):
            pass  # already closed: the kernel dropped it from the epoll set

    def call_later(self, delay: float, callback: Callable[[], None], owner: str = "agent") -> Timer:
        self._seq += 1
        deadline = self.clock.monotonic() + max(0.0, delay)
        timer = Timer(deadline, None, callback, owner, self._seq)
        heapq.heappush(self._timers, timer)
        return timer

    def call_every(
        self,
        interval: float,
        callback: Callable[[], None],
        first: float | None = None,
        owner: str = "agent",
    ) -> Timer:
        start = interval if first is None else first
        self._seq += 1
        timer = Timer(self.clock.monotonic() + start, interval, callback, owner, self._seq)
        heapq.heappush(self._timers, timer)
        return timer

    def call(self, owner: str, callback: Callable[[], None]) -> bool:
        """Run a callback as `owner`; a bug in it is logged and counted, never fatal."""
        self.calls += 1
        try:
            callback()
        except Exception:
            if self.on_error is not None:
                self.on_error(owner)
            log.exception("%s failed", owner)
            return False
        return True

    # --- signals ------------------------------------------------------------------
    def install_signals(self) -> None:
        """SIGTERM/SIGINT stop, SIGHUP asks outputs to reopen; a wakeup pipe breaks the wait.

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
            self.stopping = True

        def hup(_sig: int, _frame: object) -> None:
            self.reopen_requested = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, hup)

    def _drain_wakeup(self) -> None:
        try:
            while os.read(self._wakeup_r, 512):
                pass
        except BlockingIOError:
            pass

    # --- running ------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        while self._timers and self._timers[0].cancelled:
            heapq.heappop(self._timers)
        return self._timers[0].deadline if self._timers else None

    def run_once(self, max_wait: float | None = None) -> None:
        """Wait for fd readiness or the next timer (at most `max_wait` s), handle both.

        On a virtual clock the wait never sleeps: time moves only when the test says.
        """
        deadline = self.next_deadline()
        timeout = None if deadline is None else max(0.0, deadline - self.clock.monotonic())
        if max_wait is not None:
            timeout = max_wait if timeout is None else min(timeout, max_wait)
        if self.clock.virtual:
            timeout = 0.0
        if timeout is None:
            wait: float = -1
        elif self._poll_ms:
            wait = -(-timeout * 1000 // 1)  # poll(2) takes ms: round up, never spin
        else:
            wait = timeout
        for fd, _events in self._poller.poll(wait):
            reader = self._readers.get(fd)
            if reader is not None:  # an earlier callback may have removed it
                self.call(reader[1], reader[0])
        self.run_timers()

    def run_timers(self) -> None:
        now = self.clock.monotonic()
        while self._timers and self._timers[0].deadline <= now:
            timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            if timer.interval is not None:
                timer.deadline = max(timer.deadline + timer.interval, now)
                self._seq += 1
                timer.seq = self._seq
                heapq.heappush(self._timers, timer)
            self.call(timer.owner, timer.callback)

    def close(self) -> None:
        if self._wakeup_r >= 0:
            signal.set_wakeup_fd(-1)
            self.remove_reader(self._wakeup_r)
            os.close(self._wakeup_r)
            os.close(self._wakeup_w)
            self._wakeup_r = self._wakeup_w = -1
        if not self._poll_ms:
            self._poller.close()
