"""Load for the agent, run inside a guest by `defender-tools bench guest-load`.

Standard library only (the guest's python3), so it is copied in as it is:

    python3 storm.py exec RATE SECONDS PROGRAM ARGV0 [ARG...]
        posix_spawn PROGRAM (named ARGV0 in its argv) at RATE per second for SECONDS,
        reaping as they end
    python3 storm.py connect RATE SECONDS HOST PORT
        open and close a TCP connection to HOST:PORT at RATE per second for SECONDS

Paced against the monotonic clock: a slow moment is caught up for up to one second's worth;
more than that behind (the guest cannot go that fast) is skipped, counted, so the count is
what the guest could do. A failed start is counted by its errno, not retried. Prints one
JSON line: what was started, skipped and failed, and the achieved rate.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import time


def _reap(children: set[int]) -> None:
    while children:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            children.clear()
            return
        if pid == 0:
            return
        children.discard(pid)


class Pace:
    """Which starts are due: RATE per second since the start, at most one second behind."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.begin = time.monotonic()
        self.done = 0  # started, failed or skipped
        self.skipped = 0
        self.failed: dict[str, int] = {}

    def elapsed(self) -> float:
        return time.monotonic() - self.begin

    def due(self) -> int:
        target = int(self.elapsed() * self.rate)
        if target - self.done > self.rate:  # more than a second behind
            self.skipped += target - self.done - int(self.rate)
            self.done = target - int(self.rate)
        return target - self.done

    def fail(self, exc: OSError) -> None:
        name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        self.failed[name] = self.failed.get(name, 0) + 1

    def result(self, started: int) -> dict[str, object]:
        elapsed = self.elapsed()
        return {
            "started": started,
            "skipped": self.skipped,
            "failed": self.failed,
            "seconds": round(elapsed, 2),
            "rate": round(started / elapsed, 1),
        }


def exec_storm(rate: float, seconds: float, argv: list[str]) -> dict[str, object]:
    children: set[int] = set()
    pace, started = Pace(rate), 0
    while pace.elapsed() < seconds:
        for _ in range(pace.due()):
            pace.done += 1
            try:
                children.add(os.posix_spawn(argv[0], argv[1:], os.environ))
                started += 1
            except OSError as exc:
                pace.fail(exc)
        _reap(children)
        time.sleep(0.002)
    result = pace.result(started)
    while children:
        pid, _status = os.waitpid(-1, 0)
        children.discard(pid)
    return result


def connect_storm(rate: float, seconds: float, host: str, port: int) -> dict[str, object]:
    pace, started = Pace(rate), 0
    while pace.elapsed() < seconds:
        for _ in range(pace.due()):
            pace.done += 1
            try:
                with socket.create_connection((host, port), timeout=2):
                    started += 1
            except OSError as exc:
                pace.fail(exc)
        time.sleep(0.002)
    return pace.result(started)


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[0] not in ("exec", "connect"):
        print(__doc__, file=sys.stderr)
        return 2
    rate, seconds = float(argv[1]), float(argv[2])
    if argv[0] == "exec":
        result = exec_storm(rate, seconds, argv[3:])
    else:
        result = connect_storm(rate, seconds, argv[3], int(argv[4]))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
